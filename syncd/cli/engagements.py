"""The CLI's actions on one engagement of the timeline: pin, unpin, remove, associate,
disassociate (``store/actions.py`` does the work).

ID is the engagement's id, as ``timeline`` shows it (``#12``, or ``"id"`` in its JSON), or
an email's Message-ID, read by ``common.engagement_ref`` and ``find_engagement`` as for
``email show`` and ``thread``. ``register(group)`` adds the commands to the main click
group. Each runs in one transaction: an engagement or record that does not exist, or a
record at ``max_engagements_per_record``, exits 1 with nothing written; an ID that can
name nothing (``abc``, ``0``), or no record named, exits 2. With ``--json`` each prints
the engagement as ``timeline --json`` shows it after the change (``remove``: what was
removed).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from syncd.cli.common import (
    EX_USAGE,
    JSON_FLAG,
    emit_json,
    engagement_ref,
    fail,
    find_engagement,
    open_store,
    printable,
)
from syncd.crm.rules import RulesSettings
from syncd.store import actions, db, queries, records, recordviews
from syncd.store.recordviews import MAX_ID

RECORD_ID = click.IntRange(1, MAX_ID)


@contextmanager
def acting(ctx: click.Context) -> Iterator[tuple[Any, Any]]:
    """The config and a connection inside one transaction; a missing engagement or
    record, or one at the cap, exits 1 with nothing written."""
    with open_store(ctx) as (config, conn):
        try:
            with db.transaction(conn):
                yield config, conn
        except (LookupError, actions.CapReached) as exc:
            fail(printable(exc.args[0]))


def _title(item: dict[str, Any]) -> str:
    text = item["subject"] if item["type"] == "email" else item.get("text")
    return printable(text or "")


def _report(item: dict[str, Any] | None, as_json: bool, line: str) -> None:
    if as_json:
        emit_json(item)
        return
    click.echo(line)


@click.command("pin")
@click.argument("engagement", metavar="ID")
@JSON_FLAG
@click.pass_context
def pin(ctx: click.Context, engagement: str, as_json: bool) -> None:
    """Pin an engagement: it comes first on every timeline it is on. ID is the #id
    timeline shows, or an email's Message-ID (with or without <>)."""
    ref = engagement_ref(engagement)
    with acting(ctx) as (_config, conn):
        number = find_engagement(conn, ref)
        changed = actions.pin(conn, number)
        item = queries.engagement(conn, number)
    assert item is not None
    done = "pinned" if changed else "already pinned"
    _report(item, as_json, f"{done} #{number} {item['type']} {_title(item)}".rstrip())


@click.command("unpin")
@click.argument("engagement", metavar="ID")
@JSON_FLAG
@click.pass_context
def unpin(ctx: click.Context, engagement: str, as_json: bool) -> None:
    """Unpin an engagement: it takes its place by date again. ID is the #id timeline
    shows, or an email's Message-ID."""
    ref = engagement_ref(engagement)
    with acting(ctx) as (_config, conn):
        number = find_engagement(conn, ref)
        changed = actions.unpin(conn, number)
        item = queries.engagement(conn, number)
    assert item is not None
    done = "unpinned" if changed else "not pinned"
    _report(item, as_json, f"{done} #{number} {item['type']} {_title(item)}".rstrip())


@click.command("remove")
@click.argument("engagement", metavar="ID")
@JSON_FLAG
@click.pass_context
def remove(ctx: click.Context, engagement: str, as_json: bool) -> None:
    """Remove an engagement from every timeline and from the store. A removed email is
    not logged again when it comes back (sync, BCC, import); only a hash of its
    Message-ID stays. To take it off one record only, use disassociate. ID is the #id
    timeline shows, or an email's Message-ID."""
    ref = engagement_ref(engagement)
    with acting(ctx) as (config, conn):
        number = find_engagement(conn, ref)
        item = queries.engagement(conn, number)
        assert item is not None  # found just now, in this transaction
        actions.remove(conn, number, Path(config.store.attachments_dir))
    gone = {k: item[k] for k in ("id", "type", "message_id", "subject", "date")}
    _report({**gone, "removed": True}, as_json, f"removed #{number} {item['type']} {_title(item)}")


