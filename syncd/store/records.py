"""Records people edit from the command line: contacts imported from files or set field
by field, deals, tickets and notes, with the lifecycle effects a deal's stage has on
its contacts and companies (``crm.lifecycle``). A contact that gains an address (created,
or given one more) gets the engagements waiting for it (``store/detached.py``).
Functions take a connection and run inside the caller's transaction; they raise
``LookupError`` for a record that does not exist, ``crm.lifecycle.StageError`` for a
stage the pipeline does not know and ``crm.lifecycle.StageBackward`` for a stage set
back by hand.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from syncd.crm.domains import company_domain
from syncd.crm.lifecycle import DealPipeline, TicketPipeline, advance, deal_effect, set_stage
from syncd.crm.model import ContactRecord
from syncd.mail.addresses import normalise
from syncd.store.contacts import company_for_domain, create_contact, split_name
from syncd.store.detached import reattach
from syncd.store.engagements import associate, touch_records
from syncd.store.timestamps import now_iso


def contact_id_for(conn: sqlite3.Connection, address: str) -> int | None:
    row = conn.execute(
        "SELECT contact_id FROM contact_addresses WHERE address = ?", (normalise(address),)
    ).fetchone()
    return int(row[0]) if row else None


def contact_ids_for(conn: sqlite3.Connection, addresses: Iterable[str]) -> list[int]:
    """Contact ids for addresses; LookupError names the first address that is no contact."""
    ids: list[int] = []
    for address in addresses:
        contact_id = contact_id_for(conn, address)
        if contact_id is None:
            raise LookupError(f"no contact with address {address}")
        if contact_id not in ids:
            ids.append(contact_id)
    return ids


def company_by_name(conn: sqlite3.Connection, name: str, owner: str | None) -> int:
    """The company called ``name`` (any case), created if there is none."""
    row = conn.execute(
        "SELECT id FROM companies WHERE lower(name) = lower(?) ORDER BY id LIMIT 1", (name,)
    ).fetchone()
    if row is not None:
        return int(row[0])
    cur = conn.execute(
        "INSERT INTO companies(name, owner, lifecycle_stage, created_at) VALUES (?, ?, 'lead', ?)",
        (name, owner, now_iso()),
    )
    return int(cur.lastrowid or 0)


def upsert_contact(
    conn: sqlite3.Connection,
    record: ContactRecord,
    *,
    cap: int = 10000,
    require_legal_basis: bool = False,
) -> bool:
    """Create or update the contact with any of the record's addresses; True if created.
    Engagements waiting for its addresses are associated with it (under ``cap``, and
    with ``require_legal_basis`` only if it has a legal basis)."""
    addresses = [normalise(record.email), *(normalise(e) for e in record.other_emails)]
    contact_id = next((c for a in addresses if (c := contact_id_for(conn, a))), None)
    owner = normalise(record.owner) or None
    created = contact_id is None
    if contact_id is None:
        contact_id = create_contact(
            conn,
            addresses[0],
            "",
            owner,
            stage=record.lifecycle_stage or "lead",
            legal_basis=record.legal_basis or None,
        )
    else:
        row = conn.execute(
            "SELECT lifecycle_stage FROM contacts WHERE id = ?", (contact_id,)
        ).fetchone()
        stage = advance(row[0], record.lifecycle_stage) if record.lifecycle_stage else row[0]
        conn.execute(
            "UPDATE contacts SET lifecycle_stage = ?, owner = coalesce(?, owner), "
            "legal_basis = coalesce(?, legal_basis) WHERE id = ?",
            (stage, owner, record.legal_basis or None, contact_id),
        )
    conn.execute(
        "UPDATE contacts SET first_name = coalesce(nullif(?, ''), first_name), "
        "last_name = coalesce(nullif(?, ''), last_name) WHERE id = ?",
        (record.first_name, record.last_name, contact_id),
    )
    for address in addresses:
        conn.execute(
            "INSERT OR IGNORE INTO contact_addresses(address, contact_id, is_primary) "
            "VALUES (?, ?, 0)",
            (address, contact_id),
        )
    _link_company(conn, contact_id, record, addresses[0], owner)
    reattach(conn, contact_id, cap, require_legal_basis=require_legal_basis)
    return created


def set_contact(
    conn: sqlite3.Connection,
    contact_id: int,
    *,
    owner: str | None = None,
    stage: str | None = None,
    clear_stage: bool = False,
    legal_basis: str | None = None,
    name: str | None = None,
    company_name: str | None = None,
) -> None:
    """Set the fields given (None: leave as it is). ``owner`` is a member's primary
    email, checked by the caller; the stage moves forward only unless ``clear_stage``
    (``crm.lifecycle.set_stage``); an empty ``legal_basis`` clears it, an empty
    ``name`` clears the names, an empty ``company_name`` leaves the company."""
    row = conn.execute(
        "SELECT lifecycle_stage, owner FROM contacts WHERE id = ?", (contact_id,)
    ).fetchone()
    if row is None:
        raise LookupError(f"no contact {contact_id}")
    if stage is not None or clear_stage:
        conn.execute(
            "UPDATE contacts SET lifecycle_stage = ? WHERE id = ?",
            (set_stage(row[0], stage, clear=clear_stage), contact_id),
        )
    if owner is not None:
        conn.execute("UPDATE contacts SET owner = ? WHERE id = ?", (owner, contact_id))
    if legal_basis is not None:
        conn.execute(
            "UPDATE contacts SET legal_basis = ? WHERE id = ?",
            (legal_basis.strip() or None, contact_id),
        )
    if name is not None:
        first, last = split_name(name)
        conn.execute(
            "UPDATE contacts SET first_name = ?, last_name = ? WHERE id = ?",
            (first, last, contact_id),
        )
    if company_name is not None:
        company = company_name.strip()
        company_id = company_by_name(conn, company, owner or row[1]) if company else None
        conn.execute("UPDATE contacts SET company_id = ? WHERE id = ?", (company_id, contact_id))


def _link_company(
    conn: sqlite3.Connection,
    contact_id: int,
    record: ContactRecord,
    address: str,
    owner: str | None,
) -> None:
    domain = company_domain(address)
    if record.company:
        company_id: int | None = company_by_name(conn, record.company, owner)
        if domain:
            conn.execute(
                "INSERT OR IGNORE INTO company_domains(domain, company_id) VALUES (?, ?)",
                (domain, company_id),
            )
    else:
        current = conn.execute(
            "SELECT company_id FROM contacts WHERE id = ?", (contact_id,)
        ).fetchone()[0]
        if current is not None or not domain:
            return
        company_id = company_for_domain(conn, domain, owner, create=True)
    conn.execute("UPDATE contacts SET company_id = ? WHERE id = ?", (company_id, contact_id))


def _companies_of(conn: sqlite3.Connection, contact_ids: Sequence[int]) -> list[int]:
    found: list[int] = []
    for contact_id in contact_ids:
        row = conn.execute("SELECT company_id FROM contacts WHERE id = ?", (contact_id,)).fetchone()
        if row and row[0] is not None and row[0] not in found:
            found.append(int(row[0]))
    return found


def _propose_stage(
    conn: sqlite3.Connection, table: str, ids: Iterable[int], stage: str | None
) -> None:
    if stage is None:
        return
    for record_id in ids:
        row = conn.execute(f"SELECT lifecycle_stage FROM {table} WHERE id = ?", (record_id,))
        current = row.fetchone()
        if current is not None:
            conn.execute(
                f"UPDATE {table} SET lifecycle_stage = ? WHERE id = ?",
                (advance(current[0], stage), record_id),
            )


def _deal_links(conn: sqlite3.Connection, deal_id: int) -> tuple[list[int], list[int]]:
    contacts = [
        r[0]
        for r in conn.execute("SELECT contact_id FROM deal_contacts WHERE deal_id = ?", (deal_id,))
    ]
    companies = [
        r[0]
        for r in conn.execute("SELECT company_id FROM deal_companies WHERE deal_id = ?", (deal_id,))
    ]
    return contacts, companies


def create_deal(
    conn: sqlite3.Connection,
    pipeline: DealPipeline,
    name: str,
    contact_ids: Sequence[int],
    *,
    amount: float | None = None,
    stage: str | None = None,
) -> int:
    """A deal associated with the contacts and their companies; its stage takes effect."""
    stage = pipeline.check(stage or pipeline.open[0])
    state = pipeline.state(stage)
    now = now_iso()
    closed = now[:10] if state != "open" else None
    cur = conn.execute(
        "INSERT INTO deals(name, stage, state, amount, close_date, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (name, stage, state, amount, closed, now, now),
    )
    deal_id = int(cur.lastrowid or 0)
    company_ids = _companies_of(conn, contact_ids)
    conn.executemany(
        "INSERT INTO deal_contacts(deal_id, contact_id) VALUES (?, ?)",
        [(deal_id, c) for c in contact_ids],
    )
    conn.executemany(
        "INSERT INTO deal_companies(deal_id, company_id) VALUES (?, ?)",
        [(deal_id, c) for c in company_ids],
    )
    effect = deal_effect(pipeline, None, stage)
    _propose_stage(conn, "contacts", contact_ids, effect.contacts)
    _propose_stage(conn, "companies", company_ids, effect.companies)
    return deal_id


def set_deal_stage(
    conn: sqlite3.Connection, pipeline: DealPipeline, deal_id: int, stage: str
) -> None:
    """Move a deal; won makes its contacts and companies customers, lost changes nothing."""
    pipeline.check(stage)
    row = conn.execute("SELECT stage FROM deals WHERE id = ?", (deal_id,)).fetchone()
    if row is None:
        raise LookupError(f"no deal {deal_id}")
    state = pipeline.state(stage)
    closed = datetime.now(UTC).strftime("%Y-%m-%d") if state != "open" else None
    conn.execute(
        "UPDATE deals SET stage = ?, state = ?, close_date = ?, updated_at = ? WHERE id = ?",
        (stage, state, closed, now_iso(), deal_id),
    )
    effect = deal_effect(pipeline, row[0], stage)
    contacts, companies = _deal_links(conn, deal_id)
    _propose_stage(conn, "contacts", contacts, effect.contacts)
    _propose_stage(conn, "companies", companies, effect.companies)


def create_ticket(
    conn: sqlite3.Connection, pipeline: TicketPipeline, subject: str, contact_ids: Sequence[int]
) -> int:
    """A ticket in the first open status, associated with the contacts and their companies."""
    status = pipeline.open[0]
    now = now_iso()
    cur = conn.execute(
        "INSERT INTO tickets(subject, status, state, created_at, updated_at) "
        "VALUES (?, ?, 'open', ?, ?)",
        (subject, status, now, now),
    )
    ticket_id = int(cur.lastrowid or 0)
    conn.executemany(
        "INSERT INTO ticket_contacts(ticket_id, contact_id) VALUES (?, ?)",
        [(ticket_id, c) for c in contact_ids],
    )
    conn.executemany(
        "INSERT INTO ticket_companies(ticket_id, company_id) VALUES (?, ?)",
        [(ticket_id, c) for c in _companies_of(conn, contact_ids)],
    )
    return ticket_id


def set_ticket_status(
    conn: sqlite3.Connection, pipeline: TicketPipeline, ticket_id: int, status: str
) -> None:
    state = pipeline.state(status)
    cur = conn.execute(
        "UPDATE tickets SET status = ?, state = ?, updated_at = ? WHERE id = ?",
        (status, state, now_iso(), ticket_id),
    )
    if cur.rowcount == 0:
        raise LookupError(f"no ticket {ticket_id}")


def add_note(
    conn: sqlite3.Connection, contact_id: int, text: str, *, cap: int, owner: str | None = None
) -> int:
    """A note on the contact's timeline (and its company's)."""
    now = now_iso()
    cur = conn.execute(
        "INSERT INTO engagements(type, occurred_at, created_at, owner, body) "
        "VALUES ('note', ?, ?, ?, ?)",
        (now, now, owner, text),
    )
    engagement_id = int(cur.lastrowid or 0)
    companies = _companies_of(conn, [contact_id])
    associate(conn, "contact", engagement_id, [contact_id], cap)
    associate(conn, "company", engagement_id, companies, cap)
    touch_records(conn, [contact_id], companies, now, contacted=False)
    return engagement_id
