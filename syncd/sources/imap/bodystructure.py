"""A large message fetched by parts: its BODYSTRUCTURE read, the parts to keep chosen, the
message rebuilt from them.

Pure: values in, values out. ``read_structure`` turns the BODYSTRUCTURE value that
``fetchparse`` reads into a ``Part`` tree; ``plan_parts`` decides per leaf what syncd would
keep of it anyway: an attachment whose decoded size is over ``max_part`` (the store's
``max_attachment_mb``) is left on the server (``Take.OMIT``), a text or HTML body over
``text_cap`` is fetched up to it (``Take.CUT``: the search text is capped far below), the
rest whole. ``fetch_items`` lists the FETCH items the plan needs (RFC 3501 sections: the
full header, each part's MIME header, each kept body) and ``rebuild`` joins their answers
into one message in the parts' original order, with fresh CRLF delimiter lines.

The rebuilt message carries syncd's marks, as header fields put first in a header block:
``X-Syncd-Partial`` on the message (its size on the server, and its exactly-once key when
that key is a digest of the original body), ``X-Syncd-Omitted`` on a part left out (its
estimated decoded size) and ``X-Syncd-Cut`` on a text part fetched in part. The parser
honours them only for mail the IMAP source marked partial, never for mail as received.

A multipart's preamble and epilogue are not fetched: no reader shows them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from syncd.mail.mimebody import CUT_FIELD, OMITTED_FIELD
from syncd.mail.parse import PARTIAL_FIELD

# A text body's search text stops at 1 MiB (mail.parse); 4 MiB of its encoded form leaves
# room for HTML markup and base64 before that.
TEXT_CAP = 4 * 1024 * 1024
# The parser keys mail without a usable Message-ID by a digest of its first 4 KiB of body
# (8 KiB read, to allow for line ends): fetched along with the header for that.
DIGEST_HEAD = 8192
HEAD_ITEM = f"BODY.PEEK[TEXT]<0.{DIGEST_HEAD}>"
HEAD_KEY = b"BODY[TEXT]<0>"


class StructureError(ValueError):
    """A BODYSTRUCTURE, or a FETCH answer for its parts, that a message cannot be rebuilt
    from; the caller fetches the message whole instead."""


class Take(StrEnum):
    WHOLE = "whole"
    CUT = "cut"  # the first text_cap octets, cut back to a line end
    OMIT = "omit"  # left on the server, listed as not stored


@dataclass(frozen=True, slots=True)
class Part:
    """One node of a BODYSTRUCTURE: a leaf, or a multipart with ``children``."""

    section: str  # RFC 3501 part number ("1", "2.1"); "" for a multipart message's top
    ctype: str  # "text/plain", lower-cased
    encoding: str  # Content-Transfer-Encoding, lower-cased ('' when NIL)
    octets: int  # size of the body as encoded
    attached: bool  # a disposition of attachment, or a file name: an attachment to parse
    boundary: str | None = None
    children: tuple[Part, ...] = ()

    @property
    def is_multipart(self) -> bool:
        return self.ctype.startswith("multipart/")


@dataclass(frozen=True, slots=True)
class PartPlan:
    root: Part
    takes: Mapping[str, Take]  # leaf section -> what to fetch of it
    text_cap: int = TEXT_CAP

    @property
    def partial(self) -> bool:
        """Whether anything is left out or cut: if not, the message is fetched whole."""
        return any(take is not Take.WHOLE for take in self.takes.values())


def read_structure(value: Any) -> Part:
    """The ``Part`` tree of a BODYSTRUCTURE value (nested lists of bytes, ints, None)."""
    if not isinstance(value, list):
        raise StructureError("BODYSTRUCTURE is not a list")
    if value and isinstance(value[0], list):
        return _read(value, "")
    return _read(value, "1")  # a single-part message's body is its part 1


def _read(node: Any, section: str) -> Part:
    if not isinstance(node, list) or not node:
        raise StructureError(f"part {section or 'top'}: not a list")
    if isinstance(node[0], list):
        count = next((i for i, item in enumerate(node) if not isinstance(item, list)), len(node))
        prefix = f"{section}." if section else ""
        children = tuple(_read(child, f"{prefix}{n}") for n, child in enumerate(node[:count], 1))
        subtype = _text(node[count]) if count < len(node) else "mixed"
        params = _params(node[count + 1] if count + 1 < len(node) else None)
        boundary = params.get("boundary")
        if not boundary:
            raise StructureError(f"part {section or 'top'}: multipart without its boundary")
        return Part(section, f"multipart/{subtype}", "", 0, False, boundary, children)
    if len(node) < 7 or not isinstance(node[6], int):
        raise StructureError(f"part {section}: too few fields for a body part")
    ctype = f"{_text(node[0])}/{_text(node[1])}"
    ext = 7 + (1 if ctype.startswith("text/") else 3 if ctype == "message/rfc822" else 0)
    disposition = node[ext + 1] if ext + 1 < len(node) else None
    kind, dparams = "", {}
    if isinstance(disposition, list) and disposition:
        kind = _text(disposition[0])
        dparams = _params(disposition[1] if len(disposition) > 1 else None)
    names = [*_params(node[2]), *dparams]
    attached = kind == "attachment" or any(n.startswith(("name", "filename")) for n in names)
    return Part(section, ctype, _text(node[5]), node[6], attached)


def _text(value: Any) -> str:
    return value.decode("ascii", "replace").strip().lower() if isinstance(value, bytes) else ""


def _params(value: Any) -> dict[str, str]:
    if not isinstance(value, list):
        return {}
    items = [v.decode("utf-8", "replace") if isinstance(v, bytes) else "" for v in value]
    return {items[i].lower(): items[i + 1] for i in range(0, len(items) - 1, 2)}


def decoded_size(part: Part) -> int:
    """About how many bytes ``part`` decodes to: base64 as written in lines of 76
    characters and CRLF (RFC 2045's longest, so the estimate is not above the truth for
    any line length it allows); other encodings as their encoded size, an upper bound."""
    if part.encoding == "base64":
        return part.octets * 57 // 78
    return part.octets


def plan_parts(root: Part, *, max_part: int, text_cap: int = TEXT_CAP) -> PartPlan:
    """What to fetch of each leaf: text bodies up to ``text_cap``, attachments (a message
    attached whole is one) whole when they decode to at most about ``max_part`` bytes."""
    takes: dict[str, Take] = {}
    for leaf in leaves(root):
        if leaf.ctype in ("text/plain", "text/html") and not leaf.attached:
            takes[leaf.section] = Take.CUT if leaf.octets > text_cap else Take.WHOLE
        else:
            takes[leaf.section] = Take.OMIT if decoded_size(leaf) > max_part else Take.WHOLE
    return PartPlan(root, takes, text_cap)


def leaves(part: Part) -> list[Part]:
    if not part.is_multipart:
        return [part]
    return [leaf for child in part.children for leaf in leaves(child)]


def fetch_items(plan: PartPlan) -> list[str]:
    """The FETCH items (BODY.PEEK, so no flag changes) that ``rebuild`` needs."""
    items = ["BODY.PEEK[HEADER]", HEAD_ITEM]
    root = plan.root
    # A single part's MIME header is the message's header.
    for part in _below(root) if root.is_multipart else [root]:
        if root.is_multipart:
            items.append(f"BODY.PEEK[{part.section}.MIME]")
        take = plan.takes.get(part.section)
        if take is Take.WHOLE:
            items.append(f"BODY.PEEK[{part.section}]")
        elif take is Take.CUT:
            items.append(f"BODY.PEEK[{part.section}]<0.{plan.text_cap}>")
    return items


def _below(part: Part) -> Iterator[Part]:
    """Every part inside ``part``, depth first, in order."""
    for child in part.children:
        yield child
        yield from _below(child)


def rebuild(plan: PartPlan, answer: Mapping[bytes, Any], *, size: int, key: str | None) -> bytes:
    """The message made of the fetched parts. ``answer`` is one UID's FETCH fields;
    ``size`` the message's RFC822.SIZE; ``key`` its exactly-once key when that is a digest
    of the body (which the rebuilt message no longer starts with), else None."""
    header = _got(answer, b"BODY[HEADER]")
    mark = f"size={size}" + (f'; key="{key}"' if key else "")
    out = [_field(PARTIAL_FIELD, mark)]
    root = plan.root
    if root.is_multipart:
        out.append(header)
        _multipart(plan, root, answer, out)
    else:
        out += _leaf_head(plan, root)
        out.append(header)
        out.append(_leaf_body(plan, root, answer))
    return b"".join(out)


def _multipart(plan: PartPlan, part: Part, answer: Mapping[bytes, Any], out: list[bytes]) -> None:
    delimiter = b"--" + part.boundary.encode("utf-8", "replace")  # type: ignore[union-attr]
    for child in part.children:
        out += [delimiter, b"\r\n"]
        mime = _got(answer, f"BODY[{child.section}.MIME]".encode())
        if child.is_multipart:
            out.append(mime)
            _multipart(plan, child, answer, out)
        else:
            out += _leaf_head(plan, child)
            out += [mime, _leaf_body(plan, child, answer)]
        out.append(b"\r\n")
    out += [delimiter, b"--\r\n"]


def _leaf_head(plan: PartPlan, part: Part) -> list[bytes]:
    take = plan.takes[part.section]
    if take is Take.OMIT:
        return [_field(OMITTED_FIELD, f"{decoded_size(part)} bytes (estimated), not fetched")]
    if take is Take.CUT:
        return [_field(CUT_FIELD, f"first {plan.text_cap} of {part.octets} octets")]
    return []


def _leaf_body(plan: PartPlan, part: Part, answer: Mapping[bytes, Any]) -> bytes:
    take = plan.takes[part.section]
    if take is Take.OMIT:
        return b""
    if take is Take.WHOLE:
        return _got(answer, f"BODY[{part.section}]".encode())
    data = _got(answer, f"BODY[{part.section}]<0>".encode())
    # Whole lines only: a cut inside a base64 quad or a quoted-printable escape would
    # decode to junk at the end.
    end = data.rfind(b"\n")
    return data[: end + 1] if end >= 0 else b""


def _got(answer: Mapping[bytes, Any], key: bytes) -> bytes:
    value = answer.get(key)
    if not isinstance(value, bytes):
        raise StructureError(f"the server did not return {key.decode()}")
    return value


def _field(name: str, value: str) -> bytes:
    return f"{name}: {value}\r\n".encode()
