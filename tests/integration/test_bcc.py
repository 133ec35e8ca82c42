"""The BCC endpoint over real sockets on 127.0.0.1, with a real spool in a tmp SQLite file.

What a sending client sees (SMTP replies) and what the store holds (spool rows) are
asserted; SPF talks to a tiny DNS server on loopback, DKIM keys come from an injected
dnsfunc, the relay delivers to a local aiosmtpd sink.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
import os
import select
import shutil
import signal
import smtplib
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dkim
import dns.message
import dns.rcode
import dns.resolver
import dns.rrset
import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from syncd.crm.team import InboxRule, Team
from syncd.mail.parse import MAX_HEADER_BYTES, parse
from syncd.outbound.relay import OutboxRunner, Relay, RelaySettings
from syncd.services import metrics
from syncd.sources.bcc import BccHandler, Limits, PasswordFiles
from syncd.sources.senders import Dkim, SenderPolicy
from syncd.sources.smtpserver import ServerOptions, ThreadedEndpoint, tls_context
from syncd.store import db
from syncd.store.spool import Outbox, SpoolWriter, status
from tests.integration.conftest import queue_copy

ROOT = Path(__file__).resolve().parents[2]
LOG = "log@crm.example.com"
DIRECTORY = Team.build(
    [
        ("ada@example.com", ["a.lovelace@example.com"]),
        ("bob@example.org", []),
        ("carol@broken.example", []),
    ],
    [InboxRule("support", "support@example.com", "team")],
)


def message(sender: str = "ada@example.com", mid: str | None = None, body: str = "hi") -> bytes:
    mid = mid or f"<{uuid.uuid4().hex}@example.com>"
    return (
        f"From: Sender <{sender}>\r\nTo: Client <client@customer.example>\r\n"
        f"Subject: Proposal\r\nMessage-ID: {mid}\r\nDate: Mon, 3 Nov 2025 10:00:00 +0000\r\n"
        f"\r\n{body}\r\n"
    ).encode()


@dataclass
class Endpoint:
    port: int
    path: Path
    handler: BccHandler
    threaded: ThreadedEndpoint

    def wait_in_flight(self, at_least: int) -> None:
        deadline = time.monotonic() + 10
        while self.threaded.bytes_in_flight < at_least and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.threaded.bytes_in_flight >= at_least

    def client(self, **kwargs: Any) -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.test", timeout=10)
        client.ehlo()
        return client

    def rows(self) -> list[sqlite3.Row]:
        conn = db.connect(self.path)
        try:
            return conn.execute("SELECT * FROM spool ORDER BY id").fetchall()
        finally:
            conn.close()


@pytest.fixture
def make_endpoint(tmp_path: Path) -> Iterator[Callable[..., Endpoint]]:
    started: list[tuple[ThreadedEndpoint, Any]] = []

    def make(
        *,
        policy: SenderPolicy | None = None,
        spool: Callable[..., Any] | None = None,
        limits: Limits | None = None,
        credentials: Callable[[str, bytes], str | None] | None = None,
        writer_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> Endpoint:
        path = tmp_path / f"store{len(started)}.sqlite3"
        writer = SpoolWriter(path, **(writer_options or {}))
        handler = BccHandler(
            addresses=[LOG],
            policy=policy or SenderPolicy("none", DIRECTORY),
            spool=spool or writer,
            credentials=credentials,
            limits=limits,
            on_event=writer.count,
        )
        options.setdefault("hostname", "mx.test")
        endpoint = ThreadedEndpoint(handler, ServerOptions(port=0, **options)).start()
        started.append((endpoint, writer))
        return Endpoint(endpoint.port, path, handler, endpoint)

    yield make
    for endpoint, writer in started:
        endpoint.stop()
        writer.close()


def send(endpoint: Endpoint, raw: bytes, mail_from: str = "ada@example.com") -> tuple[int, bytes]:
    client = endpoint.client()
    try:
        code, text = client.mail(mail_from)
        assert code == 250, text
        code, text = client.rcpt(LOG)
        assert code == 250, text
        return client.data(raw)
    finally:
        client.close()


# Envelope and sender rules ------------------------------------------------------------


def test_member_mail_is_spooled_before_250(make_endpoint: Callable[..., Endpoint]) -> None:
    endpoint = make_endpoint()
    raw = message()
    code, text = send(endpoint, raw)
    assert (code, text) == (250, b"2.6.0 Message accepted for logging")
    [row] = endpoint.rows()
    assert bytes(row["raw"]) == raw
    assert (row["mail_from"], row["peer"], row["owner"]) == (
        "ada@example.com",
        "127.0.0.1",
        "ada@example.com",
    )


def test_banner_and_ehlo(make_endpoint: Callable[..., Endpoint]) -> None:
    endpoint = make_endpoint()
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=5) as sock:
        banner = sock.makefile("rb").readline()
    assert banner == b"220 mx.test ESMTP\r\n"
    client = endpoint.client()
    assert client.has_extn("size") and client.esmtp_features["size"] == str(60 * 1024 * 1024)
    assert client.has_extn("8bitmime") and client.has_extn("smtputf8")
    assert not client.has_extn("starttls") and not client.has_extn("auth")
    assert client.docmd("AUTH", "PLAIN AGFkYQBwdw==")[0] == 502
    client.quit()


@pytest.mark.parametrize(
    "path",
    [
        "<bob@other.example>",
        "<log%other.example@crm.example.com>",
        "<@relay.example:log@crm.example.com>",
        "<@a.example,@b.example:log@crm.example.com>",
        '<"log"@crm.example.com>',
        '<"log@crm.example.com"@evil.example>',
        "<log(x)@crm.example.com>",
        "<log@[127.0.0.1]>",
        "<log@crm.example.com.evil.example>",
        "<log!evil.example@crm.example.com>",
        "<logs@crm.example.com>",
    ],
)
def test_relay_attempts_are_refused(make_endpoint: Callable[..., Endpoint], path: str) -> None:
    endpoint = make_endpoint()
    client = endpoint.client()
    client.mail("ada@example.com")
    code, text = client.docmd("RCPT", f"TO:{path}")
    assert code == 550 and text.startswith(b"5.7.1 Relaying denied")
    assert client.docmd("DATA")[0] == 503
    client.quit()
    assert endpoint.rows() == []


@pytest.mark.parametrize("path", ["<LOG@CRM.EXAMPLE.COM>", "<Log@crm.Example.com>", LOG])
def test_case_variants_of_the_logging_address(
    make_endpoint: Callable[..., Endpoint], path: str
) -> None:
    endpoint = make_endpoint()
    client = endpoint.client()
    client.mail("ada@example.com")
    assert client.docmd("RCPT", f"TO:{path}")[0] == 250
    assert client.data(message())[0] == 250
    client.quit()
    assert len(endpoint.rows()) == 1


def test_at_most_100_recipients(make_endpoint: Callable[..., Endpoint]) -> None:
    endpoint = make_endpoint()
    client = endpoint.client()
    client.mail("ada@example.com")
    codes = [client.rcpt(LOG)[0] for _ in range(100)]
    code, text = client.rcpt(LOG)
    assert codes == [250] * 100 and code == 452 and b"4.5.3" in text
    assert client.data(message())[0] == 250
    client.quit()
    assert len(endpoint.rows()) == 1


@pytest.mark.parametrize(
    ("sender", "accepted"),
    [("ada@example.com", True), ("a.lovelace@example.com", True), ("support@example.com", True)],
)
def test_members_aliases_and_inboxes_accepted(
    make_endpoint: Callable[..., Endpoint], sender: str, accepted: bool
) -> None:
    endpoint = make_endpoint()
    assert send(endpoint, message(sender))[0] == 250
    owner = endpoint.rows()[0]["owner"]
    assert owner == (None if sender.startswith("support") else "ada@example.com")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (message("eve@evil.example"), b"eve@evil.example is not a team member"),
        (message("ada@example.com.evil.example"), b"is not a team member"),
        (b"Subject: no sender\r\n\r\nbody\r\n", b"Not logged: no From header"),
        (b"From: ada@example.com, eve@evil.example\r\n\r\nx\r\n", b"several senders"),
    ],
)
def test_non_members_and_spoofs_get_550(
    make_endpoint: Callable[..., Endpoint], raw: bytes, reason: bytes
) -> None:
    endpoint = make_endpoint()
    code, text = send(endpoint, raw, mail_from="ada@example.com")
    assert code == 550 and text.startswith(b"5.7.1 ") and reason in text
    assert endpoint.rows() == []


def test_malformed_mail_is_still_spooled(make_endpoint: Callable[..., Endpoint]) -> None:
    endpoint = make_endpoint()
    oddities = [
        b"From: ada@example.com\r\nContent-Type: multipart/mixed\r\n\r\nno boundary\r\n",
        b"From: ada@example.com\r\nContent-Type: text/plain; charset=x-klingon\r\n\r\n\xff\xfe\r\n",
        b"From: ada@example.com\r\nSubject: =?utf-8?b?!!!?=\r\nDate: yesterday\r\n\r\n\x00\x01\r\n",
        b"From: ada@example.com\r\nContent-Transfer-Encoding: base64\r\n\r\n@@@not base64\r\n",
        b"From: ada@example.com\r\n" + b"X-Long: " + b"a" * 3000 + b"\r\n\r\nbody\r\n",
    ]
    for raw in oddities:
        assert send(endpoint, raw)[0] == 250
    assert [bytes(r["raw"]) for r in endpoint.rows()] == oddities


# Size, headers, time and connection limits ----------------------------------------------


def test_oversized_message_gets_552(make_endpoint: Callable[..., Endpoint]) -> None:
    endpoint = make_endpoint(max_message_mb=1)
    client = endpoint.client()
    code, _ = client.mail("ada@example.com", ["SIZE=2000000"])
    assert code == 552
    client.rset()
    client.mail("ada@example.com")
    client.rcpt(LOG)
    big = message(body=("x" * 998 + "\r\n") * 1100)
    assert client.data(big)[0] == 552
    client.quit()
    assert endpoint.rows() == []


def test_header_block_over_the_parsers_limit_gets_552(
    make_endpoint: Callable[..., Endpoint],
) -> None:
    endpoint = make_endpoint()
    head = b"From: ada@example.com\r\nTo: client@customer.example\r\n"
    pad = b"".join(b"X-Pad%03d: %s\r\n" % (i, b"b" * 990) for i in range(100))
    fits = head + pad + b"X-End: " + b"c" * (MAX_HEADER_BYTES - len(head + pad) - 7)
    assert len(fits) == MAX_HEADER_BYTES  # the block up to its last line end: the limit
    assert send(endpoint, fits + b"\r\n\r\nbody\r\n")[0] == 250
    code, text = send(endpoint, fits + b"c\r\n\r\nbody\r\n")
    assert code == 552 and text.startswith(b"5.3.4 The header block over 100 KiB")
    assert len(endpoint.rows()) == 1
    # what was accepted parses: it will be logged, not quarantined
    parse(bytes(endpoint.rows()[0]["raw"]), received_at=datetime.now(UTC))


def test_slow_client_does_not_block_others(make_endpoint: Callable[..., Endpoint]) -> None:
    endpoint = make_endpoint(limits=Limits(idle_timeout=2.0))
    slow = socket.create_connection(("127.0.0.1", endpoint.port), timeout=5)
    reader = slow.makefile("rb")
    reader.readline()
    for line in (b"EHLO slow.test", b"MAIL FROM:<ada@example.com>", f"RCPT TO:<{LOG}>".encode()):
        slow.sendall(line + b"\r\n")
        while reader.readline()[3:4] == b"-":
            pass
    slow.sendall(b"DATA\r\n")
    assert reader.readline().startswith(b"354")
    slow.sendall(b"From: ada@example.com\r\nSubject: half")  # then nothing
    started = time.monotonic()
    assert send(endpoint, message())[0] == 250
    assert time.monotonic() - started < 1.0  # not held until the stalled session's 2 s
    assert reader.readline() == b""  # the idle timer closed the stalled session
    slow.close()
    assert len(endpoint.rows()) == 1


def open_data(endpoint: Endpoint) -> tuple[socket.socket, Any]:
    """A raw session up to the 354, for senders that pace their bytes."""
    sock = socket.create_connection(("127.0.0.1", endpoint.port), timeout=10)
    reader = sock.makefile("rb")
    reader.readline()
    for line in (b"EHLO raw.test", b"MAIL FROM:<ada@example.com>", f"RCPT TO:<{LOG}>".encode()):
        sock.sendall(line + b"\r\n")
        while reader.readline()[3:4] == b"-":
            pass
    sock.sendall(b"DATA\r\n")
    assert reader.readline().startswith(b"354")
    return sock, reader


def trickle(sock: socket.socket, chunk: bytes, every: float, seconds: float) -> bool:
    """Send ``chunk`` every ``every`` seconds; False as soon as the server answers or
    hangs up (a reply in the middle of DATA is always the end of it)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            sock.sendall(chunk)
        except OSError:
            return False
        if select.select([sock], [], [], every)[0]:
            return False
    return True


