"""The BCC spool, the extra_bcc outbox and their counters: mail between a 250 and the CRM.

Inbound, a message is committed to ``spool`` (synchronous=FULL) before the endpoint
answers 250. ``SpoolWriter`` is the endpoint's write path: one thread, one connection,
and group commit (every message that arrived while the previous commit was syncing goes
into the next transaction, each session getting its 250 only after that COMMIT).
The BCC service's drain (``services.bcc.drain_spool``) then hands spooled rows
(``take_batch``) to the pipeline and deletes them (``delete_spooled``) in the pipeline's
own transaction, so a crash at any point leaves each message either in the spool or in
the CRM, and a restart drains what is left.

Outbound (extra_bcc), a copy of each message the pipeline *logged* is queued in
``outbox``. The drain's record of a batch is written before its outcomes are known, so
the copy is written ``held`` in the same transaction as the mail and released
(``queued``) or dropped right after, once the outcome is known::

    held --logged--> queued --sent--> (deleted, counters.forwarded += 1)
      |                 |  --temporary failure--> queued (attempts+1, next_attempt_at)
      |                 '--permanent failure or too old--> given_up (kept for status)
      '--not logged: deleted;  found at start (crash between): given_up

Skipped (never_log), duplicate and quarantined mail is never forwarded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncd.errors import StoreError
from syncd.store import db
from syncd.store.integrity import is_damage
from syncd.store.timestamps import from_epoch, to_epoch

log = logging.getLogger(__name__)


def _bump(conn: sqlite3.Connection, counts: Counter[str]) -> None:
    conn.executemany(
        "INSERT INTO bcc_counters (name, value) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
        [(name, n) for name, n in counts.items() if n],
    )


def spool_message(
    conn: sqlite3.Connection,
    raw: bytes,
    mail_from: str,
    peer: str,
    owner: str | None = None,
    *,
    now: float | None = None,
    source: str = "bcc",
    also: Also | None = None,
    tag: str | None = None,
) -> int:
    """Commit one message to the spool (its own transaction); returns its id.

    ``source`` 'relay' marks mail the smarthost accepted from a member (counted as
    ``submission.relayed``, not as a BCC acceptance); ``also(conn)`` writes more rows in
    the same transaction (the relay's tracked message); ``tag`` is the logging address's
    tag (``crm.bcctags``), handed to the pipeline with the message."""
    with db.transaction(conn):
        cursor = conn.execute(
            "INSERT INTO spool (received_at, mail_from, peer, owner, raw, source, tag)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (from_epoch(time.time() if now is None else now), mail_from, peer, owner, raw,
             source, tag),
        )  # fmt: skip
        if also is not None:
            also(conn)
        _bump(conn, Counter({ACCEPTED_AS.get(source, source + ".spooled"): 1}))
    return int(cursor.lastrowid or 0)


# The durable counter each source's spooled messages add to, in the same commit.
ACCEPTED_AS = {"bcc": "accepted", "relay": "submission.relayed"}
Also = Callable[[sqlite3.Connection], None]


@dataclass
class _Job:
    raw: bytes
    mail_from: str
    peer: str
    owner: str | None
    done: threading.Event
    spool_id: int = 0
    error: BaseException | None = None
    source: str = "bcc"
    also: Also | None = None
    tag: str | None = None


class SpoolWriter:
    """Durable spool writes with group commit; a plain callable for the BCC endpoint.

    ``writer(raw, mail_from, peer_ip, owner=None)`` blocks until the message is committed
    and raises ``StoreError`` when it is not. Leader/follower: the first caller to find no
    commit running commits everything queued so far in its own thread; callers arriving
    meanwhile queue up and are committed together by the next leader, so one fsync
    acknowledges many sessions and a lone client pays no thread hand-off. ``count(name)``
    adds to a status counter (refusals); counters ride with the next commit, and a
    background thread flushes them within ``flush_interval`` seconds when mail is quiet.

    A store that cannot be written (disk full, read-only, I/O errors) fails each message
    once, at once (the endpoint answers 451); nothing is retried in a loop. Counters
    wait in memory (``unsaved()``, which the metrics endpoint adds to the store's) and
    the background flush tries them again after ``flush_interval``, doubling after each
    failure up to ``max_backoff``. ``close`` tries the counters once more and never
    waits for the store beyond that one attempt. A damaged file fails messages the same
    way but is not logged here: the caller reports it (``services.storehealth``).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_batch: int = 256,
        max_batch_bytes: int = 64 * 1024 * 1024,
        busy_timeout: float | None = None,
        flush_interval: float = 5.0,
        max_backoff: float = 300.0,
    ) -> None:
        self._conn = db.connect(path)
        if busy_timeout is not None:
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        self._max_batch = max_batch
        self._max_bytes = max_batch_bytes
        self._cond = threading.Condition()
        self._pending: list[_Job] = []
        self._counts: Counter[str] = Counter()
        self._writing: Counter[str] = Counter()  # counts in the commit under way
        self._interval = flush_interval
        self._max_backoff = max_backoff
        self._backoff = flush_interval
        self._counts_due = 0.0  # monotonic time before which a counters-only flush waits
        self._failing = False  # the last commit was refused
        self._said_failing = False  # ... and the log said so
        self._leading = False
        self._closed = False
        self.commits = 0  # transactions written; messages / commits = mean group size
        self._stop = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_loop, args=(flush_interval,), name="spool-counts", daemon=True
        )
        self._flusher.start()

    def __call__(
        self,
        raw: bytes,
        mail_from: str,
        peer_ip: str,
        owner: str | None = None,
        *,
        source: str = "bcc",
        also: Also | None = None,
        tag: str | None = None,
    ) -> int:
        """Commit one message (see ``spool_message`` for ``source``, ``also`` and ``tag``)."""
        job = _Job(
            raw, mail_from, peer_ip, owner, threading.Event(), source=source, also=also, tag=tag
        )
        with self._cond:
            if self._closed:
                raise StoreError("the spool is closed")
            self._pending.append(job)
        self._lead_until(job.done)
        if job.error is not None:
            raise StoreError("the spool could not be written") from job.error
        return job.spool_id

    def count(self, name: str, n: int = 1) -> None:
        with self._cond:
            self._counts[name] += n

    def unsaved(self) -> Counter[str]:
        """Counts not in the store yet (waiting for a commit, or for a store that
        refuses writes): add them to the store's ``bcc_counters`` for live figures."""
        with self._cond:
            return self._counts + self._writing

    @property
    def failing(self) -> bool:
        """The last commit was refused (and none has succeeded since)."""
        return self._failing

    def close(self) -> None:
        """Stop taking mail, try once to write the counters still pending, close the
        connection. Counters the store refuses are logged, not waited for."""
        with self._cond:
            self._closed = True
        self._stop.set()
        self._flusher.join()
        # One short attempt: the daemon's shutdown is bounded, a locked store is not.
        self._conn.execute("PRAGMA busy_timeout = 2000")
        self._lead_until(None, once=True)
        lost = self.unsaved()
        if lost:
            log.warning("BCC counts not saved, the store refused them: %s", dict(lost))
        self._conn.close()

    def _flush_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            if time.monotonic() >= self._counts_due:
                self._lead_until(None, once=True)

    def _lead_until(self, done: threading.Event | None, *, once: bool = False) -> None:
        """Commit queued work as leader, or wait for the leader, until ``done`` is set
        (``done`` None: until nothing is queued). ``once``: stop after a failed commit
        rather than take the same counters again (a store that refuses writes would
        otherwise be retried in a tight loop)."""
        while True:
            with self._cond:
                while self._leading and not (done is not None and done.is_set()):
                    self._cond.wait()
                if done is not None and done.is_set():
                    return
                batch, counts = self._take()
                if not batch and not counts:
                    return
                self._leading = True
            try:
                ok = self._commit(batch, counts)
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()
            if once and not ok:
                return

    def _take(self) -> tuple[list[_Job], Counter[str]]:
        batch: list[_Job] = []
        size = 0
        while self._pending and len(batch) < self._max_batch:
            if batch and size + len(self._pending[0].raw) > self._max_bytes:
                break
            job = self._pending.pop(0)
            batch.append(job)
            size += len(job.raw)
        counts, self._counts = self._counts, Counter()
        self._writing = counts.copy()
        return batch, counts

    def _commit(self, batch: list[_Job], counts: Counter[str]) -> bool:
        """Write ``batch`` and ``counts`` in one transaction; False if the store refused."""
        for job in batch:
            counts[ACCEPTED_AS.get(job.source, job.source + ".spooled")] += 1
        try:
            self._write(batch, counts)
        except BaseException as error:
            for job in batch:
                job.error = error
            if self._conn.in_transaction:  # a failed ROLLBACK must not wedge the next BEGIN
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
            with self._cond:  # refusal counts are kept for the next try, after a pause
                self._counts.update(self._writing)
                self._writing = Counter()
                self._counts_due = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, self._max_backoff)
                first, ok = not self._failing, False
                self._failing = True
            # Once per outage: every refused message is logged by the endpoint. A damaged
            # file is the caller's to say (the daemon says it once for all its parts).
            if first and not is_damage(error):
                log.error("the BCC spool cannot be written, answering 451: %s", error)
                self._said_failing = True
        else:
            with self._cond:
                self._writing = Counter()
                self._counts_due = 0.0
                self._backoff = self._interval
                recovered = self._failing
                self._failing, ok = False, True
            if recovered and self._said_failing:
                self._said_failing = False
                log.info("the BCC spool can be written again")
        for job in batch:
            job.done.set()
        return ok

    def _write(self, batch: list[_Job], counts: Counter[str]) -> None:
        now = from_epoch(time.time())
        with db.transaction(self._conn):
            for job in batch:
                cursor = self._conn.execute(
                    "INSERT INTO spool (received_at, mail_from, peer, owner, raw, source, tag) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (now, job.mail_from, job.peer, job.owner, job.raw, job.source, job.tag),
                )
                job.spool_id = int(cursor.lastrowid or 0)
                if job.also is not None:
                    job.also(self._conn)
            _bump(self._conn, counts)
        self.commits += 1


