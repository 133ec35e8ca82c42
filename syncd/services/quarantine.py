"""The daemon's automatic retry of quarantined mail that a failing disk put there.

At start and every ``RETRY_SECONDS`` the store thread looks for quarantined mail whose
reason is a passing storage failure (``store.requeue``) and whose wait is over, and runs
it through the pipeline again, ``CHUNK`` messages per store job so IMAP batches and the
spool drain interleave. While the disk still fails, the store raises and the next look
waits twice as long, up to ``MAX_WAIT_SECONDS``. Mail quarantined for its own fault
stays until ``syncd quarantine retry``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from syncd.config.model import Config
from syncd.services.schedule import Backoff, Every
from syncd.services.storeworker import StoreJob
from syncd.store import requeue

log = logging.getLogger("syncd.quarantine")
RETRY_SECONDS = 60.0
MAX_WAIT_SECONDS = 3600.0
CHUNK = 32


def _due(job: StoreJob, every: bool) -> list[int]:
    return requeue.due(job.session.conn, datetime.now(UTC), every=every)


def _retry(job: StoreJob, ids: list[int]) -> Counter[str]:
    return Counter(outcome.status for _id, outcome in job.pipeline.retry_quarantined(ids))


class QuarantineService:
    """Retries transient quarantine entries in the daemon's store thread."""

    name = "quarantine"

    def __init__(self, store: Any) -> None:
        self._store = store
        self._running: asyncio.Task[None] | None = None
        self._pause = Backoff(RETRY_SECONDS, MAX_WAIT_SECONDS)

    async def start(self, every: Every) -> None:
        # At start every transient entry is tried: the disk may have room again by now.
        self._running = asyncio.get_running_loop().create_task(self._look(every=True))
        every(self._tick, RETRY_SECONDS, "quarantine-retry")

    async def _tick(self) -> None:
        busy = self._running is not None and not self._running.done()
        if busy or not self._pause.ready():
            return
        self._running = asyncio.ensure_future(self._look(every=False))
        await self._running

    async def _look(self, *, every: bool) -> None:
        try:
            ids = await self._store.run(_due, every)
            counts: Counter[str] = Counter()
            for start in range(0, len(ids), CHUNK):
                counts += await self._store.run(_retry, ids[start : start + CHUNK])
        except Exception as exc:
            wait = self._pause.failed()
            log.warning("retrying quarantined mail failed, next in %.0f s: %s", wait, exc)
            return
        self._pause.succeeded()
        if ids:
            log.info("retried %d quarantined message(s) a storage failure had kept: %s",
                     len(ids), dict(counts))  # fmt: skip

    async def stop(self, deadline: float) -> None:
        if self._running is not None and not self._running.done():
            # A store job under way finishes on the store thread anyway; don't start more.
            left = max(0.0, deadline - time.monotonic())
            await asyncio.wait([self._running], timeout=left)

    def reconfigure(self, config: Config) -> None:
        pass  # nothing to configure

    def status(self) -> dict[str, Any]:
        return {}

    def summary(self) -> str:
        return ""
