"""The record commands of the CLI: import, contacts, timeline, search, deals, tickets,
notes, quarantine, export, erase, backup.

``register(group)`` adds them to the main click group. Each command loads the config
from ``ctx.obj.config()``, opens the store it names, and either prints for humans or,
with ``--json``, one JSON document on stdout. Exit status: 0 done, 1 problems found
(no such contact, quarantined mail, a bad row in a contacts file), 2 usage (an unknown
stage, an owner who is not on the team).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import click

from syncd.crm.lifecycle import StageError, check_stage
from syncd.crm.model import ContactRecord
from syncd.crm.rules import RulesSettings
from syncd.mail.provenance import Provenance
from syncd.pipeline import Pipeline
from syncd.sources.files import FileFormatError, MailFiles, read_contacts
from syncd.store import db, queries, records
from syncd.store.backup import backup as backup_store
from syncd.store.erase import erase as erase_address
from syncd.store.erase import scan
from syncd.store.export import export_csv, export_json, export_vcard

BATCH = 500
EX_PROBLEMS, EX_USAGE = 1, 2
JSON_FLAG = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


def _fail(message: str, code: int = EX_PROBLEMS) -> NoReturn:
    click.echo(f"syncd: {message}", err=True)
    sys.exit(code)


def _emit(document: Any) -> None:
    click.echo(json.dumps(document, ensure_ascii=False, indent=2, default=str))


@contextmanager
def _store(ctx: click.Context) -> Iterator[tuple[Any, sqlite3.Connection]]:
    """The loaded config and an open store connection, closed afterwards."""
    config = ctx.obj.config()
    conn = db.connect(config.store.path)
    try:
        yield config, conn
    finally:
        conn.close()


@contextmanager
def _editing(ctx: click.Context) -> Iterator[tuple[RulesSettings, sqlite3.Connection]]:
    """Settings and a connection inside one transaction; an unknown stage exits 2 and a
    missing record 1, with nothing written."""
    with _store(ctx) as (config, conn):
        try:
            with db.transaction(conn):
                yield RulesSettings.from_config(config), conn
        except StageError as exc:
            _fail(str(exc), EX_USAGE)
        except LookupError as exc:
            _fail(str(exc.args[0]))


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    text = [[("" if v is None else str(v)) for v in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in text) for i in range(len(header))]
    for row in text:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _team_member(settings: RulesSettings, address: str) -> str | None:
    return settings.team.get(address.strip().lower())


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
    with _store(ctx) as (config, conn):
        settings = RulesSettings.from_config(config)
        member = _team_member(settings, owner) if owner else None
        if owner and member is None:
            _fail(f"--owner {owner} is not a team member's address or alias", EX_USAGE)
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
        _emit(result)
    else:
        click.echo(", ".join(f"{k} {v}" for k, v in result.items()))
    if result["quarantined"]:
        sys.exit(EX_PROBLEMS)


def _import_batches(pipeline: Pipeline, files: MailFiles, owner: str | None) -> Iterator[Any]:
    def batches() -> Iterator[list[tuple[bytes, Provenance]]]:
        batch: list[tuple[bytes, Provenance]] = []
        for raw, received in files:
            batch.append((raw, Provenance("import", received, owner=owner)))
            if len(batch) >= BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    if not sys.stderr.isatty():
        for batch in batches():
            yield from pipeline.ingest_batch(batch)
        return
    with click.progressbar(length=len(files), label="importing", file=sys.stderr) as bar:
        for batch in batches():
            yield from pipeline.ingest_batch(batch)
            bar.update(len(batch))


# --- contacts ----------------------------------------------------------------------------


@click.group("contacts")
def contacts() -> None:
    """Contacts: import from CSV or vCard, list, show."""


@contacts.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def contacts_import(ctx: click.Context, file: Path) -> None:
    """Upsert contacts by email from a CSV (email, first_name, last_name, company, owner,
    lifecycle_stage, legal_basis) or a vCard file. Nothing is written if any row is bad."""
    try:
        found = read_contacts(file)
    except FileFormatError as exc:
        _fail(str(exc))
    with _store(ctx) as (config, conn):
        settings = RulesSettings.from_config(config)
        checked, problems = _check_contacts(found, settings)
        for problem in problems:
            click.echo(problem, err=True)
        if problems:
            _fail(f"{len(problems)} problem(s) in {file}; nothing imported")
        with db.transaction(conn):
            created = sum(records.upsert_contact(conn, r) for r in checked)
    click.echo(f"created {created}, updated {len(checked) - created}")


def _check_contacts(
    found: list[ContactRecord], settings: RulesSettings
) -> tuple[list[ContactRecord], list[str]]:
    checked, problems = [], []
    for record in found:
        where = record.where
        if "@" not in record.email:
            problems.append(f"{where}: email {record.email!r} is not an address")
            continue
        if record.lifecycle_stage:
            try:
                check_stage(record.lifecycle_stage)
            except StageError as exc:
                problems.append(f"{where}: {exc}")
                continue
        owner = record.owner
        if owner:
            member = _team_member(settings, owner)
            if member is None:
                problems.append(f"{where}: owner {owner} is not a team member")
                continue
            record = replace(record, owner=member)
        checked.append(record)
    return checked, problems


@contacts.command("list")
@JSON_FLAG
@click.pass_context
def contacts_list(ctx: click.Context, as_json: bool) -> None:
    """Contacts with owner, lifecycle stage, company and last contacted."""
    with _store(ctx) as (_config, conn):
        found = queries.contacts_list(conn)
    if as_json:
        _emit(found)
        return
    columns = ("email", "name", "owner", "lifecycle_stage", "company", "last_contacted")
    _table([[c[k] for k in columns] for c in found], columns)


@contacts.command("show")
@click.argument("email")
@JSON_FLAG
@click.pass_context
def contacts_show(ctx: click.Context, email: str, as_json: bool) -> None:
    """One contact in full."""
    with _store(ctx) as (_config, conn):
        contact = queries.contact_show(conn, email)
    if contact is None:
        _fail(f"no contact with address {email}")
    if as_json:
        _emit(contact)
        return
    for key, value in contact.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        click.echo(f"{key}: {'' if shown is None else shown}")


# --- timeline and search -----------------------------------------------------------------


@click.command("timeline")
@click.argument("email")
@JSON_FLAG
@click.pass_context
def timeline(ctx: click.Context, email: str, as_json: bool) -> None:
    """The contact's engagements, newest first."""
    with _store(ctx) as (_config, conn):
        items = queries.timeline(conn, email)
    if items is None:
        _fail(f"no contact with address {email}")
    if as_json:
        _emit(items)
        return
    for item in items:
        arrow = {"outgoing": "->", "incoming": "<-"}.get(item["direction"] or "", "  ")
        title = item["subject"] if item["type"] == "email" else item.get("text", "")
        sources = ",".join(item["sources"])
        click.echo(f"{item['date']}  {item['type']:<7} {arrow} {title}  [{sources}]".rstrip())


