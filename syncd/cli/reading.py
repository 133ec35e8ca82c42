"""Reading what was logged: ``email show`` (an email in full, or its raw bytes),
``attachment save`` and ``thread``.

An email is named by its engagement id, as the timeline shows it (``id`` in ``--json``),
or by its Message-ID, with or without angle brackets (``common.engagement_ref``, as for
pin and the other engagement commands); an attachment by the id ``email show`` lists.
Everything taken from mail (names, subjects, bodies, file names) is escaped for the
terminal (``printable``); raw bytes and attachment content go only to a file or a pipe,
never to a terminal. An ID that names nothing exits 1 with one line, as ``contacts
show`` does for an unknown address; one that can name nothing (``abc``, ``0``) exits 2.
"""

from __future__ import annotations

import errno
import hashlib
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import click

from syncd.cli.common import (
    EX_DATAERR,
    EX_USAGE,
    JSON_FLAG,
    emit_json,
    engagement_ref,
    fail,
    find_engagement,
    id_number,
    open_store,
    printable,
)
from syncd.cli.records import tracking_text
from syncd.mail.filenames import UnsafeName, save_name
from syncd.mail.parse import PARTIAL_DEFECT
from syncd.store import mailview, raw, threads

ARROWS = {"outgoing": "->", "incoming": "<-"}
# A path given with -o that cannot be a file: the user's to mend, not worth a retry.
_BAD_PATH = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP})


