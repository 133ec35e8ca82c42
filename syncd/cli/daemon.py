"""CLI commands that run syncd's engines: ``run``, ``sync``, ``status``, ``doctor``,
``check-store``.

``run`` hands over to ``syncd.services.daemon``. ``status`` reads the store read-only from
another process: the daemon's heartbeat row, per-inbox sync state, spool, outbox and
quarantine counts, so it works whether or not the daemon runs and never blocks it.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from syncd.cli.common import (
    EX_DATAERR,
    EX_NOPERM,
    EX_PROBLEMS,
    EX_UNAVAILABLE,
    EX_USAGE,
    App,
    emit_json,
    fail,
    os_error_code,
    os_error_text,
)
from syncd.pipeline import Pipeline
from syncd.services import statusreport
from syncd.services.imap import Stopping, inbox_pass, load_checkpoint
from syncd.services.storeworker import StoreJob
from syncd.sources.imap.folders import describe
from syncd.sources.imap.inbox import InboxResult
from syncd.store import integrity
from syncd.store.session import StoreSession

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar  # what click.progressbar returns

COUNTS = ("logged", "duplicates", "skipped", "quarantined")


@click.command("run")
@click.pass_obj
def run(app: App) -> None:
    """The daemon: IMAP sync for every inbox, the BCC endpoint and tracking.

    Under systemd it sends READY=1 once the store is open and the listeners are bound;
    SIGHUP reloads the config (a bad one is logged and the old one kept); SIGTERM stops
    accepting, finishes or spools what is in flight and exits 0.
    """
    config = app.config()
    # Imported here: the daemon's parts (SMTP, SPF, the scheduler) are for `run` alone,
    # and `syncd sync` of a large mailbox should not carry them.
    from syncd.services import daemon

    try:
        code = daemon.run(app.config_path, config, os.environ)
    except OSError as exc:  # a lock file, a port, a certificate: named, with its path
        fail(f"cannot start: {os_error_text(exc)}", os_error_code(exc))
    sys.exit(code)


@click.command("relay-worker", hidden=True)
@click.option("--fds", required=True, help="Its sockets' descriptors, one per thread.")
def relay_worker(fds: str) -> None:
    """The submission relay's worker process, which `run` starts (services.relayworker)."""
    import socket

    from syncd.services import relayworker

    relayworker.serve([socket.socket(fileno=int(fd)) for fd in fds.split(",")])


@click.command("sync")
@click.option("--inbox", "only", metavar="NAME", help="Only this inbox.")
@click.option("--dry-run", is_flag=True, help="Count what would be pulled; fetch no bodies.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document of counts.")
@click.pass_obj
def sync(app: App, only: str | None, dry_run: bool, as_json: bool) -> None:
    """One IMAP sync pass over the configured inboxes, then exit.

    --dry-run says per folder how many messages the window and people filter would
    pull, fetching no bodies. Exit 0 when every inbox synced, 77 when a login was
    refused, else 69 when an inbox could not be reached, else 1 when a folder failed.
    Ctrl-C or SIGTERM stops at the next batch, keeping what is committed, and exits
    130 or 143.
    """
    config = app.config()
    inboxes = [i for i in config.inboxes if only in (None, i.name)]
    if not inboxes:
        fail(f"no inbox named {only!r}" if only else "no inboxes configured", EX_USAGE)
    session = StoreSession.open(config.store.path)
    pipeline = Pipeline.from_config(config, session)
    job = StoreJob(session, pipeline)
    # Installed once the store is open, so a store that refuses to open leaves the
    # caller's handlers as they were.
    signals = _StopSignals(at_once=dry_run)  # a dry run commits nothing: no batch to wait for
    progress: _Bar | _Lines | None = None
    if not as_json:
        progress = _Bar() if sys.stderr.isatty() else _Lines()
    report: dict[str, Any] = {c: 0 for c in COUNTS} | {"inboxes": []}
    code = 0
    stopped: str | None = None  # where an interrupted sync stopped
    try:
        signals.arm()
        for inbox in inboxes:
            if signals.requested():
                stopped = f"{inbox.name} not started"
                break
            try:
                result, _ = inbox_pass(
                    inbox,
                    lambda fn, *a: fn(job, *a),
                    dry_run=dry_run,
                    progress=progress,
                    parse_ahead=pipeline.parse_ahead,
                    should_stop=signals.requested,
                )
            except Stopping as exc:
                result = exc.result or InboxResult(inbox.name)
                stopped = _stopped_at(session.conn, result)
            report["inboxes"].append(result.as_json())
            for folder in result.folders:
                for count in COUNTS:
                    report[count] += getattr(folder, count)
            if stopped is not None:
                break
            code = _exit_code(code, result)
            if progress is not None:
                progress.clear()
            if not as_json:
                _print_inbox(result.as_json(), dry_run)
    except Stopping:  # a second signal, or a dry run's first, between passes
        stopped = stopped or "stopped between inboxes"
    finally:
        signals.disarm()
        if progress is not None:
            progress.clear()
        # The parser processes end here; their forkserver and the resource tracker end
        # with this process, whose exit closes the last pipes they read.
        pipeline.close()
        session.close()
    if stopped is not None and signals.signum is not None:
        where = "nothing fetched (dry run)" if dry_run else f"{report['logged']} logged, {stopped}"
        click.echo(f"syncd: interrupted: {where}; run sync again to continue", err=True)
        report["interrupted"] = True
        code = 128 + signals.signum  # the shell's code for death by that signal
    if as_json:
        emit_json(report)
    signals.restore()
    sys.exit(code)


