"""A consistent copy of the store while the daemon writes to it (SQLite's backup API).

The copy is taken in one step, inside one read transaction, so it is a snapshot of a
single moment even with another process committing; it is written beside the
destination and renamed into place, so a failed backup never leaves half a file.
Attachments live outside the SQLite file, are written once and never changed: copy
``attachments_dir`` with any file copier.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


def backup(conn: sqlite3.Connection, dest: Path) -> int:
    """Copy the store to ``dest`` (a file path); return the copy's size in bytes."""
    dest = Path(dest)
    if dest.is_dir():
        raise IsADirectoryError(f"{dest} is a directory; give a file name")
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    # The copy holds everyone's mail: only its owner may read it, whatever the umask.
    os.close(os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
    target = sqlite3.connect(tmp)
    try:
        conn.backup(target, pages=-1)
        # The copy is a standalone file: no WAL beside it.
        target.execute("PRAGMA journal_mode = DELETE")
    finally:
        target.close()
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, dest)
    return dest.stat().st_size
