"""The store as its one writer holds it: the connection, its PRAGMAs, transactions and
savepoints, the batch commit and its durability, the WAL checkpoints, and which failures
are the store's own.

A ``StoreSession`` is used by one thread (the daemon's store worker, a CLI command).
The pipeline writes each batch of mail in ``batch()``: one transaction whose COMMIT
leaves its WAL fsync to the checkpoint thread (``store.walcheckpoint``), and whose every
failure of the store (disk full, locked, read-only, I/O, and the same while an
attachment's file is written) comes out as ``StoreError``. Inside it each message has a
savepoint; ``store_at_fault`` tells whether an error that undid one is the store's (the
batch is aborted and the source hands the mail over again) or the message's (it is
quarantined). Other writes (a source's own records, the daemon's heartbeat) use
``transaction()`` and commit FULL.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path

from syncd.errors import StoreError
from syncd.store import db
from syncd.store.blobs import storage_failure
from syncd.store.walcheckpoint import WalCheckpointer

log = logging.getLogger(__name__)

# What the store's functions take: code outside the store names the type from here.
Connection = sqlite3.Connection

# A page cache that holds a batch's index pages, so FTS merges stay in memory (the
# README's speed section has how the size was chosen).
CACHE_KIB = 4 * 1024
# SQLite errors that say the store, not the message, is at fault: the batch is aborted
# (StoreError) rather than the message quarantined.
STORE_FAILURES = (
    "SQLITE_FULL",
    "SQLITE_IOERR",
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_READONLY",
    "SQLITE_CANTOPEN",
    "SQLITE_NOMEM",
    "SQLITE_CORRUPT",
    "SQLITE_NOTADB",
)


def store_at_fault(exc: BaseException) -> bool:
    """The disk is failing (full, read-only, I/O), for the SQLite file or a file beside
    it: no message is to blame."""
    if isinstance(exc, sqlite3.Error):
        return (exc.sqlite_errorname or "").startswith(STORE_FAILURES)
    return isinstance(exc, OSError) and storage_failure(exc)


class StoreSession:
    """One writer's hold on the store: ``conn`` for the store's functions, transactions,
    the batch commit, per-message savepoints, and the WAL checkpoint thread."""

    def __init__(self, conn: Connection, *, owns_connection: bool = False) -> None:
        self.conn = conn
        self._owns_connection = owns_connection
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        self._checkpoints = WalCheckpointer.for_connection(conn)

    @classmethod
    def open(cls, path: str | Path) -> StoreSession:
        """Open (create, migrate) the store at ``path``; ``close`` closes it. Raises
        StoreError."""
        return cls(db.connect(path), owns_connection=True)

    def close(self) -> None:
        """Stop the checkpoint thread, checkpoint what the WAL still holds, and close the
        connection if this session opened it."""
        if self._checkpoints is not None:
            self._checkpoints.close()
            try:  # what the thread had no time for: the last commits reach the disk
                self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.ProgrammingError:  # the connection was closed first
                pass
            except sqlite3.Error as exc:
                log.warning("final WAL checkpoint failed: %s", exc)
        if self._owns_connection:
            self.conn.close()

    def __enter__(self) -> StoreSession:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def transaction(self) -> AbstractContextManager[Connection]:
        """BEGIN IMMEDIATE ... COMMIT (FULL), or ROLLBACK on any exception."""
        return db.transaction(self.conn)

    @contextmanager
    def batch(self) -> Iterator[Connection]:
        """The transaction of a batch of mail and the source's record of it. Any failure
        of the store or of a file beside it raises ``StoreError`` after the ROLLBACK (the
        writer turns every other failure into a quarantined message before it gets
        here); after the COMMIT the WAL is checkpointed on a thread, not in the next
        one."""
        try:
            with self._synced_after(), db.transaction(self.conn):
                yield self.conn
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"store write failed: {exc}") from exc
        if self._checkpoints is not None:
            self._checkpoints.poke()

    @contextmanager
    def _synced_after(self) -> Iterator[None]:
        """A transaction whose COMMIT writes the WAL but does not wait for its fsync: the
        checkpoint thread syncs it right after (``batch`` pokes it).

        Safe for a batch because it carries the source's own record of its mail (the IMAP
        checkpoint, the spool or quarantine rows it deletes): a power cut can only roll
        both back together, and the source hands the mail over again, still exactly once.
        Every other commit on the connection stays FULL, as does this one without a
        checkpoint thread, and whatever answers a sender (the spool's 250) commits FULL
        on its own connection. The fsync leaves the writer's path (the README's speed
        section has what that saves)."""
        if self._checkpoints is None or not self._checkpoints.active:
            yield
            return
        self.conn.execute("PRAGMA synchronous = NORMAL")
        try:
            yield
        finally:
            with suppress(sqlite3.Error):  # a failing store has raised what matters
                self.conn.execute("PRAGMA synchronous = FULL")

    # One message inside a batch: its writes are kept or undone as a whole.

    def forget_cached_pages(self) -> None:
        """Drop the pages this connection holds in its cache, so they are read again."""
        self.conn.execute("PRAGMA shrink_memory")

    def savepoint(self) -> None:
        self.conn.execute("SAVEPOINT message")

    def release_savepoint(self) -> None:
        self.conn.execute("RELEASE message")

    def rollback_savepoint(self) -> None:
        self.conn.execute("ROLLBACK TO message")
        self.conn.execute("RELEASE message")
