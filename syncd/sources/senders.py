"""Who may log mail by BCC: recipient allow-list, the From header, and sender verification.

The BCC endpoint (``sources/bcc.py``) owns the SMTP protocol; this module owns the
decisions, as functions of plain values that tests drive by tables:

- ``recipient_reply``: the allow-list: a logging address, or its tagged form
  (``log+deal-42@``, ``crm.bcctags``), else 550; ``envelope_tag`` is the tag the message
  travels with.
- ``plain_path``: the literal address of a ``RCPT TO:``/``MAIL FROM:`` argument, or None
  for anything but a plain ``<local@domain>`` (no source routes, ``%`` hacks, quoted or
  commented local parts, address literals). aiosmtpd normalises those away, so the
  endpoint checks the raw argument here before aiosmtpd parses it.
- ``check_from``: the From address read by ``mail.parse.author``, the parser's own header
  splitter and strict address reader, so the address checked is the address logged; any
  header another reader could take differently is refused.
- ``Senders``: what the checks ask of the team (``crm.team.Team`` answers): whose mail
  may be logged, which member owns an address, and who may send as it.
- ``SenderPolicy``: one decision per message for ``verify_sender`` = auth | spf | dkim |
  none. SPF (pyspf) and DKIM (dkimpy) are reached through ``SpfCheck``/``DkimCheck``
  callables whose DNS is injectable; they block on DNS, so the endpoint calls
  ``SenderPolicy.check`` from a worker thread.

Every refusal is a ``Decision`` carrying the full SMTP reply, worded for the person whose
mail client shows it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import spf

from syncd.crm.bcctags import Picks, TagError, logging_recipient
from syncd.crm.domains import registrable_domain
from syncd.errors import MessageError
from syncd.mail.addresses import domain_of, normalise, normalise_domain
from syncd.mail.parse import HeaderTooLarge, author, header_fields

MAX_RECIPIENTS = 100

Mode = Literal["auth", "spf", "dkim", "none"]

# RFC 5321 dot-atom local part (minus the old relay characters % and !) and a host name.
_ATEXT = r"[A-Za-z0-9#$&'*+/=?^_`{|}~-]"
_LOCAL = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})+"
_PLAIN = re.compile(rf"<?({_LOCAL}@{_DOMAIN})>?")

RELAY_DENIED = "550 5.7.1 Relaying denied: this server only accepts mail for its logging address"
BAD_TAG = (
    "550 5.1.1 Unknown tag on the logging address: after the + write deal-N, ticket-N "
    "or nocreate, joined by + (e.g. log+deal-42+ticket-7@...)"
)
TOO_MANY_RCPTS = f"452 4.5.3 Too many recipients (at most {MAX_RECIPIENTS} per message)"


def plain_path(arg: str | None, keyword: str) -> str | None:
    """The address in ``TO:<a@b> PARAMS`` if it is a plain mailbox, else None.

    ``keyword`` is ``"TO:"`` or ``"FROM:"``. Case of the address is kept.
    """
    if not arg or arg[: len(keyword)].upper() != keyword:
        return None
    path = arg[len(keyword) :].strip().split(" ", 1)[0]
    if path.startswith("<") != path.endswith(">"):
        return None
    match = _PLAIN.fullmatch(path)
    return match.group(1) if match else None


def recipient_reply(raw_arg: str | None, allowed: frozenset[str], accepted: int) -> str | None:
    """None when ``RCPT TO`` may go on to aiosmtpd, else the refusal to send. A logging
    address is accepted with a tag (``log+deal-42@``) too; nothing else is."""
    address = plain_path(raw_arg, "TO:")
    if address is None:
        return RELAY_DENIED
    reply = address_reply(address, allowed)
    if reply is not None:
        return reply
    if accepted >= MAX_RECIPIENTS:
        return TOO_MANY_RCPTS
    return None


def address_reply(address: str, allowed: frozenset[str]) -> str | None:
    """None for a logging address or a well-formed tagged form of one, else the 550."""
    try:
        picks = logging_recipient(address, allowed)
    except TagError:
        return BAD_TAG
    return RELAY_DENIED if picks is None else None


def envelope_tag(recipients: Iterable[str], allowed: frozenset[str]) -> str | None:
    """The canonical tag of a message's accepted recipients (their picks add up), or
    None when none is tagged. Recipients are those ``address_reply`` let through."""
    picks = Picks()
    for address in recipients:
        with contextlib.suppress(TagError):
            picks = picks | (logging_recipient(address, allowed) or Picks())
    return str(picks) or None


def aligned(signing_domain: str, from_domain: str) -> bool:
    """DMARC relaxed alignment: same registrable (organizational) domain."""
    signing, author = normalise_domain(signing_domain), normalise_domain(from_domain)
    if signing == author:
        return True
    org = registrable_domain(author)
    return org is not None and registrable_domain(signing) == org


class Senders(Protocol):
    """What the sender checks ask of the team; ``crm.team.Team`` answers it."""

    def is_sender(self, address: str) -> bool:
        """A member's address, alias or personal inbox, or a team inbox address."""
        ...

    def owner_of(self, address: str) -> str | None:
        """The member an address (in any case) belongs to; None for a team inbox's or a
        stranger's."""
        ...

    def may_send_as(self, member: str, address: str) -> bool: ...


@dataclass(frozen=True)
class Decision:
    """The verdict on one message: accept (with the owning member) or the reply to send."""

    reply: str | None  # None: accept
    sender: str | None = None  # the From address, lower-cased
    owner: str | None = None  # member who owns new contacts, if known

    @property
    def accepted(self) -> bool:
        return self.reply is None


