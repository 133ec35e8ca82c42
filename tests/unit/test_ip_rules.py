"""Tables for the tracking listener's client address rules: proxies, blocks, truncation."""

from __future__ import annotations

import pytest

from syncd.hosts import IpRules, parse_network, truncate

RULES = IpRules.parse(
    blocked_ips=["198.51.100.7", "192.0.2.0/24", "2001:db8:b::/48", "::ffff:203.0.113.9"],
    trusted_proxies=["10.0.0.0/8", "127.0.0.1", "fd00::/8"],
)


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        # no proxy in front: the peer, whatever the header says
        ("203.0.113.5", None, "203.0.113.5"),
        ("203.0.113.5", "198.51.100.7", "203.0.113.5"),  # spoofed XFF from an untrusted peer
        ("203.0.113.5", "10.0.0.1", "203.0.113.5"),
        # a trusted proxy: right to left, first untrusted hop
        ("10.0.0.1", "198.51.100.7", "198.51.100.7"),
        (
            "10.0.0.1",
            "1.1.1.1, 198.51.100.7",
            "198.51.100.7",
        ),  # the client's own claim on the left is ignored
        ("10.0.0.1", "1.1.1.1, 198.51.100.7, 10.0.0.2", "198.51.100.7"),  # through two proxies
        ("127.0.0.1", "198.51.100.7,10.1.2.3 ,  10.0.0.2", "198.51.100.7"),
        ("10.0.0.1", "10.0.0.3, 10.0.0.2", "10.0.0.3"),  # all trusted: the leftmost
        ("10.0.0.1", "", "10.0.0.1"),
        ("10.0.0.1", "   ", "10.0.0.1"),
        # malformed entries end the walk at the last good hop
        ("10.0.0.1", "198.51.100.7, unknown", "10.0.0.1"),
        ("10.0.0.1", "198.51.100.7, garbage, 10.0.0.2", "10.0.0.2"),
        ("10.0.0.1", "1.1.1.1, , 10.0.0.2", "10.0.0.2"),
        ("10.0.0.1", "1.1.1.1, 300.1.1.1", "10.0.0.1"),
        ("10.0.0.1", "_hidden, 198.51.100.7", "198.51.100.7"),  # the walk stops before the bad one
        # ports some proxies add
        ("10.0.0.1", "198.51.100.7:4711", "198.51.100.7"),
        ("10.0.0.1", "[2001:db8::1]:443", "2001:db8::1"),
        ("10.0.0.1", "[2001:db8::1]", "2001:db8::1"),
        ("10.0.0.1", "198.51.100.7:port", "10.0.0.1"),
        ("10.0.0.1", "[2001:db8::1", "10.0.0.1"),
        # IPv6 and mapped v4
        ("2001:db8::5", "198.51.100.7", "2001:db8::5"),
        ("fd00::1", "2001:db8::9", "2001:db8::9"),
        ("fd00::1", "2001:DB8:0:0::9", "2001:db8::9"),  # normalised
        (
            "::ffff:10.0.0.1",
            "198.51.100.7",
            "198.51.100.7",
        ),  # mapped peer matches the v4 proxy rule
        ("10.0.0.1", "::ffff:198.51.100.7", "198.51.100.7"),
        ("::ffff:203.0.113.5", None, "203.0.113.5"),
        ("fe80::1%eth0", None, "fe80::1"),
        # a peer that is not an address (a unix socket) comes back as it is
        ("", "198.51.100.7", ""),
    ],
)
def test_client_ip(peer: str, xff: str | None, expected: str) -> None:
    assert RULES.client_ip(peer, xff) == expected


@pytest.mark.parametrize(
    ("ip", "blocked"),
    [
        ("198.51.100.7", True),
        ("198.51.100.8", False),
        ("192.0.2.255", True),
        ("192.0.3.0", False),
        ("::ffff:198.51.100.7", True),  # mapped v4 meets the v4 rule
        ("::ffff:192.0.2.1", True),
        ("203.0.113.9", True),  # a mapped rule is a v4 rule
        ("::ffff:203.0.113.9", True),
        ("2001:db8:b:ffff::1", True),
        ("2001:db8:c::1", False),
        ("2001:db8:b::/64", True),  # a stored truncated network inside a rule
        ("192.0.2.0/24", True),
        ("198.51.100.0/24", False),  # a /32 rule cannot tell which of the /24 it was
        ("not an ip", False),
        ("", False),
    ],
)
def test_is_blocked(ip: str, blocked: bool) -> None:
    assert RULES.is_blocked(ip) is blocked


def test_spoofed_xff_cannot_escape_or_cause_a_block() -> None:
    # an untrusted client claims to be a blocked address: ignored, the peer is judged
    ip = RULES.client_ip("203.0.113.5", "198.51.100.7")
    assert not RULES.is_blocked(ip)
    # a blocked client behind our proxy is still blocked
    assert RULES.is_blocked(RULES.client_ip("10.0.0.1", "198.51.100.7"))


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("203.0.113.0", "203.0.113.0/24"),
        ("::ffff:203.0.113.77", "203.0.113.0/24"),
        ("2001:db8:1234:5678::1", "2001:db8:1234::/48"),
        ("2001:DB8:1234:ffff:ffff:ffff:ffff:ffff", "2001:db8:1234::/48"),
        ("::1", "::/48"),
        ("fe80::1%eth0", "fe80::/48"),
        ("not an ip", ""),
        ("", ""),
    ],
)
def test_truncate(ip: str, expected: str) -> None:
    assert truncate(ip) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", "192.0.2.1/32"),
        ("192.0.2.7/24", "192.0.2.0/24"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("::ffff:192.0.2.1", "192.0.2.1/32"),
        ("::ffff:192.0.2.0/120", "192.0.2.0/24"),
        (" 10.0.0.0/8 ", "10.0.0.0/8"),
    ],
)
def test_parse_network(text: str, expected: str) -> None:
    assert str(parse_network(text)) == expected


@pytest.mark.parametrize("bad", ["", "10.0.0.0/33", "example.com", "10.0.0", "2001:db8::/129"])
def test_parse_refuses_with_the_entry(bad: str) -> None:
    with pytest.raises(ValueError, match="not an IP address or CIDR"):
        IpRules.parse(blocked_ips=["192.0.2.1", bad])
