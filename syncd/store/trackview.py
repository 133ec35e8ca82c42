"""What the user sees of tracking, read from the store.

``summaries`` and ``status_of`` give the timeline its ``status`` and ``tracking`` object,
``feed`` and ``last_hit_id`` the activity feed, ``event`` the JSON a ``notify_command``
gets, ``counts`` what ``status`` and ``/metrics`` show. They work on a read-only
connection; ``store.tracking`` writes what they read.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from syncd.store.timestamps import iso
from syncd.store.tracking import StoredHit

VERDICTS = ("human", "blocked", "self", "machine", "prefetch", "scanner")


def summaries(
    conn: sqlite3.Connection, engagement_ids: Iterable[int] | None = None
) -> dict[int, dict[str, Any]]:
    """The ``tracking`` object of each tracked engagement among ``engagement_ids`` (None:
    every one), by engagement id; an engagement without a tracked message is absent.

    One grouped query for the whole set, so a timeline of thousands of engagements costs
    one pass over their hits. Opens count human opens and the opens inferred from human
    clicks (a reader with images blocked); machine hits (every other verdict) are apart.
    """
    where, args = "t.engagement_id IS NOT NULL", []
    if engagement_ids is not None:
        where = "t.engagement_id IN (SELECT value FROM json_each(?))"
        args = [json.dumps(sorted(set(engagement_ids)))]
    rows = conn.execute(
        "SELECT t.engagement_id, t.anonymous, h.kind, h.verdict, h.inferred_open, h.link_idx,"
        " l.url, count(h.id), min(h.at), max(h.at)"
        " FROM tracked_messages t LEFT JOIN tracking_hits h ON h.message_id = t.id"
        " LEFT JOIN tracked_links l ON l.message_id = t.id AND l.idx = h.link_idx"
        f" WHERE {where}"
        " GROUP BY t.id, h.kind, h.verdict, h.inferred_open, h.link_idx",
        args,
    )
    found: dict[int, dict[str, Any]] = {}
    for engagement, anonymous, kind, verdict, inferred, _idx, url, n, first, last in rows:
        item = found.setdefault(engagement, _empty_summary())
        item["anonymous"] = item["anonymous"] or bool(anonymous)
        if kind is None:  # a tracked message with no hit yet
            continue
        if verdict != "human":
            machine = item["machine"]
            machine["opens" if kind == "open" else "clicks"] += n
            machine["by_verdict"][verdict] = machine["by_verdict"].get(verdict, 0) + n
            continue
        if kind == "open" or inferred:
            _count(item["opens"], n, first, last)
        if kind == "click":
            _count(item["clicks"], n, first, last)
            links = item["clicks"]["links"]
            shown = url if url is not None else ""
            match = next((x for x in links if x["url"] == shown), None)
            if match is None:
                links.append({"url": shown, "count": n})
            else:
                match["count"] += n
    for item in found.values():
        item["clicks"]["links"].sort(key=lambda x: (-x["count"], x["url"]))
    return found


def status_of(summary: dict[str, Any] | None, stored: str | None) -> str:
    """An email's ``status``: ``clicked``, ``opened`` or ``sent`` from its human hits when
    it was tracked, else what the engagement row says, and ``untracked`` when that is
    nothing (untracked is not unopened)."""
    if summary is None:
        return stored or "untracked"
    if summary["clicks"]["count"]:
        return "clicked"
    return "opened" if summary["opens"]["count"] else "sent"


def _empty_summary() -> dict[str, Any]:
    return {
        "anonymous": False,
        "opens": {"count": 0, "first": None, "last": None},
        "clicks": {"count": 0, "first": None, "last": None, "links": []},
        "machine": {"opens": 0, "clicks": 0, "by_verdict": {}},
    }


def _count(into: dict[str, Any], n: int, first: str, last: str) -> None:
    into["count"] += n
    into["first"] = first if into["first"] is None else min(into["first"], first)
    into["last"] = last if into["last"] is None else max(into["last"], last)


_FEED_COLUMNS = (
    "SELECT h.id, h.at, h.kind, h.verdict, h.reason, h.inferred_open, t.engagement_id,"
    " t.anonymous, t.sender, e.subject, a.address,"
    " trim(c.first_name || ' ' || c.last_name) AS name, l.url"
)
# After ``h`` (a hit): its message, email, contact (never for anonymous mail) and link.
_FEED_JOINS = (
    " JOIN tracked_messages t ON t.id = h.message_id"
    " LEFT JOIN emails e ON e.engagement_id = t.engagement_id"
    " LEFT JOIN contacts c ON c.id = t.contact_id AND t.anonymous = 0"
    " LEFT JOIN contact_addresses a ON a.contact_id = c.id AND a.is_primary = 1"
    " LEFT JOIN tracked_links l ON l.message_id = t.id AND l.idx = h.link_idx"
)


def feed(
    conn: sqlite3.Connection,
    *,
    limit: int | None = 50,
    everything: bool = False,
    after: int | None = None,
) -> list[dict[str, Any]]:
    """Opens and clicks as the activity feed shows them: human ones only unless
    ``everything``. Without ``after``, the newest ``limit`` first; with it, every hit
    stored after hit id ``after`` (what a follower has not seen yet), oldest first."""
    where, args = [], []
    if not everything:
        where.append("h.verdict = 'human'")
    if after is not None:
        where.append("h.id > ?")
        args.append(after)
    sql = _FEED_COLUMNS + " FROM tracking_hits h" + _FEED_JOINS
    if where:
        sql += " WHERE " + " AND ".join(where)
    if after is None:
        sql += " ORDER BY h.at DESC, h.id DESC LIMIT ?"
        args.append(-1 if limit is None else limit)
    else:
        sql += " ORDER BY h.id"
    return [_feed_item(r) for r in conn.execute(sql, args)]


def last_hit_id(conn: sqlite3.Connection) -> int:
    """The newest hit's id (0 if none): where a follower starts."""
    return int(conn.execute("SELECT coalesce(max(id), 0) FROM tracking_hits").fetchone()[0])


