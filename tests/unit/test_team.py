"""Tables for the team directory: members, aliases, inboxes, who may send as what."""

from __future__ import annotations

import pytest

from syncd.config.model import Config
from syncd.crm.team import InboxRule, Team

ADA, BOB = "ada@example.com", "bob@example.com"
TEAM = Team.build(
    [(ADA, ["A.Lovelace@example.com"]), ("Bob@Example.com", [])],
    [
        InboxRule("ada", "ada@gmail.example", "personal", ADA),
        InboxRule("bob", BOB, "personal", BOB),
        InboxRule("support", "Support@example.com", "team"),
    ],
    ["log@crm.example.com"],
)


@pytest.mark.parametrize(
    ("address", "member", "owner", "sender", "internal"),
    [
        (ADA, ADA, ADA, True, True),
        ("ADA@example.com ", ADA, ADA, True, True),
        ("a.lovelace@example.com", ADA, ADA, True, True),
        ("ada@gmail.example", None, ADA, True, True),
        (BOB, BOB, BOB, True, True),
        ("support@example.com", None, None, True, True),
        ("log@crm.example.com", None, None, False, True),
        ("client@customer.example", None, None, False, False),
        ("", None, None, False, False),
    ],
)
def test_who_an_address_is(
    address: str, member: str | None, owner: str | None, sender: bool, internal: bool
) -> None:
    assert TEAM.member(address) == member
    assert TEAM.owner_of(address) == owner
    assert TEAM.is_sender(address) is sender
    assert TEAM.is_internal(address) is internal


@pytest.mark.parametrize(
    ("member", "address", "may"),
    [
        (ADA, ADA, True),
        (ADA, "a.lovelace@example.com", True),
        ("Ada@Example.com", "ada@gmail.example", True),
        (ADA, "support@example.com", True),
        (BOB, "support@example.com", True),
        (BOB, ADA, False),
        (BOB, "ada@gmail.example", False),
        (ADA, "log@crm.example.com", False),
        (ADA, "client@customer.example", False),
    ],
)
def test_may_send_as(member: str, address: str, may: bool) -> None:
    assert TEAM.may_send_as(member, address) is may


def test_values_are_normalised_and_inboxes_found_by_name() -> None:
    assert TEAM.members == {ADA: ADA, "a.lovelace@example.com": ADA, BOB: BOB}
    assert TEAM.emails == {ADA, BOB}
    assert TEAM.bcc_addresses == {"log@crm.example.com"}
    assert TEAM.inbox("support") == InboxRule("support", "support@example.com", "team")
    assert TEAM.inbox("nope") is None
    assert TEAM.inbox(None) is None


def test_a_member_wins_over_a_personal_inbox_and_the_first_inbox_over_later_ones() -> None:
    team = Team.build(
        [(ADA, []), (BOB, ["shared@example.com"])],
        [
            InboxRule("a", "shared@example.com", "personal", ADA),
            InboxRule("b", "box@example.com", "personal", ADA),
            InboxRule("c", "box@example.com", "personal", BOB),
        ],
    )
    assert team.owner_of("shared@example.com") == BOB
    assert team.owner_of("box@example.com") == ADA


def test_from_config() -> None:
    config = Config.from_mapping(
        {
            "team": [
                {"name": "Ada", "email": "Ada@Example.com", "aliases": ["al@example.com"]},
                {"name": "Bob", "email": BOB},
            ],
            "inboxes": [
                {
                    "name": "ada",
                    "kind": "personal",
                    "owner": ADA,
                    "imap": {"host": "localhost", "username": "ada", "password": "x"},
                    "sync": {"create_contacts": True},
                },
                {
                    "name": "support",
                    "kind": "team",
                    "address": "support@example.com",
                    "imap": {"host": "localhost", "username": "s", "password": "x"},
                },
            ],
            "bcc": {"addresses": ["log@crm.example.com"]},
        }
    )
    team = Team.from_config(config)
    assert team.members == {ADA: ADA, "al@example.com": ADA, BOB: BOB}
    assert team.inboxes == (
        InboxRule("ada", ADA, "personal", ADA, create_contacts=True),
        InboxRule("support", "support@example.com", "team"),
    )
    assert team.is_internal("log@crm.example.com")
    assert team.may_send_as(BOB, "support@example.com")
    assert team.owner_of("al@example.com") == ADA