def _exit_code(code: int, result: InboxResult) -> int:
    """The exit code once ``result`` counts too: a refused login outranks an inbox that
    could not be reached, which outranks a failed folder."""
    if result.state == "auth_failed":
        return EX_NOPERM
    if result.state != "ok" and code != EX_NOPERM:
        return EX_UNAVAILABLE
    if result.error and code == 0:
        return EX_PROBLEMS
    return code


def _stopped_at(conn: sqlite3.Connection, result: InboxResult) -> str:
    """Where an interrupted pass stands: its folder and the committed checkpoint's UID."""
    if not result.folders:
        return f"{result.name} stopped before its folders"
    folder = result.folders[-1].name
    checkpoint = load_checkpoint(conn, result.name, folder)
    if checkpoint is None or checkpoint.last_uid == 0:
        return f"{result.name}/{folder} stopped before its first batch"
    return f"{result.name}/{folder} stopped at UID {checkpoint.last_uid}"


class _StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM while ``sync`` runs, from construction to ``restore``.

    Armed (during the passes), the first asks the pass to stop at its next batch: the
    batch being written commits with its checkpoint and counts. A second one, or with
    ``at_once`` the first, raises ``Stopping`` where the command is: a batch being
    written rolls back, as after a kill, and the next sync fetches it again. Unarmed
    (opening the store, shutting the parser processes down) a signal is only noted."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, *, at_once: bool) -> None:
        self.signum: int | None = None
        self._at_once = at_once
        self._armed = False
        self._before = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def arm(self) -> None:
        self._armed = True

    def disarm(self) -> None:
        self._armed = False

    def restore(self) -> None:
        for signum, handler in self._before.items():
            signal.signal(signum, handler)

    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, _frame: object) -> None:
        again = self.signum is not None
        if not again:
            self.signum = signum
        if self._armed and (again or self._at_once):
            raise Stopping


class _Bar:
    """On a terminal, click's progress bar for each folder in turn: done/planned, its
    ETA, and the rate since the folder started."""

    def __init__(self) -> None:
        self._bars = ExitStack()
        self._bar: ProgressBar[int] | None = None
        self._folder = ""
        self._done = self._first = 0
        self._started = 0.0

    def __call__(self, folder: str, done: int, planned: int) -> None:
        if self._bar is None or folder != self._folder:
            self.clear()
            self._folder, self._done, self._started = folder, 0, time.monotonic()
            self._first = done  # the rate counts from the first batch shown
            self._bar = self._bars.enter_context(
                click.progressbar(
                    length=planned,
                    label=f"  {folder}",
                    show_pos=True,
                    show_percent=True,
                    item_show_func=self._rate,
                    file=click.get_text_stream("stderr"),
                )
            )
        self._bar.length = max(planned, done)
        self._bar.update(done - self._done, done)
        self._done = done

    def _rate(self, done: int | None) -> str | None:
        elapsed = time.monotonic() - self._started
        if done is None or done <= self._first or elapsed <= 0:
            return None
        return f"{(done - self._first) / elapsed:.0f} msg/s"

    def clear(self) -> None:
        """Leave the finished bar on its line; the next folder gets a new one."""
        self._bars.close()
        self._bar = None


class _Lines:
    """Plain progress lines where stderr is a log or a pipe: the first batch, then one
    line every ``EVERY`` seconds at most, so a 50,000-message sync shows it is moving."""

    EVERY = 10.0

    def __init__(self) -> None:
        self._last = -self.EVERY

    def __call__(self, folder: str, done: int, planned: int) -> None:
        now = time.monotonic()
        if now - self._last >= self.EVERY:
            self._last = now
            click.echo(f"  {folder}: {done}/{planned}", err=True)

    def clear(self) -> None:
        self._last = -self.EVERY  # the next inbox's first batch gets its line


def _print_inbox(result: dict[str, Any], dry_run: bool) -> None:
    if result["state"] != "ok":
        click.echo(f"{result['name']}: {result['state']}: {result['error']}", err=True)
    for folder in result["folders"]:
        if dry_run:
            what = f"would fetch {folder.get('would_fetch', 0)}"
        else:
            what = ", ".join(f"{folder[c]} {c}" for c in COUNTS)
        error = f" (error: {folder['error']})" if folder.get("error") else ""
        name = describe(folder.get("configured"), folder["name"], folder.get("resolved_by"))
        click.echo(f"{result['name']}/{name}: {what}{error}", err=True)


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def status(app: App, as_json: bool) -> None:
    """Per inbox and folder: state, last sync, counts, last error; the daemon, BCC,
    outbox and quarantine. Reads the store; works whether or not the daemon runs."""
    config = app.config()
    report = statusreport.gather(config)
    if as_json:
        emit_json(report)
    else:
        _print_status(report, bcc=config.bcc is not None)


