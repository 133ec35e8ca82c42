"""The submission relay's worker process against real parts: the real child
(``syncd relay-worker``) spawned by ``RelayWorker``, the real listener driven by smtplib,
an aiosmtpd sink as the smarthost that can hold a message, a real store; signals sent to
the real processes, and the real ``syncd run`` killed while its worker holds a message."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import smtplib
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from syncd.config.model import Config
from syncd.crm.team import Team
from syncd.outbound.tokens import load_keys, new_key_line
from syncd.services.relayer import TrackingSetup
from syncd.services.relayworker import RelayWorker, Setup
from syncd.sources.bcc import PasswordFiles
from syncd.sources.smtpserver import ServerOptions, ThreadedEndpoint
from syncd.sources.submission import SubmissionHandler, threaded
from syncd.store import db
from tests.integration.conftest import Notify, as_json, free_port, syncd, syncd_run, wait_for
from tests.integration.test_bcc import Sink
from tests.integration.test_orphans import alive, descendants
from tests.integration.test_submission import (
    ADA_PW,
    PUBLIC,
    daemon_config,
    html_mail,
    timeline,
)

TEMPFAIL = 451


class HoldingSink(Sink):
    """A smarthost that holds each message ``hold`` seconds before its 250, and says when
    it has one in hand."""

    def __init__(self, hold: float) -> None:
        super().__init__([])
        self.hold = hold
        self.holding = threading.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.holding.set()
        await asyncio.sleep(self.hold)
        return await super().handle_DATA(server, session, envelope)


@dataclass
class Relay:
    path: Path
    sink: Sink
    worker: RelayWorker
    endpoint: ThreadedEndpoint
    setup: Setup

    def send(self, mid: str = "offer-1", raw: bytes | None = None) -> tuple[int, bytes]:
        """One message through the listener: the reply the client got."""
        client = smtplib.SMTP("127.0.0.1", self.endpoint.port, timeout=20)
        try:
            client.login("ada@example.com", ADA_PW)
            client.mail("ada@example.com")
            client.rcpt("client@customer.example")
            return client.data(raw if raw is not None else html_mail(mid=mid))
        finally:
            client.close()

    def send_later(self, mid: str = "offer-1") -> Callable[[], tuple[int, bytes]]:
        """``send`` in a thread; the returned call waits for its reply."""
        reply: list[tuple[int, bytes]] = []
        thread = threading.Thread(target=lambda: reply.append(self.send(mid)))
        thread.start()

        def wait() -> tuple[int, bytes]:
            thread.join(30)
            return reply[0]

        return wait

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.path) as conn:
            return [tuple(r) for r in conn.execute(sql).fetchall()]

    @property
    def pid(self) -> int:
        assert self.worker.pid is not None
        return self.worker.pid


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Callable[..., Relay]]:
    made: list[Relay] = []

    def build(hold: float = 0.0) -> Relay:
        path = tmp_path / "store.sqlite3"
        db.connect(path).close()
        (tmp_path / "ada.pw").write_text(ADA_PW)
        sink = HoldingSink(hold) if hold else Sink([])
        config = Config.from_mapping(
            {
                "store": {"path": str(path)},
                "team": [{"name": "Ada", "email": "ada@example.com"}],
                "relay": {"host": "127.0.0.1", "port": sink.port, "security": "none"},
            }
        )
        setup = Setup(config, TrackingSetup(load_keys(new_key_line("k1")), PUBLIC, "bottom"))
        worker = RelayWorker(setup)
        team = Team.build([("ada@example.com", [])])
        handler = SubmissionHandler(
            team=team,
            forward=worker.forward,
            credentials=PasswordFiles({"ada@example.com": tmp_path / "ada.pw"}, team),
        )
        endpoint = threaded(handler, ServerOptions(port=0, hostname="relay.test")).start()
        assert endpoint.call(worker.start())
        made.append(Relay(path, sink, worker, endpoint, setup))
        return made[-1]

    yield build
    for r in made:
        r.endpoint.call(r.worker.stop(time.monotonic() + 5))
        r.endpoint.stop()
        r.sink.close()


def test_a_message_is_rewritten_relayed_and_recorded_by_the_worker_process(
    relay: Callable[..., Relay],
) -> None:
    r = relay()
    assert r.pid != os.getpid() and alive(r.pid)
    assert r.send() == (250, b"OK")
    [(_, _, relayed)] = r.sink.received
    assert f"{PUBLIC}/o/".encode() in relayed
    assert r.rows("SELECT source FROM spool") == [("relay",)]
    assert len(r.rows("SELECT id FROM tracked_messages")) == 1
    assert r.rows("SELECT value FROM bcc_counters WHERE name = 'submission.relayed'") == [(1,)]


def test_a_large_message_crosses_to_the_worker_and_back_byte_for_byte(
    relay: Callable[..., Relay],
) -> None:
    r = relay()
    attachment = base64.encodebytes(os.urandom(3 * 1024 * 1024)).replace(b"\n", b"\r\n")
    raw = html_mail().replace(b"--BB--", b"--BB\r\nContent-Type: application/octet-stream\r\n"
                              b"Content-Transfer-Encoding: base64\r\n\r\n" + attachment
                              + b"--BB--")  # fmt: skip
    assert r.send(raw=raw) == (250, b"OK")
    [(_, _, relayed)] = r.sink.received
    assert attachment in relayed and f"{PUBLIC}/o/".encode() in relayed
    assert r.rows("SELECT raw FROM spool") == [(raw,)]  # the original, as it came


def test_sigterm_and_sigint_leave_the_worker_serving(relay: Callable[..., Relay]) -> None:
    # systemd's stop and a terminal's Ctrl-C reach the whole process group; the daemon
    # decides when its worker stops.
    r = relay()
    pid = r.pid
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGINT)
    time.sleep(0.3)
    assert alive(pid)
    assert r.send() == (250, b"OK")
    assert r.pid == pid


def test_a_worker_killed_holding_a_message_answers_451_and_the_resend_is_logged_once(
    relay: Callable[..., Relay],
) -> None:
    r = relay(hold=1.0)
    old = r.pid
    reply = r.send_later()
    assert r.sink.holding.wait(10)
    os.kill(old, signal.SIGKILL)
    code, text = reply()
    assert code == TEMPFAIL, text
    # The smarthost got it; syncd did not record it, and the client knows to resend.
    assert r.rows("SELECT count(*) FROM spool") == [(0,)]
    # A new worker comes after a pause; meanwhile mail is answered 451, not lost.
    deadline = time.monotonic() + 15
    while (answer := r.send())[0] == TEMPFAIL and time.monotonic() < deadline:
        assert b"relay worker is restarting" in answer[1]
        time.sleep(0.2)
    assert answer == (250, b"OK")
    assert r.pid != old and not alive(old)
    assert r.rows("SELECT source FROM spool") == [("relay",)]
    assert len(r.rows("SELECT id FROM tracked_messages")) == 1
    assert r.worker.deaths == 1


def test_a_reload_sends_new_mail_to_a_new_worker_while_the_old_one_finishes(
    relay: Callable[..., Relay],
) -> None:
    r = relay(hold=1.0)
    old = r.pid
    first = r.send_later("offer-1")
    assert r.sink.holding.wait(10)
    r.endpoint.call(_reconfigure(r.worker, r.setup))
    r.sink.hold = 0.0
    assert r.send("offer-2") == (250, b"OK")
    assert r.pid != old
    assert first() == (250, b"OK")  # answered by the old worker, which then exits
    wait_for(lambda: not alive(old), 10, "the old worker to exit")
    assert len(r.rows("SELECT id FROM spool")) == 2
    assert r.worker.deaths == 0


async def _reconfigure(worker: RelayWorker, setup: Setup) -> None:
    worker.reconfigure(setup)


def test_stop_waits_for_the_message_in_hand_and_kills_a_worker_past_the_deadline(
    relay: Callable[..., Relay],
) -> None:
    r = relay(hold=0.5)
    pid = r.pid
    reply = r.send_later()
    assert r.sink.holding.wait(10)
    r.endpoint.call(r.worker.stop(time.monotonic() + 10))
    assert reply() == (250, b"OK") and not alive(pid)
    assert r.rows("SELECT count(*) FROM spool") == [(1,)]

    r = relay(hold=5.0)
    pid = r.pid
    reply = r.send_later("offer-2")
    assert r.sink.holding.wait(10)
    started = time.monotonic()
    r.endpoint.call(r.worker.stop(time.monotonic() + 0.3))
    assert time.monotonic() - started < 3 and not alive(pid)
    assert reply()[0] == TEMPFAIL


def test_the_daemon_killed_while_its_worker_holds_a_message(tmp_path: Path, notify: Notify) -> None:
    """kill -9 of ``syncd run`` mid-relay: the worker still records what the smarthost
    took, exits (no orphan), and the next start logs it once; the client's resend is a
    duplicate of it."""
    sink = HoldingSink(1.0)
    port = free_port()
    config = tmp_path / "syncd.yaml"
    config.write_text(daemon_config(tmp_path, port, sink.port))
    store = tmp_path / "var" / "syncd.sqlite3"
    try:
        with syncd_run(config, notify) as first:
            [worker] = wait_for(lambda: descendants(first.proc.pid), 10, "the relay worker")
            client = smtplib.SMTP("127.0.0.1", port, timeout=20)
            client.login("ada@example.com", ADA_PW)
            client.mail("ada@example.com")
            client.rcpt("client@customer.example")
            waiting = threading.Thread(target=lambda: _ignore(client.data, html_mail()))
            waiting.start()
            assert sink.holding.wait(10)
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(timeout=10)
            wait_for(lambda: not alive(worker), 10, "the worker to exit")
            waiting.join(10)
        with sqlite3.connect(store) as conn:
            assert conn.execute("SELECT source FROM spool").fetchall() == [("relay",)]
        sink.hold = 0.0
        with syncd_run(config, notify) as second:
            resend = smtplib.SMTP("127.0.0.1", port, timeout=20)
            resend.login("ada@example.com", ADA_PW)
            assert (
                resend.sendmail("ada@example.com", ["client@customer.example"], html_mail()) == {}
            )
            resend.quit()
            wait_for(lambda: not _spooled(store), 15, "the spool to drain")
            entries = timeline(tmp_path, "client@customer.example")
            assert [e["message_id"] for e in entries] == ["offer-1@example.com"]
            assert len(sink.received) == 2
            assert second.stop() == 0
    finally:
        sink.close()
    assert ADA_PW not in second.stderr


def _spooled(store: Path) -> int:
    with sqlite3.connect(store) as conn:
        return int(conn.execute("SELECT count(*) FROM spool").fetchone()[0])


def _ignore(call: Callable[..., Any], *args: Any) -> None:
    with contextlib.suppress(smtplib.SMTPException, OSError):
        call(*args)


def test_status_and_metrics_show_the_worker_and_its_restarts(
    tmp_path: Path, notify: Notify
) -> None:
    sink = Sink([])
    port, metrics_port = free_port(), free_port()
    settings = json.loads(daemon_config(tmp_path, port, sink.port))
    settings["metrics"] = {"listen": f"127.0.0.1:{metrics_port}"}
    config = tmp_path / "syncd.yaml"
    config.write_text(json.dumps(settings))
    try:
        with syncd_run(config, notify) as daemon:
            [worker] = wait_for(lambda: descendants(daemon.proc.pid), 10, "the relay worker")
            sub = as_json(config, "status")["submission"]
            assert (sub["worker_pid"], sub["worker_restarts"]) == (worker, 0)
            shown = syncd(config, "status").stdout
            assert f"submission: 0 submitted, 0 relayed, 0 refused, 0 temporary failures; " \
                   f"relay worker pid {worker}\n" in shown  # fmt: skip
            os.kill(worker, signal.SIGKILL)
            # The daemon replaces it on its own, after a pause, and says so.
            sub = wait_for(
                lambda: (
                    (s := as_json(config, "status")["submission"])["worker_pid"]
                    not in (None, worker)
                    and s
                ),
                what="a new relay worker in status",
            )
            assert sub["worker_restarts"] == 1
            assert "restarted 1 time(s)" in syncd(config, "status").stdout
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as page:
                assert "syncd_submission_worker_restarts_total 1.0" in page.read().decode()
            client = smtplib.SMTP("127.0.0.1", port, timeout=20)
            client.login("ada@example.com", ADA_PW)
            assert (
                client.sendmail("ada@example.com", ["client@customer.example"], html_mail()) == {}
            )
            client.quit()
            assert daemon.stop() == 0
            wait_for(lambda: not alive(sub["worker_pid"]), 10, "the worker to exit")
        assert f"the relay worker (pid {worker}) stopped with signal 9" in daemon.stderr
    finally:
        sink.close()