def test_sender_below_the_minimum_data_rate_is_cut(
    make_endpoint: Callable[..., Endpoint],
) -> None:
    # 100 B/s against a 200 B/s floor: past the 0.5 s grace the bytes fall behind.
    endpoint = make_endpoint(limits=Limits(idle_timeout=5, data_base_s=0.5, data_min_rate=200))
    sock, reader = open_data(endpoint)
    started = time.monotonic()
    cut = not trickle(sock, b"X-Slow: " + b"a" * 10 + b"\r\n", 0.2, 6)
    assert cut and time.monotonic() - started < 3
    assert reader.readline() == b"451 4.4.2 Timeout: data arrived too slowly\r\n"
    assert reader.readline() == b""
    sock.close()
    assert endpoint.rows() == []
    assert endpoint.handler.stats["refused.deadline"] == 1


def test_a_burst_does_not_buy_a_long_silence(make_endpoint: Callable[..., Endpoint]) -> None:
    # 5,000 bytes at 200 B/s would buy 25 s; bytes bank at most the 0.5 s grace ahead.
    endpoint = make_endpoint(limits=Limits(idle_timeout=5, data_base_s=0.5, data_min_rate=200))
    sock, reader = open_data(endpoint)
    sock.sendall(b"From: ada@example.com\r\n\r\n" + (b"a" * 98 + b"\r\n") * 50)
    started = time.monotonic()
    assert reader.readline() == b"451 4.4.2 Timeout: data arrived too slowly\r\n"
    assert time.monotonic() - started < 2
    sock.close()


