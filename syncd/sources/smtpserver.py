"""The hardened aiosmtpd server both SMTP listeners run on: the BCC endpoint and the
submission relay.

aiosmtpd owns the protocol; ``BccSMTP`` narrows it: connection caps per server and per
IP answered with 421 (``Gate``), a strict look at the raw ``RCPT TO`` argument before
aiosmtpd normalises source routes and quoting away (the handler's ``rcpt_reply``), an
idle timer that also runs during DATA, a minimum data rate, a budget of DATA bytes in
memory across sessions (``sources.bcc_limits``), no STARTTLS inside TLS, and a 421 to
each idle session at shutdown. The decisions are the handler's (``sources.bcc``,
``sources.submission``); this module never reads what a message says.

``start_server`` listens in the running loop and returns a ``BccServer`` whose ``close``
is the bounded graceful stop; ``ThreadedEndpoint`` runs one on an event loop of its own
in a thread (tests, benchmark, sync callers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aiosmtpd.smtp import SMTP, syntax

from syncd.sources.bcc_limits import DataBudget, Limits

if TYPE_CHECKING:
    from syncd.sources.bcc import BccHandler

T = TypeVar("T")
log = logging.getLogger(__name__)

NO_ROOM = "452 4.3.1 Insufficient system storage, try later"
TOO_SLOW = "451 4.4.2 Timeout: data arrived too slowly"


class Gate:
    """Open connections, overall and per IP; used from the event loop thread only."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.total = 0
        self.per_ip: Counter[str] = Counter()
        self.sessions: set[BccSMTP] = set()
        self.budget = DataBudget(limits.data_budget)

    def acquire(self, ip: str) -> bool:
        if self.total >= self.limits.max_connections or (self.per_ip[ip] >= self.limits.max_per_ip):
            return False
        self.total += 1
        self.per_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self.total -= 1
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]


def _declared_size(mail_options: list[str]) -> int:
    for option in mail_options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return 0


class BccSMTP(SMTP):
    """aiosmtpd's SMTP with connection caps, a strict RCPT look and DATA time limits."""

    line_length_limit = 4096  # RFC 5321 says 1000; leave room for sloppy senders, still capped

    def __init__(self, handler: BccHandler, gate: Gate, max_bytes: int, **kwargs: Any) -> None:
        limits = handler.limits
        super().__init__(
            handler,
            data_size_limit=max_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            timeout=limits.idle_timeout,
            auth_require_tls=False,  # BccHandler.handle_AUTH decides: TLS or loopback
            authenticator=handler.authenticator,
            command_call_limit=dict(limits.command_call_limit),
            **kwargs,
        )
        self._gate = gate
        self._slot: str | None = None
        self._refused = False
        self._in_data = False
        self._due = 0.0  # when this DATA becomes too slow, in loop time
        self._received = 0  # bytes of this DATA so far
        self._charged = 0  # what this session holds of the gate's DataBudget
        self._tail = b""  # last bytes seen, to spot the end of data across reads
        self._rate_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._slot is None and not self._refused:
            peer = transport.get_extra_info("peername")
            ip = str(peer[0]) if isinstance(peer, tuple) else str(peer)
            if not self._gate.acquire(ip):
                self._refused = True
                self.event_handler.count("refused.connections")
                if isinstance(transport, asyncio.WriteTransport):
                    transport.write(b"421 4.7.0 Too many connections, try again later\r\n")
                transport.close()
                return
            self._slot = ip
            self._gate.sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        try:
            super().connection_lost(error)
        finally:
            if self._slot is not None:
                self._gate.release(self._slot)
                self._gate.sessions.discard(self)
                self._slot = None

    def data_received(self, data: bytes) -> None:
        if self._in_data:
            # aiosmtpd resets its idle timer per command only; a long DATA keeps it alive.
            self._reset_timeout()
            if self._rate_timer is not None:
                self._received += len(data)
                self._due = self.event_handler.limits.data_due(
                    self._due, self.loop.time(), len(data)
                )
                budget = self._gate.budget
                self._charged = budget.grow(self._charged, self._received)
                if budget.over(self._charged):
                    self._hang_up(NO_ROOM, "refused.memory")
                    return
                seen = self._tail + data
                if b"\r\n.\r\n" in seen:
                    self._stop_rate_clock()  # the rest is ours to do: checks, spool
                self._tail = seen[-4:]
        super().data_received(data)

    def _hang_up(self, reply: str, reason: str) -> None:
        """End a DATA in the middle: the reply, then close. The message is dropped with
        the connection; a sender still writing may see a reset instead of the reply,
        which MTAs treat as a temporary failure too."""
        self._stop_rate_clock()
        self.event_handler.count(reason)
        log.info("BCC DATA from %s cut: %s", self._slot, reply)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(reply.encode() + b"\r\n")
            transport.close()

    def _start_rate_clock(self) -> None:
        self._due = self.loop.time() + self.event_handler.limits.data_base_s
        self._received, self._tail = 0, b"\r\n"
        self._rate_timer = self.loop.call_at(self._due, self._check_rate)

    def _stop_rate_clock(self) -> None:
        if self._rate_timer is not None:
            self._rate_timer.cancel()
            self._rate_timer = None

    def _check_rate(self) -> None:
        # Checked when the deadline the bytes bought runs out, not per byte.
        if self.loop.time() < self._due:
            self._rate_timer = self.loop.call_at(self._due, self._check_rate)
            return
        self._rate_timer = None
        self._hang_up(TOO_SLOW, "refused.deadline")

    async def smtp_RCPT(self, arg: str | None) -> None:
        envelope, session = self.envelope, self.session
        if envelope is not None and session is not None and envelope.mail_from:
            reply = self.event_handler.rcpt_reply(arg, envelope)
            if reply is not None:
                await self.push(reply)
                return
        await super().smtp_RCPT(arg)

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        # RFC 3207 4.2: no STARTTLS once TLS is on; aiosmtpd would nest a second handshake.
        if self.session is not None and self.session.ssl is not None:
            await self.push("503 5.5.1 TLS already active")
            return
        await super().smtp_STARTTLS(arg)

    async def smtp_DATA(self, arg: str) -> None:
        envelope = self.envelope
        declared = _declared_size(envelope.mail_options) if envelope is not None else 0
        ready = envelope is not None and envelope.rcpt_tos and not arg
        if ready and not self._gate.budget.admits(declared):
            self.event_handler.count("refused.memory")
            await self.push(NO_ROOM)
            return
        self._in_data = True
        self._charged = 0
        self._start_rate_clock()
        try:
            await super().smtp_DATA(arg)
        except asyncio.CancelledError as cancel:
            # A lost connection cancels the session's task, which keeps the exception;
            # its traceback holds aiosmtpd's frame with the message read so far, in a
            # cycle through this session that only the cyclic GC would free.
            raise cancel.with_traceback(None) from None
        finally:
            self._stop_rate_clock()
            self._gate.budget.release(self._charged)
            self._charged = 0
            self._in_data = False

    @property
    def busy(self) -> bool:
        """Receiving or storing a message: worth waiting for at shutdown."""
        return self._in_data

    def shut(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not self._in_data and isinstance(transport, asyncio.WriteTransport):
            # A TLS layer already torn down cannot take the 421; closing is all that is left.
            with contextlib.suppress(AttributeError, RuntimeError, OSError):
                transport.write(b"421 4.3.2 Service shutting down, try again later\r\n")
        transport.close()


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


@dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 2525
    hostname: str | None = None  # name in the banner and EHLO; default: this host's name
    max_message_mb: int = 60
    tls: ssl.SSLContext | None = None
    require_tls: bool = False


class BccServer:
    """A listening endpoint; ``close`` is the bounded graceful stop."""

    def __init__(self, server: asyncio.Server, gate: Gate) -> None:
        self.server = server
        self.gate = gate

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self, grace: float = 10.0) -> int:
        """Stop listening, let messages in flight finish for ``grace`` seconds, then
        close every session (idle ones get 421). Returns how many were cut short."""
        self.server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(s.busy for s in self.gate.sessions) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        cut = sum(1 for s in self.gate.sessions if s.busy)
        for session in list(self.gate.sessions):
            session.shut()
        await asyncio.sleep(0)
        await self.server.wait_closed()
        return cut


