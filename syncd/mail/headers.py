"""Header fields of RFC 5322 mail: splitting, RFC 2047 words, charsets and ids.

The tolerant, fast half of the parser (``syncd.mail.parse`` owns the ``Email`` value,
``syncd.mail.mimebody`` the bodies, ``syncd.mail.addresses`` the address fields): a header
block is split into fields without building an ``email.message`` tree, encoded words in
unknown charsets are decoded with replacement, raw 8-bit bytes are read as UTF-8 or else
latin-1, and nothing here raises for bad input; each repair is appended to the caller's
``defects`` list. ``blank_line`` finds where a header block ends.
"""

from __future__ import annotations

import binascii
import codecs
import re
from functools import lru_cache

import pybase64

MAX_REFERENCES = 100
MAX_HEADER_BYTES = 100 * 1024  # a header block past this is not mail (quarantine)


_FIELD_BREAK = re.compile(r"\r?\n(?![ \t])")
_FIELD_NAME = re.compile(r"[!-9;-~]+")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([qQbB])\?([^?\s]*)\?=")
_ANGLE_ID = re.compile(r"<([^<>]*)>")
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")
_AUTO = "auto"  # no usable charset declared: utf-8 if it decodes, else latin-1
_CHARSET_ALIASES = {"iso-8859-8-i": "iso-8859-8", "x-mac-roman": "mac-roman", "gb2312": "gb18030"}
_ASCII_NAMES = {"us-ascii", "ascii", "ansi_x3.4-1968", "unknown-8bit", "x-unknown", "default"}


def split_fields(
    block: bytes, defects: list[str], doubts: list[str] | None = None
) -> dict[str, list[str]]:
    """Header block -> {lower-case name: [raw values, still folded]}; bad lines skipped.

    ``doubts`` collects the lines another reader could take differently (a line that is no
    field, a space before the colon): the sender check refuses mail that has any.
    """
    try:
        text = block.decode("utf-8")  # ASCII and RFC 6532 UTF-8 headers
    except UnicodeDecodeError:
        text = "\n".join(_decode_line(line) for line in block.split(b"\n"))
        defects.append("raw 8-bit bytes in headers decoded as latin-1")
    fields: dict[str, list[str]] = {}
    bad = 0
    for item in _FIELD_BREAK.split(text):
        name, colon, value = item.partition(":")
        spaced = name.rstrip(" \t")
        if colon and _FIELD_NAME.fullmatch(spaced):
            if doubts is not None:
                _doubt_field(spaced, len(spaced) != len(name), value, doubts)
            fields.setdefault(spaced.lower(), []).append(value)
        elif item.strip():
            bad += 1
            if doubts is not None:
                doubts.append(f"a header line is not a field: {item.strip()[:40]!r}")
    if bad:
        defects.append(f"{bad} malformed header line(s) skipped")
    return fields


def blank_line(data: bytes, start: int, stop: int) -> tuple[int, int] | None:
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


def _doubt_field(name: str, spaced: bool, value: str, doubts: list[str]) -> None:
    if spaced:
        doubts.append(f"the header field name {name[:40]!r} has a space before its colon")
    if "\0" in value or "\r" in value.replace("\r\n", ""):
        doubts.append(f"the header field {name[:40]!r} holds a bare CR or NUL")


