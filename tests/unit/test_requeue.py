"""Which quarantine reasons the daemon retries by itself, and how long it waits."""

from __future__ import annotations

import pytest

from syncd.store.requeue import retry_delay, transient


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("could not be logged: OSError: [Errno 28] No space left on device", True),
        ("could not be logged: OSError: [Errno 30] Read-only file system: '/x'", True),
        ("could not be logged: OSError: [Errno 122] Disk quota exceeded", True),
        ("could not be logged: OSError: [Errno 5] Input/output error", True),
        ("could not be logged: OperationalError: database or disk is full", True),
        ("could not be logged: OSError: [Errno 50] No CSI structure available", False),
        ("could not be logged: ValueError: attachment digest is not a sha256 hex string", False),
        ("unparseable: no header block", False),
        ("parser failed: UnicodeDecodeError: 'utf-8' codec can't decode", False),
    ],
)
def test_transient_reasons(reason: str, expected: bool) -> None:
    assert transient(reason) is expected


@pytest.mark.parametrize(
    ("attempts", "seconds"), [(1, 60), (2, 120), (3, 240), (7, 3600), (40, 3600)]
)
def test_retry_delay_doubles_up_to_an_hour(attempts: int, seconds: float) -> None:
    assert retry_delay(attempts) == seconds
