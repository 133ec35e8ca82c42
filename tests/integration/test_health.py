"""Monitoring sees a refused login: the real daemon against the real Dovecot with a wrong
password, then the right one after a reload (SIGHUP)."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.integration.conftest import ImapUser, free_port, syncd, syncd_run, wait_for
from tests.integration.test_sync_cli import message, write_config


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""  # not listening yet


def gauge(text: str, name: str, labels: str) -> float | None:
    found = re.search(rf"^{name}{{{re.escape(labels)}}} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def test_health_and_metrics_see_a_refused_login_until_a_reload_fixes_it(
    tmp_path: Path, imap_user: ImapUser
) -> None:
    imap_user.append("INBOX", message(1), datetime.now(UTC) - timedelta(hours=1))
    config = write_config(tmp_path, imap_user, folders=["INBOX"])
    port = free_port()
    settings = json.loads(config.read_text())
    settings["metrics"] = {"listen": f"127.0.0.1:{port}"}
    settings["inboxes"][0]["imap"]["password"] = "wrong-password"
    config.write_text(json.dumps(settings))
    base = f"http://127.0.0.1:{port}"
    with syncd_run(config) as daemon:
        # Before: 200 {"status": "ok"} while the only inbox was auth_failed.
        # A pass's state is stored a moment before its retry is scheduled.
        _, body = wait_for(
            lambda: (r := get(f"{base}/health"))[0] == 503 and '"next_retry": "' in r[1] and r,
            30,
        )
        health = json.loads(body)
        assert health["status"] == "error" and health["failed_inboxes"] == ["ada"]
        [failing] = health["failing"]
        assert (failing["part"], failing["name"], failing["state"]) == (
            "inbox",
            "ada",
            "auth_failed",
        )
        assert failing["error"] and failing["next_retry"]
        assert "wrong-password" not in body

        _, text = get(f"{base}/metrics")
        retry_at = gauge(text, "syncd_next_retry_timestamp_seconds", 'inbox="ada"')
        assert retry_at is not None, text
        # A refused login waits an hour or more (with jitter, half of that at least).
        assert 1700 < retry_at - time.time() < 6 * 3600 + 60
        assert "# TYPE syncd_last_success_timestamp_seconds gauge" in text
        assert "syncd_store_bytes " in text

        status = syncd(config, "status", "--json")
        [inbox] = json.loads(status.stdout)["inboxes"]
        assert inbox["state"] == "auth_failed" and inbox["next_retry"]
        text_status = syncd(config, "status").stdout
        assert "last sync never" in text_status and "None" not in text_status
        assert re.search(
            r"next retry in (\d+h \d+m|\d+m \d+s) \(at \d\d:\d\d:\d\dZ\)", text_status
        ), text_status

        # The admin fixes the password and reloads: tried again at once, not in an hour.
        settings["inboxes"][0]["imap"]["password"] = imap_user.password
        config.write_text(json.dumps(settings))
        daemon.proc.send_signal(signal.SIGHUP)
        _, body = wait_for(lambda: (r := get(f"{base}/health"))[0] == 200 and r, 30)
        assert json.loads(body) == {"status": "ok", "failed_inboxes": [], "failing": []}
        _, text = get(f"{base}/metrics")
        synced = gauge(text, "syncd_last_success_timestamp_seconds", 'folder="INBOX",inbox="ada"')
        assert synced is not None and abs(synced - time.time()) < 60, text
        assert 'syncd_next_retry_timestamp_seconds{inbox="ada"}' not in text
        [inbox] = json.loads(syncd(config, "status", "--json").stdout)["inboxes"]
        assert inbox["state"] == "ok" and inbox["next_retry"] is None and inbox["last_sync"]
        assert daemon.stop() == 0
    assert "wrong-password" not in daemon.stderr
