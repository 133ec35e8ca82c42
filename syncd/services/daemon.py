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
import fcntl
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from syncd.config.model import Config
from syncd.errors import ConfigError, StoreDamaged, StoreError
from syncd.services.bcc import BccService
from syncd.services.imap import ImapService
from syncd.services.metrics import MetricsService
from syncd.services.quarantine import QuarantineService
from syncd.services.schedule import Every
from syncd.services.sdnotify import Notifier
from syncd.services.storeworker import StoreJob, StoreWorker
from syncd.services.submission import SubmissionService
from syncd.store import daemonstate, integrity
from syncd.store.timestamps import now_iso

log = logging.getLogger("syncd.services.daemon")
STOP_GRACE_SECONDS = 20.0
# The longest the store's check may hold up a start; a larger store starts unchecked.
START_CHECK_SECONDS = 5.0
PROBE_EVERY_SECONDS = 2.0


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
        self.started_at = now_iso()
        self.state = "starting"
        self._stop = asyncio.Event()
        self._reload_task: asyncio.Task[None] | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        lock = lock_store(self.config.store.path)
        try:
            _check_store(self.config.store.path)
            self.store.open()
            scheduler = AsyncIOScheduler(event_loop=loop)
            try:
                await self._start(loop, scheduler)
            except BaseException:
                # A part that cannot start (a port in use, a bad certificate) stops the
                # parts already running before the error reaches the CLI.
                await self._shutdown(scheduler)
                raise
            await self._stop.wait()
            return await self._shutdown(scheduler)
        finally:
            lock.close()

    async def _start(self, loop: asyncio.AbstractEventLoop, scheduler: AsyncIOScheduler) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self._request_reload)

        def every(job: Callable[[], Any], seconds: float, name: str) -> None:
            scheduler.add_job(job, "interval", seconds=seconds, id=name)

        for service in _build_services(self.config, self.store):
            self.services.append(service)
            await service.start(every)
        beat = daemonstate.HEARTBEAT_SECONDS
        interval = self.notifier.watchdog_interval()
        if interval:
            beat = min(beat, interval)  # the heartbeat also pings the watchdog
        scheduler.add_job(self._heartbeat, "interval", seconds=beat, id="heartbeat")
        every(self._probe_store, PROBE_EVERY_SECONDS, "store-health")
        scheduler.start()
        self.state = "running"
        await self._heartbeat()
        self.notifier.ready()
        self._announce()
        log.info("syncd running (pid %d): %s", os.getpid(), self._summary())

    def _request_stop(self, sig: signal.Signals) -> None:
        if not self._stop.is_set():
            log.info("received %s: stopping", sig.name)
            self._stop.set()

    def _request_reload(self) -> None:
        if self._reload_task is None or self._reload_task.done():
            self._reload_task = asyncio.get_running_loop().create_task(self._reload())

    async def _reload(self) -> None:
        if self._stop.is_set():
            return
        self.notifier.reloading()
        try:
            config = Config.from_yaml(self.config_path)
            for warning in config.warnings:
                log.warning("%s", warning)
            # The store first: if it cannot take the new rules, nothing has changed yet.
            await asyncio.to_thread(self.store.reconfigure, config)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused, keeping the running config: %s", problem)
        except Exception as exc:
            log.error("reload failed, keeping the running config: %s", exc)
        else:
            self.config = config
            for service in self.services:
                service.reconfigure(config)
            log.info("configuration reloaded from %s", self.config_path)
        finally:
            self.notifier.ready()
            self._announce()

    async def _heartbeat(self) -> None:
        """Record the daemon's state; only a heartbeat that reached the store pings the
        systemd watchdog, so a wedged store thread gets the daemon restarted."""
        detail = {service.name: service.status() for service in self.services}
        try:
            await self.store.run(_save_state, os.getpid(), self.started_at, self.state, detail)
        except StoreDamaged:
            pass  # said once by the store's health; the daemon itself is alive
        except Exception:
            log.exception("could not record the daemon's state for `syncd status`")
            return
        self.notifier.watchdog()

    async def _probe_store(self) -> None:
        if self.store.health.damaged:
            await asyncio.to_thread(self.store.health.probe)

    def _summary(self) -> str:
        return "; ".join(filter(None, (s.summary() for s in self.services))) or (
            "nothing configured to run"
        )

    def _announce(self) -> None:
        self.notifier.status(self._summary())

    async def _shutdown(self, scheduler: AsyncIOScheduler) -> int:
        self.state = "stopping"
        self.notifier.stopping()
        self.notifier.status("stopping: finishing what is in flight")
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        if scheduler.running:
            scheduler.shutdown(wait=False)
        if self._reload_task is not None:
            await asyncio.wait([self._reload_task], timeout=STOP_GRACE_SECONDS / 4)
        # In build order: the BCC endpoint stops accepting first and keeps its grace.
        for service in self.services:
            try:
                await service.stop(deadline)
            except Exception:
                log.exception("%s did not stop cleanly", service.name)
        self.state = "stopped"
        await self._heartbeat()
        await asyncio.to_thread(self.store.close)
        log.info("syncd stopped")
        return 0


def lock_store(path: Path) -> IO[bytes]:
    """One daemon per store: a second ``syncd run`` on it exits 75 instead of syncing
    the same inboxes twice and overwriting the first one's heartbeat."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path.with_name(path.name + ".lock"), "ab")  # noqa: SIM115 - held until exit
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StoreError(f"another `syncd run` is using the store {path}") from None
    return handle


def _check_store(path: Path) -> None:
    """Refuse a damaged store before anything uses it; a check that runs out of time
    lets the start go on (the running daemon still notices damage when it meets it)."""
    if not path.exists():
        return
    started = time.monotonic()
    verdict = integrity.check(path, seconds=START_CHECK_SECONDS)
    if verdict.problems:
        raise StoreDamaged.found(str(path), verdict.problems)
    if not verdict.finished:
        log.warning(
            "the store check did not finish in %.0f s; starting without it "
            "(`syncd check-store` runs it in full)",
            time.monotonic() - started,
        )


def _save_state(job: StoreJob, pid: int, started: str, state: str, detail: dict[str, Any]) -> None:
    daemonstate.save(job.session.conn, pid, started, state, detail)


def _build_services(config: Config, store: StoreWorker) -> list[Service]:
    services: list[Service] = []
    bcc = BccService(config, store) if config.bcc is not None else None
    if bcc is not None:
        services.append(bcc)
    if config.inboxes:
        services.append(ImapService(config, store))
    if config.metrics.listen is not None:

        def trouble() -> str | None:
            # A damaged store first: it is why the spool fails too, when it does.
            return store.health.trouble() or (bcc.spool_trouble() if bcc else None)

        services.append(MetricsService(config, bcc.unsaved_counts if bcc else None, trouble))
    services.append(QuarantineService(store))
    if config.submission is not None:
        # After the metrics service in the list, so stop order keeps BCC's grace first.
        services.append(SubmissionService(config, store))
    if config.tracking.enabled:
        from syncd.services.tracking import TrackingService  # aiohttp only when enabled

        services.append(TrackingService(config, store))
    return services


def run(config_path: Path, config: Config, env: Mapping[str, str]) -> int:
    """Entry point of ``syncd run``; returns the exit status."""
    return asyncio.run(Daemon(config_path, config, env).run())
