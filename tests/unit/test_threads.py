"""syncd.mail.threads: which header wins, the subject fallback within the same
participants, table-driven, on literal message bytes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from syncd.mail.parse import parse
from syncd.mail.provenance import Provenance
from syncd.mail.threads import names_a_message, normalise_subject, subject_key, thread_key
from syncd.store.quarantine import provenance_from_json, provenance_json
from syncd.store.threads import fold, trusted_gm_thrid

WHEN = datetime(2024, 5, 1, tzinfo=UTC)

CASES = [
    # (message_id, in_reply_to, references, gm_thrid, expected)
    ("own@x", None, (), None, "own@x"),
    ("own@x", "parent@x", (), None, "parent@x"),
    ("own@x", "parent@x", ("root@x", "parent@x"), None, "root@x"),
    ("own@x", "parent@x", ("root@x", "parent@x"), "1789", "gm:1789"),
    ("own@x", None, (), "  1789 ", "gm:1789"),
    ("own@x", None, (), "", "own@x"),
    ("own@x", None, ("", "root@x"), None, "root@x"),
    ("sha256:abc", None, (), None, "sha256:abc"),
]


@pytest.mark.parametrize(("mid", "irt", "refs", "thrid", "want"), CASES)
def test_headers_win_over_the_subject(
    mid: str, irt: str | None, refs: tuple[str, ...], thrid: str | None, want: str
) -> None:
    # Without participants there is no subject fallback; with them, reply headers still win.
    assert thread_key(mid, irt, refs, thrid, "Re: Hello") == want
    if want != mid:
        assert thread_key(mid, irt, refs, thrid, "Re: Hello", ["carol@acme.com"]) == want


@pytest.mark.parametrize(
    ("subject", "normalised"),
    [
        ("Hello", "hello"),
        ("Re: Hello", "hello"),
        ("RE: re:Hello", "hello"),
        ("Re[2]: Hello", "hello"),
        ("Re (3): Hello", "hello"),
        ("Re : Hello", "hello"),
        ("Fwd: Re: Hello", "hello"),
        ("FW: Hello", "hello"),
        ("AW: WG: Hello", "hello"),  # German
        ("SV: VS: Hello", "hello"),  # Nordic
        ("RIF: I: Hello", "hello"),  # Italian
        ("TR: RE: Hello", "hello"),  # French
        ("Odp: PD: Hello", "hello"),  # Polish
        ("回复：Hello", "hello"),  # Chinese, full-width colon
        ("[EXTERNAL] Re: Hello", "hello"),
        ("Re: [sales] Hello", "hello"),
        ("Hello (fwd)", "hello"),
        ("  Hello \t  World  ", "hello world"),
        ("HELLO", "hello"),
        ("Straße", "strasse"),  # case folded
        ("Ｈｅｌｌｏ", "hello"),  # full-width letters (NFKC)
        ("Re:", ""),
        ("", ""),
        ("Rebate", "rebate"),  # a word starting like a prefix is not one
        ("Iris: notes", "iris: notes"),
        ("Re: Re: [x] Fwd:", ""),
    ],
)
def test_normalise_subject(subject: str, normalised: str) -> None:
    assert normalise_subject(subject) == normalised


def test_subject_key_is_the_subject_within_the_same_people() -> None:
    key = subject_key("Pricing", ["carol@acme.com", "dan@acme.com"])
    assert key is not None and key.startswith("subject:")
    assert subject_key("RE: pricing", ["DAN@acme.com", "carol@acme.com", "dan@acme.com"]) == key
    assert subject_key("Pricing", ["carol@acme.com"]) != key  # other people
    assert subject_key("Invoice", ["carol@acme.com", "dan@acme.com"]) != key  # other subject
    assert subject_key("Re:", ["carol@acme.com"]) is None  # nothing left of the subject
    assert subject_key("Pricing", []) is None  # nobody
    assert "carol" not in key and "pricing" not in key  # holds neither


def test_names_a_message() -> None:
    assert names_a_message("root@x", "own@x")
    assert not names_a_message("own@x", "own@x")
    assert not names_a_message("gm:1789", "own@x")
    assert not names_a_message(subject_key("Hi", ["c@x"]) or "", "own@x")


def message(*fields: str, body: str = "Hello.") -> bytes:
    return ("\r\n".join(fields) + "\r\n\r\n" + body + "\r\n").encode()


ROOT = message(
    "From: Carol <carol@acme.com>",
    "To: Ada <ada@example.com>",
    "Subject: Pricing",
    "Message-ID: <root@acme.com>",
)
# What the store keys each message by, given its bytes and the participants outside the
# team (what crm.rules finds; the store passes those on From, To and Cc).
BYTES_CASES = [
    ("root: its subject within its people", ROOT, ["carol@acme.com"], "SUBJECT"),
    (
        "reply with References: the root's id (the store then takes the root's key)",
        message(
            "From: ada@example.com",
            "To: carol@acme.com",
            "Subject: Re: Pricing",
            "Message-ID: <r1@example.com>",
            "In-Reply-To: <r0@example.com>",
            "References: <root@ACME.COM>\r\n <r0@example.com>",
        ),
        ["carol@acme.com"],
        "root@acme.com",
    ),
    (
        "reply without References, only In-Reply-To",
        message(
            "From: carol@acme.com",
            "To: ada@example.com",
            "Subject: Re: Pricing",
            "Message-ID: <r2@acme.com>",
            "In-Reply-To: <r1@example.com>",
        ),
        ["carol@acme.com"],
        "r1@example.com",
    ),
    (
        "reply from a client that drops the headers: the root's subject key",
        message(
            "From: Carol <CAROL@acme.com>",
            "To: ada@example.com",
            "Subject: =?utf-8?q?RE=3A_Re=3A_pricing?=",
            "Message-ID: <r3@acme.com>",
        ),
        ["carol@acme.com"],
        "SUBJECT",
    ),
    (
        "same subject, other people: another thread",
        message(
            "From: eve@other.example",
            "To: ada@example.com",
            "Subject: Re: Pricing",
            "Message-ID: <e1@other.example>",
        ),
        ["eve@other.example"],
        "OTHER",
    ),
    (
        "a subject that is only prefixes: the message's own id",
        message("From: carol@acme.com", "To: ada@example.com", "Subject: Re:", "Message-ID: <x@a>"),
        ["carol@acme.com"],
        "x@a",
    ),
]


@pytest.mark.parametrize(
    ("raw", "people", "want"), [c[1:] for c in BYTES_CASES], ids=[c[0] for c in BYTES_CASES]
)
def test_thread_key_of_message_bytes(raw: bytes, people: list[str], want: str) -> None:
    email = parse(raw, received_at=WHEN)
    key = thread_key(
        email.key, email.in_reply_to, email.references, email.gm_thrid, email.subject, people
    )
    expected = {
        "SUBJECT": subject_key("Pricing", ["carol@acme.com"]),
        "OTHER": subject_key("Pricing", ["eve@other.example"]),
    }.get(want, want)
    assert key == expected


TAKEOUT = message(
    "X-GM-THRID: 1789012345678901234",
    "From: carol@acme.com",
    "To: ada@example.com",
    "Subject: Pricing",
    "Message-ID: <t@acme.com>",
)


@pytest.mark.parametrize(
    ("provenance", "want"),
    [
        # A Google Takeout mbox carries Gmail's thread id as a header: believed on import.
        (Provenance("import", WHEN), "1789012345678901234"),
        # Anywhere else the header is text a sender wrote: not believed.
        (Provenance("bcc", WHEN), None),
        (Provenance("imap", WHEN, inbox="ada", folder="INBOX", uid=1), None),
        # Gmail's own FETCH answer wins over any header.
        (Provenance("imap", WHEN, inbox="ada", folder="INBOX", uid=1, gm_thrid="42"), "42"),
    ],
)
def test_whose_gmail_thread_id_counts(provenance: Provenance, want: str | None) -> None:
    assert trusted_gm_thrid(parse(TAKEOUT, received_at=WHEN), provenance) == want


def item(engagement_id: int, date: str, kind: str = "email") -> dict[str, object]:
    return {"id": engagement_id, "date": date, "type": kind}


def test_fold_keeps_the_order_given_and_counts_each_thread() -> None:
    # A timeline as it may come: a pinned old email first, then newest first; 4 is a note.
    items = [item(1, "2024-01-01"), item(5, "2024-03-01"), item(4, "2024-02-15", "note"),
             item(3, "2024-02-01"), item(2, "2024-01-02"), item(6, "2024-01-03")]  # fmt: skip
    items[0]["pinned"] = True
    keys = {1: "t", 2: "t", 5: "t", 3: "u", 6: "v"}
    folded = fold(items, keys)
    assert [(f["count"], f["ids"], f["latest"]["id"], f["pinned"]) for f in folded] == [
        (3, [5, 2, 1], 5, True),  # where its first item stood (the pin); latest is the newest
        (1, [4], 4, False),
        (1, [3], 3, False),
        (1, [6], 6, False),
    ]
    assert fold([], {}) == []


def test_gmail_thread_id_survives_the_quarantine() -> None:
    """Mail quarantined and retried later keys its thread as it would have at once."""
    given = Provenance("imap", WHEN, inbox="ada", folder="INBOX", uid=7, gm_thrid="1789")
    assert provenance_from_json(provenance_json(given)) == given
    plain = Provenance("bcc", WHEN, sender="ada@example.com")
    assert "gm_thrid" not in provenance_json(plain)
    assert provenance_from_json(provenance_json(plain)) == plain
