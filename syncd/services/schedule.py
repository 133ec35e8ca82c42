"""The one scheduling hook the daemon gives its parts: run a job every so many seconds.

Parts (the BCC endpoint, IMAP, metrics) ask for periodic work through this callable
and never see the scheduler behind it (apscheduler, owned by ``daemon``). ``Backoff`` is
the pause a periodic job takes after it failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

# every(job, seconds, name): run ``job`` (a function or a coroutine function) periodically
Every = Callable[[Callable[[], Any], float, str], None]


class Backoff:
    """A pause after failures: ``base`` seconds after the first, doubling with each failure
    in a row up to ``cap``; a success ends it. ``ready()`` says whether to try now."""

    def __init__(self, base: float, cap: float, clock: Callable[[], float] = time.monotonic):
        self.base, self.cap, self._clock = base, cap, clock
        self._wait, self._after = base, 0.0

    def ready(self) -> bool:
        return self._clock() >= self._after

    def failed(self) -> float:
        """Start the pause; returns its length in seconds."""
        wait = self._wait
        self._after = self._clock() + wait
        self._wait = min(wait * 2, self.cap)
        return wait

    def succeeded(self) -> None:
        self._wait, self._after = self.base, 0.0
