"""Pure parts of what the user sees of tracking: terminal escaping and an email's status."""

from __future__ import annotations

import pytest

from syncd.cli.common import printable
from syncd.store.trackview import _empty_summary, status_of


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("Pricing", "Pricing"),
        ("Café ☕ 日本", "Café ☕ 日本"),
        ("red \x1b[31mALERT\x1b[0m", "red \\x1b[31mALERT\\x1b[0m"),
        ("line\r\nfake line", "line\\x0d\\x0afake line"),
        ("bell\x07 del\x7f c1\x9b", "bell\\x07 del\\x7f c1\\x9b"),
        ("abc\u202efdp.exe", "abc\\u202efdp.exe"),  # right-to-left override
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("para\u2029sep", "para\\u2029sep"),
        ("tab\there", "tab\\x09here"),
        ("non\u00a0breaking", "non\u00a0breaking"),  # a space, not a control
        (None, ""),
        (42, "42"),
    ],
)
def test_printable(text: object, shown: str) -> None:
    assert printable(text) == shown


def _summary(opens: int = 0, clicks: int = 0) -> dict:
    summary = _empty_summary()
    summary["opens"]["count"] = opens
    summary["clicks"]["count"] = clicks
    return summary


@pytest.mark.parametrize(
    ("summary", "stored", "status"),
    [
        (None, None, "untracked"),
        (None, "sent", "sent"),  # an engagement row that says more than the hits
        (_summary(), None, "sent"),
        (_summary(), "opened", "sent"),  # re-judged: the hits are the truth
        (_summary(opens=2), None, "opened"),
        (_summary(opens=1, clicks=1), "sent", "clicked"),
        (_summary(clicks=1), None, "clicked"),
    ],
)
def test_status_of(summary: dict | None, stored: str | None, status: str) -> None:
    assert status_of(summary, stored) == status
