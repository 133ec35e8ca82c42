"""Opening the SQLite store: WAL, foreign keys, numbered migrations, transactions.

Migrations are the files ``schema/NNNN_name.sql``, applied in order inside one
transaction each, with ``PRAGMA user_version`` set to NNNN. A store whose
user_version is newer than the newest migration was written by a newer syncd and
is refused rather than guessed at. One connection is used by one thread; the daemon
gives the store its own writer thread.
"""

from __future__ import annotations

import errno
import os
import pwd
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from syncd.errors import StoreDamaged, StoreDenied, StoreError

# New stores use 16 KiB pages: most `emails` rows (their search text) and raw copies
# then fit in one page instead of spilling into overflow pages, which syncs faster for a
# slightly larger store (figures in the README). An existing store keeps its page size
# (changing it needs a VACUUM).
PAGE_SIZE = 16384

# A read-only open never migrates (an older CLI must not change the daemon's store). A
# store at an older schema is then most often one the daemon is upgrading right now, a
# migration per commit, so the reader waits this long for it before giving up.
UPGRADE_WAIT = 5.0


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
        raise store_error(exc, path, readonly=readonly) from None


# SQLite's primary result codes that waiting will not mend.
_SQLITE_DENIED = {3, 8, 23}  # SQLITE_PERM, SQLITE_READONLY, SQLITE_AUTH
_SQLITE_DAMAGED = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_SQLITE_CANTOPEN = 14
_OS_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


def error_kind(exc: BaseException | None) -> type[StoreError]:
    """``StoreDenied``, ``StoreDamaged`` or (worth a retry) ``StoreError`` for an sqlite3
    or OS error met on the store."""
    if isinstance(exc, OSError):
        return StoreDenied if exc.errno in _OS_DENIED else StoreError
    if isinstance(exc, sqlite3.Error):
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        if code in _SQLITE_DAMAGED:
            return StoreDamaged
        if code in _SQLITE_DENIED:
            return StoreDenied
    return StoreError


def store_error(
    exc: sqlite3.Error | OSError, path: Path, *, readonly: bool = False, doing: str = "open"
) -> StoreError:
    """The one-line error for a failure to ``doing`` the store at ``path``, of its
    ``error_kind``; one that SQLite calls "unable to open" names what this user may not
    do (the file or the directory) when that is why."""
    kind = error_kind(exc)
    if isinstance(exc, OSError):
        where = exc.filename or path
        return kind(f"cannot {doing} the store {path}: {where}: {exc.strerror or exc}")
    if kind is StoreDamaged:
        return StoreDamaged.found(str(path), [str(exc)])
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    denied = (
        not_permitted(path, readonly=readonly)
        if code in (*_SQLITE_DENIED, _SQLITE_CANTOPEN)
        else None
    )
    if denied is not None:
        return StoreDenied(f"cannot {doing} the store {path}: {denied}")
    return kind(f"cannot {doing} the store {path}: {exc}")


def not_permitted(path: Path, *, readonly: bool = False) -> str | None:
    """What this user may not do that opening the store at ``path`` needs, or None.
    SQLite says only "unable to open database file"; the file system can say which."""
    user = _user()
    if readonly:
        if path.exists() and not os.access(path, os.R_OK):
            return f"{path} is not readable by {user}"
        return None
    directory = path.parent
    if not os.access(directory, os.W_OK | os.X_OK):
        # The store's -wal and -shm files live beside it.
        return f"the directory {directory} is not writable by {user}"
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return f"{path} is not readable and writable by {user}"
    return None


def _user() -> str:
    uid = os.geteuid()
    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:  # a uid with no passwd entry (a container, DynamicUser=)
        return f"uid {uid}"


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
        # FULL: a commit that acknowledges mail (a BCC 250) is on disk. A batch of mail
        # relaxes it for its own commit (StoreSession.batch), then puts it back.
        conn.execute("PRAGMA synchronous = FULL")
        migrate(conn, path)
    else:
        try:
            _wait_for_upgrade(conn, path)
        except BaseException:
            conn.close()
            raise
    return conn


def _wait_for_upgrade(conn: sqlite3.Connection, path: Path) -> None:
    deadline = time.monotonic() + UPGRADE_WAIT
    while (version := _check_version(conn, path)) < latest_version():
        if time.monotonic() >= deadline:
            raise StoreError(
                f"{path} is at schema {version} and this syncd needs {latest_version()}; "
                "the daemon of this version upgrades it when it starts (restart syncd)"
            )
        time.sleep(0.02)


def _check_version(conn: sqlite3.Connection, path: Path) -> int:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > latest_version():
        raise StoreDamaged(
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
