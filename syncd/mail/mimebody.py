"""MIME bodies -> search text and attachments: the body half of ``syncd.mail.parse``.

``walk(fields, body, depth, acc)`` reads one entity: a multipart is split by boundary
search and each part walked in turn (at most ``MAX_MIME_DEPTH`` deep); a text part adds
to the search text, anything else becomes an ``Attachment`` (its bytes kept up to the
caller's limit); a message attached whole (message/rfc822) adds its subject and text,
at most ``MAX_FORWARD_LEVELS`` deep. ``Collected`` gathers what the walk finds and gives
the search text, at most ``MAX_TEXT_BYTES``. Repairs go to the caller's ``defects``;
only MIME nesting too deep or a part header over the cap raises ``MessageError``.

In a message fetched by parts (``partial``), a part marked ``X-Syncd-Omitted`` is an
attachment not stored and one marked ``X-Syncd-Cut`` notes a defect (the marks are
``sources/imap/bodystructure.py``'s, read only when the caller says so).
"""

from __future__ import annotations

import binascii
import hashlib
import re
from dataclasses import dataclass, field
from email.message import Message
from email.utils import collapse_rfc2231_value

from syncd.errors import MessageError
from syncd.mail.headers import (
    MAX_HEADER_BYTES,
    b64decode,
    blank_line,
    decode_bytes,
    decode_words,
    first,
    split_fields,
)
from syncd.mail.htmltext import html_to_text

MAX_MIME_DEPTH = 100
MAX_TEXT_BYTES = 1024 * 1024
# Forwards of forwards: each level is read again by the one inside, so keep them few.
MAX_FORWARD_LEVELS = 5
# Marks of a message fetched by parts (see ``syncd.mail.parse``).
OMITTED_FIELD = "X-Syncd-Omitted"
CUT_FIELD = "X-Syncd-Cut"

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \t\r\n"
_PARAM = re.compile(r'([^\s=;"]+)\s*=\s*(?:"([^"]*)"|([^;]*))')
_MIME_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str  # decoded original name, text metadata only (never a path); '' if none
    content_type: str
    size: int  # decoded size in bytes
    sha256: str  # hex digest of the decoded content
    data: bytes | None  # None when size > max_attachment_bytes: then it is not stored


@dataclass(slots=True)
class Collected:
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


def walk(fields: dict[str, list[str]], body: bytes, depth: int, acc: Collected) -> None:
    meta = _meta(fields)
    if meta.ctype.startswith("multipart/"):
        if depth >= MAX_MIME_DEPTH:
            raise MessageError(f"MIME nesting over {MAX_MIME_DEPTH} levels")
        parts = _split_multipart(body, meta.boundary, acc.defects) if meta.boundary else None
        if parts is not None:
            for part in parts:
                walk(*_split_part(part, acc.defects), depth + 1, acc)
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


def _forwarded(data: bytes, depth: int, acc: Collected) -> None:
    """Search text of a message attached whole (message/rfc822: a forward as attachment):
    its subject and text, after the outer message's own. The part itself is an attachment
    (the .eml file); what it holds stays inside that file and is not listed again."""
    if acc.forward_level >= MAX_FORWARD_LEVELS:
        acc.defects.append(
            f"messages attached within messages over {MAX_FORWARD_LEVELS} levels: "
            "the deeper ones are not searchable"
        )
        return
    blank = blank_line(data, 0, MAX_HEADER_BYTES + 4)
    if blank is None or blank[0] > MAX_HEADER_BYTES:
        return
    # Its defects are its own: they are reported as the forwarded message's.
    inner = Collected(acc.max_att, [], acc.forward_level + 1)
    try:
        fields = split_fields(data[: blank[0]], inner.defects)
        if fields:
            walk(fields, data[blank[1] :], depth + 1, inner)
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
    blank = blank_line(part, 0, MAX_HEADER_BYTES + 4)
    if blank is None:
        line = part.split(b"\n", 1)[0]
        if b":" in line and b" " not in line.split(b":", 1)[0]:
            return split_fields(part[:MAX_HEADER_BYTES], defects), b""
        return {}, part
    if blank[0] > MAX_HEADER_BYTES:
        raise MessageError("MIME part header over 100 KiB")
    return split_fields(part[: blank[0]], defects), part[blank[1] :]


def _leaf(meta: _Meta, cte: str | None, body: bytes, acc: Collected) -> bytes:
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


def _filename(meta: _Meta, acc: Collected) -> str:
    name = decode_words(meta.filename, acc.defects) if meta.filename else ""
    return "".join(c for c in name if c.isprintable())[:255]


def _omitted(meta: _Meta, mark: str, acc: Collected) -> None:
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
