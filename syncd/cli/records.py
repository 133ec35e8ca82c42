"""The record commands of the CLI: contacts, timeline, search, deals, tickets, notes.

``deals show`` and ``tickets show`` (and ``companies show``, cli/companies.py) print a
record with its timeline, in the same item shape as ``timeline``.

``register(group)`` adds them to the main click group. Each command loads the config
from ``ctx.obj.config()``, opens the store it names, and either prints for humans or,
with ``--json``, one JSON document on stdout. Exit status: 0 done, 1 problems found
(no such contact, quarantined mail, a bad row in a contacts file, a lifecycle stage set
back without clearing it), 2 usage (an unknown stage, an owner who is not on the team).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from syncd.cli.common import (
    EX_USAGE,
    JSON_FLAG,
    editing_settings,
    emit_json,
    fail,
    open_store,
    print_table,
    printable,
)
from syncd.crm.lifecycle import STAGES, StageBackward, StageError, check_stage
from syncd.crm.model import ContactRecord
from syncd.crm.rules import RulesSettings
from syncd.crm.team import Team
from syncd.mail.addresses import normalise
from syncd.sources.files import FileFormatError, read_contacts
from syncd.store import db, detached, queries, records, recordviews, threads
from syncd.store.searchquery import QueryError

# --- contacts ----------------------------------------------------------------------------


@click.group("contacts")
def contacts() -> None:
    """Contacts: import from CSV or vCard, list, show, set, delete."""


@contacts.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def contacts_import(ctx: click.Context, file: Path) -> None:
    """Upsert contacts by email from a CSV (email, first_name, last_name, company, owner,
    lifecycle_stage, legal_basis) or a vCard file. Nothing is written if any row is bad."""
    try:
        found = read_contacts(file)
    except FileFormatError as exc:
        fail(str(exc))
    with open_store(ctx) as (config, conn):
        checked, problems = _check_contacts(found, Team.from_config(config))
        for problem in problems:
            click.echo(problem, err=True)
        if problems:
            fail(f"{len(problems)} problem(s) in {file}; nothing imported")
        settings = RulesSettings.from_config(config)
        cap, basis = settings.max_engagements_per_record, settings.require_legal_basis
        with db.transaction(conn):
            created = sum(
                records.upsert_contact(conn, r, cap=cap, require_legal_basis=basis) for r in checked
            )
    click.echo(f"created {created}, updated {len(checked) - created}")


def _check_contacts(
    found: list[ContactRecord], team: Team
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
            member = team.member(owner)
            if member is None:
                problems.append(f"{where}: owner {owner} is not a team member")
                continue
            record = replace(record, owner=member)
        checked.append(record)
    return checked, problems


@contacts.command("list")
@click.option("--owner", metavar="EMAIL", help="Only contacts this team member owns.")
@click.option("--stage", metavar="STAGE", help=f"Only contacts at this stage: {', '.join(STAGES)}.")
@click.option("--company", metavar="NAME", help="Only contacts of this company (name or domain).")
@click.option(
    "--sort",
    type=click.Choice(sorted(queries.CONTACT_ORDER)),
    default="email",
    show_default=True,
    help="By address, by name, or most recently contacted first.",
)
@click.option("--limit", type=click.IntRange(min=1), help="At most this many contacts.")
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip this many first.")
@JSON_FLAG
@click.pass_context
def contacts_list(
    ctx: click.Context,
    owner: str | None,
    stage: str | None,
    company: str | None,
    sort: str,
    limit: int | None,
    offset: int,
    as_json: bool,
) -> None:
    """Contacts with owner, lifecycle stage, company and last contacted; filters combine."""
    if stage is not None:
        try:
            check_stage(stage)
        except StageError as exc:
            fail(str(exc), EX_USAGE)
    with open_store(ctx, readonly=True) as (config, conn):
        filters: dict[str, Any] = {"stage": stage}
        if owner is not None:
            member = Team.from_config(config).member(owner)
            filters["owner"] = member or normalise(owner)
            # Someone who left the team may still own contacts; anyone else is a typo.
            if member is None and not queries.contacts_count(conn, owner=filters["owner"]):
                fail(f"owner {owner} is not a team member and owns no contacts", EX_USAGE)
        if company is not None:
            filters["company_ids"] = queries.companies_named(conn, company)
            if not filters["company_ids"]:
                fail(f"no company named {company}")
        found = queries.contacts_list(conn, **filters, sort=sort, limit=limit, offset=offset)
        paged = limit is not None or offset > 0
        total = queries.contacts_count(conn, **filters) if paged and not as_json else 0
    if as_json:
        emit_json(found)
        return
    columns = ("email", "name", "owner", "lifecycle_stage", "company", "last_contacted")
    print_table([[c[k] for k in columns] for c in found], columns)
    if paged:
        shown = f"{offset + 1}-{offset + len(found)}" if found else "none"
        click.echo(f"contacts {shown} of {total}")


@contacts.command("show")
@click.argument("email")
@JSON_FLAG
@click.pass_context
def contacts_show(ctx: click.Context, email: str, as_json: bool) -> None:
    """One contact in full."""
    with open_store(ctx, readonly=True) as (_config, conn):
        contact = queries.contact_show(conn, email)
    if contact is None:
        fail(f"no contact with address {email}")
    if as_json:
        emit_json(contact)
        return
    _print_contact(contact)


def _print_contact(contact: dict[str, Any]) -> None:
    for key, value in contact.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        click.echo(f"{key}: {printable('' if shown is None else shown)}")


@contacts.command("set")
@click.argument("email")
@click.option("--owner", metavar="EMAIL", help="The team member who owns it (an alias works).")
@click.option("--stage", metavar="STAGE", help=f"Forward only: {', '.join(STAGES)}.")
@click.option("--clear-stage", is_flag=True, help="Clear the stage first: the only way back.")
@click.option("--legal-basis", metavar="TEXT", help="Its legal basis; '' clears it.")
@click.option("--name", metavar="NAME", help="'First Last' or 'Last, First'; '' clears it.")
@click.option(
    "--company-name", metavar="NAME", help="Its company, by name (made if none); '' for none."
)
@JSON_FLAG
@click.pass_context
def contacts_set(
    ctx: click.Context,
    email: str,
    owner: str | None,
    stage: str | None,
    clear_stage: bool,
    legal_basis: str | None,
    name: str | None,
    company_name: str | None,
    as_json: bool,
) -> None:
    """Set a contact's owner, lifecycle stage, legal basis, name or company. The stage
    moves forward only: to set an earlier one, clear it in the same command."""
    given = (owner, stage, legal_basis, name, company_name)
    if not clear_stage and all(v is None for v in given):
        fail("nothing to set: give --owner, --stage, --clear-stage, --legal-basis, --name "
             "or --company-name", EX_USAGE)  # fmt: skip
    with editing_settings(ctx) as (settings, conn):
        if owner is not None:
            member = settings.team.member(owner)
            if member is None:
                fail(f"owner {owner} is not a team member", EX_USAGE)
            owner = member
        (contact_id,) = records.contact_ids_for(conn, [email])
        try:
            records.set_contact(conn, contact_id, owner=owner, stage=stage,
                                clear_stage=clear_stage, legal_basis=legal_basis, name=name,
                                company_name=company_name)  # fmt: skip
        except StageBackward as exc:
            fail(f"{email}: {exc} (--clear-stage)")
        # A legal basis given under privacy.require_legal_basis lets waiting mail in.
        detached.reattach(conn, contact_id, settings.max_engagements_per_record,
                          require_legal_basis=settings.require_legal_basis)  # fmt: skip
        contact = queries.contact_show(conn, email)
    assert contact is not None
    if as_json:
        emit_json(contact)
        return
    _print_contact(contact)


@contacts.command("delete")
@click.argument("email")
@JSON_FLAG
@click.pass_context
def contacts_delete(ctx: click.Context, email: str, as_json: bool) -> None:
    """Delete a contact record, not its mail: its engagements stay with its addresses
    and are on its timeline again when an address of it is a contact again (logged,
    imported). `syncd erase` removes everything (GDPR)."""
    with editing_settings(ctx) as (_settings, conn):
        (contact_id,) = records.contact_ids_for(conn, [email])
        addresses = detached.contact_addresses(conn, contact_id)
        kept = detached.delete_contact(conn, contact_id)
    if as_json:
        emit_json({"email": addresses[0], "emails": addresses, "engagements_kept": kept})
        return
    click.echo(
        f"deleted contact {addresses[0]}; its {kept} engagement(s) stay with the address "
        "and come back when it is a contact again (erase removes them)"
    )


# --- timeline and search -----------------------------------------------------------------


@click.command("timeline")
@click.argument("email")
@click.option(
    "--threads",
    "by_thread",
    is_flag=True,
    help="One line per thread, with how many of its emails are on the timeline.",
)
@JSON_FLAG
@click.pass_context
def timeline(ctx: click.Context, email: str, by_thread: bool, as_json: bool) -> None:
    """The contact's engagements: pinned first (marked *), then newest first. The #id
    is what pin, unpin, remove, associate and disassociate take."""
    if by_thread:
        timeline_threads(ctx, email, as_json)
        return
    with open_store(ctx, readonly=True) as (_config, conn):
        items = queries.timeline(conn, email)
    if items is None:
        fail(f"no contact with address {email}")
    if as_json:
        emit_json(items)
        return
    print_timeline(items)


def print_timeline(items: list[dict[str, Any]], indent: str = "") -> None:
    """A timeline for humans, one engagement a line; what came in a mail is escaped."""
    for item in items:
        click.echo(timeline_line(item, indent=indent))


def timeline_line(
    item: dict[str, Any], count: int = 1, indent: str = "", pinned: bool | None = None
) -> str:
    """One timeline item for people; ``count`` > 1: the emails of its thread folded in,
    ``pinned``: whether to mark it so (default: whether the item is)."""
    arrow = {"outgoing": "->", "incoming": "<-"}.get(item["direction"] or "", "  ")
    title = printable(item["subject"] if item["type"] == "email" else item.get("text", ""))
    seen = tracking_text(item)
    folded = f"  ({count} emails)" if count > 1 else ""
    sources = ",".join(printable(s) for s in item["sources"])
    # The id is what pin, remove and associate take; a pin shows before the date.
    mark = "*" if (item.get("pinned") if pinned is None else pinned) else " "
    head = f"{indent}{mark}#{item['id']:<6} {item['date']}  {item['type']:<7} {arrow}"
    return f"{head} {title}{seen}{folded}  [{sources}]".rstrip()


def timeline_threads(ctx: click.Context, email: str, as_json: bool) -> None:
    """``timeline --threads``: each thread folded into its latest item and a count."""
    with open_store(ctx, readonly=True) as (_config, conn):
        folded = threads.folded_timeline(conn, email)
    if folded is None:
        fail(f"no contact with address {email}")
    if as_json:
        emit_json(folded)
        return
    for entry in folded:
        click.echo(timeline_line(entry["latest"], entry["count"], pinned=entry["pinned"]))


def print_record(record: dict[str, Any]) -> None:
    """``key: value`` lines (lists joined by commas, escaped), then the record's timeline."""
    for key, value in record.items():
        if key == "timeline":
            continue
        shown = ", ".join(printable(v) for v in value) if isinstance(value, list) else value
        click.echo(f"{key}: {'' if shown is None else printable(shown)}")
    click.echo(f"timeline: {len(record['timeline'])} engagement(s)")
    print_timeline(record["timeline"], indent="  ")


