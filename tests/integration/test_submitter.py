"""The submission relay's SMTP client (``outbound.relay.Submitter``) against a real
aiosmtpd smarthost on loopback, one that offers PIPELINING and one that does not: what
the smarthost receives, the replies passed back, and that a refused transaction
delivers nothing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from syncd.outbound.relay import Relay, RelaySettings, Submitter

MESSAGE = (
    b"From: Ada <ada@example.com>\r\nTo: c@customer.example\r\nSubject: dots\r\n"
    b"Message-ID: <dots@example.com>\r\n\r\n.\r\n..two\r\n.leading\r\nend\r\n"
)


class Smarthost:
    """Records each connection's bytes as they arrived and each message it accepted;
    refuses the MAIL and RCPT addresses it is told to."""

    def __init__(self, *, pipelining: bool) -> None:
        self.pipelining = pipelining
        self.refuse: dict[str, str] = {}
        self.received: list[tuple[str, list[str], bytes]] = []
        self.chunks: list[bytes] = []
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        coroutine = self.loop.create_server(self._protocol, "127.0.0.1", 0)
        self.server = asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(5)
        self.port = self.server.sockets[0].getsockname()[1]

    def _protocol(self) -> SMTP:
        host = self

        class Recording(SMTP):
            def connection_made(self, transport: Any) -> None:
                host.connections += 1
                super().connection_made(transport)

            def data_received(self, data: bytes) -> None:
                host.chunks.append(data)
                super().data_received(data)

        return Recording(self, hostname="smarthost.test", loop=self.loop)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert envelope.mail_from is not None and envelope.original_content is not None
        self.received.append((envelope.mail_from, envelope.rcpt_tos, envelope.original_content))
        return "250 2.0.0 queued as 42"

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(params=[True, False], ids=["pipelining", "one-by-one"])
def smarthost(request: pytest.FixtureRequest) -> Iterator[Smarthost]:
    host = Smarthost(pipelining=request.param)
    yield host
    host.close()


@pytest.fixture
def submitter(smarthost: Smarthost) -> Iterator[Submitter]:
    relay = Relay(RelaySettings("127.0.0.1", smarthost.port, "none", local_hostname="syncd.test"))
    submitter = Submitter(relay)
    yield submitter
    submitter.close()


def test_relays_byte_identical_on_one_kept_connection(
    smarthost: Smarthost, submitter: Submitter
) -> None:
    for _ in range(3):
        answer = submitter.submit(MESSAGE, "ada@example.com", ["c@customer.example"])
        assert (answer.code, answer.text) == (250, "2.0.0 queued as 42")
    assert smarthost.received == [("ada@example.com", ["c@customer.example"], MESSAGE)] * 3
    assert smarthost.connections == 1


def test_pipelining_sends_the_envelope_and_data_in_one_write(
    smarthost: Smarthost, submitter: Submitter
) -> None:
    submitter.submit(MESSAGE, "ada@example.com", ["c@customer.example", "d@customer.example"])
    envelope = [c for c in smarthost.chunks if b"MAIL FROM" in c]
    assert len(envelope) == 1
    together = b"RCPT TO:<d@customer.example>\r\nDATA\r\n" in envelope[0]
    assert together == smarthost.pipelining


def test_a_refused_sender_is_passed_back_and_nothing_is_relayed(
    smarthost: Smarthost, submitter: Submitter
) -> None:
    smarthost.refuse["ada@example.com"] = "451 4.3.2 try later"
    answer = submitter.submit(MESSAGE, "ada@example.com", ["c@customer.example"])
    assert (answer.code, answer.text, answer.from_smarthost) == (451, "4.3.2 try later", True)
    assert smarthost.received == []
    del smarthost.refuse["ada@example.com"]
    assert submitter.submit(MESSAGE, "ada@example.com", ["c@customer.example"]).accepted
    assert len(smarthost.received) == 1


def test_one_refused_recipient_of_two_relays_nothing(
    smarthost: Smarthost, submitter: Submitter
) -> None:
    smarthost.refuse["gone@customer.example"] = "550 5.1.1 no such user"
    recipients = ["c@customer.example", "gone@customer.example"]
    answer = submitter.submit(MESSAGE, "ada@example.com", recipients)
    assert (answer.code, answer.text) == (550, "5.1.1 no such user")
    # With PIPELINING the DATA was already answered 354: only hanging up ends it unsent.
    assert smarthost.received == []
    assert submitter.submit(MESSAGE, "ada@example.com", ["c@customer.example"]).accepted
    assert smarthost.received == [("ada@example.com", ["c@customer.example"], MESSAGE)]


def test_a_smarthost_that_went_away_is_a_temporary_failure(smarthost: Smarthost) -> None:
    smarthost.close()
    relay = Relay(RelaySettings("127.0.0.1", smarthost.port, "none", timeout=2.0))
    answer = Submitter(relay).submit(MESSAGE, "ada@example.com", ["c@customer.example"])
    assert answer.code == 451 and answer.text.startswith("4.4.1") and not answer.from_smarthost
