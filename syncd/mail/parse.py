"""RFC 5322 / MIME bytes -> ``Email``: the exactly-once key, dates, search text, attachments.

Pure and tolerant: bytes in, a frozen value out, no I/O. Anything repairable is repaired and
noted in ``Email.defects``; ``MessageError`` is raised only for what must go to quarantine
(empty input, no header fields, a header block over 100 KiB, MIME nesting over 100 levels)
and wraps any unexpected failure, so a caller never sees another exception type.

A message the IMAP source fetched by parts (``sources/bodystructure.py``: attachments over
``max_attachment_mb`` left on the server) is parsed with ``partial=True``: then the marks
that source put in it are read, and only then, since anyone can write such a header into
mail they send: ``X-Syncd-Partial`` gives the original size and, for mail keyed by a digest
of its body, the key the whole message has; a part marked ``X-Syncd-Omitted`` becomes an
attachment not stored, of the size the mark gives; ``X-Syncd-Cut`` notes a defect;
``X-Syncd-Unfetchable`` stands for a message given up on, which goes to quarantine.

Speed matters more than generality here (the pipeline must log thousands of messages a
second), so no ``email.message`` tree is built: header fields come from
``syncd.mail.headers``, and ``syncd.mail.mimebody`` decodes a single-part body directly
and walks multipart bodies by boundary search. ``email`` is used only for the fiddly bits:
RFC 2231 parameters and dates.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from syncd.errors import MessageError
from syncd.mail.addresses import Address, parse_addresses
from syncd.mail.headers import (
    MAX_HEADER_BYTES,
    blank_line,
    decode_words,
    first,
    first_id,
    parse_references,
    split_fields,
    unfold,
)
from syncd.mail.mimebody import Attachment, Collected, walk
from syncd.mail.threads import thread_key

__all__ = [
    "Address",
    "Attachment",
    "Email",
    "HeaderTooLarge",
    "MessageError",
    "author",
    "header_addresses",
    "header_fields",
    "header_message_key",
    "message_key",
    "parse",
]

MAX_DEFECTS = 50  # notes kept per message; a hostile one could produce thousands
_DIGEST_BODY_BYTES = 4096
# Marks of a message fetched by parts (see the module docstring).
PARTIAL_FIELD = "X-Syncd-Partial"
UNFETCHABLE_FIELD = "X-Syncd-Unfetchable"
PARTIAL_DEFECT = "fetched by parts: attachments over max_attachment_mb left on the server"


@dataclass(frozen=True, slots=True)
class Email:
    key: str  # exactly-once key: normalised Message-ID, else "sha256:<digest>"
    message_id: str | None
    subject: str
    date: datetime  # aware, UTC
    date_missing: bool
    from_: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    in_reply_to: str | None
    references: tuple[str, ...]
    gm_thrid: str | None
    thread_key: str
    # search text: text/plain parts joined, else HTML as text, then the subject and text
    # of each message attached whole (a forward as attachment); at most 1 MiB
    text: str
    size: int
    attachments: tuple[Attachment, ...]
    defects: tuple[str, ...]

    def addresses(self) -> tuple[Address, ...]:
        """Every address on the message: From, To, Cc, Bcc, in that order."""
        return ((self.from_,) if self.from_ else ()) + self.to + self.cc + self.bcc


_MBOX_FROM = re.compile(rb"From [ \t]*[^ \t:]")  # not "From :", a field with a stray space
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_MARK_SIZE = re.compile(r"\bsize=(\d+)")
_MARK_KEY = re.compile(r'\bkey="(sha256:[0-9a-f]{64})"')


def parse(
    raw: bytes,
    *,
    received_at: datetime,
    max_attachment_bytes: int | None = None,
    partial: bool = False,
) -> Email:
    """Parse one message; raises only ``MessageError`` (with a reason fit for quarantine).
    ``partial``: ``raw`` is a message the IMAP source rebuilt from some of its parts."""
    try:
        return _parse(raw, received_at, max_attachment_bytes, partial)
    except MessageError:
        raise
    except RecursionError as exc:
        raise MessageError("message structure too deeply nested to parse") from exc
    except Exception as exc:
        raise MessageError(f"parser failure: {type(exc).__name__}: {exc}"[:300]) from exc


def header_addresses(raw_headers: bytes) -> tuple[Address, ...]:
    """From/To/Cc/Bcc of a header block (e.g. an IMAP HEADER.FIELDS fetch), de-duplicated.

    A prefilter: it never raises and returns what it can read.
    """
    try:
        fields = _block_fields(raw_headers)
        seen: dict[str, Address] = {}
        for name in ("from", "to", "cc", "bcc"):
            for addr in parse_addresses(fields.get(name), []):
                seen.setdefault(addr.email, addr)
        return tuple(seen.values())
    except Exception:
        return ()


def header_message_key(raw_headers: bytes) -> str | None:
    """The key ``parse`` gives a message with this header block when its Message-ID is
    usable; None when the key would be a digest, which needs the body. Never raises. (A
    header block over 100 KiB still gets a key here, though ``parse`` refuses it.)"""
    try:
        return _message_id(_block_fields(raw_headers), [])
    except Exception:
        return None


def message_key(raw_headers: bytes, body_head: bytes) -> str:
    """The key ``parse`` gives a message with this header block whose body starts with
    ``body_head`` (its first 8 KiB, or all of it). Never raises."""
    try:
        fields = _block_fields(raw_headers)
        return _message_id(fields, []) or _digest_key(fields, body_head)
    except Exception:
        return _digest_key({}, body_head)


def _block_fields(raw_headers: bytes) -> dict[str, list[str]]:
    block = raw_headers[: MAX_HEADER_BYTES + 4]
    blank = blank_line(block, 0, len(block))
    return split_fields(block[: blank[0]] if blank else block, [])


def author(raw: bytes) -> Address:
    """The one From address of ``raw``, read exactly as ``parse`` reads it for the log.

    For deciding whose mail it is (the BCC sender check), so it refuses, with a
    ``MessageError`` whose text is the reason, any header another reader could take
    differently: a line that is no field, a space before a colon, no From or several From
    fields, a From that does not read whole as one address. ``HeaderTooLarge`` when the
    header block is over the parser's limit.
    """
    doubts: list[str] = []
    fields, _body = _head(raw, [], doubts)
    if doubts:
        raise MessageError(doubts[0])
    values = fields.get("from") or []
    if len(values) != 1:
        raise MessageError("no From header" if not values else "several From headers")
    if any(c in _QUOTED.sub("", values[0]) for c in ":;"):
        raise MessageError("the From header uses group syntax, which a From may not")
    defects: list[str] = []
    addresses = parse_addresses(values, defects)
    if defects or not addresses:
        raise MessageError(f"the From header cannot be read: {unfold(values[0]).strip()[:80]!r}")
    if len({a.email for a in addresses}) > 1:
        raise MessageError("the From header names several senders")
    return addresses[0]


def header_fields(raw: bytes) -> dict[str, list[str]]:
    """The header fields of a whole message as ``parse`` splits them; {} if it has none."""
    try:
        return _head(raw, [])[0]
    except MessageError:
        return {}


class HeaderTooLarge(MessageError):
    def __init__(self) -> None:
        super().__init__(f"header block over {MAX_HEADER_BYTES // 1024} KiB")


def _head(
    raw: bytes, defects: list[str], doubts: list[str] | None = None
) -> tuple[dict[str, list[str]], bytes]:
    """The one header splitter of a whole message: (fields, body)."""
    if not raw or not raw.strip():
        raise MessageError("empty message")
    start = 0
    if _MBOX_FROM.match(raw):  # an mbox separator line left at the top of a .eml
        nl = raw.find(b"\n")
        start = len(raw) if nl < 0 else nl + 1
    blank = blank_line(raw, start, start + MAX_HEADER_BYTES + 4)
    head_end = blank[0] if blank else len(raw)
    if head_end - start > MAX_HEADER_BYTES:
        raise HeaderTooLarge()
    fields = split_fields(raw[start:head_end], defects, doubts)
    if not fields:
        raise MessageError("no header fields: not an email")
    return fields, raw[blank[1] :] if blank else b""


def _parse(raw: bytes, received_at: datetime, max_att: int | None, partial: bool) -> Email:
    defects: list[str] = []
    fields, body = _head(raw, defects)
    if partial and (why := first(fields, UNFETCHABLE_FIELD.lower())):
        raise MessageError(f"not fetched from the server: {why}")

    message_id = _message_id(fields, defects)
    subject = decode_words(first(fields, "subject") or "", defects)
    date, date_missing = _date(first(fields, "date"), received_at, defects)
    in_reply_to = first_id(first(fields, "in-reply-to"))
    references = parse_references(fields.get("references"))
    gm_thrid = "".join((first(fields, "x-gm-thrid") or "").split())[:64] or None
    size, marked_key = len(raw), None
    if partial:
        size, marked_key = _partial_mark(first(fields, PARTIAL_FIELD.lower()) or "", size)
        defects.append(PARTIAL_DEFECT)
    key = message_id or marked_key or _digest_key(fields, body)
    from_list = parse_addresses(fields.get("from"), defects)

    acc = Collected(max_att, defects, partial=partial)
    walk(fields, body, 0, acc)
    return Email(
        key=key,
        message_id=message_id,
        subject=subject,
        date=date,
        date_missing=date_missing,
        from_=from_list[0] if from_list else None,
        to=parse_addresses(fields.get("to"), defects),
        cc=parse_addresses(fields.get("cc"), defects),
        bcc=parse_addresses(fields.get("bcc"), defects),
        in_reply_to=in_reply_to,
        references=references,
        gm_thrid=gm_thrid,
        thread_key=thread_key(key, in_reply_to, references, gm_thrid, subject),
        text=acc.text(),
        size=size,
        attachments=tuple(acc.attachments),
        defects=tuple(dict.fromkeys(defects))[:MAX_DEFECTS],
    )


def _partial_mark(value: str, size: int) -> tuple[int, str | None]:
    """(original size, digest key or None) from an ``X-Syncd-Partial`` mark."""
    found = _MARK_SIZE.search(value)
    key = _MARK_KEY.search(value)
    return (int(found[1]) if found else size), (key[1] if key else None)


def _message_id(fields: dict[str, list[str]], defects: list[str]) -> str | None:
    values = fields.get("message-id")
    if not values:
        defects.append("no Message-ID: keyed by a digest of the headers")
        return None
    ident = first_id(unfold(values[0]))
    if ident is None:
        defects.append(f"broken Message-ID {unfold(values[0])[:80]!r}: keyed by a digest")
    if len(values) > 1:
        defects.append("several Message-ID headers: the first one is used")
    return ident


def _digest_key(fields: dict[str, list[str]], body: bytes) -> str:
    """Stable key for mail without a usable Message-ID; blind to folding and line ends."""
    h = hashlib.sha256()
    for name in ("from", "to", "cc", "date", "subject"):
        for value in fields.get(name, ()):
            h.update(f"{name}:{' '.join(value.split())}\n".encode("utf-8", "replace"))
    h.update(b"\n")
    head = body[: 2 * _DIGEST_BODY_BYTES].replace(b"\r\n", b"\n")
    h.update(head[:_DIGEST_BODY_BYTES].rstrip())
    return "sha256:" + h.hexdigest()


def _date(value: str | None, received_at: datetime, defects: list[str]) -> tuple[datetime, bool]:
    if value:
        try:
            date = parsedate_to_datetime(value)
            if date.tzinfo is None:  # "-0000": a UTC time from an unknown zone
                date = date.replace(tzinfo=UTC)
            return date.astimezone(UTC), False
        except Exception:
            defects.append(f"unparseable Date {value[:60]!r}: used the time received")
    else:
        defects.append("no Date header: used the time received")
    if received_at.tzinfo is None:
        received_at = received_at.replace(tzinfo=UTC)
    return received_at.astimezone(UTC), True


def key_of(raw: bytes) -> str:
    """The key ``parse`` gives the whole message ``raw`` (its Message-ID, else a digest),
    without parsing its body. Never raises."""
    try:
        fields, body = _head(raw, [])
    except MessageError:
        return _digest_key({}, raw)
    return _message_id(fields, []) or _digest_key(fields, body)