def record_id(text: str, kind: str) -> int:
    """A deal or ticket id as typed; anything but digits exits 2 with one line."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        fail(f"{text!r} is not a {kind} id (a number, as `syncd {kind}s list` shows)", EX_USAGE)
    return int(text)


def tracking_text(item: dict[str, Any]) -> str:
    """What the timeline shows after a tracked email's subject: ``  (opened 3x, clicked
    1x)``, ``  (sent, not opened)``; nothing for untracked mail."""
    summary = item.get("tracking")
    if not summary:
        return ""
    opens, clicks = summary["opens"]["count"], summary["clicks"]["count"]
    parts = [f"opened {opens}x"] if opens else ["sent, not opened"]
    if clicks:
        parts.append(f"clicked {clicks}x")
    if summary["anonymous"]:
        parts.append("by someone")
    machine = summary["machine"]["opens"] + summary["machine"]["clicks"]
    if machine:
        parts.append(f"{machine} machine hit(s) apart")
    return f"  ({', '.join(parts)})"


@click.command("search")
@click.argument("query", nargs=-1, required=True)
@click.option("--limit", default=50, show_default=True, help="At most this many results.")
@JSON_FLAG
@click.pass_context
def search(ctx: click.Context, query: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Full-text search over the subjects, bodies (with forwarded mail), addresses and
    attachment names of logged email, best match first.

    \b
    zebra plan              both words, anywhere (same as zebra AND plan)
    zebra OR okapi          either word
    zebra NOT plan          zebra, without plan
    "price list"            the words next to each other, in this order
    pric*                   words starting with pric
    (zebra OR okapi) plan   parentheses group
    subject:zebra           only in the subject; also body:, addresses:,
                            attachments: (file names), e.g. attachments:pdf
    Operators are upper case (lower-case and, or, not are words). Case and accents
    are ignored; punctuation separates words, so carol@acme.com finds that address.
    """
    with open_store(ctx, readonly=True) as (_config, conn):
        try:
            found = queries.search(conn, " ".join(query), limit=limit)
        except QueryError as exc:
            fail(f"search: {exc} (syncd search --help shows the syntax)", EX_USAGE)
    if as_json:
        emit_json(found)
        return
    for hit in found:
        click.echo(f"{hit['date']}  {hit['from'] or ''}  {hit['subject']}")
        click.echo(f"    {' '.join((hit['snippet'] or '').split())}")


