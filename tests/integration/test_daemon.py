"""`syncd run` as systemd sees it: READY=1, reload on SIGHUP, clean exit on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.conftest import Notify

MINIMAL = "team: [{name: Ada, email: ada@example.com}]\n"


def start(tmp_path: Path, notify: Notify, config: str = MINIMAL) -> subprocess.Popen[str]:
    path = tmp_path / "syncd.yaml"
    path.write_text(config)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path)}
    return subprocess.Popen(
        [sys.executable, "-m", "syncd", "--config", str(path), "run"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_ready_reload_and_stop(tmp_path: Path, notify: Notify) -> None:
    proc = start(tmp_path, notify)
    try:
        assert "READY=1" in notify.wait_for("READY=1")
        assert (tmp_path / "var" / "syncd.sqlite3").exists()

        (tmp_path / "syncd.yaml").write_text("team: [{name: Ada, email: nope}]\n")
        proc.send_signal(signal.SIGHUP)
        seen = notify.wait_for("READY=1")
        assert "RELOADING=1" in seen
        assert proc.poll() is None, "a bad config on reload must not stop the daemon"

        proc.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in notify.wait_for("STOPPING=1")
        started = time.monotonic()
        assert proc.wait(timeout=25) == 0
        assert time.monotonic() - started < 25
    finally:
        proc.kill()
        _, stderr = proc.communicate()
    assert "reload refused, keeping the running config" in stderr
    assert "team[0].email: 'nope' is not an email address" in stderr
    assert "syncd stopped" in stderr


def test_bad_config_at_start_exits_78(tmp_path: Path, notify: Notify) -> None:
    proc = start(tmp_path, notify, "team: 3\n")
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 78
    assert "team: Input should be a valid list" in stderr


def bcc_config(port: int) -> str:
    return (
        MINIMAL
        + f"bcc: {{listen: '127.0.0.1:{port}', addresses: [log@crm.example.com], "
        + "verify_sender: none}\n"
    )


def bcc_message(n: int) -> bytes:
    return (
        f"From: Ada <ada@example.com>\r\nTo: client{n}@client{n}.example\r\n"
        f"Subject: offer {n}\r\nMessage-ID: <kill{n}@example.com>\r\n\r\nbody {n}\r\n"
    ).encode()


def logged_ids(tmp_path: Path) -> set[str]:
    import sqlite3

    with sqlite3.connect(tmp_path / "var" / "syncd.sqlite3") as conn:
        return {row[0] for row in conn.execute("SELECT message_id FROM emails")}


def test_sigkill_after_250s_loses_nothing(tmp_path: Path, notify: Notify) -> None:
    import smtplib

    from tests.integration.conftest import free_port

    port = free_port()
    proc = start(tmp_path, notify, bcc_config(port))
    acknowledged: list[str] = []
    try:
        notify.wait_for("READY=1")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            for n in range(40):
                smtp.sendmail("ada@example.com", ["log@crm.example.com"], bcc_message(n))
                acknowledged.append(f"kill{n}@example.com")
        proc.send_signal(signal.SIGKILL)  # right after the last 250
        proc.wait(timeout=10)
    finally:
        proc.kill()
        proc.communicate()

    proc = start(tmp_path, notify, bcc_config(port))  # the restart drains the spool
    try:
        notify.wait_for("READY=1")
        deadline = time.monotonic() + 15
        while set(acknowledged) - logged_ids(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert set(acknowledged) <= logged_ids(tmp_path)
        assert len(logged_ids(tmp_path)) == 40  # and nothing twice
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=25) == 0
    finally:
        proc.kill()
        proc.communicate()


def test_metrics_and_health(tmp_path: Path, notify: Notify) -> None:
    import json
    import smtplib
    import urllib.request

    from tests.integration.conftest import free_port

    smtp_port, http_port = free_port(), free_port()
    config = bcc_config(smtp_port) + f"metrics: {{listen: '127.0.0.1:{http_port}'}}\n"
    proc = start(tmp_path, notify, config)
    try:
        notify.wait_for("READY=1")
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
            smtp.sendmail("ada@example.com", ["log@crm.example.com"], bcc_message(1))
            with contextlib.suppress(smtplib.SMTPRecipientsRefused):
                smtp.sendmail("eve@evil.example", ["x@other.example"], bcc_message(2))
        time.sleep(6)  # refusal counters reach the store within 5 s
        base = f"http://127.0.0.1:{http_port}"
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
            text = response.read().decode()
        assert "syncd_bcc_accepted_total 1.0" in text
        assert 'syncd_bcc_refused_total{reason="recipient"} 1.0' in text
        with urllib.request.urlopen(f"{base}/health", timeout=10) as response:
            assert response.status == 200
            assert json.loads(response.read())["status"] == "ok"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=25) == 0
    finally:
        proc.kill()
        proc.communicate()


def test_second_daemon_on_the_same_store_exits_75(tmp_path: Path, notify: Notify) -> None:
    proc = start(tmp_path, notify)
    try:
        notify.wait_for("READY=1")
        second = subprocess.run(
            [sys.executable, "-m", "syncd", "--config", str(tmp_path / "syncd.yaml"), "run"],
            cwd=tmp_path, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert second.returncode == 75
        assert "another `syncd run` is using the store" in second.stderr
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=25) == 0
    finally:
        proc.kill()
        proc.communicate()