def test_sender_above_the_minimum_rate_may_take_longer_than_the_grace(
    make_endpoint: Callable[..., Endpoint],
) -> None:
    # 1,000 B/s against a 200 B/s floor for four times the grace: the deadline follows
    # the bytes received.
    endpoint = make_endpoint(limits=Limits(idle_timeout=5, data_base_s=0.5, data_min_rate=200))
    sock, reader = open_data(endpoint)
    sock.sendall(b"From: ada@example.com\r\n\r\n")
    assert trickle(sock, b"a" * 98 + b"\r\n", 0.1, 2)
    sock.sendall(b".\r\n")
    assert reader.readline().startswith(b"250 ")
    sock.close()
    assert len(endpoint.rows()) == 1


NO_ROOM_LINE = b"452 4.3.1 Insufficient system storage, try later\r\n"


def test_bytes_in_flight_over_the_budget_get_452(
    make_endpoint: Callable[..., Endpoint],
) -> None:
    endpoint = make_endpoint(limits=Limits(data_budget=300_000))
    line = b"a" * 998 + b"\r\n"
    first, first_reader = open_data(endpoint)
    first.sendall(b"From: ada@example.com\r\n\r\n" + line * 200)
    endpoint.wait_in_flight(200_000)
    second, second_reader = open_data(endpoint)
    with contextlib.suppress(OSError):  # the server may hang up before all is sent
        second.sendall(line * 200)
    # The reply comes before the end of the data: a reset may overtake it.
    with contextlib.suppress(ConnectionResetError):
        assert second_reader.readline() in (NO_ROOM_LINE, b"")
        assert second_reader.readline() == b""
    second.close()
    first.sendall(b".\r\n")
    assert first_reader.readline().startswith(b"250 ")
    first.close()
    # Released: a message larger than the budget passes alone.
    assert send(endpoint, message(body=(("b" * 998 + "\r\n") * 400)))[0] == 250
    assert len(endpoint.rows()) == 2
    assert endpoint.handler.stats["refused.memory"] == 1


