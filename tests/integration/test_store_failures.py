"""`syncd run` with a store that stops taking writes: a full disk, a read-only filesystem.

The store lives on a filesystem of its own that the test breaks while the daemon runs:

- ``full``: a small tmpfs, filled with a file until ENOSPC.
- ``readonly``: ext4 on a loop device whose image sits on a small tmpfs. Filling that
  tmpfs makes the loop device's writes fail; ext4 aborts its journal and the kernel
  turns the filesystem read-only under the daemon's open files (``emergency_ro``), as
  a disk error does on a server mounted ``errors=remount-ro``. ``mount -o remount,ro``
  cannot do this: the kernel refuses (EBUSY) while the daemon holds files open for
  writing.

On a full disk a small commit may still succeed (SQLite reuses the WAL's space once it
is checkpointed), so there only large mail is refused; the read-only store refuses every
write, counters included, which is what used to make the daemon spin and hang at stop.

Both need root and mount(8); the tests skip with the reason otherwise. Everything
mounted is unmounted in teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import smtplib
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import free_port
from tests.integration.test_daemon import MINIMAL, Notify, bcc_message, start


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def _mounting_missing() -> str | None:
    if os.geteuid() != 0:
        return "mounting a tmpfs to fill up needs root"
    if not shutil.which("mount") or not shutil.which("umount"):
        return "mount(8) is not installed"
    return None


def mount_tmpfs(path: Path, size: str) -> None:
    """A tmpfs of ``size`` at ``path``; skips the test when it cannot be mounted."""
    reason = _mounting_missing()
    if reason:
        pytest.skip(reason)
    path.mkdir(parents=True, exist_ok=True)
    done = _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


def unmount(path: Path) -> None:
    if _run("umount", str(path)).returncode != 0:
        _run("umount", "-l", str(path))  # busy: detach now, the kernel frees it later


def fill(directory: Path) -> Path:
    """Write zeros into ``directory`` until its filesystem is full; the filler's path."""
    filler = directory / "filler"
    with open(filler, "wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * (1 << 20))
            handle.flush()
    with contextlib.suppress(OSError):
        while True:  # the last part-megabyte too
            with open(filler, "ab") as handle:
                handle.write(b"\0" * 4096)
    return filler


class BrokenStore:
    """The directory a daemon's store lives in, and how to break and mend its filesystem."""

    def __init__(self, root: Path, kind: str) -> None:
        self.root = root
        self.kind = kind
        self.back = root / "back"  # the tmpfs that fills up
        self.dir = root / "store"  # where the store is
        self.image = self.back / "ext4.img"
        self.mounted: list[Path] = []

    def setup(self) -> None:
        if self.kind == "full":
            mount_tmpfs(self.back, "24m")
            self.mounted.append(self.back)
            self.dir = self.back
            return
        for tool in ("losetup", "mkfs.ext4", "e2fsck"):
            if not shutil.which(tool):
                pytest.skip(f"{tool} is not installed")
        mount_tmpfs(self.back, "40m")
        self.mounted.append(self.back)
        _run("truncate", "-s", "32M", str(self.image))
        made = _run("mkfs.ext4", "-q", "-F", str(self.image))
        if made.returncode != 0:
            pytest.skip(f"mkfs.ext4 failed: {made.stderr.strip()}")
        self._mount_ext4()

    def _mount_ext4(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        # data_err=abort: a failed data write aborts the journal at once (then read-only).
        options = "loop,errors=remount-ro,data_err=abort"
        done = _run("mount", "-o", options, str(self.image), str(self.dir))
        if done.returncode != 0:
            pytest.skip(f"cannot mount ext4 on a loop device here: {done.stderr.strip()}")
        self.mounted.append(self.dir)

    def break_it(self) -> None:
        fill(self.back)
        if self.kind == "readonly":
            # The next write-back fails on the loop device and ext4 goes read-only.
            with contextlib.suppress(OSError), open(self.dir / "probe", "wb") as handle:
                handle.write(os.urandom(1 << 20))
                handle.flush()
                os.fsync(handle.fileno())
            deadline = time.monotonic() + 10
            while not self.read_only() and time.monotonic() < deadline:
                _run("sync", "-f", str(self.dir))  # a journal commit meets the failed write
                time.sleep(0.1)
            assert self.read_only(), "ext4 did not turn read-only after the I/O error"

    def read_only(self) -> bool:
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if fields[1] == str(self.dir):
                # An error turns ext4 read-only without remounting it: "emergency_ro".
                return bool({"ro", "emergency_ro"} & set(fields[3].split(",")))
        return False

    def mend(self) -> None:
        """Room again (and, for ext4, unmount, check and mount it writable again)."""
        if self.kind == "readonly":
            unmount(self.dir)
            self.mounted.remove(self.dir)
        (self.back / "filler").unlink()
        if self.kind == "readonly":
            _run("e2fsck", "-fy", str(self.image))  # the aborted journal left an error flag
            self._mount_ext4()

    def teardown(self) -> None:
        for path in reversed(self.mounted):
            unmount(path)


@pytest.fixture(params=["full", "readonly"])
def broken_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokenStore]:
    store = BrokenStore(tmp_path, request.param)
    try:
        store.setup()
        yield store
    finally:
        store.teardown()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[Notify]:
    n = Notify(tmp_path / "notify.sock")
    yield n
    n.sock.close()


def daemon_config(store_dir: Path, smtp_port: int, http_port: int) -> str:
    return (
        MINIMAL
        + f"store: {{path: '{store_dir}/syncd.sqlite3', "
        + f"attachments_dir: '{store_dir}/attachments'}}\n"
        + f"bcc: {{listen: '127.0.0.1:{smtp_port}', addresses: [log@crm.example.com], "
        + "verify_sender: none}\n"
        + f"metrics: {{listen: '127.0.0.1:{http_port}'}}\n"
    )


def big_message(n: int) -> bytes:
    """A message larger than the store's WAL so far: the commit needs new disk space."""
    body = ("x" * 76 + "\r\n") * 26000  # about 2 MB
    return bcc_message(n).replace(b"\r\n\r\n", b"\r\n\r\n" + body.encode(), 1)


def send(port: int, message: bytes) -> int:
    """The SMTP code the endpoint answered DATA with."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        try:
            smtp.sendmail("ada@example.com", ["log@crm.example.com"], message)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code
    return 250


def metric(http_port: int, name: str) -> float:
    url = f"http://127.0.0.1:{http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not in /metrics:\n{text}"
    return float(found.group(1))


SPOOL_TROUBLE = "the BCC spool cannot be written (BCC mail is answered 451)"


def health(http_port: int) -> tuple[int, list[dict[str, str]]]:
    """/health's status code and its failing parts."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=10) as r:
            return r.status, json.loads(r.read())["failing"]
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())["failing"]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def logged(store_dir: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(store_dir / "syncd.sqlite3")) as conn:
        return [row[0] for row in conn.execute("SELECT message_id FROM emails")]


