"""The BCC logging endpoint: an aiosmtpd server that checks, spools, then answers 250.

aiosmtpd owns the protocol. ``BccSMTP`` narrows it (connection caps per server and per
IP answered with 421, a strict look at the raw ``RCPT TO`` argument before aiosmtpd
normalises source routes and quoting away, an idle timer that also runs during DATA, a
minimum data rate, a budget of DATA bytes in memory across sessions, no STARTTLS inside
TLS). ``BccHandler`` holds the decisions, through plain values it is given: the logging
addresses, a ``sources.senders.SenderPolicy``, a ``spool(raw, mail_from, peer_ip,
owner, tag=)`` callable (``tag``: the records the sender picked, ``crm.bcctags``) that
commits durably or raises, and the AUTH throttle of ``sources.bcc_limits``. A message
is answered 250 only after ``spool`` returned; any failure there is ``451 4.3.0`` with
no internals (aiosmtpd's default would be ``500 Error: (ExcType) msg``). Session flow::

    connect --over cap--> 421, close
      EHLO (STARTTLS, 503 once TLS is on; AUTH only over TLS or from loopback, and
      only for verify_sender=auth; 454 while the IP or account is locked)
      MAIL (530 if auth is required and missing) -> RCPT (550 5.7.1 unless a logging
      address or its tagged form log+deal-42@, 550 5.1.1 for a tag that does not read,
      452 past 100) -> DATA (452 4.3.1 over the memory budget; 552 too big
      or header block too large; 550 5.7.1 sender not the team's or not verified;
      451 on DNS or store trouble; 451 4.4.2 and close when too slow, 452 4.3.1 and
      close when its bytes cross the budget) -> spool committed -> 250

The handler never touches the store: ``start_server`` and ``ThreadedEndpoint`` are what
the daemon (and tests, and the benchmark) wire it with. ``provenance`` is how a spooled
message is described when the BCC service hands it to the pipeline (``sources.base``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from aiosmtpd.smtp import (
    MISSING,
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
    syntax,
)

from syncd import secrets
from syncd.errors import StoreDamaged
from syncd.hosts import is_loopback
from syncd.mail.addresses import normalise
from syncd.mail.parse import HeaderTooLarge
from syncd.mail.provenance import Provenance
from syncd.sources.bcc_limits import AuthThrottle, DataBudget, Limits
from syncd.sources.senders import (
    SenderPolicy,
    Senders,
    address_reply,
    envelope_tag,
    recipient_reply,
)

log = logging.getLogger(__name__)

TEMPFAIL = "451 4.3.0 Temporary failure storing the message; please try again later"
NO_ROOM = "452 4.3.1 Insufficient system storage, try later"
TOO_SLOW = "451 4.4.2 Timeout: data arrived too slowly"
THROTTLED = "454 4.7.0 Too many failed logins, try again later"
ACCEPTED = "250 2.6.0 Message accepted for logging"


class Spool(Protocol):
    def __call__(
        self,
        raw: bytes,
        mail_from: str,
        peer_ip: str,
        owner: str | None = None,
        *,
        tag: str | None = None,
    ) -> object: ...


class PasswordFiles:
    """Per-member SMTP passwords, one file each, read at every login (rotation is free).

    A login is the member's email or any of their addresses; returns the member or None.
    """

    def __init__(self, files: Mapping[str, Path], directory: Senders) -> None:
        self._files = {normalise(member): Path(path) for member, path in files.items()}
        self._directory = directory

    def __repr__(self) -> str:
        return f"PasswordFiles({len(self._files)} members)"

    def __call__(self, login: str, password: bytes) -> str | None:
        member = self._directory.owner_of(login)
        path = self._files.get(member or "")
        if member is None or path is None:
            return None
        try:
            secret = secrets.from_file(path, "smtp_password_file").encode()
        except secrets.SecretError as exc:
            log.warning("SMTP login of %s refused: %s", member, exc)
            return None
        return member if secret and hmac.compare_digest(secret, password) else None


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


def _peer_ip(session: Session) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "")


class BccHandler:
    """aiosmtpd hooks for the logging endpoint; plain values in, SMTP replies out."""

    def __init__(
        self,
        *,
        addresses: Iterable[str],
        policy: SenderPolicy,
        spool: Spool,
        credentials: Callable[[str, bytes], str | None] | None = None,
        limits: Limits | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.allowed = frozenset(normalise(a) for a in addresses)
        self.policy = policy
        self.spool = spool
        self.credentials = credentials
        self.limits = limits or Limits()
        self.stats: Counter[str] = Counter()
        self.throttle = AuthThrottle(self.limits)
        self._on_event = on_event
        self._executor = ThreadPoolExecutor(self.limits.worker_threads, "bcc-worker")

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def login_counts(self) -> dict[str, int]:  # not auth_*: see may_authenticate
        """Failed and throttled logins since start, for ``/metrics``."""
        return {
            "auth_failures": self.stats["auth.failed"],
            "auth_throttled": self.stats["auth.throttled"],
        }

    def count(self, name: str) -> None:
        self.stats[name] += 1
        if self._on_event is not None:
            try:
                self._on_event(name)
            except Exception:
                log.exception("BCC event counter failed")

    # Not named auth_*: aiosmtpd advertises every auth_* attribute of the handler as a
    # mechanism.
    def may_authenticate(self, session: Session) -> bool:
        if not self.policy.needs_auth or self.credentials is None:
            return False
        return session.ssl is not None or is_loopback(_peer_ip(session))

    # aiosmtpd hooks -------------------------------------------------------------------

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list
    ) -> list[str]:
        session.host_name = hostname
        if self.may_authenticate(session):
            return responses
        return [r for r in responses if not r[4:].upper().startswith("AUTH")]

    async def handle_AUTH(
        self, server: SMTP, session: Session, envelope: Envelope, args: list[str]
    ) -> Any:
        if not self.policy.needs_auth or self.credentials is None:
            return "502 5.5.1 AUTH is not offered here"
        if not self.may_authenticate(session):
            return "538 5.7.11 Encryption required: use STARTTLS before AUTH"
        ip = _peer_ip(session)
        if self.throttle.refusal(ip, None, time.monotonic()) is not None:
            self.count("auth.throttled")
            return THROTTLED
        # Growing with the IP's recent failures; the account's lock is checked with the
        # login, in authenticator.
        wait = self.throttle.delay(ip, time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)
        return MISSING

    def authenticator(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if self.credentials is None or not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, ip, now = data.login.decode("utf-8", "replace"), _peer_ip(session), time.monotonic()
        # Checked again here, synchronously: parallel sessions may have locked it meanwhile.
        if self.throttle.refusal(ip, login, now) is not None:
            self.count("auth.throttled")
            return AuthResult(success=False, handled=False, message=THROTTLED)
        member = self.credentials(login, data.password)
        if member is None:
            self.count("refused.auth")
            self.count("auth.failed")
            for lock in self.throttle.failed(ip, login, now):
                log.warning(
                    "BCC AUTH: %s %r refused for %.0f s after %d failed logins",
                    "IP" if lock.kind == "ip" else "account",
                    lock.key[:80],
                    lock.seconds,
                    lock.failures,
                )
            return AuthResult(success=False, handled=False)
        self.throttle.succeeded(ip, login, now)
        return AuthResult(success=True, auth_data=member)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> Any:
        if self.policy.needs_auth and not session.authenticated:
            self.count("refused.auth")
            return "530 5.7.0 Authentication required: log in as your team member account"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    def rcpt_reply(self, raw_arg: str | None, envelope: Envelope) -> str | None:
        reply = recipient_reply(raw_arg, self.allowed, len(envelope.rcpt_tos))
        if reply is not None:
            self.count("refused.recipient")
        return reply

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> Any:
        # BccSMTP has checked the raw argument; this guards the parsed one as well.
        reply = address_reply(address, self.allowed)
        if reply is not None:
            self.count("refused.recipient")
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        try:
            return await self._data(session, envelope)
        except Exception:
            log.exception("BCC message from %s not accepted", _peer_ip(session))
            self.count("tempfail")
            return TEMPFAIL

    async def handle_exception(self, error: Exception) -> str:
        log.error("BCC session error: %s", type(error).__name__)
        self.count("tempfail")
        return "451 4.3.0 Temporary failure; please try again later"

    async def _data(self, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        loop = asyncio.get_running_loop()
        check = partial(
            self.policy.check,
            raw,
            peer_ip=_peer_ip(session),
            helo=session.host_name or "",
            member=session.auth_data if session.authenticated else None,
        )
        try:
            if self.policy.mode in ("spf", "dkim"):
                decision = await loop.run_in_executor(self._executor, check)
            else:
                decision = check()
        except HeaderTooLarge as error:
            self.count("refused.headers")
            return f"552 5.3.4 The {error.reason}; the message cannot be logged"
        if not decision.accepted:
            self.count("tempfail" if (decision.reply or "").startswith("4") else "refused.sender")
            return decision.reply or TEMPFAIL
        tag = envelope_tag(envelope.rcpt_tos, self.allowed)
        # Only tagged mail passes tag=, so a spool callable that predates tags (the
        # benchmark's naive one) still takes every untagged message.
        write = partial(
            self.spool,
            raw,
            envelope.mail_from or "",
            _peer_ip(session),
            decision.owner,
            **({"tag": tag} if tag else {}),
        )
        try:
            # shield: a DATA deadline hitting now must not abandon a commit half way.
            await asyncio.shield(loop.run_in_executor(self._executor, write))
        except Exception as error:
            # A damaged store is said once by the daemon, not once per refused message.
            level = logging.DEBUG if isinstance(error, StoreDamaged) else logging.ERROR
            log.log(level, "BCC spool write failed: %s", type(error).__name__)
            self.count("tempfail")
            return TEMPFAIL
        self.stats["accepted"] += 1  # the durable count is the spool's, in the same commit
        return ACCEPTED


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


def provenance(
    received_at: float,
    mail_from: str,
    owner: str | None,
    source: str = "bcc",
    tag: str | None = None,
) -> Provenance:
    """How a spooled message came: accepted at ``received_at`` (epoch seconds) from the
    envelope sender ``mail_from``, for the member ``owner`` if the session named one;
    ``source`` is the spool row's ('relay': a member's mail the smarthost accepted);
    ``tag`` the logging address's tag it was sent to (``crm.bcctags``), if any."""
    return Provenance(
        source=source,
        received_at=datetime.fromtimestamp(received_at, UTC),
        owner=owner,
        sender=mail_from,
        tag=tag or None,
    )
