"""The endpoint's parts: the per-IP rate limit, the link cache, the Location text, and
the hit queue's pace under a flood."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from syncd.outbound.tracking import Counts, HitQueue, LinkCache, RateLimit, RawHit, _location


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


HIT = RawHit("open", 1, None, datetime.now(UTC), "192.0.2.1", "UA")


def test_past_half_its_bound_the_queue_writes_every_other_slice_of_time() -> None:
    """A writer that cannot keep up pauses as long as each batch took while the queue is
    more than half full, and writes flat out below that; every queued hit is written."""
    write_seconds = 0.04

    async def scenario() -> tuple[list[tuple[float, int]], Counts]:
        counts = Counts()
        starts: list[tuple[float, int]] = []

        async def write(batch: Sequence[RawHit]) -> Counter[str]:
            starts.append((time.monotonic(), len(queue)))  # the queue left behind
            await asyncio.sleep(write_seconds)
            return Counter(human=len(batch))

        queue = HitQueue(6, write, counts, batch=1)
        for _ in range(6):
            assert queue.put(HIT)
        task = asyncio.create_task(queue.run())
        while counts.written < 6:  # not close(): a closing queue no longer pauses
            await asyncio.sleep(0.01)
        await queue.close(5)
        await task
        return starts, counts

    starts, counts = asyncio.run(scenario())
    assert counts.written == 6 and counts.dropped == 0
    assert [left for _, left in starts] == [5, 4, 3, 2, 1, 0]
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(starts)]
    # After the batches that left 5 and 4 queued (more than half of 6): write, then pause.
    assert all(gap >= 2 * write_seconds * 0.95 for gap in gaps[:2]), gaps
    # From 3 queued on: no pause (a generous margin for a loaded machine).
    assert all(gap < 2 * write_seconds * 0.95 for gap in gaps[2:]), gaps


def test_closing_ends_a_flood_pause_at_once() -> None:
    async def scenario() -> tuple[float, list[float], int, Counts]:
        counts = Counts()
        written_at: list[float] = []

        async def write(batch: Sequence[RawHit]) -> Counter[str]:
            await asyncio.sleep(0 if written_at else 0.3)  # the first batch is slow
            written_at.append(time.monotonic())
            return Counter(human=len(batch))

        queue = HitQueue(4, write, counts, batch=1)
        for _ in range(4):
            assert queue.put(HIT)
        task = asyncio.create_task(queue.run())
        while not written_at:  # 3 left of 4: a pause of 0.3 s begins
            await asyncio.sleep(0.01)
        closing = time.monotonic()
        left = await queue.close(5)
        await task
        return closing, written_at, left, counts

    closing, written_at, left, counts = asyncio.run(scenario())
    assert left == 0 and counts.written == 4 and counts.dropped == 0
    assert written_at[-1] - closing < 0.2  # the rest went at once, not after the pause
