"""Plain values the CRM rules, the store and the pipeline hand each other.

``ContactState`` is what the rules need to know about an existing contact;
``ContactPolicy`` is what a way in (a source, an inbox) allows for unknown participants;
``ContactRecord`` is one contact read from an import file (CSV or vCard); ``Outcome``
is what the pipeline reports for each message it was given. Frozen and free of I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OutcomeStatus = Literal["logged", "duplicate", "skipped", "quarantined"]


@dataclass(frozen=True, slots=True)
class ContactState:
    """An existing contact as the rules see it, looked up by one of its addresses."""

    contact_id: int
    owner: str | None = None
    legal_basis: str | None = None
    lifecycle_stage: str | None = None


@dataclass(frozen=True, slots=True)
class ContactPolicy:
    """Whether mail arriving one way may create contacts, and who owns those it creates.

    ``creates``: unknown participants become contacts; ``needs_owner``: only when the
    mail's provenance names an owner (file import with ``--owner``); ``owner``: the
    member who owns them when the provenance names none (a personal inbox's member).
    """

    creates: bool = False
    needs_owner: bool = False
    owner: str | None = None

    def may_create(self, given_owner: str | None) -> bool:
        return self.creates and (given_owner is not None or not self.needs_owner)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one message.

    ``logged``: a new engagement; ``duplicate``: the message was already logged (its
    sighting and any new associations were added), or a person removed it from the
    timeline (``reason`` says so, and nothing was written); ``skipped``: the rules log nothing
    (``reason`` says why); ``quarantined``: it could not be logged and waits in the
    quarantine with ``reason``. ``key`` is the message key when the message parsed.
    """

    status: OutcomeStatus
    key: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ContactRecord:
    """One contact from an import file; empty strings mean "not given"."""

    email: str
    first_name: str = ""
    last_name: str = ""
    company: str = ""
    owner: str = ""
    lifecycle_stage: str = ""
    legal_basis: str = ""
    other_emails: tuple[str, ...] = ()
    where: str = ""  # "file:line" for error messages


# The columns of a contacts CSV file, read by ``contacts import``, written by ``export``.
CSV_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "company",
    "owner",
    "lifecycle_stage",
    "legal_basis",
)
