"""What ``syncd status`` and the metrics endpoint report, read from the store.

Everything a user may want to know about a running (or stopped) syncd is in the store:
the daemon's heartbeat row, per-inbox sync state, the BCC spool and outbox counters,
the quarantine. Reading it from a read-only connection works from any process and
never blocks the daemon. The shape is PRODUCT.md's ``status --json``.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from syncd.config.model import Config
from syncd.store import daemonstate, db, spool, syncstate
from syncd.store.timestamps import offset_form, parse


def gather(config: Config) -> dict[str, Any]:
    names = [inbox.name for inbox in config.inboxes]
    if not config.store.path.exists():
        return {
            "daemon": {"state": "not running"},
            "inboxes": [{"name": n, "state": "never_synced", "last_sync": None,
                         "last_error": None, "folders": []} for n in names],
            "bcc": {}, "outbox": {}, "quarantine": 0,
        }  # fmt: skip
    conn = db.connect(config.store.path, readonly=True)
    try:
        return _from_store(conn, names)
    finally:
        conn.close()


def with_unsaved(report: dict[str, Any], counts: Mapping[str, int]) -> dict[str, Any]:
    """``report`` plus the running daemon's BCC counts the store has not taken yet (a
    full or read-only store refuses them; the endpoint keeps them in memory)."""
    bcc = dict(report.get("bcc") or {})
    reasons = dict(bcc.get("refused_by_reason") or {})
    for name, n in counts.items():
        if name.startswith("refused."):
            reason = name.removeprefix("refused.")
            reasons[reason] = reasons.get(reason, 0) + n
        elif name == "tempfail":
            bcc["temporary_failures"] = bcc.get("temporary_failures", 0) + n
        elif name == "accepted":
            bcc["accepted"] = bcc.get("accepted", 0) + n
    bcc["refused_by_reason"] = reasons
    bcc["refused"] = sum(reasons.values())
    return report | {"bcc": bcc}


def _from_store(conn: sqlite3.Connection, names: list[str]) -> dict[str, Any]:
    report: dict[str, Any] = {"daemon": _daemon(conn)}
    report["inboxes"] = [_shown(inbox) for inbox in syncstate.status_rows(conn, names)]
    report.update(spool.status(conn))
    report["bcc"] |= report["daemon"].pop("bcc", {})
    report["quarantine"] = conn.execute("SELECT count(*) FROM quarantine").fetchone()[0]
    return report


def _daemon(conn: sqlite3.Connection) -> dict[str, Any]:
    state = daemonstate.load(conn)
    if state is None:
        return {"state": "not running"}
    age = datetime.now(UTC) - parse(state["updated_at"])
    state |= {k: offset_form(state[k]) for k in ("started_at", "updated_at")}
    fresh = age < timedelta(seconds=3 * daemonstate.HEARTBEAT_SECONDS)
    if state["state"] == "stopped" or not (fresh and _alive(state["pid"])):
        # What a dead daemon last said about its listener and threads is no longer true.
        return {k: state[k] for k in ("pid", "started_at", "updated_at")} | {"state": "not running"}
    return state


def _shown(inbox: dict[str, Any]) -> dict[str, Any]:
    folders = [f | {"last_sync": offset_form(f["last_sync"])} for f in inbox["folders"]]
    return inbox | {"last_sync": offset_form(inbox["last_sync"]), "folders": folders}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
