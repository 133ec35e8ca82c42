"""The tracking endpoint wired to the store: listen, queue hits, judge and store them.

``outbound.tracking`` answers the requests and queues hits; this module gives it its
hooks. Link destinations are read on a read-only connection in a thread of their own
(the click needs its destination before it can answer, and a read never waits for the
writer in WAL mode). Hits reach the store thread in batches (``store_hits``, one
``StoreWorker.run`` per batch), where each gets its verdict (``outbound.verdicts``)
against what the store knows of its message, is stored with it, and moves the
engagement's status on human hits only. A click judged ``scanner`` re-judges the
message's hits a burst can hold, because its first clicks looked human when they came.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import stat
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from syncd.config.model import Config, TrackingConfig
from syncd.errors import StoreError
from syncd.hosts import IpRules, truncate
from syncd.outbound import verdicts
from syncd.outbound.tokens import KeyFileError, Signer, load_keys
from syncd.outbound.tracking import Counts, HitQueue, RawHit, TrackingEndpoint
from syncd.services.notify import NotifyCommand
from syncd.services.schedule import Every
from syncd.services.storeworker import StoreJob
from syncd.store import db, trackview
from syncd.store import tracking as store
from syncd.store.session import StoreSession
from syncd.store.timestamps import iso, parse

log = logging.getLogger("syncd.tracking")
STOP_GRACE_SECONDS = 5.0
SWITCH_INTERVAL = 0.001
# Verdicts that rest on the full client address, which a stored (truncated) hit no
# longer has: a re-judge keeps them rather than guess from a /24.
_ADDRESS_VERDICTS = (verdicts.BLOCKED, verdicts.SELF)


@dataclass(frozen=True)
class Judging:
    """What the store thread needs to judge and store hits (from ``tracking:``)."""

    rules: IpRules
    thresholds: verdicts.Thresholds
    self_days: int
    keep_full_ips: bool

    @classmethod
    def from_config(cls, tracking: TrackingConfig) -> Judging:
        return cls(
            rules=ip_rules(tracking),
            thresholds=verdicts.Thresholds(
                prefetch_seconds=tracking.prefetch_seconds,
                scanner_burst=tracking.scanner_burst,
                scanner_burst_seconds=tracking.scanner_burst_seconds,
                scanner_seconds=tracking.scanner_seconds,
                self_seconds=tracking.self_days * 86400.0,
            ),
            self_days=tracking.self_days,
            keep_full_ips=tracking.keep_full_ips,
        )


def ip_rules(tracking: TrackingConfig) -> IpRules:
    return IpRules.parse(
        [str(n) for n in tracking.blocked_ips],
        [str(n) for n in tracking.trusted_proxies],
        scanner_ranges=verdicts.DEFAULT_SCANNER_RANGES,
    )


def load_signer(path: Path) -> Signer:
    """The signer of the secret file at ``path``; KeyFileError (never the secret) if the
    file cannot be read or holds no usable key. Warns when others may read it."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise KeyFileError(f"tracking.secret_file {path}: cannot read: {reason}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("tracking.secret_file %s is readable by group or others; chmod 600 it", path)
    try:
        keys = load_keys(text)
    except KeyFileError as exc:
        raise KeyFileError(f"tracking.secret_file {path}: {exc}") from None
    return Signer(keys, next(iter(keys)))


def _hit(hit: store.StoredHit) -> verdicts.Hit:
    return verdicts.Hit(hit.kind, hit.at, hit.ip, hit.user_agent, hit.link_idx)  # type: ignore[arg-type]


def _judged(hit: store.StoredHit) -> verdicts.JudgedHit:
    return verdicts.JudgedHit(
        _hit(hit), verdicts.Verdict(hit.verdict, hit.inferred_open, hit.reason)
    )