@click.command("search")
@click.argument("query", nargs=-1, required=True)
@click.option("--limit", default=50, show_default=True, help="At most this many results.")
@JSON_FLAG
@click.pass_context
def search(ctx: click.Context, query: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Full-text search over subjects, bodies and addresses of logged email."""
    with _store(ctx) as (_config, conn):
        found = queries.search(conn, " ".join(query), limit=limit)
    if as_json:
        _emit(found)
        return
    for hit in found:
        click.echo(f"{hit['date']}  {hit['from'] or ''}  {hit['subject']}")
        click.echo(f"    {' '.join((hit['snippet'] or '').split())}")


# --- deals, tickets, notes -----------------------------------------------------------------


@click.group("deals")
def deals() -> None:
    """Deals: create, move between stages, list."""


@deals.command("create")
@click.argument("name")
@click.option("--contact", "contacts_", multiple=True, required=True, metavar="EMAIL")
@click.option("--amount", type=float, default=None)
@click.option("--stage", default=None, help="Default: the pipeline's first stage.")
@click.pass_context
def deals_create(
    ctx: click.Context,
    name: str,
    contacts_: tuple[str, ...],
    amount: float | None,
    stage: str | None,
) -> None:
    """Create a deal with contacts (and their companies); prints its id."""
    with _editing(ctx) as (settings, conn):
        contact_ids = records.contact_ids_for(conn, contacts_)
        pipeline = settings.pipelines.deals
        deal_id = records.create_deal(conn, pipeline, name, contact_ids, amount=amount, stage=stage)
    click.echo(deal_id)


@deals.command("stage")
@click.argument("deal_id", metavar="ID", type=int)
@click.argument("stage")
@click.pass_context
def deals_stage(ctx: click.Context, deal_id: int, stage: str) -> None:
    """Move a deal to STAGE (won: contacts and companies become customers)."""
    with _editing(ctx) as (settings, conn):
        records.set_deal_stage(conn, settings.pipelines.deals, deal_id, stage)


@deals.command("list")
@JSON_FLAG
@click.pass_context
def deals_list(ctx: click.Context, as_json: bool) -> None:
    """Deals with stage, amount and contacts."""
    with _store(ctx) as (_config, conn):
        found = queries.deals_list(conn)
    if as_json:
        _emit(found)
        return
    rows = [[d["id"], d["name"], d["stage"], d["amount"], " ".join(d["contacts"])] for d in found]
    _table(rows, ("id", "name", "stage", "amount", "contacts"))


@click.group("tickets")
def tickets() -> None:
    """Tickets: create, set status, list."""


@tickets.command("create")
@click.argument("subject")
@click.option("--contact", "contacts_", multiple=True, required=True, metavar="EMAIL")
@click.pass_context
def tickets_create(ctx: click.Context, subject: str, contacts_: tuple[str, ...]) -> None:
    """Open a ticket for contacts (and their companies); prints its id."""
    with _editing(ctx) as (settings, conn):
        contact_ids = records.contact_ids_for(conn, contacts_)
        ticket_id = records.create_ticket(conn, settings.pipelines.tickets, subject, contact_ids)
    click.echo(ticket_id)


@tickets.command("status")
@click.argument("ticket_id", metavar="ID", type=int)
@click.argument("status")
@click.pass_context
def tickets_status(ctx: click.Context, ticket_id: int, status: str) -> None:
    """Set a ticket's status."""
    with _editing(ctx) as (settings, conn):
        records.set_ticket_status(conn, settings.pipelines.tickets, ticket_id, status)


@tickets.command("list")
@JSON_FLAG
@click.pass_context
def tickets_list(ctx: click.Context, as_json: bool) -> None:
    """Tickets with status and contacts."""
    with _store(ctx) as (_config, conn):
        found = queries.tickets_list(conn)
    if as_json:
        _emit(found)
        return
    rows = [[t["id"], t["subject"], t["status"], " ".join(t["contacts"])] for t in found]
    _table(rows, ("id", "subject", "status", "contacts"))


@click.group("notes")
def notes() -> None:
    """Notes on a contact's timeline."""


@notes.command("add")
@click.argument("email")
@click.argument("text")
@click.pass_context
def notes_add(ctx: click.Context, email: str, text: str) -> None:
    """Add a note to the contact's timeline; prints its id."""
    with _editing(ctx) as (settings, conn):
        (contact_id,) = records.contact_ids_for(conn, [email])
        cap = settings.max_engagements_per_record
        note_id = records.add_note(conn, contact_id, text, cap=cap)
    click.echo(note_id)


# --- quarantine, export, erase, backup ---------------------------------------------------


@click.group("quarantine")
def quarantine() -> None:
    """Mail that could not be logged, with the reason."""


@quarantine.command("list")
@JSON_FLAG
@click.pass_context
def quarantine_list(ctx: click.Context, as_json: bool) -> None:
    """Quarantined mail with reason, source and size."""
    with _store(ctx) as (_config, conn):
        found = queries.quarantine_list(conn)
    if as_json:
        _emit(found)
        return
    rows = [[q["id"], q["quarantined_at"], q["source"], q["size"], q["reason"]] for q in found]
    _table(rows, ("id", "quarantined_at", "source", "size", "reason"))


@quarantine.command("retry")
@click.argument("quarantine_id", metavar="[ID]", type=int, required=False)
@click.pass_context
def quarantine_retry(ctx: click.Context, quarantine_id: int | None) -> None:
    """Run quarantined mail (all, or ID) through the pipeline again."""
    with _store(ctx) as (config, conn), Pipeline.from_config(config, conn) as pipeline:
        results = pipeline.retry_quarantined([quarantine_id] if quarantine_id else None)
    if quarantine_id is not None and not results:
        _fail(f"no quarantined message {quarantine_id}")
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
    with _store(ctx) as (_config, conn):
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
    with _store(ctx) as (config, conn):
        report = erase_address(conn, email, Path(config.store.attachments_dir))
        store_path = Path(config.store.path)
    if not report.found:
        _fail(f"no trace of {email} in the store")
    click.echo(
        f"erased {', '.join(report.addresses)}: {report.contacts} contact(s), "
        f"{report.deleted} engagement(s) deleted, {report.redacted} redacted, "
        f"{report.quarantined} quarantined message(s), {report.files} attachment file(s)"
    )
    paths = [p for p in _store_files(store_path) if p.exists()]
    paths.append(Path(config.store.attachments_dir))
    left = [
        hit
        for address in report.addresses
        for hit in scan([p for p in paths if p.exists()], address)
    ]
    if report.wal_busy or left:
        where = ", ".join(sorted({str(p) for p in left})) or f"{store_path}-wal"
        _fail(f"traces remain in {where}; stop the daemon and run erase again")
    click.echo("backups made before now still hold these addresses", err=True)


def _store_files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


@click.command("backup")
@click.argument("dest", type=click.Path(path_type=Path))
@click.pass_context
def backup(ctx: click.Context, dest: Path) -> None:
    """A consistent copy of the store, safe while the daemon runs."""
    with _store(ctx) as (_config, conn):
        try:
            size = backup_store(conn, dest)
        except OSError as exc:
            _fail(f"cannot write {dest}: {exc.strerror or exc}")
    click.echo(f"{dest}: {size} bytes", err=True)


def register(group: click.Group) -> None:
    """Add the record commands to the main CLI group."""
    for command in (
        import_mail,
        contacts,
        timeline,
        search,
        deals,
        tickets,
        notes,
        quarantine,
        export,
        erase,
        backup,
    ):
        group.add_command(command)
