"""Tables for the BCC endpoint's pure decisions: paths, headers, senders, alignment, retries."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from syncd.crm.team import InboxRule, Team
from syncd.mail.parse import HeaderTooLarge, parse
from syncd.outbound.relay import Delivery, backoff, plan
from syncd.sources.bcc_limits import AuthThrottle, Limits, Lock
from syncd.sources.senders import (
    MAX_RECIPIENTS,
    RELAY_DENIED,
    TOO_MANY_RCPTS,
    SenderPolicy,
    aligned,
    auth_verdict,
    check_from,
    dkim_verdict,
    plain_path,
    recipient_reply,
    spf_verdict,
)

NOW = datetime(2025, 11, 3, tzinfo=UTC)
ALLOWED = frozenset({"log@crm.example.com"})
DIRECTORY = Team.build(
    [("ada@example.com", ["a.lovelace@example.com"]), ("bob@example.com", [])],
    [InboxRule("support", "support@example.com", "team")],
)


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("TO:<log@crm.example.com>", "log@crm.example.com"),
        ("to:<Log@CRM.example.com>", "Log@CRM.example.com"),
        ("TO: <log@crm.example.com> NOTIFY=NEVER", "log@crm.example.com"),
        ("TO:log@crm.example.com", "log@crm.example.com"),
        ("TO:<first.last+tag@crm.example.com>", "first.last+tag@crm.example.com"),
        ("TO:<@relay.example:log@crm.example.com>", None),
        ("TO:<@a.example,@b.example:log@crm.example.com>", None),
        ("TO:<log%other.example@crm.example.com>", None),
        ('TO:<"log"@crm.example.com>', None),
        ('TO:<"log@crm.example.com"@evil.example>', None),
        ("TO:<log(comment)@crm.example.com>", None),
        ("TO:<log@[127.0.0.1]>", None),
        ("TO:<log!evil.example@crm.example.com>", None),
        ("TO:<log@crm.example.com@evil.example>", None),
        ("TO:<log@crm.example.com.>", None),
        ("TO:<.log@crm.example.com>", None),
        ("TO:<log..x@crm.example.com>", None),
        ("TO:<log@crm.example.com", None),
        ("TO:log@crm.example.com>", None),
        ("TO:<>", None),
        ("TO:<log@localhost>", None),
        ("TO:<log\x00@crm.example.com>", None),
        ("FROM:<log@crm.example.com>", None),
        ("", None),
        (None, None),
    ],
)
def test_plain_path(arg: str | None, expected: str | None) -> None:
    assert plain_path(arg, "TO:") == expected


@pytest.mark.parametrize(
    ("arg", "accepted", "reply"),
    [
        ("TO:<log@crm.example.com>", 0, None),
        ("TO:<LOG@Crm.Example.COM>", 0, None),
        ("TO:<log@crm.example.com>", MAX_RECIPIENTS - 1, None),
        ("TO:<log@crm.example.com>", MAX_RECIPIENTS, TOO_MANY_RCPTS),
        ("TO:<bob@other.example>", 0, RELAY_DENIED),
        ("TO:<logs@crm.example.com>", 0, RELAY_DENIED),
        ("TO:<log@example.com>", 0, RELAY_DENIED),
        ("TO:<log%x.example@crm.example.com>", 0, RELAY_DENIED),
        ('TO:<"log"@crm.example.com>', 0, RELAY_DENIED),
    ],
)
def test_recipient_reply(arg: str, accepted: int, reply: str | None) -> None:
    assert recipient_reply(arg, ALLOWED, accepted) == reply


def test_relay_reply_is_550_571() -> None:
    assert RELAY_DENIED.startswith("550 5.7.1 ")
    assert TOO_MANY_RCPTS.startswith("452 4.5.3 ")


# Each From form an adversarial review tried, and more: the sender check either refuses it
# with 550 5.7.1, or accepts it as exactly the address the parser logs.
TAIL = b"To: bob@victim.example\r\nMessage-ID: <f1@x>\r\nSubject: We cancel\r\n\r\nforged\r\n"
FROM_FORMS = [
    (b"From: ada@example.com\r\n", "ada@example.com"),
    (b"From: A <a.lovelace@example.com>\r\n", "a.lovelace@example.com"),
    (b"From: Ada <Ada@Example.COM>\r\n", "ada@example.com"),
    (b"FROM: ada@example.com\r\n", "ada@example.com"),
    (b"From: support@example.com\r\n", "support@example.com"),
    (b"From: =?utf-8?q?Ad=C3=A1?= <ada@example.com>\r\n", "ada@example.com"),
    (b"From: =?utf-8?q?ceo=40customer.example?= <ada@example.com>\r\n", "ada@example.com"),
    (b'From: "ceo@customer.example" <ada@example.com>\r\n', "ada@example.com"),
    (b'From: "Lovelace, Ada" <ada@example.com>\r\n', "ada@example.com"),
    (b"From: ada@example.com (ceo@customer.example)\r\n", "ada@example.com"),
    (b"From:\r\n ada@example.com\r\n", "ada@example.com"),
    (b"From: Ada \xff\xfe <ada@example.com>\r\n", "ada@example.com"),
    (
        b"From ceo@customer.example Mon Nov  3 10:00:00 2025\r\nFrom: ada@example.com\r\n",
        "ada@example.com",
    ),
    (b"From: ada@example.com\n", "ada@example.com"),
    (b"From: ada@example.com, ada@example.com\r\n", "ada@example.com"),
    # refused: a space before a colon, here or on any field
    (b"From : ceo@customer.example\r\nFrom: ada@example.com\r\n", "space before its colon"),
    (b"From :x\r\nFrom: ada@example.com\r\n", "space before its colon"),
    (
        b"Subject: x\r\nFrom : ceo@customer.example\r\nFrom: ada@example.com\r\n",
        "space before its colon",
    ),
    (b"From: ada@example.com\r\nFrom\t: ceo@customer.example\r\n", "space before its colon"),
    (b"From: ada@example.com\r\nSubject : x\r\n", "space before its colon"),
    # refused: a From that does not read whole as one address
    (b"From: <ada@example.com\r\n", "cannot be read"),
    (b"From: <ada@example.com>Dana\r\n", "cannot be read"),
    (b"From: Ada <ada@example.com> <ceo@customer.example>\r\n", "cannot be read"),
    (b"From: ada@example.com ceo@customer.example\r\n", "cannot be read"),
    (b"From: Ada <ada@example.com>\r\n\tceo@customer.example\r\n", "cannot be read"),
    (b'From: "ada@example.com"@evil.example\r\n', "cannot be read"),
    (b"From: ada@example.com, bogus\r\n", "cannot be read"),
    (b"From: undisclosed\r\n", "cannot be read"),
    (b"From: <>\r\n", "cannot be read"),
    (b"From: ceo@customer.example\rFrom: ada@example.com\r\n", "bare CR or NUL"),
    (b"From: ada@example.com\r\nSubject: a\x00b\r\n", "bare CR or NUL"),
    (b"From: ceo@customer.example: ada@example.com;\r\n", "group syntax"),
    (b"From: Sales: ada@example.com;\r\n", "group syntax"),
    # refused: no From, several From fields or senders
    (b"Sender: ada@example.com\r\n", "no From header"),
    (b"From: ada@example.com\r\nFrom: ceo@customer.example\r\n", "several From headers"),
    (b"From: ada@example.com\r\nfrom: ada@example.com\r\n", "several From headers"),
    (b"From: ada@example.com, eve@evil.example\r\n", "several senders"),
    # refused: a line that is no field, before or after the From
    (b"Subject x\r\nFrom: ada@example.com\r\n", "not a field"),
    (b"From: ada@example.com\r\nnot a header\r\nFrom: ceo@customer.example\r\n", "not a field"),
    (b"From: ada@example.com\r\n:ceo@customer.example\r\n", "not a field"),
    # not the team's
    (b"From: ceo@customer.example\r\n", "not a team member"),
    (b"From: ada@example.com.evil.example\r\n", "not a team member"),
]


@pytest.mark.parametrize(("head", "expected"), FROM_FORMS)
def test_the_checked_from_is_the_logged_from(head: bytes, expected: str) -> None:
    raw = head + TAIL
    decision = check_from(raw, DIRECTORY)
    if "@" in expected:
        assert decision.accepted, decision.reply
        assert decision.sender == expected
        assert parse(raw, received_at=NOW).from_.email == expected
    else:
        assert decision.reply is not None and decision.reply.startswith("550 5.7.1 ")
        assert expected in decision.reply


def test_a_header_block_over_the_parsers_limit_is_left_to_the_endpoint() -> None:
    raw = b"From: ada@example.com\r\nX-Pad: " + b"a" * (100 * 1024) + b"\r\n\r\nbody"
    with pytest.raises(HeaderTooLarge):
        check_from(raw, DIRECTORY)
    with pytest.raises(HeaderTooLarge):
        parse(raw, received_at=NOW)


@pytest.mark.parametrize(
    ("member", "sender", "code"),
    [
        ("ada@example.com", "ada@example.com", None),
        ("ada@example.com", "a.lovelace@example.com", None),
        ("ada@example.com", "support@example.com", None),
        ("ada@example.com", "bob@example.com", "550"),
        (None, "ada@example.com", "530"),
    ],
)
def test_auth_verdict(member: str | None, sender: str, code: str | None) -> None:
    reply = auth_verdict(member, sender, DIRECTORY)
    assert (reply[:3] if reply else None) == code


@pytest.mark.parametrize(
    ("result", "code"),
    [
        ("pass", None),
        ("fail", "550"),
        ("softfail", "550"),
        ("neutral", "550"),
        ("none", "550"),
        ("permerror", "550"),
        ("temperror", "451"),
    ],
)
def test_spf_verdict(result: str, code: str | None) -> None:
    reply = spf_verdict(result, "192.0.2.1", "ada@example.com")
    assert (reply[:3] if reply else None) == code
    if reply and code == "550":
        assert "example.com" in reply and "192.0.2.1" in reply


@pytest.mark.parametrize(
    ("signer", "author", "ok"),
    [
        ("example.com", "example.com", True),
        ("mail.example.com", "example.com", True),
        ("example.com", "eu.example.com", True),
        ("EXAMPLE.com.", "example.com", True),
        ("example.co.uk", "shop.example.co.uk", True),
        ("other.co.uk", "example.co.uk", False),
        ("co.uk", "example.co.uk", False),
        ("example.net", "example.com", False),
        ("evil-example.com", "example.com", False),
    ],
)
def test_aligned(signer: str, author: str, ok: bool) -> None:
    assert aligned(signer, author) is ok


@pytest.mark.parametrize(
    ("domains", "temporary", "code"),
    [
        (["example.com"], False, None),
        (["mail.example.com"], False, None),
        (["other.example", "example.com"], False, None),
        (["other.example"], False, "550"),
        ([], False, "550"),
        ([], True, "451"),
    ],
)
def test_dkim_verdict(domains: list[str], temporary: bool, code: str | None) -> None:
    reply = dkim_verdict(domains, temporary, "ada@example.com")
    assert (reply[:3] if reply else None) == code


def test_policy_uses_injected_checks() -> None:
    spf_calls = []

    def fake_spf(ip: str, sender: str, helo: str) -> tuple[str, str]:
        spf_calls.append((ip, sender, helo))
        return ("pass" if ip == "192.0.2.1" else "fail"), ""

    policy = SenderPolicy("spf", DIRECTORY, spf_check=fake_spf)
    raw = b"From: ada@example.com\r\n\r\n"
    assert policy.check(raw, peer_ip="192.0.2.1", helo="h", member=None).accepted
    refused = policy.check(raw, peer_ip="198.51.100.1", helo="h", member=None)
    assert refused.reply and refused.reply.startswith("550 5.7.1 SPF")
    assert spf_calls == [("192.0.2.1", "ada@example.com", "h")] * 1 + [
        ("198.51.100.1", "ada@example.com", "h")
    ]
    # A sender outside the team never reaches DNS.
    policy.check(b"From: eve@evil.example\r\n", peer_ip="192.0.2.1", helo="", member=None)
    assert len(spf_calls) == 2


def test_directory_from_config_shapes() -> None:
    directory = Team.build(
        [("ada@example.com", ["a@example.com"])],
        [
            InboxRule("ada-gmail", "ada@gmail.example", "personal", "ada@example.com"),
            InboxRule("sales", "sales@x.example", "team"),
        ],
    )
    assert directory.owner_of("ada@gmail.example") == "ada@example.com"
    assert directory.owner_of("a@example.com") == "ada@example.com"
    assert directory.owner_of("sales@x.example") is None
    assert directory.is_sender("sales@x.example")
    assert directory.may_send_as("ada@example.com", "sales@x.example")
    assert not directory.is_sender("bob@example.com")


@pytest.mark.parametrize(
    ("attempt", "seconds"),
    [(0, 0), (1, 60), (2, 120), (3, 240), (6, 1920), (7, 3600), (50, 3600), (10**6, 3600)],
)
def test_backoff(attempt: int, seconds: float) -> None:
    assert backoff(attempt) == seconds


@pytest.mark.parametrize(
    ("delivery", "attempts", "age", "action", "remaining"),
    [
        (Delivery(delivered=["a@x"]), 0, 0, "sent", []),
        (Delivery(temporary={"a@x": "451"}), 0, 10, "retry", ["a@x"]),
        (Delivery(temporary={"a@x": "451"}), 3, 10, "retry", ["a@x"]),
        (Delivery(temporary={"a@x": "451"}), 3, 6 * 86400, "give_up", ["a@x"]),
        (Delivery(permanent={"a@x": "550"}), 0, 10, "give_up", ["a@x"]),
        (
            Delivery(delivered=["b@x"], temporary={"a@x": "451"}, permanent={"c@x": "550"}),
            0,
            10,
            "retry",
            ["a@x"],
        ),
    ],
)
def test_plan(
    delivery: Delivery, attempts: int, age: float, action: str, remaining: list[str]
) -> None:
    decision = plan(delivery, attempts=attempts, created_at=1000.0, now=1000.0 + age)
    assert decision.action == action
    assert decision.remaining == remaining
    if action == "retry":
        assert decision.next_attempt_at == 1000.0 + age + backoff(attempts + 1)
    if action == "give_up":
        assert decision.reason


def steady(rate: int, seconds: int) -> list[tuple[float, int]]:
    return [(float(t), rate) for t in range(1, seconds + 1)]


@pytest.mark.parametrize(
    ("reads", "at", "too_slow"),
    [
        # (seconds since DATA began, bytes) of each read; 120 s of grace, then 500 B/s
        ([], 119.0, False),
        ([], 121.0, True),
        ([(100.0, 1000)], 121.0, False),  # 1,000 bytes buy 2 s
        ([(100.0, 1000)], 123.0, True),
        ([(1.0, 1000)], 122.0, True),  # ... but bank at most 120 s ahead
        ([(1.0, 50 * 1024 * 1024)], 200.0, True),  # a burst cannot buy a long silence
        ([(1.0, 50 * 1024 * 1024)], 120.0, False),
        (steady(500, 3600), 3600.5, False),  # an hour at 500 B/s
        (steady(400, 700), 590.0, False),
        (steady(400, 700), 610.0, True),  # 400 B/s falls behind at about 600 s
    ],
)
def test_minimum_data_rate(reads: list[tuple[float, int]], at: float, too_slow: bool) -> None:
    limits = Limits()
    due = 1000.0 + limits.data_base_s
    for when, received in (r for r in reads if r[0] < at):
        due = limits.data_due(due, 1000.0 + when, received)
    assert (1000.0 + at >= due) is too_slow


THROTTLE = Limits(
    auth_free_failures=2,
    auth_delay_step=1.0,
    auth_max_delay=4.0,
    auth_ip_lock_after=5,
    auth_ip_lock_s=300.0,
    auth_account_lock_after=3,
    auth_account_lock_s=60.0,
    auth_window_s=900.0,
)


@pytest.mark.parametrize(
    ("failures", "at", "delay"),
    [
        ([], 0, 0.0),
        ([0, 1], 2, 1.0),  # past the free failures the waiting begins
        ([0, 1, 2], 3, 2.0),
        ([0, 1, 2, 3], 4, 4.0),
        ([0, 1, 2, 3], 4.5, 4.0),
        ([0, 1, 2, 3], 904, 0.0),  # a quiet window forgets
    ],
)
def test_auth_delay_grows_with_failures(failures: list[float], at: float, delay: float) -> None:
    throttle = AuthThrottle(THROTTLE)
    for n, when in enumerate(failures):
        throttle.failed("192.0.2.1", f"user{n}@example.com", when)  # no account lock
    assert throttle.delay("192.0.2.1", at) == delay


@pytest.mark.parametrize(
    ("failures", "known", "ip", "account", "at", "refusal"),
    [
        # (ip, account) of each failure at t = 0, 1, 2, ...; a known IP logged in before
        ([("192.0.2.1", f"u{n}") for n in range(4)], None, "192.0.2.1", "u9", 10, None),
        ([("192.0.2.1", f"u{n}") for n in range(5)], None, "192.0.2.1", "u9", 10, "ip"),
        ([("192.0.2.1", f"u{n}") for n in range(5)], None, "192.0.2.2", "u9", 10, None),
        ([("192.0.2.1", f"u{n}") for n in range(5)], None, "192.0.2.1", "u9", 305, None),
        ([("192.0.2.1", f"u{n}") for n in range(5)], None, "192.0.2.1", None, 10, "ip"),
        # one IPv6 host is its /64
        ([(f"2001:db8::{n}", f"u{n}") for n in range(5)], None, "2001:db8::ff", "u9", 10, "ip"),
        ([(f"2001:db8::{n}", f"u{n}") for n in range(5)], None, "2001:db8:1::1", "u9", 10, None),
        ([("::ffff:192.0.2.1", f"u{n}") for n in range(5)], None, "192.0.2.1", "u", 10, "ip"),
        # an account guessed from many IPs
        ([(f"198.51.100.{n}", "Ada@x") for n in range(3)], None, "192.0.2.9", "ada@x", 10, "account"),
        ([(f"198.51.100.{n}", "ada@x") for n in range(3)], "192.0.2.9", "192.0.2.9", "ada@x", 10, None),
        ([(f"198.51.100.{n}", "ada@x") for n in range(3)], None, "192.0.2.9", "ada@x", 63, None),
        ([(f"198.51.100.{n}", "ada@x") for n in range(3)], None, "192.0.2.9", "bob@x", 10, None),
    ],
)  # fmt: skip
def test_auth_refusal(
    failures: list[tuple[str, str]],
    known: str | None,
    ip: str,
    account: str | None,
    at: float,
    refusal: str | None,
) -> None:
    throttle = AuthThrottle(THROTTLE)
    if known is not None:
        throttle.succeeded(known, "ada@x", 0.0)
    for when, (failed_ip, login) in enumerate(failures):
        throttle.failed(failed_ip, login, float(when))
    assert throttle.refusal(ip, account, at) == refusal


def test_a_lock_is_reported_once_per_burst() -> None:
    throttle = AuthThrottle(THROTTLE)
    started = [throttle.failed("192.0.2.1", f"u{n}", float(n)) for n in range(5)]
    assert [len(s) for s in started] == [0, 0, 0, 0, 1]
    assert started[-1][0] == Lock("ip", "192.0.2.1", 5, 300.0)
    # Locked tries are refused unchecked, so the next failure, and the next lock and
    # log line, come only after the lock ends.
    assert throttle.failed("192.0.2.1", "u9", 310.0) == [Lock("ip", "192.0.2.1", 6, 300.0)]