def test_a_cut_session_frees_its_bytes_without_the_gc(
    make_endpoint: Callable[..., Endpoint],
) -> None:
    # The budget is released when a session is cut; the bytes must go at the same time.
    endpoint = make_endpoint(limits=Limits(data_budget=300_000))
    lines = (b"a" * 998 + b"\r\n") * 200
    holder, _ = open_data(endpoint)
    holder.sendall(b"From: ada@example.com\r\n\r\n" + lines)
    endpoint.wait_in_flight(200_000)
    second, second_reader = open_data(endpoint)
    gc.disable()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with contextlib.suppress(OSError):
            second.sendall(lines)
        with contextlib.suppress(ConnectionResetError):
            second_reader.read()
        time.sleep(0.2)
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        gc.enable()
    assert endpoint.handler.stats["refused.memory"] == 1
    assert kept < 30_000  # what was cut (about 100 KB) is not kept
    second.close()
    holder.close()


def test_declared_size_over_the_budget_gets_452_before_data(
    make_endpoint: Callable[..., Endpoint],
) -> None:
    endpoint = make_endpoint(limits=Limits(data_budget=300_000))
    holder, _ = open_data(endpoint)
    holder.sendall(b"From: ada@example.com\r\n\r\n" + (b"a" * 998 + b"\r\n") * 200)
    endpoint.wait_in_flight(200_000)
    client = endpoint.client()
    assert client.mail("ada@example.com", ["SIZE=200000"])[0] == 250
    assert client.rcpt(LOG)[0] == 250
    code, text = client.docmd("DATA")
    assert (code, text) == (452, b"4.3.1 Insufficient system storage, try later")
    assert client.noop()[0] == 250  # the session stays: the sender may try again
    client.quit()
    holder.close()


def test_connection_caps_answer_421(make_endpoint: Callable[..., Endpoint]) -> None:
    endpoint = make_endpoint(limits=Limits(max_per_ip=2))
    first, second = endpoint.client(), endpoint.client()
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        endpoint.client()
    assert refused.value.smtp_code == 421
    first.quit()
    time.sleep(0.1)
    third = endpoint.client()
    assert third.noop()[0] == 250
    second.quit()
    third.quit()


def test_command_call_limit(make_endpoint: Callable[..., Endpoint]) -> None:
    endpoint = make_endpoint()
    client = endpoint.client()
    replies = [client.docmd("VRFY", "x")[0] for _ in range(21)]
    assert replies[-1] == 421


# Durability and storage failure ---------------------------------------------------------


