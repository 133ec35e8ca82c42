"""Forged From forms sent to the real daemon's BCC endpoint: refused with 550, or logged
with exactly the From that the sender check accepted."""

from __future__ import annotations

import json
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.conftest import Notify, free_port
from tests.integration.test_daemon import bcc_config, start
from tests.unit.test_bcc_rules import FROM_FORMS, TAIL

TEAM = (
    "team:\n"
    "  - {name: Ada, email: ada@example.com, aliases: [a.lovelace@example.com]}\n"
    "inboxes:\n"
    "  - name: support\n    kind: team\n    address: support@example.com\n"
    "    imap: {host: 127.0.0.1, port: 1, security: none, username: s, password: x}\n"
    "    sync: {from: now, folders: [INBOX], poll_interval: 1h, idle: false}\n"
)


def timeline(tmp_path: Path, email: str) -> list[dict]:
    result = subprocess.run(
        [sys.executable, "-m", "syncd", "--config", str(tmp_path / "syncd.yaml"),
         "timeline", email, "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else []


def test_every_from_form_is_refused_or_logged_as_checked(tmp_path: Path, notify: Notify) -> None:
    port = free_port()
    config = bcc_config(port).replace("team: [{name: Ada, email: ada@example.com}]\n", TEAM)
    proc = start(tmp_path, notify, config)
    replies: dict[str, tuple[int, str, str]] = {}
    try:
        notify.wait_for("READY=1")
        for n, (head, expected) in enumerate(FROM_FORMS):
            mid = f"form{n}@x"
            raw = head + TAIL.replace(b"<f1@x>", f"<{mid}>".encode())
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
                smtp.ehlo()
                smtp.mail("ada@example.com")
                smtp.rcpt("log@crm.example.com")
                code, text = smtp.data(raw)
            replies[mid] = (code, text.decode(), expected)
        accepted = {mid for mid, (code, _, _) in replies.items() if code == 250}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            logged = {e["message_id"]: e for e in timeline(tmp_path, "bob@victim.example")}
            if accepted <= logged.keys():
                break
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=25) == 0
    finally:
        proc.kill()
        proc.communicate()

    for mid, (code, text, expected) in replies.items():
        if "@" in expected:
            assert code == 250, (mid, text)
            assert logged[mid]["from"] == expected
            assert logged[mid]["direction"] == "outgoing"
        else:
            assert (code, text[:5]) == (550, "5.7.1"), (mid, expected, text)
            assert expected in text
            assert mid not in logged
    assert timeline(tmp_path, "ceo@customer.example") == []