def store_hits(
    job: StoreJob,
    batch: Sequence[RawHit],
    judging: Judging,
    notify: Callable[[Mapping[str, Any]], None] | None = None,
) -> Counter[str]:
    """Judge and store a batch of hits in one transaction (on the store thread); how
    many got each verdict (``unknown``: the message is not, or no longer, tracked).
    ``notify`` gets each stored human hit as ``tracking.notify_command`` reads it, after
    the commit."""
    return judge_and_store(job.session, batch, judging, notify)


def judge_and_store(
    session: StoreSession,
    batch: Sequence[RawHit],
    judging: Judging,
    notify: Callable[[Mapping[str, Any]], None] | None = None,
) -> Counter[str]:
    """``store_hits`` on any writer session (tests, benchmarks)."""
    # self_days 0 turns the self rule off: no submission is that recent.
    since = (
        datetime.now(UTC) - timedelta(days=judging.self_days)
        if judging.self_days
        else datetime.max.replace(tzinfo=UTC)
    )
    # Clicks older than the batch's first hit less the burst window cannot be in a burst
    # with any of its hits.
    clicks_since = min((raw.at for raw in batch), default=datetime.now(UTC)) - timedelta(
        seconds=judging.thresholds.scanner_burst_seconds
    )
    events: list[Mapping[str, Any]] = []
    with session.batch() as conn:
        # Once a batch, only what the rules look at (for clicks: a human open seen, the
        # clicks of the burst window), then the batch's own hits as they are judged: a
        # message with many hits costs no more than one with few.
        found = store.recent(
            conn,
            (raw.message_id for raw in batch),
            since,
            clicks_since,
            history_of=(raw.message_id for raw in batch if raw.kind == "click"),
        )
        judged = _judge_batch(batch, found, judging)
        store.record_hits(conn, judged.rows)
        for status in ("opened", "clicked"):
            ids = [e for e, s in judged.raised.items() if s == status]
            if ids:
                store.raise_status(conn, ids, status)
        for message_id in judged.rejudge:
            _rejudge(conn, found[message_id], judging, clicks_since)
            store.update_status(conn, message_id)  # a re-judge may take a status back
        if notify is not None:
            people = (row for row in judged.rows if row.verdict == verdicts.HUMAN)
            events = [e for e in (trackview.event(conn, row) for row in people) if e is not None]
    for event in events:  # only once the hits are committed
        notify(event)  # type: ignore[misc]
    return judged.counts


@dataclass
class _Judged:
    """A batch judged: the rows to store, how many got each verdict, the status each
    engagement's human hits raise it to, and the messages a scanner burst re-judges."""

    rows: list[store.StoredHit] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    raised: dict[int, str] = field(default_factory=dict)
    rejudge: set[int] = field(default_factory=set)


def _judge_batch(
    batch: Sequence[RawHit], found: Mapping[int, store.Recent], judging: Judging
) -> _Judged:
    seen = {mid: (recent, _earlier(recent)) for mid, recent in found.items()}
    opened = {mid for mid, recent in found.items() if recent.human_open is not None}
    out = _Judged()
    for raw in batch:
        entry = seen.get(raw.message_id)
        if entry is None:
            out.counts["unknown"] += 1
            continue
        recent, earlier = entry
        hit = verdicts.Hit(raw.kind, raw.at, raw.ip, raw.user_agent, raw.link_index)
        context = verdicts.MessageContext(recent.relayed_at, recent.sender_ips, earlier)
        verdict = verdicts.judge(hit, context, judging.rules, judging.thresholds)
        # The rules look back at clicks and at whether a person opened; keeping only
        # those (one open) keeps a message's hundredth hit in a batch as cheap as its
        # first.
        human = verdict.verdict == verdicts.HUMAN
        if raw.kind == "click" or (human and raw.message_id not in opened):
            earlier.append(verdicts.JudgedHit(hit, verdict))
            if human:
                opened.add(raw.message_id)
        kept_ip = raw.ip if judging.keep_full_ips else truncate(raw.ip)
        out.rows.append(
            store.StoredHit(
                raw.message_id,
                raw.kind,
                raw.at,
                kept_ip,
                raw.user_agent,
                verdict.verdict,
                raw.link_index,
                verdict.inferred_open,
                verdict.reason,
            )
        )
        out.counts[verdict.verdict] += 1
        engagement = recent.engagement_id
        if human and engagement is not None:
            if raw.kind == "click" or out.raised.get(engagement) != "clicked":
                out.raised[engagement] = "clicked" if raw.kind == "click" else "opened"
        elif raw.kind == "click" and verdict.verdict == verdicts.SCANNER:
            out.rejudge.add(raw.message_id)
    return out


