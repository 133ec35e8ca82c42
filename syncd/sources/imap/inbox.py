"""The IMAP sync engine: one pass over an inbox's folders, mail handed to ``deliver``.

``sync_inbox`` connects (``imap_conn``), chooses folders (a configured name may be found
under the NAMESPACE prefix or by role: ``folders``), and for each folder asks
``syncplan`` what to fetch given the stored checkpoint. A fetcher thread
(``fetch.Fetcher``, given the pass's settings as a frozen ``PassSettings``) does the IMAP
work (SEARCH, a metadata FETCH of INTERNALDATE, size and, when a filter needs them,
headers, then BODY.PEEK[] in batches, or by parts for a message over
``Limits.max_attachment_bytes``) and puts
batches on a bounded queue; the calling thread hands each batch with the checkpoint that
covers it to ``deliver``, which commits both in one transaction. A lost connection
reconnects with exponential backoff and jitter and resumes from the last committed
checkpoint (up to ``RetryPolicy.attempts`` cuts in a row; a committed batch restores the
budget), telling ``on_lost`` each time so the error shows while the pass goes on; a
refused login stops the inbox at once (no retry storm); a folder the server refuses is
reported and the others go on. A folder scanned again after a UIDVALIDITY
change (or a scan resumed) also fetches Message-ID with the metadata and skips the bodies
already logged from that folder. The engine never imports the store or the pipeline: it
is given ``deliver``, ``checkpoint_of``, ``known_contacts`` and ``known_keys``.

How a missing or unfetchable UID is handled is told in ``fetch``.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol

from syncd.errors import InboxError
from syncd.sources import base
from syncd.sources.imap import syncplan
from syncd.sources.imap.conn import (
    ConnectionLost,
    FolderError,
    ImapSession,
    ImapSettings,
    connect,
)
from syncd.sources.imap.fetch import (
    Batch,
    Done,
    Failed,
    Fetcher,
    KnownKeys,
    Limits,
    Lookup,
    ParseAhead,
    PassSettings,
    Unfetchable,
)
from syncd.sources.imap.folders import Unresolved
from syncd.sources.imap.syncplan import FolderCheckpoint

# The source contract (sources.base): mail, with the checkpoint that covers it as the
# IMAP source's own record, committed together.
Deliver = base.Deliver[FolderCheckpoint]
CheckpointOf = Callable[[str, str], FolderCheckpoint | None]
Progress = Callable[[str, int, int], None]  # folder, messages done, messages planned
OnLost = Callable[[ConnectionLost, float], None]  # the error, seconds until the reconnect
DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class RetryPolicy:
    """Reconnects within one pass, for a connection lost mid-sync."""

    attempts: int = 4  # lost connections in a row with no batch committed between them
    base: float = 1.0
    cap: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    jitter: Callable[[], float] = random.random


@dataclass
class FolderResult:
    name: str
    logged: int = 0
    duplicates: int = 0
    skipped: int = 0
    quarantined: int = 0
    would_fetch: int | None = None  # dry run: messages the window and people filter select
    error: str | None = None
    configured: str | None = None  # the ``folders`` name that led here (None for ``all``)
    resolved_by: str | None = None  # name | namespace | role (folders.resolve)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "logged": self.logged,
            "duplicates": self.duplicates,
            "skipped": self.skipped,
            "quarantined": self.quarantined,
        }
        if self.would_fetch is not None:
            out["would_fetch"] = self.would_fetch
        if self.error:
            out["error"] = self.error
        if self.configured is not None:
            out["configured"] = self.configured
            if self.resolved_by is not None:
                out["resolved_by"] = self.resolved_by
        return out


@dataclass
class InboxResult:
    name: str
    state: str = "ok"  # ok | failed | auth_failed
    error: str | None = None
    folders: list[FolderResult] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "state": self.state, "error": self.error}
        out["folders"] = [f.as_json() for f in self.folders]
        return out


class SyncSettings(Protocol):
    """The ``sync:`` block of an inbox, as the engine reads it."""

    from_: str
    people: str
    folders: Any  # the folder selection syncplan.choose_folders reads


class InboxSettings(Protocol):
    """An ``inboxes[]`` entry as a value: the service hands the engine its config's
    ``Inbox`` (it has this shape); the engine never reads the config itself."""

    name: str
    owner: str | None
    imap: ImapSettings
    sync: SyncSettings


def sync_inbox(
    inbox_cfg: InboxSettings,
    *,
    deliver: Deliver,
    checkpoint_of: CheckpointOf,
    known_contacts: Callable[[], set[str]],
    today: date | datetime,
    dry_run: bool = False,
    progress: Progress | None = None,
    parse_ahead: ParseAhead | None = None,
    known_keys: KnownKeys | None = None,
    limits: Limits = DEFAULT_LIMITS,
    retry: RetryPolicy = RetryPolicy(),
    result: InboxResult | None = None,
    on_lost: OnLost | None = None,
) -> InboxResult:
    """One pass over the inbox. ``today`` is the pass's start instant (a date means now
    on that day); windows are computed from it for folders not yet synced. With
    ``known_keys``, a folder scanned again (UIDVALIDITY changed, or a scan resumed)
    fetches no body whose Message-ID is logged from it already: those count as
    duplicates, as a copy handed over again would. ``result``, if given, is filled as the
    pass goes, so a caller whose ``deliver`` raises to stop still has the counts of what
    committed. ``on_lost`` hears of each lost connection the pass reconnects after."""
    started = _start_instant(today)
    contacts = frozenset(known_contacts()) if inbox_cfg.sync.people == "contacts" else frozenset()
    run = _InboxRun(inbox_cfg, deliver, checkpoint_of, contacts, started, dry_run, progress)
    run.limits, run.retry, run.parse_ahead = limits, retry, parse_ahead
    run.known_keys, run.on_lost = known_keys, on_lost
    if result is not None:
        run.result = result
    return run.execute()


def _planned(choice: syncplan.FolderChoice) -> list[FolderResult]:
    """A result per folder to sync, and per configured name found nowhere (its error); a
    folder two configured names lead to is synced once, under the first."""
    if not choice.resolved:
        return [FolderResult(name) for name in choice.folders]
    out: list[FolderResult] = []
    seen: set[str] = set()
    for r in choice.resolved:
        if isinstance(r, Unresolved):
            out.append(FolderResult(r.configured, error=r.error, configured=r.configured))
        elif r.folder not in seen:
            seen.add(r.folder)
            out.append(FolderResult(r.folder, configured=r.configured, resolved_by=r.how))
    return out


def _start_instant(today: date | datetime) -> datetime:
    if isinstance(today, datetime):
        return today if today.tzinfo else today.replace(tzinfo=UTC)
    return datetime.combine(today, datetime.now(UTC).timetz())


class _InboxRun:
    """State of one sync pass; methods are the steps of ``sync_inbox``."""

    limits: Limits
    retry: RetryPolicy
    parse_ahead: ParseAhead | None
    known_keys: KnownKeys | None
    on_lost: OnLost | None

    def __init__(
        self,
        cfg: InboxSettings,
        deliver: Deliver,
        checkpoint_of: CheckpointOf,
        contacts: frozenset[str],
        started: datetime,
        dry_run: bool,
        progress: Progress | None,
    ) -> None:
        self.cfg, self.deliver, self.checkpoint_of = cfg, deliver, checkpoint_of
        self.contacts, self.started, self.dry_run, self.progress = (
            contacts,
            started,
            dry_run,
            progress,
        )
        self.result = InboxResult(cfg.name)
        self.session: ImapSession | None = None
        self.failures = 0
        # folder -> UIDs of body fetches that lost the connection in this pass
        self.suspects: dict[str, set[int]] = {}

    def execute(self) -> InboxResult:
        try:
            choice = self._with_reconnect(self._choose_folders)
            for folder in _planned(choice):
                self.result.folders.append(folder)
                if folder.error is None:
                    self._with_reconnect(lambda s, f=folder: self._sync_folder(s, f))
        except InboxError as exc:
            self.result.state = "auth_failed" if exc.auth else "failed"
            self.result.error = str(exc)
        finally:
            if self.session is not None:
                self.session.close()
        if self.result.state == "ok" and any(f.error for f in self.result.folders):
            self.result.error = "; ".join(
                f"{f.name}: {f.error}" for f in self.result.folders if f.error
            )
        return self.result

    def _connect(self) -> ImapSession:
        if self.session is None:
            timeout = float(getattr(self.cfg.imap, "timeout", 60.0) or 60.0)
            self.session = connect(self.cfg.name, self.cfg.imap, timeout=timeout)
        return self.session

    def _with_reconnect(self, step: Callable[[ImapSession], Any]) -> Any:
        """Run ``step`` with a session; on a lost connection back off, reconnect and run it
        again (steps resume from committed checkpoints). Auth failures are not retried."""
        while True:
            try:
                return step(self._connect())
            except ConnectionLost as exc:
                self._drop_session()
                if self.failures >= self.retry.attempts:
                    raise
                delay = syncplan.backoff_delay(
                    self.failures, self.retry.jitter(), base=self.retry.base, cap=self.retry.cap
                )
                self.failures += 1
                if self.on_lost is not None:
                    self.on_lost(exc, delay)
                self.retry.sleep(delay)

    def _drop_session(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def _choose_folders(self, session: ImapSession) -> syncplan.FolderChoice:
        wanted = self.cfg.sync.folders
        personal = session.personal_namespaces() if wanted != "all" else []
        return syncplan.choose_folders(session.list_folders(), wanted, personal)

    def _sync_folder(self, session: ImapSession, result: FolderResult) -> None:
        checkpoint = self.checkpoint_of(self.cfg.name, result.name)
        batches: queue.Queue[Batch | Lookup | Done | Failed] = queue.Queue(
            self.limits.queue_batches
        )
        stop = threading.Event()
        suspects = self.suspects.setdefault(result.name, set())
        fetcher = Fetcher(
            self._settings(), session, result.name, checkpoint, batches, stop, suspects
        )
        thread = threading.Thread(target=fetcher.run, name=f"imap-{self.cfg.name}", daemon=True)
        thread.start()
        done = 0
        lost = False
        try:
            while True:
                item = batches.get()
                if isinstance(item, Lookup):
                    item.answer.put(item.ask())
                    continue
                if isinstance(item, Failed):
                    if isinstance(item.error, FolderError):
                        result.error = str(item.error)
                        lost = isinstance(item.error, Unfetchable) and item.error.session_lost
                        return
                    raise item.error
                if isinstance(item, Done):
                    if self.dry_run:
                        result.would_fetch = item.would_fetch
                        result.duplicates += item.logged
                    return
                counts = syncplan.count_outcomes(
                    getattr(o, "status", o) for o in self.deliver(item.items, item.checkpoint)
                )
                for name, value in counts.items():
                    setattr(result, name, getattr(result, name) + value)
                # Counted once committed: a pass that reconnects skips them again.
                result.duplicates += item.logged_before
                self.failures = 0  # committed progress: a flaky link may cut us again
                done += len(item.items)
                if self.progress is not None:
                    self.progress(result.name, done, item.planned)
                del item  # its parse results are not to wait in memory for the next batch
        finally:
            stop.set()
            thread.join()
            if lost:  # the next folder starts on a fresh connection
                self._drop_session()

    def _settings(self) -> PassSettings:
        return PassSettings(
            inbox=self.cfg.name,
            owner=self.cfg.owner,
            from_=self.cfg.sync.from_,
            people=self.cfg.sync.people,
            started=self.started,
            dry_run=self.dry_run,
            limits=self.limits,
            contacts=self.contacts,
            known_keys=self.known_keys,
            parse_ahead=self.parse_ahead,
        )
