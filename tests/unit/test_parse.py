"""syncd.mail.parse over the broken-message corpus in tests/data and generated edge cases.

Each row names a file and the values a user would see for it (key, subject, date,
addresses, a text snippet, attachment metadata, what was repaired); files that must go to
quarantine name the MessageError reason instead.
"""

from __future__ import annotations

import hashlib
import random
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from bench.corpus import generate
from syncd.errors import MessageError
from syncd.mail.parse import Address, Email, header_addresses, header_message_key, parse

DATA = Path(__file__).resolve().parent.parent / "data"
RECEIVED = datetime(2025, 4, 1, 12, 0, tzinfo=UTC)
NO_ID_KEY = "sha256:e7d05a1a12251eb19a182eee895764dfe2766c2a99235e29b44f6e5865ce956e"


def _raw(name: str) -> bytes:
    return (DATA / name).read_bytes()


def _parse(name: str, **kwargs: Any) -> Email:
    return parse(_raw(name), received_at=RECEIVED, **kwargs)


def _emails(addrs: tuple[Address, ...]) -> list[str]:
    return [a.email for a in addrs]


CASES: list[tuple[str, dict[str, Any]]] = [
    ("normal-plain.eml", {
        "key": "CAF1234.5678@mail.acme.example",
        "subject": "Pricing for 2025 – follow-up",
        "date": datetime(2025, 3, 4, 8, 15, tzinfo=UTC),
        "from_": Address("Jane Doe", "jane.doe@acme.example"),
        "to": (Address("Ada Lovelace", "ada@example.com"),),
        "cc": (Address("Smith, John", "john.smith@acme.example"),
               Address("Renée Müller", "renee@gmail.com")),
        "text_has": "the renewal price is 1.200 € per seat",
        "defects": (),
    }),
    ("normal-alternative-attachment.eml", {
        "key": "alt-1@acme.example",
        "date": datetime(2025, 3, 5, 15, 0, tzinfo=UTC),
        "from_": Address("", "ada@example.com"),
        "text": "Please find the contract attached.",
        "attachments": [("contract.pdf", "application/pdf", 2073)],
        "defects": (),
    }),
    ("reply-in-thread.eml", {
        "key": "reply-2@acme.example",
        "in_reply_to": "reply-1@example.com",
        "references": ("root-0@acme.example", "reply-1@example.com"),
        "thread_key": "root-0@acme.example",
        "subject": "Re: Contract attached",
    }),
    ("no-message-id.eml", {
        "key": NO_ID_KEY, "message_id": None, "thread_key": NO_ID_KEY,
        "subject": "No id here", "defect": "no Message-ID",
    }),
    ("broken-message-id.eml", {
        "message_id": None, "key_prefix": "sha256:", "defect": "broken Message-ID",
    }),
    ("message-id-without-brackets.eml", {
        "key": "1234.abc@host.example",
        "date": datetime(2025, 3, 24, 12, 0, tzinfo=UTC),  # "-0000": UTC
        "gm_thrid": "1789012345678901234",
        "thread_key": "gm:1789012345678901234",
    }),
    ("no-date.eml", {
        "date": RECEIVED, "date_missing": True, "defect": "no Date header",
    }),
    ("bad-date.eml", {
        "date": RECEIVED, "date_missing": True, "defect": "unparseable Date",
    }),
    ("unknown-charset-x-foo.eml", {
        "text_has": "Café au lait – naïve.", "defect": "unknown charset 'x-foo'",
    }),
    ("8bit-raw-headers.eml", {
        "subject": "Grüße aus Köln",
        "from_": Address("Jörg Schröder", "joerg@raw.example"),
        "to": (Address("Åsa Ström", "asa@raw.example"),),
        "defect": "raw 8-bit bytes in headers",
    }),
    ("encoded-word-bad-charset.eml", {
        "subject": "Price list– april edition",
        "from_": Address("Mystery Sender", "mystery@charset.example"),
        "defect": "unknown charset 'x-klingon'",
    }),
    ("broken-boundary.eml", {
        "text_has": "The declared boundary is never used.",
        "defect": "without a usable boundary",
    }),
    ("missing-final-boundary.eml", {
        "text": "First part.\n\nSecond part, and the message stops without a closing boundary.\n",
        "defect": "missing final MIME boundary",
    }),
    ("missing-content-type.eml", {
        "text_has": "Straße und Größe", "defects": (),
    }),
    ("html-only.eml", {
        "text": "March news\n\nPrices from 9€ per month.\n\nPlan Basic",
        "defects": (),
    }),
    ("base64-garbage.eml", {
        "text_has": "Hello from b", "defect": "junk characters in base64",
    }),
    ("address-without-at.eml", {
        "from_": Address("Bob Martin", "bob@example.com"),
        "to": (),
        "cc": (Address("", "carol@client.example"),),
        "defect": "address without '@' skipped",
    }),
    ("cve-2023-27043-address.eml", {
        "from_": None,
        "to": (Address("", "real@client.example"),),
        # An encoded display name may *look* like addresses; only the addr-spec counts.
        "cc": (Address("ceo@example.com <ceo@example.com>, x@y.z", "attacker@evil.example"),),
        "defect": "unsafe or broken address skipped",
    }),
    ("group-and-comments-addresses.eml", {
        "from_": Address("Carol Client", "carol@client.example"),
        "to": (Address("", "ada@example.com"), Address("Martin, Bob", "bob@example.com"),
               Address("", "dave@client.example")),
    }),
    ("duplicate-message-id-a.eml", {"key": "dup-1@acme.example"}),
    ("duplicate-message-id-b.eml", {"key": "dup-1@acme.example", "defects": ()}),
    ("huge-line.eml", {
        "text_has": "start xxxx", "text_bytes": 1024 * 1024, "defect": "truncated to 1 MiB",
    }),
    ("empty-subject.eml", {"subject": "", "text": "Body with an empty subject.\n"}),
    ("non-ascii-filename-attachment.eml", {
        "text": "Two attachments.",
        "attachments": [
            ("../../etc/passwd", "application/octet-stream", 32),
            ("Übersicht 2025.txt", "text/plain", 36),
        ],
    }),
    ("mbox-from-line.eml", {
        "key": "mbox-line@acme.example", "from_": Address("", "jane.doe@acme.example"),
    }),
    ("koi8-r-body.eml", {
        "subject": "Счёт 42",
        "from_": Address("Дмитрий Иванов", "d.ivanov@ru.example"),
        "date": datetime(2025, 3, 22, 9, 0, tzinfo=UTC),
        "text": "Здравствуйте, счёт во вложении.\n",
    }),
    ("forwarded-as-attachment.eml", {
        # The forwarded mail's subject and text are searchable; the .eml is the one
        # attachment, and the PDF inside it is not listed again.
        "text": "See Carol's mail below.\n\nQuote 7781 – revised\n\n"
                "The revised price is 980 € per seat.",
        "attachments": [("", "message/rfc822", 1304)],
        "defects": (),
    }),
]  # fmt: skip


