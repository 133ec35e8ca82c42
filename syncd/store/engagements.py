"""Engagements and their links to records: associations under the per-record cap, the
records' activity dates, the sources that handed a message over, attachment names.

Every function runs inside the caller's transaction (``db.transaction``).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence

from syncd.store.db import select_in
from syncd.store.tombstones import removed_keys

OVERSIZED_NOTE = "not stored: larger than store.max_attachment_mb"


def sighted_keys(conn: sqlite3.Connection, label: str, keys: Iterable[str]) -> set[str]:
    """Those of ``keys`` (message keys) logged with a sighting under ``label``, or removed
    from the timeline: mail that source already handed over, or that would not be logged
    again, so handing it over again would add nothing."""
    keys = list(keys)
    sql = (
        "SELECT DISTINCT e.message_key FROM emails e JOIN sightings s"
        " ON s.engagement_id = e.engagement_id AND s.label = ? WHERE e.message_key IN ({marks})"
    )
    return {row[0] for row in select_in(conn, sql, keys, (label,))} | removed_keys(conn, keys)


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


_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def safe_filename(name: str | None) -> str:
    """The original filename as metadata: control characters escaped, length bounded."""
    text = _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}", name or "")
    return text[:255]
