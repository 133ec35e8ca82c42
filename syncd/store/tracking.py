"""Tracked mail in the store: each relayed message's link destinations, its hits and
their verdicts, and the addresses members submit from.

The submission relay writes a ``TrackedMessage`` in the transaction that logs the mail
(``record_message``, then ``attach_engagement`` once the pipeline has its engagement);
the tracking endpoint reads a link's destination (``link_url``) and what the verdict
rules need (``context``), and writes hits in batches (``record_hits``). Every function
runs inside the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from syncd.store.timestamps import iso, parse


@dataclass(frozen=True, slots=True)
class TrackedMessage:
    """A message relayed with tracking: its token id, links and who it was tracked for."""

    id: int
    message_key: str
    sender: str
    relayed_at: datetime
    links: tuple[str, ...] = ()
    contact_id: int | None = None
    anonymous: bool = False


@dataclass(frozen=True, slots=True)
class StoredHit:
    """One open or click as the store keeps it."""

    message_id: int
    kind: str  # "open" | "click"
    at: datetime
    ip: str
    user_agent: str
    verdict: str
    link_idx: int | None = None
    inferred_open: bool = False
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Context:
    """What the verdict rules need to know of a tracked message."""

    message_id: int
    sender: str
    relayed_at: datetime
    sender_ips: frozenset[str]
    hits: tuple[StoredHit, ...]


def record_message(conn: sqlite3.Connection, message: TrackedMessage) -> bool:
    """Keep a relayed message's links; False if it was recorded before (a resend)."""
    cursor = conn.execute(
        "INSERT OR IGNORE INTO tracked_messages"
        " (id, message_key, sender, contact_id, anonymous, relayed_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            message.id,
            message.message_key,
            message.sender,
            message.contact_id,
            int(message.anonymous),
            iso(message.relayed_at),
        ),
    )
    if cursor.rowcount != 1:
        return False
    conn.executemany(
        "INSERT INTO tracked_links (message_id, idx, url) VALUES (?, ?, ?)",
        [(message.id, index, url) for index, url in enumerate(message.links)],
    )
    return True


def attach_engagement(conn: sqlite3.Connection, message_key: str) -> None:
    """Point a tracked message at the engagement its mail was logged as."""
    conn.execute(
        "UPDATE tracked_messages SET engagement_id ="
        " (SELECT engagement_id FROM emails WHERE message_key = ?) WHERE message_key = ?",
        (message_key, message_key),
    )


def link_url(conn: sqlite3.Connection, message_id: int, index: int) -> str | None:
    """The stored destination of a message's link, or None."""
    row = conn.execute(
        "SELECT url FROM tracked_links WHERE message_id = ? AND idx = ?", (message_id, index)
    ).fetchone()
    return str(row[0]) if row else None


def remember_submitter(conn: sqlite3.Connection, member: str, ip: str, at: datetime) -> None:
    """Note that ``member`` submitted from ``ip`` (for the ``self`` verdict)."""
    conn.execute(
        "INSERT INTO submitter_ips (member, ip, last_seen) VALUES (?, ?, ?)"
        " ON CONFLICT (member, ip) DO UPDATE SET last_seen = excluded.last_seen",
        (member, ip, iso(at)),
    )


def context(conn: sqlite3.Connection, message_id: int, since: datetime) -> Context | None:
    """A tracked message, its hits so far and its sender's addresses seen after ``since``."""
    row = conn.execute(
        "SELECT sender, relayed_at FROM tracked_messages WHERE id = ?", (message_id,)
    ).fetchone()
    if row is None:
        return None
    ips = frozenset(
        r[0]
        for r in conn.execute(
            "SELECT ip FROM submitter_ips WHERE member = ? AND last_seen >= ?",
            (row[0], iso(since)),
        )
    )
    return Context(message_id, row[0], parse(row[1]), ips, tuple(hits(conn, message_id)))


def hits(conn: sqlite3.Connection, message_id: int) -> list[StoredHit]:
    """A message's hits, oldest first."""
    return [
        StoredHit(
            message_id,
            r[0],
            parse(r[1]),
            r[2],
            r[3],
            r[4],
            r[5],
            bool(r[6]),
            r[7],
        )
        for r in conn.execute(
            "SELECT kind, at, ip, user_agent, verdict, link_idx, inferred_open, reason"
            " FROM tracking_hits WHERE message_id = ? ORDER BY at, id",
            (message_id,),
        )
    ]


def record_hits(conn: sqlite3.Connection, batch: Iterable[StoredHit]) -> int:
    """Store hits whose message is known; how many were stored."""
    stored = 0
    for hit in batch:
        cursor = conn.execute(
            "INSERT INTO tracking_hits"
            " (message_id, kind, link_idx, at, ip, user_agent, verdict, inferred_open, reason)"
            " SELECT ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS"
            " (SELECT 1 FROM tracked_messages WHERE id = ?)",
            (
                hit.message_id,
                hit.kind,
                hit.link_idx,
                iso(hit.at),
                hit.ip,
                hit.user_agent,
                hit.verdict,
                int(hit.inferred_open),
                hit.reason,
                hit.message_id,
            ),
        )
        stored += cursor.rowcount
    return stored


def set_verdicts(
    conn: sqlite3.Connection, message_id: int, verdicts: Sequence[tuple[str, bool, str]]
) -> None:
    """Re-judged verdicts (verdict, inferred open, reason) for a message's hits, in the
    order ``hits`` returns them."""
    ids = [
        r[0]
        for r in conn.execute(
            "SELECT id FROM tracking_hits WHERE message_id = ? ORDER BY at, id", (message_id,)
        )
    ]
    conn.executemany(
        "UPDATE tracking_hits SET verdict = ?, inferred_open = ?, reason = ? WHERE id = ?",
        [(v, int(i), r, hit_id) for hit_id, (v, i, r) in zip(ids, verdicts, strict=True)],
    )


