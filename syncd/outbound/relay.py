"""Sending mail out through the configured relay: the extra_bcc copies (and later tracking).

``Relay.send`` is one SMTP transaction with smtplib (implicit TLS, STARTTLS or plain on
loopback; AUTH when a username is set), run from a worker thread. Its result says, per
recipient, delivered, temporary failure or permanent failure. ``plan`` is the pure
retry decision and ``backoff`` the pure schedule, both tested by tables.
``OutboxRunner.run_once`` joins a durable queue (``store.spool.Outbox``, passed in) to a
relay: take the due items, send each, then mark it sent, failed for later or given up::

    queued --2xx for all--> sent
       |---4xx / network error, younger than give_up_after--> queued, retry at backoff(n)
       '---5xx for every recipient left, or too old--> given_up (reason kept for status)

The relay password is fetched by a callable at each send and scrubbed from the relay's
replies (a relay may echo what it was sent) before they are kept for ``status``.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from syncd import secrets

Security = Literal["tls", "starttls", "none"]

BACKOFF_BASE = 60.0
BACKOFF_CAP = 3600.0
GIVE_UP_AFTER = 5 * 24 * 3600.0


def backoff(attempt: int, *, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...): doubling, capped."""
    if attempt < 1:
        return 0.0
    return min(cap, base * 2 ** min(attempt - 1, 32))


@dataclass(frozen=True)
class Delivery:
    """What the relay said, recipient by recipient; ``error`` for the whole transaction."""

    delivered: list[str] = field(default_factory=list)
    temporary: dict[str, str] = field(default_factory=dict)
    permanent: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    action: Literal["sent", "retry", "give_up"]
    remaining: list[str]
    reason: str = ""
    next_attempt_at: float = 0.0


def plan(
    delivery: Delivery,
    *,
    attempts: int,
    created_at: float,
    now: float,
    give_up_after: float = GIVE_UP_AFTER,
    base: float = BACKOFF_BASE,
    cap: float = BACKOFF_CAP,
) -> Plan:
    """What to do with a queue item after one try (``attempts`` counts earlier tries)."""
    reasons = [*delivery.temporary.values(), *delivery.permanent.values()]
    reason = "; ".join(dict.fromkeys(reasons))
    if not delivery.temporary and not delivery.permanent:
        return Plan("sent", [])
    if not delivery.temporary:
        return Plan("give_up", sorted(delivery.permanent), reason)
    remaining = sorted(delivery.temporary)
    if now - created_at >= give_up_after:
        return Plan("give_up", remaining, f"still failing after {give_up_after:.0f}s: {reason}")
    delay = backoff(attempts + 1, base=base, cap=cap)
    return Plan("retry", remaining, reason, now + delay)


@dataclass(frozen=True)
class RelaySettings:
    host: str
    port: int = 587
    security: Security = "starttls"
    username: str | None = None
    timeout: float = 60.0
    local_hostname: str | None = None


class Relay:
    """One SMTP client per send; ``ssl_context`` defaults to the system trust store."""

    def __init__(
        self,
        settings: RelaySettings,
        password: Callable[[], str | None] = lambda: None,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self._password = password
        self._ssl = ssl_context or ssl.create_default_context()

    def __repr__(self) -> str:
        s = self.settings
        return f"Relay({s.host}:{s.port}, {s.security}, user={s.username!r})"

    def _connect(self, password: str | None) -> smtplib.SMTP:
        s = self.settings
        host = s.local_hostname or socket.gethostname()
        if s.security == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                s.host, s.port, local_hostname=host, timeout=s.timeout, context=self._ssl
            )
        else:
            client = smtplib.SMTP(s.host, s.port, local_hostname=host, timeout=s.timeout)
        try:
            client.ehlo()
            if s.security == "starttls":
                client.starttls(context=self._ssl)
                client.ehlo()
            if s.username:
                client.login(s.username, password or "")
        except BaseException:
            client.close()
            raise
        return client

    def send(self, raw: bytes, mail_from: str, recipients: Sequence[str]) -> Delivery:
        """Deliver ``raw`` unchanged; never raises for SMTP or network trouble. The relay's
        own words in the result never hold the password, even if it echoes it back."""
        try:
            password = self._password() if self.settings.username else None
        except secrets.SecretError as error:
            return _all(recipients, temporary=str(error))
        delivery = self._send(raw, mail_from, recipients, password)
        if password:
            for reasons in (delivery.temporary, delivery.permanent):
                for rcpt, reason in reasons.items():
                    reasons[rcpt] = secrets.scrub(reason, [password], self.settings.username)
        return delivery

    def _send(
        self, raw: bytes, mail_from: str, recipients: Sequence[str], password: str | None
    ) -> Delivery:
        try:
            client = self._connect(password)
        except smtplib.SMTPAuthenticationError as error:
            return _all(recipients, permanent=f"relay refused the login ({error.smtp_code})")
        except (OSError, smtplib.SMTPException) as error:
            return _all(recipients, temporary=_describe(error))
        try:
            refused = client.sendmail(mail_from, list(recipients), raw)
        except smtplib.SMTPRecipientsRefused as error:
            refused = error.recipients
        except smtplib.SMTPResponseException as error:
            kind = "permanent" if 500 <= error.smtp_code < 600 else "temporary"
            return _all(recipients, **{kind: _describe(error)})
        except (OSError, smtplib.SMTPException) as error:
            return _all(recipients, temporary=_describe(error))
        finally:
            _quit(client)
        result = Delivery()
        for rcpt in recipients:
            if rcpt not in refused:
                result.delivered.append(rcpt)
                continue
            code, text = refused[rcpt]
            reason = f"{rcpt}: {code} {_text(text)}"
            (result.permanent if 500 <= code < 600 else result.temporary)[rcpt] = reason
        return result