def test_storage_failure_is_451_without_internals(make_endpoint: Callable[..., Endpoint]) -> None:
    def broken(*_args: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error in /var/lib/secret/store.sqlite3")

    endpoint = make_endpoint(spool=broken)
    code, text = send(endpoint, message())
    assert code == 451 and text.startswith(b"4.3.0")
    for leak in (b"sqlite", b"Operational", b"secret", b"Error:", b"/var"):
        assert leak not in text


def test_locked_store_is_451_then_recovers(make_endpoint: Callable[..., Endpoint]) -> None:
    endpoint = make_endpoint(writer_options={"busy_timeout": 0.2})
    blocker = db.connect(endpoint.path)
    blocker.execute("BEGIN IMMEDIATE")
    code, text = send(endpoint, message())
    assert code == 451 and text.startswith(b"4.3.0")
    blocker.execute("ROLLBACK")
    blocker.close()
    assert send(endpoint, message())[0] == 250
    assert len(endpoint.rows()) == 1


KILL_SCRIPT = """
import sys, threading
from syncd.sources.bcc import BccHandler
from syncd.sources.smtpserver import ServerOptions, ThreadedEndpoint
from syncd.crm.team import Team
from syncd.sources.senders import SenderPolicy
from syncd.store.spool import SpoolWriter
writer = SpoolWriter(sys.argv[1])
policy = SenderPolicy("none", Team.build([("ada@example.com", [])]))
handler = BccHandler(addresses=["log@crm.example.com"], policy=policy, spool=writer)
endpoint = ThreadedEndpoint(handler, ServerOptions(port=0, hostname="mx.test")).start()
print(endpoint.port, flush=True)
threading.Event().wait()
"""


def test_sigkill_after_250s_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    process = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(path)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        acked: list[str] = []
        lock = threading.Lock()

        def sender() -> None:
            try:
                client = smtplib.SMTP("127.0.0.1", port, local_hostname="c.test", timeout=5)
                client.ehlo()
                while True:
                    mid = f"<{uuid.uuid4().hex}@example.com>"
                    client.mail("ada@example.com")
                    client.rcpt(LOG)
                    if client.data(message(mid=mid))[0] == 250:
                        with lock:
                            acked.append(mid)
            except (OSError, smtplib.SMTPException):
                return

        threads = [threading.Thread(target=sender) for _ in range(4)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(acked) < 60 and time.monotonic() < deadline:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)  # while the senders are still sending
        for thread in threads:
            thread.join(timeout=5)
    finally:
        process.kill()
        process.wait()
    assert len(acked) >= 60
    conn = db.connect(path)
    spooled = b"".join(bytes(r[0]) for r in conn.execute("SELECT raw FROM spool"))
    assert [mid for mid in acked if mid.encode() not in spooled] == []


# TLS and AUTH ---------------------------------------------------------------------------


def test_starttls_and_require_tls(
    make_endpoint: Callable[..., Endpoint], certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    endpoint = make_endpoint(tls=tls_context(cert, key), require_tls=True)
    client = endpoint.client()
    assert client.has_extn("starttls")
    assert client.mail("ada@example.com")[0] == 530
    client.starttls(context=ssl.create_default_context(cafile=str(cert)))
    client.ehlo()
    assert not client.has_extn("starttls")
    client.mail("ada@example.com")
    client.rcpt(LOG)
    assert client.data(message())[0] == 250
    client.quit()
    assert len(endpoint.rows()) == 1


def test_starttls_inside_tls_gets_503(
    make_endpoint: Callable[..., Endpoint],
    certificate: tuple[Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cert, key = certificate
    endpoint = make_endpoint(tls=tls_context(cert, key))
    client = endpoint.client()
    client.starttls(context=ssl.create_default_context(cafile=str(cert)))
    client.ehlo()
    with caplog.at_level(logging.DEBUG):
        assert client.docmd("STARTTLS") == (503, b"5.5.1 TLS already active")
        assert client.noop()[0] == 250  # the session goes on, still encrypted
        client.quit()
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []


def test_auth_member_must_match_from(
    make_endpoint: Callable[..., Endpoint], tmp_path: Path
) -> None:
    secret = tmp_path / "ada.smtp"
    secret.write_text("correct horse\n")
    credentials = PasswordFiles({"ada@example.com": secret}, DIRECTORY)
    endpoint = make_endpoint(policy=SenderPolicy("auth", DIRECTORY), credentials=credentials)
    client = endpoint.client()
    assert client.has_extn("auth")  # loopback: AUTH without TLS
    assert client.mail("ada@example.com")[0] == 530
    client.rset()
    with pytest.raises(smtplib.SMTPAuthenticationError):
        client.login("ada@example.com", "wrong")
    client.login("a.lovelace@example.com", "correct horse")
    for sender, expected in (("a.lovelace@example.com", 250), ("bob@example.org", 550)):
        client.mail("ada@example.com")
        client.rcpt(LOG)
        code, text = client.data(message(sender))
        assert code == expected, text
    assert b"logged in as ada@example.com" in text
    client.quit()
    assert [r["owner"] for r in endpoint.rows()] == ["ada@example.com"]


def test_only_plain_and_login_are_advertised(
    make_endpoint: Callable[..., Endpoint], tmp_path: Path
) -> None:
    # aiosmtpd takes every auth_* attribute of the handler for a mechanism.
    credentials = PasswordFiles({}, DIRECTORY)
    endpoint = make_endpoint(policy=SenderPolicy("auth", DIRECTORY), credentials=credentials)
    client = endpoint.client()
    assert client.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]
    code, text = client.docmd("AUTH", "ALLOWED")
    assert (code, text) == (504, b"5.5.4 Unrecognized authentication type")
    client.quit()


def plain(login: str, password: str) -> str:
    return "PLAIN " + base64.b64encode(f"\0{login}\0{password}".encode()).decode()


def auth_endpoint(make: Callable[..., Endpoint], tmp_path: Path, limits: Limits) -> Endpoint:
    secret = tmp_path / "ada.smtp"
    secret.write_text("correct horse\n")
    credentials = PasswordFiles({"ada@example.com": secret}, DIRECTORY)
    policy = SenderPolicy("auth", DIRECTORY)
    return make(policy=policy, credentials=credentials, limits=limits)


def try_login(endpoint: Endpoint, password: str, source: str = "127.0.0.1") -> int:
    client = smtplib.SMTP(
        "127.0.0.1", endpoint.port, local_hostname="c.test", timeout=10, source_address=(source, 0)
    )
    try:
        client.ehlo()
        return client.docmd("AUTH", plain("ada@example.com", password))[0]
    finally:
        client.close()


def test_failed_logins_slow_then_lock_out_the_ip(
    make_endpoint: Callable[..., Endpoint], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    limits = Limits(
        auth_free_failures=1, auth_delay_step=0.1, auth_ip_lock_after=4, auth_ip_lock_s=1.5
    )
    endpoint = auth_endpoint(make_endpoint, tmp_path, limits)
    took = []
    for _ in range(4):
        started = time.monotonic()
        assert try_login(endpoint, "wrong") == 535
        took.append(time.monotonic() - started)
    assert took[0] < 0.1 and took[3] >= 0.4  # 0, 0.1, 0.2, 0.4 s of waiting
    # Locked: even the right password is not checked from this IP ...
    assert [try_login(endpoint, "correct horse") for _ in range(5)] == [454] * 5
    # ... but is from another one.
    assert try_login(endpoint, "correct horse", source="127.0.0.2") == 235
    time.sleep(1.6)
    assert try_login(endpoint, "correct horse") == 235  # the lock is temporary
    locks = [r for r in caplog.records if "failed logins" in r.getMessage()]
    assert len(locks) == 1 and "127.0.0.1" in locks[0].getMessage()  # one line per burst
    counts = endpoint.handler.login_counts()
    assert counts == {"auth_failures": 4, "auth_throttled": 5}
    text = metrics.render({"bcc": counts}).decode()
    assert "syncd_bcc_auth_failures_total 4.0" in text
    assert "syncd_bcc_auth_throttled_total 5.0" in text


def test_account_lock_is_short_and_spares_known_ips(
    make_endpoint: Callable[..., Endpoint], tmp_path: Path
) -> None:
    limits = Limits(auth_ip_lock_after=100, auth_account_lock_after=3, auth_account_lock_s=1.0)
    endpoint = auth_endpoint(make_endpoint, tmp_path, limits)
    assert try_login(endpoint, "correct horse", source="127.0.0.3") == 235  # ada's usual IP
    for source in ("127.0.0.4", "127.0.0.5", "127.0.0.6"):  # a guesser on several IPs
        assert try_login(endpoint, "wrong", source=source) == 535
    assert try_login(endpoint, "correct horse", source="127.0.0.2") == 454
    assert try_login(endpoint, "correct horse", source="127.0.0.3") == 235
    time.sleep(1.1)
    assert try_login(endpoint, "correct horse", source="127.0.0.2") == 235


def test_auth_needs_tls_off_loopback() -> None:
    handler = BccHandler(
        addresses=[LOG],
        policy=SenderPolicy("auth", DIRECTORY),
        spool=lambda *a: None,
        credentials=lambda login, pw: None,
    )
    session = Session(asyncio.new_event_loop())
    session.peer = ("192.0.2.10", 40000)
    assert not handler.may_authenticate(session)
    session.ssl = {"cipher": "TLS_AES_128_GCM_SHA256"}
    assert handler.may_authenticate(session)
    session.ssl, session.peer = None, ("::1", 40000, 0, 0)
    assert handler.may_authenticate(session)
    handler.close()


# SPF against a DNS server on loopback; DKIM with an injected dnsfunc ---------------------


class TinyDns:
    """Answers TXT/A queries from a dict on 127.0.0.1; names in ``servfail`` fail."""

    def __init__(self, records: dict[tuple[str, str], list[str]], servfail: set[str]) -> None:
        self.records, self.servfail = records, servfail
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text(omit_final_dot=True).lower()
            rdtype = dns.rdatatype.to_text(question.rdtype)
            if name in self.servfail:
                response.set_rcode(dns.rcode.SERVFAIL)
            elif (name, rdtype) in self.records:
                values = [f'"{v}"' if rdtype == "TXT" else v for v in self.records[name, rdtype]]
                response.answer.append(
                    dns.rrset.from_text_list(question.name, 60, "IN", rdtype, values)
                )
            elif not any(key[0] == name for key in self.records):
                response.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(response.to_wire(), peer)

    def close(self) -> None:
        self.sock.close()


def test_spf_with_dns_on_loopback(
    make_endpoint: Callable[..., Endpoint], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = TinyDns(
        {
            ("example.com", "TXT"): ["v=spf1 ip4:127.0.0.0/8 -all"],
            ("example.org", "TXT"): ["v=spf1 ip4:192.0.2.0/24 -all"],
        },
        servfail={"broken.example"},
    )
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port, resolver.lifetime = ["127.0.0.1"], server.port, 2.0
    monkeypatch.setattr(dns.resolver, "default_resolver", resolver)
    try:
        endpoint = make_endpoint(policy=SenderPolicy("spf", DIRECTORY))
        assert send(endpoint, message("ada@example.com"))[0] == 250
        code, text = send(endpoint, message("bob@example.org"))
        assert code == 550 and b"SPF check of example.org gave 'fail' for 127.0.0.1" in text
        code, text = send(endpoint, message("carol@broken.example"))
        assert code == 451 and text.startswith(b"4.7.0")
        assert len(endpoint.rows()) == 1
    finally:
        server.close()


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    key = tmp_path_factory.mktemp("dkim") / "key.pem"
    subprocess.run(
        ["openssl", "genrsa", "-traditional", "-out", str(key), "1024"],
        check=True,
        capture_output=True,
    )
    der = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    return key.read_bytes(), b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def test_dkim_aligned_signature(
    make_endpoint: Callable[..., Endpoint], dkim_key: tuple[bytes, bytes]
) -> None:
    private, record = dkim_key
    zone = {b"sel._domainkey.example.com.": record, b"sel._domainkey.example.org.": record}

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        return zone.get(name if name.endswith(b".") else name + b".")

    policy = SenderPolicy("dkim", DIRECTORY, dkim_check=Dkim(dnsfunc))
    endpoint = make_endpoint(policy=policy)

    def signed(sender: str, domain: bytes) -> bytes:
        raw = message(sender)
        return dkim.sign(raw, b"sel", domain, private, include_headers=[b"from", b"subject"]) + raw

    assert send(endpoint, signed("ada@example.com", b"example.com"))[0] == 250
    code, text = send(endpoint, signed("ada@example.com", b"example.org"))
    assert code == 550 and b"DKIM signature is from example.org" in text
    tampered = signed("ada@example.com", b"example.com").replace(b"hi\r\n", b"bye\r\n")
    code, text = send(endpoint, tampered)
    assert code == 550 and b"No valid DKIM signature" in text
    code, text = send(endpoint, message("ada@example.com"))
    assert code == 550
    assert len(endpoint.rows()) == 1


# The extra_bcc outbox against a local sink ------------------------------------------------


class Sink:
    """An aiosmtpd server on loopback answering DATA from a list of replies, then 250."""

    def __init__(self, replies: list[str], **smtp: Any) -> None:
        self.replies, self.received = list(replies), []
        self.mail_options: list[list[str]] = []
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        factory = lambda: SMTP(self, hostname="sink.test", loop=self.loop, **smtp)  # noqa: E731
        coroutine = self.loop.create_server(factory, "127.0.0.1", 0)
        self.server = asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(5)
        self.port = self.server.sockets[0].getsockname()[1]

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.replies:
            return self.replies.pop(0)
        self.received.append((envelope.mail_from, envelope.rcpt_tos, envelope.original_content))
        self.mail_options.append(envelope.mail_options)
        return "250 OK"

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_outbox_retries_then_delivers_unchanged(tmp_path: Path) -> None:
    sink = Sink(["451 4.3.0 not now"])
    conn = db.connect(tmp_path / "store.sqlite3")
    outbox = Outbox(conn)
    raw = message() + b"\xff 8-bit \r\n"
    queue_copy(conn, raw, "ada@example.com", ["archive@example.net"], now=1000.0)
    clock = [1000.0]
    relay = Relay(RelaySettings("127.0.0.1", sink.port, "none", local_hostname="syncd.test"))
    runner = OutboxRunner(outbox, relay, clock=lambda: clock[0])
    try:
        assert runner.run_once() == {"sent": 0, "retry": 1, "give_up": 0}
        assert status(conn, now=1000.0)["outbox"]["depth"] == 1
        assert "451 4.3.0 not now" in status(conn)["outbox"]["last_error"]
        assert runner.run_once() == {"sent": 0, "retry": 0, "give_up": 0}  # not due yet
        clock[0] += 60
        assert runner.run_once() == {"sent": 1, "retry": 0, "give_up": 0}
    finally:
        sink.close()
    assert sink.received == [("ada@example.com", ["archive@example.net"], raw)]
    figures = status(conn)["outbox"]
    assert (figures["depth"], figures["forwarded"], figures["given_up"]) == (0, 1, 0)


def test_outbox_gives_up_and_records_it(tmp_path: Path) -> None:
    sink = Sink(["550 5.1.1 no such user", "451 4.3.0 later", "451 4.3.0 later"])
    conn = db.connect(tmp_path / "store.sqlite3")
    outbox = Outbox(conn)
    queue_copy(conn, message(), "ada@example.com", ["gone@example.net"], now=1000.0)
    queue_copy(conn, message(), "ada@example.com", ["slow@example.net"], now=1000.0)
    clock = [1000.0]
    relay = Relay(RelaySettings("127.0.0.1", sink.port, "none"))
    runner = OutboxRunner(outbox, relay, give_up_after=100.0, clock=lambda: clock[0])
    try:
        assert runner.run_once() == {"sent": 0, "retry": 1, "give_up": 1}
        clock[0] += 200
        assert runner.run_once() == {"sent": 0, "retry": 0, "give_up": 1}
    finally:
        sink.close()
    figures = status(conn)["outbox"]
    assert (figures["depth"], figures["given_up"], figures["forwarded"]) == (0, 2, 0)


def test_relay_starttls_and_auth(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    seen = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any):
        seen.append((data.login, data.password))
        return AuthResult(success=data.password == b"s3cret", handled=False)

    sink = Sink([], tls_context=tls_context(cert, key), require_starttls=True,
                authenticator=authenticator)  # fmt: skip
    settings = RelaySettings("127.0.0.1", sink.port, "starttls", username="syncd")
    context = ssl.create_default_context(cafile=str(cert))
    try:
        good = Relay(settings, lambda: "s3cret", ssl_context=context)
        assert good.send(message(), "ada@example.com", ["x@example.net"]).delivered == [
            "x@example.net"
        ]
        bad = Relay(settings, lambda: "nope", ssl_context=context)
        refused = bad.send(message(), "ada@example.com", ["x@example.net"])
        assert refused.permanent and "s3cret" not in repr(refused) + repr(bad)
        untrusted = Relay(settings, lambda: "s3cret")
        assert untrusted.send(message(), "ada@example.com", ["x@example.net"]).temporary
    finally:
        sink.close()
    assert seen[0] == (b"syncd", b"s3cret") and len(sink.received) == 1


def test_a_relay_echoing_the_password_never_gets_it_stored(tmp_path: Path) -> None:
    secret = "s3cret-Pa55"
    plain = base64.b64encode(b"\0syncd\0" + secret.encode()).decode()
    login = base64.b64encode(secret.encode()).decode()
    echo = [f"451 4.3.0 you sent {secret}", f"451 4.3.0 AUTH PLAIN {plain}",
            f"554 5.7.1 AUTH LOGIN {login.rstrip('=')} refused"]  # fmt: skip

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any):
        return AuthResult(success=data.password == secret.encode(), handled=False)

    sink = Sink(echo, authenticator=authenticator, auth_require_tls=False)
    conn = db.connect(tmp_path / "store.sqlite3")
    outbox = Outbox(conn)
    for _ in echo:
        queue_copy(conn, message(), "ada@example.com", ["archive@example.net"], now=1000.0)
    relay = Relay(RelaySettings("127.0.0.1", sink.port, "none", username="syncd"), lambda: secret)
    try:
        assert OutboxRunner(outbox, relay, clock=lambda: 1000.0).run_once() == {
            "sent": 0, "retry": 2, "give_up": 1,
        }  # fmt: skip
    finally:
        sink.close()
    conn.commit()
    shown = repr(status(conn)) + repr(conn.execute("SELECT * FROM outbox").fetchall())
    assert "***" in shown
    for form in (secret, plain, login, login.rstrip("=")):
        assert form not in shown
    dump = "\n".join(conn.iterdump())
    assert secret not in dump and login.rstrip("=") not in dump


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")
def test_swaks_delivers(make_endpoint: Callable[..., Endpoint]) -> None:
    endpoint = make_endpoint()
    result = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(endpoint.port),
         "--from", "ada@example.com", "--to", LOG, "--header", "From: Ada <ada@example.com>",
         "--body", "logged by swaks", "--helo", "swaks.test"],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.6.0" in result.stdout
    assert b"logged by swaks" in bytes(endpoint.rows()[0]["raw"])


# End to end: BCC -> spool -> drain -> engagement ------------------------------------------


def _pipeline(path: Path, tmp_path: Path) -> Any:
    from syncd.config.model import Config
    from syncd.pipeline import Pipeline

    config = Config.from_mapping(
        {
            "store": {"path": str(path), "attachments_dir": str(tmp_path / "att")},
            "team": [
                {"name": "Ada", "email": "ada@example.com", "aliases": ["a.lovelace@example.com"]}
            ],
            "logging": {"never_log": ["partner.example"]},
        }
    )
    return Pipeline.from_config(config, db.connect(path), workers=0)


def _mail(mid: str, to: str, sender: str = "ada@example.com") -> bytes:
    return (
        f"From: Ada <{sender}>\r\nTo: {to}\r\nSubject: Offer {mid}\r\n"
        f"Message-ID: <{mid}@example.com>\r\nDate: Mon, 3 Nov 2025 10:00:00 +0000\r\n"
        f"\r\nHello\r\n"
    ).encode()


def test_bcc_to_engagement_end_to_end(
    make_endpoint: Callable[..., Endpoint], tmp_path: Path
) -> None:
    from syncd.services.bcc import drain_spool
    from syncd.store import queries

    endpoint = make_endpoint()
    for raw in (
        _mail("one", "New Client <new.client@customer.example>", "a.lovelace@example.com"),
        _mail("one", "New Client <new.client@customer.example>", "a.lovelace@example.com"),
        _mail("two", "Pat <pat@partner.example>, other@customer.example"),
        b"From: ada@example.com\r\nTo: m@customer.example\r\n"
        b"Content-Type: multipart/mixed\r\n\r\nno boundary\r\n",
    ):
        assert send(endpoint, raw)[0] == 250
    pipeline = _pipeline(endpoint.path, tmp_path)
    conn = pipeline.session.conn
    statuses: dict[str, int] = {}
    while (result := drain_spool(conn, pipeline.ingest_batch, extra_bcc=["arch@x.example"])).taken:
        for key, value in result.statuses.items():
            statuses[key] = statuses.get(key, 0) + value
    assert statuses.get("duplicate") == 1 and statuses.get("skipped") == 1
    assert statuses.get("logged", 0) + statuses.get("quarantined", 0) == 2
    assert endpoint.rows() == []
    [entry] = queries.timeline(conn, "new.client@customer.example") or []
    assert entry["message_id"] == "one@example.com" and entry["sources"] == ["bcc"]
    contacts = {c["email"]: c for c in queries.contacts_list(conn)}
    assert contacts["new.client@customer.example"]["owner"] == "ada@example.com"
    assert "pat@partner.example" not in contacts and "other@customer.example" not in contacts
    # Only what was logged is forwarded: one copy per logged message, none for the rest.
    forwarded = conn.execute("SELECT state, raw FROM outbox").fetchall()
    logged = statuses.get("logged", 0)
    assert [r["state"] for r in forwarded] == ["queued"] * logged
    assert any(b"<one@example.com>" in bytes(r["raw"]) for r in forwarded)
    assert not any(b"partner.example" in bytes(r["raw"]) for r in forwarded)
    pipeline.close()


def test_spool_survives_a_failed_drain(
    make_endpoint: Callable[..., Endpoint], tmp_path: Path
) -> None:
    from syncd.errors import StoreError
    from syncd.services.bcc import drain_spool

    endpoint = make_endpoint()
    assert send(endpoint, _mail("three", "c@customer.example"))[0] == 250
    pipeline = _pipeline(endpoint.path, tmp_path)

    def crash(items: Any, *, on_commit: Callable[[sqlite3.Connection], None]) -> Any:
        with db.transaction(pipeline.session.conn):
            on_commit(pipeline.session.conn)
            raise StoreError("disk full")

    with pytest.raises(StoreError):
        drain_spool(pipeline.session.conn, crash, extra_bcc=["arch@x.example"])
    assert len(endpoint.rows()) == 1  # rolled back with the batch
    assert drain_spool(pipeline.session.conn, pipeline.ingest_batch).statuses["logged"] == 1
    assert endpoint.rows() == []
    pipeline.close()
