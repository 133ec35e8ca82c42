"""The store session: which failures are the store's, savepoints, and the batch commit."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator

import pytest

from syncd.errors import StoreError
from syncd.store.session import StoreSession, store_at_fault


def sqlite_error(
    name: str | None, cls: type[sqlite3.Error] = sqlite3.OperationalError
) -> Exception:
    exc = cls("boom")
    exc.sqlite_errorname = name  # type: ignore[attr-defined]
    return exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (sqlite_error("SQLITE_FULL"), True),
        (sqlite_error("SQLITE_IOERR_WRITE"), True),  # extended codes share the prefix
        (sqlite_error("SQLITE_BUSY"), True),
        (sqlite_error("SQLITE_LOCKED_SHAREDCACHE"), True),
        (sqlite_error("SQLITE_READONLY"), True),
        (sqlite_error("SQLITE_CANTOPEN"), True),
        (sqlite_error("SQLITE_NOMEM"), True),
        (sqlite_error("SQLITE_CORRUPT", sqlite3.DatabaseError), True),
        (sqlite_error("SQLITE_NOTADB", sqlite3.DatabaseError), True),
        (sqlite_error("SQLITE_CONSTRAINT_UNIQUE", sqlite3.IntegrityError), False),
        (sqlite_error("SQLITE_ERROR"), False),
        (sqlite_error("SQLITE_TOOBIG", sqlite3.DataError), False),
        (sqlite_error(None), False),
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (OSError(errno.EROFS, "Read-only file system"), True),
        (OSError(errno.EIO, "Input/output error"), True),
        (OSError(errno.ENOENT, "No such file or directory"), False),
        (ValueError("attachment digest is not a sha256 hex string"), False),
        (RuntimeError("a bug"), False),
    ],
)
def test_store_at_fault(exc: Exception, expected: bool) -> None:
    assert store_at_fault(exc) is expected


@pytest.fixture
def session() -> Iterator[StoreSession]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (x INTEGER UNIQUE)")
    with StoreSession(conn, owns_connection=True) as held:
        yield held


def rows(session: StoreSession) -> list[int]:
    return [r[0] for r in session.conn.execute("SELECT x FROM t ORDER BY x")]


def test_a_message_savepoint_is_kept_or_undone_alone(session: StoreSession) -> None:
    with session.batch() as conn:
        for x in (1, 2, 1, 3):
            session.savepoint()
            try:
                conn.execute("INSERT INTO t VALUES (?)", (x,))
            except sqlite3.IntegrityError:
                session.rollback_savepoint()
            else:
                session.release_savepoint()
    assert rows(session) == [1, 2, 3]


@pytest.mark.parametrize(
    "exc", [sqlite_error("SQLITE_FULL"), OSError(errno.ENOSPC, "No space left on device")]
)
def test_a_failing_store_rolls_the_batch_back_as_a_store_error(
    session: StoreSession, exc: Exception
) -> None:
    with pytest.raises(StoreError, match="store write failed"), session.batch() as conn:
        conn.execute("INSERT INTO t VALUES (1)")
        raise exc
    assert rows(session) == [] and not session.conn.in_transaction


def test_other_failures_pass_through_the_batch_unchanged(session: StoreSession) -> None:
    with pytest.raises(KeyError), session.batch() as conn:
        conn.execute("INSERT INTO t VALUES (1)")
        raise KeyError("x")
    assert rows(session) == []


def test_a_session_closes_only_a_connection_it_opened() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    StoreSession(conn).close()
    assert conn.execute("SELECT 1").fetchone() == (1,)
    StoreSession(conn, owns_connection=True).close()
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")
