"""The store's one format for a moment: UTC ISO 8601 text with a ``Z``, to the second.

Every column that holds a moment, CRM and spool, outbox, sync state and heartbeat
alike, is written and read through this module; text order is then time order, and a
row reads the same in sqlite3 as in ``syncd status``. A calendar date (``deals.close_date``)
is a date, not a moment, and stays ``YYYY-MM-DD``. Migration 0007 brought older stores
(Unix seconds in the spool and outbox, ``+00:00`` in the sync state and heartbeat) here.
"""

from __future__ import annotations

from datetime import UTC, datetime


def iso(moment: datetime) -> str:
    """UTC ISO 8601 text with a Z, to the second: text order is time order."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    if moment.year < 1000:  # isoformat pads the year, strftime does not: keep strftime's
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    # isoformat: the same text as strftime, at a tenth of the cost (this runs per message).
    return moment.isoformat(timespec="seconds")[:19] + "Z"


def now_iso() -> str:
    return iso(datetime.now(UTC))


def from_epoch(seconds: float) -> str:
    """Store text for Unix seconds (the clocks of the spool and outbox); the fraction of a
    second is dropped, as ``iso`` drops it."""
    return iso(datetime.fromtimestamp(seconds, UTC))


def parse(text: str) -> datetime:
    """An aware UTC datetime from store text (any ISO 8601 form with a zone is taken too;
    one without a zone is taken as UTC)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def to_epoch(text: str) -> float:
    """Unix seconds for store text: what the spool's and outbox's clocks compare with."""
    return parse(text).timestamp()


def offset_form(text: str | None) -> str | None:
    """Store text as ``syncd status`` has always shown it: ``+00:00`` where the store
    has ``Z`` (the status report's shape is the product's; the store's is ours)."""
    if text is None:
        return None
    return parse(text).isoformat(timespec="seconds")
