"""Where a raw message came from: the value every source hands to the pipeline.

A source (IMAP, BCC, file import) knows only how it got the bytes; the pipeline turns
bytes plus provenance into CRM records. ``label`` is the string users see in a
timeline's ``sources`` list.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Provenance:
    """How one copy of a message reached syncd."""

    source: str  # "imap" | "bcc" | "import"
    received_at: datetime  # timezone-aware; stands in for a missing Date header
    inbox: str | None = None  # inbox name (imap)
    folder: str | None = None  # folder name, decoded (imap)
    uid: int | None = None  # IMAP UID (imap)
    owner: str | None = None  # team member email who owns new contacts, if known
    sender: str | None = None  # envelope MAIL FROM (bcc)
    internal_date: datetime | None = None  # IMAP INTERNALDATE, if any
    # The bytes are a message rebuilt from some of its parts (imap: a large message whose
    # attachments over max_attachment_mb were left on the server); parse reads its marks.
    partial: bool = False
    # The tag of the BCC logging address the message was sent to (``deal-42+nocreate`` of
    # ``log+deal-42+nocreate@...``, canonical, see crm/bcctags.py): the records the
    # sender picked. None: no tag, the rules pick.
    tag: str | None = None

    @property
    def label(self) -> str:
        if self.source == "imap":
            return imap_label(self.inbox or "", self.folder or "")
        return self.source


def imap_label(inbox: str, folder: str) -> str:
    return f"imap:{inbox}/{folder}"