def _earlier(recent: store.Recent) -> list[verdicts.JudgedHit]:
    hits = [*recent.clicks]
    if recent.human_open is not None and recent.human_open not in hits:
        hits.append(recent.human_open)
    return [_judged(h) for h in sorted(hits, key=lambda h: h.at)]


def _rejudge(
    conn: sqlite3.Connection, ctx: store.Recent, judging: Judging, start: datetime
) -> None:
    """Judge again the message's hits from ``start`` on, where every burst that holds a
    hit of the batch begins; older hits keep their verdicts and are context: the clicks
    within a burst window before ``start`` and the first human open. What this reads does
    not grow with the message's history."""
    start = parse(iso(start))  # hits are stored to the second
    window = timedelta(seconds=judging.thresholds.scanner_burst_seconds + 1)
    loaded = store.hits(conn, ctx.message_id, since=start - window)
    stored = [h for h in loaded if h.at >= start]
    before = [h for h in loaded if h.at < start]
    if ctx.human_open is not None and ctx.human_open.at < start - window:
        before.insert(0, ctx.human_open)
    again = verdicts.rejudge(
        [_hit(h) for h in stored],
        ctx.relayed_at,
        ctx.sender_ips,
        judging.rules,
        judging.thresholds,
        before=[_judged(h) for h in before],
    )
    # rejudge sorts by time (stably) and `stored` is in (at, id) order: same order.
    result: list[tuple[str, bool, str]] = []
    for old, new in zip(stored, again, strict=True):
        if old.verdict in _ADDRESS_VERDICTS:
            result.append((old.verdict, old.inferred_open, old.reason))
        else:
            v = new.verdict
            result.append((v.verdict, v.inferred_open, v.reason))
    store.set_verdicts(conn, ctx.message_id, result, since=start)


