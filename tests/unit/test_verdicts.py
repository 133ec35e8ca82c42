"""Tables for the verdict on each open and click: one row per rule, each threshold's edge."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import pytest

from syncd.hosts import IpRules
from syncd.outbound.verdicts import (
    DEFAULT_SCANNER_RANGES,
    Hit,
    JudgedHit,
    MessageContext,
    Thresholds,
    Verdict,
    _Clicks,
    judge,
    rejudge,
)

SENT = datetime(2025, 11, 3, 9, 0, tzinfo=UTC)
RULES = IpRules.parse(blocked_ips=["192.0.2.0/24"], scanner_ranges=DEFAULT_SCANNER_RANGES)
T = Thresholds()
SENDER = frozenset({"198.51.100.20"})
READER = "203.0.113.5"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
HEADLESS = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36"
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
GMAIL_ARRIVAL = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/42.0.2311.135 Safari/537.36 Edge/12.246 Mozilla/5.0"


def at(seconds: float) -> datetime:
    return SENT + timedelta(seconds=seconds)


def opened(seconds: float, ip: str = READER, ua: str = FIREFOX) -> Hit:
    return Hit("open", at(seconds), ip, ua)


def clicked(seconds: float, link: int = 0, ip: str = READER, ua: str = FIREFOX) -> Hit:
    return Hit("click", at(seconds), ip, ua, link)


HUMAN_OPEN = JudgedHit(opened(60), Verdict("human", False, "a person opened"))


@pytest.mark.parametrize(
    ("hit", "earlier", "verdict", "inferred"),
    [
        # human
        (opened(60), [], "human", False),
        (opened(10.001), [], "human", False),  # just past prefetch_seconds
        (clicked(120), [HUMAN_OPEN], "human", False),
        (opened(60, ua=HEADLESS), [], "human", False),
        # blocked, also through the mapped spelling and above every other rule
        (opened(60, ip="192.0.2.9"), [], "blocked", False),
        (opened(60, ip="::ffff:192.0.2.9"), [], "blocked", False),
        (opened(1, ip="192.0.2.9", ua="Mozilla/5.0"), [], "blocked", False),
        # self: the sender reading their Sent copy
        (opened(60, ip="198.51.100.20"), [], "self", False),
        (opened(1, ip="::ffff:198.51.100.20", ua=""), [], "self", False),
        (clicked(120, ip="198.51.100.20"), [], "self", False),
        (opened(60, ip="198.51.100.0/24"), [], "self", False),  # a stored truncated hit
        (opened(60, ip="198.51.100.21"), [], "human", False),
        # machine
        (opened(3600, ua="Mozilla/5.0"), [], "machine", False),  # Apple MPP
        (opened(3600, ua=" Mozilla/5.0 "), [], "machine", False),
        (opened(3600, ua="Mozilla/5.0 (Macintosh)"), [], "human", False),  # only the exact string
        (opened(3600, ua=""), [], "machine", False),
        (opened(3600, ua="   "), [], "machine", False),
        (opened(3600, ua="curl/8.5.0"), [], "machine", False),
        (opened(3600, ua="python-requests/2.32"), [], "machine", False),
        (opened(3600, ua="Mozilla/5.0 (compatible; Googlebot/2.1)"), [], "machine", False),
        (opened(3600, ua=GMAIL_ARRIVAL), [], "machine", False),
        (clicked(3600, ua="Mozilla/5.0"), [HUMAN_OPEN], "machine", False),
        # prefetch: opens at or before prefetch_seconds
        (opened(0), [], "prefetch", False),
        (opened(-2), [], "prefetch", False),  # fetched before the 250 reached us
        (opened(10), [], "prefetch", False),  # the edge is a prefetch
        # GoogleImageProxy: early is Gmail's arrival fetch, later a person
        (opened(4, ua=GMAIL_PROXY), [], "prefetch", False),
        (opened(300, ua=GMAIL_PROXY), [], "human", False),
        # scanner: known ranges, clicks only (Outlook.com proxies images for people)
        (clicked(600, ip="40.107.1.2"), [HUMAN_OPEN], "scanner", False),
        (clicked(600, ip="2a01:111:f400:7e00::5"), [HUMAN_OPEN], "scanner", False),
        (clicked(600, ip="148.163.140.1"), [HUMAN_OPEN], "scanner", False),
        (clicked(600, ip="205.139.110.9"), [HUMAN_OPEN], "scanner", False),
        (opened(600, ip="40.107.1.2"), [], "human", False),
        # scanner: a click before any human open, soon after delivery
        (clicked(5), [], "scanner", False),
        (clicked(10), [], "scanner", False),  # the edge
        (clicked(10.001), [], "human", True),
        (clicked(5), [HUMAN_OPEN], "human", False),  # a person who opened at once
        # inferred open: a human click with no human open before it
        (clicked(600), [], "human", True),
        (clicked(600), [JudgedHit(opened(1), Verdict("prefetch", False, ""))], "human", True),
        (
            clicked(600),
            [JudgedHit(opened(60, ua="Mozilla/5.0"), Verdict("machine", False, ""))],
            "human",
            True,
        ),
        (
            clicked(700, 1),
            [JudgedHit(clicked(600), Verdict("human", True, ""))],
            "human",
            False,
        ),  # inferred once
    ],
)
def test_rule_table(hit: Hit, earlier: list[JudgedHit], verdict: str, inferred: bool) -> None:
    got = judge(hit, MessageContext(SENT, SENDER, earlier), RULES, T)
    assert (got.verdict, got.inferred_open) == (verdict, inferred), got.reason
    assert got.reason


def _judge_in_order(hits: list[Hit]) -> list[Verdict]:
    earlier: list[JudgedHit] = []
    for hit in hits:
        earlier.append(
            JudgedHit(hit, judge(hit, MessageContext(SENT, SENDER, list(earlier)), RULES, T))
        )
    return [j.verdict for j in earlier]


@pytest.mark.parametrize(
    ("offsets", "links", "last"),
    [
        ((100, 100.5, 101), (0, 1, 2), "scanner"),  # three links within 2 s
        ((100, 101, 102), (0, 1, 2), "scanner"),  # the window's edge
        ((100, 101, 102.01), (0, 1, 2), "human"),  # just spread past it
        ((100, 130, 160), (0, 1, 2), "human"),  # a reader going through the links
        ((100, 100.5, 101), (0, 0, 0), "human"),  # one link clicked three times: not three links
        ((100, 100.2, 100.4, 100.6), (0, 0, 1, 1), "human"),  # two distinct links
    ],
)
def test_scanner_burst(offsets: tuple[float, ...], links: tuple[int, ...], last: str) -> None:
    hits = [opened(50)] + [clicked(s, n) for s, n in zip(offsets, links, strict=True)]
    assert _judge_in_order(hits)[-1].verdict == last


def test_burst_threshold_is_configurable() -> None:
    t = Thresholds(scanner_burst=4)
    ctx = MessageContext(
        SENT,
        SENDER,
        [HUMAN_OPEN]
        + [JudgedHit(clicked(100 + i * 0.1, i), Verdict("human", False, "")) for i in range(2)],
    )
    assert judge(clicked(100.5, 2), ctx, RULES, t).verdict == "human"


def test_rejudge_marks_the_whole_burst_and_keeps_the_rest() -> None:
    hits = [
        opened(3),  # Gmail on arrival
        opened(300, ua=GMAIL_PROXY),  # the person
        clicked(320, 0),
        clicked(320.4, 1),
        clicked(320.9, 2),
        clicked(900, 1),  # the person again, much later
        opened(1000, ip="198.51.100.20"),  # the sender
    ]
    online = _judge_in_order(hits)
    assert [v.verdict for v in online] == [
        "prefetch",
        "human",
        "human",
        "human",
        "scanner",
        "human",
        "self",
    ]
    redone = rejudge(reversed(hits), SENT, SENDER, RULES, T)  # any order in, time order out
    assert [j.hit for j in redone] == hits
    assert [j.verdict.verdict for j in redone] == [
        "prefetch",
        "human",
        "scanner",
        "scanner",
        "scanner",
        "human",
        "self",
    ]


def test_rejudge_infers_one_open_from_clicks_alone() -> None:
    hits = [clicked(5, 0), clicked(600, 0), clicked(700, 1)]
    redone = rejudge(hits, SENT, SENDER, RULES, T)
    assert [(j.verdict.verdict, j.verdict.inferred_open) for j in redone] == [
        ("scanner", False),
        ("human", True),
        ("human", False),
    ]


def test_rejudge_with_new_rules_changes_the_verdicts() -> None:
    hits = [opened(60, ip="203.0.113.0/24")]  # stored truncated
    assert rejudge(hits, SENT, SENDER, RULES, T)[0].verdict.verdict == "human"
    stricter = IpRules.parse(blocked_ips=["203.0.113.0/24"])
    assert rejudge(hits, SENT, SENDER, stricter, T)[0].verdict.verdict == "blocked"


def test_reasons_say_why() -> None:
    ctx = MessageContext(SENT, SENDER)
    assert (
        "Apple Mail Privacy Protection" in judge(opened(60, ua="Mozilla/5.0"), ctx, RULES, T).reason
    )
    assert "blocked_ips" in judge(opened(60, ip="192.0.2.1"), ctx, RULES, T).reason


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scanner_burst": 1},
        {"prefetch_seconds": -1},
        {"scanner_seconds": -1},
        {"scanner_burst_seconds": -0.5},
        {"self_seconds": -1},
    ],
)
def test_thresholds_refuse_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Thresholds(**kwargs)  # type: ignore[arg-type]


def _burst_links_by_every_span(hit: Hit, others: list[Hit], window: float) -> int:
    """The rule as first written: every span starting at a click, over all clicks."""
    clicks = sorted(
        (h for h in (*others, hit) if h.kind == "click" and h.link_index is not None),
        key=lambda h: h.at,
    )
    best = 0
    for start in clicks:
        if not 0 <= (hit.at - start.at).total_seconds() <= window:
            continue
        end = start.at + timedelta(seconds=window)
        best = max(best, len({h.link_index for h in clicks if start.at <= h.at <= end}))
    return best


@pytest.mark.parametrize("seed", range(40))
def test_burst_count_reads_only_the_window_and_agrees_with_every_span(seed: int) -> None:
    rng = random.Random(seed)
    # 1 to 7 links, so a span may or may not hold every link the message has.
    links = (*range(1 + seed % 7), None)
    # Whole and half seconds, so clicks share instants and sit on the window's edges.
    hits = [
        Hit(
            rng.choice(("click", "click", "open")),
            at(rng.randrange(0, 40) / 2),
            READER,
            FIREFOX,
            rng.choice(links),
        )
        for _ in range(rng.randrange(1, 30))
    ]
    for window in (0.5, 2.0, 3.5):
        for i, hit in enumerate(hits):
            others = hits[:i] + hits[i + 1 :]
            found = _Clicks.of([*others, hit]).burst_links(hit, window)
            assert found == _burst_links_by_every_span(hit, others, window), (seed, window, i)


def test_a_scanner_on_a_long_newsletter_is_rejudged_without_a_scan_per_span() -> None:
    """A scanner following 200 links twice within 2 s: every click is `scanner`, and the
    re-judge no longer counts links span by span for each click (574 ms here before,
    10 ms after); the bound leaves a slow machine twenty times that."""
    hits = [Hit("click", at(300 + i * 0.005), READER, FIREFOX, i % 200) for i in range(400)]
    started = time.perf_counter()
    judged = rejudge(hits, SENT, SENDER, RULES, T)
    elapsed = time.perf_counter() - started
    assert {j.verdict.verdict for j in judged} == {"scanner"}
    assert judged[0].verdict.reason == "200 links clicked within 2 s"
    assert elapsed < 0.2
