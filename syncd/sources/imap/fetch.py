"""The IMAP side of one folder's sync, run on a worker thread: metadata, filters, bodies.

``Fetcher`` EXAMINEs the folder, asks ``syncplan`` for the plan, SEARCHes, fetches
metadata in chunks (INTERNALDATE, size and, when a filter needs them, the participant
and Message-ID headers), keeps what the window, the people filter and (on a scan again)
the logged-keys lookup allow, then fetches bodies in batches bounded by count and bytes.
A message over ``Limits.max_attachment_bytes`` (by its RFC822.SIZE) is fetched by parts
instead: BODYSTRUCTURE first, then what ``bodystructure`` plans (the header, each part's
MIME header, the bodies syncd would store), rebuilt into one message marked partial; an
attachment the store would not keep never reaches memory. When the plan leaves nothing
out, or the structure cannot be rebuilt from, the message is fetched whole after all.
It talks to the delivering thread only through a bounded queue: ``Batch`` (mail with the
checkpoint that covers it), ``Lookup`` (which keys are logged; the delivering thread owns
the store), ``Done`` and ``Failed``.

No message is skipped without a reason. The UIDs whose body comes back are compared with
the UIDs asked for; each missing one is fetched alone, and one that is still missing is
looked up with UID SEARCH: gone means expunged since the SEARCH (nothing to log), present
means unfetchable. A body fetch that loses the connection marks its UIDs suspect for the
rest of the pass, so after the reconnect they are fetched one by one, and a suspect UID
whose lone fetch loses the connection again is unfetchable too (Dovecot answers BYE when
it cannot read a message file). For an unfetchable UID the engine commits the mail below
it with a checkpoint just before it, reports a folder error naming the UID (``syncd
status`` shows it) and leaves that folder for this pass; the next passes retry from that
UID. The checkpoint counts the passes that stopped there (``syncplan.MAX_STUCK_PASSES``);
the pass after that many gives the UID up: instead of its body it hands over a note,
``X-Syncd-Unfetchable`` naming the UID and folder, which the pipeline quarantines (``syncd
quarantine list`` shows it), and the folder goes on. Before a message fetched by parts,
the engine commits the same count, so a fetch that kills the process (the OOM killer)
counts too and cannot restart the same fetch forever.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from syncd.mail.parse import UNFETCHABLE_FIELD, header_message_key, message_key
from syncd.mail.provenance import Provenance, imap_label
from syncd.sources.base import Item
from syncd.sources.imap import bodystructure, syncplan
from syncd.sources.imap.bodystructure import HEAD_KEY as HEAD
from syncd.sources.imap.conn import ConnectionLost, FetchedBody, FolderError, ImapSession
from syncd.sources.imap.fetchparse import gm_thrid, internal_date
from syncd.sources.imap.syncplan import Action, FolderCheckpoint, FolderPlan

Body = FetchedBody  # uid, raw message, INTERNALDATE, Gmail's thread id
KnownKeys = Callable[[str, set[str]], set[str]]  # label, keys -> those logged under it
# Called on the fetching thread with each batch as it arrives; what it returns is what
# ``deliver`` gets (the pipeline starts parsing there, ahead of the writer).
ParseAhead = Callable[[list[Item]], list[Item]]


@dataclass(frozen=True)
class Limits:
    """How much the engine holds at once: memory is bounded by these, not the mailbox."""

    meta_chunk: int = 1000  # UIDs per metadata FETCH
    batch_count: int = 200  # messages per body FETCH and per deliver() transaction
    batch_bytes: int = 4 * 1024 * 1024  # RFC822.SIZE bytes per body FETCH
    # store.max_attachment_mb in bytes: a larger message may hold an attachment the store
    # would not keep, so it is fetched by parts and those are left on the server (a
    # smaller one cannot: it is fetched whole). None: every message is fetched whole.
    max_attachment_bytes: int | None = None
    # Batches fetched ahead of the writer, each already parsing (parse_ahead): one is
    # as fast as two here and holds a batch less in memory.
    queue_batches: int = 1


@dataclass(frozen=True)
class PassSettings:
    """What a fetcher needs of its inbox's pass, fixed for the whole pass."""

    inbox: str
    owner: str | None  # the inbox's member, carried in each message's provenance
    from_: str  # sync.from
    people: str  # sync.people
    started: datetime  # the pass's start instant: windows count back from it
    dry_run: bool
    limits: Limits
    contacts: frozenset[str]  # contact addresses, for ``people: contacts``
    known_keys: KnownKeys | None = None
    parse_ahead: ParseAhead | None = None

    def provenance(
        self,
        folder: str,
        uid: int,
        internal_date: datetime | None,
        partial: bool = False,
        gm_thrid: str | None = None,
    ) -> Provenance:
        return Provenance(
            source="imap",
            received_at=internal_date or datetime.now(UTC),
            inbox=self.inbox,
            folder=folder,
            uid=uid,
            owner=self.owner,
            internal_date=internal_date,
            partial=partial,
            gm_thrid=gm_thrid,
        )