def test_unwritable_store_answers_451_and_stops_in_time(
    broken_store: BrokenStore, tmp_path: Path, notify: Notify
) -> None:
    smtp_port, http_port = free_port(), free_port()
    config = daemon_config(broken_store.dir, smtp_port, http_port)
    proc = start(tmp_path, notify, config)
    acknowledged: list[str] = []
    try:
        notify.wait_for("READY=1")
        for n in range(3):
            assert send(smtp_port, bcc_message(n)) == 250
            acknowledged.append(f"kill{n}@example.com")
        time.sleep(1)  # the drain logs them before the disk breaks
        broken_store.break_it()

        codes = [send(smtp_port, big_message(n)) for n in range(10, 14)]
        assert health(http_port) == (503, [{"part": "store", "error": SPOOL_TROUBLE}])
        codes += [send(smtp_port, bcc_message(n)) for n in range(20, 22)]
        for n, code in zip([10, 11, 12, 13, 20, 21], codes, strict=True):
            assert code in (250, 451), code
            if code == 250:  # a commit that fit in the space the store already had
                acknowledged.append(f"kill{n}@example.com")
        # The first big one may still fit in WAL pages a checkpoint freed; then the disk
        # is full for the rest.
        assert codes[1:4] == [451] * 3, codes
        assert metric(http_port, "syncd_bcc_temporary_failures_total") >= codes.count(451)

        time.sleep(6)  # the counters' flush has failed at least once: no loop after it
        used = cpu_seconds(proc.pid)
        time.sleep(3)
        busy = (cpu_seconds(proc.pid) - used) / 3
        assert busy < 0.10, f"the daemon used {busy:.0%} of a core while its store failed"
        assert metric(http_port, "syncd_bcc_temporary_failures_total") >= codes.count(451)

        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert proc.wait(timeout=30) == 0
        stop_seconds = time.monotonic() - started
        print(f"{broken_store.kind}: SIGTERM to exit {stop_seconds:.2f} s, CPU {busy:.1%}")
        assert stop_seconds < 20
    finally:
        proc.kill()
        _, stderr = proc.communicate()
    assert "syncd stopped" in stderr, stderr

    broken_store.mend()
    proc = start(tmp_path, notify, config)
    try:
        notify.wait_for("READY=1")
        deadline = time.monotonic() + 20
        while set(acknowledged) - set(logged(broken_store.dir)) and time.monotonic() < deadline:
            time.sleep(0.2)
        ids = logged(broken_store.dir)
        assert sorted(ids) == sorted(acknowledged)  # every 250 logged, and once
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=25) == 0
    finally:
        proc.kill()
        proc.communicate()
