"""The running daemon's view of whether its store's file is sound, said once per outage.

Any part that meets a damaged file (SQLITE_CORRUPT or SQLITE_NOTADB on a drain, an IMAP
batch, a spool write) reports it here; the first report of an outage logs one line and
the parts then hold back: the BCC endpoint answers 451 instead of spooling into a store
that cannot drain, IMAP sync waits. ``probe`` (on the daemon's timer) checks the file
again with ``PRAGMA quick_check``, bounded in time and spaced out by a backoff; the first
sound check ends the outage, also with one line. Errors that a retry may mend (a full,
read-only or locked store) are not damage and stay with their own handling.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from syncd.errors import StoreDamaged
from syncd.services.schedule import Backoff
from syncd.store import integrity

log = logging.getLogger("syncd.store")
PROBE_SECONDS = 5.0  # how long one look at a damaged store may take
PROBE_FIRST, PROBE_MAX = 2.0, 60.0  # the pause between looks, doubling

Check = Callable[..., integrity.Verdict]


class StoreHealth:
    """Thread-safe: reported from the store thread and the spool writer, read everywhere."""

    def __init__(self, path: Path, *, check: Check = integrity.check) -> None:
        self.path = path
        self._check = check
        self._lock = threading.Lock()
        self._damage: str | None = None
        self._sound = threading.Event()
        self._sound.set()
        self._pause = Backoff(PROBE_FIRST, PROBE_MAX)
        self.on_recovered: list[Callable[[], object]] = []

    @property
    def damaged(self) -> bool:
        return not self._sound.is_set()

    def trouble(self) -> str | None:
        """Why the store is failing now, for ``/health``; None while it reads as sound."""
        if not self.damaged:
            return None
        return f"the store {self.path} is damaged ({self._damage or 'damaged'})"

    def refusal(self) -> StoreDamaged:
        """The error a part raises instead of using the damaged store."""
        return StoreDamaged.found(str(self.path), [self._damage or "damaged"])

    def report(self, exc: BaseException) -> bool:
        """True if ``exc`` says the file is damaged; the outage's first report is logged."""
        if not integrity.is_damage(exc) and not isinstance(exc, StoreDamaged):
            return False
        with self._lock:
            first = self._damage is None
            if first:
                self._damage = _reason(exc)
                self._pause.failed()  # the first look at it after a short pause
            self._sound.clear()
        if first:
            log.error(
                "the store %s is damaged (%s): BCC mail is answered 451 and IMAP sync waits "
                "until it reads as sound; stop syncd and restore it from a backup "
                "(`syncd check-store` lists the problems)",
                self.path,
                self._damage,
            )
        return True

    def probe(self) -> None:
        """While damaged, and when the backoff allows: look at the file again."""
        with self._lock:
            if self._damage is None or not self._pause.ready():
                return
            self._pause.failed()  # one look at a time; a sound one resets it below
        try:
            verdict = self._check(self.path, seconds=PROBE_SECONDS)
        except Exception:  # unreadable for another reason: still not sound
            return
        if not verdict.ok:
            return
        for hook in self.on_recovered:
            hook()
        with self._lock:
            self._damage = None
            self._pause.succeeded()
            self._sound.set()
        log.info("the store %s reads as sound again: BCC mail is accepted, sync resumes",
                 self.path)  # fmt: skip

    def wait_sound(self, timeout: float) -> bool:
        return self._sound.wait(timeout)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, StoreDamaged):
        return exc.problems[0] if exc.problems else "damaged"
    return integrity.damage_reason(exc) or str(exc)