@pytest.mark.parametrize(("name", "want"), CASES, ids=[c[0] for c in CASES])
def test_corpus_file(name: str, want: dict[str, Any]) -> None:
    email = _parse(name)
    for field, value in want.items():
        if field == "text_has":
            assert value in email.text
        elif field == "text_bytes":
            assert len(email.text.encode()) <= value
        elif field == "key_prefix":
            assert email.key.startswith(value)
        elif field == "defect":
            assert any(value in d for d in email.defects), email.defects
        elif field == "attachments":
            got = [(a.filename, a.content_type, a.size) for a in email.attachments]
            assert got == value
        else:
            assert getattr(email, field) == value, field
    assert email.size == len(_raw(name))
    assert email.date.tzinfo is not None and email.date.utcoffset() == timedelta(0)
    assert all("@" in a.email for a in (*email.to, *email.cc, *email.bcc))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty message"),
        (b"  \r\n\r\n  ", "empty message"),
        (_raw("not-an-email.eml"), "no header fields: not an email"),
        (b"\r\n\r\nbody without headers\r\n", "no header fields: not an email"),
        (b"X-Big: " + b"a" * (101 * 1024) + b"\r\n\r\nbody", "header block over 100 KiB"),
        (b"Subject: x\r\nX-Pad: " + b"b" * 998, None),
    ],
    ids=["empty", "blank", "not-an-email", "no-header-block", "header-over-100k", "headers-only"],
)
def test_refused_with_reason(raw: bytes, reason: str | None) -> None:
    if reason is None:  # a header-only message is fine: no body
        assert parse(raw, received_at=RECEIVED).subject == "x"
        return
    with pytest.raises(MessageError) as err:
        parse(raw, received_at=RECEIVED)
    assert err.value.reason == reason


