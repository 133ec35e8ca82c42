"""syncd against a scripted IMAP server that misbehaves (``fakeimap``), as the user sees it:
``syncd sync --json`` and its exit status, ``syncd status`` while the daemon runs.
Timeouts in the configs are a fraction of a second so each misbehaviour shows fast."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from syncd.config.model import Config
from syncd.services import statusreport
from syncd.services.imap import ImapService
from syncd.services.storeworker import StoreWorker
from syncd.sources.imap.inbox import InboxResult
from tests.integration.conftest import as_json, syncd, syncd_run
from tests.integration.fakeimap import Connection, FakeImap, message, wait_for

TIMEOUT = 0.5  # imap.timeout in these configs: the deadline of a command is a few of these
# Trickled a byte every 50 ms, each of these takes minutes: "never" for a test.
LONG = {n: message(n, lines=200) for n in (1, 2, 3)}


def write_config(tmp_path: Path, fake: FakeImap) -> Path:
    var = tmp_path / "var"
    config: dict[str, Any] = {
        "store": {"path": str(var / "syncd.sqlite3"), "attachments_dir": str(var / "files")},
        "team": [{"name": "Ada", "email": "ada@example.com"}],
        "inboxes": [{
            "name": "ada", "kind": "personal", "owner": "ada@example.com",
            "imap": {"host": "127.0.0.1", "port": fake.port, "security": "none",
                     "username": "ada", "password": "secret-pw", "timeout": TIMEOUT},
            "sync": {"from": "1m", "folders": ["INBOX"], "create_contacts": True,
                     "poll_interval": "1h", "idle": False},
        }],
    }  # fmt: skip
    path = tmp_path / "syncd.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    path.chmod(0o600)
    return path


def status(config: Path) -> dict[str, Any]:
    return as_json(config, "status")["inboxes"][0]


@contextmanager
def daemon(config: Path) -> Iterator[subprocess.Popen[str]]:
    """``syncd run``, its log in a file: a daemon retrying a hostile server logs a lot."""
    with (config.parent / "daemon.log").open("w") as log, syncd_run(config, stderr=log) as running:
        yield running.proc


def trickle_first_connection(conn: Connection, number: int, uid: int, honest: bytes) -> None:
    if number == 1:
        conn.trickle(honest, 0.05)  # each read comes well within the read timeout
    else:
        conn.send(honest)


def trickle_always(conn: Connection, number: int, uid: int, honest: bytes) -> None:
    conn.trickle(honest, 0.05)


def terabyte_literal_for_uid_2(conn: Connection, number: int, uid: int, honest: bytes) -> None:
    if uid != 2:
        conn.send(honest)
        return
    head = honest.split(b" BODY[] {", 1)[0]
    conn.send(head + b" BODY[] {1099511627776}\r\n" + b"x" * 4096)


def test_a_server_answering_a_byte_at_a_time_is_cut_at_the_command_deadline(
    tmp_path: Path,
) -> None:
    """Before: every read came within the timeout, so the FETCH never ended. Now the body
    FETCH is cut at its deadline and retried on a new connection; cut again, the message
    is one the server will not give (a folder error), and `sync --json` says why."""
    with FakeImap(messages=LONG, body=trickle_always) as fake:
        config = write_config(tmp_path, fake)
        started = time.monotonic()
        done = syncd(config, "sync", "--json")
        took = time.monotonic() - started
    assert done.returncode == 1, done.stderr  # a folder failed; the inbox was reached
    (folder,) = json.loads(done.stdout)["inboxes"][0]["folders"]
    assert "UID 1" in folder["error"] and "too slow" in folder["error"], folder
    assert "connection lost during FETCH: the server is too slow" in done.stderr
    assert "reconnecting" in done.stderr
    assert fake.connections == 2
    assert took < 15


def test_after_a_cut_for_slowness_the_sync_goes_on_over_a_new_connection(
    tmp_path: Path,
) -> None:
    with FakeImap(messages=LONG, body=trickle_first_connection) as fake:
        config = write_config(tmp_path, fake)
        done = syncd(config, "sync", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["logged"] == 3 and report["inboxes"][0]["error"] is None
    assert fake.connections == 2  # cut, then the normal reconnect
    assert "the server is too slow" in done.stderr


def test_a_slow_but_steady_large_fetch_is_not_cut(tmp_path: Path) -> None:
    """A 256 KiB body at about 50 KiB/s takes twice the deadline's fixed part; the bytes
    it keeps sending earn it the time."""
    head = b"From: carol@client.example\r\nTo: ada@example.com\r\nSubject: big\r\n\r\n"
    big = {1: head + (b"z" * 78 + b"\r\n") * (256 * 1024 // 80)}
    sending: list[float] = []

    def steady(conn: Connection, number: int, uid: int, honest: bytes) -> None:
        started = time.monotonic()
        for i in range(0, len(honest), 4096):
            time.sleep(0.08)
            conn.send(honest[i : i + 4096])
        sending.append(time.monotonic() - started)

    with FakeImap(messages=big, body=steady) as fake:
        done = syncd(write_config(tmp_path, fake), "sync", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["logged"] == 1
    assert fake.connections == 1, done.stderr  # never cut
    assert sending[0] > 2 * 5 * TIMEOUT  # the deadline, were it not for the bytes


def test_a_terabyte_literal_is_a_folder_error_and_sync_json_still_prints(
    tmp_path: Path,
) -> None:
    """Before: MemoryError, a traceback and no JSON."""
    with FakeImap(body=terabyte_literal_for_uid_2) as fake:
        config = write_config(tmp_path, fake)
        done = syncd(config, "sync", "--json")
        assert done.returncode == 1, done.stderr  # a folder failed; the inbox was reached
        report = json.loads(done.stdout)
        (folder,) = report["inboxes"][0]["folders"]
        assert report["logged"] == 1  # UID 1; the folder stops before UID 2
        assert "UID 2" in folder["error"] and "1099511627776" in folder["error"]
        assert "Traceback" not in done.stderr

        shown = status(config)
        assert "1099511627776" in shown["folders"][0]["last_error"]
        text = syncd(config, "status").stdout
        assert "UID 2" in text and "last error" in text


def test_the_daemon_shows_a_lost_connection_in_status_while_it_retries(tmp_path: Path) -> None:
    """A pass retrying a server too slow to answer EXAMINE takes five cuts and their backoff
    (about 20 s here, hours with the default timeout) before it ends failed. Before: status
    said never_synced with no error all that time."""
    with (
        FakeImap(slow_examine=True) as fake,
        daemon(write_config(tmp_path, fake)) as proc,
    ):
        config = tmp_path / "syncd.yaml"
        error = wait_for(lambda: status(config)["last_error"], 15)
        assert error and "EXAMINE INBOX: the server is too slow" in error, error
        assert "reconnecting" in error and fake.connections < 5  # the pass is still retrying
        shown = status(config)
        assert shown["state"] == "failed" and shown["last_sync"] is None
        text = syncd(config, "status").stdout
        assert "inbox ada: failed, last sync never, last error: " in text
        assert proc.poll() is None


def test_the_daemon_shows_the_folder_error_of_a_terabyte_literal(tmp_path: Path) -> None:
    """Before: the MemoryError ended the pass unrecorded; status said never_synced."""
    with (
        FakeImap(body=terabyte_literal_for_uid_2) as fake,
        daemon(write_config(tmp_path, fake)) as proc,
    ):
        config = tmp_path / "syncd.yaml"

        # The folder's row comes with UID 1, before the pass reaches UID 2's error.
        def with_error() -> list[dict[str, Any]]:
            folders = status(config)["folders"]
            return folders if folders and folders[0]["last_error"] else []

        folders = wait_for(with_error, 15)
        assert "1099511627776" in folders[0]["last_error"], folders
        text = syncd(config, "status").stdout
        assert "UID 2 exists but cannot be fetched" in text
        assert proc.poll() is None


def test_a_pass_that_crashes_shows_in_status(tmp_path: Path) -> None:
    """Whatever escapes a pass (the terabyte literal's MemoryError did) is recorded as the
    inbox's error, not only logged; the inbox's thread goes on."""
    with FakeImap() as fake:
        config = Config.from_yaml(write_config(tmp_path, fake))
    store = StoreWorker(config)
    store.open()
    passes: list[str] = []

    def crashing(inbox: Any, *args: Any, **kwargs: Any) -> tuple[InboxResult, int]:
        passes.append(inbox.name)
        raise MemoryError

    service = ImapService(config, store, run_pass=crashing)

    async def run_for_a_moment() -> None:
        await service.start(every=None)  # type: ignore[arg-type]
        await asyncio.to_thread(wait_for, lambda: passes, 5)
        await asyncio.sleep(0.2)
        await service.stop(time.monotonic() + 5)

    try:
        asyncio.run(run_for_a_moment())
    finally:
        store.close()
    (inbox,) = statusreport.gather(config)["inboxes"]
    assert inbox["state"] == "failed" and "MemoryError" in inbox["last_error"], inbox


@pytest.mark.parametrize(
    "garbage",
    [b"*CAPABILITY IMAP4rev1 ((\r\n", b"* 12 (((\r\n", b"unparsable\r\n"],
    ids=["malformed-capability", "unparsable-untagged", "not-imap"],
)
def test_garbage_in_the_login_answer_is_a_protocol_error_not_a_refused_login(
    tmp_path: Path, garbage: bytes
) -> None:
    """Before: auth_failed, and the daemon waited an hour before trying again."""
    with FakeImap(login_garbage=garbage) as fake:
        config = write_config(tmp_path, fake)
        done = syncd(config, "sync", "--json")
        assert done.returncode == 69, done.stderr
        inbox = json.loads(done.stdout)["inboxes"][0]
        assert inbox["state"] == "failed", inbox
        assert "protocol error" in inbox["error"] and "secret-pw" not in inbox["error"]
        assert status(config)["state"] == "failed"


def test_the_daemon_retries_a_login_protocol_error_within_seconds(tmp_path: Path) -> None:
    with (
        FakeImap(login_garbage=b"* 12 (((\r\n") as fake,
        daemon(write_config(tmp_path, fake)),
    ):
        # After a first failed pass the normal backoff waits 5-10 s; a refused login, an hour.
        assert wait_for(lambda: fake.logins >= 2, 20), fake.logins
