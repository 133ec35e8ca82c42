"""The store's write path for mail: one engagement per message key, its sightings,
associations, record updates, attachments, raw bytes, and the quarantine.

Every function takes an open ``sqlite3.Connection`` and runs inside the caller's
transaction (``db.transaction``), so a batch of mail and a source's checkpoint commit
together. ``write_plan`` carries out a ``crm.rules.Plan``: a message key already in the
store only gains a sighting and any new associations. Attachments are written once by
content under ``attachments_dir/ab/cd/<sha256>`` before the transaction commits; a file
left by a rolled-back transaction is harmless because its name is its content.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncd.crm.model import ContactState, Outcome
from syncd.crm.rules import ContactPlan, Plan, RulesSettings
from syncd.mail.provenance import Provenance
from syncd.store.blobs import HEX64, write_blob
from syncd.store.raw import store_raw

if TYPE_CHECKING:
    from syncd.mail.parse import Email

OVERSIZED_NOTE = "not stored: larger than store.max_attachment_mb"


def iso(moment: datetime) -> str:
    """UTC ISO 8601 text with a Z, to the second: text order is time order."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_iso() -> str:
    return iso(datetime.now(UTC))


def lookup_contacts(conn: sqlite3.Connection, addresses: Iterable[str]) -> dict[str, ContactState]:
    """Existing contacts by any of their addresses (lower-case)."""
    wanted = sorted({a.lower() for a in addresses})
    found: dict[str, ContactState] = {}
    # In slices: a message may carry more recipients than SQLite allows bound variables.
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = conn.execute(
            "SELECT a.address, c.id, c.owner, c.legal_basis, c.lifecycle_stage "
            "FROM contact_addresses a JOIN contacts c ON c.id = a.contact_id "
            f"WHERE a.address IN ({','.join('?' * len(chunk))})",
            chunk,
        )
        found.update((r[0], ContactState(r[1], r[2], r[3], r[4])) for r in rows)
    return found


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


def write_plan(
    conn: sqlite3.Connection,
    email: Email,
    raw: bytes,
    provenance: Provenance,
    plan: Plan,
    settings: RulesSettings,
    attachments_dir: Path,
) -> Outcome:
    """Carry out ``plan`` for ``email`` inside the caller's transaction."""
    if plan.skip:
        return Outcome("skipped", email.key, plan.skip)
    row = conn.execute(
        "SELECT engagement_id, date, direction FROM emails WHERE message_key = ?", (email.key,)
    ).fetchone()
    if row is not None:
        # The first copy's date and direction stand: a later copy adds where it was seen
        # and whom it concerns, nothing else.
        engagement_id, date, direction = row
        _add_sighting(conn, engagement_id, provenance)
        _associate(conn, engagement_id, replace(plan, direction=direction), settings, date)
        return Outcome("duplicate", email.key, "already logged")
    date = iso(email.date)
    engagement_id = _insert_email(conn, email, plan, date)
    _add_sighting(conn, engagement_id, provenance)
    stored = _store_attachments(conn, engagement_id, email.attachments, attachments_dir)
    store_raw(conn, engagement_id, raw, stored)
    _associate(conn, engagement_id, plan, settings, date)
    return Outcome("logged", email.key, "")


def _insert_email(conn: sqlite3.Connection, email: Email, plan: Plan, date: str) -> int:
    cur = conn.execute(
        "INSERT INTO engagements(type, occurred_at, created_at, owner) VALUES ('email', ?, ?, ?)",
        (date, now_iso(), plan.sender),
    )
    engagement_id = int(cur.lastrowid or 0)
    everyone = ((email.from_,) if email.from_ else ()) + email.to + email.cc + email.bcc
    conn.execute(
        "INSERT INTO emails(engagement_id, message_key, message_id, thread_key, direction, "
        "from_addr, from_name, to_json, cc_json, bcc_json, subject, body, addresses, date, "
        "date_missing, size, defects) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            engagement_id,
            email.key,
            email.message_id,
            email.thread_key,
            plan.direction,
            email.from_.email if email.from_ else None,
            email.from_.name if email.from_ else None,
            _addresses_json(email.to),
            _addresses_json(email.cc),
            _addresses_json(email.bcc),
            email.subject or "",
            email.text or "",
            " ".join(f"{a.name} {a.email}".strip() for a in everyone),
            date,
            int(bool(email.date_missing)),
            int(email.size),
            "; ".join(str(d) for d in email.defects),
        ),
    )
    return engagement_id


def _addresses_json(addresses: Iterable[Any]) -> str:
    return json.dumps([[a.name, a.email] for a in addresses], ensure_ascii=False)


def _add_sighting(conn: sqlite3.Connection, engagement_id: int, provenance: Provenance) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO sightings(engagement_id, label, inbox, folder, uid, seen_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            engagement_id,
            provenance.label,
            provenance.inbox,
            provenance.folder,
            provenance.uid or 0,
            iso(provenance.received_at),
        ),
    )


