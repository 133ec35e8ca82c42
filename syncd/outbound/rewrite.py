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
in any ASCII-compatible charset; ``html.parser`` gives each start tag's exact source and
position, and only the href value (keeping its quotes) is replaced, so MSO conditional
comments, tag case, quoting and entities stay as they were (lxml and selectolax re-serialise
the document). The part is written back in its own transfer encoding: 7bit/8bit/binary as
is; quoted-printable re-encodes only the lines that changed, with the part's own line length
and line ending; base64 is re-encoded whole with the original line length and line ending.
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
from html import parser as _hp
from html import unescape
from html.parser import HTMLParser
from typing import Literal
from urllib.parse import quote, urlsplit

UNTRACKED_DKIM = "dkim-signed"
UNTRACKED_SIGNED = "signed"
UNTRACKED_ENCRYPTED = "encrypted"
UNTRACKED_NO_HTML = "no html part"
UNTRACKED_UNREADABLE = "html part not rewritable"

NOTRACK_ATTRIBUTE = "data-syncd-notrack"

# Link texts that mark an unsubscribe link; scanners and people click them, and a tracked
# redirect in front of an unsubscribe link hides it from mail clients' own checks.
_UNSUBSCRIBE_WORDS = (
    "unsubscribe",
    "abmelden",
    "désabonner",
    "desabonner",
    "darse de baja",
    "dar de baja",
    "disiscriviti",
    "afmelden",
    "cancelar inscrição",
)
_UNSUBSCRIBE_TEXT = re.compile("|".join(map(re.escape, _UNSUBSCRIBE_WORDS)))
_LINK_TEXT_CAP = 2000  # an unclosed <a> must not collect the whole rest of the document

