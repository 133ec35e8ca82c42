"""Store damage as the running daemon sees it: what counts as damage, the problems a
check reports, one line per outage, and an IMAP loop that waits instead of retrying."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from syncd.errors import StoreDamaged, StoreError
from syncd.services.imap import ImapService
from syncd.services.storehealth import StoreHealth
from syncd.sources.imap.inbox import InboxResult
from syncd.store import integrity


def not_a_database(tmp_path: Path) -> sqlite3.DatabaseError:
    path = tmp_path / "garbage.sqlite3"
    path.write_bytes(b"\xde\xad\xbe\xef" * 4096)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        try:
            conn.execute("SELECT * FROM sqlite_master").fetchall()
        except sqlite3.DatabaseError as exc:
            return exc
    raise AssertionError("SQLite read garbage as a database")


def test_what_counts_as_damage(tmp_path: Path) -> None:
    damage = not_a_database(tmp_path)
    assert integrity.is_damage(damage)
    try:  # as the pipeline raises it: a StoreError from the SQLite error
        raise StoreError("store write failed") from damage
    except StoreError as wrapped:
        assert integrity.damage_reason(wrapped) == "file is not a database"
    busy = sqlite3.OperationalError("database is locked")
    assert not integrity.is_damage(busy)
    assert not integrity.is_damage(OSError(28, "No space left on device"))


@pytest.mark.parametrize(
    ("rows", "problems"),
    [
        (["ok"], ["ok"]),
        (["*** in database main ***\nPage 61: btreeInitPage() returns error code 11\n"
          "Page 60: btreeInitPage() returns error code 11", "database disk image is malformed"],
         ["Page 61: btreeInitPage() returns error code 11",
          "Page 60: btreeInitPage() returns error code 11", "database disk image is malformed"]),
        (["database disk image is malformed", "database disk image is malformed"],
         ["database disk image is malformed"]),
    ],
)  # fmt: skip
def test_check_rows_become_one_problem_a_line(rows: list[str], problems: list[str]) -> None:
    assert integrity._lines(rows) == problems


def test_the_refusal_is_one_line() -> None:
    error = StoreDamaged.found("/var/lib/syncd/syncd.sqlite3", ["Page 61: bad", "Page 60: bad"])
    assert str(error) == (
        "the store /var/lib/syncd/syncd.sqlite3 is damaged (Page 61: bad, and 1 more); "
        "restore it from a backup (`syncd check-store` runs the full check)"
    )


def test_damage_is_said_once_and_recovery_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    verdicts = [integrity.Verdict(["Page 61: bad"]), integrity.Verdict()]
    health = StoreHealth(tmp_path / "s.sqlite3", check=lambda *a, **k: verdicts.pop(0))
    health._pause.base = 0.0  # look again at once
    recovered: list[bool] = []
    health.on_recovered.append(lambda: recovered.append(True))
    caplog.set_level(logging.INFO, "syncd.store")
    assert not health.report(sqlite3.OperationalError("database is locked"))
    assert not health.damaged
    for _ in range(5):
        assert health.report(not_a_database(tmp_path))
    assert health.damaged
    assert isinstance(health.refusal(), StoreDamaged)
    health._pause.succeeded()
    health.probe()  # still damaged
    assert health.damaged
    health._pause.succeeded()
    health.probe()
    assert not health.damaged and recovered == [True]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("is damaged (file is not a database)" in m for m in messages) == 1
    assert sum("reads as sound again" in m for m in messages) == 1
    assert len(messages) == 2


def test_an_inbox_waits_for_a_damaged_store_instead_of_retrying(tmp_path: Path) -> None:
    passes: list[float] = []
    health = StoreHealth(tmp_path / "s.sqlite3", check=lambda *a, **k: integrity.Verdict())

    def one_pass(*args: Any, **kwargs: Any) -> tuple[InboxResult, int]:
        passes.append(time.monotonic())
        health.report(not_a_database(tmp_path))
        raise health.refusal()

    inbox = SimpleNamespace(
        name="ada", imap=SimpleNamespace(timeout=10.0),
        sync=SimpleNamespace(idle=False, poll_interval=3600.0),
    )  # fmt: skip
    store = SimpleNamespace(call=None, parse_ahead=None, health=health)
    service = ImapService(SimpleNamespace(inboxes=[inbox]), store, run_pass=one_pass)

    async def run_a_while() -> None:
        await service.start(every=None)  # type: ignore[arg-type]
        await asyncio.sleep(1.5)
        assert service.status()["inboxes"]["ada"] == "waiting: store damaged"
        await service.stop(time.monotonic() + 5)

    asyncio.run(run_a_while())
    assert len(passes) == 1


def test_a_check_stops_at_its_time_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT)")
        conn.execute("CREATE INDEX t_a ON t (a)")
        conn.executemany("INSERT INTO t (a) VALUES (?)", ((f"k{i}" * 50,) for i in range(20000)))
    assert integrity.check(path).ok
    started = time.monotonic()
    verdict = integrity.check(path, full=True, seconds=0.0)
    assert time.monotonic() - started < 1.0
    assert verdict == integrity.Verdict([], finished=False)
    assert not verdict.ok
