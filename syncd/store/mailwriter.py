"""The store's write path for mail: one engagement per message key, per batch.

``MailWriter`` carries out each message's ``crm.rules.Plan`` inside the caller's
transaction and, before the commit, the rows it deferred (full-text rows, association
links and counts, last-activity dates: one statement per batch rather than per
message). A message key already in the store only gains a sighting and any new
associations. Attachments are written once by content under
``attachments_dir/ab/cd/<sha256>`` before the transaction commits; a file left by a
rolled-back transaction is harmless because its name is its content. Caches live for
one transaction: nothing else writes while a batch holds the write lock.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncd.crm.model import ContactState, Outcome
from syncd.crm.rules import ContactPlan, Plan, RulesSettings
from syncd.mail.addresses import normalise
from syncd.mail.provenance import Provenance
from syncd.store import threads
from syncd.store.blobs import adopt_blob, write_blob
from syncd.store.contacts import company_for_domain, create_contact
from syncd.store.db import select_in
from syncd.store.detached import detach, release, waiting, waiting_addresses
from syncd.store.engagements import ASSOCIATION
from syncd.store.prepared import AttachmentRow, Prepared, prepare
from syncd.store.raw import insert_raw, prepare_raw
from syncd.store.timestamps import iso, now_iso
from syncd.store.tombstones import REMOVED, any_removed, is_removed, removed_keys

if TYPE_CHECKING:
    from syncd.mail.parse import Email

MISSING_NOTE = "file removed before the message was logged"
NO_PICKED_RECORD = (
    "the BCC tag names no deal or ticket that exists, and no participant is a contact"
)
log = logging.getLogger(__name__)


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
    The plan says which deals and tickets: each contact's most recent open ones, or the
    ones a BCC tag picked (those that exist; ``emails.picked`` remembers the tag, so a
    later copy adds no automatic ones).
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
        self._search: list[tuple[int, str, str, str, str]] = []
        self._links: dict[str, list[tuple[int, int]]] = {k: [] for k in ASSOCIATION}
        self._pairs: set[tuple[str, int, int]] = set()
        self._added: dict[tuple[str, int], int] = {}  # (kind, record) -> links to count
        self._new: set[int] = set()  # engagements created in this transaction
        self._activity: dict[int, str] = {}
        self._contacted: dict[int, str] = {}
        self._company_activity: dict[int, str] = {}
        # The same for the current message, until ``keep`` or ``discard``.
        self._msg_search: tuple[int, str, str, str, str] | None = None
        self._msg_pairs: dict[tuple[str, int, int], None] = {}
        self._msg_added: dict[tuple[str, int], int] = {}
        self._touches: list[tuple[list[int], list[int], str, bool]] = []
        # Whether the store holds any tombstone (store/tombstones.py), asked once per
        # transaction: most stores hold none, and then no message pays for the check.
        # Otherwise ``prefetch`` looks up a group's keys at once.
        self._tombstones: bool | None = None
        self._looked_up: set[str] = set()  # message keys prefetch asked about
        self._removed: set[str] = set()  # those of them that were removed
        self._forget()

    def _forget(self) -> None:
        # The addresses deleted contacts left engagements for (store/detached.py), read
        # on first use: a rollback may have put back rows this writer released.
        self._waiting: set[str] | None = None
        self._address_ids: dict[str, int | None] = {}  # None: no contact has it
        self._states: dict[int, ContactState] = {}
        self._company_of: dict[int, int | None] = {}
        self._domains: dict[str, int] = {}
        self._open: dict[tuple[str, int], list[int]] = {}
        self._counts: dict[tuple[str, int], int | None] = {}  # engagement_count as stored

    def prefetch(self, emails: Iterable[Email]) -> None:
        """Look up the contacts of several messages' participants, and their open deals
        and tickets, with one query each instead of a few per message; and which of
        their keys were removed, if the store holds tombstones."""
        emails = list(emails)
        if self._any_tombstones():
            keys = {e.key for e in emails} - self._looked_up
            self._removed |= removed_keys(self.conn, keys)
            self._looked_up |= keys
        everyone = {a.email for e in emails for a in e.addresses()}
        ids = sorted({state.contact_id for state in self.known(everyone).values()})
        wanted = self.settings.associate
        if "deals" in wanted:
            self._ensure_open("deal", ids, self.settings.max_deals)
        if "tickets" in wanted:
            self._ensure_open("ticket", ids, self.settings.max_tickets)

    def known(self, addresses: Iterable[str]) -> dict[str, ContactState]:
        """Existing contacts by any of their addresses (normalised)."""
        wanted = {normalise(a) for a in addresses}
        ids = self._address_ids
        missing = sorted(a for a in wanted if a not in ids)
        rows = select_in(
            self.conn,
            "SELECT a.address, c.id, c.owner, c.legal_basis, c.lifecycle_stage, "
            "c.company_id, c.engagement_count "
            "FROM contact_addresses a JOIN contacts c ON c.id = a.contact_id "
            "WHERE a.address IN ({marks})",
            missing,
        )
        for address, contact_id, owner, basis, stage, company_id, count in rows:
            ids[address] = contact_id
            if contact_id not in self._states:
                self._states[contact_id] = ContactState(contact_id, owner, basis, stage)
                self._company_of[contact_id] = company_id
                self._counts[("contact", contact_id)] = count
        for address in missing:
            ids.setdefault(address, None)
        return {a: self._states[i] for a in wanted if (i := ids[a]) is not None}

    def write(
        self,
        email: Email,
        raw: bytes,
        provenance: Provenance,
        plan: Plan,
        prepared: Prepared | None = None,
    ) -> Outcome:
        """Carry out ``plan`` for ``email``; ``prepared`` is ``prepare(email, raw)``'s, if made."""
        conn = self.conn
        if self._any_tombstones() and (
            email.key in self._removed
            if email.key in self._looked_up
            else is_removed(conn, email.key)
        ):
            # Removed from the timeline by a person: the same email coming again is a
            # duplicate of what they removed, not new mail.
            return Outcome("duplicate", email.key, REMOVED)
        if plan.skip:
            return Outcome("skipped", email.key, plan.skip)
        row = conn.execute(
            "SELECT engagement_id, date, direction, picked FROM emails WHERE message_key = ?",
            (email.key,),
        ).fetchone()
        if row is not None:
            # The first copy's date and direction stand: a later copy adds where it was
            # seen and whom it concerns, nothing else.
            engagement_id, date, direction, picked = row
            _add_sighting(conn, engagement_id, provenance)
            plan = replace(plan, direction=direction)
            if picked is not None:
                # The sender picked this email's deals and tickets: no copy adds others.
                plan = replace(plan, deals=plan.deals or (), tickets=plan.tickets or ())
            elif plan.picked is not None:
                conn.execute(
                    "UPDATE emails SET picked = ? WHERE engagement_id = ?",
                    (plan.picked, engagement_id),
                )
            self._associate(engagement_id, plan, date)
            return Outcome("duplicate", email.key, "already logged")
        if not plan.contacts and not self._any_picked(plan):
            # Kept for the sender's sake: logged, it would be on no timeline at all.
            return Outcome("quarantined", email.key, f"{NO_PICKED_RECORD} ({plan.picked})")
        if prepared is None:
            prepared = prepare(email, raw)
        date = prepared.date
        engagement_id = self._insert_email(email, provenance, plan, prepared)
        _add_sighting(conn, engagement_id, provenance)
        copy = prepared.copy
        if not self._store_attachments(engagement_id, email.attachments, prepared):
            copy = prepare_raw(raw, [])  # no holes: an attachment file to refill one is gone
        insert_raw(conn, engagement_id, copy)
        self._associate(engagement_id, plan, date)
        waiting_for = self._waiting_for()
        if waiting_for:
            # Mail naming an address whose contact was deleted waits with its older mail.
            ids = self._address_ids
            named = {normalise(a.email) for a in email.addresses()} & waiting_for
            if named := [a for a in named if ids.get(a) is None]:
                detach(conn, engagement_id, named)
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
            "INSERT INTO emails_fts(rowid, subject, body, addresses, attachment_names) "
            "VALUES (?, ?, ?, ?, ?)",
            self._search,
        )
        for kind, rows in self._links.items():
            table, column, records = ASSOCIATION[kind]
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

    def _insert_email(
        self, email: Email, provenance: Provenance, plan: Plan, prepared: Prepared
    ) -> int:
        thread_key = threads.key_for(self.conn, email, provenance, plan.participants)
        threads.adopt_replies(self.conn, email, thread_key)
        cur = self.conn.execute(
            "INSERT INTO engagements(type, occurred_at, created_at, owner) "
            "VALUES ('email', ?, ?, ?)",
            (prepared.date, now_iso(), plan.sender),
        )
        engagement_id = int(cur.lastrowid or 0)
        sender = email.from_
        subject, body = email.subject or "", email.text or ""
        names = " ".join(row[1] for row in prepared.attachments if row[1])
        self.conn.execute(
            "INSERT INTO emails(engagement_id, message_key, message_id, thread_key, direction, "
            "from_addr, from_name, to_json, cc_json, bcc_json, subject, body, addresses, "
            "attachment_names, date, date_missing, size, defects, picked) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                engagement_id,
                email.key,
                email.message_id,
                thread_key,
                plan.direction,
                sender.email if sender else None,
                sender.name if sender else None,
                prepared.to_json,
                prepared.cc_json,
                prepared.bcc_json,
                subject,
                body,
                prepared.addresses,
                names,
                prepared.date,
                int(bool(email.date_missing)),
                int(email.size),
                prepared.defects,
                plan.picked,
            ),
        )
        self._msg_search = (engagement_id, subject, body, prepared.addresses, names)
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
        deal_ids = self._records("deal", plan.deals, contact_ids, settings.max_deals)
        ticket_ids = self._records("ticket", plan.tickets, contact_ids, settings.max_tickets)
        for kind, ids in (
            ("contact", contact_ids),
            ("company", company_ids if plan.companies else []),
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
        table, column, _records = ASSOCIATION[kind]
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
        stored = self._count(kind, record_id)
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
                self._open[("deal", contact_id)] = self._open[("ticket", contact_id)] = []
                self._reattach(contact_id, plan.email)
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

    def _records(
        self, kind: str, picked: Sequence[int] | None, contact_ids: Sequence[int], limit: int
    ) -> list[int]:
        """The deals (or tickets) to associate: the plan's picks that exist, else (None)
        each contact's most recent open ones."""
        if picked is None:
            return self._open_records(kind, contact_ids, limit)
        found = [i for i in picked if self._count(kind, i) is not None]
        for missing in sorted(set(picked) - set(found)):
            log.warning("the BCC tag names %s %d, which does not exist; logged without it",
                        kind, missing)  # fmt: skip
        return found

    def _any_picked(self, plan: Plan) -> bool:
        """Whether a deal or ticket the plan picked exists."""
        return any(
            self._count(kind, i) is not None
            for kind, ids in (("deal", plan.deals or ()), ("ticket", plan.tickets or ()))
            for i in ids
        )

    def _count(self, kind: str, record_id: int) -> int | None:
        """The record's engagement_count as stored, None if there is no such record."""
        key = (kind, record_id)
        if key not in self._counts:
            _table, _column, records = ASSOCIATION[kind]
            row = self.conn.execute(
                f"SELECT engagement_count FROM {records} WHERE id = ?", (record_id,)
            ).fetchone()
            self._counts[key] = row[0] if row else None
        return self._counts[key]

    def _any_tombstones(self) -> bool:
        if self._tombstones is None:
            self._tombstones = any_removed(self.conn)
        return self._tombstones

    def _waiting_for(self) -> set[str]:
        if self._waiting is None:
            self._waiting = waiting_addresses(self.conn)
        return self._waiting

    def _reattach(self, contact_id: int, address: str) -> None:
        """A contact created for an address whose deleted contact left engagements: they
        are associated with it again (``store/detached.py``), through ``_link`` so that
        the cap and the deferred rows stay this writer's. The rules create no contact
        under ``require_legal_basis``, so a new contact here may have them all."""
        waiting_for = self._waiting_for()
        if address not in waiting_for:
            return
        for engagement_id, date, direction in waiting(self.conn, [address]):
            self._link("contact", engagement_id, contact_id)
            self._touches.append(([contact_id], [], date, direction == "outgoing"))
        release(self.conn, [address])
        waiting_for.discard(address)

    def _open_records(self, kind: str, contact_ids: Sequence[int], limit: int) -> list[int]:
        """Each contact's most recent open deals (or tickets), up to ``limit`` per contact."""
        found: list[int] = []
        if limit <= 0:
            return found
        self._ensure_open(kind, contact_ids, limit)
        for contact_id in contact_ids:
            found.extend(i for i in self._open[(kind, contact_id)] if i not in found)
        return found

    def _ensure_open(self, kind: str, contact_ids: Sequence[int], limit: int) -> None:
        """Cache the open deals (or tickets) of those ``contact_ids`` not cached yet."""
        missing = [i for i in contact_ids if (kind, i) not in self._open]
        if missing and limit > 0:
            self._load_open(kind, missing, limit)

    def _load_open(self, kind: str, contact_ids: Sequence[int], limit: int) -> None:
        table = "deals" if kind == "deal" else "tickets"
        link = "deal_contacts" if kind == "deal" else "ticket_contacts"
        for contact_id in contact_ids:
            self._open[(kind, contact_id)] = []
        rows = select_in(
            self.conn,
            f"SELECT l.contact_id, r.id FROM {link} l JOIN {table} r ON r.id = l.{kind}_id "
            "WHERE l.contact_id IN ({marks}) AND r.state = 'open' "
            "ORDER BY l.contact_id, r.updated_at DESC, r.id DESC",
            contact_ids,
        )
        for contact_id, record_id in rows:
            ids = self._open[(kind, contact_id)]
            if len(ids) < limit:
                ids.append(record_id)

    def _store_attachments(
        self, engagement_id: int, parts: Sequence[Any], prepared: Prepared
    ) -> bool:
        """Put each kept attachment's file in place before the rows that say it is stored:
        write it, or adopt the file a parser process staged. False if a file that should
        be stored is gone (an erase removed it meanwhile): its row then says so."""
        complete = True
        rows: list[AttachmentRow] = []
        staged = prepared.staged or ("",) * len(parts)
        for part, row, stage in zip(parts, prepared.attachments, staged, strict=True):
            if part.data is not None:
                write_blob(self.attachments_dir, row[0], part.data)
            elif row[4] and not adopt_blob(self.attachments_dir, row[0], stage):
                row = (*row[:4], 0, MISSING_NOTE)
                complete = False
            rows.append(row)
        if rows:
            self.conn.executemany(
                "INSERT INTO attachments(engagement_id, sha256, filename, content_type, size, "
                "stored, note) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(engagement_id, *row) for row in rows],
            )
        return complete


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
