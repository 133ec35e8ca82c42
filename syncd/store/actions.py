"""What a person does to one engagement on the timeline: pin and unpin it, remove it,
associate it with records and take associations away.

- Pinning marks the engagement (``engagements.pinned_at``); it then comes first on
  every timeline it is on (``queries.TIMELINE_ORDER``). Any number may be pinned.
- Removing deletes the engagement with everything that hangs on it (email row and its
  search entry, raw copy, sightings, attachment rows, associations, tracking) and the
  attachment files no other email uses. An email leaves a tombstone
  (``store/tombstones.py``) so that the same email is not logged again.
- Associating checks ``max_engagements_per_record`` as the write path does; the count
  triggers of 0001_crm.sql take an association away however it goes.

Records' ``last_activity``/``last_contacted`` follow: an association adds its date
(``engagements.touch_records``), a removal or a disassociation computes them again from
what is left (``refresh_activity``). Every function runs inside the caller's
transaction and raises ``LookupError`` for an engagement or record that does not exist,
``CapReached`` for a record at the cap; either way the caller rolls back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from syncd.store.blobs import blob_path
from syncd.store.engagements import ASSOCIATION, touch_records
from syncd.store.timestamps import now_iso
from syncd.store.tombstones import bury

KINDS = ("contact", "company", "deal", "ticket")


class CapReached(Exception):
    """A record already has ``max_engagements_per_record`` engagements."""


def _engagement(conn: sqlite3.Connection, engagement_id: int) -> sqlite3.Row:
    row = conn.execute(
        "SELECT g.id, g.type, g.occurred_at, g.pinned_at, e.message_key, e.direction "
        "FROM engagements g LEFT JOIN emails e ON e.engagement_id = g.id WHERE g.id = ?",
        (engagement_id,),
    ).fetchone()
    if row is None:
        raise LookupError(f"no engagement {engagement_id}")
    return row


def pin(conn: sqlite3.Connection, engagement_id: int) -> bool:
    """Pin the engagement; False if it was pinned already (its first pin time stays)."""
    _engagement(conn, engagement_id)
    cur = conn.execute(
        "UPDATE engagements SET pinned_at = ? WHERE id = ? AND pinned_at IS NULL",
        (now_iso(), engagement_id),
    )
    return cur.rowcount == 1


def unpin(conn: sqlite3.Connection, engagement_id: int) -> bool:
    """Unpin the engagement; False if it was not pinned."""
    _engagement(conn, engagement_id)
    cur = conn.execute(
        "UPDATE engagements SET pinned_at = NULL WHERE id = ? AND pinned_at IS NOT NULL",
        (engagement_id,),
    )
    return cur.rowcount == 1


def linked(conn: sqlite3.Connection, kind: str, engagement_id: int) -> list[int]:
    """The records of ``kind`` the engagement is associated with."""
    table, column, _records = ASSOCIATION[kind]
    return [
        r[0]
        for r in conn.execute(
            f"SELECT {column} FROM {table} WHERE engagement_id = ? ORDER BY {column}",
            (engagement_id,),
        )
    ]


def remove(conn: sqlite3.Connection, engagement_id: int, attachments_dir: Path) -> str:
    """Delete the engagement from the store and every timeline; an email leaves its
    tombstone. Returns its type. Attachment files that no other email uses go too."""
    row = _engagement(conn, engagement_id)
    contacts = linked(conn, "contact", engagement_id)
    companies = linked(conn, "company", engagement_id)
    digests = [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT sha256 FROM attachments WHERE engagement_id = ? AND stored = 1",
            (engagement_id,),
        )
    ]
    if row["message_key"] is not None:
        bury(conn, row["message_key"])
    # Every row of the engagement goes by ON DELETE CASCADE (foreign keys are on in
    # every connection); the triggers take the search entry and the records' counts.
    conn.execute("DELETE FROM engagements WHERE id = ?", (engagement_id,))
    _drop_unused_files(conn, digests, attachments_dir)
    refresh_activity(conn, contacts, companies)
    return str(row["type"])


def _drop_unused_files(conn: sqlite3.Connection, digests: Iterable[str], directory: Path) -> None:
    """Unlink attachment files no stored attachment row names any more. Done while the
    transaction holds the write lock, as erase does: a batch that would store the same
    file cannot run meanwhile, and one after it writes the file again."""
    for digest in digests:
        used = conn.execute(
            "SELECT 1 FROM attachments WHERE sha256 = ? AND stored = 1 LIMIT 1", (digest,)
        ).fetchone()
        if used is not None:
            continue
        try:
            blob_path(directory, digest).unlink(missing_ok=True)
        except ValueError:  # not a digest: no file of ours has that name
            continue


def record_exists(conn: sqlite3.Connection, kind: str, record_id: int) -> bool:
    _table, _column, records = ASSOCIATION[kind]
    row = conn.execute(f"SELECT 1 FROM {records} WHERE id = ?", (record_id,)).fetchone()
    return row is not None


def _check_records(conn: sqlite3.Connection, links: Mapping[str, Sequence[int]]) -> None:
    for kind, ids in links.items():
        for record_id in ids:
            if not record_exists(conn, kind, record_id):
                raise LookupError(f"no {kind} {record_id}")


def associate(
    conn: sqlite3.Connection, engagement_id: int, links: Mapping[str, Sequence[int]], cap: int
) -> dict[str, list[int]]:
    """Associate the engagement with the records ``links`` names by kind; returns those
    newly associated (already associated ones are left as they are)."""
    row = _engagement(conn, engagement_id)
    _check_records(conn, links)
    added: dict[str, list[int]] = {kind: [] for kind in KINDS}
    for kind, ids in links.items():
        table, column, records = ASSOCIATION[kind]
        present = set(linked(conn, kind, engagement_id))
        for record_id in dict.fromkeys(ids):
            if record_id in present:
                continue
            count = conn.execute(
                f"SELECT engagement_count FROM {records} WHERE id = ?", (record_id,)
            ).fetchone()[0]
            if count >= cap:
                (label,) = labels(conn, {kind: [record_id]})
                raise CapReached(
                    f"{label} has {count} engagements, the "
                    f"store.max_engagements_per_record limit ({cap}); nothing was associated"
                )
            conn.execute(
                f"INSERT INTO {table}(engagement_id, {column}) VALUES (?, ?)",
                (engagement_id, record_id),
            )
            # Counted here, not by a trigger: see 0001_crm.sql.
            conn.execute(
                f"UPDATE {records} SET engagement_count = engagement_count + 1 WHERE id = ?",
                (record_id,),
            )
            added[kind].append(record_id)
    outgoing = row["direction"] == "outgoing"
    touch_records(conn, added["contact"], added["company"], row["occurred_at"], contacted=outgoing)
    return added


def disassociate(
    conn: sqlite3.Connection, engagement_id: int, links: Mapping[str, Sequence[int]]
) -> dict[str, list[int]]:
    """Take the engagement off the records ``links`` names; returns those it was on."""
    _engagement(conn, engagement_id)
    _check_records(conn, links)
    removed: dict[str, list[int]] = {kind: [] for kind in KINDS}
    for kind, ids in links.items():
        table, column, _records = ASSOCIATION[kind]
        for record_id in dict.fromkeys(ids):
            cur = conn.execute(
                f"DELETE FROM {table} WHERE engagement_id = ? AND {column} = ?",
                (engagement_id, record_id),
            )
            if cur.rowcount:
                removed[kind].append(record_id)
    refresh_activity(conn, removed["contact"], removed["company"])
    return removed


def labels(conn: sqlite3.Connection, changed: Mapping[str, Sequence[int]]) -> list[str]:
    """How a person names the records in ``changed``: ``deal 3``, ``ticket 7``,
    ``company acme.com`` (its name), ``contact carol@acme.com`` (its primary address)."""
    found = [f"{kind} {i}" for kind in ("deal", "ticket") for i in changed.get(kind, ())]
    for company_id in changed.get("company", ()):
        row = conn.execute("SELECT name FROM companies WHERE id = ?", (company_id,)).fetchone()
        found.append(f"company {row[0] if row else company_id}")
    for contact_id in changed.get("contact", ()):
        row = conn.execute(
            "SELECT address FROM contact_addresses WHERE contact_id = ? AND is_primary = 1",
            (contact_id,),
        ).fetchone()
        found.append(f"contact {row[0] if row else contact_id}")
    return found


def refresh_activity(
    conn: sqlite3.Connection, contact_ids: Iterable[int], company_ids: Iterable[int]
) -> None:
    """Compute ``last_activity`` (and a contact's ``last_contacted``: its latest outgoing
    email) again from the engagements the records have now."""
    conn.executemany(
        "UPDATE contacts SET last_activity = (SELECT max(g.occurred_at) "
        "FROM engagement_contacts l JOIN engagements g ON g.id = l.engagement_id "
        "WHERE l.contact_id = contacts.id), "
        "last_contacted = (SELECT max(g.occurred_at) "
        "FROM engagement_contacts l JOIN engagements g ON g.id = l.engagement_id "
        "JOIN emails e ON e.engagement_id = g.id "
        "WHERE l.contact_id = contacts.id AND e.direction = 'outgoing') WHERE id = ?",
        [(i,) for i in sorted(set(contact_ids))],
    )
    conn.executemany(
        "UPDATE companies SET last_activity = (SELECT max(g.occurred_at) "
        "FROM engagement_companies l JOIN engagements g ON g.id = l.engagement_id "
        "WHERE l.company_id = companies.id) WHERE id = ?",
        [(i,) for i in sorted(set(company_ids))],
    )
