"""Opening the SQLite store: WAL, foreign keys, numbered migrations, transactions.

Migrations are the files ``schema/NNNN_name.sql``, applied in order inside one
transaction each, with ``PRAGMA user_version`` set to NNNN. A store whose
user_version is newer than the newest migration was written by a newer syncd and
is refused rather than guessed at. One connection is used by one thread; the daemon
gives the store its own writer thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from syncd.errors import StoreDamaged, StoreError
from syncd.store.integrity import is_damage

# New stores use 16 KiB pages: most `emails` rows (their search text) and raw copies
# then fit in one page instead of spilling into overflow pages. Alternated end-to-end
# syncs of 10,000 messages ran 826 -> 919 msg/s (medians of 10, 16 KiB ahead in 8) for a
# store 9% larger. An existing store keeps its page size (changing it needs a VACUUM).
PAGE_SIZE = 16384


def _migrations() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files("syncd.store.schema").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def latest_version() -> int:
    migrations = _migrations()
    return migrations[-1][0] if migrations else 0


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open (and create or migrate, unless ``readonly``) the store at ``path``.
    Every failure to open is a StoreError with a one-line reason (StoreDamaged when
    the file is damaged)."""
    path = Path(path)
    try:
        return _connect(path, readonly)
    except (sqlite3.Error, OSError) as exc:
        if is_damage(exc):
            raise StoreDamaged(str(path), [str(exc)]) from None
        reason = getattr(exc, "strerror", None) or str(exc)
        raise StoreError(f"cannot open the store {path}: {reason}") from None


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    if readonly:
        if not path.exists():
            raise StoreError(f"no store at {path}")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 10000")
    if not readonly:
        # Takes effect only while the file is still empty (a new store); see PAGE_SIZE.
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit that acknowledges mail (a BCC 250) is on disk. A pipeline batch
        # relaxes it for its own commit (Pipeline._synced_after), then puts it back.
        conn.execute("PRAGMA synchronous = FULL")
        migrate(conn, path)
    else:
        _check_version(conn, path)
    return conn


def _check_version(conn: sqlite3.Connection, path: Path) -> int:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > latest_version():
        raise StoreError(
            f"{path} was written by a newer syncd (schema {version}, this one knows "
            f"{latest_version()}); upgrade syncd or restore a backup"
        )
    return version


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Apply every migration newer than the store's user_version, one transaction each."""
    version = _check_version(conn, path)
    for number, _name, sql in _migrations():
        if number <= version:
            continue
        with transaction(conn):
            # executescript would COMMIT on its own; run statements one by one instead.
            for statement in _split_sql(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")


def _split_sql(sql: str) -> Iterator[str]:
    buffer = ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                yield buffer
            buffer = ""
    if buffer.strip():
        yield buffer


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def select_in(
    conn: sqlite3.Connection, sql: str, values: Sequence[Any], params: Sequence[Any] = ()
) -> Iterator[Any]:
    """Rows of ``sql`` whose ``IN ({marks})`` takes ``values`` (after ``params``), asked in
    slices of 500: a list of recipients or keys may be longer than SQLite allows bound
    variables in one statement."""
    for start in range(0, len(values), 500):
        chunk = values[start : start + 500]
        sql_chunk = sql.format(marks=",".join("?" * len(chunk)))
        yield from conn.execute(sql_chunk, [*params, *chunk])
