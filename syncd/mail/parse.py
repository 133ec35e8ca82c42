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
``syncd.mail.headers``, a single-part body is decoded directly and multipart bodies are
walked by boundary search. ``email`` is used only for the fiddly bits: RFC 2231 parameters
and dates.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from email.utils import collapse_rfc2231_value, parsedate_to_datetime

from syncd.errors import MessageError
from syncd.mail.addresses import Address, parse_addresses
from syncd.mail.headers import (
    b64decode,
    decode_bytes,
    decode_words,
    first,
    first_id,
    parse_references,
    split_fields,
    unfold,
)
from syncd.mail.htmltext import html_to_text
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

MAX_HEADER_BYTES = 100 * 1024
MAX_MIME_DEPTH = 100
MAX_TEXT_BYTES = 1024 * 1024
MAX_DEFECTS = 50  # notes kept per message; a hostile one could produce thousands
# Forwards of forwards: each level is read again by the one inside, so keep them few.
MAX_FORWARD_LEVELS = 5
_DIGEST_BODY_BYTES = 4096
# Marks of a message fetched by parts (see the module docstring).
PARTIAL_FIELD = "X-Syncd-Partial"
OMITTED_FIELD = "X-Syncd-Omitted"
CUT_FIELD = "X-Syncd-Cut"
UNFETCHABLE_FIELD = "X-Syncd-Unfetchable"
PARTIAL_DEFECT = "fetched by parts: attachments over max_attachment_mb left on the server"


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str  # decoded original name, text metadata only (never a path); '' if none
    content_type: str
    size: int  # decoded size in bytes
    sha256: str  # hex digest of the decoded content
    data: bytes | None  # None when size > max_attachment_bytes: then it is not stored


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
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \t\r\n"
_PARAM = re.compile(r'([^\s=;"]+)\s*=\s*(?:"([^"]*)"|([^;]*))')
_MIME_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
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
    blank = _blank_line(block, 0, len(block))
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
    blank = _blank_line(raw, start, start + MAX_HEADER_BYTES + 4)
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

    acc = _Collected(max_att, defects, partial=partial)
    _walk(fields, body, 0, acc)
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


def _blank_line(data: bytes, start: int, stop: int) -> tuple[int, int] | None:
    """(end of the header block, start of the body) at the first empty line, LF or CRLF."""
    # Look for the line-end style of the first line first; the other search then only has to
    # cover the header block, not the whole body.
    eol = data.find(b"\n", start, stop)
    if eol < 0:
        return None
    likely, other = (b"\n\r\n", b"\n\n") if data[eol - 1 : eol] == b"\r" else (b"\n\n", b"\n\r\n")
    hit = data.find(likely, start, stop)
    found, width = hit, len(likely)
    hit = data.find(other, start, stop if found < 0 else found)
    if hit >= 0:
        found, width = hit, len(other)
    if found < 0:
        return None
    end = found - 1 if found > start and data[found - 1] == 0x0D else found
    return end, found + width


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


# --- MIME bodies -----------------------------------------------------------------------


@dataclass(slots=True)
class _Collected:
    max_att: int | None
    defects: list[str]
    forward_level: int = 0  # 1: inside a message attached whole, 2: inside one in that...
    partial: bool = False  # the marks of a message fetched by parts are to be read
    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    forwarded: list[str] = field(default_factory=list)  # text of messages attached whole
    attachments: list[Attachment] = field(default_factory=list)

    def text(self) -> str:
        text = "\n\n".join(t for t in self.plain if t.strip())
        if not text and self.html:
            text = html_to_text("\n".join(self.html))
        if self.forwarded:
            text = "\n\n".join(t for t in (text, *self.forwarded) if t.strip())
        text = text.replace("\r\n", "\n").replace("\x00", "")
        if len(text) * 4 > MAX_TEXT_BYTES:
            encoded = text.encode("utf-8")
            if len(encoded) > MAX_TEXT_BYTES:
                self.defects.append("search text truncated to 1 MiB")
                text = encoded[:MAX_TEXT_BYTES].decode("utf-8", "ignore")
        return text


@dataclass(frozen=True, slots=True)
class _Meta:
    ctype: str
    charset: str | None
    boundary: str | None
    filename: str | None
    disposition: str | None


_PLAIN_META = _Meta("text/plain", None, None, None, None)