def _decode_line(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("latin-1")


def first(fields: dict[str, list[str]], name: str) -> str | None:
    """The first ``name`` field, unfolded, or None."""
    values = fields.get(name)
    return unfold(values[0]) if values else None


def unfold(value: str) -> str:
    """A field value on one line (RFC 5322 unfolding), stripped."""
    if "\n" in value:
        value = value.replace("\r\n", "").replace("\n", "")
    return value.strip()


def decode_words(value: str, defects: list[str]) -> str:
    """Decode RFC 2047 encoded words; adjacent words of one charset are joined first."""
    value = unfold(value)
    if "=?" not in value:
        return value
    out: list[str] = []
    pending, charset, pos = bytearray(), "", 0
    for word in _ENCODED_WORD.finditer(value):
        gap = value[pos : word.start()]
        if gap and not (charset and gap.isspace()):
            if charset:
                out.append(decode_bytes(pending, charset, defects))
                pending, charset = bytearray(), ""
            out.append(gap)
        cs = word.group(1).split("*", 1)[0].lower()
        data = word.group(3).encode("utf-8", "replace")
        if word.group(2) in "bB":
            data = b64decode(data, defects, "encoded word")
        else:
            data = binascii.a2b_qp(data, header=True)
        if charset and cs != charset:
            out.append(decode_bytes(pending, charset, defects))
            pending = bytearray()
        pending += data
        charset, pos = cs, word.end()
    if charset:
        out.append(decode_bytes(pending, charset, defects))
    out.append(value[pos:])
    return "".join(out)


@lru_cache(maxsize=256)
def _codec(charset: str | None) -> str | None:
    """Python codec for a MIME charset; ``_AUTO`` when unspecified/ASCII, None if unknown."""
    if not charset:
        return _AUTO
    name = charset.strip().strip("\"'").lower()
    name = _CHARSET_ALIASES.get(name, name)
    if not name or name in _ASCII_NAMES:
        return _AUTO
    if len(name) > 40:
        return None
    try:
        info = codecs.lookup(name)
    except LookupError:
        return None
    # base64, rot13, zlib... are codecs but not text encodings.
    if not getattr(info, "_is_text_encoding", True):
        return None
    return _AUTO if info.name == "ascii" else info.name


def decode_bytes(data: bytes | bytearray, charset: str | None, defects: list[str]) -> str:
    """Text from ``data`` in a MIME ``charset``; never raises, notes what it had to guess."""
    codec = _codec(charset)
    if codec == _AUTO:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")
    if codec is None:
        defects.append(f"unknown charset {charset!r:.60}: decoded as utf-8 with replacement")
        return data.decode("utf-8", "replace")
    try:
        return data.decode(codec, "replace")
    except Exception:  # a few codecs (punycode, idna) fail even with "replace"
        defects.append(f"undecodable {charset!r:.60} text: decoded as utf-8 with replacement")
        return data.decode("utf-8", "replace")


def a2b_base64(data: bytes) -> bytes:
    """``binascii.a2b_base64(data)``, several times faster when it is safe.

    pybase64's SIMD decoder (attachments make base64 the parser's largest single cost;
    the README has the figures) gives the same bytes, and raises
    ``binascii.Error`` for the same inputs (its messages differ), for any input whose only
    ``=`` are its final padding, line breaks and junk included; with an ``=`` earlier on,
    the two differ, so binascii decides those."""
    pad = data.find(b"=")
    if pad < 0 or not data[pad:].strip(b"= \t\r\n"):
        return pybase64.b64decode(data, validate=False)
    return binascii.a2b_base64(data)


def b2a_base64(data: bytes) -> bytes:
    """``binascii.b2a_base64(data, newline=False)``, with pybase64's SIMD encoder."""
    return pybase64.b64encode(data)


def b64decode(data: bytes, defects: list[str], where: str) -> bytes:
    try:
        return a2b_base64(data)
    except binascii.Error:
        pass
    clean = _B64_JUNK.sub(b"", data.split(b"=", 1)[0])
    rest = len(clean) % 4
    clean = clean[:-1] if rest == 1 else clean + b"=" * ((4 - rest) % 4)
    defects.append(f"broken base64 in {where}: decoded what could be")
    try:
        return binascii.a2b_base64(clean)
    except binascii.Error:
        return b""


def _norm_id(value: str, bracketed: bool) -> str | None:
    ident = "".join(value.split())
    if not ident or len(ident) > 900 or not ident.isprintable() or "<" in ident:
        return None
    local, at, domain = ident.rpartition("@")
    if at:
        return f"{local}@{domain.lower()}" if local and domain else None
    return ident if bracketed else None


def first_id(value: str | None) -> str | None:
    if not value:
        return None
    found = _ANGLE_ID.search(value)
    return _norm_id(found.group(1), True) if found else _norm_id(value, False)


def parse_references(values: list[str] | None) -> tuple[str, ...]:
    if not values:
        return ()
    value = unfold(" ".join(values))
    found = _ANGLE_ID.findall(value)
    ids = (
        [_norm_id(i, True) for i in found] if found else [_norm_id(t, False) for t in value.split()]
    )
    unique = list(dict.fromkeys(i for i in ids if i))
    if len(unique) > MAX_REFERENCES:  # keep the root and the nearest ancestors
        unique = unique[:1] + unique[-(MAX_REFERENCES - 1) :]
    return tuple(unique)
