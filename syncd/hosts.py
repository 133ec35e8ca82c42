"""Host names and IP addresses as the config and the listeners judge them: which hosts
are this machine (loopback), where plain text and no TLS are allowed; and, for the tracking
listener, ``IpRules``: which client address to believe behind a proxy, which are blocked or
known link scanners, and how addresses are truncated before they are stored. Pure: no I/O."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

_LOOPBACK_NAMES = {"localhost"}


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (an IPv6 zone suffix is allowed)."""
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


# --- client addresses for the tracking listener -------------------------------------------
#
# Kept here, not under outbound/, so the config (a lower layer) can check `blocked_ips`,
# `trusted_proxies` and `scanner_ranges` with the same parser that later applies them.

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# An IPv4 address seen through a dual-stack socket (::ffff:a.b.c.d) is the same client as
# a.b.c.d; everything below folds it to v4 so one v4 rule covers both spellings.
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")

# Stored addresses are cut to these prefixes unless the admin asks for full ones: /24 and
# /48 still tell an office or a provider apart, not a person's machine.
TRUNCATE_V4 = 24
TRUNCATE_V6 = 48
ANSWERS_KEPT = 100_000  # per IpRules; each entry well under 200 bytes


def parse_ip(text: str) -> Address | None:
    """The address in ``text`` (mapped v4 folded to v4, a zone suffix dropped), or None."""
    text = text.strip()
    if not text or len(text) > 64:
        return None
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_network(text: str) -> Network:
    """An IP or CIDR from the config as a network; ValueError names the bad entry.

    Host bits are allowed (``10.0.0.7/24`` means 10.0.0.0/24, as firewalls read it); a
    mapped v6 network inside ::ffff:0:0/96 becomes its v4 network.
    """
    try:
        net = ipaddress.ip_network(text.strip().split("%", 1)[0], strict=False)
    except ValueError:
        raise ValueError(f"not an IP address or CIDR network: {text!r}") from None
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.subnet_of(_MAPPED):
        return ipaddress.IPv4Network(
            (int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96), strict=False
        )
    return net


# Cached: the tracking writer asks about the same few thousand readers' addresses for
# every rule of every hit, and ipaddress parsing was most of its time.
@functools.lru_cache(maxsize=65536)
def as_network(text: str) -> Network | None:
    """An address (as /32 or /128) or a stored truncated network, or None if neither.

    Stored hits may carry ``203.0.113.0/24``; rules then match only when the whole stored
    network lies inside them, because what was cut off is no longer known.
    """
    ip = parse_ip(text)
    if ip is not None:
        return ipaddress.ip_network(ip)
    if "/" not in text:
        return None
    try:
        return parse_network(text)
    except ValueError:
        return None


def in_any(text: str, networks: tuple[Network, ...]) -> bool:
    """True when the address or stored network ``text`` lies inside one of ``networks``."""
    net = as_network(text)
    if net is None:
        return False
    return any(net.version == n.version and net.subnet_of(n) for n in networks)  # type: ignore[arg-type]


# Cached: the tracking writer truncates each hit's address and the relay each member's,
# the same few thousand again and again, and ipaddress parsing is most of the cost.
@functools.lru_cache(maxsize=65536)
def truncate(ip: str) -> str:
    """``ip`` cut to /24 (v4) or /48 (v6) as CIDR text, for storage; "" if not an address.

    The result keeps its prefix length so a reader never mistakes it for a full address.
    A mapped ``::ffff:a.b.c.d`` is truncated as v4.
    """
    addr = parse_ip(ip)
    if addr is None:
        return ""
    bits = TRUNCATE_V4 if addr.version == 4 else TRUNCATE_V6
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


def _xff_hop(entry: str) -> Address | None:
    """One X-Forwarded-For entry; some proxies add a port (``1.2.3.4:80``, ``[v6]:443``)."""
    entry = entry.strip()
    if entry.startswith("["):
        host, sep, rest = entry[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return parse_ip(host)
    if entry.count(":") == 1:  # v4 with a port; a bare v6 has two colons or more
        host, _, port = entry.partition(":")
        return parse_ip(host) if port.isdigit() else None
    return parse_ip(entry)


@dataclass(frozen=True)
class IpRules:
    """Which client addresses the tracking listener believes, blocks, or calls scanners."""

    blocked: tuple[Network, ...] = ()
    trusted_proxies: tuple[Network, ...] = ()
    scanner_ranges: tuple[Network, ...] = ()
    # The writer asks both questions of every hit, mostly about the same readers'
    # addresses: each answer is kept (bounded) rather than walk the ranges again.
    _answers: dict[tuple[str, str], bool] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def parse(
        cls,
        blocked_ips: Iterable[str] = (),
        trusted_proxies: Iterable[str] = (),
        scanner_ranges: Iterable[str] = (),
    ) -> IpRules:
        """Rules from the config's lists; ValueError on the first entry that is not an IP/CIDR."""
        return cls(
            blocked=tuple(parse_network(t) for t in blocked_ips),
            trusted_proxies=tuple(parse_network(t) for t in trusted_proxies),
            scanner_ranges=tuple(parse_network(t) for t in scanner_ranges),
        )

    def client_ip(self, peer: str, x_forwarded_for: str | None) -> str:
        """The client's address: the peer, or, if the peer is a trusted proxy, the first
        untrusted hop of X-Forwarded-For read right to left.

        Pass every X-Forwarded-For header joined by ", " in arrival order. Only trusted
        proxies append honestly, so the walk starts at the right end (the hop our proxy
        added) and stops at the first address no trusted proxy vouches for; anything to its
        left is the client's own claim. A malformed entry ends the walk at the last good hop,
        since nothing beyond it can be believed. A non-trusted peer's header is ignored
        (anyone can send one). Returns the peer text unchanged if it is not an address.
        """
        peer_ip = parse_ip(peer)
        if peer_ip is None:
            return peer
        if not x_forwarded_for or not self._trusted(peer_ip):
            return str(peer_ip)
        last_good = peer_ip
        for entry in reversed(x_forwarded_for.split(",")):
            hop = _xff_hop(entry)
            if hop is None:
                break
            last_good = hop
            if not self._trusted(hop):
                break
        return str(last_good)

    def is_blocked(self, ip: str) -> bool:
        """True when ``ip`` (or a stored truncated network) is inside ``blocked_ips``."""
        return self._answer("blocked", ip, self.blocked)

    def is_scanner(self, ip: str) -> bool:
        """True when ``ip`` is inside a known link-scanner range."""
        return self._answer("scanner", ip, self.scanner_ranges)

    def _answer(self, rule: str, ip: str, networks: tuple[Network, ...]) -> bool:
        answer = self._answers.get((rule, ip))
        if answer is None:
            if len(self._answers) >= ANSWERS_KEPT:
                self._answers.clear()
            answer = self._answers[rule, ip] = in_any(ip, networks)
        return answer

    def is_trusted_proxy(self, ip: str) -> bool:
        addr = parse_ip(ip)
        return addr is not None and self._trusted(addr)

    def _trusted(self, ip: Address) -> bool:
        return any(ip in n for n in self.trusted_proxies)
