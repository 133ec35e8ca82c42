"""The deal, ticket and note commands of the CLI: ``deals create/stage/list/show``,
``tickets create/status/list/show`` and ``notes add``.

``register(group)`` adds them to the main click group. ``create`` and ``notes add`` print
the new id alone on stdout; ``show`` prints the record with its timeline as
``cli/records.py:print_record`` lays it out (``--json``: the record's fields plus
``"timeline"``). Exit status: 0 done, 1 no such deal, ticket or contact, 2 usage (an id
that is not a number, an unknown stage or status).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
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
)
from syncd.cli.records import print_record
from syncd.store import queries, records, recordviews
from syncd.store.recordviews import MAX_ID


def record_id(text: str, kind: str) -> int:
    """A deal or ticket id as typed; anything but digits exits 2 with one line, and a
    number past SQLite's integers names no record (exit 1: it would not even bind)."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        fail(f"{text!r} is not a {kind} id (a number, as `syncd {kind}s list` shows)", EX_USAGE)
    number = int(text)
    if number > MAX_ID:
        fail(f"no {kind} {number}")
    return number


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
@click.argument("deal", metavar="ID")
@click.argument("stage")
@click.pass_context
def deals_stage(ctx: click.Context, deal: str, stage: str) -> None:
    """Move a deal to STAGE (won: contacts and companies become customers)."""
    deal_id = record_id(deal, "deal")
    with editing_settings(ctx) as (settings, conn):
        records.set_deal_stage(conn, settings.pipelines.deals, deal_id, stage)


@deals.command("list")
@JSON_FLAG
@click.pass_context
def deals_list(ctx: click.Context, as_json: bool) -> None:
    """Deals with stage, amount and contacts."""
    with open_store(ctx, readonly=True) as (_config, conn):
        found = queries.deals_list(conn)
    emit_list(found, as_json, ("id", "name", "stage", "amount", "contacts"))


@deals.command("show")
@click.argument("deal", metavar="ID")
@JSON_FLAG
@click.pass_context
def deals_show(ctx: click.Context, deal: str, as_json: bool) -> None:
    """One deal with its contacts, companies and the timeline of its engagements."""
    _show(ctx, "deal", deal, recordviews.deal_show, as_json)


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
@click.argument("ticket", metavar="ID")
@click.argument("status")
@click.pass_context
def tickets_status(ctx: click.Context, ticket: str, status: str) -> None:
    """Set a ticket's status."""
    ticket_id = record_id(ticket, "ticket")
    with editing_settings(ctx) as (settings, conn):
        records.set_ticket_status(conn, settings.pipelines.tickets, ticket_id, status)


@tickets.command("list")
@JSON_FLAG
@click.pass_context
def tickets_list(ctx: click.Context, as_json: bool) -> None:
    """Tickets with status and contacts."""
    with open_store(ctx, readonly=True) as (_config, conn):
        found = queries.tickets_list(conn)
    emit_list(found, as_json, ("id", "subject", "status", "contacts"))


@tickets.command("show")
@click.argument("ticket", metavar="ID")
@JSON_FLAG
@click.pass_context
def tickets_show(ctx: click.Context, ticket: str, as_json: bool) -> None:
    """One ticket with its contacts, companies and the timeline of its engagements."""
    _show(ctx, "ticket", ticket, recordviews.ticket_show, as_json)


def _show(
    ctx: click.Context,
    kind: str,
    text: str,
    read: Callable[[sqlite3.Connection, int], dict[str, Any] | None],
    as_json: bool,
) -> None:
    """Print the deal or ticket ``text`` names, with its timeline (``read`` finds it)."""
    number = record_id(text, kind)
    with open_store(ctx, readonly=True) as (_config, conn):
        found = read(conn, number)
    if found is None:
        fail(f"no {kind} {number}")
    if as_json:
        emit_json(found)
    else:
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
    """Add the deal, ticket and note commands to the main CLI group."""
    for command in (deals, tickets, notes):
        group.add_command(command)
