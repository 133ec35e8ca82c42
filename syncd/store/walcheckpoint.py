"""WAL checkpoints on a thread of their own, off the pipeline writer's commit path.

SQLite's automatic checkpoint runs inside the COMMIT of whichever connection pushes the
WAL past 1,000 pages: on a bulk sync that is the pipeline's writer, which then copies
the WAL into the database file and fsyncs it while every other stage waits for it.
``WalCheckpointer``
takes that work to a thread with its own connection: the writer's connection raises
its automatic threshold to ``FALLBACK_PAGES`` (a bound on the WAL should the thread
fall behind) and pokes the thread after each commit; the thread runs a PASSIVE
checkpoint, which takes no lock a writer needs and copies only frames already
committed. Pokes that arrive while a checkpoint runs fold into one more. After each
checkpoint the thread also fdatasyncs the WAL file: a writer that commits with
``synchronous=NORMAL`` (the pipeline's batches) leaves that fsync to it, and a PASSIVE
checkpoint syncs the WAL only when it copies frames, which a reader's open snapshot can
prevent.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

# 4,096 pages (64 MiB with the 16 KiB pages of new stores, 16 MiB with 4 KiB ones): the
# writer checkpoints itself only if this thread falls behind.
FALLBACK_PAGES = 4096


class WalCheckpointer:
    """Checkpoints the WAL of the database at ``path`` whenever ``poke`` is called.

    The thread starts at the first poke and ends after ``IDLE_SECONDS`` without one, so
    a pipeline nobody closes leaves no thread or connection behind for long; ``close``
    waits for every thread it started, one that is just ending included. If the thread
    cannot open the database, checkpoints stay with the writer from then on."""

    IDLE_SECONDS = 5.0

    def __init__(self, path: Path) -> None:
        self._path = path
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._serving: threading.Thread | None = None  # the thread that takes pokes
        self._started: list[threading.Thread] = []
        self._stopping = False
        self._disabled = False
        self._unsynced = False  # the WAL could not be synced here

    @classmethod
    def for_connection(cls, conn: sqlite3.Connection) -> WalCheckpointer | None:
        """A checkpointer for ``conn``'s database file, after moving ``conn``'s own
        automatic checkpoint to ``FALLBACK_PAGES``; None for a database not in WAL mode
        or without a file (nothing to do)."""
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        path = conn.execute("PRAGMA database_list").fetchone()[2]
        if str(mode).lower() != "wal" or not path:
            return None
        conn.execute(f"PRAGMA wal_autocheckpoint = {FALLBACK_PAGES}")
        return cls(Path(path))

    @property
    def active(self) -> bool:
        """True while pokes are served: a commit may leave its WAL fsync to the thread."""
        return not (self._stopping or self._disabled or self._unsynced)

    def poke(self) -> None:
        """A transaction committed: checkpoint what it wrote, soon, on the thread."""
        with self._lock:
            if self._stopping or self._disabled:
                return
            self._wake.set()
            if self._serving is None:
                thread = threading.Thread(
                    target=self._run, name=f"wal-checkpoint:{self._path}", daemon=True
                )
                self._started = [t for t in self._started if t.is_alive()] + [thread]
                self._serving = thread
                thread.start()

    def close(self) -> None:
        """Stop the thread after the checkpoint it may be running."""
        with self._lock:
            self._stopping = True
            self._wake.set()
            started = list(self._started)
        for thread in started:
            thread.join()

    def _sync_wal(self) -> None:
        try:
            fd = os.open(f"{self._path}-wal", os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
        except FileNotFoundError:  # no WAL: nothing committed is waiting for a sync
            pass
        except OSError as exc:  # writers sync their own commits from now on
            log.warning("cannot sync the WAL, commits sync it themselves: %s", exc)
            self._unsynced = True

    def _idle(self) -> bool:
        """Wait for a poke; True (and no longer serving) when none came in time."""
        if self._wake.wait(self.IDLE_SECONDS):
            return False
        with self._lock:
            if self._wake.is_set():  # poked just now: go on
                return False
            self._serving = None
            return True

    def _run(self) -> None:
        try:
            try:
                # mode=rw: never create the store; it exists while a pipeline uses it.
                conn = sqlite3.connect(
                    f"{self._path.resolve().as_uri()}?mode=rw", uri=True, check_same_thread=False
                )
            except sqlite3.Error as exc:
                log.warning("WAL checkpoints stay with the writer: %s", exc)
                self._disabled = True
                return
            try:
                conn.execute("PRAGMA busy_timeout = 1000")
                conn.execute("PRAGMA synchronous = FULL")
                while not self._idle():
                    self._wake.clear()
                    if self._stopping:
                        return
                    try:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    except sqlite3.Error as exc:  # the writer's fallback bounds the WAL
                        log.warning("WAL checkpoint failed: %s", exc)
                    self._sync_wal()
            finally:
                conn.close()
        finally:
            with self._lock:
                if self._serving is threading.current_thread():
                    self._serving = None
