"""syncd.sources.imap.bodystructure: BODYSTRUCTURE answers as servers write them, the parts
kept of each, and the message rebuilt from those parts as the parser then reads it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from syncd.mail.parse import parse
from syncd.sources.imap.bodystructure import (
    HEAD_KEY,
    StructureError,
    Take,
    fetch_items,
    plan_parts,
    read_structure,
    rebuild,
)
from syncd.sources.imap.fetchparse import parse_fetch

MIB = 1024 * 1024
WHOLE, CUT, OMIT = Take.WHOLE, Take.CUT, Take.OMIT
TEXT = b'("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 120 3 NIL NIL NIL NIL)'
HTML_BIG = b'("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 6000000 90000)'
PDF_BIG = (
    b'("APPLICATION" "PDF" ("NAME" "big.pdf") NIL NIL "BASE64" 4000000 NIL'
    b' ("ATTACHMENT" ("FILENAME" "big.pdf")) NIL NIL)'
)
PNG_SMALL = b'("IMAGE" "PNG" NIL "<logo@x>" NIL "BASE64" 20000 NIL ("INLINE" NIL) NIL NIL)'
ENVELOPE = b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
INNER = b'("TEXT" "PLAIN" NIL NIL NIL "7BIT" 10 1)'


def forward(octets: int) -> bytes:
    return (
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" %d ' % octets
        + ENVELOPE
        + b" "
        + INNER
        + b' 40 NIL ("ATTACHMENT" ("FILENAME" "fwd.eml")) NIL NIL)'
    )


def mixed(*parts: bytes, subtype: bytes = b"MIXED", boundary: bytes = b"b1") -> bytes:
    return b"(" + b"".join(parts) + b' "%s" ("BOUNDARY" "%s") NIL NIL NIL)' % (subtype, boundary)


# name, BODYSTRUCTURE as the server writes it, what is taken of each leaf
CASES: list[tuple[str, bytes, dict[str, Take]]] = [
    ("single text part", TEXT, {"1": WHOLE}),
    ("single part, a big attachment", PDF_BIG, {"1": OMIT}),
    ("text and a big attachment", mixed(TEXT, PDF_BIG), {"1": WHOLE, "2": OMIT}),
    (
        "nested: alternative with a long HTML body, an inline image, a big attachment",
        mixed(mixed(TEXT, HTML_BIG, subtype=b"ALTERNATIVE", boundary=b"b2"), PNG_SMALL, PDF_BIG),
        {"1.1": WHOLE, "1.2": CUT, "2": WHOLE, "3": OMIT},
    ),
    ("a small forward is kept whole", mixed(TEXT, forward(5000)), {"1": WHOLE, "2": WHOLE}),
    (
        "a forward over the limit is left out",
        mixed(TEXT, forward(3 * MIB)),
        {"1": WHOLE, "2": OMIT},
    ),
    (
        # Base64 decodes to 57/78 of its size: 1.3 MiB encoded is under 1 MiB decoded.
        "base64 under the limit once decoded, upper-case names",
        mixed(TEXT, b'("APPLICATION" "ZIP" ("NAME" "a.zip") NIL NIL "BASE64" 1400000 NIL)'),
        {"1": WHOLE, "2": WHOLE},
    ),
    (
        "quoted-printable, uuencode and no encoding count as their encoded size",
        mixed(
            b'("APPLICATION" "X-QP" NIL NIL NIL "quoted-printable" 1100000 NIL)',
            b'("APPLICATION" "OCTET-STREAM" NIL NIL NIL "x-uuencode" 900000 NIL)',
            b'("APPLICATION" "OCTET-STREAM" NIL NIL NIL NIL 2000000 NIL)',
        ),
        {"1": OMIT, "2": WHOLE, "3": OMIT},
    ),
    (
        "a text part with a file name is an attachment (RFC 2231 name)",
        mixed(
            TEXT,
            b'("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "BASE64" 3000000 40000 NIL'
            b' ("ATTACHMENT" ("FILENAME*" "utf-8\'\'r%C3%A9sum%C3%A9.txt")) NIL NIL)',
            b'("TEXT" "HTML" ("NAME" "page.html") NIL NIL "8BIT" 2000000 40000 NIL)',
        ),
        {"1": WHOLE, "2": OMIT, "3": OMIT},
    ),
]


def structure(text: bytes) -> Any:
    return parse_fetch([b"1 (UID 7 BODYSTRUCTURE " + text + b")"])[7][b"BODYSTRUCTURE"]


@pytest.mark.parametrize(("name", "text", "takes"), CASES, ids=[c[0] for c in CASES])
def test_parts_plan(name: str, text: bytes, takes: dict[str, Take]) -> None:
    plan = plan_parts(read_structure(structure(text)), max_part=1 * MIB)
    assert dict(plan.takes) == takes
    assert plan.partial == any(t is not WHOLE for t in takes.values())


def test_fetch_items_name_every_header_and_kept_body() -> None:
    nested = mixed(mixed(TEXT, HTML_BIG, subtype=b"ALTERNATIVE", boundary=b"b2"), PDF_BIG)
    assert fetch_items(plan_parts(read_structure(structure(nested)), max_part=MIB)) == [
        "BODY.PEEK[HEADER]",
        "BODY.PEEK[TEXT]<0.8192>",
        "BODY.PEEK[1.MIME]",
        "BODY.PEEK[1.1.MIME]",
        "BODY.PEEK[1.1]",
        "BODY.PEEK[1.2.MIME]",
        f"BODY.PEEK[1.2]<0.{4 * MIB}>",
        "BODY.PEEK[2.MIME]",
    ]
    single = plan_parts(read_structure(structure(PDF_BIG)), max_part=MIB)
    assert fetch_items(single) == ["BODY.PEEK[HEADER]", "BODY.PEEK[TEXT]<0.8192>"]


@pytest.mark.parametrize(
    "text",
    [
        b'("MULTIPART-LOOKING" "X")',  # too few fields
        b'(("TEXT" "PLAIN" NIL NIL NIL "7BIT" 1 1) "MIXED")',  # no boundary to rebuild with
        b"NIL",
    ],
)
def test_structures_that_cannot_be_rebuilt_from(text: bytes) -> None:
    with pytest.raises(StructureError):
        read_structure(structure(text))


RECEIVED = datetime(2025, 4, 1, tzinfo=UTC)
HEADER = (
    b"From: Jane <jane@acme.example>\r\nTo: ada@example.com\r\nSubject: the plans\r\n"
    b"Date: Tue, 4 Mar 2025 08:15:00 +0000\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
)
TEXT_MIME = b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
PDF_MIME = (
    b"Content-Type: application/pdf; name*=utf-8''Pl%C3%A4ne.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-Disposition: attachment; filename*=utf-8''Pl%C3%A4ne.pdf\r\n\r\n"
)
BODY_TEXT = b"See the plans attached.\r\n"
ORIGINAL = (
    HEADER + b"This is a multi-part message in MIME format.\r\n--b1\r\n" + TEXT_MIME + BODY_TEXT
    + b"\r\n--b1\r\n" + PDF_MIME + b"QUFB" * 20 + b"\r\n--b1--\r\n"
)  # fmt: skip
STRUCTURE = mixed(
    b'("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 25 1 NIL NIL NIL NIL)',
    b'("APPLICATION" "PDF" ("NAME*" "utf-8\'\'Pl%C3%A4ne.pdf") NIL NIL "BASE64" 4000000 NIL'
    b' ("ATTACHMENT" ("FILENAME*" "utf-8\'\'Pl%C3%A4ne.pdf")) NIL NIL)',
)


def test_rebuilt_message_reads_as_the_original_less_the_big_attachment() -> None:
    """Keyed like the original (a digest: no Message-ID), its text kept, the attachment
    listed with its name and estimated size as not stored, the server's size kept."""
    plan = plan_parts(read_structure(structure(STRUCTURE)), max_part=MIB)
    answer = {
        b"BODY[HEADER]": HEADER,
        HEAD_KEY: ORIGINAL[len(HEADER) :][:8192],
        b"BODY[1.MIME]": TEXT_MIME,
        b"BODY[1]": BODY_TEXT,
        b"BODY[2.MIME]": PDF_MIME,
    }
    whole = parse(ORIGINAL, received_at=RECEIVED)
    raw = rebuild(plan, answer, size=5_000_000, key=whole.key)
    assert raw.startswith(f'X-Syncd-Partial: size=5000000; key="{whole.key}"\r\n'.encode())
    email = parse(raw, received_at=RECEIVED, max_attachment_bytes=MIB, partial=True)
    assert (email.key, email.subject, email.size) == (whole.key, "the plans", 5_000_000)
    assert email.text == whole.text == "See the plans attached.\n"
    ((name, ctype, size, data),) = [
        (a.filename, a.content_type, a.size, a.data) for a in email.attachments
    ]
    assert (name, ctype, size, data) == ("Pläne.pdf", "application/pdf", 4_000_000 * 57 // 78, None)
    assert any("fetched by parts" in d for d in email.defects)

    # The same bytes from anyone else (a BCC copy, an import): the marks mean nothing.
    plain = parse(raw, received_at=RECEIVED, max_attachment_bytes=MIB)
    assert plain.key != whole.key and plain.attachments[0].size == 0
    assert plain.attachments[0].data == b""


def test_a_long_text_body_is_cut_at_a_line_end() -> None:
    long_text = b"line of text\r\n" * 400_000
    text = b'("TEXT" "PLAIN" NIL NIL NIL "8BIT" %d 400000 NIL NIL NIL NIL)' % len(long_text)
    plan = plan_parts(read_structure(structure(text)), max_part=MIB)
    assert plan.takes == {"1": CUT}
    header = b"Message-ID: <long@x>\r\nSubject: long\r\n\r\n"
    answer = {
        b"BODY[HEADER]": header,
        HEAD_KEY: long_text[:8192],
        b"BODY[1]<0>": long_text[: 4 * MIB],
    }
    raw = rebuild(plan, answer, size=len(long_text) + len(header), key=None)
    assert raw.endswith(b"line of text\r\n")
    email = parse(raw, received_at=RECEIVED, partial=True)
    assert email.key == "long@x" and email.text.startswith("line of text\nline of text")
    assert any("too long to fetch whole" in d for d in email.defects)
    with pytest.raises(StructureError, match=r"BODY\[1\]<0>"):
        rebuild(plan, {b"BODY[HEADER]": header}, size=1, key=None)
