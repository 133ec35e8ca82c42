"""Open and click tracking's rewriting of an outgoing message: pure, bytes in, bytes out.

It owns what changes in a message that syncd relays with tracking: the ``href`` of each
trackable link in the ``text/html`` parts, the open pixel, and the removal of syncd's own
old pixels and links from the quoted history of a reply. It does no I/O: the caller signs
the URLs (``link_url``, ``pixel_url``) and stores the destinations it gets back.

Interface::

    rewrite(raw, *, link_url, pixel_url, public_url, pixel_position="bottom",
            unsubscribe=(), unwrap=None) -> Rewritten

- ``link_url(i)`` returns the tracked URL for link index ``i`` (0-based, document order
  over all HTML parts); ``Rewritten.links[i]`` is that link's destination, entities
  (``&amp;``) unescaped and surrounding whitespace stripped.
- ``pixel_url`` None inserts no pixel (tests, opt-outs). ``pixel_position`` "bottom" puts it
  just before the last ``</body>`` (else at the end of the part), "top" right after the
  first ``<body ...>`` (else at the start): Gmail clips long messages and a bottom pixel
  then never loads.
- ``unsubscribe``: URLs from List-Unsubscribe; the message's own header is read as well.
- ``unwrap(old_tracked_url)`` maps one of syncd's old ``/c/`` links (quoted history) back to
  its destination; None leaves the href as it is. Unwrapped links are not tracked again.
- ``Rewritten.untracked`` says why nothing was done (``UNTRACKED_*``), else None.

Rules. Only ``text/html`` parts that are not attachments are touched; text/plain, other
parts, every header and every MIME boundary come out byte-identical. A link is rewritten
when its href is ``http``/``https`` and absolute; left alone: other schemes (mailto, tel,
sms, cid, data, javascript), ``#anchors``, relative links, links already on
``public_url``, links carrying the opt-out attribute ``data-syncd-notrack``, and
unsubscribe links (in List-Unsubscribe, or whose text says unsubscribe or a common
translation). Signed or encrypted messages (DKIM-Signature, multipart/signed,
multipart/encrypted, application/pkcs7-mime) are returned unchanged: rewriting would break
the signature.

How. The MIME tree is found in the raw bytes (boundaries located by hand, headers read with
the email package's header parser only), and each HTML part's body is replaced by byte
offsets, never regenerated: ``email``'s generator refolds headers and changes boundaries.
Inside a part, the decoded bytes are read as latin-1 so that string offsets are byte offsets
in any ASCII-compatible charset, and ``outbound.htmllinks`` finds the edits: ``html.parser``
gives each start tag's exact source and position, and only the href value (keeping its
quotes) is replaced, so MSO conditional comments, tag case, quoting and entities stay as
they were (lxml and selectolax re-serialise the document). The part is written back in
its own transfer encoding: 7bit/8bit/binary as is; quoted-printable re-encodes only the
lines that changed, with the part's own line length and line ending; base64 is re-encoded
whole with the original line length and line ending.
"""

from __future__ import annotations

import binascii
import codecs
import html
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Literal

from syncd.outbound.htmllinks import Context, ascii_url, scan_text

UNTRACKED_DKIM = "dkim-signed"
UNTRACKED_SIGNED = "signed"
UNTRACKED_ENCRYPTED = "encrypted"
UNTRACKED_NO_HTML = "no html part"
UNTRACKED_UNREADABLE = "html part not rewritable"

_HEADER_END = re.compile(rb"\r?\n(\r?\n)")
_ANGLE_URL = re.compile(r"<([^>]*)>")
# Charsets in which ASCII markup is not the same bytes (or is stateful): offsets and the
# ASCII replacements would be wrong in them, so such parts are left alone.
_ASCII_INCOMPATIBLE = ("utf-16", "utf-32", "utf-7", "iso2022", "hz")

_MAX_DEPTH = 32
_QP_UNSAFE = re.compile(rb"[^\x21-\x3c\x3e-\x7e \t]+")  # runs: one call per run, not per byte


