"""The store's shared write helpers: dates, contacts, companies, associations, record
updates, attachment names, and the quarantine.

Every function takes an open ``sqlite3.Connection`` and runs inside the caller's
transaction (``db.transaction``), so a batch of mail and a source's checkpoint commit
together. The per-batch writer of mail is ``store.mailwriter.MailWriter``; this module
holds the record helpers it and the record commands share, and the quarantine.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from syncd.mail.provenance import Provenance

OVERSIZED_NOTE = "not stored: larger than store.max_attachment_mb"


def iso(moment: datetime) -> str:
    """UTC ISO 8601 text with a Z, to the second: text order is time order."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    if moment.year < 1000:  # isoformat pads the year, strftime does not: keep strftime's
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    # isoformat: the same text as strftime, at a tenth of the cost (this runs per message).
    return moment.isoformat(timespec="seconds")[:19] + "Z"


def now_iso() -> str:
    return iso(datetime.now(UTC))


def select_in(
    conn: sqlite3.Connection, sql: str, values: Sequence[Any], params: Sequence[Any] = ()
) -> Iterator[Any]:
    """Rows of ``sql`` whose ``IN ({marks})`` takes ``values`` (after ``params``), asked in
    slices of 500: a list of recipients or keys may be longer than SQLite allows bound
    variables in one statement."""
    for start in range(0, len(values), 500):
        chunk = values[start : start + 500]
        sql_chunk = sql.format(marks=",".join("?" * len(chunk)))
        yield from conn.execute(sql_chunk, [*params, *chunk])


def contact_emails(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT address FROM contact_addresses")}


def sighted_keys(conn: sqlite3.Connection, label: str, keys: Iterable[str]) -> set[str]:
    """Those of ``keys`` (message keys) logged with a sighting under ``label``: mail that
    source already handed over, so handing it over again would add nothing."""
    sql = (
        "SELECT DISTINCT e.message_key FROM emails e JOIN sightings s"
        " ON s.engagement_id = e.engagement_id AND s.label = ? WHERE e.message_key IN ({marks})"
    )
    return {row[0] for row in select_in(conn, sql, list(keys), (label,))}


def record_team(
    conn: sqlite3.Connection,
    members: Sequence[tuple[str, str, Sequence[str]]],
    inboxes: Sequence[tuple[str, str, str, str | None]],
) -> None:
    """Mirror the config's team (email, name, aliases) and inboxes into the store."""
    conn.execute("DELETE FROM team_aliases")
    conn.execute("DELETE FROM team_members")
    conn.execute("DELETE FROM inboxes")
    for email, name, aliases in members:
        conn.execute("INSERT INTO team_members(email, name) VALUES (?, ?)", (email, name))
        conn.executemany(
            "INSERT OR IGNORE INTO team_aliases(alias, member_email) VALUES (?, ?)",
            [(alias, email) for alias in aliases],
        )
    conn.executemany(
        "INSERT OR REPLACE INTO inboxes(name, kind, address, owner) VALUES (?, ?, ?, ?)",
        inboxes,
    )


ASSOCIATION = {
    "contact": ("engagement_contacts", "contact_id", "contacts"),
    "company": ("engagement_companies", "company_id", "companies"),
    "deal": ("engagement_deals", "deal_id", "deals"),
    "ticket": ("engagement_tickets", "ticket_id", "tickets"),
}


def associate(
    conn: sqlite3.Connection, kind: str, engagement_id: int, ids: Iterable[int], cap: int
) -> None:
    """Link an engagement to records that are below ``cap`` associations, and count it."""
    table, column, records = ASSOCIATION[kind]
    for record_id in ids:
        cur = conn.execute(
            f"INSERT OR IGNORE INTO {table}(engagement_id, {column}) "
            f"SELECT ?, ? WHERE (SELECT engagement_count FROM {records} WHERE id = ?) < ?",
            (engagement_id, record_id, record_id, cap),
        )
        if cur.rowcount == 1:
            # Counted here, not by a trigger: see 0001_crm.sql.
            conn.execute(
                f"UPDATE {records} SET engagement_count = engagement_count + 1 WHERE id = ?",
                (record_id,),
            )


def touch_records(
    conn: sqlite3.Connection,
    contact_ids: Sequence[int],
    company_ids: Sequence[int],
    date: str,
    *,
    contacted: bool,
) -> None:
    """last_activity (and, for outreach, last_contacted) move to ``date`` if it is later."""
    for contact_id in contact_ids:
        conn.execute(
            "UPDATE contacts SET last_activity = max(coalesce(last_activity, ''), ?), "
            "last_contacted = CASE WHEN ? THEN max(coalesce(last_contacted, ''), ?) "
            "ELSE last_contacted END WHERE id = ?",
            (date, contacted, date, contact_id),
        )
    for company_id in company_ids:
        conn.execute(
            "UPDATE companies SET last_activity = max(coalesce(last_activity, ''), ?) WHERE id = ?",
            (date, company_id),
        )


def create_contact(
    conn: sqlite3.Connection,
    address: str,
    name: str,
    owner: str | None,
    *,
    stage: str | None = "lead",
    legal_basis: str | None = None,
) -> int:
    """A new contact with ``address`` as its primary address; not a marketing contact."""
    first, last = split_name(name)
    cur = conn.execute(
        "INSERT INTO contacts(first_name, last_name, owner, lifecycle_stage, legal_basis, "
        "marketing, created_at) VALUES (?, ?, ?, ?, ?, 0, ?)",
        (first, last, owner, stage, legal_basis, now_iso()),
    )
    contact_id = int(cur.lastrowid or 0)
    conn.execute(
        "INSERT INTO contact_addresses(address, contact_id, is_primary) VALUES (?, ?, 1)",
        (address.lower(), contact_id),
    )
    return contact_id


def split_name(name: str) -> tuple[str, str]:
    """'Ada Lovelace' -> ('Ada', 'Lovelace'); 'Lovelace, Ada' -> ('Ada', 'Lovelace')."""
    name = " ".join(name.split())
    if "," in name:
        last, _, first = name.partition(",")
        return first.strip(), last.strip()
    first, _, last = name.rpartition(" ")
    return (first, last) if first else (last, "")


def company_for_domain(
    conn: sqlite3.Connection, domain: str, owner: str | None, *, create: bool
) -> int | None:
    """The company that owns ``domain``; created (named after the domain) if asked."""
    row = conn.execute(
        "SELECT company_id FROM company_domains WHERE domain = ?", (domain,)
    ).fetchone()
    if row is not None:
        return int(row[0])
    if not create:
        return None
    cur = conn.execute(
        "INSERT INTO companies(name, owner, lifecycle_stage, created_at) VALUES (?, ?, ?, ?)",
        (domain, owner, "lead", now_iso()),
    )
    company_id = int(cur.lastrowid or 0)
    conn.execute(
        "INSERT INTO company_domains(domain, company_id) VALUES (?, ?)", (domain, company_id)
    )
    return company_id


_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def safe_filename(name: str | None) -> str:
    """The original filename as metadata: control characters escaped, length bounded."""
    text = _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}", name or "")
    return text[:255]


