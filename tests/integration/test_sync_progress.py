"""`syncd sync`'s progress: click's bar with rate and ETA on a terminal (a real
pseudo-terminal), the plain lines of before in a pipe."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from bench.imap import fill_maildir
from tests.integration.conftest import Dovecot, ImapUser, syncd
from tests.integration.test_sync_cli import NOW, message, write_config

TOTAL = 3000


def on_a_terminal(tmp_path: Path, config: Path, *args: str) -> tuple[int, str]:
    """Run syncd with stderr on a pseudo-terminal; its exit status and what it drew."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "--config", str(config), *args],
        cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave,
    )  # fmt: skip
    os.close(slave)
    drawn = bytearray()
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every holder of the terminal has closed it
                break
            if not chunk:
                break
            drawn += chunk
        return proc.wait(timeout=30), drawn.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_progress_bar_with_rate_and_eta_on_a_terminal(tmp_path: Path, imap_user: ImapUser) -> None:
    """Before: `\\r  INBOX: 1000/3000\\x1b[K`, no rate, no ETA."""
    fill_maildir(imap_user, TOTAL)
    config = write_config(tmp_path, imap_user, folders=["INBOX"], **{"from": "2000-01-01"})
    code, drawn = on_a_terminal(tmp_path, config, "sync")
    assert code == 0, drawn
    frames = re.findall(
        r"  INBOX  \[[# -]+\]  (\d+)/3000  +(\d+)%  (\d\d:\d\d:\d\d)  (\d+) msg/s", drawn
    )
    assert frames, drawn  # at least one frame with position, percent, ETA and rate
    done, percent, _eta, rate = frames[-1]
    assert 0 < int(done) < TOTAL and int(percent) == int(done) * 100 // TOTAL and int(rate) > 0
    assert "ada/INBOX: " in drawn and " logged" in drawn  # the summary line follows


def test_plain_progress_lines_in_a_pipe(tmp_path: Path, dovecot: Dovecot) -> None:
    user = dovecot.add_user()
    for n in range(3):
        user.append("INBOX", message(n), NOW - timedelta(days=1))
    config = write_config(tmp_path, user, folders=["INBOX"])
    result = syncd(config, "sync")
    assert result.returncode == 0, result.stderr
    assert "  INBOX: 3/3\n" in result.stderr
    assert (
        "\r" not in result.stderr and "\x1b" not in result.stderr and "msg/s" not in result.stderr
    )