@dataclass(frozen=True)
class Spooled:
    id: int
    received_at: float
    mail_from: str
    peer: str
    owner: str | None
    raw: bytes
    source: str = "bcc"
    tag: str | None = None


def take_batch(
    conn: sqlite3.Connection, n: int = 32, *, max_bytes: int = 128 * 1024 * 1024
) -> list[Spooled]:
    """The oldest spooled messages, at least one, at most ``n`` and about ``max_bytes``."""
    rows = conn.execute(
        "SELECT id, received_at, mail_from, peer, owner, source, tag, length(raw) AS size "
        "FROM spool ORDER BY id LIMIT ?",
        (n,),
    ).fetchall()
    batch: list[Spooled] = []
    total = 0
    for row in rows:
        if batch and total + row["size"] > max_bytes:
            break
        total += row["size"]
        raw = conn.execute("SELECT raw FROM spool WHERE id = ?", (row["id"],)).fetchone()
        if raw is None:
            continue
        batch.append(
            Spooled(row["id"], to_epoch(row["received_at"]), row["mail_from"], row["peer"],
                    row["owner"], bytes(raw[0]), row["source"], row["tag"])
        )  # fmt: skip
    return batch


def delete_spooled(conn: sqlite3.Connection, ids: Sequence[int]) -> None:
    """Remove drained rows; runs inside the pipeline's transaction, with their mail."""
    conn.executemany("DELETE FROM spool WHERE id = ?", [(i,) for i in ids])


