"""Reading the CRM: contacts, timelines, full-text search, deals, tickets, the quarantine.

Every function returns plain dicts and lists shaped as PRODUCT.md's JSON contract
(extra fields are allowed there and added where they help), so the CLI prints them as
they are. Read-only; works on a read-only connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from syncd.mail.addresses import normalise, normalise_domain
from syncd.store.engagements import ASSOCIATION
from syncd.store.items import ITEM_SQL, Ids, engagement_item, shaped
from syncd.store.searchquery import QueryError, fts_query

CONTACT_SQL = (
    "SELECT c.id, a.address AS email, trim(c.first_name || ' ' || c.last_name) AS name, "
    "c.first_name, c.last_name, c.owner, c.lifecycle_stage, co.name AS company, c.legal_basis, "
    "c.marketing, c.last_contacted, c.last_activity, c.created_at, c.company_id "
    "FROM contacts c "
    "JOIN contact_addresses a ON a.contact_id = c.id AND a.is_primary = 1 "
    "LEFT JOIN companies co ON co.id = c.company_id"
)
_LIST_FIELDS = ("email", "name", "owner", "lifecycle_stage", "company", "legal_basis")


def contact_summary(row: sqlite3.Row) -> dict[str, Any]:
    item = {field: row[field] for field in _LIST_FIELDS}
    item["last_contacted"] = row["last_contacted"]
    return item


# How ``contacts_list`` sorts; the address last, so that the order is total.
CONTACT_ORDER = {
    "email": "a.address",
    "name": "lower(trim(c.first_name || ' ' || c.last_name)) = '', "
    "lower(trim(c.first_name || ' ' || c.last_name)), a.address",
    "last-contacted": "c.last_contacted IS NULL, c.last_contacted DESC, a.address",
}


def _contacts_where(
    owner: str | None, stage: str | None, company_ids: list[int] | None
) -> tuple[str, list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    if owner is not None:
        where.append("c.owner = ?")
        args.append(owner)
    if stage is not None:
        where.append("c.lifecycle_stage = ?")
        args.append(stage)
    if company_ids is not None:
        where.append(f"c.company_id IN ({','.join('?' * len(company_ids)) or 'NULL'})")
        args.extend(company_ids)
    return CONTACT_SQL + (" WHERE " + " AND ".join(where) if where else ""), args


def contacts_list(
    conn: sqlite3.Connection,
    *,
    owner: str | None = None,
    stage: str | None = None,
    company_ids: list[int] | None = None,
    sort: str = "email",
    limit: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Contacts matching every filter given, sorted by ``sort`` (a key of
    ``CONTACT_ORDER``), at most ``limit`` of them after the first ``offset``."""
    sql, args = _contacts_where(owner, stage, company_ids)
    rows = conn.execute(
        f"{sql} ORDER BY {CONTACT_ORDER[sort]} LIMIT ? OFFSET ?",
        [*args, -1 if limit is None else limit, offset],
    )
    return [contact_summary(r) for r in rows]


def contacts_count(
    conn: sqlite3.Connection,
    *,
    owner: str | None = None,
    stage: str | None = None,
    company_ids: list[int] | None = None,
) -> int:
    """How many contacts ``contacts_list`` with these filters finds without a limit."""
    sql, args = _contacts_where(owner, stage, company_ids)
    return int(conn.execute(f"SELECT count(*) FROM ({sql})", args).fetchone()[0])


