"""The source contract: what every source hands over and what it gets back.

A source hands over batches: raw messages, each with the ``Provenance`` of how it came,
plus the source's own record of that batch (an IMAP folder checkpoint, the spool rows
the mail came from, nothing for a file import). Its ``Deliver`` (given by its service)
logs the mail and writes that record in ONE transaction, so each message is either
still with the source or in the CRM, never both or neither, and returns one ``Outcome``
per message, in order. A source never sees the store: the service turns the record into
store rows inside the pipeline's transaction.

``hand_over`` is the one loop shape: take a batch, hand it over, pass its outcomes on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from syncd.crm.model import Outcome
from syncd.mail.provenance import Provenance

Item = tuple[bytes, Provenance]
R = TypeVar("R")
R_contra = TypeVar("R_contra", contravariant=True)


@dataclass(frozen=True, slots=True)
class Handover(Generic[R]):
    """One batch of a source: its mail and its record of it, committed together."""

    items: list[Item]
    record: R


class Deliver(Protocol[R_contra]):
    """Log ``items`` and write ``record`` in one transaction; one outcome per item."""

    def __call__(self, items: list[Item], record: R_contra, /) -> Sequence[Outcome]: ...


def hand_over(batches: Iterable[Handover[R]], deliver: Deliver[R]) -> Iterator[Sequence[Outcome]]:
    """Each batch through ``deliver``, in order; the outcomes of each as it commits."""
    for batch in batches:
        yield deliver(batch.items, batch.record)
