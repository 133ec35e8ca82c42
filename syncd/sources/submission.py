"""The submission relay's SMTP side: members send through syncd, which relays and logs.

aiosmtpd owns the protocol and ``sources.smtpserver`` the hardening: this module reuses
``BccSMTP`` (connection caps, idle and data-rate timers, the DATA memory budget, no
STARTTLS inside TLS), ``BccHandler``'s AUTH machinery (PLAIN and LOGIN against each
member's ``smtp_password_file`` through ``PasswordFiles``, offered only over TLS or from
loopback, the ``AuthThrottle``) and ``sources.bcc_limits.Limits``. What differs is the
decision, held here:

- AUTH is required before MAIL, RCPT or DATA (aiosmtpd's ``auth_required``: 530).
- ``MAIL FROM`` and the header From (read with the strict ``mail.parse.author``, the
  reader the log uses) must be the authenticated member's address or alias, or a team
  inbox address (``Senders.may_send_as``): else ``550 5.7.1`` with the reason.
- Any recipient: this is a relay for authenticated members, not for the world.
- DATA ends only at ``<CR><LF>.<CR><LF>`` (aiosmtpd reads lines split at CRLF).
- Inside DATA the message goes to ``await forward(Outgoing) -> Forwarded``: the service
  decides tracking, rewrites, relays to the smarthost and, on its 250, records the
  original durably (in the daemon, its relay worker process: ``services.relayworker``);
  its reply is the one the client sees (the smarthost's own 4xx or 5xx when it refused).

Session flow::

    connect --over cap--> 421, close
      EHLO (STARTTLS; AUTH only over TLS or from loopback)
      MAIL/RCPT/DATA before AUTH -> 530
      AUTH -> 235 | 535 | 454 locked
      MAIL (550 5.7.1 not yours) -> RCPT (553 odd address, 452 past 100)
      -> DATA (552 too big, 550 5.7.1 From not yours) -> forward -> its reply

Counters go to ``on_event`` as ``submission.<name>`` (``submissions``,
``refused.<reason>``, ``tempfail``); ``submission.relayed`` is counted by the spool in
the commit that records the message.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from syncd.errors import MessageError
from syncd.mail.parse import HeaderTooLarge, author
from syncd.sources.bcc import TEMPFAIL, BccHandler, _peer_ip
from syncd.sources.bcc_limits import Limits
from syncd.sources.senders import (
    MAX_RECIPIENTS,
    TOO_MANY_RCPTS,
    SenderPolicy,
    Senders,
    plain_path,
)
from syncd.sources.smtpserver import BccSMTP, ServerOptions, ThreadedEndpoint, start_server

log = logging.getLogger(__name__)

AUTH_NEEDED = "530 5.7.0 Authentication required: log in as your team member account"
BAD_RECIPIENT = "553 5.1.3 Recipient address not accepted: write it as <local@domain>"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message a member submitted, as the relay got it."""

    raw: bytes
    mail_from: str
    recipients: tuple[str, ...]
    member: str  # the authenticated member's primary email
    peer_ip: str


@dataclass(frozen=True, slots=True)
class Forwarded:
    """What became of a message: the reply for the client and a counter name
    (``relayed``, ``refused.smarthost``, ``tempfail``)."""

    reply: str
    outcome: str


Forward = Callable[[Outgoing], Awaitable[Forwarded]]


class SubmissionHandler(BccHandler):
    """aiosmtpd hooks for the submission relay; see the module docstring."""

    def __init__(
        self,
        *,
        team: Senders,
        forward: Forward,
        credentials: Callable[[str, bytes], str | None] | None,
        limits: Limits | None = None,
        on_event: Callable[[str], None] | None = None,
        require_tls: bool = False,
    ) -> None:
        super().__init__(
            addresses=(),
            policy=SenderPolicy("auth", team),
            spool=lambda *a, **k: None,  # never called: _data forwards instead
            credentials=credentials,
            limits=limits,
            on_event=on_event,
        )
        self.team = team
        self.forward = forward
        self.require_tls = require_tls

    def may_authenticate(self, session: Session) -> bool:
        # With require_tls, loopback clients log in over TLS too; without it, a loopback
        # client (a mail client on this host) may log in in clear, as for BCC.
        if self.require_tls and session.ssl is None:
            return False
        return super().may_authenticate(session)

    def count(self, name: str) -> None:
        # Kept apart from the BCC endpoint's counters in the same table.
        self.stats[name] += 1
        if self._on_event is not None:
            try:
                self._on_event(f"submission.{name}")
            except Exception:
                log.exception("submission event counter failed")

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> Any:
        member = session.auth_data if session.authenticated else None
        if member is None:
            self.count("refused.auth")
            return AUTH_NEEDED
        if not address or not self.team.may_send_as(member, address):
            self.count("refused.sender")
            return (
                f"550 5.7.1 You are logged in as {member} but MAIL FROM is "
                f"<{address}>; send as yourself, one of your aliases or a team inbox"
            )
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    def rcpt_reply(self, raw_arg: str | None, envelope: Envelope) -> str | None:
        if plain_path(raw_arg, "TO:") is None:
            self.count("refused.recipient")
            return BAD_RECIPIENT
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            self.count("refused.recipient")
            return TOO_MANY_RCPTS
        return None

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> Any:
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def _data(self, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        member = session.auth_data if session.authenticated else None
        if member is None:  # aiosmtpd's auth_required stops this earlier; kept as a guard
            self.count("refused.auth")
            return AUTH_NEEDED
        self.count("submissions")
        try:
            sender = author(raw).email
        except HeaderTooLarge as error:
            self.count("refused.headers")
            return f"552 5.3.4 The {error.reason}; the message was not sent"
        except MessageError as error:
            self.count("refused.sender")
            return (
                f"550 5.7.1 Not sent: {error.reason}; send with one plain From header "
                "naming yourself"
            )
        if not self.team.may_send_as(member, sender):
            self.count("refused.sender")
            return (
                f"550 5.7.1 You are logged in as {member} but the From header is {sender}; "
                "send as yourself, one of your aliases or a team inbox"
            )
        outgoing = Outgoing(
            raw, envelope.mail_from or "", tuple(envelope.rcpt_tos), member, _peer_ip(session)
        )
        try:
            # shield: a DATA deadline or a lost connection must not abandon a relay and
            # its durable record half way; the worker finishes either way.
            done = await asyncio.shield(self.forward(outgoing))
        except Exception as error:
            log.error("submission from %s failed: %s", member, type(error).__name__)
            self.count("tempfail")
            return TEMPFAIL
        if done.outcome != "relayed":  # relayed is counted durably by the spool
            self.count(done.outcome)
        return done.reply


class SubmissionSMTP(BccSMTP):
    """``BccSMTP``; only the decisions (the handler) differ."""


def smtp_options() -> dict[str, Any]:
    """aiosmtpd settings that make this a submission server: AUTH before anything else."""
    # aiosmtpd warns when AUTH is required without its own TLS rule; ours is in
    # BccHandler.handle_AUTH (TLS, or a loopback client), so the warning says nothing.
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    return {"auth_required": True}


async def start(handler: SubmissionHandler, options: ServerOptions) -> Any:
    """Listen in the running loop; returns a ``sources.smtpserver.BccServer``."""
    return await start_server(handler, options, SubmissionSMTP, **smtp_options())


def threaded(handler: SubmissionHandler, options: ServerOptions) -> ThreadedEndpoint:
    """The relay on its own event loop in a thread (tests, benchmark)."""
    return ThreadedEndpoint(handler, options, SubmissionSMTP, **smtp_options())
