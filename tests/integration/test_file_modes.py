"""What syncd writes is readable by its user alone, whatever the umask (issue 15 item 6).

The real CLI and daemon run as subprocesses under umask 022, the umask that made the
store 0644 before: import, `run` with a BCC message carrying an attachment, backup and
export. Every file they leave under the store's and the attachments' directories (which
syncd creates itself) must then be 0600 and every directory 0700.
"""

from __future__ import annotations

import os
import signal
import smtplib
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.conftest import Notify, free_port

DATA = Path(__file__).resolve().parents[1] / "data"


def syncd(config: Path, *args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "syncd", "--config", str(config), *args],
        # The Debian default: group and others may read what a process creates.
        preexec_fn=lambda: os.umask(0o022),
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,  # type: ignore[arg-type]
    )


def finished(proc: subprocess.Popen[str]) -> None:
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr


def modes(*roots: Path) -> dict[str, str]:
    """Every directory and file under ``roots`` (roots included) with its mode."""
    found = {}
    for root in roots:
        found[str(root)] = oct(root.stat().st_mode & 0o777)
        for path in root.rglob("*"):
            found[str(path)] = oct(path.stat().st_mode & 0o777)
    return found


def bcc_mail(n: int) -> bytes:
    pdf = (DATA / "normal-alternative-attachment.eml").read_bytes()
    return pdf.replace(b"<alt-1@acme.example>", f"<modes-{n}@acme.example>".encode())


def test_everything_syncd_creates_is_private_under_umask_022(
    tmp_path: Path, notify: Notify
) -> None:
    state = tmp_path / "state"  # syncd creates all of it
    port = free_port()
    config = tmp_path / "syncd.yaml"
    config.write_text(
        f"store:\n  path: {state / 'store' / 'syncd.sqlite3'}\n"
        f"  attachments_dir: {state / 'files'}\n"
        "team: [{name: Ada, email: ada@example.com}]\n"
        f"bcc: {{listen: '127.0.0.1:{port}', addresses: [log@crm.example.com], "
        "verify_sender: none}\n",
        encoding="utf-8",
    )
    finished(
        syncd(config, "import", str(DATA / "normal-alternative-attachment.eml"), "--owner",
              "ada@example.com")
    )  # fmt: skip

    daemon = syncd(config, "run", env={**os.environ, "NOTIFY_SOCKET": str(notify.path)})
    try:
        notify.wait_for("READY=1")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.sendmail("ada@example.com", ["log@crm.example.com"], bcc_mail(2))
        store = sqlite3.connect(state / "store" / "syncd.sqlite3")
        deadline = time.monotonic() + 20
        while store.execute("SELECT count(*) FROM emails").fetchone()[0] < 2:
            assert time.monotonic() < deadline, "the BCC message was not logged"
            time.sleep(0.1)
        store.close()
        daemon.send_signal(signal.SIGTERM)
        finished(daemon)
    finally:
        daemon.kill()
        daemon.wait()

    backups = tmp_path / "backups"
    backups.mkdir()
    finished(syncd(config, "backup", str(backups / "syncd-backup")))
    finished(syncd(config, "export", "--format", "json", "--output", str(backups / "all.json")))

    created = modes(state)
    assert any(name.endswith("syncd.sqlite3-wal") for name in created)
    assert len([name for name in created if "/files/" in name]) >= 3  # fan-out dirs, a file
    written = {name: mode for name, mode in modes(backups).items() if name != str(backups)}
    assert written
    wrong = {
        name: mode
        for name, mode in {**created, **written}.items()
        if mode != ("0o700" if Path(name).is_dir() else "0o600")
    }
    assert wrong == {}
