"""The submission path's pure pieces: the tracked message id and the relay's one-line
answers."""

from __future__ import annotations

import pytest

from syncd.mail.parse import key_of, parse
from syncd.outbound.relay import Answer, _dot_stuffed, _one_line
from syncd.outbound.tokens import tracked_message_id


def test_tracked_id_is_stable_63_bits_and_keyed() -> None:
    a = tracked_message_id(b"k" * 32, "m@example.com")
    assert a == tracked_message_id(b"k" * 32, "m@example.com")
    assert 0 <= a < 2**63
    assert a != tracked_message_id(b"j" * 32, "m@example.com")
    assert a != tracked_message_id(b"k" * 32, "n@example.com")


def test_key_of_is_the_parsers_key() -> None:
    from datetime import UTC, datetime

    at = datetime(2025, 1, 1, tzinfo=UTC)
    for raw in (
        b"From: a@b.example\r\nMessage-ID: <X@y>\r\n\r\nhi\r\n",
        b"From: a@b.example\r\nSubject: no id\r\n\r\nhi\r\n",
        b"From: a@b.example\nSubject: lf only\n\nhi\n",
    ):
        assert key_of(raw) == parse(raw, received_at=at).key


def test_answers_are_one_printable_line() -> None:
    assert _one_line(b"5.7.1 first\nsecond\x1b[31m") == "5.7.1 first second [31m"
    assert Answer(250, "2.0.0 queued").line == "250 2.0.0 queued"
    assert Answer(250, "x").accepted and not Answer(451, "x").accepted


@pytest.mark.parametrize(
    ("raw", "data"),
    [
        (b"hi\r\n", b"hi\r\n.\r\n"),
        (b"hi", b"hi\r\n.\r\n"),
        (b".hidden\r\n", b"..hidden\r\n.\r\n"),
        (b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\r\n..two\r\n", b"a\r\n...two\r\n.\r\n"),
        (b"a\n.bare LF\n", b"a\n..bare LF\n\r\n.\r\n"),
        (b"a.b\r\n x.\r\n", b"a.b\r\n x.\r\n.\r\n"),
    ],
)
def test_data_is_dot_stuffed_and_ended(raw: bytes, data: bytes) -> None:
    # RFC 5321 4.5.2: a line's leading dot is doubled; the receiver strips it again.
    assert _dot_stuffed(raw) == data
