"""The public tracking endpoint: the open pixel and the click redirect, over aiohttp.

Owns the HTTP side and the hit queue; knows nothing of the store. A token is checked
with ``Signer.verify`` before anything else, so a forged or damaged one costs an HMAC
and never a database read. The pixel always answers 200 with the same GIF (a mail
client shows a broken image otherwise); a click answers 302 to the destination the
store holds for that token, or 404 without ``Location``: the URL never names where to
go, so nothing is ever redirected that syncd did not rewrite itself.

The response never waits on the store. A hit worth recording goes into a bounded queue
(past ``queue_size`` it is counted as dropped, never the reverse), and ``HitQueue.run``
hands it to the ``write`` hook in batches. HEAD requests and browser prefetches are
answered and not recorded, nor is anything past the per-IP rate limit. Hooks take plain
data: ``links(message_id)`` gives its destinations, ``write(batch)`` stores hits and
says how many got each verdict.

``links(message_id)`` gives all of a message's destinations at once (by index), so one
read serves every link of a message; they are cached for a minute.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from aiohttp import web

from syncd.hosts import IpRules
from syncd.outbound.tokens import Signer, Verified

log = logging.getLogger("syncd.tracking")

# The smallest transparent GIF (43 bytes): 1x1, one transparent colour.
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")

# What every answer carries: nothing here may be cached by a proxy or a mail client's
# image cache (a cached pixel is a lost open), or indexed.
NO_CACHE = {
    "Cache-Control": "no-store, private",
    "Pragma": "no-cache",
    "X-Robots-Tag": "noindex",
}
# The destination should not learn the token URL the reader came from.
REDIRECT_HEADERS = NO_CACHE | {"Referrer-Policy": "no-referrer"}

BATCH = 256
LINK_CACHE_SIZE = 20_000
# Short enough that an erased message stops redirecting soon; long enough that a
# scanner's burst or a newsletter's rush is served from memory.
LINK_CACHE_SECONDS = 60.0
# Per-IP counters are kept for the current minute only; past this many addresses in
# one minute the oldest are forgotten (a flood of spoofed sources cannot grow memory).
RATE_TABLE_SIZE = 100_000
WRITE_RETRY_SECONDS = 1.0
# Verified tokens and client addresses remembered (each entry well under 1 KB).
MEMO_SIZE = 50_000

Kind = Literal["open", "click"]


@dataclass(frozen=True, slots=True)
class RawHit:
    """One request worth recording, as the endpoint saw it; the writer judges it."""

    kind: Kind
    message_id: int
    link_index: int | None
    at: datetime
    ip: str  # the client's full address (IpRules.client_ip); the writer truncates it
    user_agent: str


@dataclass
class Counts:
    """What the endpoint did since it started (for ``status`` and ``/metrics``)."""

    queued: int = 0  # hits put in the queue
    dropped: int = 0  # hits refused because the queue was full
    rate_limited: int = 0  # requests over the per-IP limit: answered, not recorded
    not_recorded: int = 0  # HEAD and prefetch requests: answered, not recorded
    bad_tokens: int = 0  # tokens that failed the check (pixel 200 anyway, click 404)
    unknown_links: int = 0  # genuine click tokens the store has no destination for
    written: int = 0  # hits handed to the store
    write_failures: int = 0  # batches the store refused (retried)
    # verdicts as judged on arrival (a re-judge may change them since; the store's
    # counts are the ones to show), plus "unknown" for hits of untracked messages
    verdicts: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "queued": self.queued,
            "dropped": self.dropped,
            "rate_limited": self.rate_limited,
            "not_recorded": self.not_recorded,
            "bad_tokens": self.bad_tokens,
            "unknown_links": self.unknown_links,
            "written": self.written,
            "write_failures": self.write_failures,
            "judged": dict(sorted(self.verdicts.items())),
        }


Write = Callable[[Sequence[RawHit]], Awaitable[Mapping[str, int]]]
Links = Callable[[int], Awaitable[Sequence[str] | None]]


class HitQueue:
    """A bounded queue of hits and the task that drains it into ``write`` in batches."""

    def __init__(self, size: int, write: Write, counts: Counts, batch: int = BATCH) -> None:
        self.size = size
        self._write = write
        self._counts = counts
        self._batch = batch
        self._items: deque[RawHit] = deque()
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = asyncio.Event()  # also ends a flood pause at once

    def __len__(self) -> int:
        return len(self._items)

    def put(self, hit: RawHit) -> bool:
        """Queue ``hit``; False (and counted as dropped) if the queue is full."""
        if len(self._items) >= self.size:
            self._counts.dropped += 1
            return False
        self._items.append(hit)
        self._counts.queued += 1
        self._idle.clear()
        self._ready.set()
        return True

    async def run(self) -> None:
        """Drain the queue until cancelled or ``close``d and empty."""
        while True:
            if not self._items:
                self._idle.set()
                if self._closing.is_set():
                    return
                self._ready.clear()
                await self._ready.wait()
                continue
            count = min(self._batch, len(self._items))
            batch = [self._items.popleft() for _ in range(count)]
            started = time.monotonic()
            await self._store(batch)
            # A queue past half its bound is a flood the writer cannot keep up with. It
            # shares the interpreter with the answers, so it then takes every other slice
            # of time and the answers stay quick (what comes past the bound is dropped
            # and counted either way). Below that it writes flat out, so a load it can
            # keep up with loses nothing. A batch slowed by a locked store counts as a
            # second at most.
            if len(self._items) > self.size // 2 and not self._closing.is_set():
                pause = min(time.monotonic() - started, 1.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), pause)

    async def _store(self, batch: list[RawHit]) -> None:
        # A failing store keeps the batch and retries; meanwhile the queue fills and
        # new hits are dropped (and counted), so memory stays bounded.
        while True:
            try:
                verdicts = await self._write(batch)
            except Exception:
                self._counts.write_failures += 1
                log.exception("storing %d tracking hit(s) failed; retrying", len(batch))
                if self._closing.is_set():
                    self._counts.dropped += len(batch)
                    return
                await asyncio.sleep(WRITE_RETRY_SECONDS)
                continue
            self._counts.written += len(batch)
            self._counts.verdicts.update(verdicts)
            return

    async def close(self, timeout: float) -> int:
        """Stop taking the wait: drain what is queued within ``timeout`` seconds; the
        number of hits left unstored (counted as dropped)."""
        self._closing.set()
        self._ready.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        left = len(self._items)
        self._counts.dropped += left
        self._items.clear()
        return left


class RateLimit:
    """At most ``per_minute`` recorded requests per client address per clock minute."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._minute = -1
        self._seen: dict[str, int] = {}

    def allow(self, ip: str) -> bool:
        minute = int(self._clock() // 60)
        if minute != self._minute:
            self._minute, self._seen = minute, {}
        count = self._seen.get(ip, 0) + 1
        if count == 1 and len(self._seen) >= RATE_TABLE_SIZE:
            self._seen.pop(next(iter(self._seen)))
        self._seen[ip] = count
        return count <= self.per_minute


class LinkCache:
    """Recently read link destinations (an LRU with an age limit)."""

    def __init__(
        self,
        size: int = LINK_CACHE_SIZE,
        seconds: float = LINK_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._size, self._seconds, self._clock = size, seconds, clock
        self._items: OrderedDict[int, tuple[float, Sequence[str]]] = OrderedDict()

    def get(self, key: int) -> Sequence[str] | None:
        item = self._items.get(key)
        if item is None:
            return None
        if self._clock() - item[0] > self._seconds:
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return item[1]

    def put(self, key: int, urls: Sequence[str]) -> None:
        self._items[key] = (self._clock(), urls)
        self._items.move_to_end(key)
        if len(self._items) > self._size:
            self._items.popitem(last=False)


def _prefetch(request: web.Request) -> bool:
    # Chrome sends Sec-Purpose: prefetch (or "prefetch;prerender"), older ones Purpose;
    # Firefox X-Moz. A prefetch is the browser guessing, not a person clicking.
    for name in ("Purpose", "Sec-Purpose", "X-Moz", "X-Purpose"):
        value = request.headers.get(name)
        if value and "prefetch" in value.lower():
            return True
    return False


class TrackingEndpoint:
    """The aiohttp application: ``/o/{token}.gif`` and ``/c/{token}``."""

    def __init__(
        self,
        signer: Signer,
        rules: IpRules,
        *,
        links: Links,
        queue: HitQueue,
        counts: Counts,
        rate_per_minute: int,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.signer = signer
        self.rules = rules
        self.rate = RateLimit(rate_per_minute)
        self._links = links
        self._queue = queue
        self._counts = counts
        self._now = now
        self._cache = LinkCache()
        # Genuine tokens and client addresses come back again and again (a newsletter's
        # pixel, a reader behind one proxy): both answers are pure functions of their
        # input, so they are kept. Forged tokens are not cached: a flood of them cannot
        # fill memory, and each costs one HMAC as before.
        self._verified: OrderedDict[str, Verified] = OrderedDict()
        self._client_ips: OrderedDict[tuple[str, str | None], str] = OrderedDict()

    def verify(self, token: str) -> Verified | None:
        verified = self._verified.get(token)
        if verified is None:
            verified = self.signer.verify(token)
            if verified is not None:
                _remember(self._verified, token, verified)
        return verified

    def client_ip(self, peer: str, forwarded: str | None) -> str:
        key = (peer, forwarded)
        ip = self._client_ips.get(key)
        if ip is None:
            ip = self.rules.client_ip(peer, forwarded)
            _remember(self._client_ips, key, ip)
        return ip

    def set_rules(self, rules: IpRules) -> None:
        self.rules = rules
        self._client_ips.clear()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024)
        # add_get also answers HEAD (allow_head); the handlers tell them apart.
        app.router.add_get("/o/{name}", self.pixel)
        app.router.add_get("/c/{token}", self.click)
        return app

    def _record(self, request: web.Request, kind: Kind, message_id: int, index: int | None) -> None:
        if request.method != "GET" or _prefetch(request):
            self._counts.not_recorded += 1
            return
        peer = request.transport.get_extra_info("peername") if request.transport else None
        peer_ip = str(peer[0]) if peer else ""
        forwarded = request.headers.getall("X-Forwarded-For", [])
        ip = self.client_ip(peer_ip, ", ".join(forwarded) if forwarded else None)
        if not self.rate.allow(ip):
            self._counts.rate_limited += 1
            return
        user_agent = request.headers.get("User-Agent", "")[:512]
        self._queue.put(RawHit(kind, message_id, index, self._now(), ip, user_agent))

    async def pixel(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if not name.endswith(".gif"):
            return _not_found()
        verified = self.verify(name[: -len(".gif")])
        if verified is None or not verified.is_open:
            self._counts.bad_tokens += 1
        else:
            self._record(request, "open", verified.message_id, None)
        return web.Response(body=PIXEL_GIF, content_type="image/gif", headers=NO_CACHE)

    async def click(self, request: web.Request) -> web.StreamResponse:
        verified = self.verify(request.match_info["token"])
        if verified is None or verified.link_index is None:
            self._counts.bad_tokens += 1
            return _not_found()
        urls = self._cache.get(verified.message_id)
        if urls is None:
            try:
                urls = await self._links(verified.message_id)
            except Exception:
                # The store cannot be read just now: the reader may try again; never a
                # redirect to anywhere but the stored destination.
                log.exception("reading a tracked link failed")
                return web.Response(status=503, text="try again\n", headers=NO_CACHE)
            if urls is not None:
                self._cache.put(verified.message_id, urls)
        if urls is None or verified.link_index >= len(urls):
            self._counts.unknown_links += 1
            return _not_found()
        url = urls[verified.link_index]
        self._record(request, "click", verified.message_id, verified.link_index)
        return web.Response(status=302, headers=REDIRECT_HEADERS | {"Location": _location(url)})


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    cache[key] = value
    if len(cache) > MEMO_SIZE:
        cache.popitem(last=False)


def _location(url: str) -> str:
    """``url`` safe for a header: spaces, controls and non-ASCII percent-encoded (UTF-8);
    what is already encoded, and every reserved character, is kept as stored."""
    return quote(url, safe="!#$%&'()*+,/:;=?@[]~-._")


def _not_found() -> web.Response:
    return web.Response(status=404, text="not found\n", headers=NO_CACHE)
