"""How big the store is, for ``syncd status`` and ``/metrics``.

The SQLite file with its WAL is measured on disk. The attachments are summed from the
store's own ``attachments`` rows (one file per distinct sha256 that is stored), not by
walking ``attachments_dir``: a walk of a large directory on every scrape would be slow,
and the rows say the same thing for the price of one indexed query.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path


def database_bytes(path: Path) -> int:
    """The SQLite file plus its write-ahead log (the shared-memory index is not data)."""
    total = 0
    for part in (path, path.with_name(path.name + "-wal")):
        with contextlib.suppress(FileNotFoundError):
            total += part.stat().st_size
    return total


def attachment_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the attachment files the store holds, each content counted once."""
    row = conn.execute(
        "SELECT coalesce(sum(size), 0) FROM"
        " (SELECT max(size) AS size FROM attachments WHERE stored = 1 GROUP BY sha256)"
    ).fetchone()
    return int(row[0])