def _record_options(command: Any) -> Any:
    options = [
        click.option(
            "--deal", "deals", type=RECORD_ID, multiple=True, metavar="N", help="A deal id."
        ),
        click.option(
            "--ticket", "tickets", type=RECORD_ID, multiple=True, metavar="N", help="A ticket id."
        ),
        click.option(
            "--company",
            "companies",
            multiple=True,
            metavar="C",
            help="A company: its id, a domain, or its name (any case).",
        ),
        click.option(
            "--contact", "contacts", multiple=True, metavar="EMAIL", help="A contact's address."
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _company_id(conn: Any, text: str) -> int:
    """The company ``text`` names, as ``companies show`` finds it (id, domain, name)."""
    found = recordviews.company_find(conn, text)
    if not found:
        raise LookupError(f"no company with id, domain or name {text.strip()}")
    if len(found) > 1:
        ids = ", ".join(str(i) for i in found)
        raise LookupError(f"{text.strip()} names several companies ({ids}); give one id")
    return found[0]


def _need_records(given: dict[str, tuple[Any, ...]]) -> None:
    if not any(given.values()):
        fail("name a record: --deal N, --ticket N, --company C or --contact EMAIL", EX_USAGE)


def _links(conn: Any, given: dict[str, tuple[Any, ...]]) -> dict[str, list[int]]:
    return {
        "contact": records.contact_ids_for(conn, given["contacts"]),
        "company": [_company_id(conn, c) for c in given["companies"]],
        "deal": list(given["deals"]),
        "ticket": list(given["tickets"]),
    }


@click.command("associate")
@click.argument("engagement", metavar="ID")
@_record_options
@JSON_FLAG
@click.pass_context
def associate(ctx: click.Context, engagement: str, as_json: bool, **given: Any) -> None:
    """Associate an engagement with records (each option may be given more than once).
    A record at store.max_engagements_per_record is refused, and nothing is changed.
    ID is the #id timeline shows, or an email's Message-ID."""
    ref = engagement_ref(engagement)
    _need_records(given)
    with acting(ctx) as (config, conn):
        number = find_engagement(conn, ref)
        links = _links(conn, given)
        cap = RulesSettings.from_config(config).max_engagements_per_record
        added = actions.associate(conn, number, links, cap)
        item = queries.engagement(conn, number)
        named = ", ".join(printable(label) for label in actions.labels(conn, added))
    assert item is not None
    line = f"associated #{number} with {named}" if named else f"#{number}: no new association"
    _report(item, as_json, line)


@click.command("disassociate")
@click.argument("engagement", metavar="ID")
@_record_options
@JSON_FLAG
@click.pass_context
def disassociate(ctx: click.Context, engagement: str, as_json: bool, **given: Any) -> None:
    """Take an engagement off records' timelines; it stays in the store (and on the
    others). An engagement on no record is still found by search and export. ID is the
    #id timeline shows, or an email's Message-ID."""
    ref = engagement_ref(engagement)
    _need_records(given)
    with acting(ctx) as (_config, conn):
        number = find_engagement(conn, ref)
        links = _links(conn, given)
        removed = actions.disassociate(conn, number, links)
        item = queries.engagement(conn, number)
        named = ", ".join(printable(label) for label in actions.labels(conn, removed))
    assert item is not None
    line = f"took #{number} off {named}" if named else f"#{number} was on none of them"
    _report(item, as_json, line)


def register(group: click.Group) -> None:
    """Add the engagement commands to the main CLI group."""
    for command in (pin, unpin, remove, associate, disassociate):
        group.add_command(command)
