"""A store written before migration 0007 (Unix seconds in the spool and outbox, ``+00:00``
in the sync state and heartbeat) opens with this syncd, keeps its data in the store's one
time format, and ``syncd status``, the spool drain and the outbox go on working on it."""

from __future__ import annotations

import json
import sqlite3
import threading
from importlib import resources
from pathlib import Path

import pytest
from click.testing import CliRunner

from syncd.cli.main import main
from syncd.outbound.relay import Delivery, OutboxRunner
from syncd.services.bcc import drain_spool
from syncd.store import db, spool
from syncd.store.spool import Outbox
from tests.integration.test_pipeline import make, message

RECEIVED = 1714555800.75  # 2024-05-01T09:30:00.75Z
OLD_STARTED = "2024-05-01T09:00:00.123456+00:00"
OLD_SYNC = "2024-05-01T09:31:00+00:00"


def old_store(path: Path) -> None:
    """A store at schema 6 with rows as syncd wrote them at that version."""
    conn = sqlite3.connect(path)
    for entry in sorted(resources.files("syncd.store.schema").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql") and entry.name[:4].isdigit() and int(entry.name[:4]) <= 6:
            conn.executescript(entry.read_text(encoding="utf-8"))
    conn.execute("PRAGMA user_version = 6")
    conn.execute(
        "INSERT INTO spool (received_at, mail_from, peer, owner, raw) VALUES (?, ?, ?, ?, ?)",
        (RECEIVED, "ada@example.com", "127.0.0.1", None, message(to="carol@acme.com")),
    )
    rows = [  # state, created_at, next_attempt_at, given_up_at, last_error
        ("queued", 1000.0, 1060.25, None, "451 later"),
        ("held", 1000.5, 1000.5, None, None),
        ("given_up", 900.0, 950.0, 990.9, "550 no such user"),
    ]
    conn.executemany(
        "INSERT INTO outbox (spool_id, state, created_at, next_attempt_at, attempts, mail_from,"
        " recipients, raw, last_error, given_up_at) VALUES (7, ?, ?, ?, 1, 'ada@example.com',"
        " '[\"archive@example.org\"]', x'0d0a', ?, ?)",
        [(s, c, n, e, g) for s, c, n, g, e in rows],
    )
    conn.execute(
        "INSERT INTO sync_folders (inbox, folder, uidvalidity, last_uid, initial_done,"
        " initial_started, logged, last_sync) VALUES ('ada', 'INBOX', 7, 42, 1, ?, 3, ?)",
        (OLD_STARTED, OLD_SYNC),
    )
    conn.execute(
        "INSERT INTO sync_inboxes (inbox, state, last_sync, failures, updated_at)"
        " VALUES ('ada', 'ok', ?, 0, ?)",
        (OLD_SYNC, OLD_SYNC),
    )
    conn.execute(
        "INSERT INTO daemon_state (id, pid, started_at, updated_at, state)"
        " VALUES (1, 999999999, '2024-05-01T08:00:00+00:00', ?, 'stopped')",
        (OLD_SYNC,),
    )
    conn.execute(
        "INSERT INTO contacts (first_name, created_at, last_activity)"
        " VALUES ('Carol', '2024-04-01T10:00:00Z', '2024-04-02T10:00:00Z')"
    )
    conn.execute("INSERT INTO deals (name, stage, state, close_date, created_at, updated_at)"
                 " VALUES ('Big', 'won', 'won', '2024-04-03', '2024-04-01T10:00:00Z',"
                 " '2024-04-03T10:00:00Z')")  # fmt: skip
    conn.commit()
    conn.close()


@pytest.fixture
def upgraded(tmp_path: Path) -> sqlite3.Connection:
    path = tmp_path / "store" / "syncd.sqlite3"
    path.parent.mkdir()
    old_store(path)
    conn = db.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == db.latest_version() >= 7
    return conn


def test_the_old_rows_are_kept_in_the_one_format(upgraded: sqlite3.Connection) -> None:
    conn = upgraded
    assert [tuple(r) for r in conn.execute("SELECT id, received_at, typeof(received_at) FROM spool")] == [
        (1, "2024-05-01T09:30:00Z", "text")
    ]  # fmt: skip
    assert [tuple(r) for r in conn.execute(
        "SELECT id, state, created_at, next_attempt_at, given_up_at, attempts, last_error,"
        " recipients, spool_id FROM outbox ORDER BY id"
    )] == [
        (1, "queued", "1970-01-01T00:16:40Z", "1970-01-01T00:17:40Z", None, 1, "451 later",
         '["archive@example.org"]', 7),
        (2, "held", "1970-01-01T00:16:40Z", "1970-01-01T00:16:40Z", None, 1, None,
         '["archive@example.org"]', 7),
        (3, "given_up", "1970-01-01T00:15:00Z", "1970-01-01T00:15:50Z", "1970-01-01T00:16:30Z",
         1, "550 no such user", '["archive@example.org"]', 7),
    ]  # fmt: skip
    assert tuple(conn.execute("SELECT initial_started, last_sync, last_uid FROM sync_folders")
                 .fetchone()) == ("2024-05-01T09:00:00Z", "2024-05-01T09:31:00Z", 42)  # fmt: skip
    assert tuple(conn.execute("SELECT last_sync, updated_at FROM sync_inboxes").fetchone()) == (
        "2024-05-01T09:31:00Z", "2024-05-01T09:31:00Z",
    )  # fmt: skip
    assert tuple(conn.execute("SELECT started_at, updated_at FROM daemon_state").fetchone()) == (
        "2024-05-01T08:00:00Z", "2024-05-01T09:31:00Z",
    )  # fmt: skip
    # The CRM's times were already in the format; a calendar date stays a date.
    assert tuple(conn.execute("SELECT created_at, last_activity FROM contacts").fetchone()) == (
        "2024-04-01T10:00:00Z", "2024-04-02T10:00:00Z",
    )  # fmt: skip
    assert conn.execute("SELECT close_date FROM deals").fetchone()[0] == "2024-04-03"
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"outbox_due", "outbox_spool"} <= indexes
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_status_shows_what_it_showed_before(upgraded: sqlite3.Connection, tmp_path: Path) -> None:
    upgraded.close()
    config = tmp_path / "syncd.yaml"
    store = tmp_path / "store"
    config.write_text(json.dumps({
        "store": {"path": str(store / "syncd.sqlite3"), "attachments_dir": str(store / "files")},
        "team": [{"name": "Ada", "email": "ada@example.com"}],
        "inboxes": [{
            "name": "ada", "kind": "personal", "owner": "ada@example.com",
            "imap": {"host": "127.0.0.1", "port": 1, "security": "none", "username": "ada",
                     "password": "pw"},
        }],
    }))  # fmt: skip
    config.chmod(0o600)
    result = CliRunner().invoke(main, ["--config", str(config), "status", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["daemon"] == {
        "pid": 999999999, "state": "not running",
        "started_at": "2024-05-01T08:00:00+00:00", "updated_at": OLD_SYNC,
    }  # fmt: skip
    [inbox] = report["inboxes"]
    assert (inbox["name"], inbox["state"], inbox["last_sync"]) == ("ada", "ok", OLD_SYNC)
    [folder] = inbox["folders"]
    assert (folder["last_uid"], folder["logged"], folder["last_sync"]) == (42, 3, OLD_SYNC)
    assert report["bcc"]["spool_depth"] == 1
    assert isinstance(report["bcc"]["spool_oldest_age_s"], float)
    assert report["bcc"]["spool_oldest_age_s"] > 3600
    assert (report["outbox"]["depth"], report["outbox"]["given_up"]) == (2, 1)
    assert isinstance(report["outbox"]["oldest_age_s"], float)
    assert report["outbox"]["last_error"] == "451 later"  # the latest of the errors


def test_the_spool_drains_with_its_receipt_time(
    upgraded: sqlite3.Connection, tmp_path: Path
) -> None:
    pipeline = make(upgraded, tmp_path)
    result = drain_spool(pipeline.session.conn, pipeline.ingest_batch)
    assert (result.taken, dict(result.statuses)) == (1, {"logged": 1})
    assert upgraded.execute("SELECT count(*) FROM spool").fetchone()[0] == 0
    seen = upgraded.execute("SELECT label, seen_at FROM sightings").fetchall()
    assert [tuple(r) for r in seen] == [("bcc", "2024-05-01T09:30:00Z")]


def test_the_outbox_goes_on(upgraded: sqlite3.Connection) -> None:
    outbox = Outbox(upgraded)
    assert outbox.due(1059.0) == []
    [item] = outbox.due(1060.0)
    assert (item.id, item.created_at, item.attempts) == (1, 1000.0, 1)

    class Sink:
        def send(self, raw: bytes, mail_from: str, recipients: list[str]) -> Delivery:
            return Delivery(temporary={r: "451 still later" for r in recipients})

    runner = OutboxRunner(outbox, Sink(), clock=lambda: 1100.0)
    assert runner.run_once() == {"sent": 0, "retry": 1, "give_up": 0}
    row = upgraded.execute("SELECT attempts, next_attempt_at FROM outbox WHERE id = 1").fetchone()
    assert tuple(row) == (2, "1970-01-01T00:20:20Z")  # 1100 + the second backoff (120 s)
    assert spool.abandon_held(upgraded, now=2000.0) == 1
    held = upgraded.execute("SELECT state, given_up_at FROM outbox WHERE id = 2").fetchone()
    assert tuple(held) == ("given_up", "1970-01-01T00:33:20Z")
    figures = spool.status(upgraded, now=1100.0)["outbox"]
    assert (figures["depth"], figures["given_up"], figures["oldest_age_s"]) == (1, 2, 100.0)


def test_a_reader_waits_for_the_upgrade_running_now(tmp_path: Path) -> None:
    """``syncd status`` polled while the daemon migrates a store used to fail on a column a
    later migration adds ("no such column: next_retry")."""
    path = tmp_path / "syncd.sqlite3"
    old_store(path)
    upgrade = threading.Timer(0.3, lambda: db.connect(path).close())
    upgrade.start()
    try:
        conn = db.connect(path, readonly=True)
        assert [tuple(r) for r in conn.execute("SELECT next_retry FROM sync_inboxes")] == [(None,)]
    finally:
        upgrade.join()


def test_a_store_left_at_an_older_schema_gets_a_one_line_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A newer CLI beside an older daemon still running: the reader never migrates the
    daemon's store, and says what to do instead of a query's error."""
    store = tmp_path / "store"
    store.mkdir()
    old_store(store / "syncd.sqlite3")
    monkeypatch.setattr(db, "UPGRADE_WAIT", 0.1)
    config = tmp_path / "syncd.yaml"
    config.write_text(json.dumps({
        "store": {"path": str(store / "syncd.sqlite3"), "attachments_dir": str(store / "files")},
        "team": [{"name": "Ada", "email": "ada@example.com"}],
    }))  # fmt: skip
    config.chmod(0o600)
    for command in (["status"], ["contacts", "list"]):
        result = CliRunner().invoke(main, ["--config", str(config), *command])
        assert result.exit_code == 75, result.output  # EX_TEMPFAIL: a restart upgrades it
        assert result.stderr.strip().splitlines() == [
            f"syncd: {store / 'syncd.sqlite3'} is at schema 6 and this syncd needs "
            f"{db.latest_version()}; the daemon of this version upgrades it when it starts "
            "(restart syncd)"
        ]
    raw = sqlite3.connect(store / "syncd.sqlite3")
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 6