def _meta(fields: dict[str, list[str]]) -> _Meta:
    """Content-Type / Content-Disposition parameters; ``email`` only for RFC 2231 forms."""
    ctype_value = first(fields, "content-type") or ""
    disp_value = first(fields, "content-disposition") or ""
    ctype, cparams = _params(ctype_value)
    disposition, dparams = _params(disp_value)
    if cparams is None or dparams is None:
        return _meta_by_email(ctype_value, disp_value)
    return _Meta(
        _mime_type(ctype),
        cparams.get("charset"),
        cparams.get("boundary"),
        dparams.get("filename", cparams.get("name")),
        disposition or None,
    )


def _params(value: str) -> tuple[str, dict[str, str] | None]:
    """Main value and parameters of a MIME field; None params when it needs ``email``."""
    main, _, rest = value.partition(";")
    if not rest:
        return main.strip().lower(), {}
    if "*" in rest or "\\" in rest:  # RFC 2231 continuations/charsets, quoted-pairs
        return "", None
    params = {
        m.group(1).lower(): m.group(2) or (m.group(3) or "").strip() for m in _PARAM.finditer(rest)
    }
    return main.strip().lower(), params


def _mime_type(value: str) -> str:
    """``type/subtype``; RFC 2045's text/plain when missing or malformed."""
    if _MIME_TYPE.fullmatch(value):
        return value
    token = value.split(None, 1)[0] if value.strip() else ""  # "text/html charset=..." typo
    return token if _MIME_TYPE.fullmatch(token) else "text/plain"


def _meta_by_email(ctype_value: str, disp_value: str) -> _Meta:
    meta = Message()
    if ctype_value:
        meta["Content-Type"] = ctype_value
    if disp_value:
        meta["Content-Disposition"] = disp_value
    boundary = meta.get_param("boundary")
    return _Meta(
        _mime_type(meta.get_content_type()),
        meta.get_content_charset(),
        collapse_rfc2231_value(boundary) if boundary else None,
        meta.get_filename(),
        meta.get_content_disposition(),
    )


def _walk(fields: dict[str, list[str]], body: bytes, depth: int, acc: _Collected) -> None:
    meta = _meta(fields)
    if meta.ctype.startswith("multipart/"):
        if depth >= MAX_MIME_DEPTH:
            raise MessageError(f"MIME nesting over {MAX_MIME_DEPTH} levels")
        parts = _split_multipart(body, meta.boundary, acc.defects) if meta.boundary else None
        if parts is not None:
            for part in parts:
                _walk(*_split_part(part, acc.defects), depth + 1, acc)
            return
        acc.defects.append(f"{meta.ctype} without a usable boundary: body read as text")
        meta = _PLAIN_META
    if acc.partial and not acc.forward_level:
        omitted = first(fields, OMITTED_FIELD.lower())
        if omitted is not None:
            _omitted(meta, omitted, acc)
            return
        if first(fields, CUT_FIELD.lower()) is not None:
            acc.defects.append(f"a {meta.ctype} part too long to fetch whole: its start is read")
    data = _leaf(meta, first(fields, "content-transfer-encoding"), body, acc)
    if meta.ctype == "message/rfc822" and data:
        _forwarded(data, depth, acc)


def _forwarded(data: bytes, depth: int, acc: _Collected) -> None:
    """Search text of a message attached whole (message/rfc822: a forward as attachment):
    its subject and text, after the outer message's own. The part itself is an attachment
    (the .eml file); what it holds stays inside that file and is not listed again."""
    if acc.forward_level >= MAX_FORWARD_LEVELS:
        acc.defects.append(
            f"messages attached within messages over {MAX_FORWARD_LEVELS} levels: "
            "the deeper ones are not searchable"
        )
        return
    blank = _blank_line(data, 0, MAX_HEADER_BYTES + 4)
    if blank is None or blank[0] > MAX_HEADER_BYTES:
        return
    # Its defects are its own: they are reported as the forwarded message's.
    inner = _Collected(acc.max_att, [], acc.forward_level + 1)
    try:
        fields = split_fields(data[: blank[0]], inner.defects)
        if fields:
            _walk(fields, data[blank[1] :], depth + 1, inner)
            subject = decode_words(first(fields, "subject") or "", inner.defects)
            text = "\n\n".join(t for t in (subject, inner.text()) if t.strip())
            if text:
                acc.forwarded.append(text)
    except MessageError as exc:  # what is wrong inside a forward costs its text, no more
        inner.defects.append(f"not searchable: {exc.reason}")
    prefix = "forwarded message: "
    acc.defects.extend(d if d.startswith(prefix) else prefix + d for d in inner.defects)


