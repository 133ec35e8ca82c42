"""README.md's exit-code table, walked: each code it lists comes from a real `syncd`
invocation here, with the one line a user reads. Also: errors name their path, `doctor`
sees a store directory it cannot write, a silent IMAP server gets a waiting line."""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.integration.conftest import free_port, syncd

README = Path(__file__).parents[2] / "README.md"
ME = pwd.getpwuid(os.geteuid()).pw_name


def readme_codes() -> list[int]:
    """The codes in the README's table under the ``| code | meaning |`` header."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| code | meaning |"))
    codes = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        codes.append(int(line.split("|")[1]))
    return codes


def config_file(tmp_path: Path, *, port: int, password: str = "pw", user: str = "ada",
                store: Path | None = None) -> Path:  # fmt: skip
    store = store or tmp_path / "var" / "syncd.sqlite3"
    config = {
        "team": [{"name": "Ada", "email": "ada@example.com"}],
        "inboxes": [{
            "name": "ada", "kind": "personal", "owner": "ada@example.com",
            "imap": {"host": "127.0.0.1", "port": port, "security": "none",
                     "username": user, "password": password, "timeout": "10s"},
            "sync": {"folders": ["INBOX"], "from": "1m"},
        }],
        "store": {"path": str(store), "attachments_dir": str(store.parent / "attachments")},
    }  # fmt: skip
    path = tmp_path / "syncd.yaml"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def closed_port() -> int:
    return free_port()  # bound, then closed: nothing listens there


@contextmanager
def immutable(directory: Path) -> Iterator[None]:
    """A directory even root cannot create files in (the tests run as root, and root
    ignores file modes): ``chattr +i``, taken off again whatever happens."""
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i is not supported here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


def done_ok(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    result = syncd(config_file(tmp_path, port=closed_port()), "check-config")
    assert result.returncode == 0, result.stderr


def problems_found(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    result = syncd(config_file(tmp_path, port=(port := closed_port())), "doctor")
    assert result.returncode == 1, result.stderr
    assert f"FAIL imap login ada (127.0.0.1:{port})" in result.stdout


def usage(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    result = syncd(config_file(tmp_path, port=closed_port()), "sync", "--bogus")
    assert result.returncode == 2 and "--bogus" in result.stderr


def damaged_store(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    store = tmp_path / "var" / "syncd.sqlite3"
    store.parent.mkdir()
    store.write_bytes(b"not a database, whatever it was " * 512)
    config = config_file(tmp_path, port=closed_port())
    for command in (["contacts", "list"], ["sync"], ["run"]):
        result = syncd(config, *command)
        assert result.returncode == 65, (command, result.stderr)
        assert result.stderr == (
            f"syncd: the store {store} is damaged (file is not a database); restore it from a "
            "backup (`syncd check-store` runs the full check)\n"
        )


def unreachable(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    result = syncd(config_file(tmp_path, port=(port := closed_port())), "sync")
    assert result.returncode == 69, result.stderr
    assert f"cannot connect to 127.0.0.1:{port}" in result.stderr


def temporary(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    config = config_file(tmp_path, port=closed_port())
    lock = tmp_path / "var" / "syncd.sqlite3.lock"
    lock.parent.mkdir()
    with open(lock, "ab") as held:  # another `syncd run` holds the store
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = syncd(config, "run")
    assert result.returncode == 75, result.stderr
    assert "another `syncd run` is using the store" in result.stderr


def not_permitted(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    user = request.getfixturevalue("imap_user")
    config = config_file(tmp_path, port=user.server.port, user=user.name, password="wrong-pw")
    result = syncd(config, "sync")
    assert result.returncode == 77, result.stderr
    assert f"authentication failed for {user.name}" in result.stderr
    assert "wrong-pw" not in result.stderr

    var = tmp_path / "ro"
    config = config_file(tmp_path, port=closed_port(), store=var / "syncd.sqlite3")
    with immutable(var):
        result = syncd(config, "sync")
        assert result.returncode == 77, result.stderr
        assert result.stderr.endswith(
            f"syncd: cannot open the store {var}/syncd.sqlite3: the directory {var} is not"
            f" writable by user {ME}\n"
        )
        result = syncd(config, "run")
        assert result.returncode == 77, result.stderr
        assert result.stderr == (
            f"syncd: cannot start: {var}/syncd.sqlite3.lock: Operation not permitted\n"
        )


def bad_config(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    config = tmp_path / "syncd.yaml"
    config.write_text("inboxes: 5\n")
    result = syncd(config, "check-config")
    assert result.returncode == 78 and "inboxes" in result.stderr


def output_closed_early(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """`syncd contacts list | head -1`: before, `syncd: cannot access: Broken pipe`, 75."""
    config = config_file(tmp_path, port=closed_port())
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(
        "email,first_name\n" + "".join(f"p{n}@client.example,P{n}\n" for n in range(3000))
    )
    assert syncd(config, "contacts", "import", str(contacts)).returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "--config", str(config), "contacts", "list"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"email")
    proc.stdout.close()  # the reader goes, as `head` does
    stderr = proc.stderr.read()
    assert proc.wait(timeout=60) == 141
    assert stderr == b""  # no "Broken pipe", no "Exception ignored"


CASES: dict[int, Callable[[Path, pytest.FixtureRequest], None]] = {
    0: done_ok,
    1: problems_found,
    2: usage,
    65: damaged_store,
    69: unreachable,
    75: temporary,
    77: not_permitted,
    78: bad_config,
    141: output_closed_early,
}


def test_every_code_in_the_readme_is_walked_here() -> None:
    assert readme_codes() == sorted(CASES)


@pytest.mark.parametrize("code", readme_codes())
def test_exit_code(code: int, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    CASES[code](tmp_path, request)


def test_doctor_says_which_store_directory_it_cannot_write(tmp_path: Path) -> None:
    """Before: `ok store ...: not created yet` for a directory the first run cannot use."""
    var = tmp_path / "ro"
    config = config_file(tmp_path, port=closed_port(), store=var / "sub" / "syncd.sqlite3")
    with immutable(var):
        result = syncd(config, "doctor")
    assert result.returncode == 1
    assert (
        f"FAIL store {var}/sub/syncd.sqlite3: cannot be written: the directory {var} is not"
        f" writable by user {ME}"
    ) in result.stdout.splitlines()


@contextmanager
def silent_server() -> Iterator[int]:
    """A server that accepts connections and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


@pytest.mark.parametrize("command", ["sync", "doctor"])
def test_a_silent_server_gets_a_waiting_line_within_seconds(tmp_path: Path, command: str) -> None:
    """Before: nothing at all until the connect timeout (20 s here) ran out."""
    with silent_server() as port:
        config = config_file(tmp_path, port=port)
        config.write_text(config.read_text().replace('"10s"', '"30s"'))
        proc = subprocess.Popen(
            [sys.executable, "-m", "syncd", "--config", str(config), command],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        )  # fmt: skip
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True).start()
        deadline = time.monotonic() + 15
        seen = []
        try:
            while time.monotonic() < deadline:
                with suppress(queue.Empty):
                    seen.append(lines.get(timeout=max(0.01, deadline - time.monotonic())))
                    if "waiting for" in seen[-1]:
                        break
        finally:
            proc.kill()
            proc.wait()
    assert seen and seen[-1].endswith(
        f"INFO syncd.imap: waiting for 127.0.0.1:{port} (connecting, 20 s timeout)...\n"
    ), seen