async def start_server(
    handler: BccHandler,
    options: ServerOptions,
    smtp_class: type[BccSMTP] | None = None,
    **smtp_options: Any,
) -> BccServer:
    """Listen on ``options.host``/``port`` in the running loop. ``smtp_class`` and
    ``smtp_options`` let another SMTP source (the submission relay) reuse the caps."""
    # aiosmtpd logs every command line at INFO, AUTH credentials included.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    loop = asyncio.get_running_loop()
    gate = Gate(handler.limits)
    hostname = options.hostname or socket.gethostname()
    max_bytes = options.max_message_mb * 1024 * 1024

    def factory() -> BccSMTP:
        return (smtp_class or BccSMTP)(
            handler,
            gate,
            max_bytes,
            hostname=hostname,
            ident="ESMTP",  # the default names aiosmtpd and its version
            tls_context=options.tls,
            require_starttls=options.require_tls and options.tls is not None,
            loop=loop,
            **smtp_options,
        )

    server = await loop.create_server(factory, options.host, options.port, reuse_address=True)
    return BccServer(server, gate)


class ThreadedEndpoint:
    """The endpoint on its own event loop in a thread (tests, benchmark, sync callers)."""

    def __init__(
        self,
        handler: BccHandler,
        options: ServerOptions,
        smtp_class: type[BccSMTP] | None = None,
        **smtp_options: Any,
    ) -> None:
        self.handler = handler
        self.options = options
        self._smtp = (smtp_class, smtp_options)
        self.port = options.port
        self._loop = asyncio.new_event_loop()
        self._server: BccServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="bcc", daemon=True)

    def start(self) -> ThreadedEndpoint:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            start_server(self.handler, self.options, self._smtp[0], **self._smtp[1]), self._loop
        )
        self._server = future.result(timeout=10)
        self.port = self._server.port
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the endpoint's loop (what the handler's hooks share) and wait."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def bytes_in_flight(self) -> int:
        """DATA bytes held across sessions right now (the memory budget's count)."""
        return self._server.gate.budget.in_flight if self._server is not None else 0

    def stop(self, grace: float = 5.0) -> None:
        if self._server is not None:
            closing = self._server.close(grace)
            asyncio.run_coroutine_threadsafe(closing, self._loop).result(timeout=grace + 5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self.handler.close()

    def __enter__(self) -> ThreadedEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
