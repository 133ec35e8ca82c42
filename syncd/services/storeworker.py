"""The store's one writer thread: every write of the running daemon goes through it.

SQLite allows one writer at a time and a ``sqlite3`` connection belongs to the thread
that uses it, so the daemon gives the store a thread of its own. Async code awaits
``run(fn, ...)``; IMAP worker threads block on ``call(fn, ...)``. ``fn`` receives a
``StoreJob``: the worker's ``StoreSession`` for the store's own reads and writes, and
its ``Pipeline`` for mail. Jobs run one at a time, in the order they were submitted,
which also serialises the pipeline. A job that meets
a damaged file reports it to ``health`` and raises ``StoreDamaged``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from syncd.config.model import Config
from syncd.errors import StoreDamaged
from syncd.pipeline import Pipeline
from syncd.services.storehealth import StoreHealth
from syncd.store.session import StoreSession

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoreJob:
    """What a store job is handed: the session (its connection, transactions) for the
    store's functions, and the pipeline through which mail is ingested."""

    session: StoreSession
    pipeline: Pipeline


class StoreWorker:
    """Owns the store session and the pipeline on one thread."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._job: StoreJob | None = None
        self._thread: threading.Thread | None = None
        self.health = StoreHealth(config.store.path)
        self.health.on_recovered.append(lambda: self.call(_forget_cached_pages))

    def open(self) -> None:
        """Open (and migrate) the store on the worker thread; raises StoreError."""
        self._executor.submit(self._open).result()

    def _open(self) -> None:
        session = StoreSession.open(self._config.store.path)
        self._job = StoreJob(session, Pipeline.from_config(self._config, session))
        self._thread = threading.current_thread()

    def reconfigure(self, config: Config) -> None:
        """Use new rules (after SIGHUP) for mail ingested from now on."""

        def swap(job: StoreJob) -> None:
            self._job = StoreJob(job.session, Pipeline.from_config(config, job.session))
            job.pipeline.close()

        self._config = config
        self.call(swap)

    def parse_ahead(self, items: list[Any]) -> list[Any]:
        """The current pipeline's ``parse_ahead``, from any thread (it touches only the
        parser processes, never the connection)."""
        job = self._job
        return list(items) if job is None else job.pipeline.parse_ahead(items)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        return self._executor.submit(self._invoke, fn, *args)

    def _invoke(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._job is not None, "StoreWorker.open() first"
        try:
            return fn(self._job, *args)
        except StoreDamaged as exc:
            self.health.report(exc)
            raise
        except Exception as exc:
            if self.health.report(exc):
                raise self.health.refusal() from exc
            raise

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(job, *args)`` on the store thread and wait (from any other thread)."""
        if threading.current_thread() is self._thread:
            return self._invoke(fn, *args)
        return self.submit(fn, *args).result()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(job, *args)`` on the store thread without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def close(self) -> None:
        def close(job: StoreJob) -> None:
            job.pipeline.close()
            job.session.close()

        if self._job is not None:
            self.call(close)
            self._job = None
        self._executor.shutdown(wait=True)


def _forget_cached_pages(job: StoreJob) -> None:
    # Pages read while the file was damaged may sit in the connection's cache, which
    # only another connection's write would invalidate.
    job.session.forget_cached_pages()