def _nested(levels: int) -> bytes:
    head = b"Message-ID: <nest@x.example>\r\nFrom: a@x.example\r\n"
    body = b"Content-Type: text/plain\r\n\r\ninnermost\r\n"
    for i in reversed(range(levels)):
        body = (
            f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode()
            + body
            + f"\r\n--b{i}--\r\n".encode()
        )
    return head + body


def test_mime_nesting_limit() -> None:
    assert parse(_nested(100), received_at=RECEIVED).text.strip() == "innermost"
    with pytest.raises(MessageError, match="MIME nesting over 100 levels"):
        parse(_nested(101), received_at=RECEIVED)
    with pytest.raises(MessageError, match="MIME nesting"):
        parse(_nested(5000), received_at=RECEIVED)


def test_header_block_of_exactly_the_limit_is_accepted() -> None:
    pad = b"X-Pad: " + b"c" * (100 * 1024 - 40) + b"\r\n"
    raw = b"Subject: big\r\n" + pad + b"\r\nbody"
    assert len(raw.split(b"\r\n\r\n")[0]) <= 100 * 1024
    assert parse(raw, received_at=RECEIVED).text == "body"


def test_same_bytes_same_key_and_digest_is_stable() -> None:
    raw = _raw("no-message-id.eml")
    keys = {parse(raw, received_at=RECEIVED + timedelta(days=d)).key for d in range(3)}
    assert keys == {NO_ID_KEY}  # hard-coded: the same across runs, processes and machines
    crlf = raw.replace(b"\n", b"\r\n")
    assert parse(crlf, received_at=RECEIVED).key == NO_ID_KEY  # mbox (LF) vs IMAP (CRLF)
    other = raw.replace(b"Subject: No id here", b"Subject: No id there")
    assert parse(other, received_at=RECEIVED).key != NO_ID_KEY


def test_duplicates_share_a_key() -> None:
    assert _parse("duplicate-message-id-a.eml").key == _parse("duplicate-message-id-b.eml").key


def test_max_attachment_bytes_drops_data_keeps_metadata() -> None:
    full = _parse("normal-alternative-attachment.eml").attachments[0]
    assert full.data is not None and full.size == len(full.data) == 2073
    assert full.sha256 == hashlib.sha256(full.data).hexdigest()
    assert full.data.startswith(b"%PDF-1.4")
    capped = _parse("normal-alternative-attachment.eml", max_attachment_bytes=2000)
    att = capped.attachments[0]
    assert (att.data, att.size, att.sha256, att.filename) == (
        None,
        2073,
        full.sha256,
        "contract.pdf",
    )
    exact = _parse("normal-alternative-attachment.eml", max_attachment_bytes=2073)
    assert exact.attachments[0].data == full.data


def test_naive_received_at_is_taken_as_utc() -> None:
    email = parse(_raw("no-date.eml"), received_at=datetime(2025, 1, 2, 3, 4))
    assert email.date == datetime(2025, 1, 2, 3, 4, tzinfo=UTC)
    local = datetime(2025, 1, 2, 5, 4, tzinfo=timezone(timedelta(hours=2)))
    assert parse(_raw("no-date.eml"), received_at=local).date == email.date


def test_header_addresses_for_the_people_prefilter() -> None:
    block = _raw("normal-plain.eml").split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert [a.email for a in header_addresses(block)] == [
        "jane.doe@acme.example", "ada@example.com", "john.smith@acme.example", "renee@gmail.com",
    ]  # fmt: skip
    fetched = b"From: a@x.example\r\nTo: A <a@x.example>, b@y.example\r\nBcc: c@z.example\r\n\r\n"
    assert _emails(header_addresses(fetched)) == ["a@x.example", "b@y.example", "c@z.example"]
    assert header_addresses(b"") == ()
    assert header_addresses(b"\xff\xfe garbage") == ()


def test_header_message_key_is_the_key_parse_gives() -> None:
    """The UIDVALIDITY rescan skips a body when this key is logged: it must be parse's."""
    for path in sorted(DATA.glob("*.eml")):
        raw = path.read_bytes()
        try:
            key = parse(raw, received_at=RECEIVED).key
        except MessageError:
            continue
        head = raw.replace(b"\r\n", b"\n").split(b"\n\n")[0] + b"\n\n"
        expected = None if key.startswith("sha256:") else key
        assert header_message_key(head) == expected, path.name
    assert (
        header_message_key(b"Message-ID:\r\n <A.1@X.example>\r\n\r\n")
        == parse(b"Message-ID:\r\n <A.1@X.example>\r\n\r\nhi", received_at=RECEIVED).key
    )
    assert header_message_key(b"") is None
    assert header_message_key(b"\xff\xfe garbage") is None


