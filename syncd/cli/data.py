"""The CLI commands that move mail and data in and out of the store: import, quarantine,
export, erase, backup, restore.

``register(group)`` adds them to the main click group. Exit status: 0 done, 1 problems
found (quarantined mail, traces left after an erase, a damaged archive, a backup or
restore that would replace something without --force), 2 usage, 75 restore while
``syncd run`` holds the store.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from syncd.cli.common import (
    EX_PROBLEMS,
    EX_TEMPFAIL,
    EX_USAGE,
    JSON_FLAG,
    emit_json,
    emit_list,
    fail,
    open_store,
)
from syncd.config.values import EMAIL_RE
from syncd.crm.team import Team
from syncd.errors import StoreError
from syncd.pipeline import Pipeline
from syncd.services.intake import deliverer
from syncd.sources.base import hand_over
from syncd.sources.files import MailFiles, handovers
from syncd.store import queries
from syncd.store.backup import (
    BackupError,
    DamagedArchive,
    Report,
    check_archive,
    restore_archive,
    write_archive,
)
from syncd.store.erase import erase as erase_address
from syncd.store.erase import raw_copies_naming, scan
from syncd.store.export import export_csv, export_json, export_vcard
from syncd.store.privatefiles import private_dir

BATCH = 500


# --- import -----------------------------------------------------------------------------


@click.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--owner", metavar="EMAIL", help="Team member who owns contacts created.")
@JSON_FLAG
@click.pass_context
def import_mail(ctx: click.Context, path: Path, owner: str | None, as_json: bool) -> None:
    """Log .eml files, a directory of them, an mbox or a Maildir, through the sync rules.

    Without --owner no contacts are created: mail is logged only on existing contacts.
    """
    with open_store(ctx) as (config, conn):
        member = Team.from_config(config).member(owner) if owner else None
        if owner and member is None:
            fail(f"--owner {owner} is not a team member's address or alias", EX_USAGE)
        files = MailFiles(path)
        counts: Counter[str] = Counter()
        with Pipeline.from_config(config, conn) as pipeline:
            for outcome in _import_batches(pipeline, files, member):
                counts[outcome.status] += 1
                if outcome.status == "quarantined":
                    click.echo(f"quarantined: {outcome.reason}", err=True)
    result = {
        "logged": counts["logged"],
        "duplicates": counts["duplicate"],
        "skipped": counts["skipped"],
        "quarantined": counts["quarantined"],
    }
    if as_json:
        emit_json(result)
    else:
        click.echo(", ".join(f"{k} {v}" for k, v in result.items()))
    if result["quarantined"]:
        sys.exit(EX_PROBLEMS)


def _import_batches(pipeline: Pipeline, files: MailFiles, owner: str | None) -> Iterator[Any]:
    deliver = deliverer(pipeline.ingest_batch)
    delivered = hand_over(handovers(files, owner, BATCH), deliver)
    if not sys.stderr.isatty():
        for outcomes in delivered:
            yield from outcomes
        return
    with click.progressbar(length=len(files), label="importing", file=sys.stderr) as bar:
        for outcomes in delivered:
            yield from outcomes
            bar.update(len(outcomes))


# --- quarantine, export, erase, backup ---------------------------------------------------


@click.group("quarantine")
def quarantine() -> None:
    """Mail that could not be logged, with the reason."""


@quarantine.command("list")
@JSON_FLAG
@click.pass_context
def quarantine_list(ctx: click.Context, as_json: bool) -> None:
    """Quarantined mail with reason, source and size."""
    with open_store(ctx, readonly=True) as (_config, conn):
        found = queries.quarantine_list(conn)
    emit_list(found, as_json, ("id", "quarantined_at", "source", "size", "reason"))


@quarantine.command("retry")
@click.argument("quarantine_id", metavar="[ID]", type=int, required=False)
@click.pass_context
def quarantine_retry(ctx: click.Context, quarantine_id: int | None) -> None:
    """Run quarantined mail (all, or ID) through the pipeline again."""
    with open_store(ctx) as (config, conn), Pipeline.from_config(config, conn) as pipeline:
        results = pipeline.retry_quarantined([quarantine_id] if quarantine_id else None)
    if quarantine_id is not None and not results:
        fail(f"no quarantined message {quarantine_id}")
    for number, outcome in results:
        click.echo(f"{number}: {outcome.status} {outcome.reason}".rstrip())
    if any(o.status == "quarantined" for _n, o in results):
        sys.exit(EX_PROBLEMS)


@click.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json", "vcard"]),
    required=True,
    help="csv and vcard hold contacts; json holds everything.",
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="File; default stdout."
)
@click.pass_context
def export(ctx: click.Context, fmt: str, output: Path | None) -> None:
    """Everything a user may take elsewhere."""
    with open_store(ctx, readonly=True) as (_config, conn):
        if fmt == "json":
            text = json.dumps(export_json(conn), ensure_ascii=False, indent=2, default=str) + "\n"
        else:
            text = export_csv(conn) if fmt == "csv" else export_vcard(conn)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


@click.command("erase")
@click.argument("email")
@click.pass_context
def erase(ctx: click.Context, email: str) -> None:
    """Remove a contact and every trace of its addresses from the store (GDPR)."""
    if not EMAIL_RE.match(email.strip()):
        fail(f"{email!r} is not an email address; erase takes one whole address", 2)
    with open_store(ctx) as (config, conn):
        report = erase_address(conn, email, Path(config.store.attachments_dir))
        store_path = Path(config.store.path)
        packed = sum(raw_copies_naming(conn, a) for a in report.addresses)
    if not report.found:
        fail(f"no trace of {email} in the store")
    click.echo(
        f"erased {', '.join(report.addresses)}: {report.contacts} contact(s), "
        f"{report.deleted} engagement(s) deleted, {report.redacted} redacted, "
        f"{report.quarantined} quarantined message(s), {report.files} attachment file(s), "
        f"{report.tracked} tracked message(s)"
    )
    paths = [p for p in _store_files(store_path) if p.exists()]
    paths.append(Path(config.store.attachments_dir))
    left = [
        hit
        for address in report.addresses
        for hit in scan([p for p in paths if p.exists()], address)
    ]
    if packed:
        left.append(Path(f"{store_path} ({packed} raw copies)"))
    if report.wal_busy or left:
        where = ", ".join(sorted({str(p) for p in left})) or f"{store_path}-wal"
        fail(f"traces remain in {where}; stop the daemon and run erase again")
    click.echo("backups made before now still hold these addresses", err=True)


def _store_files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


@click.command("backup")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace DEST if it exists.")
@click.option("--check", is_flag=True, help="Check the archive DEST instead of writing one.")
@JSON_FLAG
@click.pass_context
def backup(ctx: click.Context, dest: Path, force: bool, check: bool, as_json: bool) -> None:
    """One checked archive of the store and its attachments, safe while the daemon runs.

    A name ending .gz, .tgz, .xz or .bz2 is compressed. With --check, read an archive
    and check every member, the store copy and the counts; nothing is written.
    """
    if check:
        report = _checked(lambda: check_archive(dest), as_json)
        _say(report, f"{dest}: ok, {report.summary()}", as_json)
        return
    config = ctx.obj.config()
    if not config.store.path.exists():
        fail(f"no store at {config.store.path} yet: nothing to back up")
    report = _checked(
        lambda: write_archive(
            config.store.path, Path(config.store.attachments_dir), dest, force=force
        ),
        as_json,
    )
    _say(report, f"{dest}: backup written and verified, {report.summary()}", as_json)


@click.command("restore")
@click.argument("archive", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace the store and attachments there now.")
@JSON_FLAG
@click.pass_context
def restore(ctx: click.Context, archive: Path, force: bool, as_json: bool) -> None:
    """Put a backup archive's store and attachments where the config says, checked.

    The daemon must be stopped; an existing store is replaced only with --force.
    """
    # The lock `syncd run` holds while it runs; held here, no daemon starts meanwhile.
    from syncd.services.daemon import lock_store

    config = ctx.obj.config()
    store = config.store.path
    private_dir(store.parent)  # before the lock file makes it with the umask's bits
    try:
        lock = lock_store(store)
    except StoreError:
        fail(f"`syncd run` is using the store {store}; stop it before restoring", EX_TEMPFAIL)
    try:
        report = _checked(
            lambda: restore_archive(
                archive, store, Path(config.store.attachments_dir), force=force
            ),
            as_json,
        )
    finally:
        lock.close()
    _say(report, f"{store}: restored from {archive} and verified, {report.summary()}", as_json)


def _checked(action: Callable[[], Report], as_json: bool) -> Report:
    """Run a backup action; a damaged archive is one line (or, with --json, a document
    listing every problem) and exit 1."""
    try:
        return action()
    except DamagedArchive as exc:
        if as_json:
            emit_json({"archive": str(exc.archive), "verified": False, "problems": exc.problems})
        fail(str(exc))
    except BackupError as exc:
        fail(str(exc))


def _say(report: Report, line: str, as_json: bool) -> None:
    if as_json:
        emit_json(report.document())
    else:
        click.echo(line, err=True)


def register(group: click.Group) -> None:
    """Add the data commands to the main CLI group."""
    for command in (import_mail, quarantine, export, erase, backup, restore):
        group.add_command(command)
