"""Tombstones of removed emails: what keeps an email a person removed from the timeline
from being logged again when it comes back (a sync, a UIDVALIDITY rescan, BCC, an
import).

A tombstone is the SHA-256 of the message key, never the key: a Message-ID often holds
an address, and an erase must leave no byte of one in the store. A hash cannot be read
back; it only answers "was this email removed?" for someone who has the email.
Every function runs inside the caller's transaction.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable

from syncd.store.db import select_in
from syncd.store.timestamps import now_iso

REMOVED = "removed from the timeline"


def key_hash(message_key: str) -> str:
    """The tombstone of ``message_key``: its SHA-256 in hex. Keys are text that may hold
    any code point a header decoded to; surrogatepass makes every one hash."""
    return hashlib.sha256(message_key.encode("utf-8", "surrogatepass")).hexdigest()


def bury(conn: sqlite3.Connection, message_key: str) -> None:
    """Record that the email with ``message_key`` was removed."""
    conn.execute(
        "INSERT OR IGNORE INTO removed_emails(key_hash, removed_at) VALUES (?, ?)",
        (key_hash(message_key), now_iso()),
    )


def any_removed(conn: sqlite3.Connection) -> bool:
    """Whether any email was ever removed: most stores have no tombstone, and then the
    write path asks nothing per message."""
    return conn.execute("SELECT 1 FROM removed_emails LIMIT 1").fetchone() is not None


def is_removed(conn: sqlite3.Connection, message_key: str) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM removed_emails WHERE key_hash = ?", (key_hash(message_key),)
        ).fetchone()
        is not None
    )


def removed_keys(conn: sqlite3.Connection, keys: Iterable[str]) -> set[str]:
    """Those of ``keys`` (message keys) whose email was removed."""
    by_hash = {key_hash(k): k for k in keys}
    if not by_hash or not any_removed(conn):
        return set()
    sql = "SELECT key_hash FROM removed_emails WHERE key_hash IN ({marks})"
    return {by_hash[row[0]] for row in select_in(conn, sql, sorted(by_hash))}
