"""Contacts, companies and the team as the store keeps them: the config's team mirrored,
a contact created from a logged address, a company found or made for a domain.

Every function runs inside the caller's transaction (``db.transaction``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from syncd.mail.addresses import normalise
from syncd.store.timestamps import now_iso


def contact_emails(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT address FROM contact_addresses")}


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
        (normalise(address), contact_id),
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
