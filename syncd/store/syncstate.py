"""IMAP sync state in the store: per-folder checkpoints and per-inbox health.

A checkpoint (``FolderCursor``, the store's own record; the IMAP service turns it into
the sync plan's ``FolderCheckpoint`` and back) is written by ``save_checkpoint`` inside
the caller's transaction, the same one that writes the mail it
covers (the pipeline's ``on_commit``), so a sync killed at any instant resumes with no gap
and no duplicate. ``record_pass`` stores what a pass reported (counts, folder errors, the
inbox state ok / failed / auth_failed), ``record_inbox_error`` an error met while a pass
goes on, ``record_next_retry`` when the daemon will try a failed inbox again;
``status_rows`` gives ``syncd status`` its inboxes.
Only this module reads or writes the ``sync_folders`` and ``sync_inboxes`` tables.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from syncd.store.timestamps import iso, parse

COUNT_COLUMNS = ("logged", "duplicates", "skipped", "quarantined")
STATES = ("ok", "failed", "auth_failed")


def _now(now: datetime | None = None) -> str:
    return iso(now or datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class FolderCursor:
    """One ``sync_folders`` cursor as stored."""

    inbox: str
    folder: str
    uidvalidity: int
    last_uid: int = 0
    highestmodseq: int | None = None
    initial_done: bool = False
    initial_started: datetime | None = None
    stuck_uid: int = 0
    stuck_passes: int = 0


def get_checkpoint(conn: sqlite3.Connection, inbox: str, folder: str) -> FolderCursor | None:
    row = conn.execute(
        "SELECT uidvalidity, last_uid, highestmodseq, initial_done, initial_started,"
        " stuck_uid, stuck_passes FROM sync_folders WHERE inbox = ? AND folder = ?",
        (inbox, folder),
    ).fetchone()
    if row is None:
        return None
    started = parse(row[4]) if row[4] else None
    return FolderCursor(
        inbox, folder, row[0], row[1], row[2], bool(row[3]), started, row[5], row[6]
    )


def save_checkpoint(conn: sqlite3.Connection, checkpoint: FolderCursor) -> None:
    """Upsert the cursor. Run it inside the transaction that writes the covered mail."""
    cp = checkpoint
    started = iso(cp.initial_started) if cp.initial_started else None
    conn.execute(
        "INSERT INTO sync_folders (inbox, folder, uidvalidity, last_uid, highestmodseq,"
        " initial_done, initial_started, stuck_uid, stuck_passes, last_sync, last_error)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)"
        " ON CONFLICT (inbox, folder) DO UPDATE SET uidvalidity = excluded.uidvalidity,"
        " last_uid = excluded.last_uid, highestmodseq = excluded.highestmodseq,"
        " initial_done = excluded.initial_done, initial_started = excluded.initial_started,"
        " stuck_uid = excluded.stuck_uid, stuck_passes = excluded.stuck_passes,"
        " last_sync = excluded.last_sync, last_error = NULL",
        (cp.inbox, cp.folder, cp.uidvalidity, cp.last_uid, cp.highestmodseq,
         int(cp.initial_done), started, cp.stuck_uid, cp.stuck_passes, _now()),
    )  # fmt: skip


def add_counts(
    conn: sqlite3.Connection, inbox: str, folder: str, counts: Mapping[str, int]
) -> None:
    """Add a pass's outcome counts to a folder's totals (the folder row must exist or is
    created without a cursor, which only happens for a folder that never committed)."""
    values = [int(counts.get(c, 0)) for c in COUNT_COLUMNS]
    if not any(values):
        return
    conn.execute(
        "UPDATE sync_folders SET logged = logged + ?, duplicates = duplicates + ?,"
        " skipped = skipped + ?, quarantined = quarantined + ? WHERE inbox = ? AND folder = ?",
        (*values, inbox, folder),
    )


def record_folder_error(
    conn: sqlite3.Connection, inbox: str, folder: str, error: str | None
) -> None:
    """Set (or with None clear) a folder's last error; a folder with no cursor has no row,
    and its error shows in the inbox's."""
    conn.execute(
        "UPDATE sync_folders SET last_error = ? WHERE inbox = ? AND folder = ?",
        (error, inbox, folder),
    )


def record_inbox_state(
    conn: sqlite3.Connection,
    inbox: str,
    state: str,
    last_error: str | None = None,
    *,
    now: datetime | None = None,
) -> int:
    """Store an inbox's state after a pass; returns its consecutive failure count."""
    if state not in STATES:
        raise ValueError(f"inbox state must be one of {', '.join(STATES)}, not {state!r}")
    stamp = _now(now)
    conn.execute(
        "INSERT INTO sync_inboxes (inbox, state, last_error, last_sync, failures, updated_at)"
        " VALUES (?1, ?2, ?3, CASE WHEN ?2 = 'ok' THEN ?4 END, CASE WHEN ?2 = 'ok' THEN 0"
        " ELSE 1 END, ?4)"
        " ON CONFLICT (inbox) DO UPDATE SET state = ?2, last_error = ?3,"
        " last_sync = CASE WHEN ?2 = 'ok' THEN ?4 ELSE last_sync END,"
        " next_retry = CASE WHEN ?2 = 'ok' THEN NULL ELSE next_retry END,"
        " failures = CASE WHEN ?2 = 'ok' THEN 0 ELSE failures + 1 END, updated_at = ?4",
        (inbox, state, last_error, stamp),
    )
    return int(
        conn.execute("SELECT failures FROM sync_inboxes WHERE inbox = ?", (inbox,)).fetchone()[0]
    )


