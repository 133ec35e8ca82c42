"""Tracked mail in the store: each relayed message's link destinations, its hits and
their verdicts, and the addresses members submit from.

The submission relay writes a ``TrackedMessage`` with the spooled mail
(``record_relayed``), and the drain points it at its engagement (``mark_logged``);
the tracking endpoint reads a message's link destinations (``link_urls``) and what the
verdict rules need (``recent``), and writes hits in batches (``record_hits``). Every
function runs inside the caller's transaction.

What the user sees of it is read in ``store.trackview``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from syncd.store.timestamps import iso, parse


@dataclass(frozen=True, slots=True)
class TrackedMessage:
    """A message relayed with tracking: its token id, links and who it was tracked for."""

    id: int
    message_key: str
    sender: str
    relayed_at: datetime
    links: tuple[str, ...] = ()
    contact_id: int | None = None
    anonymous: bool = False


@dataclass(frozen=True, slots=True)
class StoredHit:
    """One open or click as the store keeps it."""

    message_id: int
    kind: str  # "open" | "click"
    at: datetime
    ip: str
    user_agent: str
    verdict: str
    link_idx: int | None = None
    inferred_open: bool = False
    reason: str = ""


def record_message(conn: sqlite3.Connection, message: TrackedMessage) -> bool:
    """Keep a relayed message's links; False if it was recorded before (a resend)."""
    cursor = conn.execute(
        "INSERT OR IGNORE INTO tracked_messages"
        " (id, message_key, sender, contact_id, anonymous, relayed_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            message.id,
            message.message_key,
            message.sender,
            message.contact_id,
            int(message.anonymous),
            iso(message.relayed_at),
        ),
    )
    if cursor.rowcount != 1:
        return False
    conn.executemany(
        "INSERT INTO tracked_links (message_id, idx, url) VALUES (?, ?, ?)",
        [(message.id, index, url) for index, url in enumerate(message.links)],
    )
    return True


def attach_engagement(conn: sqlite3.Connection, message_key: str) -> None:
    """Point a tracked message at the engagement its mail was logged as."""
    conn.execute(
        "UPDATE tracked_messages SET engagement_id ="
        " (SELECT engagement_id FROM emails WHERE message_key = ?) WHERE message_key = ?",
        (message_key, message_key),
    )


def remember_submitter(conn: sqlite3.Connection, member: str, ip: str, at: datetime) -> None:
    """Note that ``member`` submitted from ``ip`` (for the ``self`` verdict)."""
    conn.execute(
        "INSERT INTO submitter_ips (member, ip, last_seen) VALUES (?, ?, ?)"
        " ON CONFLICT (member, ip) DO UPDATE SET last_seen = excluded.last_seen",
        (member, ip, iso(at)),
    )


def hits(
    conn: sqlite3.Connection, message_id: int, since: datetime | None = None
) -> list[StoredHit]:
    """A message's hits (from ``since`` on, to the second), oldest first."""
    return [
        _stored(message_id, r)
        for r in conn.execute(
            f"SELECT {_HIT_COLUMNS} FROM tracking_hits WHERE message_id = ? AND at >= ?"
            " ORDER BY at, id",
            (message_id, "" if since is None else iso(since)),
        )
    ]


def record_hits(conn: sqlite3.Connection, batch: Iterable[StoredHit]) -> int:
    """Store hits whose message is known; how many were stored."""
    rows = [
        (
            hit.message_id,
            hit.kind,
            hit.link_idx,
            iso(hit.at),
            hit.ip,
            hit.user_agent,
            hit.verdict,
            int(hit.inferred_open),
            hit.reason,
            hit.message_id,
        )
        for hit in batch
    ]
    # Inserted in the order of the (message_id, at) indexes within each second: a batch
    # then walks them once instead of jumping between messages' pages, which costs more
    # as the table grows. Hit ids stay in time order to the second, as the feed reads them.
    rows.sort(key=lambda row: (row[3], row[0]))
    cursor = conn.executemany(
        "INSERT INTO tracking_hits"
        " (message_id, kind, link_idx, at, ip, user_agent, verdict, inferred_open, reason)"
        " SELECT ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS"
        " (SELECT 1 FROM tracked_messages WHERE id = ?)",
        rows,
    )
    return max(cursor.rowcount, 0)


def set_verdicts(
    conn: sqlite3.Connection,
    message_id: int,
    verdicts: Sequence[tuple[str, bool, str]],
    since: datetime | None = None,
) -> None:
    """Re-judged verdicts (verdict, inferred open, reason) for a message's hits from
    ``since`` on, in the order ``hits`` returns them. Only the hits whose verdict changed
    are written: a scanner's clicks are mostly re-judged to what they already were."""
    stored = conn.execute(
        "SELECT id, verdict, inferred_open, reason FROM tracking_hits"
        " WHERE message_id = ? AND at >= ? ORDER BY at, id",
        (message_id, "" if since is None else iso(since)),
    ).fetchall()
    conn.executemany(
        "UPDATE tracking_hits SET verdict = ?, inferred_open = ?, reason = ? WHERE id = ?",
        [
            (v, int(i), r, row[0])
            for row, (v, i, r) in zip(stored, verdicts, strict=True)
            if (row[1], bool(row[2]), row[3]) != (v, bool(i), r)
        ],
    )