_HEADER_END = re.compile(rb"\r?\n(\r?\n)")
_ANGLE_URL = re.compile(r"<([^>]*)>")
# What the scanner acts on (<a, <area, <img, <body, </body) and the one construct html.parser
# raises on (a marked section, <![): a part with none of them is not parsed at all.
_MAYBE_EDITED = re.compile(r"<(?:[aA]|[iI][mM][gG]|[bB][oO][dD][yY]|/\s*[bB][oO][dD][yY]|!\[)")
# Tags whose attributes are read: the rules' own, and script/style, which switch html.parser
# to raw text until their end tag.
_READ_TAGS = frozenset({"a", "area", "img", "body", "script", "style"})
_READ_NAME = "(?:" + "|".join("".join(f"[{c}{c.upper()}]" for c in t) for t in _READ_TAGS) + ")"
_TAG_NAME_ONLY = re.compile(r"[a-zA-Z][^\t\n\r\f />\x00]*")  # tagfind_tolerant's name
_AMP_END = re.compile(r"[\s;]")
# </a> as parse_endtag reads it outside script/style: name "a", ended at the first ">".
_END_A = re.compile(r"</\s*[aA]\s*>")
# Outside a link and outside script/style, what html.parser would read with no effect on
# the edits, stepped over in one match: text; a start tag of another element that ends in
# ">" or "/>" where check_for_whole_start_tag ends it (its own regex, matched atomically as
# .match() does); a comment up to the first "--" + spaces + ">" (parse_comment); an end tag
# that is not </body>, up to the first ">" (parse_endtag ends every end tag there outside
# raw text). Anything else goes through the parser's own methods.
_SKIP = re.compile(
    r"(?:[^<]+"
    r"|(?=<(?!" + _READ_NAME + r"(?![^\t\n\r\f />\x00])))"
    r"(?>(?x:" + _hp.locatestarttagend_tolerant.pattern + r"))/?>"
    r"|<!--[^-]*(?:-(?!-\s*>)[^-]*)*--\s*>"
    r"|</(?!\s*[bB][oO][dD][yY])[^>]*>"
    r")*"
)
# The URLs links are made of (scheme://host/path?query, host in ASCII without brackets, no
# tab, CR or LF) split by one regex into what urlsplit would give: urlsplit costs more than
# all the rest of a link. Anything else goes to urlsplit.
_PLAIN_URL = re.compile(
    r"([a-zA-Z][a-zA-Z0-9+.\-]*)://([A-Za-z0-9.\-_~:@!$&'()*+,;=%]*)"
    r"((?:/[^?#\t\n\r]*)?)(?:[?#][^\t\n\r]*)?"
)
_UNQUOTED_SAFE = re.compile(r"[^\s\"'`=<>]+")
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
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
    ctx = _Context(link_url, public_url, unsub, unwrap)
    parts = [p for p in (_scan(raw, leaf, ctx) for leaf in leaves) if p is not None]
    if not parts:
        return Rewritten(raw, (), False, UNTRACKED_UNREADABLE)

    pixel = False
    if pixel_url is not None:
        tag = (
            f'<img src="{html.escape(_ascii(pixel_url))}" width="1" height="1" alt="" '
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


class _Context:
    """What holds across all HTML parts of the message: link numbering and the rules."""

    def __init__(
        self,
        link_url: Callable[[int], str],
        public_url: str,
        unsub: set[str],
        unwrap: Callable[[str], str | None] | None,
    ) -> None:
        self.link_url = link_url
        pub = urlsplit(public_url.strip())
        self.pub_origin = (pub.scheme.lower(), pub.netloc.lower())
        self.pub_path = pub.path.rstrip("/")
        self.unsub = unsub
        self.unwrap = unwrap
        self.links: list[str] = []

    def links_tuple(self) -> tuple[str, ...]:
        return tuple(self.links)

    def public_path(self, url: str) -> str | None:
        """The path under public_url of ``url`` ("" for public_url itself), or None."""
        try:
            u = urlsplit(url)
        except ValueError:
            return None
        return self.public_path_of(u.scheme, u.netloc, u.path)

    def public_path_of(self, scheme: str, netloc: str, path: str) -> str | None:
        """``public_path`` of a URL already split."""
        if (scheme.lower(), netloc.lower()) != self.pub_origin:
            return None
        if path == self.pub_path or path.startswith(self.pub_path + "/"):
            return path[len(self.pub_path) :]
        return None


def _scan(raw: bytes, leaf: _Leaf, ctx: _Context) -> _HtmlPart | None:
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
    found = _scan_text(data.decode("latin-1"), codec, ctx)
    if found is None:
        return None
    return _HtmlPart(leaf, data, *found)


_Found = tuple[list[tuple[int, int, str]], int | None, int | None]  # edits, body open, close


def _scan_text(text: str, codec: str, ctx: _Context) -> _Found | None:
    """Edits and <body> offsets of one part's latin-1 view; None if it cannot be read."""
    if _MAYBE_EDITED.search(text) is None:
        # Nothing the scanner acts on and nothing html.parser raises on: no edits, no body.
        return [], None, None
    scanner = _Scanner(text, codec, ctx)
    try:
        scanner.run()
    except Exception:
        # html.parser raises AssertionError on some malformed declarations; a part it cannot
        # read is sent as it is rather than half rewritten.
        return None
    return scanner.edits, scanner.body_open, scanner.body_close


@dataclass(slots=True)
class _Link:
    value_span: tuple[int, int] | None  # absolute span of the href value, quotes included
    quote: str
    href: str | None  # raw href value as bytes-as-latin-1, quotes stripped
    notrack: bool
    text: list[str]


class _Scanner(HTMLParser):
    """Collects edits (start, end, replacement) in the latin-1 view of one HTML part.

    The tokenizer is html.parser's own ``goahead`` loop (``_goahead``), driven over the
    whole part with the same regexes and the same ``parse_*`` methods, so every construct
    starts and ends where html.parser says. What it leaves out is the work nobody reads:
    attributes of tags the rules ignore, and text outside a link. Such tags are only
    measured (``check_for_whole_start_tag``), and runs of them are stepped over by one
    regex. tests/unit/test_rewrite.py runs html.parser's own ``feed``/``close`` beside it
    and asserts the same edits.
    """

    def __init__(self, text: str, codec: str, ctx: _Context) -> None:
        super().__init__(convert_charrefs=True)
        self.rawdata = text
        self.codec = codec
        self.ctx = ctx
        self.edits: list[tuple[int, int, str]] = []
        self.body_open: int | None = None
        self.body_close: int | None = None
        self._link: _Link | None = None
        self._at = 0  # offset of the construct being handled

    def run(self) -> None:
        # feed() then close(): a first pass stops at the first construct left open (a
        # comment without its end...), and a second one reads from there to the end.
        i = self._goahead(0, False)
        self._goahead(i, True)
        self._finish_link()

    def _goahead(self, i: int, end: bool) -> int:
        """html.parser's ``goahead`` with convert_charrefs, from ``i``; returns where it stopped.

        With convert_charrefs the ``&`` branches of the original are never reached (text
        runs to the next ``<``), so they are left out.
        """
        rawdata = self.rawdata
        n = len(rawdata)
        startswith = rawdata.startswith
        while i < n:
            if self.cdata_elem is None:
                if self._link is None:
                    # Outside a link, text and the tags the rules ignore change nothing.
                    i = _SKIP.match(rawdata, i).end()
                    if i >= n:
                        break
                j = rawdata.find("<", i)
                if j < 0:
                    amppos = rawdata.rfind("&", max(i, n - 34))
                    if amppos >= 0 and not _AMP_END.search(rawdata, amppos):
                        break  # held back for close(), as feed() does
                    j = n
                if i < j and self._link is not None:
                    self.handle_data(unescape(rawdata[i:j]))
            else:
                match = self.interesting.search(rawdata, i)
                if match is None:
                    break
                j = match.start()
                if i < j and self._link is not None:
                    self.handle_data(rawdata[i:j])
            i = j
            if i == n:
                break
            self._at = i
            if _hp.starttagopen.match(rawdata, i):
                k = self._starttag(i)
            elif startswith("</", i):
                m = _END_A.match(rawdata, i) if self.cdata_elem is None else None
                if m is not None:
                    if self._link is not None:
                        self._finish_link()
                    k = m.end()
                else:
                    k = self.parse_endtag(i)
            elif startswith("<!--", i):
                k = self.parse_comment(i)
            elif startswith("<?", i):
                k = self.parse_pi(i)
            elif startswith("<!", i):
                k = self.parse_html_declaration(i)
            elif (i + 1) < n:
                self.handle_data("<")
                k = i + 1
            else:
                break
            if k < 0:
                if not end:
                    break
                k = rawdata.find(">", i + 1)
                if k < 0:
                    k = rawdata.find("<", i + 1)
                    if k < 0:
                        k = i + 1
                else:
                    k += 1
                if self._link is not None:
                    chunk = rawdata[i:k]
                    self.handle_data(chunk if self.cdata_elem else unescape(chunk))
            i = k
        if end and i < n and self.cdata_elem is None:
            if self._link is not None:
                self.handle_data(unescape(rawdata[i:n]))
            i = n
        return i

    def _starttag(self, i: int) -> int:
        """``parse_starttag``, or only the tag's end when nothing would read its attributes."""
        m = _TAG_NAME_ONLY.match(self.rawdata, i + 1)
        name = m.group().lower() if m is not None else ""
        if name in ("a", "area"):
            return self._anchor(i, name)
        if self._link is None and name not in _READ_TAGS:
            return self.check_for_whole_start_tag(i)
        return self.parse_starttag(i)

    def _anchor(self, i: int, tag: str) -> int:
        """``parse_starttag`` for <a> and <area>, keeping the first href's match for its span.

        The same steps as html.parser's (its regexes, in its order), so the tag ends, and
        is a tag or text, exactly where the parser says.
        """
        rawdata = self.rawdata
        endpos = self.check_for_whole_start_tag(i)
        if endpos < 0:
            return endpos
        k = _hp.tagfind_tolerant.match(rawdata, i + 1).end()  # type: ignore[union-attr]
        href: re.Match[str] | None = None
        notrack = False
        attrfind = _hp.attrfind_tolerant.match
        while k < endpos:
            a = attrfind(rawdata, k)
            if not a:
                break
            name = a.group(1).lower()
            if name == "href":
                if href is None:
                    href = a
            elif name == NOTRACK_ATTRIBUTE:
                notrack = True
            k = a.end()
        if rawdata[k:endpos].strip() not in (">", "/>"):
            self.handle_data(rawdata[i:endpos])
            return endpos
        if self._link is not None:  # "<a .../>" opens a link too: no self-closing <a> in HTML
            self._finish_link()
        link = _Link(None, "", None, notrack, [])
        if href is not None and href.group(2):  # an href with a value, even an empty one
            value = href.group(3)
            q = value[:1] if value[:1] in "'\"" and value[-1:] == value[:1] else ""
            link.value_span = (href.start(3), href.end(3))
            link.quote = q
            link.href = value[1:-1] if q else value
        self._link = link
        if tag == "area":
            self._finish_link()
        return endpos

    def _real(self, s: str) -> str:
        """A latin-1 view string as the part's real charset reads it."""
        return s.encode("latin-1").decode(self.codec, "replace")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # "<a .../>" opens a link in HTML; it is not self-closing.
        self.handle_starttag(tag, attrs)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <a> and <area> never come here: _anchor reads them.
        source = self.get_starttag_text() or ""
        at = self._at
        if tag == "img":
            src = next((v for k, v in attrs if k == "src"), None)
            path = self.ctx.public_path(self._real(src).strip()) if src else None
            if path is not None and path.startswith("/o/"):  # an old syncd pixel
                self.edits.append((at, at + len(source), ""))
        elif tag == "body" and self.body_open is None:
            self.body_open = at + len(source)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._finish_link()
        elif tag == "body":
            self.body_close = self._at

    def handle_data(self, data: str) -> None:
        link = self._link
        if link is not None and sum(map(len, link.text)) < _LINK_TEXT_CAP:
            link.text.append(data)

    def _finish_link(self) -> None:
        link, self._link = self._link, None
        if link is None or link.href is None or link.value_span is None or link.notrack:
            return
        ctx = self.ctx
        dest = html.unescape(self._real(link.href)).strip()
        plain = _PLAIN_URL.fullmatch(dest)
        if plain is not None:
            scheme, netloc, upath = plain.group(1).lower(), plain.group(2), plain.group(3)
        else:
            try:
                parts = urlsplit(dest)
            except ValueError:
                return  # neither ours nor http(s)
            scheme, netloc, upath = parts.scheme, parts.netloc, parts.path
        path = ctx.public_path_of(scheme, netloc, upath)
        if path is not None:
            # Ours already: an old tracked link from quoted history goes back to where it
            # pointed (so it no longer counts for the old message); anything else stays.
            if path.startswith("/c/") and ctx.unwrap is not None:
                old = ctx.unwrap(dest)
                if old is not None:
                    self._set_href(link, old)
            return
        if scheme.lower() not in ("http", "https") or not netloc or dest in ctx.unsub:
            return
        text = self._real("".join(link.text)).casefold()
        if _UNSUBSCRIBE_TEXT.search(text) is not None:
            return
        index = len(ctx.links)
        ctx.links.append(dest)
        self._set_href(link, ctx.link_url(index))

    def _set_href(self, link: _Link, url: str) -> None:
        assert link.value_span is not None
        value = html.escape(_ascii(url), quote=True)
        q = link.quote
        if not q and not _UNQUOTED_SAFE.fullmatch(value):
            q = '"'
        start, end = link.value_span
        self.edits.append((start, end, f"{q}{value}{q}"))


def _ascii(url: str) -> str:
    """Percent-encode non-ASCII so a URL spliced into a 7bit part keeps it 7bit."""
    if url.isascii():
        return url
    return _NON_ASCII.sub(lambda m: quote(m.group(), safe=""), url)


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
