"""The BCC logging endpoint's decisions: which mail to take, then spool, then answer 250.

The server is ``sources.smtpserver`` (aiosmtpd, narrowed: connection caps, a strict
``RCPT TO`` look, DATA time and memory limits, no STARTTLS inside TLS). ``BccHandler``
holds the decisions, through plain values it is given: the logging addresses, a
``sources.senders.SenderPolicy``, a ``spool(raw, mail_from, peer_ip, owner, tag=)``
callable (``tag``: the records the sender picked, ``crm.bcctags``) that commits durably
or raises, and the AUTH throttle of ``sources.bcc_limits``. A message is answered 250
only after ``spool`` returned; any failure there is ``451 4.3.0`` with no internals
(aiosmtpd's default would be ``500 Error: (ExcType) msg``). Session flow::

    connect --over cap--> 421, close
      EHLO (STARTTLS, 503 once TLS is on; AUTH only over TLS or from loopback, and
      only for verify_sender=auth; 454 while the IP or account is locked)
      MAIL (530 if auth is required and missing) -> RCPT (550 5.7.1 unless a logging
      address or its tagged form log+deal-42@, 550 5.1.1 for a tag that does not read,
      452 past 100) -> DATA (452 4.3.1 over the memory budget; 552 too big
      or header block too large; 550 5.7.1 sender not the team's or not verified;
      451 on DNS or store trouble; 451 4.4.2 and close when too slow, 452 4.3.1 and
      close when its bytes cross the budget) -> spool committed -> 250

The handler never touches the store: ``smtpserver.start_server`` and
``ThreadedEndpoint`` are what the daemon (and tests, and the benchmark) wire it with.
``provenance`` is how a spooled message is described when the BCC service hands it to
the pipeline (``sources.base``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
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
)

from syncd import secrets
from syncd.errors import StoreDamaged
from syncd.hosts import is_loopback
from syncd.mail.addresses import normalise
from syncd.mail.parse import HeaderTooLarge
from syncd.mail.provenance import Provenance
from syncd.sources.bcc_limits import AuthThrottle, Limits
from syncd.sources.senders import (
    SenderPolicy,
    Senders,
    address_reply,
    envelope_tag,
    recipient_reply,
)

log = logging.getLogger(__name__)

TEMPFAIL = "451 4.3.0 Temporary failure storing the message; please try again later"
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
