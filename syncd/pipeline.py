"""The one path every source's mail takes: parse, apply the CRM rules, write once, commit.

``Pipeline.ingest_batch`` parses each raw message and prepares its row values and raw
copy (``store.prepared.prepare``) in a pool of worker processes for large batches on a
multi-core machine, so parsing streams in beside the single writer; then in ONE
transaction it plans and writes each message (``store.mailwriter.MailWriter``), runs the
source's ``on_commit`` (an IMAP checkpoint, a spool deletion) and commits: the mail and
the source's record of it land together or not at all. A message that cannot be parsed,
or that fails in any unexpected way, goes to the quarantine with its reason inside the
same transaction; a bad message never raises. Errors of the store itself (disk full,
locked, read-only, and the same while an attachment's file is written) abort the batch
and raise ``StoreError``: the source hands the mail over again, nothing is quarantined
for a disk's fault. The store's side of this (the batch transaction and its durability,
the savepoints, which failures are the store's) is ``store.session.StoreSession``; the
pipeline issues no SQL of its own. One Pipeline uses one session, from one thread.

``Outcome`` (crm/model.py) reports each message: logged, duplicate, skipped, quarantined.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import select
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from itertools import chain, islice
from multiprocessing.reduction import ForkingPickler
from operator import attrgetter
from pathlib import Path
from typing import Any, NamedTuple

from syncd.crm import rules
from syncd.crm.model import Outcome
from syncd.crm.rules import RulesSettings
from syncd.errors import MessageError
from syncd.mail.parse import Address, Attachment, Email, parse
from syncd.mail.provenance import Provenance
from syncd.memory import return_large_buffers
from syncd.store import contacts, quarantine
from syncd.store.blobs import discard_staged, purge_staging, stage_blob
from syncd.store.mailwriter import MailWriter
from syncd.store.prepared import Prepared, prepare
from syncd.store.session import Connection, StoreSession, store_at_fault

log = logging.getLogger(__name__)

# Below this many messages a batch is parsed in-process: starting work in the pool
# costs more than it saves. IMAP batches are cut at 4 MB, so batches with attachments
# are often well under 200 messages and still want the pool.
POOL_MIN_BATCH = 32
# Jobs go to the pool in chunks; the first ones are small so the writer starts at once.
POOL_FIRST_CHUNK = 8
POOL_CHUNK = 64
# Messages whose participants' contacts, deals and tickets the writer looks up together.
PREFETCH = 64


@dataclass(frozen=True, slots=True)
class _Refused:
    """A message the parser refused, or that broke it; carried back from a worker."""

    reason: str


class _Parsed(NamedTuple):
    """A parsed message and its row values and raw copy, prepared in a parser process
    for the writer."""

    email: Email
    prepared: Prepared | None  # None: the writer prepares it (and quarantines what fails)


Job = tuple[bytes, datetime, int | None, Path | None, bool]


def _parse_one(
    raw: bytes,
    received_at: datetime,
    max_bytes: int | None,
    attachments_dir: Path | None,
    partial: bool = False,
) -> _Parsed | _Refused:
    try:
        email = parse(raw, received_at=received_at, max_attachment_bytes=max_bytes, partial=partial)
    except MessageError as exc:
        return _Refused(exc.reason)
    except Exception as exc:  # a parser bug costs one message, never the batch
        return _Refused(f"parser failed: {type(exc).__name__}: {exc}")
    try:
        prepared = prepare(email, raw)
    except Exception:
        return _Parsed(email, None)
    if attachments_dir is not None and email.attachments:
        email, prepared = _with_attachments_staged(email, prepared, attachments_dir)
    return _Parsed(email, prepared)


def _with_attachments_staged(
    email: Email, prepared: Prepared, directory: Path
) -> tuple[Email, Prepared]:
    """Stage the attachment files here, in the parser process, and drop their bytes, so
    megabytes of attachments never travel back to the writer. The writer adopts the
    staged files of mail it logs; the rest are discarded after the batch. If a write
    fails, the bytes stay and the writer writes them (and reports the failure)."""
    kept: list[Attachment] = []
    staged: list[str] = []
    try:
        for part, row in zip(email.attachments, prepared.attachments, strict=True):
            stage = ""
            if part.data is not None:
                stage = stage_blob(directory, row[0], part.data)
                part = dataclasses.replace(part, data=None)
            kept.append(part)
            staged.append(stage)
    except (OSError, ValueError):
        discard_staged(staged)
        return email, prepared
    return dataclasses.replace(email, attachments=tuple(kept)), prepared._replace(
        staged=tuple(staged)
    )


def _die_with(pid: int) -> None:
    """Parser process initializer: end when process ``pid`` (the pool's owner) ends, and
    leave Ctrl-C to it.

    A killed owner never closes the pool, and a worker waiting on its call queue holds
    that queue's write end itself, so it would wait for ever, keeping the forkserver and
    the resource tracker alive with it. Its parent is the forkserver, not ``pid``, so a
    parent-death signal cannot do this; a pidfd becomes readable when ``pid`` exits.
    A terminal's Ctrl-C reaches the whole process group: the owner stops at its next
    batch and shuts the pool down, so a parser must not die of it mid-chunk (with a
    traceback) first.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(1)

    def wait() -> None:
        select.select([fd], [], [])
        os._exit(1)

    threading.Thread(target=wait, name="die-with-owner", daemon=True).start()


def _parse_chunk(jobs: list[Job]) -> list[_Parsed | _Refused]:
    return [_parse_one(*job) for job in jobs]


Pair = tuple[tuple[bytes, Provenance], _Parsed | _Refused]


def _groups(pairs: Iterator[Pair], writer: MailWriter) -> Iterator[list[Pair]]:
    """(item, parse result) pairs in groups, each group's contacts looked up by the
    writer before it writes the first of them. Groups grow as the pool's chunks do (8,
    16, 32, then ``PREFETCH``), so the writer never waits for more parsing than the pool
    hands back at once."""
    size = POOL_FIRST_CHUNK
    while group := list(islice(pairs, size)):
        writer.prefetch(r.email for _, r in group if isinstance(r, _Parsed))
        yield group
        size = min(size * 2, PREFETCH)


def _staged(result: _Parsed | _Refused) -> tuple[str, ...]:
    prepared = result.prepared if isinstance(result, _Parsed) else None
    return prepared.staged if prepared is not None else ()


class Parsing(list[tuple[bytes, Provenance]]):
    """A batch whose parsing started in the parser processes when it was fetched
    (``Pipeline.parse_ahead``): the items themselves, plus the pool's pending chunks.
    Passed to ``ingest_batch`` like any list of items."""

    def __init__(
        self,
        items: Sequence[tuple[bytes, Provenance]],
        pool: ProcessPoolExecutor,
        jobs: list[Job],
        chunks: list[Future[list[_Parsed | _Refused]]],
    ) -> None:
        super().__init__(items)
        self.pool, self.jobs, self.chunks = pool, jobs, chunks


def _plain_pickling(cls: type) -> None:
    """Results cross from the parser processes by constructor arguments: a slotted
    dataclass's own pickling sets each field from Python code, several times slower."""
    get = attrgetter(*(f.name for f in dataclasses.fields(cls)))
    ForkingPickler.register(cls, lambda obj: (cls, get(obj)))


for _cls in (Email, Address, Attachment):
    _plain_pickling(_cls)


class Pipeline:
    """Parse -> rules -> store for batches of raw messages, exactly once per message key."""

    def __init__(
        self,
        store: StoreSession | Connection,
        settings: RulesSettings,
        *,
        attachments_dir: Path,
        max_attachment_bytes: int | None,
        workers: int | None = None,
    ) -> None:
        # Given a bare connection, the pipeline holds a session of its own on it and ends
        # it on close; a given session belongs to whoever opened it.
        self._owns_session = not isinstance(store, StoreSession)
        self.session = store if isinstance(store, StoreSession) else StoreSession(store)
        self.settings = settings
        self.attachments_dir = Path(attachments_dir)
        self.max_attachment_bytes = max_attachment_bytes
        # Default: the writer keeps one core, parser processes get the others.
        self.workers = workers if workers is not None else (os.cpu_count() or 1) - 1
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()  # parse_ahead runs on the fetching threads
        self._closed = False  # a closed pipeline (replaced on reload) starts no pool
        return_large_buffers()
        purge_staging(self.attachments_dir)  # left by a crash mid-batch

    @classmethod
    def from_config(cls, config: Any, store: StoreSession | Connection, **kwargs: Any) -> Pipeline:
        """Build from a ``Config`` and mirror its team and inboxes into the store."""
        settings = RulesSettings.from_config(config)
        members = [(m.email, m.name, tuple(m.aliases)) for m in config.team]
        inboxes = [(i.name, i.kind, i.address, i.owner) for i in settings.team.inboxes]
        pipeline = cls(
            store,
            settings,
            attachments_dir=Path(config.store.attachments_dir),
            max_attachment_bytes=int(config.store.max_attachment_mb * 1024 * 1024),
            **kwargs,
        )
        with pipeline.session.transaction() as conn:
            contacts.record_team(conn, members, inboxes)
        return pipeline

    def close(self) -> None:
        """Stop the parser processes, if any were started (parse_ahead starts no more),
        and close the session if the pipeline opened it (built on a bare connection)."""
        with self._pool_lock:
            self._closed = True
        self._retire(None)
        if self._owns_session:
            self.session.close()

    def _retire(self, pool: ProcessPoolExecutor | None) -> None:
        """Stop ``pool`` (None: the current one); the next batch starts fresh processes."""
        with self._pool_lock:
            if pool is None or pool is self._pool:
                pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def ingest_batch(
        self,
        items: Sequence[tuple[bytes, Provenance]],
        *,
        on_commit: Callable[[Connection], None] | None = None,
        tally: Callable[[Connection, Sequence[Outcome]], None] | None = None,
    ) -> list[Outcome]:
        """Log a batch in one transaction; ``on_commit`` runs inside it, before COMMIT,
        then ``tally`` with the batch's outcomes (a source's counts of its mail, which
        must land with the mail to stay true after a kill)."""

        def settle(_index: int, raw: bytes, provenance: Provenance, outcome: Outcome) -> None:
            if outcome.status == "quarantined":
                quarantine.quarantine(self.session.conn, raw, provenance, outcome.reason)

        def commit(conn: Connection, outcomes: Sequence[Outcome]) -> None:
            if on_commit is not None:
                on_commit(conn)
            if tally is not None:
                tally(conn, outcomes)

        return self._write(items, settle, commit)

    def retry_quarantined(self, ids: Sequence[int] | None = None) -> list[tuple[int, Outcome]]:
        """Run quarantined mail through the pipeline again; what logs leaves the quarantine."""
        rows = quarantine.quarantined(self.session.conn, ids)
        items = [(bytes(r["raw"]), quarantine.provenance_from_json(r["provenance"])) for r in rows]

        def settle(index: int, _raw: bytes, _provenance: Provenance, outcome: Outcome) -> None:
            if outcome.status == "quarantined":
                quarantine.requarantine(self.session.conn, rows[index]["id"], outcome.reason)
            else:
                quarantine.release(self.session.conn, rows[index]["id"])

        outcomes = self._write(items, settle, None)
        return [(row["id"], outcome) for row, outcome in zip(rows, outcomes, strict=True)]

    def _write(
        self,
        items: Sequence[tuple[bytes, Provenance]],
        settle: Callable[[int, bytes, Provenance, Outcome], None],
        on_commit: Callable[[Connection, Sequence[Outcome]], None] | None,
    ) -> list[Outcome]:
        """Parse, plan and write ``items`` in one transaction; ``settle`` records each
        outcome with the source (quarantine, release) inside it, ``on_commit`` last."""
        parsed = self._parse(items)
        writer = MailWriter(self.session.conn, self.settings, self.attachments_dir)
        outcomes: list[Outcome] = []
        staged: list[str] = []
        try:
            # Raises StoreError when the store fails: only its failures get out of _apply.
            with self.session.batch() as conn:
                grouped = _groups(zip(items, parsed, strict=True), writer)
                for index, ((raw, provenance), result) in enumerate(chain.from_iterable(grouped)):
                    staged.extend(_staged(result))
                    outcome = self._apply(writer, raw, provenance, result)
                    settle(index, raw, provenance, outcome)
                    outcomes.append(outcome)
                writer.flush()
                if on_commit is not None:
                    on_commit(conn, outcomes)
        finally:
            discard_staged(staged)
        return outcomes

    def _apply(
        self,
        writer: MailWriter,
        raw: bytes,
        provenance: Provenance,
        result: _Parsed | _Refused,
    ) -> Outcome:
        """Plan and write one message under a savepoint; failures become a quarantine outcome."""
        if isinstance(result, _Refused):
            return Outcome("quarantined", None, result.reason)
        email, prepared = result
        session = self.session
        session.savepoint()
        try:
            known = writer.known(a.email for a in email.addresses())
            plan = rules.plan(email, provenance, self.settings, known)
            outcome = writer.write(email, raw, provenance, plan, prepared)
        except Exception as exc:
            session.rollback_savepoint()
            writer.discard()
            if store_at_fault(exc):  # the store or an attachment's file: no message to blame
                raise
            return self._failed(email, exc)
        session.release_savepoint()
        writer.keep()
        return outcome

    @staticmethod
    def _failed(email: Email, exc: Exception) -> Outcome:
        log.warning("message %s quarantined: %s: %s", email.key, type(exc).__name__, exc)
        return Outcome(
            "quarantined", email.key, f"could not be logged: {type(exc).__name__}: {exc}"
        )

    def parse_ahead(self, items: Sequence[tuple[bytes, Provenance]]) -> list[Any]:
        """Start parsing ``items`` in the parser processes now, from any thread, and return
        them as a ``Parsing`` for a later ``ingest_batch``: a fetching thread calls this
        as soon as a batch arrives, so the parsers work ahead while the writer writes and
        commits the batch before. Never raises: without parser processes (none configured,
        a closed pipeline, a pool that will not start) the items come back as they are."""
        if self.workers < 1 or not items:
            return list(items)
        return self._pooled(items) or list(items)

    def _jobs(self, items: Sequence[tuple[bytes, Provenance]], directory: Path | None) -> list[Job]:
        limit = self.max_attachment_bytes
        return [(raw, prov.received_at, limit, directory, prov.partial) for raw, prov in items]

    def _parse(self, items: Sequence[tuple[bytes, Provenance]]) -> Iterator[_Parsed | _Refused]:
        """Parsed messages in order. Small batches are parsed before the transaction
        starts; large ones stream from the worker pool while the writer writes."""
        parsing = items if isinstance(items, Parsing) and items.pool is self._pool else None
        if parsing is None and self.workers >= 1 and len(items) >= POOL_MIN_BATCH:
            parsing = self._pooled(items)
        if parsing is None:
            return iter(_parse_chunk(self._jobs(items, None)))
        return self._collect(parsing)

    def _pooled(self, items: Sequence[tuple[bytes, Provenance]]) -> Parsing | None:
        """``items`` submitted to the parser processes, or None if there are none to take
        them. A pool whose process died refuses work at once (even before the writer
        reaches the batch that saw it die): it is replaced once."""
        jobs = self._jobs(items, self.attachments_dir)
        for _attempt in range(2):
            with self._pool_lock:
                if self._closed:
                    return None
                if self._pool is None:
                    # forkserver: workers never inherit the daemon's threads or sockets.
                    context = multiprocessing.get_context("forkserver")
                    # lxml is imported on first use (htmltext): load it here once.
                    context.set_forkserver_preload(["syncd.pipeline", "lxml.html"])
                    self._pool = ProcessPoolExecutor(
                        self.workers,
                        mp_context=context,
                        initializer=_die_with,
                        initargs=(os.getpid(),),
                    )
                pool = self._pool
                try:
                    return Parsing(items, pool, jobs, self._submit(pool, jobs))
                except (BrokenProcessPool, RuntimeError):
                    pass
            self._retire(pool)
        return None

    @staticmethod
    def _submit(
        pool: ProcessPoolExecutor, jobs: list[Job]
    ) -> list[Future[list[_Parsed | _Refused]]]:
        # All chunks are queued at once: the pool parses ahead while the writer writes;
        # the first ones are small so the writer starts at once.
        chunks = []
        start, size = 0, POOL_FIRST_CHUNK
        while start < len(jobs):
            chunks.append(pool.submit(_parse_chunk, jobs[start : start + size]))
            start, size = start + size, min(size * 2, POOL_CHUNK)
        return chunks

    def _collect(self, parsing: Parsing) -> Iterator[_Parsed | _Refused]:
        done = 0
        try:
            for chunk in parsing.chunks:
                for result in chunk.result():
                    yield result
                    done += 1
        except (BrokenProcessPool, CancelledError):
            log.warning("parser processes stopped; parsing the rest of the batch in-process")
            self._retire(parsing.pool)  # the next batch starts fresh ones
            yield from _parse_chunk(parsing.jobs[done:])
        finally:
            for chunk in parsing.chunks:
                chunk.cancel()
