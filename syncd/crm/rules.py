"""The CRM's logging rules: given a parsed email and how it arrived, decide what to log.

``plan()`` answers, without writing anything: who the participants are (every address on
From, To, Cc and Bcc that is not a team member's address or alias, not a connected
inbox's address and not a BCC logging address; Reply-To is ignored); whether the mail is
outgoing (sent from a team address or an inbox address); whether it is skipped
(a participant on ``never_log`` -- address or domain, subdomains included, case-insensitive
-- or no participants, or no contact to put it on); which unknown participants become
contacts and with which owner, as the ``ContactPolicy`` of the way the mail came in says
(BCC: always; IMAP: when the inbox's ``sync.create_contacts``; import: when an owner is
given; never with ``require_legal_basis``; ``bcc.create_contacts: false`` turns it off
for BCC and submitted mail, a ``nocreate`` tag for one email); which contacts
it is associated with (with ``require_legal_basis`` only those with a legal basis) and
each contact's company domain; which record types besides contacts
(``logging.associate.records``), unless the sender picked the deals and tickets with a
tag on the BCC address (``crm.bcctags``): then exactly those, and they keep an email
that has no contact to go on. The store carries the plan out. Which addresses are the
team's is ``crm.team.Team``'s answer, held in ``RulesSettings.team``.

The policies are looked up by the provenance's source and inbox, and ``RulesSettings`` is
built from the config in force, so quarantined mail retried later follows today's
settings, not those it arrived under.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from syncd.crm.bcctags import Picks, TagError, parse_tag
from syncd.crm.domains import company_domain, domain_matches
from syncd.crm.lifecycle import Pipelines
from syncd.crm.model import ContactPolicy, ContactState
from syncd.crm.team import InboxRule, Team
from syncd.mail.addresses import domain_of, normalise
from syncd.mail.provenance import Provenance

if TYPE_CHECKING:
    from syncd.mail.parse import Email

SKIP_NEVER_LOG = "a participant is on logging.never_log"
SKIP_NO_PARTICIPANTS = "no participants outside the team"
SKIP_NO_CONTACTS = "no participant is a contact, and none may be created here"

PolicyKey = tuple[str, str | None]  # (provenance.source, provenance.inbox)
# Ways in that no setting changes: BCC and relayed mail create contacts for unknown participants,
# a file import only when it is given an owner. An unknown way in creates none.
STANDING_POLICIES: Mapping[PolicyKey, ContactPolicy] = MappingProxyType(
    {
        ("bcc", None): ContactPolicy(creates=True),
        # Mail a member sent through the submission relay: as BCC mail, it is theirs.
        ("relay", None): ContactPolicy(creates=True),
        ("import", None): ContactPolicy(creates=True, needs_owner=True),
    }
)
NO_POLICY = ContactPolicy()


def standing_policies(bcc_creates: bool = True) -> Mapping[PolicyKey, ContactPolicy]:
    """``STANDING_POLICIES`` with ``bcc.create_contacts``: false keeps BCC mail, and mail
    members submit through syncd (which is logged the same way), to existing contacts."""
    if bcc_creates:
        return STANDING_POLICIES
    quiet = ContactPolicy(creates=False)
    return MappingProxyType({**STANDING_POLICIES, ("bcc", None): quiet, ("relay", None): quiet})


ALL_RECORDS = frozenset({"contacts", "companies", "deals", "tickets"})


@dataclass(frozen=True, slots=True)
class RulesSettings:
    """Every setting the rules and the store's write path read, as one frozen value."""

    team: Team = field(default_factory=Team)
    never_log_addresses: frozenset[str] = frozenset()
    never_log_domains: tuple[str, ...] = ()
    policies: Mapping[PolicyKey, ContactPolicy] = field(default_factory=lambda: STANDING_POLICIES)
    require_legal_basis: bool = False
    max_deals: int = 5
    max_tickets: int = 5
    max_engagements_per_record: int = 10000
    pipelines: Pipelines = field(default_factory=Pipelines)
    # Record types a logged email is associated with by default (logging.associate.records);
    # contacts always are.
    associate: frozenset[str] = ALL_RECORDS

    @classmethod
    def build(
        cls,
        *,
        team: Team | Mapping[str, tuple[str, ...]] | None = None,
        inboxes: tuple[InboxRule, ...] = (),
        bcc_addresses: tuple[str, ...] | frozenset[str] = (),
        never_log: tuple[str, ...] | list[str] = (),
        policies: Mapping[PolicyKey, ContactPolicy] = STANDING_POLICIES,
        **rest: Any,
    ) -> RulesSettings:
        """Normalise plain values: ``team`` is a ``Team``, or maps a primary email to its
        aliases and is built into one with ``inboxes`` and ``bcc_addresses``. Each of the
        team's inboxes adds the contact policy of its mail to ``policies``."""
        if not isinstance(team, Team):
            team = Team.build((team or {}).items(), inboxes, bcc_addresses)
        addresses = frozenset(normalise(e) for e in never_log if "@" in e)
        domains = tuple(normalise(d).lstrip("@") for d in never_log if "@" not in d)
        ways = dict(policies)
        for inbox in team.inboxes:  # the first inbox of a name wins, as ``inbox()`` finds it
            ways.setdefault(("imap", inbox.name), inbox_policy(inbox))
        return cls(
            team=team,
            never_log_addresses=addresses,
            never_log_domains=domains,
            policies=MappingProxyType(ways),
            **rest,
        )

    @classmethod
    def from_config(cls, config: Any) -> RulesSettings:
        """Build from a ``syncd.config.model.Config`` (attribute names are the YAML keys)."""
        associate = config.logging.associate
        return cls.build(
            never_log=tuple(config.logging.never_log or ()),
            team=Team.from_config(config),
            policies=standing_policies(config.bcc.create_contacts if config.bcc else True),
            require_legal_basis=bool(config.privacy.require_legal_basis),
            max_deals=int(associate.max_deals),
            max_tickets=int(associate.max_tickets),
            max_engagements_per_record=int(config.store.max_engagements_per_record),
            pipelines=Pipelines.from_config(getattr(config, "pipelines", None)),
            associate=frozenset(associate.records) | {"contacts"},
        )

    def policy_for(self, provenance: Provenance) -> ContactPolicy:
        """The contact policy of the way ``provenance`` came in."""
        return self.policies.get((provenance.source, provenance.inbox), NO_POLICY)

    def never_logged(self, address: str) -> bool:
        address = normalise(address)
        if address in self.never_log_addresses:
            return True
        domain = domain_of(address)
        return any(domain_matches(domain, rule) for rule in self.never_log_domains)


