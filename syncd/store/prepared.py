"""What a parser process makes of a message for the store's writer: ``prepare``.

``Prepared`` holds a message's row values (date, address lists as JSON, the participants'
search text, defects), its attachments' rows and its raw copy (``store.raw``), made from
the message alone: no store, no file written. The pipeline runs ``prepare`` beside the
writer, in its parser processes for large batches, and ``store.mailwriter`` writes what
it gives.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from syncd.store.engagements import OVERSIZED_NOTE, safe_filename
from syncd.store.raw import RawCopy, prepare_raw, stored_digest
from syncd.store.timestamps import iso

if TYPE_CHECKING:
    from syncd.mail.parse import Email

# An attachment's row without its engagement: sha256, filename, content type, size,
# stored, note.
AttachmentRow = tuple[str, str, str, int, int, str]


class Prepared(NamedTuple):
    """A message's row values and raw copy, made from the message alone.

    Pure and free of the store (no file is written), so a parser process makes it beside
    the writer and hands over plain strings, which also pickle faster than the objects
    they come from."""

    date: str
    to_json: str
    cc_json: str
    bcc_json: str
    addresses: str  # search text of every participant
    defects: str
    attachments: tuple[AttachmentRow, ...]
    copy: RawCopy
    staged: tuple[str, ...] = ()  # per attachment: its staged file ('' none), see blobs


def prepare(email: Email, raw: bytes) -> Prepared:
    """``Prepared`` for ``email``, parsed from ``raw``."""
    everyone = email.addresses()
    rows: list[AttachmentRow] = []
    kept: list[tuple[str, bytes]] = []
    for part in email.attachments:
        data = part.data
        digest = stored_digest(part)
        if data is not None:
            kept.append((digest, data))
        rows.append(
            (
                digest,
                safe_filename(part.filename),
                part.content_type or "",
                int(part.size),
                int(data is not None),
                "" if data is not None else OVERSIZED_NOTE,
            )
        )
    return Prepared(
        iso(email.date),
        addresses_json(email.to),
        addresses_json(email.cc),
        addresses_json(email.bcc),
        " ".join(f"{a.name} {a.email}".strip() for a in everyone),
        "; ".join(str(d) for d in email.defects),
        tuple(rows),
        prepare_raw(raw, kept),
    )


# json.dumps builds a new encoder for every call with a non-default option.
_JSON = json.JSONEncoder(ensure_ascii=False).encode


def addresses_json(addresses: Sequence[Any]) -> str:
    return _JSON([[a.name, a.email] for a in addresses])
