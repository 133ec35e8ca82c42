"""Email addresses: the one strict reader of address fields, and the one normal form.

Every address syncd compares, stores or looks up goes through ``normalise`` (stripped,
lower-cased) and every domain it takes from an address through ``domain_of``; no other
module lower-cases or splits an address. Lower-casing the local part is a choice: RFC 5321
lets a server treat ``Ada@`` and ``ada@`` as two mailboxes, but no mail system a team uses
does, and a CRM that made two contacts of them would be wrong far more often.

``parse_addresses`` reads To/From/Cc/Bcc fields. Addresses are read on the raw field,
before encoded words are decoded, so a crafted display name cannot inject an address, and
each must be one plain ``local@domain``: quoted local parts such as
``"a@b.com"@evil.com`` and unbalanced forms (CVE-2023-27043, not fixed in the Python 3.11.7
we run) are skipped, not guessed at. The parser, ``mail.parse.author`` and through it the
BCC sender check all read addresses here, so the address checked is the address logged.

Internationalised domains stay in Unicode (lower-cased, never converted to punycode): the
parser hands them over that way, and both sides of every comparison come from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import getaddresses

from syncd.mail.headers import decode_words, unfold


@dataclass(frozen=True, slots=True)
class Address:
    name: str  # display name, decoded, '' if none
    email: str  # addr-spec, normalised; always contains '@'


_ADDR = r"[^\s\"<>()\[\],;:@\\]+@[^\s\"<>()\[\],;:@\\]+"
_ADDR_RE = re.compile(_ADDR)
_SIMPLE_ADDR = re.compile(
    rf'\s*(?:"((?:[^"\\]|\\.)*)"|([^"<>()\\,;:]*?))\s*<\s*({_ADDR})\s*>\s*|\s*({_ADDR})\s*'
)  # an unquoted name may contain '@' ("jane@acme.com <jane@acme.com>"): <...> is the address
_COMMA_ITEMS = re.compile(r'(?:"[^"]*"|[^,"])+')
_QUOTED_PAIR = re.compile(r"\\(.)")


def normalise(address: str) -> str:
    """The form every address is compared and stored in: stripped and lower-cased."""
    return address.strip().lower()


def normalise_domain(domain: str) -> str:
    """A domain as compared: stripped, lower-cased, without the root's trailing dot."""
    return domain.strip().rstrip(".").lower()


def domain_of(address: str) -> str:
    """The domain after the last '@', normalised; '' for text without '@'.

    '' rather than the whole text: a string with no '@' has no domain, and an empty domain
    matches no rule and names no company.
    """
    _local, at, domain = address.rpartition("@")
    return normalise_domain(domain) if at else ""


def split(address: str) -> tuple[str, str] | None:
    """(local part, domain) of the normalised address, split at the last '@'; None
    for text without '@'."""
    local, at, domain = normalise(address).rpartition("@")
    return (local, domain) if at else None


def parse_addresses(values: list[str] | None, defects: list[str]) -> tuple[Address, ...]:
    """Every plain address of some address fields, in order; the rest noted in ``defects``."""
    if not values:
        return ()
    out: list[Address] = []
    for value in values:
        for item in _split_address_list(unfold(value)):
            if item.strip():
                addr = _address(item, defects)
                if addr is not None:
                    out.append(addr)
    return tuple(out)


def _split_address_list(value: str) -> list[str]:
    """Split on top-level commas (and group ``name:`` / ``;``), respecting quotes and comments."""
    if "(" not in value and ":" not in value and ";" not in value:
        if '"' not in value:
            return value.split(",")
        if "\\" not in value and value.count('"') % 2 == 0:
            return _COMMA_ITEMS.findall(value)
    items: list[str] = []
    buf: list[str] = []
    quoted = escaped = angle = False
    depth = 0
    for ch in value:
        if escaped:
            escaped = False
        elif quoted or depth:
            if ch == "\\":
                escaped = True
            elif quoted and ch == '"':
                quoted = False
            elif depth and ch in "()":
                depth += 1 if ch == "(" else -1
        elif ch == '"':
            quoted = True
        elif ch == "(":
            depth = 1
        elif ch in "<>":
            angle = ch == "<"
        elif ch in ",;" and not angle:
            items.append("".join(buf))
            buf = []
            continue
        elif ch == ":" and not angle:  # group syntax: drop the group's display name
            buf = []
            continue
        buf.append(ch)
    items.append("".join(buf))
    return items


def _address(item: str, defects: list[str]) -> Address | None:
    simple = _SIMPLE_ADDR.fullmatch(item)
    if simple:
        quoted, bare, angle, plain = simple.groups()
        if quoted is not None:
            name = _QUOTED_PAIR.sub(r"\1", quoted) if "\\" in quoted else quoted
        else:
            name = bare or ""
        email = angle or plain
    else:
        name, email = _odd_address(item)
        if not email:
            if "@" in item:
                defects.append(f"unsafe or broken address skipped: {item.strip()[:80]!r}")
            else:
                defects.append(f"address without '@' skipped: {item.strip()[:80]!r}")
            return None
    return Address(decode_words(name, defects).strip(), normalise(email))


def _odd_address(item: str) -> tuple[str, str]:
    """Comments and other rare forms through ``email.utils``, accepted only when unambiguous."""
    if item.count("(") != item.count(")") or item.count("<") != item.count(">"):
        return "", ""
    pairs = [(n, a) for n, a in getaddresses([item]) if a]
    if len(pairs) != 1 or not _ADDR_RE.fullmatch(pairs[0][1]):
        return "", ""
    return pairs[0]