def _all(recipients: Sequence[str], *, temporary: str = "", permanent: str = "") -> Delivery:
    if permanent:
        return Delivery(permanent={r: permanent for r in recipients})
    return Delivery(temporary={r: temporary for r in recipients})


def _text(value: bytes | str) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return " ".join(text.split())[:200]


def _describe(error: BaseException) -> str:
    if isinstance(error, smtplib.SMTPResponseException):
        return f"relay said {error.smtp_code} {_text(error.smtp_error)}"
    if isinstance(error, ssl.SSLError | ssl.CertificateError):
        return f"TLS with the relay failed ({type(error).__name__})"
    if isinstance(error, TimeoutError | socket.timeout):
        return "the relay did not answer in time"
    if isinstance(error, OSError):
        return f"cannot reach the relay ({error.strerror or type(error).__name__})"
    return f"relay error ({type(error).__name__})"


def _quit(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        client.close()


class QueueItem(Protocol):
    id: int
    created_at: float
    attempts: int
    mail_from: str
    recipients: list[str]
    raw: bytes


class Queue(Protocol):
    def due(self, now: float, limit: int = ...) -> Sequence[QueueItem]: ...
    def mark_sent(self, item_id: int) -> None: ...
    def mark_failed(
        self, item_id: int, *, next_attempt_at: float, error: str, remaining: Sequence[str]
    ) -> None: ...
    def give_up(self, item_id: int, *, error: str, now: float) -> None: ...


class Sender(Protocol):
    def send(self, raw: bytes, mail_from: str, recipients: Sequence[str]) -> Delivery: ...


@dataclass
class OutboxRunner:
    """Delivers due queue items; call ``run_once`` from a worker thread on a timer."""

    queue: Queue
    relay: Sender
    give_up_after: float = GIVE_UP_AFTER
    base: float = BACKOFF_BASE
    cap: float = BACKOFF_CAP
    clock: Callable[[], float] = time.time

    def run_once(self, limit: int = 16) -> dict[str, int]:
        counts = {"sent": 0, "retry": 0, "give_up": 0}
        for item in self.queue.due(self.clock(), limit):
            delivery = self.relay.send(item.raw, item.mail_from, item.recipients)
            decision = plan(
                delivery,
                attempts=item.attempts,
                created_at=item.created_at,
                now=self.clock(),
                give_up_after=self.give_up_after,
                base=self.base,
                cap=self.cap,
            )
            if decision.action == "sent":
                self.queue.mark_sent(item.id)
            elif decision.action == "retry":
                self.queue.mark_failed(
                    item.id,
                    next_attempt_at=decision.next_attempt_at,
                    error=decision.reason,
                    remaining=decision.remaining,
                )
            else:
                self.queue.give_up(item.id, error=decision.reason, now=self.clock())
            counts[decision.action] += 1
        return counts


# Submission: one message relayed while its sender waits ----------------------------------

RELAY_UNREACHABLE = 451


@dataclass(frozen=True)
class Answer:
    """The smarthost's own reply to one message (the first refusal, or the DATA reply),
    as one line; or syncd's 451 when the smarthost could not be reached."""

    code: int
    text: str
    from_smarthost: bool = True

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300

    @property
    def line(self) -> str:
        return f"{self.code} {self.text}".rstrip()


def _one_line(value: bytes | str) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    # A multi-line reply becomes one line; control characters never reach our client.
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:400]


