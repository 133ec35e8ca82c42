"""Everything a user may take elsewhere: JSON (all records and engagements), CSV
(contacts, in the same columns ``contacts import`` reads, plus a few read-only ones)
and vCard 3.0 (contacts, via vobject).
"""

from __future__ import annotations

import csv
import io
import sqlite3
from typing import Any

from syncd.crm.model import CSV_FIELDS
from syncd.store import trackview
from syncd.store.items import ENGAGEMENT_SQL, engagement_item
from syncd.store.queries import CONTACT_SQL, contact_show, deals_list, tickets_list

CSV_COLUMNS = (
    *CSV_FIELDS,
    "other_emails",
    "marketing",
    "last_contacted",
    "last_activity",
)


def _contacts(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    emails = [r["email"] for r in conn.execute(CONTACT_SQL + " ORDER BY a.address")]
    return [c for c in (contact_show(conn, e) for e in emails) if c is not None]


def _companies(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT id, name, owner, lifecycle_stage, created_at, last_activity FROM companies "
        "ORDER BY id"
    ).fetchall()
    return [
        {
            **dict(r),
            "domains": [
                d[0]
                for d in conn.execute(
                    "SELECT domain FROM company_domains WHERE company_id = ? ORDER BY domain",
                    (r["id"],),
                )
            ],
        }
        for r in rows
    ]


def export_json(conn: sqlite3.Connection) -> dict[str, Any]:
    """``{contacts, companies, deals, tickets, engagements}``; emails carry their text."""
    engagements = []
    tracked = trackview.summaries(conn)
    for row in conn.execute(ENGAGEMENT_SQL + " ORDER BY g.occurred_at, g.id").fetchall():
        item = engagement_item(conn, row, tracked)
        if row["type"] == "email":
            item["text"] = row["body"]
        engagements.append(item)
    return {
        "contacts": _contacts(conn),
        "companies": _companies(conn),
        "deals": deals_list(conn),
        "tickets": tickets_list(conn),
        "engagements": engagements,
    }


def export_csv(conn: sqlite3.Connection) -> str:
    """Contacts as CSV; ``contacts import`` reads it back."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for contact in _contacts(conn):
        writer.writerow(
            {
                "email": contact["email"],
                "first_name": _cell(contact["first_name"]),
                "last_name": _cell(contact["last_name"]),
                "company": _cell(contact["company"] or ""),
                "owner": contact["owner"] or "",
                "lifecycle_stage": contact["lifecycle_stage"] or "",
                "legal_basis": contact["legal_basis"] or "",
                "other_emails": " ".join(e for e in contact["emails"] if e != contact["email"]),
                "marketing": "yes" if contact["marketing"] else "no",
                "last_contacted": contact["last_contacted"] or "",
                "last_activity": contact["last_activity"] or "",
            }
        )
    return out.getvalue()


def _cell(text: str | None) -> str:
    """Names come from senders' headers: a leading = + - @ would be a spreadsheet
    formula when the CSV is opened, so such a cell starts with a quote."""
    text = text or ""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def export_vcard(conn: sqlite3.Connection) -> str:
    """Contacts as vCard 3.0, one card each."""
    import vobject  # only vCard export needs it

    cards = []
    for contact in _contacts(conn):
        card = vobject.vCard()
        card.add("n").value = vobject.vcard.Name(
            family=contact["last_name"], given=contact["first_name"]
        )
        card.add("fn").value = contact["name"] or contact["email"]
        for address in contact["emails"]:
            entry = card.add("email")
            entry.value = address
            entry.type_param = "INTERNET"
        if contact["company"]:
            card.add("org").value = [contact["company"]]
        cards.append(card.serialize())
    return "".join(cards)