@dataclass(frozen=True, slots=True)
class Rewritten:
    raw: bytes  # the whole message, rewritten (or the input unchanged)
    links: tuple[str, ...]  # destinations, by link index (0-based), &amp; unescaped
    pixel: bool  # a pixel was inserted
    untracked: str | None  # why nothing was done (signed, encrypted, no html part), else None


@dataclass(slots=True)
class _Leaf:
    start: int  # body start in the raw message
    end: int  # body end (the CRLF before the next boundary excluded)
    cte: str
    charset: str


@dataclass(slots=True)
class _HtmlPart:
    leaf: _Leaf
    data: bytes  # decoded body
    edits: list[tuple[int, int, str]]
    body_open: int | None
    body_close: int | None


def rewrite(
    raw: bytes,
    *,
    link_url: Callable[[int], str],
    pixel_url: str | None,
    public_url: str,
    pixel_position: Literal["bottom", "top"] = "bottom",
    unsubscribe: Iterable[str] = (),
    unwrap: Callable[[str], str | None] | None = None,
) -> Rewritten:
    """Rewrite links and add the pixel in ``raw``; see the module docstring."""
    top_end, top_body = _header_bounds(raw, 0, len(raw))
    top = _headers(raw[:top_end])
    reason = _refusal(top)
    if reason is not None:
        return Rewritten(raw, (), False, reason)
    leaves: list[_Leaf] = []
    _walk(raw, top, top_body, len(raw), leaves)
    if not leaves:
        return Rewritten(raw, (), False, UNTRACKED_NO_HTML)

    unsub = {u.strip() for u in unsubscribe}
    for value in top.get_all("List-Unsubscribe") or ():
        unsub.update(m.strip() for m in _ANGLE_URL.findall(str(value)))
    ctx = Context(link_url, public_url, unsub, unwrap)
    parts = [p for p in (_scan(raw, leaf, ctx) for leaf in leaves) if p is not None]
    if not parts:
        return Rewritten(raw, (), False, UNTRACKED_UNREADABLE)

    pixel = False
    if pixel_url is not None:
        tag = (
            f'<img src="{html.escape(ascii_url(pixel_url))}" width="1" height="1" alt="" '
            'style="display:block;border:0;width:1px;height:1px" />'
        )
        if pixel_position == "top":
            part = parts[0]
            at = part.body_open if part.body_open is not None else 0
        else:
            part = parts[-1]
            at = part.body_close
            if at is None:  # no </body>: the end of the part, before its trailing newlines
                at = len(part.data.rstrip(b"\r\n\t "))
        part.edits.append((at, at, tag))
        pixel = True

    out: list[bytes] = []
    pos = 0
    for part in parts:
        if not part.edits:
            continue
        out.append(raw[pos : part.leaf.start])
        out.append(_encode(raw[part.leaf.start : part.leaf.end], part))
        pos = part.leaf.end
    out.append(raw[pos:])
    return Rewritten(b"".join(out), ctx.links_tuple(), pixel, None)


# --- MIME structure, found in the raw bytes ---------------------------------------------


def _header_bounds(raw: bytes, start: int, end: int) -> tuple[int, int]:
    """(end of the header block, start of the body) of the entity at raw[start:end]."""
    if raw.startswith(b"\n", start) or raw.startswith(b"\r\n", start):  # no headers
        return start, start + (1 if raw[start] == 0x0A else 2)
    m = _HEADER_END.search(raw, start, end)
    if m is None:
        return end, end
    return m.start(1), m.end()


def _headers(block: bytes) -> Message:
    return BytesHeaderParser(policy=compat32).parsebytes(block)


def _refusal(top: Message) -> str | None:
    if top.get("DKIM-Signature") is not None:
        return UNTRACKED_DKIM
    ctype = top.get_content_type()
    if ctype == "multipart/signed":
        return UNTRACKED_SIGNED
    if ctype in ("multipart/encrypted", "application/pkcs7-mime", "application/x-pkcs7-mime"):
        return UNTRACKED_ENCRYPTED
    return None