def hold_copies(
    conn: sqlite3.Connection, ids: Sequence[int], recipients: Sequence[str], now: float
) -> None:
    """Queue ``held`` extra_bcc copies of spool rows; runs inside ``on_commit``."""
    conn.executemany(
        "INSERT INTO outbox (spool_id, state, created_at, next_attempt_at, mail_from, "
        "recipients, raw) SELECT id, 'held', ?, ?, mail_from, ?, raw FROM spool WHERE id = ?",
        [(from_epoch(now), from_epoch(now), json.dumps(list(recipients)), i) for i in ids],
    )


def release_copies(conn: sqlite3.Connection, logged: Sequence[int], others: Sequence[int]) -> None:
    """Once outcomes are known: logged copies become ``queued``, the rest are dropped."""
    with db.transaction(conn):
        conn.executemany(
            "UPDATE outbox SET state = 'queued' WHERE state = 'held' AND spool_id = ?",
            [(i,) for i in logged],
        )
        conn.executemany(
            "DELETE FROM outbox WHERE state = 'held' AND spool_id = ?", [(i,) for i in others]
        )


def abandon_held(conn: sqlite3.Connection, now: float | None = None) -> int:
    """At start: copies whose outcome was lost in a crash are given up, never guessed."""
    with db.transaction(conn):
        cursor = conn.execute(
            "UPDATE outbox SET state = 'given_up', given_up_at = ?, last_error = "
            "'syncd stopped before the message was known to be logged' WHERE state = 'held'",
            (from_epoch(time.time() if now is None else now),),
        )
    return cursor.rowcount


