"""Tags on the BCC logging address (``log+deal-42@``), table by table on literal strings:
the grammar, which recipients are ours, the RCPT replies, the tag a message travels with,
and that no tagged form of a logging address is ever a participant."""

from __future__ import annotations

import pytest

from syncd.crm.bcctags import Picks, TagError, logging_recipient, parse_tag, tag_of
from syncd.crm.team import Team
from syncd.sources.senders import (
    BAD_TAG,
    RELAY_DENIED,
    envelope_tag,
    recipient_reply,
)

LOG = "log@crm.example.com"
ALLOWED = frozenset({LOG, "crm+in@example.org"})


@pytest.mark.parametrize(
    ("text", "picks"),
    [
        ("deal-42", Picks(deals=(42,))),
        ("ticket-7", Picks(tickets=(7,))),
        ("nocreate", Picks(nocreate=True)),
        ("deal-42+ticket-7", Picks((42,), (7,))),
        ("ticket-7+deal-42+nocreate", Picks((42,), (7,), True)),
        ("deal-9+deal-3+deal-9", Picks(deals=(3, 9))),
        ("DEAL-42+NoCreate", Picks((42,), (), True)),
        ("deal-999999999999999999", Picks(deals=(999_999_999_999_999_999,))),
        ("+".join(["deal-1"] * 10), Picks(deals=(1,))),
    ],
)
def test_tags_that_read(text: str, picks: Picks) -> None:
    assert parse_tag(text) == picks


@pytest.mark.parametrize(
    "text",
    [
        "",
        "deal",
        "deal-",
        "deal-x",
        "deal-0",
        "deal-042",
        "deal--42",
        "deal-4 2",
        "deal-1e3",
        "deal-9999999999999999999",  # past SQLite's integer
        "deals-42",
        "deal_42",
        "company-3",
        "contact-3",
        "create",
        "nocreate-1",
        "deal-42+",
        "+deal-42",
        "deal-42++ticket-7",
        "deal-٤٢",  # Arabic-Indic digits are digits to \d, never to us
        "+".join(["deal-1"] * 11),
    ],
)
def test_tags_that_do_not_read(text: str) -> None:
    with pytest.raises(TagError):
        parse_tag(text)


@pytest.mark.parametrize(
    ("picks", "text"),
    [
        (Picks(), ""),
        (Picks(deals=(42,)), "deal-42"),
        (Picks((3, 9), (7,), True), "deal-3+deal-9+ticket-7+nocreate"),
        (Picks(nocreate=True), "nocreate"),
    ],
)
def test_canonical_text_reads_back(picks: Picks, text: str) -> None:
    assert str(picks) == text
    if text:
        assert parse_tag(text) == picks


def test_picks_add_up() -> None:
    both = Picks(deals=(42,)) | Picks((7,), (3,)) | Picks(nocreate=True)
    assert both == Picks((7, 42), (3,), True)
    assert not Picks() and Picks(nocreate=True) and not Picks(nocreate=True).records


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (LOG, Picks()),
        ("LOG@CRM.EXAMPLE.COM", Picks()),
        ("log+deal-42@crm.example.com", Picks(deals=(42,))),
        ("Log+Deal-42@Crm.Example.com", Picks(deals=(42,))),
        ("log+ticket-7@crm.example.com", Picks(tickets=(7,))),
        ("log+nocreate@crm.example.com", Picks(nocreate=True)),
        ("log+deal-42+ticket-7@crm.example.com", Picks((42,), (7,))),
        # A logging address with a + of its own: whole, then with a tag after it.
        ("crm+in@example.org", Picks()),
        ("crm+in+deal-5@example.org", Picks(deals=(5,))),
        # Not ours: another local part, another domain, a look-alike domain.
        ("other+deal-42@crm.example.com", None),
        ("log+deal-42@other.example", None),
        ("log+deal-42@crm.example.com.evil.example", None),
        ("log+deal-42@example.com", None),
        ("logs+deal-42@crm.example.com", None),
        ("lo+deal-42@crm.example.com", None),
        ("log-deal-42@crm.example.com", None),
        ("log.deal-42@crm.example.com", None),
        ("crm+deal-5@example.org", None),
        ("deal-42+log@crm.example.com", None),
        ("log", None),
    ],
)
def test_which_recipients_are_ours(address: str, expected: Picks | None) -> None:
    assert logging_recipient(address, ALLOWED) == expected


