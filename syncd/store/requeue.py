"""Which quarantined mail the daemon retries by itself, and when.

A message is quarantined for good reasons (it cannot be parsed, a rule broke on it) and,
in stores written by syncd before storage errors aborted the batch, for passing ones: a
full or read-only disk while its attachment was written. ``transient(reason)`` tells the
passing ones by their reason text; the daemon retries those with a wait that doubles
with each attempt (``retry_delay``), and leaves the rest to ``syncd quarantine retry``::

    quarantined (transient reason) --due--> retried --logged/duplicate/skipped--> released
                                                     --storage still failing--> kept, as is
                                                     --other reason--> kept (attempts + 1)
"""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime

from syncd.store.blobs import STORAGE_ERRNOS
from syncd.store.timestamps import parse

BASE_DELAY_SECONDS = 60.0
MAX_DELAY_SECONDS = 3600.0

# How storage failures read in a reason: OSError's "[Errno N] text", SQLite's messages.
_ERRNOS = {f"[Errno {n}]" for n in STORAGE_ERRNOS} | {os.strerror(n) for n in STORAGE_ERRNOS}
MARKERS = (
    *sorted(_ERRNOS),
    "database or disk is full",
    "disk I/O error",
    "attempt to write a readonly database",
    "database is locked",
)


def transient(reason: str) -> bool:
    """True when ``reason`` names a failure of the disk, not of the message."""
    return any(marker in reason for marker in MARKERS)


def retry_delay(attempts: int) -> float:
    """Seconds from the last attempt to the next automatic one."""
    return min(BASE_DELAY_SECONDS * 2 ** max(attempts - 1, 0), MAX_DELAY_SECONDS)


def due(conn: sqlite3.Connection, now: datetime, *, every: bool = False) -> list[int]:
    """Ids of quarantined mail with a transient reason whose wait is over (``every``:
    regardless of the wait, as at the daemon's start)."""
    rows = conn.execute("SELECT id, reason, attempts, quarantined_at FROM quarantine")
    return [
        row[0]
        for row in rows
        if transient(row[1])
        and (every or (now - parse(row[3])).total_seconds() >= retry_delay(row[2]))
    ]
