"""What ``/health``, ``/metrics`` and ``syncd status`` make of a status report: pure
functions on literal reports."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from syncd.services import metrics, statusreport


def inbox(name: str, state: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "state": state, "last_sync": None, "last_error": None,
            "next_retry": None, "folders": []} | extra  # fmt: skip


@pytest.mark.parametrize(
    ("report", "trouble", "status", "failing"),
    [
        ({"inboxes": [inbox("ada", "ok")]}, None, "ok", []),
        ({"inboxes": [inbox("ada", "never_synced")]}, None, "ok", []),
        (
            {"inboxes": [inbox("ada", "ok"), inbox("bob", "auth_failed", last_error="refused",
                                                   next_retry="2026-01-01T13:00:00+00:00")]},
            None, "error",
            [{"part": "inbox", "name": "bob", "state": "auth_failed", "error": "refused",
              "next_retry": "2026-01-01T13:00:00+00:00"}],
        ),
        (
            {"inboxes": [inbox("ada", "failed", last_error="timed out")]}, None, "error",
            [{"part": "inbox", "name": "ada", "state": "failed", "error": "timed out",
              "next_retry": None}],
        ),
        (
            {"inboxes": []}, "the BCC spool cannot be written", "error",
            [{"part": "store", "error": "the BCC spool cannot be written"}],
        ),
        (None, "store unreadable: disk I/O error", "error",
         [{"part": "store", "error": "store unreadable: disk I/O error"}]),
    ],
    ids=["ok", "never-synced", "auth-failed", "failed", "spool", "unreadable"],
)  # fmt: skip
def test_health_lists_each_failing_part(
    report: dict[str, Any] | None, trouble: str | None, status: str, failing: list[Any]
) -> None:
    body = statusreport.health(report, trouble)
    assert body["status"] == status
    assert body["failing"] == failing
    assert body["failed_inboxes"] == [f["name"] for f in failing if f["part"] == "inbox"]
    assert ("error" in body) == (report is None)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (60, "1m 0s"), (250, "4m 10s"), (3599.6, "1h 0m"),
     (3600, "1h 0m"), (3 * 3600 + 5 * 60 + 59, "3h 5m"), (-3, "0s")],
)  # fmt: skip
def test_duration_text(seconds: float, text: str) -> None:
    assert statusreport.duration_text(seconds) == text


NOW = datetime(2026, 1, 1, 12, 30, 46, tzinfo=UTC)


@pytest.mark.parametrize(
    ("next_retry", "text"),
    [
        (None, None),
        ("2026-01-01T12:34:56+00:00", "next retry in 4m 10s (at 12:34:56Z)"),
        ("2026-01-01T12:34:56Z", "next retry in 4m 10s (at 12:34:56Z)"),
        ("2026-01-01T12:30:00+00:00", "next retry now (was due at 12:30:00Z)"),
    ],
)
def test_retry_text(next_retry: str | None, text: str | None) -> None:
    assert statusreport.retry_text(next_retry, NOW) == text


def test_metrics_carry_last_success_next_retry_and_store_size() -> None:
    folder = {"name": "INBOX", "logged": 3, "last_uid": 7,
              "last_sync": "2026-01-01T12:00:00+00:00"}  # fmt: skip
    never = {"name": "Sent", "logged": 0, "last_uid": 0, "last_sync": None}
    report = {
        "inboxes": [
            inbox("ada", "ok", folders=[folder, never]),
            inbox("bob", "auth_failed", next_retry="2026-01-01T13:00:00+00:00"),
        ],
        "store": {"bytes": 4096, "attachments_bytes": 10},
    }
    text = metrics.render(report).decode()
    assert 'syncd_last_success_timestamp_seconds{folder="INBOX",inbox="ada"} 1.7672688e+09' in text
    assert 'syncd_last_success_timestamp_seconds{folder="Sent"' not in text  # never: no sample
    assert 'syncd_next_retry_timestamp_seconds{inbox="bob"} 1.7672724e+09' in text
    assert 'syncd_next_retry_timestamp_seconds{inbox="ada"}' not in text
    assert "syncd_store_bytes 4096.0" in text
    assert "syncd_attachments_bytes 10.0" in text