def _split_multipart(body: bytes, boundary: str, defects: list[str]) -> list[bytes] | None:
    """Parts between ``--boundary`` lines; None when the boundary never occurs."""
    marker = b"--" + boundary.strip().encode("utf-8", "replace")
    parts: list[bytes] = []
    start: int | None = None
    pos = 0
    while (i := body.find(marker, pos)) >= 0:
        pos = i + len(marker)
        if i and body[i - 1] != 0x0A:  # a delimiter starts a line
            continue
        eol = body.find(b"\n", pos)
        line_end = len(body) if eol < 0 else eol
        tail = body[pos:line_end].rstrip(b"\r \t")
        if tail not in (b"", b"--"):
            continue  # a longer boundary sharing this prefix
        if start is not None:
            end = i - 2 if body[i - 2 : i] == b"\r\n" else i - 1
            parts.append(body[start : max(start, end)])
        if tail == b"--":
            return parts
        start = pos = line_end + 1
    if start is None:
        return None
    defects.append("missing final MIME boundary")
    parts.append(body[start:])
    return parts


def _split_part(part: bytes, defects: list[str]) -> tuple[dict[str, list[str]], bytes]:
    if part.startswith((b"\r\n", b"\n")):  # no headers: a text/plain part by default
        return {}, part[2 if part.startswith(b"\r\n") else 1 :]
    blank = _blank_line(part, 0, MAX_HEADER_BYTES + 4)
    if blank is None:
        line = part.split(b"\n", 1)[0]
        if b":" in line and b" " not in line.split(b":", 1)[0]:
            return split_fields(part[:MAX_HEADER_BYTES], defects), b""
        return {}, part
    if blank[0] > MAX_HEADER_BYTES:
        raise MessageError("MIME part header over 100 KiB")
    return split_fields(part[: blank[0]], defects), part[blank[1] :]


def _leaf(meta: _Meta, cte: str | None, body: bytes, acc: _Collected) -> bytes:
    """Collect one part: its text, or (not inside a forwarded message) an attachment.
    Returns the part's decoded bytes; inside a forwarded message, b'' for what holds no
    text (it is never decoded: the .eml keeps it)."""
    ctype = meta.ctype
    attached = meta.disposition == "attachment" or meta.filename is not None
    text_part = ctype in ("text/plain", "text/html") and not attached
    if acc.forward_level and not text_part and ctype != "message/rfc822":
        return b""
    data = _transfer_decode(body, (cte or "").strip().lower(), ctype, acc.defects)
    if text_part:
        text = decode_bytes(data, meta.charset, acc.defects)
        (acc.plain if ctype == "text/plain" else acc.html).append(text)
        return data
    if acc.forward_level:
        return data
    keep = acc.max_att is None or len(data) <= acc.max_att
    acc.attachments.append(
        Attachment(
            filename=_filename(meta, acc),
            content_type=ctype,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            data=data if keep else None,
        )
    )
    return data


def _filename(meta: _Meta, acc: _Collected) -> str:
    name = decode_words(meta.filename, acc.defects) if meta.filename else ""
    return "".join(c for c in name if c.isprintable())[:255]


def _omitted(meta: _Meta, mark: str, acc: _Collected) -> None:
    """A part left on the server: listed as an attachment not stored, of the size its
    mark gives (estimated from its encoded size)."""
    digits = mark.split(None, 1)[0] if mark.strip() else ""
    acc.attachments.append(
        Attachment(
            filename=_filename(meta, acc),
            content_type=meta.ctype,
            size=int(digits) if digits.isdigit() else 0,
            sha256="",
            data=None,
        )
    )


def _transfer_decode(body: bytes, cte: str, ctype: str, defects: list[str]) -> bytes:
    if cte == "base64":
        # a2b_base64 silently skips junk; say so for text, where a reader sees the result
        # (scanning every large attachment for it would cost more than it tells).
        if ctype.startswith("text/") and body[: 1 << 20].translate(None, _B64_ALPHABET):
            defects.append(f"junk characters in base64 {ctype} part skipped")
        return b64decode(body, defects, f"a {ctype} part")
    if cte == "quoted-printable":
        return binascii.a2b_qp(body)
    if cte and cte not in ("7bit", "8bit", "binary"):
        defects.append(f"unknown Content-Transfer-Encoding {cte[:40]!r}: read as is")
    return body


def key_of(raw: bytes) -> str:
    """The key ``parse`` gives the whole message ``raw`` (its Message-ID, else a digest),
    without parsing its body. Never raises."""
    try:
        fields, body = _head(raw, [])
    except MessageError:
        return _digest_key({}, raw)
    return _message_id(fields, []) or _digest_key(fields, body)
