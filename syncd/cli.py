"""The ``syncd`` command line: global options, exit codes, and the commands' wiring.

Commands that report take ``--json`` and then print one JSON document on stdout and
nothing else there; everything for humans goes to stderr. Exit codes are PRODUCT.md's:
0 done, 1 problems found, 2 usage, 69 unreachable, 75 temporary failure, 78 bad config.
The config is loaded lazily, once, by whichever command needs it, so ``--help`` works
without one. This module and ``daemon`` are the only ones that read the environment.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from syncd import __version__, logsetup
from syncd.config import Config
from syncd.errors import ConfigError, InboxError, StoreError, SyncdError

EX_OK, EX_PROBLEMS, EX_USAGE = 0, 1, 2
EX_UNAVAILABLE, EX_TEMPFAIL, EX_CONFIG = 69, 75, 78
DEFAULT_CONFIG = "/etc/syncd/syncd.yaml"
log = logging.getLogger("syncd")


class App:
    """What every command gets as ``ctx.obj``: where the config is, and the config once loaded."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self._config: Config | None = None

    def config(self) -> Config:
        if self._config is None:
            self._config = Config.from_yaml(self.config_path)
            for warning in self._config.warnings:
                log.warning("%s", warning)
        return self._config


def emit_json(document: Any) -> None:
    """The one JSON document a ``--json`` command prints on stdout."""
    click.echo(json.dumps(document, ensure_ascii=False, indent=2, default=str))


def fail(message: str, code: int = EX_PROBLEMS) -> NoReturn:
    click.echo(f"syncd: {message}", err=True)
    sys.exit(code)


class SyncdGroup(click.Group):
    """Maps syncd's errors to exit codes and one-line messages, never tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(str(exc), err=True)
            sys.exit(EX_CONFIG)
        except InboxError as exc:
            fail(str(exc), EX_UNAVAILABLE)
        except StoreError as exc:
            fail(str(exc), EX_TEMPFAIL)
        except SyncdError as exc:
            fail(str(exc), EX_PROBLEMS)
        except sqlite3.Error as exc:  # the store is locked, full or damaged mid-command
            fail(f"store error: {exc}", EX_TEMPFAIL)
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            fail(f"cannot access{where}: {exc.strerror or exc}", EX_TEMPFAIL)


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
    logsetup.configure(verbose - quiet, journald="JOURNAL_STREAM" in os.environ)
    ctx.obj = App(config_path)


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


def _register_all() -> None:
    # Imported here, not at the top: the command modules import App and helpers from here.
    from syncd import cli_daemon, cli_data, cli_records

    cli_data.register(main)
    cli_records.register(main)
    cli_daemon.register(main)
    _accept_config_everywhere(main)


_register_all()
