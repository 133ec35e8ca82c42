"""The submission relay wired: listen, hand each message to the relay worker, drain.

``SubmissionService`` runs ``sources.submission`` on the daemon's event loop when
``submission:`` is configured. The listener checks AUTH and the sender; each message
then goes to the relay worker process (``services.relayworker``), which decides
tracking, rewrites, relays and records it (``services.relayer``) while the client waits
in DATA. The spool it records to is drained here (``services.bcc.drain_batch``): a
message the worker recorded nudges the drain, and a timer drains what a crash left.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from syncd.config.model import Config
from syncd.crm.team import Team
from syncd.services.bcc import DRAIN_MAX_SECONDS, DRAIN_SECONDS, drain_batch
from syncd.services.relayer import TrackingSetup
from syncd.services.relayworker import RelayWorker, Setup
from syncd.services.schedule import Backoff, Every
from syncd.sources.bcc import PasswordFiles
from syncd.sources.smtpserver import BccServer, ServerOptions, tls_context
from syncd.sources.submission import SubmissionHandler, start
from syncd.store import spool

log = logging.getLogger("syncd.submission")
STOP_GRACE_SECONDS = 10.0


def credentials(config: Config, team: Team) -> PasswordFiles:
    files = {m.email: m.smtp_password_file for m in config.team if m.smtp_password_file}
    return PasswordFiles(files, team)


class SubmissionService:
    """The daemon's submission relay."""

    name = "submission"

    def __init__(self, config: Config, store: Any) -> None:
        assert config.submission is not None
        self._config = config
        self._store = store
        self._team = Team.from_config(config)
        self._writer = spool.SpoolWriter(config.store.path)
        self._server: BccServer | None = None
        self._handler: SubmissionHandler | None = None
        self._worker: RelayWorker | None = None
        self._nudges: set[asyncio.Future[None]] = set()
        self._draining = False
        self._drain_pause = Backoff(DRAIN_SECONDS, DRAIN_MAX_SECONDS)
        self._state = "starting"

    async def start(self, every: Every) -> None:
        sub = self._config.submission
        assert sub is not None
        # The tracking keys are read here, so that a bad secret_file stops the start.
        setup = Setup(self._config, TrackingSetup.from_config(self._config))
        self._worker = RelayWorker(setup, relayed=self._nudge)
        await self._worker.start()
        self._handler = SubmissionHandler(
            team=self._team,
            forward=self._worker.forward,
            credentials=credentials(self._config, self._team),
            on_event=self._writer.count,
            require_tls=bool(sub.require_tls and sub.tls),
        )
        options = ServerOptions(
            sub.listen.host,
            sub.listen.port,
            max_message_mb=sub.max_message_mb,
            tls=tls_context(sub.tls.cert, sub.tls.key) if sub.tls else None,
            require_tls=sub.require_tls,
        )
        self._server = await start(self._handler, options)
        self._state = "listening"
        self._nudge()  # what a crash left is logged now
        every(self._drain, DRAIN_SECONDS, "submission-drain")

    def _nudge(self) -> None:
        task = asyncio.ensure_future(self._drain())
        self._nudges.add(task)
        task.add_done_callback(self._nudges.discard)

    async def _drain(self) -> None:
        if self._draining or not self._drain_pause.ready():
            return
        self._draining = True
        extra = list(self._config.bcc.extra_bcc) if self._config.bcc else []
        try:
            while await self._store.run(drain_batch, extra):
                pass
            self._drain_pause.succeeded()
        except Exception:
            wait = self._drain_pause.failed()
            log.exception("draining the spool failed; retrying in %.0f s", wait)
        finally:
            self._draining = False

    def unsaved_counts(self) -> dict[str, int]:
        return dict(self._writer.unsaved())

    async def stop(self, deadline: float) -> None:
        if self._server is not None:
            grace = max(0.0, min(STOP_GRACE_SECONDS, deadline - time.monotonic()))
            cut = await self._server.close(grace)
            if cut:
                log.warning("%d submission session(s) cut short at stop", cut)
        self._state = "stopped"
        if self._handler is not None:
            await asyncio.to_thread(self._handler.close)
        if self._worker is not None:
            await self._worker.stop(deadline)
        await asyncio.to_thread(self._writer.close)
        await self._drain()

    def reconfigure(self, config: Config) -> None:
        # Members, passwords, tracking and the smarthost apply at once; a new listen
        # address or TLS needs a restart.
        if config.submission is None or self._handler is None:
            return
        self._config, self._team = config, Team.from_config(config)
        try:
            setup = Setup(config, TrackingSetup.from_config(config))
        except Exception as error:
            log.error("submission: new tracking settings not used: %s", error)
            return
        self._handler.team = self._team
        self._handler.credentials = credentials(config, self._team)
        if self._worker is not None:
            self._worker.reconfigure(setup)

    def status(self) -> dict[str, Any]:
        sub = self._config.submission
        counts = self._handler.login_counts() if self._handler is not None else {}
        worker = self._worker
        return {
            "listen": str(sub.listen) if sub else "",
            "state": self._state,
            "worker_pid": worker.pid if worker is not None else None,
            "worker_restarts": worker.deaths if worker is not None else 0,
        } | counts

    def summary(self) -> str:
        sub = self._config.submission
        return f"submission relay on {sub.listen}" if sub else ""
