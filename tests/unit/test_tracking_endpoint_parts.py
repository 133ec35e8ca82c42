"""The endpoint's pure parts: the per-IP rate limit, the link cache, the Location text."""

from __future__ import annotations

import pytest

from syncd.outbound.tracking import LinkCache, RateLimit, _location


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0 * 60

    def __call__(self) -> float:
        return self.now


def test_rate_limit_per_address_per_minute() -> None:
    clock = Clock()
    limit = RateLimit(3, clock)
    assert [limit.allow("1.2.3.4") for _ in range(5)] == [True, True, True, False, False]
    assert limit.allow("5.6.7.8")  # another address has its own count
    clock.now += 60  # the next minute starts afresh
    assert limit.allow("1.2.3.4")


def test_link_cache_ages_and_evicts() -> None:
    clock = Clock()
    cache = LinkCache(size=2, seconds=60, clock=clock)
    cache.put(1, ("https://a.example/",))
    cache.put(2, ("https://b.example/",))
    assert cache.get(1) == ("https://a.example/",)
    cache.put(3, ("https://c.example/",))  # 2 was used least recently
    assert cache.get(2) is None and cache.get(1) is not None
    clock.now += 61
    assert cache.get(1) is None


@pytest.mark.parametrize(
    ("stored", "location"),
    [
        ("https://shop.example.com/a?b=1&c=%20d#top", "https://shop.example.com/a?b=1&c=%20d#top"),
        ("https://example.com/grüße", "https://example.com/gr%C3%BC%C3%9Fe"),
        ("https://example.com/a b", "https://example.com/a%20b"),
        ("https://example.com/\r\nSet-Cookie: x", "https://example.com/%0D%0ASet-Cookie:%20x"),
        ("https://[2001:db8::1]:8443/p;q=1", "https://[2001:db8::1]:8443/p;q=1"),
    ],
)
def test_location_is_header_safe(stored: str, location: str) -> None:
    assert _location(stored) == location