def companies_named(conn: sqlite3.Connection, name: str) -> list[int]:
    """The companies called ``name`` (any case) or owning it as a domain."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT id FROM companies WHERE name = ? COLLATE NOCASE UNION "
            "SELECT company_id FROM company_domains WHERE domain = ? ORDER BY 1",
            (name.strip(), normalise_domain(name)),
        )
    ]


def contact_show(conn: sqlite3.Connection, address: str) -> dict[str, Any] | None:
    """One contact with every address, deals, tickets; None if no contact has ``address``."""
    row = conn.execute(
        CONTACT_SQL + " WHERE c.id = (SELECT contact_id FROM contact_addresses WHERE address = ?)",
        (normalise(address),),
    ).fetchone()
    if row is None:
        return None
    item = contact_summary(row)
    contact_id = row["id"]
    item.update(
        id=contact_id,
        first_name=row["first_name"],
        last_name=row["last_name"],
        emails=[
            r[0]
            for r in conn.execute(
                "SELECT address FROM contact_addresses WHERE contact_id = ? "
                "ORDER BY is_primary DESC, address",
                (contact_id,),
            )
        ],
        marketing=bool(row["marketing"]),
        # HubSpot's name for it: contacts syncd creates are never marketing contacts.
        marketing_contact=bool(row["marketing"]),
        last_activity=row["last_activity"],
        created_at=row["created_at"],
        deals=[
            r[0]
            for r in conn.execute(
                "SELECT deal_id FROM deal_contacts WHERE contact_id = ? ORDER BY deal_id",
                (contact_id,),
            )
        ],
        tickets=[
            r[0]
            for r in conn.execute(
                "SELECT ticket_id FROM ticket_contacts WHERE contact_id = ? ORDER BY ticket_id",
                (contact_id,),
            )
        ],
    )
    return item


# The order of every timeline (a contact's, a company's, a deal's, a ticket's): pinned
# items first, then newest first, the id last so that the order is total. A removed
# engagement is deleted (store/actions.py), so no timeline needs to leave it out.
TIMELINE_ORDER = "g.pinned_at IS NULL, g.occurred_at DESC, g.id DESC"


def timeline_rows(
    conn: sqlite3.Connection, engagement_ids: str, args: Sequence[Any] = ()
) -> tuple[list[tuple[Any, ...]], Ids]:
    """The ``items.ITEM_SQL`` rows (tuples) of the engagements the SQL ``engagement_ids``
    selects (one column of engagement ids, its ``?`` bound to ``args``), in timeline
    order, and that set as ``items.Ids``.

    The one place that orders and filters a timeline: the contact, company, deal and
    ticket timelines all come through here, so what shows and in which order is the
    same on every record. Pinned first, then newest first (``TIMELINE_ORDER``)."""
    ids = Ids(engagement_ids, tuple(args))
    cursor = conn.cursor()
    cursor.row_factory = None  # tuples: items.shape reads them by position
    rows = cursor.execute(
        f"{ITEM_SQL} WHERE g.id IN ({ids.sql}) ORDER BY {TIMELINE_ORDER}", ids.args
    ).fetchall()
    return rows, ids


def timeline_of(
    conn: sqlite3.Connection, engagement_ids: str, args: Sequence[Any] = ()
) -> list[dict[str, Any]]:
    """The timeline of the engagements ``engagement_ids`` selects (as ``timeline_rows``),
    each shaped by ``items.shape``, in a fixed number of statements however long it is."""
    return shaped(conn, *timeline_rows(conn, engagement_ids, args))


def record_engagements(kind: str, record_id: int) -> tuple[str, tuple[int]]:
    """The SQL selecting one record's engagement ids and its argument: ``kind`` is
    contact, company, deal or ticket (a key of ``engagements.ASSOCIATION``, never user
    input: it names fixed tables)."""
    table, column, _records = ASSOCIATION[kind]
    return f"SELECT engagement_id FROM {table} WHERE {column} = ?", (record_id,)


def record_timeline(conn: sqlite3.Connection, kind: str, record_id: int) -> list[dict[str, Any]]:
    """The timeline of one record of ``kind`` (as ``record_engagements``)."""
    return timeline_of(conn, *record_engagements(kind, record_id))


def contact_of(conn: sqlite3.Connection, address: str) -> int | None:
    """The id of the contact with ``address``; None if no contact has it."""
    row = conn.execute(
        "SELECT contact_id FROM contact_addresses WHERE address = ?", (normalise(address),)
    ).fetchone()
    return None if row is None else int(row[0])


def timeline(conn: sqlite3.Connection, address: str) -> list[dict[str, Any]] | None:
    """The contact's engagements, pinned first, then newest first; None if no contact
    has ``address``."""
    contact_id = contact_of(conn, address)
    return None if contact_id is None else record_timeline(conn, "contact", contact_id)


def engagement(conn: sqlite3.Connection, engagement_id: int) -> dict[str, Any] | None:
    """One engagement as a timeline shows it; None if there is no such engagement."""
    row = conn.execute(ITEM_SQL + " WHERE g.id = ?", (engagement_id,)).fetchone()
    return None if row is None else engagement_item(conn, row)


def search(conn: sqlite3.Connection, text: str, *, limit: int = 50) -> list[dict[str, Any]]:
    """Emails matching ``text`` (the syntax of ``store/searchquery.py``) in subject, body,
    addresses or attachment names, best first. ``QueryError`` if the query is malformed."""
    query = fts_query(text)
    try:
        rows = conn.execute(
            "SELECT e.message_id, e.subject, e.date, e.from_addr, "
            "snippet(emails_fts, -1, '[', ']', '…', 12) AS snippet "
            "FROM emails_fts JOIN emails e ON e.engagement_id = emails_fts.rowid "
            "WHERE emails_fts MATCH ? "
            "ORDER BY bm25(emails_fts, 5.0, 1.0, 2.0, 2.0), e.date DESC LIMIT ?",
            (query, limit),
        ).fetchall()
    except sqlite3.OperationalError as exc:
        # fts_query checks what it knows of FTS5's grammar; whatever else FTS5 refuses
        # is still the query's fault, not the store's.
        if not str(exc).startswith("fts5:"):
            raise
        raise QueryError(f"not a query the index understands ({exc})") from None
    return [
        {
            "message_id": r["message_id"],
            "subject": r["subject"],
            "date": r["date"],
            "from": r["from_addr"],
            "snippet": " ".join((r["snippet"] or "").split()),
        }
        for r in rows
    ]


def with_links(
    conn: sqlite3.Connection, rows: list[sqlite3.Row], kind: str
) -> list[dict[str, Any]]:
    """Deal or ticket rows with their contacts' primary addresses and companies' names.
    ``kind`` is "deal" or "ticket", never user input: it only names fixed tables."""
    contacts = (
        f"SELECT a.address FROM {kind}_contacts l JOIN contact_addresses a "
        f"ON a.contact_id = l.contact_id AND a.is_primary = 1 WHERE l.{kind}_id = ? "
        "ORDER BY a.address"
    )
    companies = (
        f"SELECT c.name FROM {kind}_companies l JOIN companies c ON c.id = l.company_id "
        f"WHERE l.{kind}_id = ? ORDER BY c.name"
    )
    return [
        {
            **dict(r),
            "contacts": [x[0] for x in conn.execute(contacts, (r["id"],))],
            "companies": [x[0] for x in conn.execute(companies, (r["id"],))],
        }
        for r in rows
    ]


def deals_list(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT id, name, pipeline, stage, state, amount, close_date, owner, created_at "
        "FROM deals ORDER BY id"
    ).fetchall()
    return with_links(conn, rows, "deal")


def tickets_list(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT id, subject, pipeline, status, state, owner, created_at FROM tickets ORDER BY id"
    ).fetchall()
    return with_links(conn, rows, "ticket")


def quarantine_list(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT id, reason, label, received_at, quarantined_at, attempts, length(raw) AS size "
        "FROM quarantine ORDER BY id"
    )
    return [
        {
            "id": r["id"],
            "reason": r["reason"],
            "source": r["label"],
            "received_at": r["received_at"],
            "quarantined_at": r["quarantined_at"],
            "attempts": r["attempts"],
            "size": r["size"],
        }
        for r in rows
    ]


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Row counts of the CRM's tables (for tests, doctor and status)."""
    tables = (
        "contacts",
        "contact_addresses",
        "companies",
        "deals",
        "tickets",
        "engagements",
        "emails",
        "sightings",
        "engagement_contacts",
        "engagement_companies",
        "engagement_deals",
        "engagement_tickets",
        "attachments",
        "raw_messages",
        "quarantine",
    )
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