class Submitter:
    """Relays one message per call, all or nothing, keeping idle connections for reuse.

    ``submit`` runs MAIL, each RCPT and DATA on a connection to the smarthost; the first
    reply that is not a success ends the transaction (RSET) and is returned as it was
    said, so a member's mail client sees the smarthost's own 4xx or 5xx. A reused
    connection the smarthost has closed is replaced once, before anything was sent.
    Thread-safe: each call takes its own connection.
    """

    def __init__(self, relay: Relay, *, keep: int = 8, idle_seconds: float = 20.0) -> None:
        self.relay = relay
        self.keep = keep
        self.idle_seconds = idle_seconds
        self._idle: list[tuple[float, smtplib.SMTP]] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Submitter({self.relay!r})"

    def _take(self) -> smtplib.SMTP | None:
        now = time.monotonic()
        with self._lock:
            while self._idle:
                since, client = self._idle.pop()
                if now - since < self.idle_seconds:
                    return client
                _quit(client)
        return None

    def _give_back(self, client: smtplib.SMTP) -> None:
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append((time.monotonic(), client))
                return
        _quit(client)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _since, client in idle:
            _quit(client)

    def submit(self, raw: bytes, mail_from: str, recipients: Sequence[str]) -> Answer:
        """Relay ``raw`` unchanged; never raises for SMTP or network trouble."""
        settings = self.relay.settings
        try:
            password = self.relay._password() if settings.username else None
        except secrets.SecretError as error:
            return Answer(451, f"4.3.5 {error}", from_smarthost=False)
        answer = self._submit(raw, mail_from, recipients, password)
        if password:
            answer = Answer(
                answer.code,
                secrets.scrub(answer.text, [password], settings.username),
                answer.from_smarthost,
            )
        return answer

    def _submit(
        self, raw: bytes, mail_from: str, recipients: Sequence[str], password: str | None
    ) -> Answer:
        client = self._take()
        reused = client is not None
        options = [] if raw.isascii() else ["BODY=8BITMIME"]
        for _attempt in range(2):
            if client is None:
                try:
                    client = self.relay._connect(password)
                except smtplib.SMTPAuthenticationError as error:
                    return Answer(451, "4.7.0 the smarthost refused syncd's login "
                                  f"({error.smtp_code})", from_smarthost=False)  # fmt: skip
                except (OSError, smtplib.SMTPException) as error:
                    return Answer(451, f"4.4.1 {_describe(error)}", from_smarthost=False)
            try:
                mail_options = [o for o in options if client.has_extn("8bitmime")]
                refused, data_open = _open_data(client, mail_from, mail_options, recipients)
            except (OSError, smtplib.SMTPException) as error:
                client.close()
                client = None
                if reused:
                    reused = False  # the smarthost closed an idle connection: a new one
                    continue
                return Answer(451, f"4.4.2 {_describe(error)}", from_smarthost=False)
            break
        assert client is not None
        if refused is not None:
            code, text = refused
            if data_open:
                # A pipelined DATA got its 354 although a recipient was refused: hanging
                # up is the one way to end it that delivers nothing.
                client.close()
                return Answer(code, _one_line(text))
            return self._refused(client, code, text)
        try:
            client.send(_dot_stuffed(raw))
            code, text = client.getreply()
        except (OSError, smtplib.SMTPException) as error:
            client.close()
            # Lost in DATA: whether the smarthost kept it is unknown; the client retries.
            return Answer(451, f"4.4.2 {_describe(error)}", from_smarthost=False)
        self._give_back(client)
        return Answer(code, _one_line(text))

    def _refused(self, client: smtplib.SMTP, code: int, text: bytes) -> Answer:
        try:
            client.rset()
            self._give_back(client)
        except (OSError, smtplib.SMTPException):
            client.close()
        return Answer(code, _one_line(text))


def _open_data(
    client: smtplib.SMTP, mail_from: str, options: Sequence[str], recipients: Sequence[str]
) -> tuple[tuple[int, bytes] | None, bool]:
    """MAIL, each RCPT and DATA: the first reply that is not a success (None if all were),
    and whether DATA was answered 354. One write when the smarthost offers PIPELINING
    (RFC 2920), which saves a round trip per command; else one command at a time."""
    commands = [
        f"MAIL FROM:{smtplib.quoteaddr(mail_from)}{''.join(' ' + o for o in options)}\r\n",
        *(f"RCPT TO:{smtplib.quoteaddr(r)}\r\n" for r in recipients),
        "DATA\r\n",
    ]
    wanted = [(250,), *([(250, 251)] * len(recipients)), (354,)]
    replies: list[tuple[int, bytes]] = []
    if client.has_extn("pipelining"):
        client.send("".join(commands))
        replies = [client.getreply() for _ in commands]
    else:
        for command, ok in zip(commands, wanted, strict=True):
            client.send(command)
            replies.append(client.getreply())
            if replies[-1][0] not in ok:
                break
    refused = next((r for r, ok in zip(replies, wanted, strict=False) if r[0] not in ok), None)
    return refused, len(replies) == len(commands) and replies[-1][0] == 354


def _dot_stuffed(raw: bytes) -> bytes:
    """The DATA that carries ``raw`` unchanged (RFC 5321 4.5.2), ended by <CRLF>.<CRLF>."""
    # A dot opening a line, after CRLF or a bare LF as the parser splits lines, found by
    # one replace in C rather than a multiline regex stopping at every line.
    data = raw.replace(b"\n.", b"\n..")
    if data.startswith(b"."):
        data = b"." + data
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"
