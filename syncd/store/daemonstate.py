"""The daemon's heartbeat row: what ``syncd status`` shows about a running daemon.

The daemon rewrites one row every few seconds with its state and counters; ``status``
reads it from another process. A row whose ``updated_at`` is older than a few
heartbeats, or whose pid is gone, means the daemon is not running.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from syncd.store.timestamps import now_iso

HEARTBEAT_SECONDS = 5.0  # how often the daemon rewrites its row


def save(
    conn: sqlite3.Connection, pid: int, started_at: str, state: str, detail: dict[str, Any]
) -> None:
    conn.execute(
        "INSERT INTO daemon_state (id, pid, started_at, updated_at, state, detail)"
        " VALUES (1, ?, ?, ?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, started_at = excluded.started_at,"
        " updated_at = excluded.updated_at, state = excluded.state, detail = excluded.detail",
        (pid, started_at, now_iso(), state, json.dumps(detail, sort_keys=True)),
    )


def load(conn: sqlite3.Connection) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT pid, started_at, updated_at, state, detail FROM daemon_state WHERE id = 1"
    ).fetchone()
    if row is None:
        return None
    return {
        "pid": row["pid"],
        "started_at": row["started_at"],
        "updated_at": row["updated_at"],
        "state": row["state"],
        **json.loads(row["detail"]),
    }
