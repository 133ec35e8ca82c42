"""The store's one time format: literal values in, literal values out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from syncd.store.timestamps import from_epoch, iso, offset_form, parse, to_epoch

PLUS_TWO = timezone(timedelta(hours=2))


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2024, 5, 1, 9, 30, tzinfo=UTC), "2024-05-01T09:30:00Z"),
        (datetime(2024, 5, 1, 9, 30, 0, 999999, tzinfo=UTC), "2024-05-01T09:30:00Z"),
        (datetime(2024, 5, 1, 11, 30, tzinfo=PLUS_TWO), "2024-05-01T09:30:00Z"),
        (datetime(2024, 5, 1, 9, 30), "2024-05-01T09:30:00Z"),  # naive is UTC
        (datetime(2024, 1, 1, 0, 30, tzinfo=PLUS_TWO), "2023-12-31T22:30:00Z"),
    ],
)
def test_iso(moment: datetime, text: str) -> None:
    assert iso(moment) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "1970-01-01T00:00:00Z"),
        (1000.0, "1970-01-01T00:16:40Z"),
        (1714555800.0, "2024-05-01T09:30:00Z"),
        (1714555800.9, "2024-05-01T09:30:00Z"),  # the fraction is dropped, not rounded
    ],
)
def test_from_epoch(seconds: float, text: str) -> None:
    assert from_epoch(seconds) == text


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2024-05-01T09:30:00Z", datetime(2024, 5, 1, 9, 30, tzinfo=UTC)),
        ("2024-05-01T09:30:00+00:00", datetime(2024, 5, 1, 9, 30, tzinfo=UTC)),
        ("2024-05-01T11:30:00+02:00", datetime(2024, 5, 1, 9, 30, tzinfo=UTC)),
        ("2024-05-01T09:30:00.250000+00:00", datetime(2024, 5, 1, 9, 30, 0, 250000, tzinfo=UTC)),
        ("2024-05-01T09:30:00", datetime(2024, 5, 1, 9, 30, tzinfo=UTC)),
    ],
)
def test_parse(text: str, moment: datetime) -> None:
    parsed = parse(text)
    assert parsed == moment and parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1970-01-01T00:00:00Z", 0.0),
        ("1970-01-01T00:16:40Z", 1000.0),
        ("2024-05-01T09:30:00Z", 1714555800.0),
    ],
)
def test_to_epoch(text: str, seconds: float) -> None:
    assert to_epoch(text) == seconds
    assert from_epoch(seconds) == text


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("2024-05-01T09:30:00Z", "2024-05-01T09:30:00+00:00"),
        ("2024-05-01T09:30:00+00:00", "2024-05-01T09:30:00+00:00"),
        (None, None),
    ],
)
def test_offset_form(text: str | None, shown: str | None) -> None:
    assert offset_form(text) == shown


def test_text_order_is_time_order() -> None:
    moments = [datetime(2024, 5, 1, 9, 30, s, tzinfo=UTC) for s in (59, 0, 1, 10)]
    assert sorted(iso(m) for m in moments) == [iso(m) for m in sorted(moments)]
