"""The store's one writer thread: every write of the running daemon goes through it.

SQLite allows one writer at a time and a ``sqlite3`` connection belongs to the thread
that uses it, so the daemon gives the store a thread of its own. Async code awaits
``run(fn, ...)``; IMAP worker threads block on ``call(fn, ...)``. ``fn`` receives the
worker's ``Pipeline`` (its ``conn`` is the store connection). Jobs run one at a time,
in the order they were submitted, which also serialises the pipeline. A job that meets
a damaged file reports it to ``health`` and raises ``StoreDamaged``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from syncd.config.model import Config
from syncd.errors import StoreDamaged
from syncd.pipeline import Pipeline
from syncd.services.storehealth import StoreHealth
from syncd.store import db

T = TypeVar("T")


class StoreWorker:
    """Owns the store connection and the pipeline on one thread."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._pipeline: Pipeline | None = None
        self._thread: threading.Thread | None = None
        self.health = StoreHealth(config.store.path)
        self.health.on_recovered.append(lambda: self.call(_forget_cached_pages))

    def open(self) -> None:
        """Open (and migrate) the store on the worker thread; raises StoreError."""
        self._executor.submit(self._open).result()

    def _open(self) -> None:
        conn = db.connect(self._config.store.path)
        self._pipeline = Pipeline.from_config(self._config, conn)
        self._thread = threading.current_thread()

    def reconfigure(self, config: Config) -> None:
        """Use new rules (after SIGHUP) for mail ingested from now on."""

        def swap(pipeline: Pipeline) -> None:
            self._pipeline = Pipeline.from_config(config, pipeline.conn)
            pipeline.close()

        self._config = config
        self.call(swap)

    def parse_ahead(self, items: list[Any]) -> list[Any]:
        """The current pipeline's ``parse_ahead``, from any thread (it touches only the
        parser processes, never the connection)."""
        pipeline = self._pipeline
        return list(items) if pipeline is None else pipeline.parse_ahead(items)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        return self._executor.submit(self._invoke, fn, *args)

    def _invoke(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._pipeline is not None, "StoreWorker.open() first"
        try:
            return fn(self._pipeline, *args)
        except StoreDamaged as exc:
            self.health.report(exc)
            raise
        except Exception as exc:
            if self.health.report(exc):
                raise self.health.refusal() from exc
            raise

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(pipeline, *args)`` on the store thread and wait (from any other thread)."""
        if threading.current_thread() is self._thread:
            return self._invoke(fn, *args)
        return self.submit(fn, *args).result()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(pipeline, *args)`` on the store thread without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def close(self) -> None:
        def close(pipeline: Pipeline) -> None:
            pipeline.close()
            pipeline.conn.close()

        if self._pipeline is not None:
            self.call(close)
            self._pipeline = None
        self._executor.shutdown(wait=True)


def _forget_cached_pages(pipeline: Pipeline) -> None:
    # Pages read while the file was damaged may sit in the connection's cache, which
    # only another connection's write would invalidate.
    pipeline.conn.execute("PRAGMA shrink_memory")
