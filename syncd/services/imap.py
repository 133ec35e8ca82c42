"""IMAP sync wired to the store: one pass (``syncd sync``) and the daemon's sync loops.

``inbox_pass`` joins the IMAP engine (``sources.imap``) to the store through a
``call(fn, *args)`` that runs ``fn(job, *args)`` (a ``StoreJob``: the store session and
the pipeline) where the store lives: directly in the CLI, on the store thread in the
daemon. The engine delivers through the source contract (``sources.base``): mail and the
folder checkpoint that covers it commit in one transaction (``intake.deliverer``;
``save_checkpoint`` turns the plan's checkpoint into the store's cursor). A connection
lost mid-pass is logged
and recorded as the inbox's last error at once, and so is a pass that crashed, so
``syncd status`` shows what is wrong while the daemon retries. Each batch commits its
outcome counts with it, so ``status`` counts what the store holds however a pass ends
(a kill included); the pass's end adds what no batch carried (mail skipped as logged).

In the daemon each inbox has a thread::

    pass --ok, idle on--> IDLE on INBOX until new mail or poll_interval --> pass
                          IDLE failed: wait 5 s doubling (at most what is left) --> pass
         --ok, no idle--> sleep poll_interval --> pass
         --failed------> sleep inbox_retry_delay (backoff; an hour after a refused login),
                         its end stored as the inbox's next retry; a reload (SIGHUP)
                         ends a failed inbox's wait at once
    stop requested: the current batch commits, the pass ends at the next batch (or at
    its next reconnect)
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from syncd.config.model import Config, Inbox
from syncd.errors import InboxError, StoreDamaged
from syncd.services.intake import deliverer
from syncd.services.schedule import Every
from syncd.services.storeworker import StoreJob
from syncd.sources.imap import syncplan
from syncd.sources.imap.conn import ConnectionLost, ImapSession, connect
from syncd.sources.imap.inbox import (
    InboxResult,
    Limits,
    ParseAhead,
    Progress,
    RetryPolicy,
    sync_inbox,
)
from syncd.store import contacts, engagements, syncstate

log = logging.getLogger("syncd.imap")
COUNTS = syncstate.COUNT_COLUMNS
Call = Callable[..., Any]


class Stopping(Exception):
    """Raised into a pass (from deliver) when the daemon or ``syncd sync`` is stopping;
    ``inbox_pass`` sets ``result`` to what the pass committed before it stopped."""

    result: InboxResult | None = None


def inbox_pass(
    inbox: Inbox,
    call: Call,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    parse_ahead: ParseAhead | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], Any] = time.sleep,
) -> tuple[InboxResult, int]:
    """One sync pass of ``inbox``; returns its result and the consecutive failure count.
    ``parse_ahead`` is the pipeline's (called on the fetching thread, not through
    ``call``, so parsing starts while the store is busy with the batch before)."""
    committed: dict[str, Counter[str]] = {}  # folder -> counts its batches committed

    def deliver(items: list[Any], checkpoint: syncplan.FolderCheckpoint) -> Sequence[Any]:
        if should_stop():
            raise Stopping
        outcomes = call(_ingest, items, checkpoint)
        committed.setdefault(checkpoint.folder, Counter()).update(_counts(outcomes))
        return outcomes

    def known_keys(label: str, keys: set[str]) -> set[str]:
        if should_stop():  # a rescan of logged mail delivers nothing for a long while
            raise Stopping
        return call(_sighted_keys, label, keys)

    def on_lost(exc: ConnectionLost, delay: float) -> None:
        if should_stop():  # no reconnect to wait for
            raise Stopping
        error = f"{exc}; reconnecting in {delay:.1f} s"
        log.warning("%s", error)
        if not dry_run:
            call(_record_error, inbox.name, error)

    result = InboxResult(inbox.name)
    try:
        sync_inbox(
            inbox,
            deliver=deliver,
            checkpoint_of=lambda name, folder: call(_checkpoint, name, folder),
            known_contacts=lambda: call(_contact_emails),
            known_keys=known_keys,
            today=datetime.now(UTC),
            dry_run=dry_run,
            progress=progress,
            parse_ahead=parse_ahead,
            # Mail over max_attachment_mb is fetched by parts: what the store would not keep
            # of it stays on the server.
            limits=Limits(max_attachment_bytes=call(_max_attachment_bytes)),
            retry=RetryPolicy(sleep=sleep),  # the daemon's stop event cuts a reconnect wait short
            result=result,
            on_lost=on_lost,
        )
    except Stopping as stop:
        if not dry_run:  # the batches committed before the stop are counted already
            call(_record_counts, _uncommitted(result, committed))
        stop.result = result
        raise
    failures = 0 if dry_run else call(_record, _uncommitted(result, committed))
    return result, failures


def _ingest(job: StoreJob, items: list[Any], checkpoint: syncplan.FolderCheckpoint) -> Any:
    return deliverer(job.pipeline.ingest_batch, save_checkpoint, _tally)(items, checkpoint)


def _counts(outcomes: Sequence[Any]) -> Mapping[str, int]:
    return syncplan.count_outcomes(o.status for o in outcomes)


def _tally(
    conn: sqlite3.Connection, checkpoint: syncplan.FolderCheckpoint, outcomes: Sequence[Any]
) -> None:
    syncstate.add_counts(conn, checkpoint.inbox, checkpoint.folder, _counts(outcomes))


def _uncommitted(result: InboxResult, committed: Mapping[str, Counter[str]]) -> InboxResult:
    """``result`` with the counts its batches committed taken off each folder: what is
    left to add at the pass's end."""
    folders = [
        dataclasses.replace(
            f, **{c: getattr(f, c) - committed.get(f.name, Counter())[c] for c in COUNTS}
        )
        for f in result.folders
    ]
    return dataclasses.replace(result, folders=folders)


