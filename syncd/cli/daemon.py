"""CLI commands that run syncd's engines: ``run``, ``sync``, ``status``, ``doctor``,
``check-store``.

``run`` hands over to ``syncd.services.daemon``. ``status`` reads the store read-only from
another process: the daemon's heartbeat row, per-inbox sync state, spool, outbox and
quarantine counts, so it works whether or not the daemon runs and never blocks it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click

from syncd.cli.common import (
    EX_DATAERR,
    EX_PROBLEMS,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    EX_USAGE,
    App,
    emit_json,
    fail,
)
from syncd.pipeline import Pipeline
from syncd.services import statusreport
from syncd.services.imap import inbox_pass
from syncd.store import db, integrity

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
    except OSError as exc:
        fail(f"cannot start: {exc.strerror or exc}", EX_TEMPFAIL)
    sys.exit(code)


@click.command("sync")
@click.option("--inbox", "only", metavar="NAME", help="Only this inbox.")
@click.option("--dry-run", is_flag=True, help="Count what would be pulled; fetch no bodies.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document of counts.")
@click.pass_obj
def sync(app: App, only: str | None, dry_run: bool, as_json: bool) -> None:
    """One IMAP sync pass over the configured inboxes, then exit.

    --dry-run says per folder how many messages the window and people filter would
    pull, fetching no bodies. Exit 0 when every inbox synced, 69 when an inbox could
    not be reached or logged in to, 1 when a folder failed.
    """
    config = app.config()
    inboxes = [i for i in config.inboxes if only in (None, i.name)]
    if not inboxes:
        fail(f"no inbox named {only!r}" if only else "no inboxes configured", EX_USAGE)
    pipeline = Pipeline.from_config(config, db.connect(config.store.path))
    progress: _Progress | _Lines | None = None
    if not as_json:
        progress = _Progress() if sys.stderr.isatty() else _Lines()
    report: dict[str, Any] = {c: 0 for c in COUNTS} | {"inboxes": []}
    code = 0
    try:
        for inbox in inboxes:
            result, _ = inbox_pass(
                inbox,
                lambda fn, *a: fn(pipeline, *a),
                dry_run=dry_run,
                progress=progress,
                parse_ahead=pipeline.parse_ahead,
            )
            report["inboxes"].append(result.as_json())
            for folder in result.folders:
                for count in COUNTS:
                    report[count] += getattr(folder, count)
            if result.state != "ok":
                code = EX_UNAVAILABLE
            elif result.error and code == 0:
                code = EX_PROBLEMS
            if progress is not None:
                progress.clear()
            if not as_json:
                _print_inbox(result.as_json(), dry_run)
    finally:
        pipeline.close()
        pipeline.conn.close()
    if as_json:
        emit_json(report)
    sys.exit(code)


class _Progress:
    """One self-overwriting line on a terminal: folder, done/planned."""

    def __call__(self, folder: str, done: int, planned: int) -> None:
        click.echo(f"\r  {folder}: {done}/{planned}\x1b[K", nl=False, err=True)

    def clear(self) -> None:
        click.echo("\r\x1b[K", nl=False, err=True)


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
        click.echo(f"{result['name']}/{folder['name']}: {what}{error}", err=True)


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
    for inbox in report["inboxes"]:
        error = f", last error: {inbox['last_error']}" if inbox["last_error"] else ""
        click.echo(
            f"inbox {inbox['name']}: {inbox['state']}, last sync {inbox['last_sync']}{error}"
        )
        for f in inbox["folders"]:
            initial = "initial sync done" if f["initial_done"] else "initial sync in progress"
            counts = ", ".join(f"{f[c]} {c}" for c in COUNTS)
            failed = f"; last error: {f['last_error']}" if f["last_error"] else ""
            click.echo(f"  {f['name']}: uidvalidity {f['uidvalidity']}, last uid {f['last_uid']},"
                       f" {initial}; {counts}{failed}")  # fmt: skip
    if bcc and report["bcc"]:
        b, o = report["bcc"], report["outbox"]
        click.echo(f"bcc: {b['accepted']} accepted, {b['refused']} refused,"
                   f" spool {b['spool_depth']}")  # fmt: skip
        click.echo(f"outbox: {o['depth']} waiting, {o['forwarded']} forwarded,"
                   f" {o['given_up']} given up")  # fmt: skip
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
    group.add_command(sync)
    group.add_command(status)
    group.add_command(doctor)
    group.add_command(check_store)
