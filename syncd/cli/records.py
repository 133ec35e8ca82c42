"""The record commands of the CLI: contacts, timeline, search; and how a timeline and a
record with its timeline are printed for people (``print_timeline``, ``print_record``),
which ``deals show``, ``tickets show`` (cli/deals.py) and ``companies show``
(cli/companies.py) use too, in the same item shape as ``timeline``.

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
    emit_list,
    fail,
    open_store,
    printable,
)
from syncd.crm.lifecycle import STAGES, StageBackward, StageError, check_stage
from syncd.crm.model import ContactRecord
from syncd.crm.rules import RulesSettings
from syncd.crm.team import Team
from syncd.mail.addresses import normalise
from syncd.sources.files import FileFormatError, read_contacts
from syncd.store import db, detached, queries, records, threads
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
    columns = ("email", "name", "owner", "lifecycle_stage", "company", "last_contacted")
    emit_list(found, as_json, columns)
    if paged and not as_json:
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
        click.echo(f"{hit['date']}  {printable(hit['from'])}  {printable(hit['subject'])}")
        click.echo(f"    {printable(' '.join((hit['snippet'] or '').split()))}")


def register(group: click.Group) -> None:
    """Add the record commands to the main CLI group."""
    for command in (contacts, timeline, search):
        group.add_command(command)