def test_encoded_display_name_cannot_inject_an_address() -> None:
    raw = (
        b"From: =?utf-8?q?=3Cceo=40example=2Ecom=3E?= <x@attacker.example>\r\n"
        b"To: =?utf-8?b?Ym9iQGV4YW1wbGUuY29tLCA=?= <y@attacker.example>\r\n\r\nhi"
    )
    email = parse(raw, received_at=RECEIVED)
    assert email.from_ == Address("<ceo@example.com>", "x@attacker.example")
    assert _emails(email.to) == ["y@attacker.example"]


def test_generated_corpus_parses_cleanly() -> None:
    for raw, _ in generate(300, seed=5, attachment_ratio=0.02):
        email = parse(raw, received_at=RECEIVED)
        assert email.from_ is not None and email.to and email.subject
        assert email.text.strip() or email.attachments
        assert set(email.defects) <= {"no Message-ID: keyed by a digest of the headers"}
        assert "=?" not in email.subject and all("=?" not in a.name for a in email.to)


def test_mangled_input_only_ever_raises_message_error() -> None:
    rng = random.Random(7)
    seeds = [p.read_bytes() for p in sorted(DATA.glob("*.eml")) if p.stat().st_size < 10_000]
    for _ in range(600):
        raw = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 8)):
            if not raw:
                break
            i = rng.randrange(len(raw))
            op = rng.random()
            if op < 0.4:
                raw[i] = rng.randrange(256)
            elif op < 0.7:
                del raw[i : i + rng.randrange(1, 40)]
            else:
                raw[i:i] = rng.choice([b"=?", b"?=", b"\r\n", b"--", b'"', b"<", b"(", b";", b":"])
        try:
            email = parse(bytes(raw), received_at=RECEIVED)
        except MessageError as err:
            assert err.reason
        else:
            assert email.key and email.thread_key and email.date.tzinfo is not None


