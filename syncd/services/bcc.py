"""The BCC endpoint wired to the store: listen, spool, drain into the CRM, forward copies.

The endpoint answers 250 once a message is committed to the spool (``SpoolWriter``, its
own connection with group commit). The store thread then drains the spool through the
pipeline, a small batch at a time so the spool writer never waits long for the write
lock: ``drain_spool`` hands each batch over through the source contract
(``sources.base``), the spool rows' ids being the source's record, deleted in the same
transaction as the mail they became (``intake.deliverer``). Drains
run at start (after a crash the spool still holds what was acknowledged), shortly
after each accepted message, and every few seconds; after a failed drain (a full or
read-only store) the next waits twice as long, up to ``DRAIN_MAX_SECONDS``. While the
store's file is damaged (``StoreHealth``) the endpoint answers 451 rather than spool into
a store that cannot drain, and the drain waits for the file to read as sound again.
extra_bcc copies leave from the durable outbox on a timer, in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from syncd.config.model import BccConfig, Config
from syncd.crm.team import Team
from syncd.errors import StoreDamaged
from syncd.mail.addresses import normalise
from syncd.mail.parse import key_of
from syncd.outbound.relay import OutboxRunner, Relay, RelaySettings
from syncd.secrets import read_password
from syncd.services.intake import IngestBatch, deliverer
from syncd.services.schedule import Backoff, Every
from syncd.services.storeworker import StoreJob
from syncd.sources.base import Handover, hand_over
from syncd.sources.bcc import BccHandler, PasswordFiles, provenance
from syncd.sources.senders import Dkim, PySpf, SenderPolicy
from syncd.sources.smtpserver import BccServer, ServerOptions, start_server, tls_context
from syncd.store import db, spool, tracking

log = logging.getLogger("syncd.bcc")
DRAIN_SECONDS = 2.0
DRAIN_MAX_SECONDS = 120.0
OUTBOX_SECONDS = 15.0
STOP_GRACE_SECONDS = 10.0


def sender_policy(config: Config, team: Team) -> SenderPolicy:
    assert config.bcc is not None
    mode = config.bcc.verify_sender
    return SenderPolicy(
        mode,
        team,
        spf_check=PySpf() if mode == "spf" else None,
        dkim_check=Dkim() if mode == "dkim" else None,
    )


@dataclass(frozen=True)
class DrainResult:
    taken: int
    statuses: Counter[str]


def drain_spool(
    conn: sqlite3.Connection,
    ingest_batch: IngestBatch,
    *,
    extra_bcc: Sequence[str] = (),
    batch: int = 32,
    now: Callable[[], float] = time.time,
) -> DrainResult:
    """One batch from the spool through ``ingest_batch`` (``Pipeline.ingest_batch``).

    Call from the pipeline's thread, in a loop until ``taken`` is 0. ``conn`` is a
    connection of this thread to the same store (reads and the copy release).
    """
    rows = spool.take_batch(conn, batch)
    if not rows:
        return DrainResult(0, Counter())
    ids = tuple(row.id for row in rows)
    # Relayed mail (the submission relay's): its tracking is tied to the engagement in
    # the transaction that logs it. extra_bcc copies are for BCC mail only.
    relayed = [key_of(row.raw) for row in rows if row.source == "relay"]
    copied = tuple(row.id for row in rows if row.source != "relay")

    def write(tx: sqlite3.Connection, spooled: tuple[int, ...]) -> None:
        if extra_bcc and copied:
            spool.hold_copies(tx, copied, extra_bcc, now())
        spool.delete_spooled(tx, spooled)
        for message_key in relayed:
            tracking.mark_logged(tx, message_key)

    items = [
        (row.raw, provenance(row.received_at, row.mail_from, row.owner, row.source, row.tag))
        for row in rows
    ]
    [outcomes] = hand_over([Handover(items, ids)], deliverer(ingest_batch, write))
    statuses = Counter(str(outcome.status) for outcome in outcomes)
    if extra_bcc:
        logged = [i for i, o in zip(ids, outcomes, strict=True) if o.status == "logged"]
        spool.release_copies(conn, logged, [i for i in ids if i not in set(logged)])
    return DrainResult(len(rows), statuses)


def drain_batch(job: StoreJob, extra_bcc: list[str]) -> int:
    """One small batch from the spool through the pipeline; how many were taken."""
    return drain_spool(job.session.conn, job.pipeline.ingest_batch, extra_bcc=extra_bcc).taken


class BccService:
    """The daemon's BCC part."""

    name = "bcc"

    def __init__(self, config: Config, store: Any) -> None:
        assert config.bcc is not None
        self._config = config
        self._bcc: BccConfig = config.bcc
        self._team = Team.from_config(config)
        self._store = store
        self._writer = spool.SpoolWriter(config.store.path)
        self._server: BccServer | None = None
        self._handler: BccHandler | None = None
        self._draining = False
        self._drain_pause = Backoff(DRAIN_SECONDS, DRAIN_MAX_SECONDS)
        self._state = "starting"
        self._outbox_conn: sqlite3.Connection | None = None
        self._sending: asyncio.Future[None] | None = None
        self._first_drain: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, every: Every) -> None:
        self._loop = asyncio.get_running_loop()
        await self._store.run(lambda job: spool.abandon_held(job.session.conn))
        bcc = self._bcc
        self._handler = BccHandler(
            addresses=bcc.addresses,
            policy=sender_policy(self._config, self._team),
            spool=self._spool,
            credentials=self._credentials(),
            on_event=self._writer.count,
        )
        options = ServerOptions(
            bcc.listen.host,
            bcc.listen.port,
            max_message_mb=bcc.max_message_mb,
            tls=tls_context(bcc.tls.cert, bcc.tls.key) if bcc.tls else None,
            require_tls=bcc.require_tls,
        )
        self._server = await start_server(self._handler, options)
        self._state = "listening"
        # What a crash left in the spool is logged in the background: READY comes first.
        self._first_drain = self._loop.create_task(self._drain())
        every(self._drain, DRAIN_SECONDS, "bcc-drain")
        if self._config.smarthost is not None and bcc.extra_bcc:
            every(self._send_outbox, OUTBOX_SECONDS, "outbox")

    def _credentials(self) -> PasswordFiles | None:
        if self._bcc.verify_sender != "auth":
            return None
        files = {m.email: m.smtp_password_file for m in self._config.team if m.smtp_password_file}
        return PasswordFiles(files, self._team)

    def _spool(
        self,
        raw: bytes,
        mail_from: str,
        peer_ip: str,
        owner: str | None = None,
        *,
        tag: str | None = None,
    ) -> int:
        """Called by the handler from a worker thread: commit, then nudge the drain."""
        health = self._store.health
        if health.damaged:
            raise health.refusal()
        try:
            spool_id = self._writer(raw, mail_from, peer_ip, owner, tag=tag)
        except Exception as exc:
            if health.report(exc):
                raise health.refusal() from exc
            raise
        assert self._loop is not None
        self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._drain()))
        return spool_id

    def unsaved_counts(self) -> dict[str, int]:
        """BCC counts the store has not taken yet (for ``/metrics``)."""
        return dict(self._writer.unsaved())

    def spool_trouble(self) -> str | None:
        """Why the spool cannot be written now, or None (for ``/health``)."""
        if self._writer.failing:
            return "the BCC spool cannot be written (BCC mail is answered 451)"
        return None

    async def _drain(self) -> None:
        if self._draining or not self._drain_pause.ready() or self._store.health.damaged:
            return  # the running drain loops until the spool is empty
        self._draining = True
        try:
            taken = 0
            # One store job per batch, so IMAP batches and the heartbeat interleave.
            while batch := await self._store.run(drain_batch, list(self._bcc.extra_bcc)):
                taken += batch
            if taken:
                log.info("logged %d BCC message(s) from the spool", taken)
            self._drain_pause.succeeded()
        except StoreDamaged:
            pass  # said once by the store's health, which also says when it is sound again
        except Exception:
            wait = self._drain_pause.failed()
            log.exception("draining the BCC spool failed; retrying in %.0f s", wait)
        finally:
            self._draining = False

    async def _send_outbox(self) -> None:
        if self._sending is not None and not self._sending.done():
            return
        self._sending = asyncio.ensure_future(asyncio.to_thread(self._send_outbox_now))
        await self._sending

    def _send_outbox_now(self) -> None:
        relay = self._config.smarthost
        assert relay is not None
        if self._outbox_conn is None:
            self._outbox_conn = db.connect(self._config.store.path)
        settings = RelaySettings(relay.host, relay.port, relay.security, relay.username)
        password = (lambda: read_password(relay)) if relay.username else (lambda: None)
        counts = OutboxRunner(spool.Outbox(self._outbox_conn), Relay(settings, password)).run_once()
        if counts["give_up"]:
            log.error(
                "gave up forwarding %d extra_bcc copy(ies); see syncd status", counts["give_up"]
            )

    async def stop(self, deadline: float) -> None:
        if self._server is not None:
            grace = max(0.0, min(STOP_GRACE_SECONDS, deadline - time.monotonic()))
            cut = await self._server.close(grace)
            if cut:
                log.warning("%d SMTP session(s) cut short at stop; senders will retry", cut)
        self._state = "stopped"
        if self._handler is not None:
            await asyncio.to_thread(self._handler.close)
        await asyncio.to_thread(self._writer.close)
        await self._drain()  # what was acknowledged is logged now, or at the next start
        if self._sending is not None:
            # A copy sent but not yet marked would go out again at the next start.
            left = max(1.0, deadline - time.monotonic())
            await asyncio.wait([self._sending], timeout=left)
        if self._outbox_conn is not None and (self._sending is None or self._sending.done()):
            self._outbox_conn.close()

    def reconfigure(self, config: Config) -> None:
        # New sender rules apply at once; a new listen address or TLS needs a restart.
        if config.bcc is None or self._handler is None:
            return
        self._config, self._bcc, self._team = config, config.bcc, Team.from_config(config)
        self._handler.policy = sender_policy(config, self._team)
        self._handler.allowed = frozenset(normalise(a) for a in config.bcc.addresses)
        self._handler.credentials = self._credentials()

    def status(self) -> dict[str, Any]:
        # Login counters ride the heartbeat to `status` and /metrics; they restart at 0.
        counts = self._handler.login_counts() if self._handler is not None else {}
        state = "refusing: store damaged" if self._store.health.damaged else self._state
        return {"listen": str(self._bcc.listen), "state": state} | counts

    def summary(self) -> str:
        return f"BCC endpoint on {self._bcc.listen}"
