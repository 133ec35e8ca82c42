"""The ``syncd tracking`` commands: the activity feed of opens and clicks.

``register(group)`` adds the ``tracking`` group. ``tracking feed`` reads the store
read-only (it never blocks the daemon): who opened or clicked what and when, newest
first, human hits only unless ``--all``. ``--follow`` prints the latest hits oldest
first, as ``tail -f`` does, then each new one as it is stored, polling once a second;
Ctrl-C ends it with status 130 and no traceback. Every value that came from a mail is
escaped before it reaches the terminal.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from typing import Any

import click

from syncd.cli.common import JSON_FLAG, emit_json, open_store, printable
from syncd.store import trackview

POLL_SECONDS = 1.0
EX_INTERRUPTED = 128 + 2  # what a shell reports for a program SIGINT ended


@click.group("tracking")
def tracking() -> None:
    """Open and click tracking: the activity feed."""


@tracking.command("feed")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new hits as they come.")
@click.option("--all", "everything", is_flag=True, help="Machine hits too, each with its verdict.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="At most this many hits (with --follow: this many before the new ones).",
)
@JSON_FLAG
@click.pass_context
def feed(ctx: click.Context, follow: bool, everything: bool, limit: int, as_json: bool) -> None:
    """Who opened or clicked what, and when, newest first (human hits only unless --all).

    With --json, one JSON document; with --follow --json, one JSON object per line.
    Anonymous mail (several recipients) shows "someone".
    """
    with open_store(ctx, readonly=True) as (_config, conn):
        if not follow:
            found = trackview.feed(conn, limit=limit, everything=everything)
            if as_json:
                emit_json(found)
            else:
                for item in found:
                    click.echo(feed_line(item))
            return
        try:
            _follow(conn, limit=limit, everything=everything, as_json=as_json)
        except KeyboardInterrupt:
            sys.exit(EX_INTERRUPTED)


def _follow(conn: sqlite3.Connection, *, limit: int, everything: bool, as_json: bool) -> None:
    """The latest ``limit`` hits oldest first, then every new one, until interrupted.

    Each poll reads the newest hit id first and shows only hits up to it, so a hit
    stored between the two reads is shown by the next poll, not twice or never."""

    def show(items: list[dict[str, Any]]) -> None:
        for item in items:
            click.echo(json.dumps(item, ensure_ascii=False) if as_json else feed_line(item))

    last = trackview.last_hit_id(conn)
    backlog = trackview.feed(conn, limit=limit, everything=everything)
    show([i for i in reversed(backlog) if i["id"] <= last])
    while True:
        time.sleep(POLL_SECONDS)
        top = trackview.last_hit_id(conn)
        if top < last:  # hits erased: ids below the old newest may be used again
            last = top
            continue
        if top == last:
            continue
        found = trackview.feed(conn, everything=everything, after=last)
        show([i for i in found if i["id"] <= top])
        last = top


def feed_line(item: dict[str, Any]) -> str:
    """One hit for people: ``WHEN  WHO opened "SUBJECT"`` or ``WHEN  WHO clicked URL in
    "SUBJECT"``, with ``[verdict: reason]`` for a machine hit."""
    subject = f'"{printable(item["subject"])}"' if item["subject"] else "(no subject)"
    who = printable(item["who"])
    if item["kind"] == "click":
        what = f"clicked {printable(item['url'] or '(unknown link)')} in {subject}"
    else:
        what = f"opened {subject}"
    line = f"{item['at']}  {who} {what}"
    if item["verdict"] != "human":
        line += f"  [{item['verdict']}: {printable(item['reason'])}]"
    return line


def register(group: click.Group) -> None:
    """Add the tracking commands to the main CLI group."""
    group.add_command(tracking)
