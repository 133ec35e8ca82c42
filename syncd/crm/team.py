"""Who the team is: members and their aliases, connected inboxes, BCC logging addresses.

``Team`` is built once from the config (``Team.from_config``) or from plain values
(``Team.build``) and answers every question about the team's own addresses; the rules,
the BCC sender check, the CLI and the config's cross-field rules all ask it. Every answer
takes an address in any case and compares its normal form (``mail.addresses.normalise``).

- ``emails``: every member's primary email.
- ``member``: the member (primary email) whose own address or alias this is.
- ``owner_of``: the same, and a personal inbox's address belongs to that inbox's owner.
- ``is_sender``: mail From this address may be logged by BCC: a member's address, alias
  or personal inbox, or a team inbox (shared) address.
- ``may_send_as``: a member may send as their own addresses and as any team inbox.
- ``inbox``: a connected inbox by name.
- ``is_internal``: never a participant: a member's address or alias, any inbox's
  address, a BCC logging address with or without a tag (``crm.bcctags``).

Where two entries claim one address (which config validation mostly refuses), a member's
own address or alias wins over a personal inbox, and the first inbox over later ones.
A personal inbox's owner is taken to be a member; config validation refuses anything else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from syncd.crm.bcctags import is_tagged_form
from syncd.mail.addresses import normalise


@dataclass(frozen=True, slots=True)
class InboxRule:
    """What the team and the rules need to know about one connected inbox."""

    name: str
    address: str  # a personal inbox without its own address has its owner's
    kind: str  # "personal" | "team"
    owner: str | None = None  # personal inboxes: the member's primary email
    create_contacts: bool = False


def _empty() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Team:
    """The team's addresses as one frozen value; see the module docstring for the rules."""

    members: Mapping[str, str] = field(default_factory=_empty)  # address or alias -> primary
    inboxes: tuple[InboxRule, ...] = ()
    bcc_addresses: frozenset[str] = frozenset()
    emails: frozenset[str] = frozenset()  # every member's primary email
    _owners: Mapping[str, str] = field(init=False, repr=False, compare=False)
    _shared: frozenset[str] = field(init=False, repr=False, compare=False)
    _internal: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        owners = dict(self.members)
        for inbox in self.inboxes:
            if inbox.kind == "personal" and inbox.owner and inbox.address:
                owners.setdefault(inbox.address, inbox.owner)
        shared = frozenset(i.address for i in self.inboxes if i.kind != "personal" and i.address)
        boxes = frozenset(i.address for i in self.inboxes if i.address)
        internal = frozenset(self.members) | boxes | self.bcc_addresses
        object.__setattr__(self, "_owners", MappingProxyType(owners))
        object.__setattr__(self, "_shared", shared)
        object.__setattr__(self, "_internal", internal)

    @classmethod
    def build(
        cls,
        members: Iterable[tuple[str, Iterable[str]]] = (),
        inboxes: Iterable[InboxRule] = (),
        bcc_addresses: Iterable[str] = (),
    ) -> Team:
        """From plain values: ``(primary email, aliases)`` pairs, inboxes, BCC addresses."""
        addresses: dict[str, str] = {}
        emails: set[str] = set()
        for primary, aliases in members:
            primary = normalise(primary)
            emails.add(primary)
            addresses[primary] = primary
            for alias in aliases:
                addresses[normalise(alias)] = primary
        return cls(
            MappingProxyType(addresses),
            tuple(
                dataclasses.replace(
                    i, address=normalise(i.address), owner=normalise(i.owner) if i.owner else None
                )
                for i in inboxes
            ),
            frozenset(normalise(a) for a in bcc_addresses),
            frozenset(emails),
        )

    @classmethod
    def from_config(cls, config: Any) -> Team:
        """From a ``syncd.config.model.Config`` (attribute names are the YAML keys)."""
        inboxes = (
            InboxRule(
                name=inbox.name,
                address=inbox.address or inbox.owner or "",
                kind=inbox.kind,
                owner=inbox.owner,
                create_contacts=bool(inbox.sync.create_contacts),
            )
            for inbox in config.inboxes
        )
        bcc = getattr(config, "bcc", None)
        return cls.build(
            ((m.email, m.aliases or ()) for m in config.team),
            inboxes,
            bcc.addresses if bcc is not None else (),
        )

    def member(self, address: str) -> str | None:
        """The member (primary email) whose own address or alias ``address`` is."""
        return self.members.get(normalise(address))

    def owner_of(self, address: str) -> str | None:
        """The member ``address`` belongs to: own address, alias or personal inbox."""
        return self._owners.get(normalise(address))

    def is_sender(self, address: str) -> bool:
        """Whether mail From ``address`` is the team's own: a member's or a team inbox's."""
        address = normalise(address)
        return address in self._owners or address in self._shared

    def may_send_as(self, member: str, address: str) -> bool:
        """A member sends as their own addresses and as any team inbox."""
        address = normalise(address)
        return self._owners.get(address) == normalise(member) or address in self._shared

    def inbox(self, name: str | None) -> InboxRule | None:
        return next((i for i in self.inboxes if i.name == name), None) if name else None

    def is_internal(self, address: str) -> bool:
        """A member's address or alias, an inbox address or a BCC logging address, tags
        included (``log+deal-42@``: a copy may name it in Bcc or To)."""
        address = normalise(address)
        if address in self._internal:
            return True
        return "+" in address and is_tagged_form(address, self.bcc_addresses)