@dataclass(frozen=True, slots=True)
class ContactPlan:
    """One contact the email is associated with; ``contact_id`` None means create it."""

    email: str
    name: str
    contact_id: int | None
    owner: str | None  # given to the contact only when it has no owner yet
    company_domain: str | None


@dataclass(frozen=True, slots=True)
class Plan:
    """What to log for one email; ``skip`` set means log nothing.

    ``deals`` and ``tickets``: None means each contact's most recent open ones (up to
    ``max_deals``/``max_tickets``); a tuple means exactly these (a BCC tag's picks, or
    none when ``logging.associate.records`` leaves the type out). ``picked`` is the tag
    that picked them, kept with the email so that a later copy adds no automatic ones.
    """

    direction: str  # "incoming" | "outgoing"
    participants: tuple[str, ...]
    contacts: tuple[ContactPlan, ...] = ()
    sender: str | None = None  # the sending member (primary email) of outgoing mail
    skip: str | None = None
    companies: bool = True  # associate the contacts' companies
    deals: tuple[int, ...] | None = None
    tickets: tuple[int, ...] | None = None
    picked: str | None = None


def participants(email: Email, settings: RulesSettings) -> dict[str, str]:
    """Participant address -> display name, in header order (From, To, Cc, Bcc)."""
    found: dict[str, str] = {}
    for address in email.addresses():
        key = normalise(address.email)
        if not key or "@" not in key or settings.team.is_internal(key):
            continue
        if key not in found or (not found[key] and address.name):
            found[key] = address.name or ""
    return found