def update_status(conn: sqlite3.Connection, message_id: int) -> str | None:
    """Set the status of a tracked message's engagement from its human hits: ``clicked``
    after a human click, ``opened`` after a human (or inferred) open, else ``sent``.

    Only human hits count, and the status is recomputed rather than raised, so hits
    re-judged as a scanner's take back what they wrongly gave. Returns the status, or
    None when the message has no engagement (yet).
    """
    row = conn.execute(
        "SELECT engagement_id FROM tracked_messages WHERE id = ?", (message_id,)
    ).fetchone()
    if row is None or row[0] is None:
        return None
    # Each an index lookup (migration 0015), not a pass over the engagement's hits.
    clicked, opened = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM tracked_messages m JOIN tracking_hits h"
        "  ON h.message_id = m.id WHERE m.engagement_id = ?1"
        "  AND h.verdict = 'human' AND h.kind = 'click'),"
        " EXISTS (SELECT 1 FROM tracked_messages m JOIN tracking_hits h"
        "  ON h.message_id = m.id WHERE m.engagement_id = ?1"
        "  AND h.verdict = 'human' AND (h.kind = 'open' OR h.inferred_open))",
        (row[0],),
    ).fetchone()
    status = "clicked" if clicked else "opened" if opened else "sent"
    conn.execute(
        "UPDATE engagements SET status = ? WHERE id = ? AND status IS NOT ?",
        (status, row[0], status),
    )
    return status


@dataclass(frozen=True, slots=True)
class Recent:
    """What judging a new hit needs, without loading every hit of the message: whether a
    human (or inferred) open was seen, and the clicks since ``clicks_since``. Only a
    click's rules look back, so for a message ``recent`` was not asked the history of,
    both are left empty."""

    message_id: int
    sender: str
    relayed_at: datetime
    sender_ips: frozenset[str]
    human_open: StoredHit | None
    clicks: tuple[StoredHit, ...]
    engagement_id: int | None = None


_HIT_COLUMNS = "kind, at, ip, user_agent, verdict, link_idx, inferred_open, reason"


def _stored(message_id: int, r: Sequence[object]) -> StoredHit:
    return StoredHit(
        message_id,
        str(r[0]),
        parse(str(r[1])),
        str(r[2]),
        str(r[3]),
        str(r[4]),
        r[5] if r[5] is None else int(str(r[5])),
        bool(r[6]),
        str(r[7]),
    )


def sender_ips(conn: sqlite3.Connection, member: str, since: datetime) -> frozenset[str]:
    """The addresses ``member`` submitted from after ``since``."""
    return frozenset(
        r[0]
        for r in conn.execute(
            "SELECT ip FROM submitter_ips WHERE member = ? AND last_seen >= ?",
            (member, iso(since)),
        )
    )


def recent(
    conn: sqlite3.Connection,
    message_ids: Iterable[int],
    since: datetime,
    clicks_since: datetime,
    history_of: Iterable[int] = (),
) -> dict[int, Recent]:
    """Tracked messages as the verdict rules see new hits of them, in three statements
    (and one per sender) however many messages and hits; the sender's addresses seen
    after ``since``. For the messages in ``history_of``, also their clicks after
    ``clicks_since`` and their first human (or inferred) open, both read through
    indexes, so a message opened a thousand times costs what one opened once does.
    Messages not tracked are left out."""
    rows = conn.execute(
        "SELECT id, sender, relayed_at, engagement_id FROM tracked_messages"
        " WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(sorted(set(message_ids))),),
    ).fetchall()
    ids = json.dumps(sorted(set(history_of)))
    clicks: dict[int, list[StoredHit]] = {}
    for r in conn.execute(
        f"SELECT message_id, {_HIT_COLUMNS} FROM tracking_hits"
        " WHERE message_id IN (SELECT value FROM json_each(?)) AND at >= ? AND kind = 'click'"
        " ORDER BY message_id, at, id",
        (ids, iso(clicks_since)),
    ):
        clicks.setdefault(r[0], []).append(_stored(r[0], r[1:]))
    first_open = {
        r[0]: _stored(r[0], r[1:])
        for r in conn.execute(
            f"SELECT m.value, {_HIT_COLUMNS} FROM json_each(?) m JOIN tracking_hits h ON h.id ="
            " (SELECT id FROM tracking_hits WHERE message_id = m.value AND verdict = 'human'"
            " AND (kind = 'open' OR inferred_open) ORDER BY at, id LIMIT 1)",
            (ids,),
        )
    }
    ips_of: dict[str, frozenset[str]] = {}
    found: dict[int, Recent] = {}
    for message_id, sender, relayed_at, engagement_id in rows:
        if sender not in ips_of:
            ips_of[sender] = sender_ips(conn, sender, since)
        found[message_id] = Recent(
            message_id,
            sender,
            parse(relayed_at),
            ips_of[sender],
            first_open.get(message_id),
            tuple(clicks.get(message_id, ())),
            engagement_id,
        )
    return found


