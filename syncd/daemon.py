"""Composition root of ``syncd run``: builds everything, runs it, stops it cleanly.

Life of the daemon::

    starting --store open, listeners bound--> running (READY=1)
    running  --SIGHUP--> reloading --new config valid--> running (new rules)
                                    --new config bad-->  running (old config, error logged)
    running  --SIGTERM/SIGINT--> stopping (STOPPING=1): stop accepting, finish or spool
             what is in flight within STOP_GRACE seconds, cancel the rest --> exit 0

The store has one writer thread (``StoreWorker``); the BCC endpoint runs on the event
loop; each IMAP inbox syncs in a thread of its own. Periodic work (heartbeat for
``syncd status``, spool drain, outbox, watchdog) is scheduled with apscheduler. Only
this module and the CLI read the environment and install signal handlers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from syncd.bccservice import BccService
from syncd.config import Config
from syncd.errors import ConfigError
from syncd.imapservice import ImapService
from syncd.metrics import MetricsService
from syncd.schedule import Every
from syncd.sdnotify import Notifier
from syncd.store import daemonstate
from syncd.storeworker import StoreWorker

log = logging.getLogger("syncd.daemon")
STOP_GRACE_SECONDS = 20.0


class Service(Protocol):
    """A part of the daemon with a life of its own (the BCC endpoint, IMAP sync)."""

    name: str

    async def start(self, every: Every) -> None: ...
    async def stop(self, deadline: float) -> None: ...
    def reconfigure(self, config: Config) -> None: ...
    def status(self) -> dict[str, Any]: ...
    def summary(self) -> str: ...


class Daemon:
    """Runs until a stop signal; ``run()`` returns the exit status."""

    def __init__(self, config_path: Path, config: Config, env: Mapping[str, str]) -> None:
        self.config_path = config_path
        self.config = config
        self.notifier = Notifier.from_env(env)
        self.store = StoreWorker(config)
        self.services: list[Service] = []
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.state = "starting"
        self._stop = asyncio.Event()
        self._reloading = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.store.open()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self._reload()))
        scheduler = AsyncIOScheduler(event_loop=loop)
        self.services = _build_services(self.config, self.store)

        def every(job: Callable[[], Any], seconds: float, name: str) -> None:
            scheduler.add_job(job, "interval", seconds=seconds, id=name)

        for service in self.services:
            await service.start(every)
        beat = daemonstate.HEARTBEAT_SECONDS
        scheduler.add_job(self._heartbeat, "interval", seconds=beat, id="heartbeat")
        interval = self.notifier.watchdog_interval()
        if interval:
            scheduler.add_job(self.notifier.watchdog, "interval", seconds=interval, id="watchdog")
        scheduler.start()
        self.state = "running"
        await self._heartbeat()
        self.notifier.ready()
        self._announce()
        log.info("syncd running (pid %d): %s", os.getpid(), self._summary())
        await self._stop.wait()
        return await self._shutdown(scheduler)

    def _request_stop(self, sig: signal.Signals) -> None:
        if not self._stop.is_set():
            log.info("received %s: stopping", sig.name)
            self._stop.set()

    async def _reload(self) -> None:
        if self._reloading or self._stop.is_set():
            return
        self._reloading = True
        self.notifier.reloading()
        try:
            config = Config.from_yaml(self.config_path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused, keeping the running config: %s", problem)
        else:
            self.config = config
            await asyncio.to_thread(self.store.reconfigure, config)
            for service in self.services:
                service.reconfigure(config)
            log.info("configuration reloaded from %s", self.config_path)
        finally:
            self._reloading = False
            self.notifier.ready()
            self._announce()

    async def _heartbeat(self) -> None:
        detail = {service.name: service.status() for service in self.services}
        try:
            await self.store.run(_save_state, os.getpid(), self.started_at, self.state, detail)
        except Exception:
            log.exception("could not record the daemon's state for `syncd status`")

    def _summary(self) -> str:
        return "; ".join(s.summary() for s in self.services) or "nothing configured to run"

    def _announce(self) -> None:
        self.notifier.status(self._summary())

    async def _shutdown(self, scheduler: AsyncIOScheduler) -> int:
        self.state = "stopping"
        self.notifier.stopping()
        self.notifier.status("stopping: finishing what is in flight")
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        scheduler.shutdown(wait=False)
        for service in reversed(self.services):
            try:
                await service.stop(deadline)
            except Exception:
                log.exception("%s did not stop cleanly", service.name)
        self.state = "stopped"
        await self._heartbeat()
        await asyncio.to_thread(self.store.close)
        log.info("syncd stopped")
        return 0


def _save_state(pipeline: Any, pid: int, started: str, state: str, detail: dict[str, Any]) -> None:
    daemonstate.save(pipeline.conn, pid, started, state, detail)


def _build_services(config: Config, store: StoreWorker) -> list[Service]:
    services: list[Service] = []
    if config.bcc is not None:
        services.append(BccService(config, store))
    if config.inboxes:
        services.append(ImapService(config, store))
    if config.metrics.listen is not None:
        services.append(MetricsService(config))
    return services


def run(config_path: Path, config: Config, env: Mapping[str, str]) -> int:
    """Entry point of ``syncd run``; returns the exit status."""
    return asyncio.run(Daemon(config_path, config, env).run())
