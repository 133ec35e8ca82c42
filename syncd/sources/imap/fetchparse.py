"""FETCH responses as imaplib hands them over, read into per-UID fields.

imapclient's response parser walks every byte of a response through a Python lexer and
parses each INTERNALDATE with ``email.utils``: on a bulk body fetch it cost the fetching
thread about three times what imaplib itself spends reading the socket, and that thread
shares the GIL with the store's writer. imaplib already splits literals out (each
message body arrives as one ``bytes`` object), so only the short text around them needs
reading, which is what this module does. Pure: data in, values out.

imaplib's shape: a list whose items are either ``bytes`` (a line, or the rest of a line
after a literal) or ``(text, literal)`` tuples where ``text`` ends with ``{N}``.

The two responses a bulk sync reads tens of thousands of, metadata and body in the
order syncd asks for them (``UID INTERNALDATE RFC822.SIZE``, ``UID INTERNALDATE
BODY[]``, the latter with Gmail's X-GM-THRID wherever Gmail puts it), are read by one
regular expression each; a response in any other shape sends
the whole answer through the general reader, which gives the same values.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

Value = bytes | int | None | list[Any]
Fields = dict[bytes, Value]

# One token: "(", ")", a quoted string, or an atom such as UID, 12, NIL or
# BODY[HEADER.FIELDS (FROM TO)]<0> (brackets may hold spaces and parentheses).
_TOKEN = re.compile(
    rb'\s*(?:(?P<open>\()|(?P<close>\))|"(?P<quoted>(?:[^"\\]|\\.)*)"'
    rb'|(?P<atom>[^\s()"\[\]]+(?:\[[^\]]*\](?:<\d+>)?)?|\[[^\]]*\]))'
)
_LITERAL = re.compile(rb"~?\{(\d+)\+?\}\s*$")  # ~{N}: a literal8 (RFC 3516)
_ESCAPE = re.compile(rb"\\(.)")
# INTERNALDATE month names are always English (RFC 3501 date-month).
_MONTHS = {
    b"jan": 1,
    b"feb": 2,
    b"mar": 3,
    b"apr": 4,
    b"may": 5,
    b"jun": 6,
    b"jul": 7,
    b"aug": 8,
    b"sep": 9,
    b"oct": 10,
    b"nov": 11,
    b"dec": 12,
}
_LIT = object()  # marks where a literal sits in the token stream
_FAST_META = re.compile(rb'\d+ \(UID (\d+) INTERNALDATE "([^"\\]*)" RFC822\.SIZE (\d+)\)')
# Gmail (X-GM-EXT-1) adds X-GM-THRID, which servers place before, between or after the
# items asked for: each place is an optional group, at most one of which matches.
_THRID = rb"(?:X-GM-THRID (\d+) )?"
_FAST_BODY = re.compile(
    rb"\d+ \("
    + _THRID
    + rb"UID (\d+) "
    + _THRID
    + rb'INTERNALDATE "([^"\\]*)" '
    + _THRID
    + rb"BODY\[\] \{(\d+)\}"
)


class FetchParseError(ValueError):
    """A FETCH response this reader cannot make sense of."""


def parse_fetch(data: list[Any]) -> dict[int, Fields]:
    """``{uid: {FIELD: value}}`` for each FETCH response in ``data`` that carries a UID
    (unsolicited flag updates without one are left out). Field names are upper-cased;
    numbers become ``int``, NIL ``None``, strings and literals ``bytes``, lists lists."""
    fast = _parse_common(data)
    return fast if fast is not None else _parse_any(data)


def _parse_common(data: list[Any]) -> dict[int, Fields] | None:
    """``parse_fetch`` for answers made only of the two common shapes; None otherwise."""
    out: dict[int, Fields] = {}
    closing = False  # a body literal was read: its response's ")" comes next
    for item in data:
        if closing:
            if item != b")":
                return None
            closing = False
        elif isinstance(item, tuple):
            body = _FAST_BODY.fullmatch(item[0])
            if body is None or int(body[6]) != len(item[1]):
                return None
            uid = int(body[2])
            fields: Fields = {b"INTERNALDATE": body[4], b"BODY[]": bytes(item[1])}
            thrids = [int(t) for t in (body[1], body[3], body[5]) if t is not None]
            if len(thrids) > 1:
                return None  # said twice: the general reader keeps the last, as for any field
            if thrids:
                fields[b"X-GM-THRID"] = thrids[0]
            closing = True
        elif isinstance(item, bytes) and (match := _FAST_META.fullmatch(item)):
            uid = int(match[1])
            fields = {b"INTERNALDATE": match[2], b"RFC822.SIZE": int(match[3])}
        else:
            return None
        fields[b"UID"] = uid
        out.setdefault(uid, {}).update(fields)
    return None if closing else out


def _parse_any(data: list[Any]) -> dict[int, Fields]:
    tokens: list[Any] = []
    literals: list[bytes] = []
    for item in data:
        if isinstance(item, tuple):
            text, literal = item[0], item[1]
            match = _LITERAL.search(text)
            if match is None:
                raise FetchParseError("literal without its {N} marker")
            _tokenize(text[: match.start()], tokens)
            tokens.append(_LIT)
            literals.append(bytes(literal))
        elif isinstance(item, bytes):
            _tokenize(item, tokens)
        elif item is not None:
            raise FetchParseError(f"unexpected item {type(item).__name__}")
    out: dict[int, Fields] = {}
    reader = _Reader(tokens, literals)
    while not reader.done():
        reader.next()  # the message sequence number
        fields = reader.value()
        if not isinstance(fields, list):
            raise FetchParseError("FETCH response without its parenthesised fields")
        msg: Fields = {}
        for i in range(0, len(fields) - 1, 2):
            key = fields[i]
            if isinstance(key, bytes):
                msg[key.upper()] = fields[i + 1]
        uid = msg.get(b"UID")
        if isinstance(uid, int):
            # A server may answer for one message in several responses (a flag update
            # arriving mid-fetch): they add up.
            out.setdefault(uid, {}).update(msg)
    return out


def _tokenize(text: bytes, tokens: list[Any]) -> None:
    pos, end = 0, len(text)
    while pos < end:
        match = _TOKEN.match(text, pos)
        if match is None:
            if text[pos:].strip():
                raise FetchParseError(f"cannot read {text[pos : pos + 40]!r}")
            return
        pos = match.end()
        kind = match.lastgroup
        if kind == "open":
            tokens.append(b"(")
        elif kind == "close":
            tokens.append(b")")
        elif kind == "quoted":
            tokens.append(("q", _ESCAPE.sub(rb"\1", match.group("quoted"))))
        else:
            tokens.append(("a", match.group("atom")))


class _Reader:
    def __init__(self, tokens: list[Any], literals: list[bytes]) -> None:
        self.tokens, self.literals = tokens, literals
        self.pos = self.lit = 0

    def done(self) -> bool:
        return self.pos >= len(self.tokens)

    def next(self) -> Any:
        if self.done():
            raise FetchParseError("FETCH response ends too soon")
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def value(self) -> Value:
        token = self.next()
        if token is _LIT:
            self.lit += 1
            return self.literals[self.lit - 1]
        if token == b"(":
            items: list[Any] = []
            while self.tokens[self.pos : self.pos + 1] != [b")"]:
                items.append(self.value())
            self.pos += 1
            return items
        if token == b")":
            raise FetchParseError("unbalanced ')' in FETCH response")
        kind, text = token
        if kind == "q":
            return text
        if text.isdigit():
            return int(text)
        return None if text.upper() == b"NIL" else text


def gm_thrid(fields: Fields) -> str | None:
    """Gmail's thread id (X-GM-THRID, an unsigned 64-bit number) from a message's fields,
    as decimal text; None when absent or not a number."""
    value = fields.get(b"X-GM-THRID")
    if isinstance(value, bytes) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and 0 <= value < 2**64:
        return str(value)
    return None


def internal_date(value: Any) -> datetime | None:
    """An INTERNALDATE ("17-Jul-1996 02:44:25 -0700") as an aware datetime; None if it
    is missing or unreadable (the caller then treats the date as unknown)."""
    if not isinstance(value, bytes):
        return None
    try:
        day_part, clock, zone = value.split()
        day, month, year = day_part.split(b"-")
        hour, minute, second = clock.split(b":")
        sign = -1 if zone[:1] == b"-" else 1
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5])) * sign
        return datetime(
            int(year),
            _MONTHS[month.lower()],
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=timezone(offset),
        )
    except (ValueError, KeyError):
        return None