def raise_status(conn: sqlite3.Connection, engagement_ids: Iterable[int], status: str) -> None:
    """Move engagements up to ``status`` (``opened`` or ``clicked``), never down, in one
    statement: for human hits judged as they came. ``update_status`` recomputes after a
    re-judge."""
    below = ("sent", "opened") if status == "clicked" else ("sent",)
    conn.execute(
        f"UPDATE engagements SET status = ? WHERE id IN (SELECT value FROM json_each(?))"
        f" AND (status IS NULL OR status IN ({', '.join('?' * len(below))}))",
        (status, json.dumps(sorted(set(engagement_ids))), *below),
    )


def link_urls(
    conn: sqlite3.Connection, message_ids: Iterable[int]
) -> dict[int, tuple[str, ...] | None]:
    """Every stored destination of each message, by index (the endpoint caches them per
    message); None for a message that is not tracked."""
    wanted = list(dict.fromkeys(message_ids))
    found: dict[int, list[tuple[int, str]]] = {}
    # A tracked message without links comes back as one row with no index.
    for mid, idx, url in conn.execute(
        "SELECT m.id, l.idx, l.url FROM tracked_messages m"
        " LEFT JOIN tracked_links l ON l.message_id = m.id"
        " WHERE m.id IN (SELECT value FROM json_each(?)) ORDER BY m.id, l.idx",
        (json.dumps(wanted),),
    ):
        links = found.setdefault(int(mid), [])
        if idx is not None:
            links.append((int(idx), str(url)))
    result: dict[int, tuple[str, ...] | None] = {}
    for mid in wanted:
        urls = found.get(mid)
        if urls is None:
            result[mid] = None
        # Indexes are dense from 0 (record_message enumerates); a gap would be a bug, so a
        # missing index yields no destination rather than a wrong one.
        elif [i for i, _ in urls] != list(range(len(urls))):
            result[mid] = ()
        else:
            result[mid] = tuple(url for _, url in urls)
    return result


# The submission relay ------------------------------------------------------------------


def known_recipients(
    conn: sqlite3.Connection, addresses: Sequence[str]
) -> dict[str, tuple[int, str | None]]:
    """Which of ``addresses`` (normalised) are contacts: address -> (contact id, legal
    basis or None). A read: any connection will do."""
    found: dict[str, tuple[int, str | None]] = {}
    for address in addresses:
        row = conn.execute(
            "SELECT c.id, c.legal_basis FROM contact_addresses a"
            " JOIN contacts c ON c.id = a.contact_id WHERE a.address = ?",
            (address,),
        ).fetchone()
        if row is not None:
            found[address] = (int(row[0]), row[1] or None)
    return found


def record_relayed(
    conn: sqlite3.Connection,
    message: TrackedMessage | None,
    member: str,
    ip: str | None,
    at: datetime,
) -> None:
    """What the relay keeps with the spooled copy of a message the smarthost accepted, in
    the spool's transaction: the tracked message (None: untracked) and the address the
    member submitted from (None: not kept)."""
    if message is not None:
        record_message(conn, message)
    if ip:
        remember_submitter(conn, member, ip, at)


def mark_logged(conn: sqlite3.Connection, message_key: str) -> None:
    """In the transaction that logged relayed mail: tie its tracked message (if any) to
    the engagement, mark the engagement ``sent``, and give a message sent to one person
    who was not a contact yet the contact the pipeline made of them."""
    attach_engagement(conn, message_key)
    row = conn.execute(
        "SELECT id, engagement_id, contact_id, anonymous FROM tracked_messages"
        " WHERE message_key = ?",
        (message_key,),
    ).fetchone()
    if row is None or row[1] is None:
        return
    conn.execute(
        "UPDATE engagements SET status = 'sent' WHERE id = ? AND status IS NULL", (row[1],)
    )
    if row[2] is None and not row[3]:
        contacts = conn.execute(
            "SELECT contact_id FROM engagement_contacts WHERE engagement_id = ? LIMIT 2",
            (row[1],),
        ).fetchall()
        if len(contacts) == 1:
            conn.execute(
                "UPDATE tracked_messages SET contact_id = ? WHERE id = ?",
                (contacts[0][0], row[0]),
            )
