"""What ``syncd status`` and the metrics endpoint report, read from the store.

Everything a user may want to know about a running (or stopped) syncd is in the store:
the daemon's heartbeat row, per-inbox sync state, the BCC spool and outbox counters,
the quarantine. Reading it from a read-only connection works from any process and
never blocks the daemon. The shape is PRODUCT.md's ``status --json``; ``health`` turns
a report into ``/health``'s answer.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from syncd.config.model import Config
from syncd.store import daemonstate, db, quarantine, size, spool, syncstate, trackview
from syncd.store.timestamps import offset_form, parse


def gather(config: Config) -> dict[str, Any]:
    names = [inbox.name for inbox in config.inboxes]
    if not config.store.path.exists():
        return {
            "daemon": {"state": "not running"},
            "inboxes": [{"name": n, "state": "never_synced", "last_sync": None,
                         "last_error": None, "next_retry": None, "folders": []}
                        for n in names],
            "bcc": {}, "outbox": {}, "quarantine": 0,
        }  # fmt: skip
    conn = db.connect(config.store.path, readonly=True)
    try:
        report = _from_store(conn, names)
        report["store"] = {
            "bytes": size.database_bytes(config.store.path),
            "attachments_bytes": size.attachment_bytes(conn),
        }
        return report
    finally:
        conn.close()


FAILING_STATES = ("failed", "auth_failed")


def health(report: dict[str, Any] | None, store_error: str | None = None) -> dict[str, Any]:
    """``/health``'s body from a report (None: the store could not be read): ``failing``
    lists each failing part; ``status`` is ``ok`` only when it is empty."""
    failing: list[dict[str, Any]] = []
    if store_error is not None:
        failing.append({"part": "store", "error": store_error})
    inboxes = (report or {}).get("inboxes", [])
    for inbox in inboxes:
        if inbox["state"] in FAILING_STATES:
            failing.append({
                "part": "inbox", "name": inbox["name"], "state": inbox["state"],
                "error": inbox["last_error"], "next_retry": inbox.get("next_retry"),
            })  # fmt: skip
    body: dict[str, Any] = {
        "status": "error" if failing else "ok",
        "failed_inboxes": [i["name"] for i in inboxes if i["state"] in FAILING_STATES],
        "failing": failing,
    }
    if report is None:
        body["error"] = "store unreadable"
    return body


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
    running = report["daemon"]["state"] != "not running"
    report["inboxes"] = [_shown(i, running) for i in syncstate.status_rows(conn, names)]
    report.update(spool.status(conn))
    report["bcc"] |= report["daemon"].pop("bcc", {})
    report["submission"] |= report["daemon"].pop("submission", {})
    report["quarantine"] = quarantine.count(conn)
    # Tracked messages and their hits by verdict: what the store holds, since ever; and
    # the running endpoint's counts since it started (dropped, rate-limited, queue).
    report["tracking"] = trackview.counts(conn) | report["daemon"].pop("tracking", {})
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


def _shown(inbox: dict[str, Any], running: bool) -> dict[str, Any]:
    folders = [f | {"last_sync": offset_form(f["last_sync"])} for f in inbox["folders"]]
    # A stopped daemon retries nothing, whatever it planned.
    retry = offset_form(inbox["next_retry"]) if running else None
    return inbox | {
        "last_sync": offset_form(inbox["last_sync"]),
        "next_retry": retry,
        "folders": folders,
    }


def duration_text(seconds: float) -> str:
    """A wait as people read it: ``45s``, ``4m 10s``, ``1h 5m``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def retry_text(next_retry: str | None, now: datetime) -> str | None:
    """``next retry in 4m 10s (at 12:34:56Z)`` for ``status``; None when none is due."""
    if next_retry is None:
        return None
    when = parse(next_retry)
    at = when.strftime("%H:%M:%SZ")
    left = (when - now).total_seconds()
    if left < 1:
        return f"next retry now (was due at {at})"
    return f"next retry in {duration_text(left)} (at {at})"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
