"""The CRM logging rules, table by table: participants, direction, never_log, contact
creation and owners, legal basis, company domains, and settings built from a Config."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from syncd.config.model import Config
from syncd.crm.bcctags import parse_tag
from syncd.crm.model import ContactState
from syncd.crm.rules import (
    SKIP_NEVER_LOG,
    SKIP_NO_CONTACTS,
    SKIP_NO_PARTICIPANTS,
    ContactPlan,
    InboxRule,
    Plan,
    RulesSettings,
    plan,
)
from syncd.mail.parse import Address, Email
from syncd.mail.provenance import Provenance

NOW = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
ADA, BOB = "ada@example.com", "bob@example.com"


def created(result: Plan) -> tuple[ContactPlan, ...]:
    """The contacts the plan creates."""
    return tuple(c for c in result.contacts if c.contact_id is None)


def settings(**overrides: object) -> RulesSettings:
    base: dict[str, object] = {
        "team": {ADA: ("a.lovelace@example.com",), BOB: ()},
        "inboxes": (
            InboxRule("ada", ADA, "personal", ADA, create_contacts=True),
            InboxRule("support", "support@example.com", "team", None, create_contacts=True),
            InboxRule("quiet", "sales@example.com", "team", None, create_contacts=False),
        ),
        "bcc_addresses": ("log@crm.example.com",),
        "never_log": ("partner.example", "spouse@example.net"),
    }
    base.update(overrides)
    return RulesSettings.build(**base)  # type: ignore[arg-type]


def addr(text: str) -> Address:
    name, _, email = text.rpartition(" ")
    return Address(name, email.lower())


def email(
    sender: str | None,
    to: tuple[str, ...] = (),
    cc: tuple[str, ...] = (),
    bcc: tuple[str, ...] = (),
) -> Email:
    return Email(
        key="<k@x>", message_id="k@x", subject="s", date=NOW, date_missing=False,
        from_=addr(sender) if sender else None,
        to=tuple(map(addr, to)), cc=tuple(map(addr, cc)), bcc=tuple(map(addr, bcc)),
        in_reply_to=None, references=(), gm_thrid=None, thread_key="t", text="",
        size=10, attachments=(), defects=(),
    )  # fmt: skip


BCC = Provenance("bcc", NOW)
IMPORT = Provenance("import", NOW)
IMPORT_OWNED = Provenance("import", NOW, owner=BOB)


def imap(inbox: str) -> Provenance:
    return Provenance("imap", NOW, inbox=inbox, folder="INBOX", uid=1)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # Team members, aliases, inbox and BCC addresses are never participants.
        (email(ADA, ("Carol carol@acme.com",)), ("carol@acme.com",)),
        (email("a.lovelace@example.com", ("carol@acme.com",), cc=(BOB,)), ("carol@acme.com",)),
        (email("carol@acme.com", ("support@example.com",), bcc=("log@crm.example.com",)),
         ("carol@acme.com",)),
        # From, To, Cc, Bcc in that order, each address once, case folded.
        (email("dan@acme.com", ("carol@acme.com",), ("eve@other.org",), ("CAROL@ACME.COM",)),
         ("dan@acme.com", "carol@acme.com", "eve@other.org")),
        (email(None, ("carol@acme.com",)), ("carol@acme.com",)),
        (email(ADA, (BOB,)), ()),
    ],
)  # fmt: skip
def test_participants(message: Email, expected: tuple[str, ...]) -> None:
    assert plan(message, BCC, settings(), {}).participants == expected


@pytest.mark.parametrize(
    ("sender", "direction", "member"),
    [
        (ADA, "outgoing", ADA),
        ("a.lovelace@example.com", "outgoing", ADA),  # alias -> the member
        ("support@example.com", "outgoing", None),  # a team inbox sends for the team
        ("carol@acme.com", "incoming", None),
        (None, "incoming", None),
    ],
)
def test_direction_and_sender(sender: str | None, direction: str, member: str | None) -> None:
    result = plan(email(sender, ("zed@acme.com",)), BCC, settings(), {})
    assert (result.direction, result.sender) == (direction, member)


@pytest.mark.parametrize(
    "other",
    [
        "spouse@example.net",
        "SPOUSE@Example.NET",
        "anyone@partner.example",
        "anyone@mail.partner.example",  # subdomain of a never_log domain
        "x@PARTNER.EXAMPLE",
    ],
)
def test_never_log_skips_whole_email(other: str) -> None:
    known = {"carol@acme.com": ContactState(1)}
    result = plan(email(ADA, ("carol@acme.com",), cc=(other,)), BCC, settings(), known)
    assert result.skip == SKIP_NEVER_LOG
    assert result.contacts == ()


@pytest.mark.parametrize("other", ["x@notpartner.example", "spouse@example.org", "a@example.net"])
def test_never_log_does_not_overreach(other: str) -> None:
    result = plan(email(ADA, (other,)), BCC, settings(), {})
    assert result.skip is None


def test_no_participants_is_skipped() -> None:
    assert plan(email(ADA, (BOB,)), BCC, settings(), {}).skip == SKIP_NO_PARTICIPANTS


@pytest.mark.parametrize(
    ("provenance", "creates"),
    [
        (BCC, True),
        (imap("ada"), True),
        (imap("support"), True),
        (imap("quiet"), False),  # team inbox without create_contacts
        (imap("unknown"), False),
        (IMPORT, False),  # import without --owner
        (IMPORT_OWNED, True),
    ],
)
def test_contact_creation_by_source(provenance: Provenance, creates: bool) -> None:
    result = plan(email("carol@acme.com", ("ada@example.com",)), provenance, settings(), {})
    if creates:
        assert [(c.email, c.contact_id) for c in created(result)] == [("carol@acme.com", None)]
    else:
        assert result.skip == SKIP_NO_CONTACTS


@pytest.mark.parametrize(
    ("message", "provenance", "owner"),
    [
        (email(BOB, ("carol@acme.com",)), BCC, BOB),  # outgoing: the sending member
        (email("a.lovelace@example.com", ("carol@acme.com",)), IMPORT_OWNED, ADA),
        (email("carol@acme.com", (ADA,)), imap("ada"), ADA),  # personal inbox owner
        (email("carol@acme.com", ("support@example.com",)), imap("support"), None),
        (email("carol@acme.com", (ADA,)), IMPORT_OWNED, BOB),  # incoming: --owner
    ],
)
def test_new_contact_owner(message: Email, provenance: Provenance, owner: str | None) -> None:
    (new,) = created(plan(message, provenance, settings(), {}))
    assert new.owner == owner


def test_known_contacts_are_associated_once_and_names_kept() -> None:
    known = {"carol@acme.com": ContactState(7), "c.alt@acme.com": ContactState(7)}
    message = email(ADA, ("Carol C carol@acme.com", "c.alt@acme.com", "New Guy new@acme.com"))
    result = plan(message, BCC, settings(), known)
    assert [(c.email, c.contact_id, c.name) for c in result.contacts] == [
        ("carol@acme.com", 7, "Carol C"),
        ("new@acme.com", None, "New Guy"),
    ]


@pytest.mark.parametrize("provenance", [BCC, imap("ada"), IMPORT_OWNED])
def test_legal_basis_gates_association_and_creation(provenance: Provenance) -> None:
    known = {
        "carol@acme.com": ContactState(1, legal_basis="consent"),
        "dan@acme.com": ContactState(2, legal_basis=None),
    }
    message = email(ADA, ("carol@acme.com", "dan@acme.com", "new@acme.com"))
    result = plan(message, provenance, settings(require_legal_basis=True), known)
    assert [c.contact_id for c in result.contacts] == [1]
    assert created(result) == ()


def test_legal_basis_with_no_qualifying_contact_skips() -> None:
    known = {"dan@acme.com": ContactState(2)}
    result = plan(email(ADA, ("dan@acme.com",)), BCC, settings(require_legal_basis=True), known)
    assert result.skip == SKIP_NO_CONTACTS


@pytest.mark.parametrize(
    ("address", "domain"),
    [
        ("carol@acme.com", "acme.com"),
        ("carol@mail.example.co.uk", "example.co.uk"),
        ("carol@gmail.com", None),
        ("carol@yahoo.co.uk", None),
        ("carol@hotmail.fr", None),
        ("carol@gmx.de", None),
        ("carol@proton.me", None),
    ],
)
def test_company_domain_per_contact(address: str, domain: str | None) -> None:
    (contact,) = plan(email(ADA, (address,)), BCC, settings(), {}).contacts
    assert contact.company_domain == domain


def test_settings_from_config() -> None:
    config = Config.from_mapping(
        {
            "store": {"max_engagements_per_record": 3},
            "team": [{"name": "Ada", "email": "Ada@Example.com", "aliases": ["al@example.com"]}],
            "inboxes": [
                {
                    "name": "ada",
                    "kind": "personal",
                    "owner": "ada@example.com",
                    "imap": {"host": "localhost", "username": "ada", "password": "x"},
                    "sync": {"create_contacts": True},
                }
            ],
            "logging": {"never_log": ["Partner.example"], "associate": {"max_deals": 2}},
            "privacy": {"require_legal_basis": True},
            "pipelines": {"tickets": {"open": ["new", "triage"], "closed": "done"}},
        }
    )
    built = RulesSettings.from_config(config)
    assert built.team.members == {ADA: ADA, "al@example.com": ADA}
    assert built.team.inboxes == (InboxRule("ada", ADA, "personal", ADA, True),)
    assert built.never_log_domains == ("partner.example",)
    assert (built.max_deals, built.max_tickets, built.max_engagements_per_record) == (2, 5, 3)
    assert built.require_legal_basis is True
    assert built.pipelines.tickets.statuses == ("new", "triage", "done")
    assert built.pipelines.deals.won == "closedwon"


@pytest.mark.parametrize(
    ("provenance", "legal_basis", "creates", "owner"),
    [
        (Provenance("bcc", NOW), False, True, None),
        (Provenance("bcc", NOW, owner="A.Lovelace@example.com"), False, True, ADA),
        (Provenance("imap", NOW, inbox="ada"), False, True, ADA),
        (Provenance("imap", NOW, inbox="support"), False, True, None),
        (Provenance("imap", NOW, inbox="quiet"), False, False, None),
        (Provenance("imap", NOW, inbox="gone"), False, False, None),
        (Provenance("import", NOW), False, False, None),
        (Provenance("import", NOW, owner=BOB), False, True, BOB),
        (Provenance("smtp", NOW), False, False, None),
        (Provenance("bcc", NOW), True, False, None),
        (Provenance("imap", NOW, inbox="ada"), True, False, ADA),
        (Provenance("import", NOW, owner=BOB), True, False, BOB),
    ],
)
def test_contact_policy_by_way_in(
    provenance: Provenance, legal_basis: bool, creates: bool, owner: str | None
) -> None:
    from syncd.crm.rules import may_create, new_contact_owner

    rules = settings(require_legal_basis=legal_basis)
    assert may_create(provenance, rules) is creates
    assert new_contact_owner(provenance, rules, None) == owner
    assert new_contact_owner(provenance, rules, BOB) == BOB


def test_contact_policy_follows_the_settings_it_is_asked_with() -> None:
    """Quarantined mail retried later is judged by the settings in force then."""
    from syncd.crm.rules import may_create

    retried = Provenance("imap", NOW, inbox="quiet", folder="INBOX", uid=3)
    assert not may_create(retried, settings())
    now_on = (InboxRule("quiet", "sales@example.com", "team", None, create_contacts=True),)
    assert may_create(retried, settings(inboxes=now_on))


# Which records: logging.associate.records, bcc.create_contacts and BCC tags --------------

KNOWN = {"carol@acme.com": ContactState(11)}


def tagged(tag: str | None) -> Provenance:
    return Provenance("bcc", NOW, tag=tag)


@pytest.mark.parametrize(
    ("records", "companies", "deals", "tickets"),
    [
        (("contacts", "companies", "deals", "tickets"), True, None, None),
        (("contacts",), False, (), ()),
        (("contacts", "deals"), False, None, ()),
        (("contacts", "companies", "tickets"), True, (), None),
    ],
)
def test_associate_records_by_default(
    records: tuple[str, ...], companies: bool, deals: object, tickets: object
) -> None:
    result = plan(
        email(ADA, ("carol@acme.com",)), BCC, settings(associate=frozenset(records)), KNOWN
    )
    assert (result.companies, result.deals, result.tickets) == (companies, deals, tickets)
    assert [c.contact_id for c in result.contacts] == [11] and result.picked is None


@pytest.mark.parametrize(
    ("tag", "deals", "tickets", "picked"),
    [
        (None, None, None, None),
        ("deal-42", (42,), (), "deal-42"),
        ("ticket-7", (), (7,), "ticket-7"),
        ("deal-42+ticket-7", (42,), (7,), "deal-42+ticket-7"),
        ("nocreate", None, None, None),  # picks no record: the automatic ones stay
        ("deal-42+nocreate", (42,), (), "deal-42+nocreate"),
        ("deal-x", None, None, None),  # unreadable (only a hand-edited spool row): no picks
    ],
)
def test_a_tag_picks_exactly_its_deals_and_tickets(
    tag: str | None, deals: object, tickets: object, picked: str | None
) -> None:
    result = plan(email(ADA, ("carol@acme.com",)), tagged(tag), settings(), KNOWN)
    assert (result.deals, result.tickets, result.picked) == (deals, tickets, picked)
    assert result.companies and result.skip is None


def test_a_tag_overrides_the_default_record_types() -> None:
    quiet = settings(associate=frozenset({"contacts"}))
    result = plan(email(ADA, ("carol@acme.com",)), tagged("deal-42"), quiet, KNOWN)
    assert (result.deals, result.tickets, result.companies) == ((42,), (), False)


@pytest.mark.parametrize(
    ("tag", "create", "created_", "skip"),
    [
        (None, True, ["dan@beta.example"], None),
        ("nocreate", True, [], None),
        ("nocreate+deal-42", True, [], None),
        (None, False, [], None),  # bcc.create_contacts: false
        ("deal-42", False, [], None),
    ],
)
def test_nocreate_and_bcc_create_contacts(
    tag: str | None, create: bool, created_: list[str], skip: str | None
) -> None:
    from syncd.crm.rules import standing_policies

    rules = settings(policies=standing_policies(create))
    result = plan(email(ADA, ("carol@acme.com", "dan@beta.example")), tagged(tag), rules, KNOWN)
    assert [c.email for c in created(result)] == created_
    assert [c.contact_id for c in result.contacts if c.contact_id] == [11]
    assert result.skip == skip


@pytest.mark.parametrize(
    ("message", "tag", "legal_basis", "skip"),
    [
        # New people only, nocreate: no contact; a picked record keeps the mail.
        (email(ADA, ("dan@beta.example",)), "nocreate", False, SKIP_NO_CONTACTS),
        (email(ADA, ("dan@beta.example",)), "nocreate+deal-42", False, None),
        # Internal mail: logged only on records the sender named.
        (email(ADA, (BOB,)), None, False, SKIP_NO_PARTICIPANTS),
        (email(ADA, (BOB,)), "ticket-7", False, None),
        (email(ADA, (BOB,)), "ticket-7", True, None),  # nobody's basis is at stake
        # require_legal_basis withheld someone: a tag does not bring the mail back.
        (email(ADA, ("dan@beta.example",)), "deal-42", True, SKIP_NO_CONTACTS),
        # never_log always wins.
        (email(ADA, ("pat@partner.example",)), "deal-42", False, SKIP_NEVER_LOG),
    ],
)
def test_picked_records_keep_mail_without_contacts(
    message: Email, tag: str | None, legal_basis: bool, skip: str | None
) -> None:
    result = plan(message, tagged(tag), settings(require_legal_basis=legal_basis), {})
    assert result.skip == skip
    if skip is None:
        assert result.contacts == () and result.picked == str(parse_tag(tag or ""))


def test_tagged_logging_address_on_the_mail_is_no_participant() -> None:
    message = email(ADA, ("carol@acme.com",), bcc=("log+deal-42@crm.example.com",))
    assert plan(message, tagged("deal-42"), settings(), KNOWN).participants == ("carol@acme.com",)


def test_records_and_create_contacts_from_config() -> None:
    from syncd.crm.rules import may_create

    def built(logging: dict[str, object], bcc: dict[str, object] | None) -> RulesSettings:
        data: dict[str, object] = {
            "team": [{"name": "Ada", "email": ADA}],
            "logging": logging,
        }
        if bcc is not None:
            data["bcc"] = {"addresses": ["log@crm.example.com"], **bcc}
        return RulesSettings.from_config(Config.from_mapping(data))

    old = built({"associate": {"max_deals": 2}}, {})
    assert old.associate == {"contacts", "companies", "deals", "tickets"}
    assert may_create(BCC, old) and may_create(Provenance("relay", NOW), old)
    chosen = built({"associate": {"records": ["deals", "contacts"]}}, {"create_contacts": False})
    assert chosen.associate == {"contacts", "deals"}
    assert not may_create(BCC, chosen) and not may_create(Provenance("relay", NOW), chosen)
    assert may_create(IMPORT_OWNED, chosen)  # other ways in keep their own rules
    assert may_create(BCC, built({}, None))  # no bcc section: the standing policy
