"""The store's one timestamp format: UTC ISO 8601 text with a ``Z``, to the second."""

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