# --- deals, tickets, notes -----------------------------------------------------------------


@click.group("deals")
def deals() -> None:
    """Deals: create, move between stages, list, show."""


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
    with editing_settings(ctx) as (settings, conn):
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
    with editing_settings(ctx) as (settings, conn):
        records.set_deal_stage(conn, settings.pipelines.deals, deal_id, stage)


@deals.command("list")
@JSON_FLAG
@click.pass_context
def deals_list(ctx: click.Context, as_json: bool) -> None:
    """Deals with stage, amount and contacts."""
    with open_store(ctx, readonly=True) as (_config, conn):
        found = queries.deals_list(conn)
    if as_json:
        emit_json(found)
        return
    rows = [[d["id"], d["name"], d["stage"], d["amount"], " ".join(d["contacts"])] for d in found]
    print_table(rows, ("id", "name", "stage", "amount", "contacts"))


@deals.command("show")
@click.argument("deal", metavar="ID")
@JSON_FLAG
@click.pass_context
def deals_show(ctx: click.Context, deal: str, as_json: bool) -> None:
    """One deal with its contacts, companies and the timeline of its engagements."""
    deal_id = record_id(deal, "deal")
    with open_store(ctx, readonly=True) as (_config, conn):
        found = recordviews.deal_show(conn, deal_id)
    if found is None:
        fail(f"no deal {deal_id}")
    if as_json:
        emit_json(found)
        return
    print_record(found)


