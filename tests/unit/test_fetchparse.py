"""FETCH responses in imaplib's shape, read by syncd.sources.imap.fetchparse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from syncd.sources.imap.fetchparse import (
    FetchParseError,
    _parse_any,
    _parse_common,
    gm_thrid,
    internal_date,
    parse_fetch,
)

DATE = b'"17-Jul-1996 02:44:25 -0700"'
HEADERS = b"BODY[HEADER.FIELDS (FROM TO CC BCC)]"

CASES: list[tuple[str, list[Any], dict[int, dict[bytes, Any]]]] = [
    (
        "dovecot order",
        [(b"1 (UID 5 INTERNALDATE " + DATE + b" BODY[] {5}", b"hello"), b")"],
        {5: {b"UID": 5, b"INTERNALDATE": DATE[1:-1], b"BODY[]": b"hello"}},
    ),
    (
        "fields after the literal",
        [(b"1 (UID 5 BODY[] {3}", b"a)b"), b' INTERNALDATE "01-Jan-2024 00:00:00 +0000")'],
        {5: {b"UID": 5, b"BODY[]": b"a)b", b"INTERNALDATE": b"01-Jan-2024 00:00:00 +0000"}},
    ),
    (
        "expunged: NIL body, and an unsolicited flag update without UID",
        [b"2 (UID 7 BODY[] NIL)", b"3 (FLAGS (\\Seen))"],
        {7: {b"UID": 7, b"BODY[]": None}},
    ),
    (
        "header fields key holds spaces and parentheses",
        [(b"1 (UID 9 RFC822.SIZE 1234 " + HEADERS + b" {11}", b"From: a\r\n\r\n"), b")"],
        {9: {b"UID": 9, b"RFC822.SIZE": 1234, HEADERS: b"From: a\r\n\r\n"}},
    ),
    (
        "two literals in one message, lower-case keys",
        [(b"1 (uid 4 body[header] {3}", b"abc"), (b" body[] {2}", b"xy"), b")"],
        {4: {b"UID": 4, b"BODY[HEADER]": b"abc", b"BODY[]": b"xy"}},
    ),
    (
        "gmail extras, lists, quoted escapes, empty literal",
        [
            (
                b'1 (X-GM-THRID 123 X-GM-LABELS ("\\\\Inbox" "a \\"b\\"") MODSEQ (45) UID 8 '
                b"BODY[] {0}",
                b"",
            ),
            b")",
        ],
        {
            8: {
                b"X-GM-THRID": 123,
                b"X-GM-LABELS": [b"\\Inbox", b'a "b"'],
                b"MODSEQ": [45],
                b"UID": 8,
                b"BODY[]": b"",
            }
        },
    ),
    (
        "one message answered in two responses, a literal8",
        [(b"1 (UID 5 BODY[] ~{5}", b"hello"), b")", b"1 (UID 5 FLAGS (\\Seen))"],
        {5: {b"UID": 5, b"BODY[]": b"hello", b"FLAGS": [b"\\Seen"]}},
    ),
    ("nothing", [None], {}),
    (
        "metadata in the common shape, one UID answered twice",
        [
            b"1 (UID 3 INTERNALDATE " + DATE + b" RFC822.SIZE 49401)",
            b"2 (UID 4 INTERNALDATE " + DATE + b" RFC822.SIZE 0)",
            b"2 (UID 4 INTERNALDATE " + DATE + b" RFC822.SIZE 7)",
        ],
        {
            3: {b"UID": 3, b"INTERNALDATE": DATE[1:-1], b"RFC822.SIZE": 49401},
            4: {b"UID": 4, b"INTERNALDATE": DATE[1:-1], b"RFC822.SIZE": 7},
        },
    ),
    (
        "common shapes mixed with an unsolicited update: the general reader takes all",
        [
            (b"1 (UID 5 INTERNALDATE " + DATE + b" BODY[] {5}", b"hello"),
            b")",
            b"2 (FLAGS (\\Seen))",
            (b"3 (UID 6 INTERNALDATE " + DATE + b" BODY[] {2}", b"hi"),
            b" FLAGS ())",
        ],
        {
            5: {b"UID": 5, b"INTERNALDATE": DATE[1:-1], b"BODY[]": b"hello"},
            6: {b"UID": 6, b"INTERNALDATE": DATE[1:-1], b"BODY[]": b"hi", b"FLAGS": []},
        },
    ),
]


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parse_fetch(data: list[Any], expected: dict[int, dict[bytes, Any]]) -> None:
    assert parse_fetch(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        [(b"1 (UID 5 BODY[]", b"hello"), b")"],  # literal without its marker
        [b"1 (UID 5 BODY[] NIL"],  # cut short
        [b"1 (UID 5 ]] )"],  # not IMAP
        [b"1 UID 5"],  # fields not in parentheses
        [b"1 (UID 5))"],  # unbalanced
        [12],
    ],
)
def test_broken_fetch_responses_raise_one_error(data: list[Any]) -> None:
    with pytest.raises(FetchParseError):
        parse_fetch(data)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (DATE[1:-1], datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(timedelta(hours=-7)))),
        (b" 1-Jan-2024 00:00:00 +0000", datetime(2024, 1, 1, tzinfo=UTC)),
        (b"01-JAN-2024 10:00:00 +0530", datetime(2024, 1, 1, 4, 30, tzinfo=UTC)),
        (b"01-Foo-2024 00:00:00 +0000", None),
        (b"01-Jan-2024 00:00:00", None),
        (b"31-Feb-2024 00:00:00 +0000", None),
        (None, None),
        (42, None),
    ],
)
def test_internal_date(value: Any, expected: datetime | None) -> None:
    assert internal_date(value) == expected


# Gmail's X-GM-THRID in each place a server may put it in a body FETCH answer, the
# largest id it can be (unsigned 64-bit), and said twice (the last one counts, as for
# any field said twice).
THRID = b"18446744073709551615"
GMAIL_BODIES = [
    ("first", b"1 (X-GM-THRID " + THRID + b" UID 5 INTERNALDATE " + DATE + b" BODY[] {5}"),
    ("after UID", b"1 (UID 5 X-GM-THRID " + THRID + b" INTERNALDATE " + DATE + b" BODY[] {5}"),
    ("before BODY[]", b"1 (UID 5 INTERNALDATE " + DATE + b" X-GM-THRID " + THRID + b" BODY[] {5}"),
    ("twice", b"1 (X-GM-THRID 1 UID 5 X-GM-THRID " + THRID + b" INTERNALDATE " + DATE
     + b" BODY[] {5}"),
]  # fmt: skip


@pytest.mark.parametrize("text", [c[1] for c in GMAIL_BODIES], ids=[c[0] for c in GMAIL_BODIES])
def test_gmail_thread_id_in_any_place(text: bytes) -> None:
    data = [(text, b"hello"), b")"]
    fields = parse_fetch(data)[5]
    assert fields == {
        b"UID": 5,
        b"INTERNALDATE": DATE[1:-1],
        b"X-GM-THRID": int(THRID),
        b"BODY[]": b"hello",
    }
    assert gm_thrid(fields) == THRID.decode()
    assert _parse_any(data) == parse_fetch(data)  # the fast reader gives what the general does
    if not text.startswith(b"1 (X-GM-THRID 1 "):
        assert _parse_common(data) is not None  # and the common shapes take the fast path


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({b"X-GM-THRID": 1789012345678901234}, "1789012345678901234"),
        ({b"X-GM-THRID": b"42"}, "42"),
        ({b"X-GM-THRID": 2**64}, None),  # more than 64 bits: not Gmail's
        ({b"X-GM-THRID": -1}, None),
        ({b"X-GM-THRID": b"12a"}, None),
        ({b"X-GM-THRID": None}, None),
        ({b"X-GM-THRID": [1]}, None),
        ({}, None),
    ],
)
def test_gm_thrid(fields: dict[bytes, Any], expected: str | None) -> None:
    assert gm_thrid(fields) == expected
