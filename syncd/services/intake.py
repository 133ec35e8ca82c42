"""A source's ``Deliver`` built on the pipeline: the one way mail from any source is logged.

``deliverer(ingest_batch, write)`` hands a batch to ``Pipeline.ingest_batch`` and writes
the source's record of it with ``write`` (store functions, e.g. a folder checkpoint or
the spool rows' deletion) inside the pipeline's transaction, before COMMIT: the mail and
the record land together or not at all; so does ``tally(conn, record, outcomes)``, the
counts a source keeps of what it handed over.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TypeVar

from syncd.crm.model import Outcome
from syncd.sources.base import Deliver, Item

R = TypeVar("R")
IngestBatch = Callable[..., Sequence[Outcome]]  # Pipeline.ingest_batch(items, on_commit=)
WriteRecord = Callable[[sqlite3.Connection, R], None]
Tally = Callable[[sqlite3.Connection, R, Sequence[Outcome]], None]


def deliverer(
    ingest_batch: IngestBatch, write: WriteRecord[R] | None = None, tally: Tally[R] | None = None
) -> Deliver[R]:
    """A ``Deliver`` that logs through ``ingest_batch`` and commits ``write(conn, record)``
    with the mail (no ``write``: the source keeps no record, as a file import), then
    ``tally(conn, record, outcomes)`` in the same transaction."""

    def deliver(items: list[Item], record: R, /) -> Sequence[Outcome]:
        if write is None:
            return ingest_batch(items)
        if tally is None:
            return ingest_batch(items, on_commit=lambda conn: write(conn, record))
        return ingest_batch(
            items,
            on_commit=lambda conn: write(conn, record),
            tally=lambda conn, outcomes: tally(conn, record, outcomes),
        )

    return deliver
