"""Threads in the store: the key a new email is written with, one thread's emails, and a
timeline folded by thread.

``mail/threads.py`` computes a key from one message (its Gmail thread id, References,
In-Reply-To, else its normalised subject within its participants). Two things need the
store: a reply whose key names its root's Message-ID takes the thread key the root was
stored with (a root keyed by Gmail's id or by its subject), and replies logged before
their root take the root's key when it comes (``adopt_replies``). Both are one indexed
statement per new email, on the write path (``mailwriter``).

The rest reads: ``thread`` lists a thread's emails oldest first, ``fold`` turns a
timeline (as ``queries.timeline`` returns it, whatever its order) into one entry per
thread with a count.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from syncd.mail.provenance import Provenance
from syncd.mail.threads import names_a_message, thread_key
from syncd.store import items, queries

if TYPE_CHECKING:
    from syncd.mail.parse import Email


def trusted_gm_thrid(email: Email, provenance: Provenance) -> str | None:
    """Gmail's thread id when Gmail gave it: its IMAP X-GM-THRID (``provenance``), or the
    X-GM-THRID header of a Google Takeout mbox (``import``). In mail from anywhere else the
    header is just text a sender wrote, and would let them join any thread."""
    if provenance.gm_thrid:
        return provenance.gm_thrid
    return email.gm_thrid if provenance.source == "import" else None


def key_for(
    conn: sqlite3.Connection, email: Email, provenance: Provenance, participants: Iterable[str]
) -> str:
    """The thread key to store a new ``email`` with. ``participants`` are the rules'
    (outside the team); only those on From, To or Cc count for the subject fallback, since
    Bcc is on the sender's copy alone."""
    gm_thrid = trusted_gm_thrid(email, provenance)
    people: list[str] = []
    if not (gm_thrid or email.in_reply_to or any(email.references)):
        # Only mail without reply headers is keyed by subject and people.
        visible = {a.email for a in (email.from_, *email.to, *email.cc) if a is not None}
        people = [p for p in participants if p in visible]
    key = thread_key(
        email.key, email.in_reply_to, email.references, gm_thrid, email.subject, people
    )
    if not names_a_message(key, email.key):
        return key
    row = conn.execute("SELECT thread_key FROM emails WHERE message_key = ?", (key,)).fetchone()
    return row[0] if row is not None and row[0] else key


def adopt_replies(conn: sqlite3.Connection, email: Email, key: str) -> None:
    """Replies logged before ``email`` whose key is its Message-ID join its thread ``key``."""
    if email.message_id and key != email.key:
        conn.execute("UPDATE emails SET thread_key = ? WHERE thread_key = ?", (key, email.key))


def thread_of(conn: sqlite3.Connection, engagement_id: int) -> list[int]:
    """The engagement ids of the email's thread, oldest first ([] when it is no email)."""
    row = conn.execute(
        "SELECT thread_key FROM emails WHERE engagement_id = ?", (engagement_id,)
    ).fetchone()
    if row is None:
        return []
    if not row[0]:
        return [engagement_id]
    return [
        r[0]
        for r in conn.execute(
            "SELECT e.engagement_id FROM emails e JOIN engagements g ON g.id = e.engagement_id "
            "WHERE e.thread_key = ? ORDER BY g.occurred_at, g.id",
            (row[0],),
        )
    ]


def thread(conn: sqlite3.Connection, engagement_id: int) -> list[dict[str, Any]]:
    """The email's thread as timeline items, oldest first ([] when it is no email)."""
    ids = thread_of(conn, engagement_id)
    if not ids:
        return []
    members = items.listed(ids)
    rows = {
        r[0]: r
        for r in conn.execute(f"{items.ITEM_SQL} WHERE g.id IN ({members.sql})", members.args)
    }
    return items.shaped(conn, [rows[i] for i in ids if i in rows], members)


def fold(timeline: Sequence[dict[str, Any]], keys: Mapping[int, str]) -> list[dict[str, Any]]:
    """One entry per thread, ``{"count", "ids", "latest", "pinned"}``, where the thread's
    first item stands in ``timeline`` (so a timeline's order, pins first, holds). ``latest``
    is the thread's newest item, ``ids`` its items' ids newest first, ``pinned`` whether
    any of them is. Notes, calls and emails without a key are threads of their own."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for item in timeline:
        key = keys.get(item["id"])
        groups.setdefault(("thread", key) if key else ("item", item["id"]), []).append(item)
    folded = []
    for members in groups.values():
        if len(members) > 1:
            members = sorted(members, key=lambda i: (i["date"] or "", i["id"]), reverse=True)
        folded.append(
            {
                "count": len(members),
                "ids": [i["id"] for i in members],
                "latest": members[0],
                "pinned": any(i.get("pinned") for i in members),
            }
        )
    return folded


def folded_timeline(conn: sqlite3.Connection, address: str) -> list[dict[str, Any]] | None:
    """The contact's timeline with each thread folded (``fold``); None if no contact has
    ``address``. The thread keys come with the timeline's rows: no statement of their
    own."""
    contact_id = queries.contact_of(conn, address)
    if contact_id is None:
        return None
    rows, ids = queries.timeline_rows(conn, *queries.record_engagements("contact", contact_id))
    return fold(items.shaped(conn, rows, ids), items.thread_keys(rows))
