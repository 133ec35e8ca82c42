"""A syncd killed with SIGKILL leaves no process behind: its parser processes, their
forkserver and multiprocessing's resource tracker all end with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

MINIMAL = "team: [{name: Ada, email: ada@example.com}]\n"


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigkill_during_import_leaves_no_parser_process(tmp_path: Path) -> None:
    mbox = tmp_path / "big.mbox"
    with mbox.open("wb") as out:
        for n in range(20000):
            out.write(
                b"From sender Mon Nov  3 10:00:00 2025\n"
                b"From: client%d@customer.example\nTo: ada@example.com\n"
                b"Subject: hello %d\nMessage-ID: <orphan%d@x>\n\nbody %d\n\n" % (n, n, n, n)
            )
    (tmp_path / "syncd.yaml").write_text(MINIMAL)
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "--config", str(tmp_path / "syncd.yaml"),
         "import", str(mbox), "--owner", "ada@example.com"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    family: set[int] = set()
    try:
        deadline = time.monotonic() + 30
        while len(family) < 3 and time.monotonic() < deadline and proc.poll() is None:
            family |= descendants(proc.pid)  # forkserver, a parser, the resource tracker
            time.sleep(0.05)
        assert len(family) >= 3, "the import ended before its parser processes were seen"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(alive(p) for p in family) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = {p: Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in family if alive(p)}
        assert left == {}
    finally:
        proc.kill()
        for pid in family:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