def load_checkpoint(
    conn: sqlite3.Connection, inbox: str, folder: str
) -> syncplan.FolderCheckpoint | None:
    """The stored cursor of a folder as the sync plan's checkpoint."""
    cursor = syncstate.get_checkpoint(conn, inbox, folder)
    return None if cursor is None else syncplan.FolderCheckpoint(**_values(cursor))


def save_checkpoint(conn: sqlite3.Connection, checkpoint: syncplan.FolderCheckpoint) -> None:
    """Store a checkpoint; run it inside the transaction that writes the mail it covers."""
    syncstate.save_checkpoint(conn, syncstate.FolderCursor(**_values(checkpoint)))


def _values(record: Any) -> dict[str, Any]:
    # The plan's checkpoint and the store's cursor have the same fields, by name.
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


def _max_attachment_bytes(job: StoreJob) -> int | None:
    return job.pipeline.max_attachment_bytes


def _sighted_keys(job: StoreJob, label: str, keys: set[str]) -> set[str]:
    return engagements.sighted_keys(job.session.conn, label, keys)


def _contact_emails(job: StoreJob) -> set[str]:
    return contacts.contact_emails(job.session.conn)


def _checkpoint(job: StoreJob, inbox: str, folder: str) -> syncplan.FolderCheckpoint | None:
    return load_checkpoint(job.session.conn, inbox, folder)


def _record_counts(job: StoreJob, result: InboxResult) -> None:
    with job.session.transaction() as conn:
        syncstate.add_pass_counts(conn, result)


def _record_error(job: StoreJob, inbox: str, error: str) -> None:
    with job.session.transaction() as conn:
        syncstate.record_inbox_error(conn, inbox, error)


def _record_crash(job: StoreJob, inbox: str, error: str) -> None:
    with job.session.transaction() as conn:
        syncstate.record_inbox_state(conn, inbox, "failed", error)


def _record(job: StoreJob, result: InboxResult) -> int:
    with job.session.transaction() as conn:
        return syncstate.record_pass(conn, result)


def _record_next_retry(job: StoreJob, inbox: str, when: datetime | None) -> None:
    with job.session.transaction() as conn:
        syncstate.record_next_retry(conn, inbox, when)