def record_inbox_error(
    conn: sqlite3.Connection, inbox: str, error: str, *, now: datetime | None = None
) -> None:
    """Show an error met in a pass still under way (a lost connection it retries): the
    inbox keeps its state, and one that never finished a pass shows as failed. The pass's
    end records its own state and error over it."""
    conn.execute(
        "INSERT INTO sync_inboxes (inbox, state, last_error, failures, updated_at)"
        " VALUES (?1, 'failed', ?2, 0, ?3)"
        " ON CONFLICT (inbox) DO UPDATE SET last_error = ?2, updated_at = ?3",
        (inbox, error, _now(now)),
    )


def record_next_retry(conn: sqlite3.Connection, inbox: str, when: datetime | None) -> None:
    """Store when the daemon will try ``inbox`` again (None: no retry pending)."""
    conn.execute(
        "UPDATE sync_inboxes SET next_retry = ? WHERE inbox = ?",
        (iso(when) if when is not None else None, inbox),
    )


class _FolderReport(Protocol):
    name: str
    logged: int
    duplicates: int
    skipped: int
    quarantined: int
    error: str | None


class _InboxReport(Protocol):
    name: str
    state: str
    error: str | None
    folders: Iterable[_FolderReport]


def add_pass_counts(conn: sqlite3.Connection, result: _InboxReport) -> None:
    """Add a pass's outcome counts to its folders' totals."""
    for folder in result.folders:
        add_counts(conn, result.name, folder.name, {c: getattr(folder, c) for c in COUNT_COLUMNS})


def record_pass(conn: sqlite3.Connection, result: _InboxReport) -> int:
    """Store a pass's report (``sources.imap.InboxResult`` shape): counts, folder errors,
    which configured name each folder was found by, inbox state. A pass that ended ok
    listed every folder it was to sync, so the cursors of the others (a folder renamed or
    deleted on the server, or no longer configured) are dropped: they leave ``status``;
    the mail they logged stays. Returns the inbox's consecutive failure count."""
    add_pass_counts(conn, result)
    stamp = _now()
    for folder in result.folders:
        # A pass that got through a folder clears its error, even with nothing to commit;
        # a pass that failed may have left the folder before reaching the error again.
        if folder.error or result.state == "ok":
            record_folder_error(conn, result.name, folder.name, folder.error)
        if result.state == "ok" and not folder.error:
            # Up to date as of now, though nothing new was committed: what an alert on
            # the last successful sync of a quiet folder needs.
            conn.execute(
                "UPDATE sync_folders SET last_sync = ? WHERE inbox = ? AND folder = ?",
                (stamp, result.name, folder.name),
            )
        conn.execute(
            "UPDATE sync_folders SET configured = ?, resolved_by = ?"
            " WHERE inbox = ? AND folder = ?",
            (getattr(folder, "configured", None), getattr(folder, "resolved_by", None),
             result.name, folder.name),
        )  # fmt: skip
    if result.state == "ok":
        kept = [folder.name for folder in result.folders]
        conn.execute(
            "DELETE FROM sync_folders WHERE inbox = ? AND folder NOT IN"
            " (SELECT value FROM json_each(?))",
            (result.name, json.dumps(kept)),
        )
    return record_inbox_state(conn, result.name, result.state, result.error)


def status_rows(conn: sqlite3.Connection, inboxes: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Per inbox: state, last sync, last error and its folders, for ``syncd status``.
    ``inboxes`` lists configured inboxes so one never synced still shows up."""
    names = list(dict.fromkeys(inboxes))
    for (name,) in conn.execute(
        "SELECT inbox FROM sync_inboxes UNION SELECT inbox FROM sync_folders ORDER BY 1"
    ):
        if name not in names:
            names.append(name)
    # A store the running syncd has not migrated yet (status read-only, before the
    # daemon's restart) has no record of how folders were found.
    columns = {r[1] for r in conn.execute("PRAGMA table_info(sync_folders)")}
    names_found = "configured, resolved_by" if "resolved_by" in columns else "NULL, NULL"
    out = []
    for name in names:
        row = conn.execute(
            "SELECT state, last_sync, last_error, next_retry FROM sync_inboxes WHERE inbox = ?",
            (name,),
        ).fetchone()
        folders = [
            {
                "name": f[0], "uidvalidity": f[1], "last_uid": f[2], "logged": f[3],
                "duplicates": f[4], "skipped": f[5], "quarantined": f[6],
                "initial_done": bool(f[7]), "last_sync": f[8], "last_error": f[9],
                "configured": f[10], "resolved_by": f[11],
            }
            for f in conn.execute(
                "SELECT folder, uidvalidity, last_uid, logged, duplicates, skipped, quarantined,"
                f" initial_done, last_sync, last_error, {names_found} FROM sync_folders"
                " WHERE inbox = ? ORDER BY folder <> 'INBOX', folder",
                (name,),
            )
        ]  # fmt: skip
        out.append(
            {
                "name": name,
                "state": row[0] if row else "never_synced",
                "last_sync": row[1] if row else None,
                "last_error": row[2] if row else None,
                "next_retry": row[3] if row else None,
                "folders": folders,
            }
        )
    return out