def _associate(
    conn: sqlite3.Connection,
    engagement_id: int,
    plan: Plan,
    settings: RulesSettings,
    date: str,
) -> None:
    contact_ids: list[int] = []
    company_ids: list[int] = []
    for contact in plan.contacts:
        contact_id, company_id = _ensure_contact(conn, contact)
        if contact_id not in contact_ids:
            contact_ids.append(contact_id)
        if company_id is not None and company_id not in company_ids:
            company_ids.append(company_id)
    deal_ids = _open_records(conn, "deal", contact_ids, settings.max_deals)
    ticket_ids = _open_records(conn, "ticket", contact_ids, settings.max_tickets)
    cap = settings.max_engagements_per_record
    associate(conn, "contact", engagement_id, contact_ids, cap)
    associate(conn, "company", engagement_id, company_ids, cap)
    associate(conn, "deal", engagement_id, deal_ids, cap)
    associate(conn, "ticket", engagement_id, ticket_ids, cap)
    contacted = plan.direction == "outgoing"
    touch_records(conn, contact_ids, company_ids, date, contacted=contacted)


_ASSOCIATION = {
    "contact": ("engagement_contacts", "contact_id", "contacts"),
    "company": ("engagement_companies", "company_id", "companies"),
    "deal": ("engagement_deals", "deal_id", "deals"),
    "ticket": ("engagement_tickets", "ticket_id", "tickets"),
}


def associate(
    conn: sqlite3.Connection, kind: str, engagement_id: int, ids: Iterable[int], cap: int
) -> None:
    """Link an engagement to records that are below ``cap`` associations (trigger-counted)."""
    table, column, records = _ASSOCIATION[kind]
    for record_id in ids:
        conn.execute(
            f"INSERT OR IGNORE INTO {table}(engagement_id, {column}) "
            f"SELECT ?, ? WHERE (SELECT engagement_count FROM {records} WHERE id = ?) < ?",
            (engagement_id, record_id, record_id, cap),
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


def _ensure_contact(conn: sqlite3.Connection, plan: ContactPlan) -> tuple[int, int | None]:
    """The contact (created if planned) and its company (found or created by domain)."""
    contact_id = plan.contact_id
    if contact_id is None:
        row = conn.execute(
            "SELECT contact_id FROM contact_addresses WHERE address = ?", (plan.email,)
        ).fetchone()
        contact_id = row[0] if row else create_contact(conn, plan.email, plan.name, plan.owner)
    elif plan.owner:
        conn.execute(
            "UPDATE contacts SET owner = ? WHERE id = ? AND owner IS NULL",
            (plan.owner, contact_id),
        )
    company_id = conn.execute(
        "SELECT company_id FROM contacts WHERE id = ?", (contact_id,)
    ).fetchone()[0]
    if company_id is None and plan.company_domain:
        company_id = company_for_domain(conn, plan.company_domain, plan.owner, create=True)
        conn.execute("UPDATE contacts SET company_id = ? WHERE id = ?", (company_id, contact_id))
    return contact_id, company_id


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


def _open_records(
    conn: sqlite3.Connection, kind: str, contact_ids: Sequence[int], limit: int
) -> list[int]:
    """Each contact's most recent open deals (or tickets), up to ``limit`` per contact."""
    table = "deals" if kind == "deal" else "tickets"
    link = "deal_contacts" if kind == "deal" else "ticket_contacts"
    found: list[int] = []
    if limit <= 0:
        return found
    for contact_id in contact_ids:
        rows = conn.execute(
            f"SELECT r.id FROM {link} l JOIN {table} r ON r.id = l.{kind}_id "
            f"WHERE l.contact_id = ? AND r.state = 'open' "
            "ORDER BY r.updated_at DESC, r.id DESC LIMIT ?",
            (contact_id, limit),
        )
        found.extend(r[0] for r in rows if r[0] not in found)
    return found


def _store_attachments(
    conn: sqlite3.Connection, engagement_id: int, attachments: Iterable[Any], directory: Path
) -> list[tuple[str, bytes]]:
    """Write each attachment's file once and its row; return (sha256, data) of those stored."""
    stored: list[tuple[str, bytes]] = []
    for part in attachments:
        data = part.data
        digest = part.sha256 if HEX64.match(part.sha256 or "") else ""
        if data is not None:
            digest = digest or sha256(data).hexdigest()
            write_blob(directory, digest, data)
            stored.append((digest, data))
        conn.execute(
            "INSERT INTO attachments(engagement_id, sha256, filename, content_type, size, "
            "stored, note) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                engagement_id,
                digest,
                safe_filename(part.filename),
                part.content_type or "",
                int(part.size),
                int(data is not None),
                "" if data is not None else OVERSIZED_NOTE,
            ),
        )
    return stored


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