@dataclass(frozen=True)
class OutboxItem:
    id: int
    created_at: float
    attempts: int
    mail_from: str
    recipients: list[str]
    raw: bytes


class Outbox:
    """The extra_bcc queue on one connection: what ``outbound.relay.OutboxRunner`` needs."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def due(self, now: float, limit: int = 16) -> list[OutboxItem]:
        rows = self.conn.execute(
            "SELECT id, created_at, attempts, mail_from, recipients, raw FROM outbox "
            "WHERE state = 'queued' AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
            (from_epoch(now), limit),
        ).fetchall()
        return [
            OutboxItem(r["id"], to_epoch(r["created_at"]), r["attempts"], r["mail_from"],
                       json.loads(r["recipients"]), bytes(r["raw"]))
            for r in rows
        ]  # fmt: skip

    def mark_sent(self, item_id: int) -> None:
        with db.transaction(self.conn):
            self.conn.execute("DELETE FROM outbox WHERE id = ?", (item_id,))
            _bump(self.conn, Counter(forwarded=1))

    def mark_failed(
        self, item_id: int, *, next_attempt_at: float, error: str, remaining: Sequence[str]
    ) -> None:
        with db.transaction(self.conn):
            self.conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, "
                "last_error = ?, recipients = ? WHERE id = ?",
                (from_epoch(next_attempt_at), error, json.dumps(list(remaining)), item_id),
            )

    def give_up(self, item_id: int, *, error: str, now: float) -> None:
        with db.transaction(self.conn):
            self.conn.execute(
                "UPDATE outbox SET state = 'given_up', attempts = attempts + 1, "
                "last_error = ?, given_up_at = ? WHERE id = ?",
                (error, from_epoch(now), item_id),
            )
            _bump(self.conn, Counter(given_up=1))


def status(conn: sqlite3.Connection, now: float | None = None) -> dict[str, Any]:
    """BCC and outbox figures for ``syncd status``."""
    now = time.time() if now is None else now
    counters = dict(conn.execute("SELECT name, value FROM bcc_counters").fetchall())
    spool = conn.execute("SELECT count(*), min(received_at) FROM spool").fetchone()
    queued = conn.execute(
        "SELECT count(*), min(created_at) FROM outbox WHERE state IN ('queued', 'held')"
    ).fetchone()
    failed = conn.execute("SELECT count(*) FROM outbox WHERE state = 'given_up'").fetchone()[0]
    last = conn.execute(
        "SELECT last_error FROM outbox WHERE last_error IS NOT NULL "
        "ORDER BY coalesce(given_up_at, next_attempt_at) DESC LIMIT 1"
    ).fetchone()

    def age(oldest: str | None) -> float | None:
        return None if oldest is None else round(max(0.0, now - to_epoch(oldest)), 1)

    refused = {
        k.removeprefix("refused."): v for k, v in counters.items() if k.startswith("refused.")
    }
    return {"submission": submission_status(counters)} | {
        "bcc": {
            "accepted": counters.get("accepted", 0),
            "refused": sum(refused.values()),
            "refused_by_reason": refused,
            "temporary_failures": counters.get("tempfail", 0),
            "spool_depth": spool[0],
            "spool_oldest_age_s": age(spool[1]),
        },
        "outbox": {
            "depth": queued[0],
            "oldest_age_s": age(queued[1]),
            "forwarded": counters.get("forwarded", 0),
            "given_up": failed,
            "last_error": last[0] if last else None,
        },
    }


def submission_status(counters: dict[str, int]) -> dict[str, Any]:
    """The submission relay's counters (``submission.*`` in ``bcc_counters``)."""
    refused = {
        k.removeprefix("submission.refused."): v
        for k, v in counters.items()
        if k.startswith("submission.refused.")
    }
    return {
        "submissions": counters.get("submission.submissions", 0),
        "relayed": counters.get("submission.relayed", 0),
        "refused": sum(refused.values()),
        "refused_by_reason": refused,
        "temporary_failures": counters.get("submission.tempfail", 0),
    }