@click.group("tickets")
def tickets() -> None:
    """Tickets: create, set status, list, show."""


@tickets.command("create")
@click.argument("subject")
@click.option("--contact", "contacts_", multiple=True, required=True, metavar="EMAIL")
@click.pass_context
def tickets_create(ctx: click.Context, subject: str, contacts_: tuple[str, ...]) -> None:
    """Open a ticket for contacts (and their companies); prints its id."""
    with editing_settings(ctx) as (settings, conn):
        contact_ids = records.contact_ids_for(conn, contacts_)
        ticket_id = records.create_ticket(conn, settings.pipelines.tickets, subject, contact_ids)
    click.echo(ticket_id)


@tickets.command("status")
@click.argument("ticket_id", metavar="ID", type=int)
@click.argument("status")
@click.pass_context
def tickets_status(ctx: click.Context, ticket_id: int, status: str) -> None:
    """Set a ticket's status."""
    with editing_settings(ctx) as (settings, conn):
        records.set_ticket_status(conn, settings.pipelines.tickets, ticket_id, status)


@tickets.command("list")
@JSON_FLAG
@click.pass_context
def tickets_list(ctx: click.Context, as_json: bool) -> None:
    """Tickets with status and contacts."""
    with open_store(ctx, readonly=True) as (_config, conn):
        found = queries.tickets_list(conn)
    if as_json:
        emit_json(found)
        return
    rows = [[t["id"], t["subject"], t["status"], " ".join(t["contacts"])] for t in found]
    print_table(rows, ("id", "subject", "status", "contacts"))


@tickets.command("show")
@click.argument("ticket", metavar="ID")
@JSON_FLAG
@click.pass_context
def tickets_show(ctx: click.Context, ticket: str, as_json: bool) -> None:
    """One ticket with its contacts, companies and the timeline of its engagements."""
    ticket_id = record_id(ticket, "ticket")
    with open_store(ctx, readonly=True) as (_config, conn):
        found = recordviews.ticket_show(conn, ticket_id)
    if found is None:
        fail(f"no ticket {ticket_id}")
    if as_json:
        emit_json(found)
        return
    print_record(found)


@click.group("notes")
def notes() -> None:
    """Notes on a contact's timeline."""


@notes.command("add")
@click.argument("email")
@click.argument("text")
@click.pass_context
def notes_add(ctx: click.Context, email: str, text: str) -> None:
    """Add a note to the contact's timeline; prints its id."""
    with editing_settings(ctx) as (settings, conn):
        (contact_id,) = records.contact_ids_for(conn, [email])
        cap = settings.max_engagements_per_record
        note_id = records.add_note(conn, contact_id, text, cap=cap)
    click.echo(note_id)


def register(group: click.Group) -> None:
    """Add the record commands to the main CLI group."""
    for command in (
        contacts,
        timeline,
        search,
        deals,
        tickets,
        notes,
    ):
        group.add_command(command)