class ImapService:
    """The daemon's IMAP part: one sync thread per inbox."""

    name = "imap"

    def __init__(
        self,
        config: Config,
        store: Any,
        *,
        run_pass: Callable[..., tuple[InboxResult, int]] = inbox_pass,
        open_session: Callable[..., ImapSession] = connect,
    ) -> None:
        # run_pass and open_session are the IMAP boundary, given so tests can stand in.
        self._run_pass, self._open_session = run_pass, open_session
        self._inboxes = {inbox.name: inbox for inbox in config.inboxes}
        self._store = store
        self._stop = threading.Event()
        # Set to end an inbox's wait early: at stop, or a reload while the inbox is failed.
        self._wake = {name: threading.Event() for name in self._inboxes}
        self._threads: list[threading.Thread] = []
        self._states: dict[str, str] = {name: "starting" for name in self._inboxes}
        self._idling: dict[str, ImapSession] = {}
        self._crashes: dict[str, int] = {}  # unexpected errors in a row, for the backoff
        self._no_idle: set[str] = set()  # inboxes whose server has no IDLE: poll only
        self._idle_failures: dict[str, int] = {}  # IDLE errors in a row, for the backoff

    async def start(self, every: Every) -> None:
        for name in self._inboxes:
            thread = threading.Thread(target=self._loop, args=(name,), name=f"imap-{name}")
            thread.daemon = True  # an IDLE wait holds no mail; never block exit on it
            thread.start()
            self._threads.append(thread)

    async def stop(self, deadline: float) -> None:
        self._stop.set()
        for wake in self._wake.values():
            wake.set()
        for session in list(self._idling.values()):
            session.interrupt()  # ends an IDLE wait at once; a pass stops at its next batch
        # Joined in worker threads: the event loop keeps serving while IMAP winds down.
        await asyncio.gather(
            *(
                asyncio.to_thread(t.join, max(0.0, deadline - time.monotonic()))
                for t in self._threads
            )
        )

    def reconfigure(self, config: Config) -> None:
        # Settings of existing inboxes apply from their next pass; adding or removing
        # inboxes needs a restart (said in the README).
        for inbox in config.inboxes:
            if inbox.name in self._inboxes:
                self._inboxes[inbox.name] = inbox
                if self._states.get(inbox.name) in ("failed", "auth_failed"):
                    # A fixed password (in the config or its password_file) should not
                    # wait out an hour's backoff.
                    log.info("inbox %s: reloaded; trying it again now", inbox.name)
                    self._wake[inbox.name].set()

    def status(self) -> dict[str, Any]:
        return {"inboxes": dict(self._states)}

    def summary(self) -> str:
        return f"IMAP: {len(self._inboxes)} inbox(es)"

    def _loop(self, name: str) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._cycle(name)
                except Stopping:
                    return
                except StoreDamaged:
                    # Said once by the store's health; sync resumes when the file is sound.
                    self._states[name] = "waiting: store damaged"
                    health = self._store.health
                    while health.damaged and not self._stop.is_set():
                        health.wait_sound(1.0)
                except Exception as exc:  # nothing may end an inbox's thread but a stop
                    log.exception("inbox %s: sync loop failed; retrying", name)
                    self._states[name] = "failed"
                    self._record_crash(name, exc)
                    crashes = self._crashes[name] = self._crashes.get(name, 0) + 1
                    self._wait(name, syncplan.backoff_delay(crashes, random.random()), True)
        finally:
            self._states[name] = "stopped"

    def _record_crash(self, name: str, exc: Exception) -> None:
        error = f"inbox {name}: sync pass failed unexpectedly: {type(exc).__name__}: {exc}"
        try:
            self._store.call(_record_crash, name, error[:500])
        except Exception:  # the store itself may be what failed; the log has it
            log.exception("inbox %s: could not record the failure for `syncd status`", name)

    def _cycle(self, name: str) -> None:
        """One pass, then the wait before the next: IDLE, poll interval or backoff."""
        inbox = self._inboxes[name]
        self._states[name] = "syncing"
        result, failures = self._run_pass(
            inbox,
            self._store.call,
            parse_ahead=self._store.parse_ahead,
            should_stop=self._stop.is_set,
            sleep=self._stop.wait,
        )
        self._crashes.pop(name, None)
        self._states[name] = result.state
        self._log_pass(result)
        delay = syncplan.inbox_retry_delay(
            result.state, failures, random.random(), poll_interval=inbox.sync.poll_interval
        )
        if result.state == "ok" and inbox.sync.idle and name not in self._no_idle:
            self._idle(inbox, delay)
        else:
            self._wait(name, delay, result.state != "ok")

    def _wait(self, name: str, seconds: float, retry: bool) -> None:
        """Wait before the next pass; a retry's moment is stored for ``syncd status``."""
        if retry:
            when = datetime.now(UTC) + timedelta(seconds=seconds)
            try:
                self._store.call(_record_next_retry, name, when)
            except Exception:  # the store may be what failed; the wait happens all the same
                log.warning("inbox %s: could not record the next retry", name, exc_info=True)
        wake = self._wake[name]
        wake.wait(seconds)
        wake.clear()

    def _idle(self, inbox: Inbox, timeout: float) -> None:
        """Wait for new mail on INBOX (or the poll interval); polling if IDLE fails."""
        self._states[inbox.name] = "idle"
        deadline = time.monotonic() + timeout
        try:
            session = self._open_session(inbox.name, inbox.imap, timeout=inbox.imap.timeout + 30)
        except InboxError as exc:
            log.warning("inbox %s: cannot IDLE (%s); polling", inbox.name, exc)
            self._stop.wait(timeout)
            return
        self._idling[inbox.name] = session
        try:
            if not session.client.has_capability("IDLE"):
                log.warning("inbox %s: the server has no IDLE; polling", inbox.name)
                self._no_idle.add(inbox.name)
                self._stop.wait(timeout)
            elif not self._stop.is_set() and session.idle_wait(
                max(0.0, deadline - time.monotonic())
            ):
                log.info("inbox %s: new mail", inbox.name)
            self._idle_failures.pop(inbox.name, None)
        except Exception as exc:  # a refused EXAMINE or IDLE: never end the thread
            if not self._stop.is_set():
                failures = self._idle_failures[inbox.name] = (
                    self._idle_failures.get(inbox.name, 0) + 1
                )
                delay = syncplan.idle_retry_delay(
                    failures, random.random(), left=deadline - time.monotonic()
                )
                log.warning(
                    "inbox %s: IDLE ended (%s); next pass in %.0f s", inbox.name, exc, delay
                )
                self._stop.wait(delay)
        finally:
            self._idling.pop(inbox.name, None)
            session.close()

    @staticmethod
    def _log_pass(result: InboxResult) -> None:
        logged = sum(f.logged for f in result.folders)
        if result.state != "ok":
            log.error("inbox %s: %s", result.name, result.error)
        elif logged or result.error:
            log.info("inbox %s: %d logged%s", result.name, logged,
                     f"; {result.error}" if result.error else "")  # fmt: skip
