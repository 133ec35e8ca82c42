"""Engagements belong to the address: a deleted contact's timeline waits for it.

``delete_contact`` removes the contact record (its addresses, its associations, its
deal and ticket links) but not its engagements: each is kept in
``detached_engagements`` under the address it concerns (an email's From, To, Cc or Bcc
address of that contact; a note, or mail associated by hand that names none, under the
primary address). Mail logged later that names such an address while it is no
contact is kept there too (``MailWriter`` calls ``detach``). ``reattach`` associates
them with the contact that has one of those addresses again, however it came to have
it: created by logging, by ``contacts import``, or given the address. ``erase`` removes
the rows of the addresses it erases. Every function runs inside the caller's
transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from syncd.mail.addresses import normalise
from syncd.store.actions import refresh_activity
from syncd.store.db import select_in
from syncd.store.engagements import associate
from syncd.store.timestamps import now_iso


def waiting_addresses(conn: sqlite3.Connection) -> set[str]:
    """The addresses engagements wait for: usually none, and a handful after a few
    deletions, so the write path reads them once per transaction and asks nothing
    more for mail that names none of them."""
    return {r[0] for r in conn.execute("SELECT DISTINCT address FROM detached_engagements")}


def contact_addresses(conn: sqlite3.Connection, contact_id: int) -> list[str]:
    """The contact's addresses, primary first."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT address FROM contact_addresses WHERE contact_id = ? "
            "ORDER BY is_primary DESC, address",
            (contact_id,),
        )
    ]


def named_addresses(row: sqlite3.Row | tuple[Any, ...]) -> set[str]:
    """Every address an email row names: From, To, Cc, Bcc (the JSON ``[[name, email]]``)."""
    from_addr, *lists = row
    found = {normalise(from_addr)} if from_addr else set()
    for text in lists:
        found.update(normalise(pair[1]) for pair in json.loads(text or "[]"))
    return found


def delete_contact(conn: sqlite3.Connection, contact_id: int) -> int:
    """Delete the contact and keep its engagements for its addresses; returns how many."""
    addresses = contact_addresses(conn, contact_id)
    own = set(addresses)
    rows = conn.execute(
        "SELECT l.engagement_id, e.from_addr, e.to_json, e.cc_json, e.bcc_json "
        "FROM engagement_contacts l LEFT JOIN emails e ON e.engagement_id = l.engagement_id "
        "WHERE l.contact_id = ? ORDER BY l.engagement_id",
        (contact_id,),
    ).fetchall()
    now = now_iso()
    kept: list[tuple[str, int, str]] = []
    for engagement_id, *headers in rows:
        # A note (no email row: to_json is NULL) names no address.
        named = named_addresses(headers) & own if headers[1] is not None else set()
        for address in sorted(named or {addresses[0]}):
            kept.append((address, engagement_id, now))
    conn.executemany(
        "INSERT OR IGNORE INTO detached_engagements(address, engagement_id, detached_at) "
        "VALUES (?, ?, ?)",
        kept,
    )
    # Addresses, associations, deal and ticket links go by ON DELETE CASCADE; tracked
    # mail keeps its hits with no contact (ON DELETE SET NULL).
    conn.execute("DELETE FROM contacts WHERE id = ?", (contact_id,))
    return len(rows)


def detach(conn: sqlite3.Connection, engagement_id: int, addresses: Iterable[str]) -> None:
    """Keep a newly logged engagement for ``addresses`` (no contact's, each with
    engagements waiting): it is part of that address's mail too."""
    now = now_iso()
    conn.executemany(
        "INSERT OR IGNORE INTO detached_engagements(address, engagement_id, detached_at) "
        "VALUES (?, ?, ?)",
        [(address, engagement_id, now) for address in sorted(set(addresses))],
    )


def waiting(conn: sqlite3.Connection, addresses: Iterable[str]) -> list[tuple[int, str, str]]:
    """The engagements waiting for any of ``addresses``: (id, occurred_at, direction;
    '' for what is not an email), oldest first."""
    return [
        (r[0], r[1], r[2] or "")
        for r in select_in(
            conn,
            "SELECT DISTINCT d.engagement_id, g.occurred_at, e.direction "
            "FROM detached_engagements d JOIN engagements g ON g.id = d.engagement_id "
            "LEFT JOIN emails e ON e.engagement_id = d.engagement_id "
            "WHERE d.address IN ({marks}) ORDER BY g.occurred_at, d.engagement_id",
            sorted(set(addresses)),
        )
    ]


def release(conn: sqlite3.Connection, addresses: Iterable[str]) -> None:
    """Forget what waits for ``addresses``: it has been associated (or erased)."""
    conn.executemany(
        "DELETE FROM detached_engagements WHERE address = ?", [(a,) for a in set(addresses)]
    )


def reattach(
    conn: sqlite3.Connection, contact_id: int, cap: int, *, require_legal_basis: bool = False
) -> int:
    """Associate the engagements waiting for any of the contact's addresses with it
    (each while the contact is below ``cap``), and forget them; returns how many were
    associated. With ``require_legal_basis`` a contact without one gets none, and they
    wait on (as logging associates mail only with contacts that have one). The write
    path does the same its own way (``MailWriter``), through its deferred links."""
    if require_legal_basis:
        basis = conn.execute(
            "SELECT legal_basis FROM contacts WHERE id = ?", (contact_id,)
        ).fetchone()
        if basis is None or not basis[0]:
            return 0
    addresses = contact_addresses(conn, contact_id)
    found = waiting(conn, addresses)
    if not found:
        return 0
    count = "SELECT engagement_count FROM contacts WHERE id = ?"
    before = conn.execute(count, (contact_id,)).fetchone()[0]
    for engagement_id, _date, _direction in found:
        associate(conn, "contact", engagement_id, [contact_id], cap)
    release(conn, addresses)
    refresh_activity(conn, [contact_id], [])
    return int(conn.execute(count, (contact_id,)).fetchone()[0] - before)


def forget(conn: sqlite3.Connection, addresses: Iterable[str]) -> set[int]:
    """Delete the rows kept for ``addresses`` (erase); returns their engagements."""
    found = {engagement_id for engagement_id, _date, _direction in waiting(conn, addresses)}
    release(conn, addresses)
    return found
