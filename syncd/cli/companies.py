"""The companies commands of the CLI: ``companies list`` and ``companies show``.

Companies are made by logging (a contact's registrable domain) and by contact import (a
company name); these commands read them. ``show`` takes an id, a domain or a name and
prints the company's fields, domains, contacts and the timeline of its engagements, in
the contact timeline's item shape. Exit status: 0 done, 1 no such company, 2 a name
several companies share (the line lists their ids).
"""

from __future__ import annotations

import click

from syncd.cli.common import (
    EX_USAGE,
    JSON_FLAG,
    emit_json,
    emit_list,
    fail,
    open_store,
)
from syncd.cli.records import print_record
from syncd.store import recordviews


@click.group("companies")
def companies() -> None:
    """Companies: list, show with their contacts and timeline."""


@companies.command("list")
@JSON_FLAG
@click.pass_context
def companies_list(ctx: click.Context, as_json: bool) -> None:
    """Companies with their domains, owner, stage and how many contacts, by name."""
    with open_store(ctx, readonly=True) as (_config, conn):
        found = recordviews.companies_list(conn)
    keys = ("id", "name", "domains", "owner", "lifecycle_stage", "contact_count", "last_activity")
    header = ("id", "name", "domains", "owner", "lifecycle_stage", "contacts", "last_activity")
    emit_list(found, as_json, keys, header)


@companies.command("show")
@click.argument("company", metavar="ID_OR_DOMAIN")
@JSON_FLAG
@click.pass_context
def companies_show(ctx: click.Context, company: str, as_json: bool) -> None:
    """One company: fields, domains, contacts, deals, tickets and the timeline of its
    engagements. ID_OR_DOMAIN is its id, one of its domains, or its name."""
    with open_store(ctx, readonly=True) as (_config, conn):
        ids = recordviews.company_find(conn, company)
        if len(ids) > 1:
            listed = ", ".join(map(str, ids))
            fail(f"{len(ids)} companies are named {company!r} (ids {listed}); give an id", EX_USAGE)
        found = recordviews.company_show(conn, ids[0]) if ids else None
    if found is None:
        fail(f"no company with id, domain or name {company!r}")
    if as_json:
        emit_json(found)
        return
    contacts = found.pop("contacts")
    print_record(
        found | {"contacts": [c["email"] for c in contacts], "timeline": found["timeline"]}
    )


def register(group: click.Group) -> None:
    """Add the companies commands to the main CLI group."""
    group.add_command(companies)