def size_text(size: int | None) -> str:
    """A byte count as people read it: ``812 B``, ``14.2 KB``, ``3.1 MB``."""
    n = float(size or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{int(n)} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _refuse_terminal(what: str) -> None:
    if sys.stdout.isatty():
        fail(
            f"{what} writes bytes from the mail as they are (escape codes included), so not "
            "to a terminal: send them to a file or a pipe (> FILE, | less)",
            EX_USAGE,
        )


# --- email show ---------------------------------------------------------------------------


@click.group("email")
def email_group() -> None:
    """Logged emails: read one in full."""


@email_group.command("show")
@click.argument("ident", metavar="ID")
@click.option(
    "--raw",
    "as_raw",
    is_flag=True,
    help="Write the original message bytes to stdout (a file or pipe, not a terminal).",
)
@JSON_FLAG
@click.pass_context
def email_show(ctx: click.Context, ident: str, as_raw: bool, as_json: bool) -> None:
    """Show an email: headers, text body, attachments (stored or why not), where it was
    seen, its associations and tracking. ID is the id the timeline shows, or the
    Message-ID (with or without <>)."""
    if as_raw and as_json:
        fail("--raw and --json do not go together", EX_USAGE)
    ref = engagement_ref(ident)
    if as_raw:
        _show_raw(ctx, ref)
        return
    with open_store(ctx, readonly=True) as (_config, conn):
        engagement_id = find_engagement(conn, ref, email_only=True)
        view = mailview.email_view(conn, engagement_id)
    if view is None:  # removed since it was found (each read is its own snapshot)
        fail(f"no engagement {engagement_id}")
    if as_json:
        emit_json(view)
    else:
        _print_email(view)


def _show_raw(ctx: click.Context, ref: int | str) -> None:
    """The message's bytes as they arrived, to a file or pipe."""
    _refuse_terminal("email show --raw")
    with open_store(ctx, readonly=True) as (config, conn):
        engagement_id = find_engagement(conn, ref, email_only=True)
        data = raw.raw_message(conn, engagement_id, config.store.attachments_dir)
        partial = PARTIAL_DEFECT in mailview.defects(conn, engagement_id)
    if data is None:
        fail(f"email {engagement_id}: no raw copy of it is kept")
    if partial:
        click.echo(
            f"syncd: email {engagement_id} was fetched by parts: its attachments over "
            "max_attachment_mb stayed on the IMAP server and are not in these bytes",
            err=True,
        )
    out = click.get_binary_stream("stdout")
    out.write(data)
    out.flush()


def _person(name: str, email: str | None) -> str:
    if not email:
        return printable(name)
    return f"{printable(name)} <{printable(email)}>" if name else printable(email)


def _message_id(message_id: str | None) -> str:
    return f"<{printable(message_id)}>" if message_id else "(none: keyed by a digest)"


def _people(people: Iterable[dict[str, str]]) -> str:
    return ", ".join(_person(p["name"], p["email"]) for p in people)


def _print_email(view: dict[str, Any]) -> None:
    missing = "  (no Date header: when it was received)" if view["date_missing"] else ""
    lines = [
        f"email {view['id']}  ({view['direction']}, {size_text(view['size'])})",
        f"From:       {_person(view['from_name'], view['from'])}",
        f"To:         {_people(view['recipients']['to'])}",
    ]
    if view["recipients"]["cc"]:
        lines.append(f"Cc:         {_people(view['recipients']['cc'])}")
    lines += [
        f"Date:       {view['date']}{missing}",
        f"Subject:    {printable(view['subject'])}",
        f"Message-ID: {_message_id(view['message_id'])}",
        f"Seen in:    {', '.join(printable(s) for s in view['sources'])}",
        f"Status:     {view['status']}{tracking_text(view)}",
    ]
    links = view["associations"]
    for kind in ("contacts", "companies", "deals", "tickets"):
        if links[kind]:
            shown = ", ".join(printable(x) for x in links[kind])
            lines.append(f"{kind.capitalize() + ':':<11} {shown}")
    count = view["thread"]["count"]
    if count > 1:
        lines.append(f"Thread:     {count} emails (syncd thread {view['id']})")
    for note in view["defects"]:
        lines.append(f"Note:       {printable(note)}")
    if view["attachments"]:
        lines.append("Attachments:")
        for a in view["attachments"]:
            state = "stored" if a["stored"] else (a["note"] or "not stored")
            lines.append(
                f"  {a['id']:>6}  {printable(a['filename']) or '(no name)'}  "
                f"{printable(a['content_type'])}  {size_text(a['size'])}  {printable(state)}"
            )
    for line in lines:
        click.echo(line)
    click.echo("")
    for line in (view["body"] or "").split("\n"):
        # Tabs are laid out, not escaped; everything else unsafe is escaped first, so the
        # columns are those the user sees.
        click.echo("\t".join(printable(part) for part in line.split("\t")).expandtabs(8))


# --- attachment save ----------------------------------------------------------------------


@click.group("attachment")
def attachment_group() -> None:
    """Attachments of logged emails."""


@attachment_group.command("save")
@click.argument("attachment", metavar="ID")
@click.option(
    "-o",
    "--output",
    metavar="PATH",
    help="Where to write it: a file, a directory, or - for stdout. "
    "Default: its file name from the mail, in the current directory.",
)
@click.option("--force", is_flag=True, help="Replace a file that exists.")
@JSON_FLAG
@click.pass_context
def attachment_save(
    ctx: click.Context, attachment: str, output: str | None, force: bool, as_json: bool
) -> None:
    """Save an attachment (ID as `email show` lists it) and print where it went
    (with --json: its id, path, size, content type and sha256)."""
    attachment_id = id_number(attachment)
    if attachment_id is None:
        shown = printable(attachment)
        fail(f"not an attachment id: '{shown}' (the number email show lists)", EX_USAGE)
    with open_store(ctx, readonly=True) as (config, conn):
        row = mailview.attachment(conn, attachment_id)
    if row is None:
        fail(f"no attachment with id {attachment_id}")
    name = printable(row["filename"]) or "(no name)"
    if not row["stored"]:
        why = (row["note"] or "no reason was recorded").removeprefix("not stored: ")
        fail(f"attachment {attachment_id} ({name}, {size_text(row['size'])}) is not stored: {why}")
    source = mailview.attachment_file(config.store.attachments_dir, row["sha256"])
    if source is None:
        fail(f"attachment {attachment_id} has no stored content", EX_DATAERR)
    if output == "-":
        _refuse_terminal("attachment save -o -")
        _copy(source, click.get_binary_stream("stdout"), row)
        return
    target = _target(row, output)
    if target.exists() and not force:
        fail(f"{printable(target)} exists; --force replaces it")
    _save(source, target, row, force)
    if as_json:
        emit_json({"id": row["id"], "path": str(target.resolve()), "size": row["size"],
                   "content_type": row["content_type"], "sha256": row["sha256"]})  # fmt: skip
        return
    click.echo(printable(target))


def _target(row: dict[str, Any], output: str | None) -> Path:
    """Where to write: ``-o`` as given (a directory gets the mail's name inside it), else
    the mail's file name, made safe, in the current directory."""
    if output is not None and not Path(output).is_dir():
        return Path(output)
    try:
        name = save_name(row["filename"], row["id"], row["content_type"])
    except UnsafeName as exc:
        fail(
            f"attachment {row['id']}: its file name '{printable(row['filename'])}' is not "
            f"safe to save under ({exc}); name the file with -o PATH"
        )
    return Path(output or ".") / name


def _save(source: Path, target: Path, row: dict[str, Any], force: bool) -> None:
    """Write the content to ``target``: never over an existing file without ``force``
    (O_EXCL, which also refuses a symbolic link there), and with ``force`` through a
    temporary file renamed over it. A failed or damaged copy leaves nothing behind."""
    try:
        if force:
            fd, temporary = tempfile.mkstemp(prefix=".syncd-save-", dir=target.parent)
            path = Path(temporary)
        else:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            path = target
    except FileExistsError:
        fail(f"{printable(target)} exists; --force replaces it")
    except OSError as exc:
        if exc.errno not in _BAD_PATH:
            raise  # no permission (77), a full disk (75): the usual codes
        fail(f"cannot write {printable(target)}: {exc.strerror}")
    try:
        with os.fdopen(fd, "wb") as out:
            _copy(source, out, row)
        if force:
            os.replace(path, target)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _copy(source: Path, out: IO[bytes], row: dict[str, Any]) -> None:
    """Copy the stored content to ``out``, checking it against its sha256 and size."""
    digest, copied = hashlib.sha256(), 0
    try:
        handle = source.open("rb")
    except FileNotFoundError:
        fail(
            f"attachment {row['id']} is recorded as stored but its file {source} is missing; "
            "restore the attachments directory from a backup",
            EX_DATAERR,
        )
    with handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            copied += len(chunk)
            out.write(chunk)
    out.flush()
    if digest.hexdigest() != row["sha256"] or copied != row["size"]:
        fail(
            f"attachment {row['id']}: its file {source} does not match its checksum; "
            "restore the attachments directory from a backup",
            EX_DATAERR,
        )


# --- thread -------------------------------------------------------------------------------


@click.command("thread")
@click.argument("ident", metavar="ID")
@JSON_FLAG
@click.pass_context
def thread(ctx: click.Context, ident: str, as_json: bool) -> None:
    """The thread an email belongs to, oldest first. ID is an email's id or Message-ID."""
    ref = engagement_ref(ident)
    with open_store(ctx, readonly=True) as (_config, conn):
        items = threads.thread(conn, find_engagement(conn, ref, email_only=True))
    if as_json:
        emit_json(items)
        return
    for item in items:
        arrow = ARROWS.get(item["direction"] or "", "  ")
        files = len(item["attachments"])
        extra = f"  [{files} attachment{'s' if files != 1 else ''}]" if files else ""
        click.echo(
            f"{item['id']:>6}  {item['date']}  {arrow} {printable(item['from'])}  "
            f"{printable(item['subject'])}{tracking_text(item)}{extra}"
        )


def register(group: click.Group) -> None:
    """Add the reading commands to the main CLI group."""
    for command in (email_group, attachment_group, thread):
        group.add_command(command)
