"""The store's write path for mail: one engagement per message key, its sightings,
associations, record updates, attachments, raw bytes, and the quarantine.

Every function takes an open ``sqlite3.Connection`` and runs inside the caller's
transaction (``db.transaction``), so a batch of mail and a source's checkpoint commit
together. ``MailWriter`` carries out each message's ``crm.rules.Plan`` and, before the
commit, the rows it deferred: a message key already in the store only gains a sighting
and any new associations. Attachments are written once by content under
``attachments_dir/ab/cd/<sha256>`` before the transaction commits; a file left by a
rolled-back transaction is harmless because its name is its content.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncd.crm.model import ContactState, Outcome
from syncd.crm.rules import ContactPlan, Plan, RulesSettings
from syncd.mail.provenance import Provenance
from syncd.store.blobs import write_blob
from syncd.store.raw import RawCopy, insert_raw, prepare_raw, stored_digest

if TYPE_CHECKING:
    from syncd.mail.parse import Email

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


class MailWriter:
    """The write side of one pipeline transaction: ``write`` carries out each message's
    ``crm.rules.Plan``; ``flush`` writes what was deferred; then the caller commits.

    It lives for one transaction only. BEGIN IMMEDIATE holds the write lock, so nothing
    else changes the store meanwhile: what it reads (contacts by address, their companies,
    companies by domain, open deals and tickets) stays true except for its own writes,
    which it records. Rows nothing reads before COMMIT wait for ``flush`` and go in with
    one ``executemany`` each, in message order: the search index (an FTS5 insert per
    message under a SAVEPOINT would flush a tiny index segment every time),
    associations (the cap check sees the same counts in the same order) and
    last_activity/last_contacted (only ever the latest date, so one UPDATE per record).
    Each message runs under the caller's SAVEPOINT: ``keep`` after RELEASE, ``discard``
    after ROLLBACK TO, which forgets that message's deferred rows and every cache (they
    may name rows the rollback removed).
    """

    def __init__(self, conn: sqlite3.Connection, settings: RulesSettings, attachments_dir: Path):
        self.conn = conn
        self.settings = settings
        self.attachments_dir = attachments_dir
        self._cap = settings.max_engagements_per_record
        # Deferred rows of the kept messages.
        self._search: list[tuple[int, str, str, str]] = []
        self._links: dict[str, list[tuple[int, int]]] = {k: [] for k in _ASSOCIATION}
        self._pairs: set[tuple[str, int, int]] = set()
        self._added: dict[tuple[str, int], int] = {}  # (kind, record) -> links to count
        self._new: set[int] = set()  # engagements created in this transaction
        self._activity: dict[int, str] = {}
        self._contacted: dict[int, str] = {}
        self._company_activity: dict[int, str] = {}
        # The same for the current message, until ``keep`` or ``discard``.
        self._msg_search: tuple[int, str, str, str] | None = None
        self._msg_pairs: dict[tuple[str, int, int], None] = {}
        self._msg_added: dict[tuple[str, int], int] = {}
        self._touches: list[tuple[list[int], list[int], str, bool]] = []
        self._forget()

    def _forget(self) -> None:
        self._address_ids: dict[str, int | None] = {}  # None: no contact has it
        self._states: dict[int, ContactState] = {}
        self._company_of: dict[int, int | None] = {}
        self._domains: dict[str, int] = {}
        self._open: dict[tuple[str, int], list[int]] = {}
        self._counts: dict[tuple[str, int], int | None] = {}  # engagement_count as stored

    def known(self, addresses: Iterable[str]) -> dict[str, ContactState]:
        """Existing contacts by any of their addresses, as ``lookup_contacts`` finds them."""
        wanted = {a.lower() for a in addresses}
        ids = self._address_ids
        missing = sorted(a for a in wanted if a not in ids)
        # In slices: a message may carry more recipients than SQLite allows bound variables.
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            rows = self.conn.execute(
                "SELECT a.address, c.id, c.owner, c.legal_basis, c.lifecycle_stage, "
                "c.company_id, c.engagement_count "
                "FROM contact_addresses a JOIN contacts c ON c.id = a.contact_id "
                f"WHERE a.address IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            for address, contact_id, owner, basis, stage, company_id, count in rows:
                ids[address] = contact_id
                if contact_id not in self._states:
                    self._states[contact_id] = ContactState(contact_id, owner, basis, stage)
                    self._company_of[contact_id] = company_id
                    self._counts[("contact", contact_id)] = count
            for address in chunk:
                ids.setdefault(address, None)
        return {a: self._states[i] for a in wanted if (i := ids[a]) is not None}

    def write(
        self,
        email: Email,
        raw: bytes,
        provenance: Provenance,
        plan: Plan,
        copy: RawCopy | None = None,
    ) -> Outcome:
        """Carry out ``plan`` for ``email``; ``copy`` is ``raw.prepare_raw``'s, if made."""
        if plan.skip:
            return Outcome("skipped", email.key, plan.skip)
        conn = self.conn
        row = conn.execute(
            "SELECT engagement_id, date, direction FROM emails WHERE message_key = ?",
            (email.key,),
        ).fetchone()
        if row is not None:
            # The first copy's date and direction stand: a later copy adds where it was
            # seen and whom it concerns, nothing else.
            engagement_id, date, direction = row
            _add_sighting(conn, engagement_id, provenance)
            self._associate(engagement_id, replace(plan, direction=direction), date)
            return Outcome("duplicate", email.key, "already logged")
        date = iso(email.date)
        engagement_id = self._insert_email(email, plan, date)
        _add_sighting(conn, engagement_id, provenance)
        stored = self._store_attachments(engagement_id, email.attachments)
        insert_raw(conn, engagement_id, raw, copy or prepare_raw(raw, stored))
        self._associate(engagement_id, plan, date)
        return Outcome("logged", email.key, "")

    def keep(self) -> None:
        """The current message's savepoint was released: its deferred rows stand."""
        if self._msg_search is not None:
            self._search.append(self._msg_search)
            self._new.add(self._msg_search[0])
        for kind, engagement_id, record_id in self._msg_pairs:
            self._pairs.add((kind, engagement_id, record_id))
            self._links[kind].append((engagement_id, record_id))
        for key, n in self._msg_added.items():
            self._added[key] = self._added.get(key, 0) + n
        for contact_ids, company_ids, date, contacted in self._touches:
            for contact_id in contact_ids:
                if date > self._activity.get(contact_id, ""):
                    self._activity[contact_id] = date
                if contacted and date > self._contacted.get(contact_id, ""):
                    self._contacted[contact_id] = date
            for company_id in company_ids:
                if date > self._company_activity.get(company_id, ""):
                    self._company_activity[company_id] = date
        self._clear_message()

    def discard(self) -> None:
        """The current message was rolled back to its savepoint: forget what it did."""
        self._clear_message()
        self._forget()

    def _clear_message(self) -> None:
        self._msg_search = None
        self._msg_pairs.clear()
        self._msg_added.clear()
        self._touches.clear()

    def flush(self) -> None:
        """Write the deferred rows of every kept message; call before COMMIT."""
        conn = self.conn
        conn.executemany(
            "INSERT INTO emails_fts(rowid, subject, body, addresses) VALUES (?, ?, ?, ?)",
            self._search,
        )
        for kind, rows in self._links.items():
            table, column, records = _ASSOCIATION[kind]
            conn.executemany(f"INSERT INTO {table}(engagement_id, {column}) VALUES (?, ?)", rows)
            conn.executemany(
                f"UPDATE {records} SET engagement_count = engagement_count + ? WHERE id = ?",
                sorted((n, i) for (k, i), n in self._added.items() if k == kind),
            )
        conn.executemany(
            "UPDATE contacts SET last_activity = max(coalesce(last_activity, ''), ?), "
            "last_contacted = CASE WHEN ? THEN max(coalesce(last_contacted, ''), ?) "
            "ELSE last_contacted END WHERE id = ?",
            [
                (date, i in self._contacted, self._contacted.get(i, ""), i)
                for i, date in sorted(self._activity.items())
            ],
        )
        conn.executemany(
            "UPDATE companies SET last_activity = max(coalesce(last_activity, ''), ?) WHERE id = ?",
            [(date, i) for i, date in sorted(self._company_activity.items())],
        )
        self._search.clear()
        for rows in self._links.values():
            rows.clear()
        self._pairs.clear()
        self._added.clear()
        self._new.clear()
        self._activity.clear()
        self._contacted.clear()
        self._company_activity.clear()

    def _insert_email(self, email: Email, plan: Plan, date: str) -> int:
        cur = self.conn.execute(
            "INSERT INTO engagements(type, occurred_at, created_at, owner) "
            "VALUES ('email', ?, ?, ?)",
            (date, now_iso(), plan.sender),
        )
        engagement_id = int(cur.lastrowid or 0)
        sender = email.from_
        everyone = ((sender,) if sender else ()) + email.to + email.cc + email.bcc
        subject, body = email.subject or "", email.text or ""
        addresses = " ".join(f"{a.name} {a.email}".strip() for a in everyone)
        self.conn.execute(
            "INSERT INTO emails(engagement_id, message_key, message_id, thread_key, direction, "
            "from_addr, from_name, to_json, cc_json, bcc_json, subject, body, addresses, date, "
            "date_missing, size, defects) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                engagement_id,
                email.key,
                email.message_id,
                email.thread_key,
                plan.direction,
                sender.email if sender else None,
                sender.name if sender else None,
                _addresses_json(email.to),
                _addresses_json(email.cc),
                _addresses_json(email.bcc),
                subject,
                body,
                addresses,
                date,
                int(bool(email.date_missing)),
                int(email.size),
                "; ".join(str(d) for d in email.defects),
            ),
        )
        self._msg_search = (engagement_id, subject, body, addresses)
        return engagement_id

    def _associate(self, engagement_id: int, plan: Plan, date: str) -> None:
        contact_ids: list[int] = []
        company_ids: list[int] = []
        for contact in plan.contacts:
            contact_id, company_id = self._ensure_contact(contact)
            if contact_id not in contact_ids:
                contact_ids.append(contact_id)
            if company_id is not None and company_id not in company_ids:
                company_ids.append(company_id)
        settings = self.settings
        deal_ids = self._open_records("deal", contact_ids, settings.max_deals)
        ticket_ids = self._open_records("ticket", contact_ids, settings.max_tickets)
        for kind, ids in (
            ("contact", contact_ids),
            ("company", company_ids),
            ("deal", deal_ids),
            ("ticket", ticket_ids),
        ):
            for record_id in ids:
                self._link(kind, engagement_id, record_id)
        self._touches.append((contact_ids, company_ids, date, plan.direction == "outgoing"))

    def _link(self, kind: str, engagement_id: int, record_id: int) -> None:
        """``associate`` for one record, the cap checked against the counts it keeps."""
        pair = (kind, engagement_id, record_id)
        if pair in self._msg_pairs or pair in self._pairs:
            return
        table, column, records = _ASSOCIATION[kind]
        current = self._msg_search is not None and self._msg_search[0] == engagement_id
        if not current and engagement_id not in self._new:
            # A copy of mail logged before this transaction: it may be linked already.
            linked = self.conn.execute(
                f"SELECT 1 FROM {table} WHERE engagement_id = ? AND {column} = ?",
                (engagement_id, record_id),
            ).fetchone()
            if linked is not None:
                return
        key = (kind, record_id)
        if key in self._counts:
            stored = self._counts[key]
        else:
            row = self.conn.execute(
                f"SELECT engagement_count FROM {records} WHERE id = ?", (record_id,)
            ).fetchone()
            stored = self._counts[key] = row[0] if row else None
        if stored is None:
            return
        count = stored + self._added.get(key, 0) + self._msg_added.get(key, 0)
        if count < self._cap:
            self._msg_pairs[pair] = None
            self._msg_added[key] = self._msg_added.get(key, 0) + 1

    def _ensure_contact(self, plan: ContactPlan) -> tuple[int, int | None]:
        """The contact (created if planned) and its company (found or created by domain)."""
        conn = self.conn
        contact_id = plan.contact_id
        if contact_id is None:
            contact_id = self._address_ids.get(plan.email)
            if plan.email not in self._address_ids:
                row = conn.execute(
                    "SELECT contact_id FROM contact_addresses WHERE address = ?", (plan.email,)
                ).fetchone()
                contact_id = row[0] if row else None
            if contact_id is None:
                contact_id = create_contact(conn, plan.email, plan.name, plan.owner)
                self._states[contact_id] = ContactState(contact_id, plan.owner, None, "lead")
                self._company_of[contact_id] = None
                self._counts[("contact", contact_id)] = 0
            self._address_ids[plan.email] = contact_id
        elif plan.owner:
            state = self._states.get(contact_id)
            if state is None or state.owner is None:
                conn.execute(
                    "UPDATE contacts SET owner = ? WHERE id = ? AND owner IS NULL",
                    (plan.owner, contact_id),
                )
                if state is not None:
                    self._states[contact_id] = replace(state, owner=plan.owner)
        if contact_id in self._company_of:
            company_id = self._company_of[contact_id]
        else:
            company_id = conn.execute(
                "SELECT company_id FROM contacts WHERE id = ?", (contact_id,)
            ).fetchone()[0]
        if company_id is None and plan.company_domain:
            company_id = self._domains.get(plan.company_domain)
            if company_id is None:
                company_id = company_for_domain(conn, plan.company_domain, plan.owner, create=True)
                self._domains[plan.company_domain] = company_id  # type: ignore[assignment]
            conn.execute(
                "UPDATE contacts SET company_id = ? WHERE id = ?", (company_id, contact_id)
            )
        self._company_of[contact_id] = company_id
        return contact_id, company_id

    def _open_records(self, kind: str, contact_ids: Sequence[int], limit: int) -> list[int]:
        """Each contact's most recent open deals (or tickets), up to ``limit`` per contact."""
        found: list[int] = []
        if limit <= 0:
            return found
        table = "deals" if kind == "deal" else "tickets"
        link = "deal_contacts" if kind == "deal" else "ticket_contacts"
        for contact_id in contact_ids:
            ids = self._open.get((kind, contact_id))
            if ids is None:
                rows = self.conn.execute(
                    f"SELECT r.id FROM {link} l JOIN {table} r ON r.id = l.{kind}_id "
                    f"WHERE l.contact_id = ? AND r.state = 'open' "
                    "ORDER BY r.updated_at DESC, r.id DESC LIMIT ?",
                    (contact_id, limit),
                )
                ids = self._open[(kind, contact_id)] = [r[0] for r in rows]
            found.extend(i for i in ids if i not in found)
        return found

    def _store_attachments(
        self, engagement_id: int, attachments: Iterable[Any]
    ) -> list[tuple[str, bytes]]:
        """Write each attachment's file once and its row; return (sha256, data) of those stored."""
        stored: list[tuple[str, bytes]] = []
        rows = []
        for part in attachments:
            data = part.data
            digest = stored_digest(part)
            if data is not None:
                write_blob(self.attachments_dir, digest, data)
                stored.append((digest, data))
            rows.append(
                (
                    engagement_id,
                    digest,
                    safe_filename(part.filename),
                    part.content_type or "",
                    int(part.size),
                    int(data is not None),
                    "" if data is not None else OVERSIZED_NOTE,
                )
            )
        if rows:
            self.conn.executemany(
                "INSERT INTO attachments(engagement_id, sha256, filename, content_type, size, "
                "stored, note) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        return stored


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


_ASSOCIATION = {
    "contact": ("engagement_contacts", "contact_id", "contacts"),
    "company": ("engagement_companies", "company_id", "companies"),
    "deal": ("engagement_deals", "deal_id", "deals"),
    "ticket": ("engagement_tickets", "ticket_id", "tickets"),
}


def associate(
    conn: sqlite3.Connection, kind: str, engagement_id: int, ids: Iterable[int], cap: int
) -> None:
    """Link an engagement to records that are below ``cap`` associations, and count it."""
    table, column, records = _ASSOCIATION[kind]
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