def quarantine(conn: sqlite3.Connection, raw: bytes, provenance: Provenance, reason: str) -> int:
    """Keep a message that could not be logged, with why and where it came from."""
    cur = conn.execute(
        "INSERT INTO quarantine(reason, label, provenance, received_at, quarantined_at, raw) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            reason,
            provenance.label,
            provenance_json(provenance),
            iso(provenance.received_at),
            now_iso(),
            raw,
        ),
    )
    return int(cur.lastrowid or 0)


def provenance_json(provenance: Provenance) -> str:
    return json.dumps(
        {
            "source": provenance.source,
            "received_at": provenance.received_at.isoformat(),
            "inbox": provenance.inbox,
            "folder": provenance.folder,
            "uid": provenance.uid,
            "owner": provenance.owner,
            "sender": provenance.sender,
            "internal_date": provenance.internal_date.isoformat()
            if provenance.internal_date
            else None,
        }
        | ({"partial": True} if provenance.partial else {})
    )


def provenance_from_json(text: str) -> Provenance:
    data = json.loads(text)
    internal = data.get("internal_date")
    return Provenance(
        source=data["source"],
        received_at=datetime.fromisoformat(data["received_at"]),
        inbox=data.get("inbox"),
        folder=data.get("folder"),
        uid=data.get("uid"),
        owner=data.get("owner"),
        sender=data.get("sender"),
        internal_date=datetime.fromisoformat(internal) if internal else None,
        partial=bool(data.get("partial")),
    )


def quarantined(conn: sqlite3.Connection, ids: Sequence[int] | None = None) -> list[sqlite3.Row]:
    """Quarantine rows (id, raw, provenance, attempts), all or the given ids."""
    sql = "SELECT id, raw, provenance, attempts FROM quarantine"
    if ids:
        sql += f" WHERE id IN ({','.join('?' * len(ids))})"
    return list(conn.execute(sql + " ORDER BY id", tuple(ids or ())))


def requarantine(conn: sqlite3.Connection, quarantine_id: int, reason: str) -> None:
    conn.execute(
        "UPDATE quarantine SET reason = ?, attempts = attempts + 1, quarantined_at = ? "
        "WHERE id = ?",
        (reason, now_iso(), quarantine_id),
    )


def release(conn: sqlite3.Connection, quarantine_id: int) -> None:
    conn.execute("DELETE FROM quarantine WHERE id = ?", (quarantine_id,))
