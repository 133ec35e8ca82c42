"""The verdict on each open or click: was it a person, or a machine, or the sender?

Owns the rules and their order; pure (no I/O, no clock: every time comes in the hit).
Every hit is stored with its verdict and none is thrown away, so ``rejudge`` can run the
rules again over a message's stored hits after the thresholds or lists change.

Order of precedence, first match wins::

    blocked   the admin listed the address (their own offices, devices): their word is final
    self      the sending member submitted from this address recently: the sender reading
              their own Sent copy (Gmail and Office 365 file one of what is relayed)
    machine   user agent exactly "Mozilla/5.0" (Apple Mail Privacy Protection), empty, or
              a known bot or fetcher
    scanner   (clicks) a known link-scanner range; three or more distinct links of the
              message within ~2 s; or a click before any human open within seconds of
              delivery
    prefetch  (opens) within a few seconds of the smarthost's 250: a fetch on arrival
    human     anything else

``self`` sits above ``machine`` because the sender's own reading should never show up as a
machine count either; ``scanner`` and ``prefetch`` never compete (one judges clicks, the
other opens). A human click with no earlier human open (or inferred open) sets
``inferred_open``: the reader saw the message with images blocked.

Times must be timezone-aware (or all naive alike).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from syncd.hosts import IpRules, as_network

HUMAN = "human"
BLOCKED = "blocked"
SELF = "self"
MACHINE = "machine"
SCANNER = "scanner"
PREFETCH = "prefetch"
VERDICTS = (HUMAN, BLOCKED, SELF, MACHINE, SCANNER, PREFETCH)

# Known link-scanner networks, the default of `tracking.scanner_ranges`. Clicks only:
# Outlook.com proxies images, so opens from Microsoft networks are people. A short list of
# published ranges, a starting point an admin extends in the config:
#   Microsoft Exchange Online Protection (Microsoft 365 "URLs and IP address ranges",
#     Exchange Online, ID 10), where Safe Links checks come from;
#   Proofpoint hosted (pphosted.com) 148.163.128.0/19 and 67.231.144.0/20 (Proofpoint
#     support's list of its networks);
#   Mimecast US data centres (Mimecast "Data Centers and URLs").
DEFAULT_SCANNER_RANGES: tuple[str, ...] = (
    "40.92.0.0/15",
    "40.107.0.0/16",
    "52.100.0.0/14",
    "104.47.0.0/17",
    "2a01:111:f400::/48",
    "2a01:111:f403::/48",
    "148.163.128.0/19",
    "67.231.144.0/20",
    "205.139.110.0/24",
    "207.211.30.0/24",
    "170.10.128.0/24",
)

# Apple Mail Privacy Protection fetches every image through its proxy with exactly this
# user agent, whether or not anyone reads the message (ua-parser/uap-core#509).
APPLE_MPP_USER_AGENT = "Mozilla/5.0"

# Lower-case substrings of user agents that are programs, not people reading. Kept short
# on purpose: "GoogleImageProxy" and "YahooMailProxy" are NOT here (they fetch when a
# person opens; mautic#16069 lost every Gmail open that way), nor "HeadlessChrome".
BOT_USER_AGENT_PARTS: tuple[str, ...] = (
    # Gmail's fetch-on-arrival agent (mautic#10245): a 2015 Chrome with an Edge suffix
    "chrome/42.0.2311.135 safari/537.36 edge/12.246",
    "bot/",
    "bot;",
    "crawler",
    "spider",
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "go-http-client",
    "libwww-perl",
    "java/",
)


@dataclass(frozen=True)
class Thresholds:
    """The timing rules' limits (config `tracking.*`); the README quotes these docstrings."""

    prefetch_seconds: float = 10.0
    """An open this soon after the smarthost's 250 (or before it) is a fetch on arrival,
    not a reader: Gmail loads images as mail lands (mautic#7884, gophish#1390). A person
    rarely opens a message within 10 s of it being sent; later Gmail fetches are people."""

    scanner_burst: int = 3
    """This many distinct links of one message clicked within ``scanner_burst_seconds``
    is a link scanner (Defender Safe Links, Proofpoint, Mimecast click every link). A
    person opens one link, reads, maybe comes back; three in two seconds is a program."""

    scanner_burst_seconds: float = 2.0
    """The window for ``scanner_burst``. Scanner bursts come any time after delivery
    (a median 43 s in craft-campaign#546), so the burst, not the time since sending, is
    the reliable sign."""

    scanner_seconds: float = 10.0
    """A click this soon after delivery with no human open before it is a scanner
    checking the link as the message passes its gateway; a person has not read the
    message yet. Kept short: time since sending alone misses most scanners."""

    self_seconds: float = 7 * 24 * 3600.0
    """How far back an address the sending member submitted from counts as theirs, for
    the ``self`` rule: the caller passes the member's submission addresses of this window
    as ``MessageContext.sender_ips``. A week covers an office or home line; dynamic
    addresses move on and stop matching after it."""

    def __post_init__(self) -> None:
        if self.scanner_burst < 2:
            raise ValueError("scanner_burst must be at least 2")
        for name in ("prefetch_seconds", "scanner_burst_seconds", "scanner_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.self_seconds < 0:
            raise ValueError("self_seconds must not be negative")


@dataclass(frozen=True)
class Hit:
    """One request to the pixel (``open``) or a link (``click``) of a tracked message.

    ``ip`` is the client address from ``IpRules.client_ip``, or, for stored hits, the
    truncated network (``203.0.113.0/24``): rules then match only where the network tells.
    """

    kind: Literal["open", "click"]
    at: datetime
    ip: str
    user_agent: str
    link_index: int | None = None


@dataclass(frozen=True)
class Verdict:
    verdict: str
    inferred_open: bool
    reason: str


@dataclass(frozen=True)
class JudgedHit:
    hit: Hit
    verdict: Verdict


@dataclass(frozen=True)
class MessageContext:
    """What the rules need to know about the message a hit belongs to.

    ``relayed_at`` is when the smarthost answered 250; ``sender_ips`` the addresses the
    sending member submitted from within ``Thresholds.self_seconds`` (full or truncated);
    ``earlier_hits`` the message's hits before this one, with their verdicts.
    """

    relayed_at: datetime
    sender_ips: frozenset[str] = frozenset()
    earlier_hits: Sequence[JudgedHit] = ()


def judge(
    hit: Hit, context: MessageContext, rules: IpRules, thresholds: Thresholds | None = None
) -> Verdict:
    """The verdict on ``hit``, seeing only the hits before it.

    A burst is only visible from its third click, so the first clicks of a scanner burst
    are judged human here; ``rejudge`` over the message's hits corrects them.
    """
    t = thresholds or Thresholds()
    clicks = _Clicks.of([*(j.hit for j in context.earlier_hits), hit])
    return _decide(hit, context, clicks, context.earlier_hits, rules, t)


def rejudge(
    hits: Iterable[Hit],
    relayed_at: datetime,
    sender_ips: frozenset[str],
    rules: IpRules,
    thresholds: Thresholds | None = None,
    before: Sequence[JudgedHit] = (),
) -> list[JudgedHit]:
    """Every hit of one message judged again, in time order, seeing the whole message.

    Unlike ``judge``, a burst marks all its clicks (the ones before the third as well).
    Earlier verdicts feed later ones (inferred opens, click-before-open), so the hits are
    sorted by time first; the result is in that order. ``before``: hits older than all of
    ``hits``, with the verdicts they keep, seen as context (the clicks a burst may start
    from, the first human open) but not judged again.
    """
    t = thresholds or Thresholds()
    ordered = sorted(hits, key=lambda h: h.at)
    context = MessageContext(relayed_at, sender_ips)
    clicks = _Clicks.of([*(j.hit for j in before), *ordered])
    judged: list[JudgedHit] = list(before)
    for hit in ordered:
        verdict = _decide(hit, context, clicks, judged, rules, t)
        judged.append(JudgedHit(hit, verdict))
    return judged[len(before) :]


def _decide(
    hit: Hit,
    context: MessageContext,
    clicks: _Clicks,
    earlier: Sequence[JudgedHit],
    rules: IpRules,
    t: Thresholds,
) -> Verdict:
    since_relay = (hit.at - context.relayed_at).total_seconds()
    if rules.is_blocked(hit.ip):
        return Verdict(BLOCKED, False, f"{hit.ip} is in blocked_ips")
    if _is_sender_ip(hit.ip, context.sender_ips):
        return Verdict(SELF, False, f"the sender submitted from {hit.ip} recently")
    machine = _machine_reason(hit.user_agent)
    if machine:
        return Verdict(MACHINE, False, machine)
    if hit.kind == "click":
        if rules.is_scanner(hit.ip):
            return Verdict(SCANNER, False, f"{hit.ip} is a known link-scanner range")
        links = clicks.burst_links(hit, t.scanner_burst_seconds)
        if links >= t.scanner_burst:
            return Verdict(
                SCANNER, False, f"{links} links clicked within {t.scanner_burst_seconds:g} s"
            )
        seen_open = _human_open_before(earlier)
        if not seen_open and since_relay <= t.scanner_seconds:
            return Verdict(
                SCANNER,
                False,
                f"a click {since_relay:g} s after delivery, before any open "
                f"(limit {t.scanner_seconds:g} s)",
            )
        if not seen_open:
            return Verdict(HUMAN, True, "a person clicked; no open seen before, one is inferred")
        return Verdict(HUMAN, False, "a person clicked")
    if since_relay <= t.prefetch_seconds:
        return Verdict(
            PREFETCH,
            False,
            f"an open {since_relay:g} s after delivery (limit {t.prefetch_seconds:g} s)",
        )
    return Verdict(HUMAN, False, "a person opened")


def _is_sender_ip(ip: str, sender_ips: frozenset[str]) -> bool:
    # Exact when both are full addresses; when either is a stored truncated network,
    # as precise as the data allows (one inside the other).
    hit_net = as_network(ip)
    if hit_net is None:
        return False
    for sender in sender_ips:
        net = as_network(sender)
        if net is None or net.version != hit_net.version:
            continue
        if hit_net.subnet_of(net) or net.subnet_of(hit_net):  # type: ignore[arg-type]
            return True
    return False


def _machine_reason(user_agent: str) -> str:
    ua = (user_agent or "").strip()
    if not ua:
        return "no user agent"
    if ua == APPLE_MPP_USER_AGENT:
        return "user agent exactly Mozilla/5.0 (Apple Mail Privacy Protection)"
    lowered = ua.lower()
    for part in BOT_USER_AGENT_PARTS:
        if part in lowered:
            return f"a known bot user agent ({part})"
    return ""


@dataclass(frozen=True)
class _Clicks:
    """A message's clicks that name a link, in time order, sorted once for every hit the
    burst rule asks about."""

    hits: list[Hit]
    times: list[datetime]

    @classmethod
    def of(cls, hits: Iterable[Hit]) -> _Clicks:
        clicks = sorted(
            (h for h in hits if h.kind == "click" and h.link_index is not None),
            key=lambda h: h.at,
        )
        return cls(clicks, [h.at for h in clicks])

    def burst_links(self, hit: Hit, window: float) -> int:
        """The most distinct links clicked in any ``window``-long span that contains
        ``hit`` (one of these clicks)."""
        # Such a span starts at a click no later than ``hit`` and no more than ``window``
        # before it, so only clicks within ``window`` either side can be in one.
        span = timedelta(seconds=window)
        clicks = self.hits[
            bisect_left(self.times, hit.at - span) : bisect_right(self.times, hit.at + span)
        ]
        # No span holds more links than all these clicks name: the sweep stops there. It
        # slides the span's end forward as its start moves, counting each link's clicks.
        most = len({h.link_index for h in clicks})
        in_span: dict[int | None, int] = {}
        best = end_at = 0
        for start in clicks:
            if start.at > hit.at:
                break
            end = start.at + span
            while end_at < len(clicks) and clicks[end_at].at <= end:
                link = clicks[end_at].link_index
                in_span[link] = in_span.get(link, 0) + 1
                end_at += 1
                if len(in_span) == most:
                    return most
            best = max(best, len(in_span))
            if in_span[start.link_index] == 1:
                del in_span[start.link_index]
            else:
                in_span[start.link_index] -= 1
        return best


def _human_open_before(earlier: Sequence[JudgedHit]) -> bool:
    return any(
        j.verdict.verdict == HUMAN and (j.hit.kind == "open" or j.verdict.inferred_open)
        for j in earlier
    )
