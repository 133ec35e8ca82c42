"""Reading companies, deals and tickets in full, each with its timeline.

``companies_list``, ``company_find``/``company_show``, ``deal_show`` and ``ticket_show``
return plain dicts for the CLI to print as they are (``--json``) or as text. Every
timeline is ``queries.record_timeline``'s, so it has the contact timeline's item shape,
order and filter. Read-only; works on a read-only connection.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from syncd.crm.domains import registrable_domain
from syncd.mail.addresses import domain_of, normalise_domain
from syncd.store.queries import CONTACT_SQL, contact_summary, record_timeline, with_links

# SQLite's integers stop here; a larger id names no record (and would not bind).
MAX_ID = 2**63 - 1

_COMPANY_SQL = (
    "SELECT c.id, c.name, c.owner, c.lifecycle_stage, c.created_at, c.last_activity, "
    "(SELECT count(*) FROM contacts k WHERE k.company_id = c.id) AS contacts "
    "FROM companies c"
)


def _domains(conn: sqlite3.Connection, company_id: int) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT domain FROM company_domains WHERE company_id = ? ORDER BY domain",
            (company_id,),
        )
    ]


def _company(conn: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "domains": _domains(conn, row["id"]),
        "owner": row["owner"],
        "lifecycle_stage": row["lifecycle_stage"],
        "contact_count": row["contacts"],
        "last_activity": row["last_activity"],
        "created_at": row["created_at"],
    }


def companies_list(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every company with its domains and how many contacts it has, by name then id."""
    rows = conn.execute(f"{_COMPANY_SQL} ORDER BY lower(c.name), c.id").fetchall()
    return [_company(conn, r) for r in rows]


def company_find(conn: sqlite3.Connection, text: str) -> list[int]:
    """The companies ``text`` names: an id, a domain (or an address's host under it:
    ``mail.acme.com`` finds ``acme.com``), else a name in any case. Several when a name
    is shared; none when nothing matches."""
    text = text.strip()
    if text.isascii() and text.isdigit():
        number = int(text)
        if number > MAX_ID:
            return []
        row = conn.execute("SELECT id FROM companies WHERE id = ?", (number,)).fetchone()
        return [row[0]] if row else []
    domain = domain_of(text) or normalise_domain(text)
    for candidate in dict.fromkeys((domain, registrable_domain(domain) or domain)):
        row = conn.execute(
            "SELECT company_id FROM company_domains WHERE domain = ?", (candidate,)
        ).fetchone()
        if row is not None:
            return [row[0]]
    return [
        r[0]
        for r in conn.execute(
            "SELECT id FROM companies WHERE name = ? COLLATE NOCASE ORDER BY id", (text,)
        )
    ]


def company_show(conn: sqlite3.Connection, company_id: int) -> dict[str, Any] | None:
    """One company: its fields, domains, contacts, deals, tickets and timeline."""
    row = conn.execute(f"{_COMPANY_SQL} WHERE c.id = ?", (company_id,)).fetchone()
    if row is None:
        return None
    item = _company(conn, row)
    item["contacts"] = [
        contact_summary(r)
        for r in conn.execute(
            f"{CONTACT_SQL} WHERE c.company_id = ? ORDER BY a.address", (company_id,)
        )
    ]
    item["deals"] = _ids(
        conn, "SELECT deal_id FROM deal_companies WHERE company_id = ?", company_id
    )
    item["tickets"] = _ids(
        conn, "SELECT ticket_id FROM ticket_companies WHERE company_id = ?", company_id
    )
    item["timeline"] = record_timeline(conn, "company", company_id)
    return item


def _ids(conn: sqlite3.Connection, sql: str, record_id: int) -> list[int]:
    return sorted(r[0] for r in conn.execute(sql, (record_id,)))


def deal_show(conn: sqlite3.Connection, deal_id: int) -> dict[str, Any] | None:
    """One deal: its fields, contacts, companies and timeline; None if there is none."""
    if deal_id > MAX_ID:
        return None
    row = conn.execute(
        "SELECT id, name, pipeline, stage, state, amount, close_date, owner, created_at, "
        "updated_at FROM deals WHERE id = ?",
        (deal_id,),
    ).fetchone()
    if row is None:
        return None
    (item,) = with_links(conn, [row], "deal")
    return item | {"timeline": record_timeline(conn, "deal", deal_id)}


def ticket_show(conn: sqlite3.Connection, ticket_id: int) -> dict[str, Any] | None:
    """One ticket: its fields, contacts, companies and timeline; None if there is none."""
    if ticket_id > MAX_ID:
        return None
    row = conn.execute(
        "SELECT id, subject, pipeline, status, state, owner, created_at, updated_at "
        "FROM tickets WHERE id = ?",
        (ticket_id,),
    ).fetchone()
    if row is None:
        return None
    (item,) = with_links(conn, [row], "ticket")
    return item | {"timeline": record_timeline(conn, "ticket", ticket_id)}
