"""The ``syncd`` command line: global options, errors to exit codes, and the commands.

Commands that report take ``--json`` and then print one JSON document on stdout and
nothing else there; everything for humans goes to stderr. The config is loaded lazily,
once, by whichever command needs it, so ``--help`` works without one. The command
modules (``daemon``, ``data``, ``records``, ``deals``...) import ``common`` and, to print
a timeline, ``records``; none imports this module, which imports them and registers
their commands.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from syncd import __version__
from syncd.cli import (
    companies,
    daemon,
    data,
    deals,
    engagements,
    install,
    logsetup,
    reading,
    records,
)
from syncd.cli import tracking as tracking_cli
from syncd.cli.common import (
    DEFAULT_CONFIG,
    EX_CONFIG,
    EX_DATAERR,
    EX_NOPERM,
    EX_PIPE,
    EX_PROBLEMS,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    App,
    fail,
    os_error_code,
    os_error_text,
)
from syncd.errors import (
    ConfigError,
    InboxError,
    StoreDamaged,
    StoreDenied,
    StoreError,
    SyncdError,
)
from syncd.store import db


class SyncdGroup(click.Group):
    """Maps syncd's errors to exit codes and one-line messages, never tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            try:
                return super().invoke(ctx)
            finally:
                # A reader that left early (`| head`) shows here rather than as Python's
                # "Exception ignored" when the interpreter flushes stdout at exit.
                sys.stdout.flush()
        except BrokenPipeError:
            _quiet_exit(EX_PIPE)
        except ConfigError as exc:
            click.echo(str(exc), err=True)
            sys.exit(EX_CONFIG)
        except InboxError as exc:
            fail(str(exc), EX_NOPERM if exc.auth else EX_UNAVAILABLE)
        except StoreError as exc:
            fail(str(exc), _STORE_CODES[_store_kind(exc)])
        except SyncdError as exc:
            fail(str(exc), EX_PROBLEMS)
        except sqlite3.Error as exc:  # the store is locked, full or damaged mid-command
            error = db.store_error(exc, ctx.obj.config().store.path, doing="use")
            fail(str(error), _STORE_CODES[_store_kind(error)])
        except OSError as exc:
            fail(f"cannot access {os_error_text(exc)}", os_error_code(exc))


_STORE_CODES = {StoreError: EX_TEMPFAIL, StoreDenied: EX_NOPERM, StoreDamaged: EX_DATAERR}


def _store_kind(exc: StoreError) -> type[StoreError]:
    for kind in (StoreDenied, StoreDamaged):
        if isinstance(exc, kind):
            return kind
    return db.error_kind(exc.__cause__)  # a write failure keeps the sqlite3 or OS error


def _quiet_exit(code: int) -> NoReturn:
    """Exit without a word when stdout or stderr is a pipe whose reader has gone. Both
    are pointed at /dev/null first, as Python's signal docs advise, so the interpreter's
    last flush has nowhere to fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            os.dup2(devnull, stream.fileno())
    sys.exit(code)


@click.group(cls=SyncdGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Configuration file. Default: $SYNCD_CONFIG, else {DEFAULT_CONFIG}.",
)
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug).")
@click.option("-q", "--quiet", count=True, help="Less log output: warnings and errors only.")
@click.version_option(__version__, prog_name="syncd")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, verbose: int, quiet: int) -> None:
    """syncd logs a team's email on CRM timelines in a local SQLite store.

    It syncs mailboxes over IMAP, receives BCC'd copies on its own SMTP endpoint,
    and is configured by one YAML file (see syncd.yaml.example).
    """
    if config_path is None:
        config_path = Path(os.environ.get("SYNCD_CONFIG") or DEFAULT_CONFIG)
    _private_files(ctx)
    logsetup.configure(verbose - quiet, journald="JOURNAL_STREAM" in os.environ)
    ctx.obj = App(config_path)


def _private_files(ctx: click.Context) -> None:
    """The store, its -wal/-shm, attachments, backups and exports hold everyone's mail:
    whatever the login umask, what this process creates is its user's alone (the units
    say UMask=0077 too). A umask, not a mode at each open, because SQLite, tempfile and
    future code create files too, and a umask cannot be forgotten at a new call site.
    Put back on close, for callers that run the CLI inside their own process."""
    previous = os.umask(0o077)
    os.umask(previous | 0o077)
    ctx.call_on_close(lambda: os.umask(previous))


@main.command("check-config")
@click.option("--show", is_flag=True, help="Print the effective config, secrets masked.")
@click.pass_obj
def check_config(app: App, show: bool) -> None:
    """Validate the config, report every problem at once, and exit (78 if bad)."""
    config = app.config()
    if show:
        click.echo(config.show(), nl=False)
    else:
        click.echo(f"{app.config_path}: ok", err=True)


def _config_here(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.find_object(App).config_path = value  # type: ignore[union-attr]


def _accept_config_everywhere(group: click.Group) -> None:
    """PRODUCT.md: every command takes ``--config PATH``. Besides ``syncd --config PATH
    CMD``, each command and subgroup also takes it after its name (``syncd sync --config
    PATH``); the group's callback has made ``App`` by the time a command parses it."""
    for command in group.commands.values():
        command.params.append(
            click.Option(
                ["--config"],
                type=click.Path(dir_okay=False, path_type=Path),
                expose_value=False,
                callback=_config_here,
                help="Configuration file; wins over one given before the command.",
            )
        )
        if isinstance(command, click.Group):
            _accept_config_everywhere(command)


data.register(main)
records.register(main)
deals.register(main)
reading.register(main)
companies.register(main)
engagements.register(main)
daemon.register(main)
install.register(main)
tracking_cli.register(main)
_accept_config_everywhere(main)
