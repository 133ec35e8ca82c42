"""Who a relayed message is tracked for (crm.tracked), by table."""

from __future__ import annotations

import pytest

from syncd.crm.team import InboxRule, Team
from syncd.crm.tracked import (
    NO_EXTERNAL,
    NO_LEGAL_BASIS,
    NOT_A_CONTACT,
    Known,
    Tracking,
    decide,
    external_recipients,
)

TEAM = Team.build(
    [("ada@example.com", ["a.l@example.com"])],
    [InboxRule("sales", "sales@example.com", "team")],
    ["log@crm.example.com"],
)
KNOWN = {
    "kim@c.example": Known(7, "consent"),
    "lee@c.example": Known(8, None),
}


@pytest.mark.parametrize(
    ("recipients", "legal", "expected"),
    [
        ([], False, Tracking(NO_EXTERNAL)),
        (["Ada@Example.com", "sales@example.com", "log@crm.example.com"], False,
         Tracking(NO_EXTERNAL)),
        (["kim@c.example"], False, Tracking(None, contact_id=7)),
        (["Kim@C.example", "ada@example.com"], False, Tracking(None, contact_id=7)),
        (["new@c.example"], False, Tracking(None)),
        (["kim@c.example", "lee@c.example"], False, Tracking(None, anonymous=True)),
        (["kim@c.example", "KIM@c.example"], False, Tracking(None, contact_id=7)),
        (["kim@c.example"], True, Tracking(None, contact_id=7)),
        (["lee@c.example"], True, Tracking(NO_LEGAL_BASIS)),
        (["new@c.example"], True, Tracking(NOT_A_CONTACT)),
        (["kim@c.example", "new@c.example"], True, Tracking(NOT_A_CONTACT)),
        (["kim@c.example", "lee@c.example"], True, Tracking(NO_LEGAL_BASIS)),
        (["not-an-address"], False, Tracking(NO_EXTERNAL)),
    ],
)  # fmt: skip
def test_who_is_tracked(recipients: list[str], legal: bool, expected: Tracking) -> None:
    external = external_recipients(recipients, TEAM)
    assert decide(external, KNOWN, require_legal_basis=legal) == expected
