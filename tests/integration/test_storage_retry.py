"""Mail a full disk kept from the timeline gets there once there is room, by itself.

The daemon's attachments directory is a tiny tmpfs, filled up while it runs: a BCC'd
message with an attachment is answered 250 (the spool is elsewhere), waits in the
spool rather than in the quarantine, and is on the timeline once the filler is gone,
with nobody running ``quarantine retry``. A store written by an older syncd may hold
mail quarantined for a full disk: the daemon retries it at start, and leaves mail
quarantined for its own fault where it is.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from syncd.mail.provenance import Provenance
from syncd.store import db, quarantine
from tests.integration.conftest import free_port
from tests.integration.test_daemon import MINIMAL, Notify, start
from tests.integration.test_store_failures import fill, mount_tmpfs, unmount

ATTACHMENT = os.urandom(300 * 1024)


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[Notify]:
    n = Notify(tmp_path / "notify.sock")
    yield n
    n.sock.close()


@pytest.fixture
def small_attachments_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "attachments"
    mount_tmpfs(path, "1m")
    try:
        yield path
    finally:
        unmount(path)


def config(attachments: Path, port: int) -> str:
    return (
        MINIMAL
        + f"store: {{attachments_dir: '{attachments}'}}\n"
        + f"bcc: {{listen: '127.0.0.1:{port}', addresses: [log@crm.example.com], "
        + "verify_sender: none}\n"
    )


def with_attachment(n: int) -> bytes:
    data = base64.encodebytes(ATTACHMENT).decode().replace("\n", "\r\n")
    return (
        f"From: Ada <ada@example.com>\r\nTo: client{n}@client{n}.example\r\n"
        f"Subject: contract {n}\r\nMessage-ID: <full{n}@example.com>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nthe contract\r\n"
        "--b\r\nContent-Type: application/pdf\r\n"
        'Content-Disposition: attachment; filename="contract.pdf"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{data}--b--\r\n"
    ).encode()


def cli(tmp_path: Path, *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "syncd", "--config", str(tmp_path / "syncd.yaml"), *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return json.loads(done.stdout) if done.stdout.strip() else None


def subjects(tmp_path: Path, address: str) -> list[str]:
    return [item.get("subject") for item in cli(tmp_path, "timeline", address, "--json") or []]


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=25) == 0
    finally:
        proc.kill()
        _, stderr = proc.communicate()
    return stderr


def test_full_attachments_dir_delays_mail_and_loses_none(
    tmp_path: Path, notify: Notify, small_attachments_dir: Path
) -> None:
    port = free_port()
    proc = start(tmp_path, notify, config(small_attachments_dir, port))
    try:
        notify.wait_for("READY=1")
        filler = fill(small_attachments_dir)
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.sendmail("ada@example.com", ["log@crm.example.com"], with_attachment(1))
        time.sleep(5)  # a few drains have failed on the full disk
        status = cli(tmp_path, "status", "--json")
        assert status["bcc"]["spool_depth"] == 1  # kept, not lost
        assert status["quarantine"] == 0  # and not quarantined
        assert cli(tmp_path, "quarantine", "list", "--json") == []

        filler.unlink()  # room again: no command from anyone from here on
        deadline = time.monotonic() + 60
        while "contract 1" not in subjects(tmp_path, "client1@client1.example"):
            assert time.monotonic() < deadline, "the mail never reached the timeline"
            time.sleep(0.5)
        waited = time.monotonic() - (deadline - 60)
        print(f"on the timeline {waited:.1f} s after space returned")
        status = cli(tmp_path, "status", "--json")
        assert status["bcc"]["spool_depth"] == 0
        assert status["quarantine"] == 0
        stored = [p for p in small_attachments_dir.rglob("*") if p.is_file()]
        assert [p.read_bytes() for p in stored if ".staging" not in p.parts] == [ATTACHMENT]
    finally:
        stderr = stop(proc)
    assert "draining the BCC spool failed" in stderr


def test_start_retries_mail_quarantined_for_a_full_disk(tmp_path: Path, notify: Notify) -> None:
    store = tmp_path / "var" / "syncd.sqlite3"
    conn = db.connect(store)
    when = Provenance(source="bcc", received_at=datetime.now(UTC), sender="ada@example.com")
    with contextlib.closing(conn), db.transaction(conn):
        # As syncd before this fix left it: the attachment's write failed, ENOSPC.
        full = "could not be logged: OSError: [Errno 28] No space left on device"
        quarantine.quarantine(conn, with_attachment(2), when, full)
        quarantine.quarantine(conn, b"\x00\x01 not mail", when, "unparseable: no header block")
    (tmp_path / "syncd.yaml").write_text(MINIMAL)

    proc = start(tmp_path, notify)
    try:
        notify.wait_for("READY=1")
        deadline = time.monotonic() + 20
        while "contract 2" not in subjects(tmp_path, "client2@client2.example"):
            assert time.monotonic() < deadline, "the quarantined mail was not retried"
            time.sleep(0.5)
        left = cli(tmp_path, "quarantine", "list", "--json")
        assert [q["reason"] for q in left] == ["unparseable: no header block"]
    finally:
        stderr = stop(proc)
    assert "retried 1 quarantined message(s)" in stderr


def test_due_waits_per_entry_and_never_takes_permanent_reasons(tmp_path: Path) -> None:
    from datetime import timedelta

    from syncd.store import requeue

    conn = db.connect(tmp_path / "store.sqlite3")
    now = datetime.now(UTC)
    when = Provenance(source="bcc", received_at=now)
    with contextlib.closing(conn):
        with db.transaction(conn):
            full = quarantine.quarantine(
                conn, b"x", when, "could not be logged: OSError: [Errno 28] x"
            )
            quarantine.quarantine(conn, b"y", when, "unparseable: no header block")
        assert requeue.due(conn, now) == []  # just quarantined: its wait has not passed
        assert requeue.due(conn, now + timedelta(seconds=61)) == [full]
        assert requeue.due(conn, now, every=True) == [full]
        with db.transaction(conn):
            quarantine.requarantine(conn, full, "could not be logged: OSError: [Errno 28] x")
        assert requeue.due(conn, now + timedelta(seconds=61)) == []  # second try: 120 s
        assert requeue.due(conn, now + timedelta(seconds=121)) == [full]