class LinkReader:
    """A message's link destinations, read on a read-only connection in a thread of its
    own.

    One read runs at a time. Clicks that miss the endpoint's cache while it runs wait for
    the next, which reads all their messages in one statement: under a burst, a thread
    hand-off serves many clicks, and the clicks of one message (a scanner following every
    link) share one read."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracking-links")
        self._conn: sqlite3.Connection | None = None
        self._wanted: dict[int, asyncio.Future[Sequence[str] | None]] = {}
        self._reading: dict[int, asyncio.Future[Sequence[str] | None]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __call__(self, message_id: int) -> Sequence[str] | None:
        loop = asyncio.get_running_loop()
        future = self._reading.get(message_id) or self._wanted.get(message_id)
        if future is None:
            future = self._wanted[message_id] = loop.create_future()
            if self._reader is None:
                self._reader = loop.create_task(self._read_wanted())
        # shield: a reader who hangs up must not cancel the read others wait for.
        return await asyncio.shield(future)

    async def _read_wanted(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._wanted:
                wanted, self._wanted = self._wanted, {}
                self._reading = wanted
                try:
                    found = await loop.run_in_executor(self._executor, self._read, list(wanted))
                except Exception as exc:
                    for future in wanted.values():
                        future.set_exception(exc)
                        # Retrieved here: a reader who hung up must not leave it to be
                        # logged again when the future is collected.
                        future.exception()
                    continue
                for message_id, future in wanted.items():
                    future.set_result(found.get(message_id))
        finally:
            self._reader, self._reading = None, {}

    def _read(self, message_ids: list[int]) -> dict[int, tuple[str, ...] | None]:
        try:
            if self._conn is None:
                self._conn = db.connect(self._path, readonly=True)
            return store.link_urls(self._conn, message_ids)
        except sqlite3.Error as exc:
            self._close()  # a fresh connection next time
            raise StoreError(f"cannot read a tracked link: {exc}") from exc

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        self._executor.submit(self._close).result()
        self._executor.shutdown(wait=True)


class TrackingService:
    """The daemon's tracking part: the public HTTP listener and its hit writer."""

    name = "tracking"

    def __init__(self, config: Config, store_worker: Any) -> None:
        self._config = config
        self._tracking = config.tracking
        self._store = store_worker
        self._judging = Judging.from_config(config.tracking)
        self.counts = Counts()
        self._runner: Any = None
        self._writer: asyncio.Task[None] | None = None
        self._queue: HitQueue | None = None
        self._endpoint: TrackingEndpoint | None = None
        self._links: LinkReader | None = None
        self._state = "starting"
        self._notifier = NotifyCommand.from_config(config)
        self.port: int | None = None

    async def start(self, every: Every) -> None:
        from aiohttp import web

        tracking = self._tracking
        assert tracking.secret_file is not None, "check-config requires secret_file"
        signer = load_signer(Path(tracking.secret_file))
        if self._notifier is not None:
            self._notifier.start()
        self._links = LinkReader(self._config.store.path)
        self._queue = HitQueue(tracking.queue_size, self._write, self.counts)
        self._endpoint = TrackingEndpoint(
            signer,
            self._judging.rules,
            links=self._links,
            queue=self._queue,
            counts=self.counts,
            rate_per_minute=tracking.rate_per_minute,
        )
        # The writer judges hits in the store thread while the loop answers requests: a
        # thread holding the GIL keeps the other waiting up to the switch interval (5 ms
        # by default), which went straight into the endpoint's p99. 1 ms keeps answers
        # short at a small cost in throughput.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        self._writer = asyncio.get_running_loop().create_task(self._queue.run())
        self._runner = web.AppRunner(
            self._endpoint.app(), access_log=None, shutdown_timeout=STOP_GRACE_SECONDS
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, tracking.listen.host, tracking.listen.port)
        await site.start()
        addresses = self._runner.addresses  # the bound port, when listen asks for port 0
        self.port = int(addresses[0][1]) if addresses else tracking.listen.port
        self._state = "listening"

    async def _write(self, batch: Sequence[RawHit]) -> Mapping[str, int]:
        notify = self._notifier.event if self._notifier is not None else None
        return await self._store.run(store_hits, list(batch), self._judging, notify)

    async def stop(self, deadline: float) -> None:
        """Stop answering, then store what is queued (bounded by ``deadline``)."""
        if self._runner is not None:
            await self._runner.cleanup()
        self._state = "stopped"
        if self._queue is not None:
            left = max(0.5, min(STOP_GRACE_SECONDS, deadline - time.monotonic()))
            lost = await self._queue.close(left)
            if lost:
                log.warning("%d tracking hit(s) not stored at stop", lost)
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._links is not None:
            await asyncio.to_thread(self._links.close)
        if self._notifier is not None:
            await asyncio.to_thread(self._notifier.stop)

    def reconfigure(self, config: Config) -> None:
        # Lists, thresholds and the rate apply at once; listen and the secret need a restart.
        self._config, self._tracking = config, config.tracking
        self._judging = Judging.from_config(config.tracking)
        if self._endpoint is not None:
            self._endpoint.set_rules(self._judging.rules)
            self._endpoint.rate.per_minute = config.tracking.rate_per_minute
        if self._queue is not None:
            self._queue.size = config.tracking.queue_size

    def status(self) -> dict[str, Any]:
        depth = len(self._queue) if self._queue is not None else 0
        return {"listen": str(self._tracking.listen), "state": self._state, "queue": depth} | (
            self.counts.as_dict()
        )

    def summary(self) -> str:
        return f"tracking on {self._tracking.listen}"