HOSTILE = {
    "6000 encoded words": b"Subject: " + b" ".join([b"=?utf-8?q?ab?="] * 6000) + b"\r\n\r\nx",
    "6000 addresses": b"To: " + b",".join(b"u%d@x.example" % i for i in range(6000)) + b"\r\n\r\n",
    "unbalanced quote": b'To: "' + b"a" * 90_000 + b"\r\n\r\nx",
    "50000 parentheses": b"To: " + b"(" * 50_000 + b"a@b.c\r\n\r\nx",
    "100000 empty parts": b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
    + b"--b\r\n\r\nx\r\n" * 100_000,
    "9000 references": b"References: "
    + b" ".join(b"<r%d@x>" % i for i in range(9000))
    + b"\r\n\r\n",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_stays_linear(name: str) -> None:
    start = time.perf_counter()
    email = parse(HOSTILE[name], received_at=RECEIVED)
    assert time.perf_counter() - start < 3.0  # quadratic behaviour would take minutes
    assert len(email.references) <= 100 and len(email.defects) <= 50


def test_corpus_generator_is_deterministic_capped_and_copies_labels() -> None:
    now = datetime(2025, 6, 1, tzinfo=UTC)
    first = list(generate(40, seed=3, now=now))
    assert first == list(generate(40, seed=3, now=now))
    assert all(now - timedelta(days=401) < when <= now for _, when in first)
    capped = list(generate(60, seed=4, attachment_ratio=1.0, max_bytes=150_000, now=now))
    assert all(len(raw) <= 150_000 for raw, _ in capped)
    assert any(b"Content-Disposition: attachment" in raw for raw, _ in capped)
    copies = [raw for raw, _ in generate(200, seed=6, label_copies=True, now=now)]
    assert len(copies) == 200 and len(set(copies)) < 200
    keys = {parse(raw, received_at=now).key for raw in copies}
    assert len(keys) == len(set(copies))


ADDRESS_FORMS = [
    ("Jane Doe <Jane@ACME.example>", [("Jane Doe", "jane@acme.example")]),
    ('"Doe, \\"J\\"" <j@x.example>', [('Doe, "J"', "j@x.example")]),
    ("=?utf-8?q?A=2C_B?= <ab@x.example>", [("A, B", "ab@x.example")]),
    ("a@x.example, , b@x.example,", [("", "a@x.example"), ("", "b@x.example")]),
    ("jane@acme.example <jane@acme.example>", [("jane@acme.example", "jane@acme.example")]),
    ("carol@client.example (Carol Client)", [("Carol Client", "carol@client.example")]),
    ("Team: ada@example.com, bob@example.com;", [("", "ada@example.com"), ("", "bob@example.com")]),
    ("undisclosed-recipients:;", []),
    ('"alice@example.org"@evil.example', []),
    ("alice@example.org)<bob@example.com>", []),
    ("a@b.example <c@d.example> <e@f.example>", []),
    ("Bob <bob@x.example", []),
    ("just text", []),
]


@pytest.mark.parametrize(("value", "want"), ADDRESS_FORMS, ids=[v for v, _ in ADDRESS_FORMS])
def test_address_forms(value: str, want: list[tuple[str, str]]) -> None:
    raw = f"Message-ID: <a@x>\r\nTo: {value}\r\n\r\nbody".encode()
    assert [(a.name, a.email) for a in parse(raw, received_at=RECEIVED).to] == want


def test_fast_base64_decodes_exactly_as_binascii() -> None:
    """The SIMD decoder stands in for binascii only where both give the same bytes, or
    the same error: junk, line breaks, bad lengths and padding in the middle included."""
    import binascii

    from syncd.mail.headers import a2b_base64

    rng = random.Random(7)
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    noise = [b"=", b"==", b"\n", b"\r\n", b"\r", b" ", b"\t", b"!", b"\x00", b"\xff", b"-"]
    for _ in range(20_000):
        data = bytearray(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        for _ in range(rng.randint(0, 5)):
            at = rng.randint(0, len(data))
            data[at:at] = rng.choice(noise)
        expected: bytes | str
        try:
            expected = binascii.a2b_base64(bytes(data))
        except binascii.Error:
            expected = "error"
        try:
            got: bytes | str = a2b_base64(bytes(data))
        except binascii.Error:
            got = "error"
        assert got == expected, bytes(data)
    blob = bytes(range(256)) * 400
    wrapped = binascii.b2a_base64(blob, newline=False)
    lines = b"\r\n".join(wrapped[i : i + 76] for i in range(0, len(wrapped), 76))
    assert a2b_base64(lines) == blob


def test_forwards_of_forwards_are_searchable_five_levels_deep() -> None:
    """Each level a message attached whole inside the one before, the third one base64
    encoded; past five levels the text is left out and a defect says so."""
    import base64

    inner = b"Subject: level 7\r\n\r\nwords of level 7\r\n"
    for level in range(6, -1, -1):
        cte = b"Content-Transfer-Encoding: base64\r\n" if level == 3 else b""
        body = base64.encodebytes(inner) if level == 3 else inner
        inner = (
            f"Subject: level {level}\r\nMIME-Version: 1.0\r\n".encode()
            + f'Content-Type: multipart/mixed; boundary="b{level}"\r\n\r\n'.encode()
            + f"--b{level}\r\nContent-Type: text/plain\r\n\r\n".encode()
            + f"words of level {level}\r\n--b{level}\r\n".encode()
            + b"Content-Type: message/rfc822\r\n"
            + cte
            + b"\r\n"
            + body
            + f"\r\n--b{level}--\r\n".encode()
        )
    email = parse(b"Message-ID: <f@x>\r\n" + inner, received_at=RECEIVED)
    for level in range(6):
        assert f"words of level {level}" in email.text
    assert "level 6" not in email.text and "level 7" not in email.text
    assert any("over 5 levels" in d for d in email.defects)
    assert [a.content_type for a in email.attachments] == ["message/rfc822"]


def test_a_broken_forward_costs_its_own_text_not_the_message() -> None:
    """MIME nested past the limit inside a forwarded message: the outer mail parses, its
    own text and the .eml attachment stay, and a defect names the forward."""
    nested = b"text inside\r\n"
    for level in range(120):
        nested = (
            f'Content-Type: multipart/mixed; boundary="n{level}"\r\n\r\n--n{level}\r\n'.encode()
            + nested
            + f"\r\n--n{level}--\r\n".encode()
        )
    raw = (
        b"Message-ID: <deep@x>\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="top"\r\n\r\n'
        b"--top\r\nContent-Type: text/plain\r\n\r\nthe outer words\r\n"
        b"--top\r\nContent-Type: message/rfc822\r\n\r\nSubject: deep one\r\n"
        + nested
        + b"\r\n--top--\r\n"
    )
    email = parse(raw, received_at=RECEIVED)
    assert email.text == "the outer words"
    assert [a.content_type for a in email.attachments] == ["message/rfc822"]
    assert "forwarded message: not searchable: MIME nesting over 100 levels" in email.defects
