"""`syncd sync` and `syncd run` against a real Dovecot and a real store file."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.corpus import generate
from bench.imap import fill_maildir
from syncd.mail.parse import parse
from tests.integration.conftest import ImapUser, syncd, syncd_run

NOW = datetime.now(UTC)


def message(n: int, frm: str = "carol@client.example") -> bytes:
    return (
        f"From: Carol <{frm}>\r\nTo: ada@example.com\r\nSubject: hello {n}\r\n"
        f"Message-ID: <sync{n}@client.example>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n"
        f"body {n}\r\n"
    ).encode()


def write_config(tmp_path: Path, user: ImapUser, **sync: object) -> Path:
    sync_cfg = {"from": "1m", "folders": ["INBOX", "Archive"], "create_contacts": True,
                "poll_interval": "1h", **sync}  # fmt: skip
    config = {
        "team": [{"name": "Ada", "email": "ada@example.com"}],
        "inboxes": [{
            "name": "ada", "kind": "personal", "owner": "ada@example.com",
            "imap": {"host": "127.0.0.1", "port": user.server.port, "security": "none",
                     "username": user.name, "password": user.password, "timeout": "10s"},
            "sync": sync_cfg,
        }],
    }  # fmt: skip
    path = tmp_path / "syncd.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    path.chmod(0o600)
    return path


def engagements(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "var" / "syncd.sqlite3") as conn:
        return conn.execute("SELECT count(*) FROM emails").fetchone()[0]


def test_sync_json_counts_and_rerun_logs_nothing(tmp_path: Path, imap_user: ImapUser) -> None:
    for n in range(3):
        imap_user.append("INBOX", message(n), NOW - timedelta(days=1))
    imap_user.append("Archive", message(0), NOW - timedelta(days=1))  # same mail, two folders
    imap_user.append("INBOX", message(9), NOW - timedelta(days=90))  # before the window
    config = write_config(tmp_path, imap_user)

    dry = syncd(config, "sync", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    folders = json.loads(dry.stdout)["inboxes"][0]["folders"]
    assert {f["name"]: f["would_fetch"] for f in folders} == {"INBOX": 3, "Archive": 1}
    assert not (tmp_path / "var" / "syncd.sqlite3").exists() or engagements(tmp_path) == 0

    first = syncd(config, "sync", "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert (report["logged"], report["duplicates"]) == (3, 1)
    assert engagements(tmp_path) == 3

    again = json.loads(syncd(config, "sync", "--json").stdout)
    assert (again["logged"], again["duplicates"]) == (0, 0)

    # A new UIDVALIDITY rescans INBOX; its mail is known by Message-ID, so nothing is
    # fetched or logged again.
    imap_user.server.doveadm(
        "mailbox", "update", "-u", imap_user.name, "--uid-validity", "999", "INBOX"
    )
    dry = json.loads(syncd(config, "sync", "--dry-run", "--json").stdout)
    assert (dry["inboxes"][0]["folders"][0]["would_fetch"], dry["duplicates"]) == (0, 3)
    rescan = json.loads(syncd(config, "sync", "--json").stdout)
    assert (rescan["logged"], rescan["duplicates"]) == (0, 3)
    assert engagements(tmp_path) == 3

    status = syncd(config, "status", "--json")
    assert status.returncode == 0, status.stderr
    (inbox,) = json.loads(status.stdout)["inboxes"]
    assert inbox["state"] == "ok"
    assert {f["name"]: f["logged"] for f in inbox["folders"]} == {"INBOX": 3, "Archive": 0}
    text = syncd(config, "status").stdout.splitlines()
    assert text[1].startswith("inbox ada: ok, last sync ")
    assert text[2].startswith("  INBOX: uidvalidity 999, last uid ")
    assert text[2].endswith("initial sync done; 3 logged, 3 duplicates, 0 skipped, 0 quarantined")
    assert text[3].endswith("initial sync done; 0 logged, 1 duplicates, 0 skipped, 0 quarantined")


def test_sync_prints_plain_progress_lines_off_a_terminal(
    tmp_path: Path, imap_user: ImapUser
) -> None:
    for n in range(2):
        imap_user.append("INBOX", message(n), NOW - timedelta(days=1))
    result = syncd(write_config(tmp_path, imap_user, folders=["INBOX"]), "sync")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert "  INBOX: 2/2" in lines and "\r" not in result.stderr  # no terminal codes in a log
    assert lines[-1] == "ada/INBOX: 2 logged, 0 duplicates, 0 skipped, 0 quarantined"


def test_sync_killed_mid_pass_resumes_exactly_once(tmp_path: Path, imap_user: ImapUser) -> None:
    """The real CLI, parser processes and store, killed with SIGKILL mid-pass: the next
    pass hands over exactly the UIDs above the committed checkpoint, and the store ends
    with one email per message key."""
    total = 3000
    fill_maildir(imap_user, total)
    keys = {parse(raw, received_at=when).key for raw, when in generate(total, seed=1)}
    config = write_config(tmp_path, imap_user, folders=["INBOX"], **{"from": "2000-01-01"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "--config", str(config), "sync", "--json"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while _logged_so_far(tmp_path) == 0:
            assert proc.poll() is None and time.monotonic() < deadline, "no batch committed"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the parser processes too
        proc.communicate()
    with sqlite3.connect(tmp_path / "var" / "syncd.sqlite3") as conn:
        (committed_uid,) = conn.execute("SELECT last_uid FROM sync_folders").fetchone()
    assert 0 < committed_uid < total, "the kill did not land mid-pass"

    second = syncd(config, "sync", "--json")
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    handed = sum(report[c] for c in ("logged", "duplicates", "skipped", "quarantined"))
    assert handed == total - committed_uid  # no gap, nothing handed over twice
    assert engagements(tmp_path) == len(keys)


def _logged_so_far(tmp_path: Path) -> int:
    try:
        return engagements(tmp_path)
    except sqlite3.OperationalError:  # the store or its tables are not there yet
        return 0


def test_sync_unknown_inbox_and_bad_password(tmp_path: Path, imap_user: ImapUser) -> None:
    config = write_config(tmp_path, imap_user)
    assert syncd(config, "sync", "--inbox", "nope").returncode == 2
    config.write_text(config.read_text().replace(imap_user.password, "wrong-password"))
    result = syncd(config, "sync", "--json")
    assert result.returncode == 77  # EX_NOPERM: a refused login, not an unreachable server
    assert json.loads(result.stdout)["inboxes"][0]["state"] == "auth_failed"
    assert "wrong-password" not in result.stdout + result.stderr


def test_daemon_logs_new_mail_within_seconds_by_idle(tmp_path: Path, imap_user: ImapUser) -> None:
    """IDLE delivers new mail within seconds, while a second inbox whose password is
    refused is marked failed and not tried again: one failing inbox stops nothing."""
    config = write_config(tmp_path, imap_user, folders=["INBOX"])
    settings = json.loads(config.read_text())
    bob = json.loads(json.dumps(settings["inboxes"][0]))
    bob.update(name="bob", kind="team", owner=None, address="support@example.com")
    bob["imap"]["password"] = "wrong-password"
    settings["inboxes"].append(bob)
    config.write_text(json.dumps(settings))
    with syncd_run(config) as daemon:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            store = tmp_path / "var" / "syncd.sqlite3"
            if store.exists() and _has_table(store, "sync_inboxes") and _synced(store):
                break
            time.sleep(0.2)
        time.sleep(1.0)  # let the thread enter IDLE
        imap_user.append("INBOX", message(42), NOW)
        started = time.monotonic()
        while engagements(tmp_path) < 1:
            assert time.monotonic() - started < 10, "new mail not logged within 10 s"
            time.sleep(0.2)
        status = json.loads(syncd(config, "status", "--json").stdout)
        states = {inbox["name"]: inbox["state"] for inbox in status["inboxes"]}
        assert states == {"ada": "ok", "bob": "auth_failed"}
        assert daemon.stop(15) == 0
    assert "wrong-password" not in daemon.stderr
    # The refused login was tried once in all that time (it waits an hour to try again).
    mine = f"user=<{imap_user.name}>"  # the server and its log are shared by all tests
    refused = [
        ln for ln in imap_user.server.log().splitlines() if "auth failed" in ln and mine in ln
    ]
    assert len(refused) == 1, refused


def _has_table(store: Path, name: str) -> bool:
    with sqlite3.connect(store) as conn:
        return bool(conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone())


def _synced(store: Path) -> bool:
    with sqlite3.connect(store) as conn:
        return bool(conn.execute("SELECT 1 FROM sync_inboxes WHERE inbox = 'ada'").fetchone())


def test_doctor_tries_each_login_and_the_store(tmp_path: Path, imap_user: ImapUser) -> None:
    config = write_config(tmp_path, imap_user)
    result = syncd(config, "doctor", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = {c["name"].split(" (")[0]: c for c in json.loads(result.stdout)}
    assert checks["imap login ada"]["ok"] is True
    config.write_text(config.read_text().replace(imap_user.password, "wrong-password"))
    result = syncd(config, "doctor", "--json")
    assert result.returncode == 1
    (imap,) = [c for c in json.loads(result.stdout) if c["name"].startswith("imap")]
    assert imap["ok"] is False and "wrong-password" not in result.stdout


def big_message(size_mb: int) -> bytes:
    import base64

    payload = base64.encodebytes(os.urandom(size_mb * 1024 * 1024 * 3 // 4))
    return (
        b"From: Carol <carol@client.example>\r\nTo: ada@example.com\r\nSubject: the big file\r\n"
        b"Message-ID: <big@client.example>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b'--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="big.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + payload.replace(b"\n", b"\r\n")
        + b"--b--\r\n"
    )


def test_60_mb_message_is_logged_without_its_attachment(
    tmp_path: Path, imap_user: ImapUser
) -> None:
    raw = big_message(60)
    assert len(raw) > 60 * 1024 * 1024
    imap_user.append("INBOX", raw, NOW - timedelta(hours=1))
    config = write_config(tmp_path, imap_user, folders=["INBOX"])
    settings = json.loads(config.read_text())
    settings["store"] = {"max_attachment_mb": 40}  # the 45 MB attachment is over it
    config.write_text(json.dumps(settings))
    result = syncd(config, "sync", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["logged"] == 1
    timeline = json.loads(syncd(config, "timeline", "carol@client.example", "--json").stdout)
    (item,) = timeline
    assert item["subject"] == "the big file"
    (attachment,) = item["attachments"]
    assert attachment["filename"] == "big.bin" and attachment["stored"] is False
    assert attachment["size"] > 44 * 1024 * 1024
    assert not any((tmp_path / "var" / "attachments").rglob("*")) or all(
        p.stat().st_size < 1024 * 1024
        for p in (tmp_path / "var" / "attachments").rglob("*")
        if p.is_file()
    )