def inbox_policy(inbox: InboxRule) -> ContactPolicy:
    """An inbox's mail creates contacts when its settings say so; a personal inbox's
    member owns them."""
    owner = inbox.owner if inbox.kind == "personal" else None
    return ContactPolicy(creates=inbox.create_contacts, owner=owner)


def may_create(provenance: Provenance, settings: RulesSettings) -> bool:
    """Whether unknown participants of mail arriving this way become contacts."""
    if settings.require_legal_basis:
        return False
    return settings.policy_for(provenance).may_create(provenance.owner)


def new_contact_owner(
    provenance: Provenance, settings: RulesSettings, sender: str | None
) -> str | None:
    """Outgoing: the sending member; incoming: the given owner, else the policy's."""
    if sender:
        return sender
    if provenance.owner:
        return settings.team.member(provenance.owner) or normalise(provenance.owner)
    return settings.policy_for(provenance).owner


def picks_of(provenance: Provenance) -> Picks:
    """The records the sender picked with a BCC tag; none for mail without one. A tag
    that does not read (it was checked at RCPT, so only a hand-edited spool row) picks
    nothing rather than guess."""
    if not provenance.tag:
        return Picks()
    try:
        return parse_tag(provenance.tag)
    except TagError:
        return Picks()


def plan(
    email: Email,
    provenance: Provenance,
    settings: RulesSettings,
    known: Mapping[str, ContactState],
) -> Plan:
    """Decide what to log for ``email``; ``known`` maps addresses to existing contacts."""
    people = participants(email, settings)
    from_address = normalise(email.from_.email) if email.from_ else ""
    outgoing = bool(from_address) and settings.team.is_internal(from_address)
    direction = "outgoing" if outgoing else "incoming"
    sender = settings.team.owner_of(from_address) if outgoing else None
    picks = picks_of(provenance)
    base = Plan(direction=direction, participants=tuple(people), sender=sender)
    base = _records(base, picks, settings)
    if any(settings.never_logged(a) for a in people):
        return _skip(base, SKIP_NEVER_LOG)
    # Records the sender named keep mail that has no contact to go on (internal mail, or
    # nocreate to new people), unless require_legal_basis withheld someone.
    rescued = picks.records and (not settings.require_legal_basis or not people)
    if not people and not rescued:
        return _skip(base, SKIP_NO_PARTICIPANTS)
    creating = may_create(provenance, settings) and not picks.nocreate
    owner = new_contact_owner(provenance, settings, sender)
    contacts: list[ContactPlan] = []
    seen_ids: set[int] = set()
    for address, name in people.items():
        state = known.get(address)
        if state is None:
            if creating:
                contacts.append(ContactPlan(address, name, None, owner, company_domain(address)))
            continue
        if state.contact_id in seen_ids:
            continue
        if settings.require_legal_basis and not state.legal_basis:
            continue
        seen_ids.add(state.contact_id)
        contacts.append(
            ContactPlan(address, name, state.contact_id, owner, company_domain(address))
        )
    if not contacts and not rescued:
        return _skip(base, SKIP_NO_CONTACTS)
    return dataclasses.replace(base, contacts=tuple(contacts))


def _records(base: Plan, picks: Picks, settings: RulesSettings) -> Plan:
    """Which companies, deals and tickets: the tag's picks replace the automatic deals
    and tickets (a tag naming only a deal picks no ticket); else the settings' types."""
    wanted = settings.associate
    if picks.records:
        deals: tuple[int, ...] | None = picks.deals
        tickets: tuple[int, ...] | None = picks.tickets
    else:
        deals = None if "deals" in wanted else ()
        tickets = None if "tickets" in wanted else ()
    return dataclasses.replace(
        base,
        companies="companies" in wanted,
        deals=deals,
        tickets=tickets,
        picked=str(picks) if picks.records else None,
    )


def _skip(base: Plan, reason: str) -> Plan:
    return dataclasses.replace(base, contacts=(), skip=reason)
