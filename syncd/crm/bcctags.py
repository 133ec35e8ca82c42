"""Tags on the BCC logging address: the sender picks the records of one email.

``log+deal-42@crm.example.com`` logs the email on deal 42 instead of each contact's
most recent open deals and tickets; ``log+ticket-7@``, ``log+nocreate@`` (no contact is
created for unknown participants) and combinations (``log+deal-42+ticket-7+nocreate@``)
work the same way. The grammar, case-insensitive like every address here::

    tagged  = LOCAL "+" tag "@" DOMAIN     where LOCAL@DOMAIN is a logging address
    tag     = part *("+" part)              at most MAX_PARTS parts
    part    = "deal-" id / "ticket-" id / "nocreate"
    id      = %x31-39 *17DIGIT              1 and up, no leading zero, fits SQLite's integer

Only the tagged forms of a configured logging address are ever accepted: the domain is
the logging address's own and the local part starts with its local part and a ``+``;
anything else is not ours (``logging_recipient`` returns None, the endpoint answers
550 as for any relay attempt). A tagged form whose tag breaks the grammar raises
``TagError``: a sender's typo, answered with a 550 that says how to write it, never
logged under a guess. Whether a named deal or ticket exists is the store's to know, when
the mail is logged (README: "Picking the records for one email").

``Picks`` is the parsed tag; ``str(picks)`` is its canonical text (what the spool, the
quarantine and the store keep), and ``parse_tag`` reads that text back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from syncd.mail.addresses import normalise, split

MAX_PARTS = 10
_PART = re.compile(r"(deal|ticket)-([1-9][0-9]{0,17})|nocreate")


class TagError(ValueError):
    """A logging address's tagged form with a tag syncd does not read."""


@dataclass(frozen=True, slots=True)
class Picks:
    """What a tag picked: exactly these deals and tickets (sorted, once each), and
    whether unknown participants stay without a contact."""

    deals: tuple[int, ...] = ()
    tickets: tuple[int, ...] = ()
    nocreate: bool = False

    @property
    def records(self) -> bool:
        """The tag names deals or tickets: they replace the automatic ones."""
        return bool(self.deals or self.tickets)

    def __bool__(self) -> bool:
        return self.records or self.nocreate

    def __or__(self, other: Picks) -> Picks:
        """Several tagged recipients of one message: their picks add up."""
        return Picks(
            tuple(sorted({*self.deals, *other.deals})),
            tuple(sorted({*self.tickets, *other.tickets})),
            self.nocreate or other.nocreate,
        )

    def __str__(self) -> str:
        parts = [f"deal-{i}" for i in self.deals] + [f"ticket-{i}" for i in self.tickets]
        return "+".join(parts + (["nocreate"] if self.nocreate else []))


def parse_tag(text: str) -> Picks:
    """The picks of ``text`` (what follows the ``+``); ``TagError`` if it breaks the
    grammar. Repeated parts count once."""
    parts = normalise(text).split("+")
    if len(parts) > MAX_PARTS:
        raise TagError(f"a tag has at most {MAX_PARTS} parts")
    deals: set[int] = set()
    tickets: set[int] = set()
    nocreate = False
    for part in parts:
        match = _PART.fullmatch(part)
        if match is None:
            raise TagError(f"{part!r} is not deal-N, ticket-N or nocreate")
        if match.group(1) == "deal":
            deals.add(int(match.group(2)))
        elif match.group(1) == "ticket":
            tickets.add(int(match.group(2)))
        else:
            nocreate = True
    return Picks(tuple(sorted(deals)), tuple(sorted(tickets)), nocreate)


def tag_of(address: str, logging_addresses: Iterable[str]) -> str | None:
    """The tag text of ``address`` if it is a ``+`` form of one of ``logging_addresses``
    (``''`` for ``log+@``), else None. A logging address that itself holds a ``+`` is
    matched whole first, by the caller; here the longest local part wins."""
    parts = split(address)
    if parts is None:
        return None
    local, domain = parts
    found: str | None = None
    best = -1
    for candidate in logging_addresses:
        base_local, base_domain = split(candidate) or ("", "")
        if base_domain == domain and local.startswith(base_local + "+") and len(base_local) > best:
            found, best = local[len(base_local) + 1 :], len(base_local)
    return found


def logging_recipient(address: str, logging_addresses: frozenset[str]) -> Picks | None:
    """What ``address`` means as a BCC recipient: empty ``Picks`` for a logging address,
    the tag's picks for a tagged form of one, None for any other address. ``TagError``
    for a tagged form whose tag breaks the grammar. ``logging_addresses`` are normalised."""
    if normalise(address) in logging_addresses:
        return Picks()
    tag = tag_of(address, logging_addresses)
    if tag is None:
        return None
    return parse_tag(tag)


def is_tagged_form(address: str, logging_addresses: Iterable[str]) -> bool:
    """Any ``+`` form of a logging address, well formed or not: never a participant."""
    return tag_of(address, logging_addresses) is not None