@pytest.mark.parametrize(
    "address",
    [
        "log+@crm.example.com",
        "log+deal-x@crm.example.com",
        "log+deal-0@crm.example.com",
        "log++deal-42@crm.example.com",
        "log+company-3@crm.example.com",
        "crm+in+@example.org",
    ],
)
def test_a_bad_tag_on_our_address_is_a_tag_error(address: str) -> None:
    with pytest.raises(TagError):
        logging_recipient(address, ALLOWED)
    assert tag_of(address, ALLOWED) is not None


@pytest.mark.parametrize(
    ("arg", "reply"),
    [
        ("TO:<log+deal-42@crm.example.com>", None),
        ("TO:<LOG+DEAL-42@crm.example.com>", None),
        ("TO:<log+deal-42+ticket-7+nocreate@crm.example.com>", None),
        ("TO:<log+nocreate@crm.example.com> NOTIFY=NEVER", None),
        ("TO:<other+deal-42@crm.example.com>", RELAY_DENIED),
        ("TO:<log+deal-42@other.example>", RELAY_DENIED),
        ("TO:<log+@crm.example.com>", BAD_TAG),
        ("TO:<log+deal-x@crm.example.com>", BAD_TAG),
        ("TO:<log+deal-42%evil.example@crm.example.com>", RELAY_DENIED),
        ('TO:<"log+deal-42"@crm.example.com>', RELAY_DENIED),
        ("TO:<@relay.example:log+deal-42@crm.example.com>", RELAY_DENIED),
        ("TO:<log+deal-42@crm.example.com@evil.example>", RELAY_DENIED),
    ],
)
def test_rcpt_replies_for_tagged_forms(arg: str, reply: str | None) -> None:
    assert recipient_reply(arg, ALLOWED, 0) == reply


def test_bad_tag_reply_says_how_to_write_one() -> None:
    assert BAD_TAG.startswith("550 5.1.1 ")
    assert "deal-N, ticket-N or nocreate" in BAD_TAG and "\r" not in BAD_TAG


@pytest.mark.parametrize(
    ("recipients", "tag"),
    [
        ([LOG], None),
        (["LOG@crm.example.com"], None),
        (["log+deal-42@crm.example.com"], "deal-42"),
        ([LOG, "log+deal-42@crm.example.com"], "deal-42"),
        (["log+deal-42@crm.example.com", "log+ticket-7+nocreate@crm.example.com"],
         "deal-42+ticket-7+nocreate"),
        (["log+ticket-7+deal-42@crm.example.com"], "deal-42+ticket-7"),
        (["crm+in+nocreate@example.org"], "nocreate"),
    ],
)  # fmt: skip
def test_the_tag_a_message_travels_with(recipients: list[str], tag: str | None) -> None:
    assert envelope_tag(recipients, ALLOWED) == tag


@pytest.mark.parametrize(
    ("address", "internal"),
    [
        (LOG, True),
        ("log+deal-42@crm.example.com", True),
        ("log+anything@crm.example.com", True),  # even a tag that does not read
        ("log+deal-42@other.example", False),
        ("other+deal-42@crm.example.com", False),
        ("carol+deal-42@acme.example", False),
    ],
)
def test_tagged_logging_addresses_are_never_participants(address: str, internal: bool) -> None:
    team = Team.build([("ada@example.com", [])], (), [LOG])
    assert team.is_internal(address) is internal
