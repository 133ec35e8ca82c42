"""Timeline items: what each engagement shows on a timeline, read for a whole set of
engagements in a fixed number of statements.

An item is its engagement's row (``ITEM_SQL``) and what other tables hold about it: the
sources that saw it (sightings), the records it is associated with, its attachments and
its tracking summary. ``related`` reads each of those in one statement over a set of
engagements (``Ids``: an SQL query of their ids) and groups the rows by engagement, so a
timeline of 5,000 items costs as many statements as one of 3. ``shape`` makes an item
from its row and those maps; every path (a timeline, a thread, one engagement, email
show, the export) shapes through it, so there is one item shape. Read-only.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from syncd.store import trackview

# The columns an item shows, in the order ``shape`` unpacks them. The email's search
# text (``e.body``) is not among them: it is most of an email row, and only ``email
# show`` and the export want it. The thread key is not shown; ``threads.fold`` reads it.
_ITEM_COLUMNS = (
    "SELECT g.id, g.type, g.occurred_at, g.owner, g.body AS note, g.status, g.pinned_at, "
    "e.message_id, e.subject, e.direction, e.from_addr, e.to_json, e.cc_json, e.thread_key"
)
_SHOWN = 13  # the columns before the thread key
_ITEM_FROM = " FROM engagements g LEFT JOIN emails e ON e.engagement_id = g.id"
ITEM_SQL = _ITEM_COLUMNS + _ITEM_FROM
# An item's columns and the email's text and date flag, for ``email show`` and the export.
ENGAGEMENT_SQL = _ITEM_COLUMNS + ", e.body, e.date_missing" + _ITEM_FROM


class Ids(NamedTuple):
    """A set of engagement ids as SQL: a query of one column of ids, its ``?`` bound to
    ``args``. It goes inside ``IN (...)`` in each statement that reads the set."""

    sql: str
    args: tuple[Any, ...] = ()


def listed(engagement_ids: Iterable[int]) -> Ids:
    """The set of ``engagement_ids``: one JSON parameter, however many ids (a ``?`` per
    id would meet SQLite's limit on the number of variables)."""
    return Ids("SELECT value FROM json_each(?)", (json.dumps(list(engagement_ids)),))


@dataclass(frozen=True)
class Related:
    """What other tables hold about a set of engagements, by engagement id; an
    engagement with none of a thing is absent from that map."""

    sources: Mapping[int, list[str]]
    associations: Mapping[int, dict[str, list[Any]]]
    attachments: Mapping[int, list[dict[str, Any]]]
    tracked: Mapping[int, dict[str, Any]]


# The kinds of record an engagement is associated with, in the order an item lists them,
# and the statement of each: (engagement id, what the item shows), in the item's order.
_ASSOCIATED = {
    "contacts": "SELECT e.engagement_id, a.address FROM engagement_contacts e "
    "JOIN contact_addresses a ON a.contact_id = e.contact_id AND a.is_primary = 1 "
    "WHERE e.engagement_id IN ({ids}) ORDER BY e.engagement_id, a.address",
    "companies": "SELECT e.engagement_id, c.name FROM engagement_companies e "
    "JOIN companies c ON c.id = e.company_id "
    "WHERE e.engagement_id IN ({ids}) ORDER BY e.engagement_id, c.name",
    "deals": "SELECT engagement_id, deal_id FROM engagement_deals "
    "WHERE engagement_id IN ({ids}) ORDER BY engagement_id, deal_id",
    "tickets": "SELECT engagement_id, ticket_id FROM engagement_tickets "
    "WHERE engagement_id IN ({ids}) ORDER BY engagement_id, ticket_id",
}
_SOURCES = (
    "SELECT DISTINCT engagement_id, label FROM sightings "
    "WHERE engagement_id IN ({ids}) ORDER BY engagement_id, label"
)
_ATTACHMENTS = (
    "SELECT engagement_id, id, filename, content_type, size, sha256, stored, note "
    "FROM attachments WHERE engagement_id IN ({ids}) ORDER BY engagement_id, id"
)


def _grouped(rows: Iterable[tuple[int, Any]]) -> dict[int, list[Any]]:
    """Values by engagement id, in the order of ``rows``."""
    out: defaultdict[int, list[Any]] = defaultdict(list)
    for engagement_id, value in rows:
        out[engagement_id].append(value)
    return out


def related(conn: sqlite3.Connection, ids: Ids, tracked: Mapping[int, dict[str, Any]]) -> Related:
    """Sources, associations and attachments of the engagements ``ids`` selects, one
    statement each; ``tracked`` is ``trackview.summaries`` of a set holding them."""
    # Plain tuples: a timeline reads tens of thousands of these rows, and sqlite3.Row
    # objects cost more to make than the rows cost to read.
    cursor = conn.cursor()
    cursor.row_factory = None

    def read(sql: str) -> list[Any]:
        return cursor.execute(sql.format(ids=ids.sql), ids.args).fetchall()

    associations: dict[int, dict[str, list[Any]]] = {}
    for kind, sql in _ASSOCIATED.items():
        for engagement_id, values in _grouped(read(sql)).items():
            found = associations.get(engagement_id)
            if found is None:
                found = associations[engagement_id] = _no_associations()
            found[kind] = values
    attachments = _grouped(
        (
            engagement_id,
            {
                "id": attachment_id,
                "filename": filename,
                "content_type": content_type,
                "size": size,
                "sha256": sha256,
                "stored": bool(stored),
                "note": note,
            },
        )
        for engagement_id, attachment_id, filename, content_type, size, sha256, stored, note in (
            read(_ATTACHMENTS)
        )
    )
    return Related(_grouped(read(_SOURCES)), associations, attachments, tracked)


def _no_associations() -> dict[str, list[Any]]:
    return {kind: [] for kind in _ASSOCIATED}


# json.loads' checks and wrappers cost about as much as parsing these short arrays, and
# the store wrote them with json.dumps (no leading space), so raw_decode is enough.
_decode = json.JSONDecoder().raw_decode


def _addresses(text: str | None) -> list[str]:
    return [email for _name, email in _decode(text or "[]")[0]]


def shape(row: Sequence[Any], related: Related) -> dict[str, Any]:
    """One timeline entry as the JSON contract shapes it, from its row (``ITEM_SQL`` or
    ``ENGAGEMENT_SQL``, a tuple or an sqlite3.Row) and the ``related`` maps of a set it is
    in."""
    (
        engagement_id,
        kind,
        occurred_at,
        owner,
        note,
        status,
        pinned_at,
        message_id,
        subject,
        direction,
        from_addr,
        to_json,
        cc_json,
    ) = row[:_SHOWN]
    is_email = kind == "email"
    item: dict[str, Any] = {
        "id": engagement_id,
        "type": kind,
        "message_id": message_id,
        "subject": subject,
        "date": occurred_at,
        "direction": direction,
        "from": from_addr if is_email else owner,
        "to": _addresses(to_json) if is_email else [],
        "sources": related.sources.get(engagement_id) or [],
        "status": status,
        "pinned": pinned_at is not None,
        "associations": related.associations.get(engagement_id) or _no_associations(),
    }
    if is_email:
        summary = related.tracked.get(engagement_id)
        item["status"] = trackview.status_of(summary, status)
        item["tracking"] = summary
        item["cc"] = _addresses(cc_json)
        item["attachments"] = related.attachments.get(engagement_id) or []
    else:
        item["text"] = note
    return item


def engagement_item(
    conn: sqlite3.Connection,
    row: Sequence[Any],
    tracked: Mapping[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One engagement's item from its row (``ITEM_SQL`` or ``ENGAGEMENT_SQL``), what it
    is related to read for it alone. ``tracked`` is ``trackview.summaries`` of a set
    holding it (read here if None)."""
    engagement_id = row[0]
    if tracked is None:
        tracked = trackview.summaries(conn, [engagement_id]) if row[1] == "email" else {}
    return shape(row, related(conn, Ids("?", (engagement_id,)), tracked))


def shaped(
    conn: sqlite3.Connection, rows: Sequence[Sequence[Any]], ids: Ids
) -> list[dict[str, Any]]:
    """The items of ``rows`` (``ITEM_SQL`` rows of the engagements ``ids`` selects, in the
    order to show them), read in a fixed number of statements however many there are."""
    tracked = trackview.summaries(conn, [r[0] for r in rows])
    found = related(conn, ids, tracked)
    return [shape(r, found) for r in rows]


def thread_keys(rows: Iterable[Sequence[Any]]) -> dict[int, str]:
    """The thread key of each email among ``ITEM_SQL`` ``rows`` (other engagements and
    emails without one absent)."""
    return {r[0]: r[_SHOWN] for r in rows if r[_SHOWN] is not None}
