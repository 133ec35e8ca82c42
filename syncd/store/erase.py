"""Erasing a person (GDPR): the contact and every trace of its addresses, down to the bytes.

An engagement that concerned no other contact is deleted with its email row, raw bytes,
sightings and attachments; one shared with other contacts is redacted (the address and
its name leave the headers, subject and text; the raw bytes are dropped, since encoded
copies of the address may hide in them; raw copies are searched decompressed).
Quarantined, spooled and outbox mail carrying the address, and attachment files no
remaining email uses, are deleted, and so is the tracking of mail sent to the contact or
logged as those engagements (tracked messages, link destinations, hits): its tokens then
resolve to nothing. Engagements a deleted contact left waiting for the addresses
(``store/detached.py``) count as the contact's, and their rows go. Tombstones of
removed mail (``store/tombstones.py``) stay: they hold a hash of the message key, no
address, and keep that mail from being logged again. Then the full-text index is
rebuilt from what is left, the file is VACUUMed with ``secure_delete`` on, and the WAL
is checkpointed and truncated, so the freed pages holding the old text are gone from the
store directory. ``scan`` checks that claim byte by byte.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from syncd.errors import StoreError
from syncd.mail.addresses import normalise
from syncd.store.blobs import STAGING, blob_path
from syncd.store.db import transaction
from syncd.store.detached import forget
from syncd.store.raw import unpack

ERASED = "[erased]"
TRUNCATE_WAIT_SECONDS = 5.0


@dataclass
class EraseReport:
    """What an erase removed; ``wal_busy`` is true if another process kept the WAL open."""

    addresses: list[str] = field(default_factory=list)
    contacts: int = 0
    deleted: int = 0
    redacted: int = 0
    quarantined: int = 0
    files: int = 0
    tracked: int = 0
    wal_busy: bool = False

    @property
    def found(self) -> bool:
        return bool(
            self.contacts or self.deleted or self.redacted or self.quarantined or self.tracked
        )


def erase(conn: sqlite3.Connection, address: str, attachments_dir: Path) -> EraseReport:
    """Remove the contact with ``address`` and every trace of its addresses."""
    address = normalise(address)
    _pattern(address)  # refuses a needle that is not an address before anything is touched
    report = EraseReport()
    _functions(conn)
    conn.execute("PRAGMA secure_delete = ON")
    with transaction(conn):
        contact_ids = [
            r[0]
            for r in conn.execute(
                "SELECT contact_id FROM contact_addresses WHERE address = ?", (address,)
            )
        ]
        addresses = {address}
        for contact_id in contact_ids:
            addresses.update(
                r[0]
                for r in conn.execute(
                    "SELECT address FROM contact_addresses WHERE contact_id = ?", (contact_id,)
                )
            )
        report.addresses = sorted(addresses)
        report.contacts = len(contact_ids)
        hashes = _erase_engagements(conn, contact_ids, addresses, report)
        for needle in addresses:
            report.quarantined += conn.execute(
                "DELETE FROM quarantine WHERE mentions(raw, ?1) OR mentions(provenance, ?1)",
                (needle,),
            ).rowcount
            # Mail still in the BCC spool or outbox would bring the address straight back.
            report.quarantined += conn.execute(
                "DELETE FROM spool WHERE mentions(raw, ?1) OR mentions(mail_from, ?1)",
                (needle,),
            ).rowcount
            conn.execute(
                "DELETE FROM outbox WHERE mentions(raw, ?1) OR mentions(recipients, ?1) "
                "OR mentions(mail_from, ?1) OR mentions(last_error, ?1)",
                (needle,),
            )
            _redact_column(conn, "deals", "id", "name", needle)
            _redact_column(conn, "tickets", "id", "subject", needle)
        conn.executemany("DELETE FROM contacts WHERE id = ?", [(c,) for c in contact_ids])
        report.files = _drop_files(conn, hashes, addresses, attachments_dir)
        report.files += _drop_staged(attachments_dir, addresses)
    compact(conn, report)
    return report


def _erase_engagements(
    conn: sqlite3.Connection, contact_ids: list[int], addresses: set[str], report: EraseReport
) -> set[str]:
    """Delete or redact every engagement that names the addresses; return touched blobs."""
    candidates = _candidates(conn, contact_ids, addresses)
    report.tracked = _erase_tracking(conn, contact_ids, candidates, addresses)
    hashes: set[str] = set()
    marks = ",".join("?" * len(contact_ids))  # "NOT IN ()" is true: every contact counts
    for engagement_id in sorted(candidates):
        hashes.update(
            r[0]
            for r in conn.execute(
                "SELECT sha256 FROM attachments WHERE engagement_id = ?", (engagement_id,)
            )
        )
        others = conn.execute(
            "SELECT count(*) FROM engagement_contacts WHERE engagement_id = ? "
            f"AND contact_id NOT IN ({marks})",
            (engagement_id, *contact_ids),
        ).fetchone()[0]
        if others:
            _redact_engagement(conn, engagement_id, addresses)
            report.redacted += 1
        else:
            conn.execute("DELETE FROM engagements WHERE id = ?", (engagement_id,))
            report.deleted += 1
    return hashes


def _candidates(conn: sqlite3.Connection, contact_ids: list[int], addresses: set[str]) -> set[int]:
    """The engagements of the contacts, those kept for the addresses since a contact of
    theirs was deleted, and those whose mail or text names an address."""
    # What a deleted contact of these addresses left waiting for them (store/detached.py)
    # is theirs as much as a contact's timeline is; its rows hold the address.
    candidates: set[int] = forget(conn, addresses)
    for contact_id in contact_ids:
        candidates.update(
            r[0]
            for r in conn.execute(
                "SELECT engagement_id FROM engagement_contacts WHERE contact_id = ?", (contact_id,)
            )
        )
    for needle in addresses:
        candidates.update(
            r[0]
            for r in conn.execute(
                "SELECT engagement_id FROM emails WHERE mentions(addresses, ?1) "
                "OR mentions(subject, ?1) OR mentions(body, ?1) OR mentions(message_key, ?1) "
                "OR mentions(from_addr, ?1) "
                "UNION SELECT id FROM engagements WHERE mentions(body, ?1) "
                "UNION SELECT engagement_id FROM raw_messages "
                "WHERE mentions(unpack(raw, codec), ?1)",
                (needle,),
            )
        )
    return candidates


def _erase_tracking(
    conn: sqlite3.Connection, contact_ids: list[int], candidates: set[int], addresses: set[str]
) -> int:
    """Delete the tracked messages (with their links, hits and so their tokens' meaning)
    sent to the contacts or logged as the candidate engagements, and any tracking row
    naming an address; return how many tracked messages went.

    An anonymous message (several recipients) shared with other contacts goes whole:
    its hits are "someone's" and cannot be told apart, so any may be the erased person's.
    Its engagement, redacted, then reads ``untracked``, which is what it now is."""
    doomed: set[int] = set()
    for contact_id in contact_ids:
        doomed.update(
            r[0]
            for r in conn.execute(
                "SELECT id FROM tracked_messages WHERE contact_id = ?", (contact_id,)
            )
        )
    for engagement_id in candidates:
        doomed.update(
            r[0]
            for r in conn.execute(
                "SELECT id FROM tracked_messages WHERE engagement_id = ?", (engagement_id,)
            )
        )
    for needle in addresses:
        doomed.update(
            r[0]
            for r in conn.execute(
                "SELECT id FROM tracked_messages WHERE mentions(message_key, ?1) "
                "OR mentions(sender, ?1) "
                "UNION SELECT message_id FROM tracked_links WHERE mentions(url, ?1)",
                (needle,),
            )
        )
        conn.execute(
            "DELETE FROM tracking_hits WHERE mentions(user_agent, ?1) OR mentions(reason, ?1)",
            (needle,),
        )
        conn.execute("DELETE FROM submitter_ips WHERE mentions(member, ?1)", (needle,))
    conn.executemany(
        "UPDATE engagements SET status = NULL WHERE id = "
        "(SELECT engagement_id FROM tracked_messages WHERE id = ?)",
        [(m,) for m in doomed],
    )
    # Links and hits go by ON DELETE CASCADE (foreign keys are on in every connection).
    conn.executemany("DELETE FROM tracked_messages WHERE id = ?", [(m,) for m in doomed])
    return len(doomed)


def _functions(conn: sqlite3.Connection) -> None:
    conn.create_function("mentions", 2, _mentions, deterministic=True)
    conn.create_function("unpack", 2, _unpacked, deterministic=True)


def _unpacked(blob: bytes | None, codec: str) -> bytes | None:
    """A raw copy's bytes for ``mentions``; one that will not decompress is searched as
    stored (what a byte scan would see) rather than stopping the erase."""
    try:
        return unpack(blob, codec)
    except StoreError:
        return blob


def raw_copies_naming(conn: sqlite3.Connection, address: str) -> int:
    """How many raw copies still name ``address`` once unpacked: the byte scan of the store
    directory cannot see into compressed copies, so erase's check asks the store too."""
    _functions(conn)
    return conn.execute(
        "SELECT count(*) FROM raw_messages WHERE mentions(unpack(raw, codec), ?)", (address,)
    ).fetchone()[0]


def _scrub(text: str | None, addresses: Iterable[str]) -> str | None:
    if text is None:
        return None
    for needle in addresses:
        text = _pattern(needle).sub(ERASED, text)
    return text


def _pattern(address: str) -> re.Pattern[str]:
    """The address as a whole word: erasing ann@x.com leaves joann@x.com alone."""
    if "@" not in address or not address.strip():
        raise ValueError(f"not an address: {address!r}")
    return re.compile(rf"(?<![\w.+-]){re.escape(address)}(?![\w-])", re.IGNORECASE)


def _mentions(value: str | bytes | None, address: str) -> bool:
    """SQL function ``mentions(column, address)``: the column names the whole address."""
    if value is None:
        return False
    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return _pattern(address).search(text) is not None


def _keep(pairs_json: str, addresses: set[str]) -> list[list[str]]:
    return [p for p in json.loads(pairs_json or "[]") if normalise(p[1]) not in addresses]


def _redact_engagement(conn: sqlite3.Connection, engagement_id: int, addresses: set[str]) -> None:
    row = conn.execute("SELECT * FROM emails WHERE engagement_id = ?", (engagement_id,)).fetchone()
    if row is not None:
        to, cc, bcc = (_keep(row[c], addresses) for c in ("to_json", "cc_json", "bcc_json"))
        sender_gone = normalise(row["from_addr"] or "") in addresses
        from_addr = ERASED if sender_gone else row["from_addr"]
        from_name = "" if sender_gone else row["from_name"]
        everyone = [[from_name or "", from_addr or ""], *to, *cc, *bcc]
        conn.execute(
            "UPDATE emails SET from_addr = ?, from_name = ?, to_json = ?, cc_json = ?, "
            "bcc_json = ?, subject = ?, body = ?, addresses = ?, attachment_names = ?, "
            "message_id = ?, message_key = ?, thread_key = ? WHERE engagement_id = ?",
            (
                from_addr,
                from_name,
                json.dumps(to, ensure_ascii=False),
                json.dumps(cc, ensure_ascii=False),
                json.dumps(bcc, ensure_ascii=False),
                _scrub(row["subject"], addresses),
                _scrub(row["body"], addresses),
                " ".join(f"{n} {e}".strip() for n, e in everyone if e),
                _scrub(row["attachment_names"], addresses),
                _scrub(row["message_id"], addresses),
                _scrub(row["message_key"], addresses),
                _scrub(row["thread_key"], addresses),
                engagement_id,
            ),
        )
    body = conn.execute("SELECT body FROM engagements WHERE id = ?", (engagement_id,)).fetchone()
    conn.execute(
        "UPDATE engagements SET body = ? WHERE id = ?", (_scrub(body[0], addresses), engagement_id)
    )
    conn.execute("DELETE FROM raw_messages WHERE engagement_id = ?", (engagement_id,))
    for needle in addresses:
        _redact_column(conn, "attachments", "id", "filename", needle)


def _redact_column(
    conn: sqlite3.Connection, table: str, key: str, column: str, needle: str
) -> None:
    rows = conn.execute(
        f"SELECT {key}, {column} FROM {table} WHERE mentions({column}, ?)", (needle,)
    ).fetchall()
    for record_id, text in rows:
        conn.execute(
            f"UPDATE {table} SET {column} = ? WHERE {key} = ?",
            (_scrub(text, [needle]), record_id),
        )


def _drop_files(
    conn: sqlite3.Connection, hashes: set[str], addresses: set[str], directory: Path
) -> int:
    """Unlink blobs nothing uses any more, and blobs that contain the addresses."""
    removed = 0
    for digest in sorted(hashes):
        try:
            path = blob_path(directory, digest)
        except ValueError:
            continue
        used = conn.execute(
            "SELECT count(*) FROM attachments WHERE sha256 = ? AND stored = 1", (digest,)
        ).fetchone()[0]
        if used and not (path.exists() and any(_contains(path, a) for a in addresses)):
            continue
        conn.execute(
            "UPDATE attachments SET stored = 0, note = 'removed by erase' WHERE sha256 = ?",
            (digest,),
        )
        if path.exists():
            path.unlink()
            removed += 1
    return removed


def _drop_staged(directory: Path, addresses: set[str]) -> int:
    """Unlink staged attachment files (of mail being logged right now, or left by a
    crash) that contain the addresses."""
    staged = [p for p in (directory / STAGING).glob("*") if p.is_file()]
    hits = [p for p in staged if any(_contains(p, a) for a in addresses)]
    for path in hits:
        path.unlink(missing_ok=True)
    return len(hits)


def compact(conn: sqlite3.Connection, report: EraseReport | None = None) -> None:
    """Rebuild the FTS index, VACUUM, and truncate the WAL: freed pages leave the disk."""
    with transaction(conn):
        conn.execute("INSERT INTO emails_fts(emails_fts) VALUES ('rebuild')")
        conn.execute("INSERT INTO emails_fts(emails_fts) VALUES ('optimize')")
    conn.execute("VACUUM")
    # A checkpoint already running elsewhere (a daemon's checkpoint thread after each
    # commit) makes this one return busy at once, without waiting: try again a while.
    # Each try holds writers off while it waits for readers, so it waits 1 s at most.
    waited = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    conn.execute("PRAGMA busy_timeout = 1000")
    try:
        deadline = time.monotonic() + TRUNCATE_WAIT_SECONDS
        while conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]:
            if time.monotonic() >= deadline:
                if report is not None:
                    report.wal_busy = True
                return
            time.sleep(0.05)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(waited)}")


def _contains(path: Path, address: str, chunk: int = 1 << 20) -> bool:
    pattern = re.compile(_pattern(address).pattern.encode(), re.IGNORECASE)
    overlap = len(address) + 2
    tail = b""
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            window = tail + block
            if pattern.search(window):
                return True
            tail = window[-overlap:]
    return False


def scan(paths: Iterable[Path], address: str) -> list[Path]:
    """Files under ``paths`` (files or directories) whose bytes hold the whole ``address``."""
    hits = []
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        hits.extend(f for f in files if _contains(f, address))
    return hits
