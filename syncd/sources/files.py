"""Mail and contacts from files: .eml files, directories of them, mbox, Maildir; CSV and vCard.

``MailFiles(path)`` finds out what ``path`` is (a Maildir has cur/ and new/, and its
Maildir++ folders are read too; a directory is searched for .eml files; an mbox starts
with a "From " line; anything else is one message) and yields each message's raw bytes
with a receipt time: the mbox "From " line's date, a Maildir name's delivery time,
else the file's modification time, so importing the same files twice hands the pipeline
the same values. It yields bytes and never touches the store; ``handovers`` cuts them
into batches for the source contract (``sources.base``), each message's provenance
naming the owner of contacts it may create. ``read_contacts`` turns a
CSV (header row: email, first_name, last_name, company, owner, lifecycle_stage,
legal_basis) or a vCard file into ``ContactRecord`` values.
"""

from __future__ import annotations

import csv
import io
import mailbox
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

from syncd.crm.model import CSV_FIELDS, ContactRecord
from syncd.mail.addresses import normalise
from syncd.mail.provenance import Provenance
from syncd.sources.base import Handover, Item


class FileFormatError(ValueError):
    """A file that is not what it claims to be; ``str`` says where and why."""


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def _is_maildir(path: Path) -> bool:
    return path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir()


def _is_mbox(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(5) == b"From "


def _from_line_date(line: str) -> datetime | None:
    # "From sender@example.com Sat Jan  3 01:05:34 1996": the date is the last 5 words.
    words = line.split()
    if len(words) < 6:
        return None
    try:
        moment = datetime.strptime(" ".join(words[-5:]), "%a %b %d %H:%M:%S %Y")
    except ValueError:
        try:
            return parsedate_to_datetime(" ".join(words[2:]))
        except (TypeError, ValueError):
            return None
    return moment.replace(tzinfo=UTC)


def handovers(
    messages: Iterable[tuple[bytes, datetime]], owner: str | None, size: int
) -> Iterator[Handover[None]]:
    """``messages`` (raw bytes, receipt time) in batches of ``size``; a file import keeps
    no record of its own. ``owner`` (a member's primary email) owns contacts created."""
    batch: list[Item] = []
    for raw, received in messages:
        batch.append((raw, Provenance("import", received, owner=owner)))
        if len(batch) >= size:
            yield Handover(batch, None)
            batch = []
    if batch:
        yield Handover(batch, None)


class MailFiles:
    """The messages under one import path, counted up front for a progress bar."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such file or directory")
        if _is_maildir(self.path):
            self.kind = "maildir"
        elif self.path.is_dir():
            self.kind = "directory"
        else:
            self.kind = "mbox" if _is_mbox(self.path) else "eml"

    def _eml_files(self) -> list[Path]:
        if self.kind == "eml":
            return [self.path]
        return sorted(p for p in self.path.rglob("*") if p.is_file() and p.suffix.lower() == ".eml")

    def __len__(self) -> int:
        if self.kind == "mbox":
            box = mailbox.mbox(self.path, create=False)
            try:
                return len(box)
            finally:
                box.close()
        if self.kind == "maildir":
            return sum(len(box) for box in self._maildirs())
        return len(self._eml_files())

    def __iter__(self) -> Iterator[tuple[bytes, datetime]]:
        if self.kind == "mbox":
            yield from self._mbox()
        elif self.kind == "maildir":
            yield from self._maildir()
        else:
            for path in self._eml_files():
                yield path.read_bytes(), _mtime(path)

    def _mbox(self) -> Iterator[tuple[bytes, datetime]]:
        box = mailbox.mbox(self.path, create=False)
        fallback = _mtime(self.path)
        try:
            for key in box.iterkeys():
                raw = box.get_bytes(key)
                handle = box.get_file(key, from_=True)
                try:
                    first = handle.readline().decode("latin-1")
                finally:
                    handle.close()
                yield raw, _from_line_date(first) or fallback
        finally:
            box.close()

    def _maildirs(self) -> list[mailbox.Maildir]:
        """The Maildir and its Maildir++ folders (.Sent, .Archive, ...), in name order."""
        root = mailbox.Maildir(self.path, factory=None, create=False)
        return [root, *(root.get_folder(name) for name in sorted(root.list_folders()))]

    def _maildir(self) -> Iterator[tuple[bytes, datetime]]:
        fallback = _mtime(self.path)
        for box in self._maildirs():
            for key in sorted(box.iterkeys()):
                # A Maildir name starts with its delivery time ("1700000000.M1P2.host").
                stamp = key.split(".", 1)[0]
                received = datetime.fromtimestamp(int(stamp), UTC) if stamp.isdigit() else fallback
                yield box.get_bytes(key), received


def read_contacts(path: Path) -> list[ContactRecord]:
    """Contacts from a CSV or vCard file; FileFormatError names the file and line."""
    data = Path(path).read_bytes()
    text = data.decode("utf-8-sig", errors="replace")
    if text.lstrip().upper().startswith("BEGIN:VCARD"):
        return _vcards(text, str(path))
    return _csv(text, str(path))


def _csv(text: str, name: str) -> list[ContactRecord]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in reader.fieldnames or ()]
    if "email" not in header:
        raise FileFormatError(
            f"{name}:1: the header row needs an 'email' column ({', '.join(CSV_FIELDS)})"
        )
    reader.fieldnames = header
    records = []
    for row in reader:

        def get(key: str, row: dict[str, str | None] = row) -> str:
            return (row.get(key) or "").strip()

        others = tuple(normalise(e) for e in get("other_emails").split() if "@" in e)
        records.append(
            ContactRecord(
                email=normalise(get("email")),
                first_name=get("first_name"),
                last_name=get("last_name"),
                company=get("company"),
                owner=normalise(get("owner")),
                lifecycle_stage=get("lifecycle_stage").lower(),
                legal_basis=get("legal_basis"),
                other_emails=others,
                where=f"{name}:{reader.line_num}",
            )
        )
    return records


def _vcards(text: str, name: str) -> list[ContactRecord]:
    import vobject  # only vCard files need it

    records = []
    try:
        cards = list(vobject.readComponents(text, ignoreUnreadable=True))
    except Exception as exc:  # vobject raises its own ParseError and plain ValueErrors
        raise FileFormatError(f"{name}: not a readable vCard file: {exc}") from None
    for number, card in enumerate(cards, start=1):
        emails = [normalise(str(e.value)) for e in card.contents.get("email", [])]
        first = last = ""
        if "n" in card.contents:
            n = card.n.value
            first, last = str(n.given or "").strip(), str(n.family or "").strip()
        elif "fn" in card.contents:
            first, _, last = str(card.fn.value).strip().rpartition(" ")
            first, last = (first, last) if first else (last, "")
        company = ""
        if "org" in card.contents:
            org = card.org.value
            company = (org[0] if isinstance(org, list) and org else str(org)).strip()
        records.append(
            ContactRecord(
                email=emails[0] if emails else "",
                first_name=first,
                last_name=last,
                company=company,
                other_emails=tuple(emails[1:]),
                where=f"{name}: card {number}",
            )
        )
    return records
