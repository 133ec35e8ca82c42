"""sd_notify over a real AF_UNIX datagram socket standing in for systemd's."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.services.sdnotify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket where PID 1's notify socket would be."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    yield sock, str(path)
    sock.close()


def _recv(sock: socket.socket) -> str:
    return sock.recv(4096).decode("utf-8")


def test_ready_status_watchdog_reach_the_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready()
    assert notifier.status("syncing 3 inboxes")
    assert notifier.watchdog()
    assert notifier.stopping()
    assert [_recv(sock) for _ in range(4)] == [
        "READY=1",
        "STATUS=syncing 3 inboxes",
        "WATCHDOG=1",
        "STOPPING=1",
    ]
    notifier.close()


def test_reloading_carries_monotonic_usec(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier.from_env({"NOTIFY_SOCKET": path}).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    fields = dict(line.split("=", 1) for line in _recv(sock).split("\n"))
    assert fields["RELOADING"] == "1"
    assert before <= int(fields["MONOTONIC_USEC"]) <= after


def test_status_stays_one_field(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    Notifier.from_env({"NOTIFY_SOCKET": path}).status("inbox ada failed:\nlogin refused\r\n")
    assert _recv(sock) == "STATUS=inbox ada failed: login refused"


def test_abstract_namespace_socket() -> None:
    name = f"syncd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready()
        assert _recv(sock) == "READY=1"


@pytest.mark.parametrize("value", [None, "", "relative/notify", "vsock:2:1234"])
def test_no_usable_socket_is_a_no_op(value: str | None) -> None:
    env = {} if value is None else {"NOTIFY_SOCKET": value}
    notifier = Notifier.from_env(env)
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.status("x")
    assert not notifier.watchdog()
    assert not notifier.reloading()
    assert not notifier.stopping()


def test_send_failure_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="syncd.services.sdnotify")
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()
    assert all(r.levelno == logging.DEBUG for r in caplog.records)
    assert caplog.records


def test_recovers_when_the_socket_appears(tmp_path: Path) -> None:
    path = tmp_path / "later"
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(path)})
    assert not notifier.ready()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2.0)
        assert notifier.ready()
        assert _recv(sock) == "READY=1"
    notifier.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4242"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4243"}, None),
        ({"WATCHDOG_USEC": "1000"}, 0.0005),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "sixty"}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "nope"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert Notifier.from_env(env, pid=4242).watchdog_interval() == expected


def test_watchdog_pid_defaults_to_our_pid() -> None:
    env = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_env(env).watchdog_interval() == 1.0
