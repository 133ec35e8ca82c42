"""What every CLI command shares: the ``App`` on ``ctx.obj``, exit codes, ``--json``
output, one-line failures, the store opened for a command, the engagement an ID names,
and lists and tables for humans.

Exit codes are PRODUCT.md's, from sysexits.h, and README.md's table lists them: 0 done,
1 problems found, 2 usage, 65 damaged store, 69 unreachable, 75 temporary failure,
77 credentials refused or permission denied, 78 bad config, 141 stdout closed early.
Only 69 and 75 are worth an automatic restart.
"""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
import sys
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from syncd.config.model import Config
from syncd.crm.lifecycle import StageError
from syncd.crm.rules import RulesSettings
from syncd.mail.headers import first_id
from syncd.store import db, mailview
from syncd.store.recordviews import MAX_ID

EX_OK, EX_PROBLEMS, EX_USAGE = 0, 1, 2
EX_DATAERR, EX_UNAVAILABLE, EX_TEMPFAIL, EX_NOPERM, EX_CONFIG = 65, 69, 75, 77, 78
EX_PIPE = 128 + 13  # what a shell reports for a program SIGPIPE ended, as for `cat | head`
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


def os_error_code(exc: OSError) -> int:
    """77 for what this user may not do (waiting will not mend it), else 75."""
    return EX_NOPERM if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else EX_TEMPFAIL


def os_error_text(exc: OSError) -> str:
    """``PATH: reason``, naming the path whenever the error has one."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def fail(message: str, code: int = EX_PROBLEMS) -> NoReturn:
    click.echo(f"syncd: {message}", err=True)
    sys.exit(code)


JSON_FLAG = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


@contextmanager
def open_store(
    ctx: click.Context, *, readonly: bool = False
) -> Iterator[tuple[Any, sqlite3.Connection]]:
    """The loaded config and an open store connection, closed afterwards. Commands that
    only read open it read-only: a wrong path never creates a store, and an older CLI
    never migrates the daemon's; a store not created yet reads as an empty one."""
    config = ctx.obj.config()
    if readonly and not config.store.path.exists():
        conn = db.connect(":memory:")
    else:
        conn = db.connect(config.store.path, readonly=readonly)
    try:
        yield config, conn
    finally:
        conn.close()


@contextmanager
def editing_settings(ctx: click.Context) -> Iterator[tuple[RulesSettings, sqlite3.Connection]]:
    """Settings and a connection inside one transaction; an unknown stage exits 2 and a
    missing record 1, with nothing written."""
    with open_store(ctx) as (config, conn):
        try:
            with db.transaction(conn):
                yield RulesSettings.from_config(config), conn
        except StageError as exc:
            fail(str(exc), EX_USAGE)
        except LookupError as exc:
            fail(str(exc.args[0]))


def id_number(text: str) -> int | None:
    """The id in ``text`` as a user types one (``12``, ``#12`` as timeline shows it);
    None unless it is ASCII digits naming a possible row: 1 to SQLite's largest integer
    (a larger number would not even bind)."""
    value = text.strip().removeprefix("#")
    if not (value.isascii() and value.isdigit()):
        return None
    number = int(value)
    return number if 0 < number <= MAX_ID else None


def engagement_ref(text: str) -> int | str:
    """What an engagement ID names, before the store is asked: an engagement id (``12``,
    ``#12``), else an email's message key (its Message-ID with or without ``<>``, the
    domain in lower case as the parser keys mail, or the ``sha256:`` key of mail without
    one). Text that can be neither exits 2 with one line, shown escaped; so does a
    number out of range. A Message-ID of digits alone needs its ``<>``."""
    stripped = text.strip()
    if stripped.removeprefix("#").isdigit():
        number = id_number(stripped)
        if number is not None:
            return number
    else:
        key = first_id(stripped) or (stripped if stripped.startswith("sha256:") else None)
        if key is not None:
            return key
    fail(
        f"not an engagement id: '{printable(text)}' (the #id timeline shows, or an email's "
        "Message-ID)",
        EX_USAGE,
    )


def find_engagement(conn: sqlite3.Connection, ref: int | str, *, email_only: bool = False) -> int:
    """The id of the engagement ``ref`` (from ``engagement_ref``) names, for every command
    that takes an engagement ID; one that names nothing exits 1, and so does a note where
    ``email_only`` asks for an email."""
    found = mailview.find(conn, ref)
    if found is None:
        if isinstance(ref, int):
            fail(f"no engagement {ref}")
        shown = ref if ref.startswith("sha256:") else f"<{ref}>"
        fail(f"no email with Message-ID {printable(shown)}")
    if email_only and found.type != "email":
        fail(f"engagement {found.engagement_id} is a {found.type}, not an email")
    return found.engagement_id


def emit_list(
    items: Sequence[dict[str, Any]],
    as_json: bool,
    keys: Sequence[str],
    header: Sequence[str] | None = None,
) -> None:
    """What a list command prints: with ``--json`` the items as they are, else a table of
    their ``keys`` (a list's values joined by spaces) under ``header`` (default: the keys)."""
    if as_json:
        emit_json(items)
        return
    rows = [[_cell(item[k]) for k in keys] for item in items]
    print_table(rows, header or keys)


def _cell(value: Any) -> Any:
    return " ".join(map(str, value)) if isinstance(value, list) else value


def print_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    """Columns padded to their widest cell; every cell escaped (``printable``), since a
    name, subject or reason may come from a mail."""
    text = [[printable(v) for v in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in text) for i in range(len(header))]
    for row in text:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


# Control (C0, DEL, C1), format (bidi overrides, zero-width) and line/paragraph separator
# characters: in a subject or a name from a mail they could move the cursor, recolour the
# terminal or make one line read as another.
_UNSAFE = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def printable(value: Any) -> str:
    """A value from a mail made safe to print on a terminal: unsafe characters appear
    escaped (``\\x1b``, ``\\u202e``), everything else as it is."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    return "".join(_escaped(c) if unicodedata.category(c) in _UNSAFE else c for c in text)


def _escaped(char: str) -> str:
    code = ord(char)
    return (
        f"\\x{code:02x}"
        if code < 0x100
        else f"\\u{code:04x}"
        if code < 0x10000
        else f"\\U{code:08x}"
    )