def event(conn: sqlite3.Connection, hit: StoredHit) -> dict[str, Any] | None:
    """A stored hit as ``tracking.notify_command`` gets it on stdin: the feed's shape,
    without the hit's row id. None if its message is unknown."""
    row = conn.execute(
        _FEED_COLUMNS + " FROM (SELECT NULL AS id, ? AS at, ? AS kind, ? AS verdict, ? AS reason,"
        " ? AS inferred_open, ? AS link_idx, ? AS message_id) h" + _FEED_JOINS,
        (
            iso(hit.at),
            hit.kind,
            hit.verdict,
            hit.reason,
            int(hit.inferred_open),
            hit.link_idx,
            hit.message_id,
        ),
    ).fetchone()
    if row is None:
        return None
    item = _feed_item(row)
    del item["id"]
    return item


def _feed_item(row: sqlite3.Row | tuple[Any, ...]) -> dict[str, Any]:
    (hit_id, at, kind, verdict, reason, inferred, engagement, anonymous, sender, subject,
     address, name, url) = tuple(row)  # fmt: skip
    known = address is not None
    return {
        "id": hit_id,
        "at": at,
        "kind": kind,
        "who": (f"{name} <{address}>" if name else address) if known else "someone",
        "contact": address,
        "name": (name or None) if known else None,
        "anonymous": bool(anonymous),
        "subject": subject,
        "url": url,
        "engagement_id": engagement,
        "sender": sender,
        "verdict": verdict,
        "reason": reason,
        "inferred_open": bool(inferred),
    }


def counts(conn: sqlite3.Connection) -> dict[str, Any]:
    """For ``status`` and ``/metrics``: tracked messages, and hits by kind and verdict."""
    messages = conn.execute("SELECT count(*) FROM tracked_messages").fetchone()[0]
    hits_by: dict[str, dict[str, int]] = {
        "open": dict.fromkeys(VERDICTS, 0),
        "click": dict.fromkeys(VERDICTS, 0),
    }
    for kind, verdict, n in conn.execute(
        "SELECT kind, verdict, count(*) FROM tracking_hits GROUP BY kind, verdict"
    ):
        hits_by[kind][verdict] = n
    return {
        "messages": messages,
        "hits": {v: hits_by["open"][v] + hits_by["click"][v] for v in VERDICTS},
        "opens": hits_by["open"],
        "clicks": hits_by["click"],
    }
