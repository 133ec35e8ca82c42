"""The daemon's per-inbox loop, with the IMAP pass and session given as stand-ins (its
IMAP boundary): what it does between passes (IDLE, its failures) is timing, not protocol."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from syncd.errors import InboxError
from syncd.services.imap import ImapService, _uncommitted
from syncd.sources.imap.inbox import FolderResult, InboxResult
from syncd.sources.imap.syncplan import idle_retry_delay


class RefusedIdle:
    """A session whose server answers IDLE with an error at once."""

    client = SimpleNamespace(has_capability=lambda name: True)

    def idle_wait(self, timeout: float) -> bool:
        raise InboxError("ada", "IDLE refused")

    def interrupt(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_refused_idle_does_not_start_pass_after_pass() -> None:
    passes: list[float] = []

    def one_pass(*args: Any, **kwargs: Any) -> tuple[InboxResult, int]:
        passes.append(time.monotonic())
        return InboxResult("ada"), 0

    inbox = SimpleNamespace(
        name="ada", imap=SimpleNamespace(timeout=10.0),
        sync=SimpleNamespace(idle=True, poll_interval=3600.0),
    )  # fmt: skip
    service = ImapService(
        SimpleNamespace(inboxes=[inbox]), SimpleNamespace(call=None, parse_ahead=None),
        run_pass=one_pass, open_session=lambda *a, **k: RefusedIdle(),
    )  # fmt: skip

    async def run_for_a_second() -> None:
        await service.start(every=None)  # type: ignore[arg-type]
        await asyncio.sleep(1.0)
        await service.stop(time.monotonic() + 5)

    asyncio.run(run_for_a_second())
    # Before the fix, a refused IDLE meant the next pass at once: tens of thousands a second.
    assert len(passes) == 1
    assert service.status()["inboxes"]["ada"] == "stopped"


@pytest.mark.parametrize(
    ("failures", "jitter", "left", "expected"),
    [(1, 1.0, 3600.0, 5.0), (1, 0.0, 3600.0, 2.5), (3, 1.0, 3600.0, 20.0),
     (20, 1.0, 3600.0, 300.0), (20, 1.0, 40.0, 40.0), (1, 1.0, -3.0, 0.0)],
)  # fmt: skip
def test_idle_retry_delay(failures: int, jitter: float, left: float, expected: float) -> None:
    assert idle_retry_delay(failures, jitter, left=left) == pytest.approx(expected)


def test_a_refused_login_stores_its_next_retry_and_a_reload_tries_it_at_once() -> None:
    passes: list[float] = []
    stored: list[tuple[str, Any]] = []

    def refused(*args: Any, **kwargs: Any) -> tuple[InboxResult, int]:
        passes.append(time.monotonic())
        return InboxResult("ada", state="auth_failed", error="refused"), 1

    inbox = SimpleNamespace(
        name="ada", imap=SimpleNamespace(timeout=10.0),
        sync=SimpleNamespace(idle=True, poll_interval=3600.0),
    )  # fmt: skip
    store = SimpleNamespace(call=lambda fn, *args: stored.append(args), parse_ahead=None)
    config = SimpleNamespace(inboxes=[inbox])
    service = ImapService(config, store, run_pass=refused)  # type: ignore[arg-type]

    async def reload_after_a_moment() -> None:
        await service.start(every=None)  # type: ignore[arg-type]
        await asyncio.sleep(0.5)
        service.reconfigure(config)  # type: ignore[arg-type]
        await asyncio.sleep(0.5)
        await service.stop(time.monotonic() + 5)

    asyncio.run(reload_after_a_moment())
    assert len(passes) == 2  # the first, then the reload's; not an hour later
    name, when = stored[0]
    assert name == "ada" and 1700 < (when - datetime.now(UTC)).total_seconds() < 6 * 3600


@pytest.mark.parametrize(
    ("counted", "committed", "left"),
    [
        # Every outcome came from a committed batch: nothing left for the pass's end.
        ((5, 1, 2, 0), {"logged": 5, "duplicates": 1, "skipped": 2}, (0, 0, 0, 0)),
        # Mail skipped as logged on a rescan is counted by the engine, not by a batch.
        ((0, 7, 0, 0), {"duplicates": 3}, (0, 4, 0, 0)),
        # No batch committed in this folder.
        ((0, 2, 0, 1), {}, (0, 2, 0, 1)),
    ],
)
def test_pass_end_adds_only_what_no_batch_committed(
    counted: tuple[int, int, int, int], committed: dict[str, int], left: tuple[int, ...]
) -> None:
    folder = FolderResult("INBOX", *counted, error="UID 9 exists but cannot be fetched")
    result = InboxResult("ada", "ok", None, [folder])
    rest = _uncommitted(result, {"INBOX": Counter(committed)})
    (after,) = rest.folders
    assert (after.logged, after.duplicates, after.skipped, after.quarantined) == left
    assert (after.name, after.error, rest.state) == ("INBOX", folder.error, "ok")
    assert (folder.logged, folder.duplicates) == counted[:2]  # the pass's report is untouched