def _walk(
    raw: bytes, headers: Message, start: int, end: int, leaves: list[_Leaf], depth: int = 0
) -> None:
    """Append the rewritable HTML leaves of the entity whose body is raw[start:end]."""
    ctype = headers.get_content_type()
    if ctype.startswith("multipart/"):
        if depth >= _MAX_DEPTH:  # hostile nesting: what lies deeper is sent as it is
            return
        # A signed or encrypted sub-tree stays as it is; so does a multipart without boundary.
        if ctype in ("multipart/signed", "multipart/encrypted"):
            return
        boundary = headers.get_param("boundary")
        if not isinstance(boundary, str) or not boundary:
            return
        for ps, pe in _subparts(raw, boundary.encode("utf-8", "surrogateescape"), start, end):
            hend, bstart = _header_bounds(raw, ps, pe)
            _walk(raw, _headers(raw[ps:hend]), bstart, pe, leaves, depth + 1)
        return
    if ctype != "text/html" or headers.get_content_disposition() == "attachment":
        return
    cte = str(headers.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    charset = headers.get_content_charset() or "us-ascii"
    leaves.append(_Leaf(start, end, cte, charset))


def _subparts(raw: bytes, boundary: bytes, start: int, end: int) -> list[tuple[int, int]]:
    """Byte ranges of the parts between delimiter lines (RFC 2046 section 5.1.1)."""
    delim = re.compile(rb"^--" + re.escape(boundary) + rb"(--)?[ \t]*\r?$", re.M)
    parts: list[tuple[int, int]] = []
    open_at: int | None = None
    for m in delim.finditer(raw, start, end):
        # The line break before a delimiter belongs to the delimiter, not to the part.
        cut = m.start() - (2 if raw[m.start() - 2 : m.start()] == b"\r\n" else 1)
        if open_at is not None:
            parts.append((open_at, max(open_at, cut)))
        if m.group(1):
            return parts
        open_at = min(m.end() + 1, end)  # past the delimiter line's \n
    if open_at is not None:
        parts.append((open_at, end))
    return parts


# --- the HTML inside one part ------------------------------------------------------------


def _scan(raw: bytes, leaf: _Leaf, ctx: Context) -> _HtmlPart | None:
    """Decode one HTML part and find its edits; None if it cannot be read safely."""
    try:
        codec = codecs.lookup(leaf.charset).name
    except LookupError:
        codec = "latin-1"  # unknown but most likely ASCII-compatible: bytes stay bytes
    if codec.startswith(_ASCII_INCOMPATIBLE):
        return None
    data = _decode(raw[leaf.start : leaf.end], leaf.cte)
    if data is None:
        return None
    found = scan_text(data.decode("latin-1"), codec, ctx)
    if found is None:
        return None
    return _HtmlPart(leaf, data, *found)


# --- transfer encodings ------------------------------------------------------------------


def _decode(body: bytes, cte: str) -> bytes | None:
    if cte in ("7bit", "8bit", "binary"):
        return body
    if cte == "quoted-printable":
        return b"".join(binascii.a2b_qp(line) for _, _, line in _qp_logical_lines(body))
    if cte == "base64":
        try:
            return binascii.a2b_base64(body)
        except binascii.Error:
            return None
    return None  # x-uuencode and the like: left alone


def _encode(body: bytes, part: _HtmlPart) -> bytes:
    """The part's body with its edits applied, in the part's own transfer encoding."""
    cte = part.leaf.cte
    if cte == "quoted-printable":
        return _qp_patch(body, part.edits)
    new = _apply(part.data, part.edits)
    if cte == "base64":
        return _b64(body, new)
    return new


def _apply(data: bytes, edits: list[tuple[int, int, str]]) -> bytes:
    out: list[bytes] = []
    pos = 0
    for start, end, repl in sorted(edits, key=lambda e: (e[0], e[1])):
        out.append(data[pos:start])
        out.append(repl.encode("latin-1"))
        pos = end
    out.append(data[pos:])
    return b"".join(out)


def _eol(body: bytes) -> bytes:
    i = body.find(b"\n")
    return b"\r\n" if i > 0 and body[i - 1] == 0x0D else b"\n"


def _b64(body: bytes, data: bytes) -> bytes:
    core = body.rstrip(b"\r\n\t ")
    tail = body[len(core) :]
    eol = _eol(body)
    first = core.split(b"\n", 1)[0].rstrip(b"\r")
    width = len(first) if 4 <= len(first) <= 76 and len(first) % 4 == 0 else 76
    step = width // 4 * 3
    lines = [
        binascii.b2a_base64(data[i : i + step], newline=False) for i in range(0, len(data), step)
    ]
    return eol.join(lines) + tail


def _qp_logical_lines(body: bytes) -> list[tuple[int, int, bytes]]:
    """(start, end, bytes) of each logical line: physical lines joined by soft breaks."""
    lines: list[tuple[int, int, bytes]] = []
    start = pos = 0
    n = len(body)
    pieces = body.split(b"\n")  # one split, not a find and a slice per physical line
    last = len(pieces) - 1
    for k, piece in enumerate(pieces):
        stop = pos + len(piece) + (k < last)
        if stop == pos:  # the empty piece after a final newline
            break
        if not piece.rstrip(b"\r\n\t ").endswith(b"="):  # a hard line break ends it
            lines.append((start, stop, body[start:stop]))
            start = stop
        pos = stop
    if start < n:
        lines.append((start, n, body[start:n]))
    return lines


def _qp_patch(body: bytes, edits: list[tuple[int, int, str]]) -> bytes:
    """Re-encode only the logical lines an edit touches; the others keep their bytes."""
    eol = _eol(body)
    # The encoder's line length shows on the lines it had to break (soft breaks).
    soft = [len(x.rstrip(b"\r")) for x in body.split(b"\n") if x.rstrip(b"\r").endswith(b"=")]
    width = max(8, min(76, max(soft, default=76)))
    logical = _qp_logical_lines(body)
    if not logical:  # an empty body: only the pixel goes in
        return _qp_encode(_apply(b"", edits), width, eol)
    bounds: list[int] = [0]  # decoded offset where each logical line starts
    decoded_lines = [binascii.a2b_qp(enc) for _, _, enc in logical]
    for dec in decoded_lines:
        bounds.append(bounds[-1] + len(dec))

    def line_of(offset: int) -> int:
        return max(0, min(bisect_right(bounds, offset) - 1, len(logical) - 1))

    owner: dict[int, list[tuple[int, int, str]]] = {}  # first line of a run -> its edits
    dirty = [False] * len(logical)
    for edit in edits:
        first = line_of(edit[0])
        last = line_of(max(edit[0], edit[1] - 1)) if edit[1] > edit[0] else first
        for i in range(first, last + 1):
            dirty[i] = True
        owner.setdefault(first, []).append(edit)
    out: list[bytes] = []
    i = 0
    while i < len(logical):
        if not dirty[i]:
            out.append(logical[i][2])
            i += 1
            continue
        j = i
        while j + 1 < len(logical) and dirty[j + 1]:
            j += 1
        ds = bounds[i]
        local = [(s - ds, e - ds, r) for k in range(i, j + 1) for s, e, r in owner.get(k, ())]
        out.append(_qp_encode(_apply(b"".join(decoded_lines[i : j + 1]), local), width, eol))
        i = j + 1
    return b"".join(out)


def _qp_encode(data: bytes, width: int, eol: bytes) -> bytes:
    """Quoted-printable with hard breaks only where ``eol`` is in the data (exact round trip)."""
    out: list[bytes] = []
    lines = data.split(eol)
    for n, line in enumerate(lines):
        enc = _QP_UNSAFE.sub(_qp_escape, line)
        if enc[-1:] in (b" ", b"\t"):  # trailing whitespace is not kept by MTAs
            enc = enc[:-1] + b"=%02X" % enc[-1]
        while len(enc) > width:
            cut = width - 1  # room for the soft break's "="
            # every "=" in enc starts an escape; one that would straddle the cut moves down
            eq = enc.rfind(b"=", cut - 2, cut)
            if eq != -1:
                cut = eq
            out.append(enc[:cut] + b"=" + eol)
            enc = enc[cut:]
        out.append(enc)
        if n < len(lines) - 1:
            out.append(eol)
    return b"".join(out)


def _qp_escape(m: re.Match[bytes]) -> bytes:
    return b"=" + m[0].hex("=").upper().encode("ascii")