def update_status(conn: sqlite3.Connection, message_id: int) -> str | None:
    """Set the status of a tracked message's engagement from its human hits: ``clicked``
    after a human click, ``opened`` after a human (or inferred) open, else ``sent``.

    Only human hits count, and the status is recomputed rather than raised, so hits
    re-judged as a scanner's take back what they wrongly gave. Returns the status, or
    None when the message has no engagement (yet).
    """
    row = conn.execute(
        "SELECT engagement_id FROM tracked_messages WHERE id = ?", (message_id,)
    ).fetchone()
    if row is None or row[0] is None:
        return None
    clicked, opened = conn.execute(
        "SELECT coalesce(max(h.kind = 'click'), 0),"
        " coalesce(max(h.kind = 'open' OR h.inferred_open), 0)"
        " FROM tracking_hits h JOIN tracked_messages m ON m.id = h.message_id"
        " WHERE m.engagement_id = ? AND h.verdict = 'human'",
        (row[0],),
    ).fetchone()
    status = "clicked" if clicked else "opened" if opened else "sent"
    conn.execute(
        "UPDATE engagements SET status = ? WHERE id = ? AND status IS NOT ?",
        (status, row[0], status),
    )
    return status


def hit_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Stored hits by verdict (for ``status`` and ``/metrics``)."""
    return {
        str(r[0]): int(r[1])
        for r in conn.execute("SELECT verdict, count(*) FROM tracking_hits GROUP BY verdict")
    }


@dataclass(frozen=True, slots=True)
class Recent:
    """What judging a new hit needs, without loading every hit of the message: whether a
    human (or inferred) open was seen, and the clicks since ``clicks_since``."""

    message_id: int
    sender: str
    relayed_at: datetime
    sender_ips: frozenset[str]
    human_open: StoredHit | None
    clicks: tuple[StoredHit, ...]
    engagement_id: int | None = None


_HIT_COLUMNS = "kind, at, ip, user_agent, verdict, link_idx, inferred_open, reason"


def _stored(message_id: int, r: Sequence[object]) -> StoredHit:
    return StoredHit(
        message_id,
        str(r[0]),
        parse(str(r[1])),
        str(r[2]),
        str(r[3]),
        str(r[4]),
        r[5] if r[5] is None else int(str(r[5])),
        bool(r[6]),
        str(r[7]),
    )


def sender_ips(conn: sqlite3.Connection, member: str, since: datetime) -> frozenset[str]:
    """The addresses ``member`` submitted from after ``since``."""
    return frozenset(
        r[0]
        for r in conn.execute(
            "SELECT ip FROM submitter_ips WHERE member = ? AND last_seen >= ?",
            (member, iso(since)),
        )
    )


def recent(
    conn: sqlite3.Connection,
    message_id: int,
    since: datetime,
    clicks_since: datetime,
    ips_of: dict[str, frozenset[str]] | None = None,
) -> Recent | None:
    """A tracked message as the verdict rules see a new hit of it (the sender's addresses
    seen after ``since``); None if the message is not tracked. ``ips_of`` caches the
    senders' addresses across calls (one batch of hits)."""
    row = conn.execute(
        "SELECT sender, relayed_at, engagement_id FROM tracked_messages WHERE id = ?",
        (message_id,),
    ).fetchone()
    if row is None:
        return None
    ips_of = {} if ips_of is None else ips_of
    if row[0] not in ips_of:
        ips_of[row[0]] = sender_ips(conn, row[0], since)
    # One read: the clicks of the burst window and the human (or inferred) opens.
    hits = [
        _stored(message_id, r)
        for r in conn.execute(
            f"SELECT {_HIT_COLUMNS} FROM tracking_hits WHERE message_id = ? AND"
            " ((kind = 'click' AND at >= ?)"
            " OR (verdict = 'human' AND (kind = 'open' OR inferred_open)))"
            " ORDER BY at, id",
            (message_id, iso(clicks_since)),
        )
    ]
    opened = next(
        (h for h in hits if h.verdict == "human" and (h.kind == "open" or h.inferred_open)),
        None,
    )
    clicks = tuple(
        h for h in hits if h.kind == "click" and h.at >= clicks_since.replace(microsecond=0)
    )
    return Recent(message_id, row[0], parse(row[1]), ips_of[row[0]], opened, clicks, row[2])


def raise_status(conn: sqlite3.Connection, engagement_id: int, status: str) -> None:
    """Move an engagement up to ``status`` (``opened`` or ``clicked``), never down: for
    a human hit judged as it came. ``update_status`` recomputes after a re-judge."""
    below = ("sent", "opened") if status == "clicked" else ("sent",)
    conn.execute(
        f"UPDATE engagements SET status = ? WHERE id = ?"
        f" AND (status IS NULL OR status IN ({', '.join('?' * len(below))}))",
        (status, engagement_id, *below),
    )


def link_urls(conn: sqlite3.Connection, message_id: int) -> tuple[str, ...] | None:
    """Every stored destination of a message, by index (the endpoint caches them per
    message); None if the message is not tracked."""
    urls = conn.execute(
        "SELECT idx, url FROM tracked_links WHERE message_id = ? ORDER BY idx", (message_id,)
    ).fetchall()
    if not urls:
        exists = conn.execute("SELECT 1 FROM tracked_messages WHERE id = ?", (message_id,))
        return () if exists.fetchone() else None
    # Indexes are dense from 0 (record_message enumerates); a gap would be a bug, so a
    # missing index yields no destination rather than a wrong one.
    if [r[0] for r in urls] != list(range(len(urls))):
        return ()
    return tuple(str(r[1]) for r in urls)