class _Stopped(Exception):
    """The pass is stopping: nothing more is fetched or handed over."""


class Unfetchable(FolderError):
    """A message the folder still holds but whose body the server will not give us."""

    def __init__(self, uid: int, why: str, *, session_lost: bool = False) -> None:
        super().__init__(
            f"UID {uid} exists but cannot be fetched ({why}); this folder's sync stops"
            " before it and retries it on the next pass"
        )
        self.uid = uid
        self.session_lost = session_lost


@dataclass(frozen=True)
class Batch:
    items: list[Item]
    checkpoint: FolderCheckpoint
    planned: int
    logged_before: int = 0  # messages the checkpoint covers that were skipped as logged


@dataclass(frozen=True)
class Lookup:
    """A question for the delivering thread, which owns the store: which keys are logged."""

    ask: Callable[[], set[str]]
    answer: queue.Queue[set[str]]


@dataclass(frozen=True)
class Done:
    would_fetch: int
    logged: int = 0  # dry run: messages left out because they are logged already


@dataclass(frozen=True)
class Failed:
    error: BaseException


class Fetcher:
    """The IMAP side of one folder, run in a worker thread; talks only through the queue."""

    def __init__(
        self,
        settings: PassSettings,
        session: ImapSession,
        folder: str,
        checkpoint: FolderCheckpoint | None,
        out: queue.Queue[Batch | Lookup | Done | Failed],
        stop: threading.Event,
        suspects: set[int],
    ) -> None:
        self.pass_, self.session, self.folder = settings, session, folder
        self.checkpoint, self.out, self.stop = checkpoint, out, stop
        # UIDs of body fetches that lost the connection in this pass (the pass's set for
        # this folder: a reconnect's fetcher goes on with it)
        self.suspects = suspects
        self.skipped: list[int] = []  # UIDs skipped as logged, not yet under a checkpoint
        self.large: dict[int, int] = {}  # UID -> RFC822.SIZE of mail to fetch by parts
        self.partial: set[int] = set()  # UIDs whose body is rebuilt from some parts

    def run(self) -> None:
        try:
            self._fetch()
        except _Stopped:
            return
        except BaseException as exc:  # handed to the writer thread, which decides
            self._put(Failed(exc))

    def _put(self, item: Batch | Lookup | Done | Failed) -> bool:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _fetch(self) -> None:
        status = self.session.examine(self.folder)
        plan = syncplan.plan_folder(
            self.checkpoint,
            status,
            inbox=self.pass_.inbox,
            folder=self.folder,
            from_=self.pass_.from_,
            people=self.pass_.people,
            now=self.pass_.started,
        )
        if plan.action is Action.NOTHING:
            if not self.pass_.dry_run and plan.base != self.checkpoint:
                self._put(Batch([], plan.base, 0))  # e.g. a new HIGHESTMODSEQ
            self._put(Done(0))
            return
        uids = self.session.search_uids(plan.after_uid, plan.scan_top, plan.since)
        wanted = 0
        pending: list[int] = []
        for chunk in syncplan.chunks(uids, self.pass_.limits.meta_chunk):
            if self.stop.is_set():
                return
            selected = self._select(plan, chunk)
            wanted += len(selected)
            if self.pass_.dry_run:
                continue
            for batch in syncplan.body_batches(
                selected,
                max_count=self.pass_.limits.batch_count,
                max_bytes=self.pass_.limits.batch_bytes,
                # Mail fetched by parts travels alone: its attempt is committed first.
                alone_above=self.pass_.limits.max_attachment_bytes,
            ):
                if pending and not self._deliver_bodies(plan, pending, len(uids), last=False):
                    return
                pending = batch
        # The last batch (possibly empty) carries the checkpoint that closes the plan.
        if not self.pass_.dry_run and not self._deliver_bodies(plan, pending, len(uids), last=True):
            return
        self._put(Done(wanted, len(self.skipped)))

    def _select(self, plan: FolderPlan, chunk: list[int]) -> list[tuple[int, int]]:
        """(uid, size) of the messages in ``chunk`` that the window and people filter keep,
        less, on a scan again, those already logged from this folder."""
        known_keys = self.pass_.known_keys if plan.check_logged else None
        headers = plan.people_before is not None or known_keys is not None
        kept: list[tuple[int, int, bytes | None]] = []
        for uid, size, internal, header in self.session.fetch_meta(chunk, headers=headers):
            if not syncplan.in_window(internal, plan):
                continue
            # header None: the server would not say; keep the message rather than guess.
            if (
                syncplan.needs_people_check(internal, plan)
                and header is not None
                and not syncplan.involves_contact(header, self.pass_.contacts)
            ):
                continue
            kept.append((uid, size, header))
        limit = self.pass_.limits.max_attachment_bytes
        self.large.update((uid, size) for uid, size, _ in kept if limit and size > limit)
        if known_keys is not None:
            kept = self._not_logged(kept, known_keys)
        return [(uid, size) for uid, size, _ in kept]

    def _not_logged(
        self, kept: list[tuple[int, int, bytes | None]], known_keys: KnownKeys
    ) -> list[tuple[int, int, bytes | None]]:
        """Those of ``kept`` whose Message-ID is not logged from this folder yet (mail
        without one is kept: its key is a digest of the whole message)."""
        keys = {
            uid: key for uid, _, header in kept if header and (key := header_message_key(header))
        }
        if not keys:
            return kept
        label = imap_label(self.pass_.inbox, self.folder)
        known = self._ask(partial(known_keys, label, set(keys.values())))
        if known is None:
            return []  # stopping: nothing more is fetched or delivered
        self.skipped += [uid for uid, _, _ in kept if keys.get(uid) in known]
        return [k for k in kept if keys.get(k[0]) not in known]

    def _ask(self, question: Callable[[], set[str]]) -> set[str] | None:
        """The delivering thread's answer (it has committed every batch put before the
        question by then); None when stopping."""
        answer: queue.Queue[set[str]] = queue.Queue(1)
        if not self._put(Lookup(question, answer)):
            return None
        while not self.stop.is_set():
            try:
                return answer.get(timeout=0.2)
            except queue.Empty:
                continue
        return None

    def _batch(self, items: list[Item], checkpoint: FolderCheckpoint, planned: int) -> bool:
        """Hand a batch over, with the count of skipped UIDs its checkpoint now covers."""
        covered = sum(uid <= checkpoint.last_uid for uid in self.skipped)
        self.skipped = [uid for uid in self.skipped if uid > checkpoint.last_uid]
        self.checkpoint = checkpoint
        return self._put(Batch(items, checkpoint, planned, covered))

    def _deliver_bodies(self, plan: FolderPlan, uids: list[int], planned: int, last: bool) -> bool:
        fetched, stuck = self._fetch_all(plan, uids, planned)
        items = [
            (raw, self.pass_.provenance(self.folder, uid, internal, uid in self.partial, thrid))
            for uid, raw, internal, thrid in fetched
        ]
        if items and self.pass_.parse_ahead is not None:
            items = self.pass_.parse_ahead(items)
        if stuck is not None:
            checkpoint = plan.checkpoint_before(stuck.uid)
            if (items or checkpoint != self.checkpoint) and not self._batch(
                items, checkpoint, planned
            ):
                return False
            raise stuck
        checkpoint = plan.checkpoint_after(uids, last=last)
        if not items and checkpoint == self.checkpoint:
            return True
        return self._batch(items, checkpoint, planned)

    def _fetch_all(
        self, plan: FolderPlan, uids: list[int], planned: int
    ) -> tuple[list[Body], Unfetchable | None]:
        """Bodies of ``uids`` in order, less the expunged ones; at the first UID that exists
        but cannot be fetched, the bodies below it and that UID's error."""
        if not uids:
            return [], None
        suspects = self.suspects
        given_up = {uid for uid in uids if plan.gives_up(uid)}
        small = [uid for uid in uids if uid not in self.large and uid not in given_up]
        whole = self._bodies(small) if small and suspects.isdisjoint(small) else None
        got = {body[0]: body for body in whole or ()}
        out: list[Body] = []
        for uid in uids:
            if uid in given_up:
                got[uid] = self._given_up(uid)
            if uid not in got:
                if uid in self.large and not self._attempt(plan, uid, planned):
                    raise _Stopped
                try:
                    alone = self._by_parts(uid) if uid in self.large else self._bodies([uid])
                except Unfetchable as exc:
                    return out, exc
                if alone:
                    got[uid] = alone[0]
                elif self.session.uid_exists(uid):
                    why = "the server refused the FETCH" if alone is None else "no body returned"
                    return out, Unfetchable(uid, why)
                else:
                    continue  # expunged since the SEARCH: nothing left to log
            out.append(got[uid])
        return out, None

    def _attempt(self, plan: FolderPlan, uid: int, planned: int) -> bool:
        """Commit, before a large message is fetched, that this pass tries it (a batch of
        its own, so every UID below it is committed); False when stopping."""
        checkpoint = plan.checkpoint_before(uid)
        if checkpoint == self.checkpoint:
            return True
        return self._batch([], checkpoint, planned) and self._ask(set) is not None

    def _given_up(self, uid: int) -> Body:
        """A note standing for a message that stopped too many passes; quarantined."""
        self.partial.add(uid)
        note = (
            f"{UNFETCHABLE_FIELD}: UID {uid} in {self.folder} stopped"
            f" {syncplan.MAX_STUCK_PASSES} sync passes in a row; see it on the server\r\n\r\n"
        )
        return FetchedBody(uid, note.encode(), None)

    def _bodies(self, uids: list[int]) -> list[Body] | None:
        """BODY[] of those ``uids`` the server returns; None when it refuses (NO/BAD)."""
        return self._guarded(uids, lambda: self.session.fetch_bodies(uids))

    def _by_parts(self, uid: int) -> list[Body] | None:
        """What syncd keeps of a large message, rebuilt from its parts ([] if it is gone,
        None when the server refuses); the whole message when nothing would be left out."""
        limit = self.pass_.limits.max_attachment_bytes or 0
        try:
            # {}: the message is gone; None: the server refused.
            fields = self._guarded([uid], lambda: self.session.fetch_structure(uid) or {})
            if not fields:
                return fields if fields is None else []
            root = bodystructure.read_structure(fields.get(b"BODYSTRUCTURE"))
            plan = bodystructure.plan_parts(root, max_part=limit)
            if not plan.partial:
                return self._bodies([uid])
            items = bodystructure.fetch_items(plan)
            answer = self._guarded([uid], lambda: self.session.fetch_parts(uid, items) or {})
            if not answer:
                return answer if answer is None else []
            key = message_key(_bytes(answer.get(b"BODY[HEADER]")), _bytes(answer.get(HEAD)))
            digest = key if key.startswith("sha256:") else None
            raw = bodystructure.rebuild(plan, answer, size=self.large[uid], key=digest)
        except bodystructure.StructureError:
            return self._bodies([uid])  # a structure we cannot rebuild from: whole, as before
        self.partial.add(uid)
        return [FetchedBody(uid, raw, internal_date(fields.get(b"INTERNALDATE")), gm_thrid(fields))]

    def _guarded(self, uids: list[int], fetch: Callable[[], Any]) -> Any:
        """``fetch()``; None when the server refuses (NO/BAD). A lost connection marks
        ``uids`` suspect, or makes a suspect fetched alone unfetchable."""
        try:
            return fetch()
        except FolderError:
            return None
        except ConnectionLost as exc:
            suspects = self.suspects
            if len(uids) == 1 and uids[0] in suspects:
                why = f"the connection dropped each time it was fetched; last: {exc.reason}"
                raise Unfetchable(uids[0], why, session_lost=True) from None
            suspects.update(uids)
            raise


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else b""