class SpfCheck(Protocol):
    def __call__(self, ip: str, sender: str, helo: str) -> tuple[str, str]: ...


class DkimCheck(Protocol):
    def __call__(self, raw: bytes) -> tuple[list[str], bool]: ...


def check_from(raw: bytes, directory: Senders) -> Decision:
    """Step one in every mode: exactly one From address, read whole, and it is the team's.

    ``HeaderTooLarge`` (from ``author``) is left to the caller, which answers 552.
    """
    try:
        sender = author(raw).email
    except HeaderTooLarge:
        raise
    except MessageError as error:
        return Decision(
            f"550 5.7.1 Not logged: {error.reason}; only mail with one plain From header "
            "from a team member is logged"
        )
    if not directory.is_sender(sender):
        return Decision(
            f"550 5.7.1 {sender} is not a team member, alias or connected inbox; "
            "only the team's own mail is logged",
            sender,
        )
    return Decision(None, sender, directory.owner_of(sender))


def auth_verdict(member: str | None, sender: str, directory: Senders) -> str | None:
    if member is None:
        return "530 5.7.0 Authentication required: log in as your team member account"
    if not directory.may_send_as(member, sender):
        return (
            f"550 5.7.1 You are logged in as {member} but the From header is {sender}; "
            "send as yourself or one of your aliases"
        )
    return None


def spf_verdict(result: str, ip: str, sender: str) -> str | None:
    domain = domain_of(sender)
    if result == "pass":
        return None
    if result == "temperror":
        return f"451 4.7.0 SPF lookup for {domain} failed temporarily; try again later"
    return (
        f"550 5.7.1 SPF check of {domain} gave '{result}' for {ip}: this server may not "
        f"send as {sender}; send through your domain's mail server"
    )


def dkim_verdict(domains: list[str], temporary: bool, sender: str) -> str | None:
    author = domain_of(sender)
    if any(aligned(d, author) for d in domains):
        return None
    if temporary:
        return "451 4.7.0 DKIM key lookup failed temporarily; try again later"
    if domains:
        return (
            f"550 5.7.1 The DKIM signature is from {', '.join(sorted(set(domains)))}, "
            f"not {author}; sign with your domain's key"
        )
    return f"550 5.7.1 No valid DKIM signature from {author}; sign with your domain's key"


@dataclass(frozen=True)
class SenderPolicy:
    """``verify_sender`` as one call per message. May block on DNS: call from a thread."""

    mode: Mode
    directory: Senders
    spf_check: SpfCheck | None = None
    dkim_check: DkimCheck | None = None

    @property
    def needs_auth(self) -> bool:
        return self.mode == "auth"

    def check(self, raw: bytes, *, peer_ip: str, helo: str, member: str | None) -> Decision:
        decision = check_from(raw, self.directory)
        if not decision.accepted or self.mode == "none":
            return decision
        sender = decision.sender or ""
        if self.mode == "auth":
            reply = auth_verdict(member, sender, self.directory)
            owner = decision.owner or (normalise(member) if member else None)
            return Decision(reply, sender, owner)
        if self.mode == "spf":
            check = self.spf_check or PySpf()
            result, _explanation = check(peer_ip, sender, helo)
            return Decision(spf_verdict(result, peer_ip, sender), sender, decision.owner)
        check_dkim = self.dkim_check or Dkim()
        domains, temporary = check_dkim(raw)
        return Decision(dkim_verdict(domains, temporary, sender), sender, decision.owner)


class PySpf:
    """SPF with pyspf over dnspython (system resolver): ``(result, explanation)``."""

    def __init__(self, timeout: float = 20.0) -> None:
        self.timeout = timeout

    def __call__(self, ip: str, sender: str, helo: str) -> tuple[str, str]:
        try:
            result, explanation = spf.check2(
                i=ip, s=sender, h=helo or domain_of(sender), querytime=self.timeout
            )
        except Exception as error:  # pyspf raises for odd input; a refusal, not a crash
            return "permerror", type(error).__name__
        return str(result), str(explanation)


class Dkim:
    """Every verified DKIM signing domain, and whether a DNS lookup failed temporarily.

    ``dnsfunc(name, timeout=...) -> bytes | None`` is dkimpy's hook for TXT answers.
    """

    def __init__(
        self, dnsfunc: Callable[..., Any] | None = None, *, minkey: int = 1024, max_sigs: int = 5
    ) -> None:
        import dkim  # here, not at the top: only ``verify_sender: dkim`` needs it

        self.dnsfunc = dnsfunc or dkim.dnsplug.get_txt
        self.minkey = minkey
        self.max_sigs = max_sigs

    def __call__(self, raw: bytes) -> tuple[list[str], bool]:
        import dkim

        temporary = False

        def lookup(name: Any, timeout: float = 5) -> Any:
            nonlocal temporary
            try:
                return self.dnsfunc(name, timeout=timeout)
            except dkim.DnsTimeoutError:
                temporary = True
                raise

        verified = []
        count = len(header_fields(raw).get("dkim-signature", ()))
        for idx in range(min(count, self.max_sigs)):
            checker = dkim.DKIM(raw, minkey=self.minkey)
            try:
                if checker.verify(idx=idx, dnsfunc=lookup) and checker.domain:
                    verified.append(checker.domain.decode("ascii", "replace").lower())
            except dkim.DKIMException:
                continue
        return verified, temporary