def _print_status(report: dict[str, Any], *, bcc: bool) -> None:
    d = report["daemon"]
    since = f" since {d['started_at']} (pid {d['pid']})" if d["state"] != "not running" else ""
    click.echo(f"daemon: {d['state']}{since}")
    now = datetime.now(UTC)
    for inbox in report["inboxes"]:
        error = f", last error: {inbox['last_error']}" if inbox["last_error"] else ""
        retry = statusreport.retry_text(inbox.get("next_retry"), now)
        retry = f", {retry}" if retry else ""
        last = inbox["last_sync"] or "never"
        click.echo(f"inbox {inbox['name']}: {inbox['state']}, last sync {last}{retry}{error}")
        for f in inbox["folders"]:
            initial = "initial sync done" if f["initial_done"] else "initial sync in progress"
            counts = ", ".join(f"{f[c]} {c}" for c in COUNTS)
            failed = f"; last error: {f['last_error']}" if f["last_error"] else ""
            name = describe(f["configured"], f["name"], f["resolved_by"])
            click.echo(f"  {name}: uidvalidity {f['uidvalidity']}, last uid {f['last_uid']},"
                       f" {initial}; {counts}{failed}")  # fmt: skip
    if bcc and report["bcc"]:
        b, o = report["bcc"], report["outbox"]
        click.echo(f"bcc: {b['accepted']} accepted, {b['refused']} refused,"
                   f" spool {b['spool_depth']}")  # fmt: skip
        click.echo(f"outbox: {o['depth']} waiting, {o['forwarded']} forwarded,"
                   f" {o['given_up']} given up")  # fmt: skip
    sub = report.get("submission") or {}
    if sub.get("listen") or sub.get("submissions"):
        line = (
            f"submission: {sub['submissions']} submitted, {sub['relayed']} relayed,"
            f" {sub['refused']} refused, {sub['temporary_failures']} temporary failures"
        )
        if sub.get("listen"):  # the running daemon's relay worker
            worker, restarts = sub.get("worker_pid"), sub.get("worker_restarts", 0)
            line += f"; relay worker pid {worker}" if worker else "; relay worker not running"
            line += f", restarted {restarts} time(s)" if restarts else ""
        click.echo(line)
    tracked = report.get("tracking") or {}
    if tracked.get("messages") or any((tracked.get("hits") or {}).values()):
        hits = ", ".join(f"{n} {v}" for v, n in tracked["hits"].items() if n) or "none"
        click.echo(f"tracking: {tracked['messages']} tracked message(s); hits: {hits}")
    if "dropped" in tracked:  # the running endpoint's counts, since it started
        click.echo(f"tracking endpoint: {tracked['queue']} queued, {tracked['dropped']} dropped,"
                   f" {tracked['rate_limited']} rate-limited")  # fmt: skip
    click.echo(f"quarantine: {report['quarantine']}")


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def doctor(app: App, as_json: bool) -> None:
    """Try each IMAP login, the BCC listener, DNS for the BCC domain and the store's
    integrity; exit 1 if any check fails."""
    from syncd.services.doctor import run_checks

    checks = run_checks(app.config())
    if as_json:
        emit_json([c.as_json() for c in checks])
    else:
        for c in checks:
            click.echo(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
    sys.exit(0 if all(c.ok for c in checks) else EX_PROBLEMS)


CHECK_LIMIT = 1000  # problems listed by check-store; a count past it shows as "1000+"
SHOWN = 5  # problems printed for humans; --json has them all


@click.command("check-store")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def check_store(app: App, as_json: bool) -> None:
    """SQLite's full integrity check of the store (every page and index); exit 0 when
    sound, 65 when damaged. Safe while the daemon runs; it takes a while on a big store."""
    path = app.config().store.path
    if not path.exists():
        fail(f"no store at {path}")
    started = time.monotonic()
    verdict = integrity.check(path, full=True, limit=CHECK_LIMIT)
    seconds = round(time.monotonic() - started, 1)
    problems = verdict.problems
    count = f"{len(problems)}{'+' if len(problems) >= CHECK_LIMIT else ''}"
    if as_json:
        emit_json({"store": str(path), "ok": verdict.ok, "problems": problems,
                   "count": len(problems), "seconds": seconds})  # fmt: skip
    elif verdict.ok:
        click.echo(f"store {path}: ok (full integrity check, {seconds} s)")
    else:
        click.echo(f"store {path}: damaged, {count} problem(s):")
        for problem in problems[:SHOWN]:
            click.echo(f"  {problem}")
        if len(problems) > SHOWN:
            click.echo(f"  ... and {len(problems) - SHOWN} more (--json lists them)")
        click.echo("Stop syncd and restore the store from a backup; `syncd run` refuses it.")
    sys.exit(0 if verdict.ok else EX_DATAERR)


def register(group: click.Group) -> None:
    group.add_command(run)
    group.add_command(relay_worker)
    group.add_command(sync)
    group.add_command(status)
    group.add_command(doctor)
    group.add_command(check_store)
