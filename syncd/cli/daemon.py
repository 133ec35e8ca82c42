"""CLI commands that run syncd's engines: ``run``, ``sync``, ``status``, ``doctor``.

``run`` hands over to ``syncd.services.daemon``. ``status`` reads the store read-only from
another process: the daemon's heartbeat row, per-inbox sync state, spool, outbox and
quarantine counts, so it works whether or not the daemon runs and never blocks it.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from syncd.cli.common import (
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
from syncd.services.imap import inbox_pass
from syncd.services.storeworker import StoreJob
from syncd.sources.imap.folders import describe
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
    """
    config = app.config()
    inboxes = [i for i in config.inboxes if only in (None, i.name)]
    if not inboxes:
        fail(f"no inbox named {only!r}" if only else "no inboxes configured", EX_USAGE)
    session = StoreSession.open(config.store.path)
    pipeline = Pipeline.from_config(config, session)
    job = StoreJob(session, pipeline)
    progress: _Bar | _Lines | None = None
    if not as_json:
        progress = _Bar() if sys.stderr.isatty() else _Lines()
    report: dict[str, Any] = {c: 0 for c in COUNTS} | {"inboxes": []}
    code = 0
    try:
        for inbox in inboxes:
            result, _ = inbox_pass(
                inbox,
                lambda fn, *a: fn(job, *a),
                dry_run=dry_run,
                progress=progress,
                parse_ahead=pipeline.parse_ahead,
            )
            report["inboxes"].append(result.as_json())
            for folder in result.folders:
                for count in COUNTS:
                    report[count] += getattr(folder, count)
            if result.state == "auth_failed":
                code = EX_NOPERM
            elif result.state != "ok" and code != EX_NOPERM:
                code = EX_UNAVAILABLE
            elif result.error and code == 0:
                code = EX_PROBLEMS
            if progress is not None:
                progress.clear()
            if not as_json:
                _print_inbox(result.as_json(), dry_run)
    finally:
        if progress is not None:
            progress.clear()
        pipeline.close()
        session.close()
    if as_json:
        emit_json(report)
    sys.exit(code)


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
    _print_tracking(report.get("tracking") or {})
    click.echo(f"quarantine: {report['quarantine']}")


def _print_tracking(t: dict[str, Any]) -> None:
    """Stored hits by verdict; the running endpoint's drops and rate-limited requests."""
    if not t.get("hits") and "dropped" not in t:
        return
    hits = ", ".join(f"{n} {v}" for v, n in sorted(t["hits"].items())) or "no hits"
    running = ""
    if "dropped" in t:
        running = f"; {t['dropped']} dropped, {t['rate_limited']} rate-limited since start"
    click.echo(f"tracking: {hits}{running}")


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


def register(group: click.Group) -> None:
    group.add_command(run)
    group.add_command(sync)
    group.add_command(status)
    group.add_command(doctor)
