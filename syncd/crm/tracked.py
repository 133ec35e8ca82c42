"""Who a relayed message is tracked for: the seeds' rules, as one pure decision.

- No recipient outside the team: not tracked (a colleague's opens tell nothing).
- One external recipient (To, Cc, Bcc or envelope, outside the team): tracked for them;
  their hits go to their contact when they are one (``contact_id``).
- Several external recipients: one pixel and one set of links for all, so a hit cannot
  be told apart: tracked anonymously ("someone").
- With ``privacy.require_legal_basis``: if any external recipient is not a contact yet,
  or is one without a legal basis, nothing is tracked (no pixel, no rewritten links).

The caller looks up which recipients are contacts (``Known``) in the store; this module
only decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from syncd.crm.team import Team
from syncd.mail.addresses import normalise

NO_EXTERNAL = "no recipient outside the team"
NO_LEGAL_BASIS = "a recipient has no legal basis"
NOT_A_CONTACT = "a recipient is not a contact yet"


@dataclass(frozen=True, slots=True)
class Known:
    """A recipient who is a contact."""

    contact_id: int
    legal_basis: str | None = None


@dataclass(frozen=True, slots=True)
class Tracking:
    """The decision: ``untracked`` says why not (None: tracked)."""

    untracked: str | None
    contact_id: int | None = None
    anonymous: bool = False

    @property
    def tracked(self) -> bool:
        return self.untracked is None


def external_recipients(addresses: Iterable[str], team: Team) -> list[str]:
    """The recipients outside the team, normalised, each once, in order."""
    seen: dict[str, None] = {}
    for address in addresses:
        if not address or "@" not in address:
            continue
        norm = normalise(address)
        if not team.is_internal(norm) and not team.is_sender(norm):
            seen.setdefault(norm, None)
    return list(seen)


def decide(
    external: Sequence[str], known: Mapping[str, Known], *, require_legal_basis: bool
) -> Tracking:
    """Whether and for whom to track a message to ``external`` recipients."""
    if not external:
        return Tracking(NO_EXTERNAL)
    if require_legal_basis:
        for address in external:
            contact = known.get(address)
            if contact is None:
                return Tracking(NOT_A_CONTACT)
            if not contact.legal_basis:
                return Tracking(NO_LEGAL_BASIS)
    if len(external) > 1:
        return Tracking(None, anonymous=True)
    contact = known.get(external[0])
    return Tracking(None, contact_id=contact.contact_id if contact else None)
