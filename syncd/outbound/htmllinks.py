"""Where the links are in one HTML part, and what each becomes: pure, text in, edits out.

``outbound.rewrite`` finds the HTML parts of a message and writes them back; this module
reads one part's text (its decoded bytes as latin-1, so string offsets are byte offsets)
and returns the edits, each (start, end, replacement): a tracked ``href`` value spliced in
place of the old one, its quotes kept; an old syncd pixel removed; an old syncd link of
the quoted history unwrapped. It also gives the offsets just inside ``<body>`` and at
``</body>``, where the pixel goes.

Interface::

    scan_text(text, codec, ctx) -> (edits, body_open, body_close) | None

``Context`` holds what spans all parts of a message: the link numbering
(``ctx.links``), ``public_url``, the unsubscribe URLs and ``unwrap``. None means the part
cannot be read safely and is sent as it is. The rules are the ones
``outbound.rewrite``'s docstring lists; how the scanner stays byte-exact with
``html.parser`` is said on ``_Scanner``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from html import parser as _hp
from html import unescape
from html.parser import HTMLParser
from urllib.parse import quote, urlsplit

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


class Context:
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


Found = tuple[list[tuple[int, int, str]], int | None, int | None]  # edits, body open, close


def scan_text(text: str, codec: str, ctx: Context) -> Found | None:
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

    def __init__(self, text: str, codec: str, ctx: Context) -> None:
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
        value = html.escape(ascii_url(url), quote=True)
        q = link.quote
        if not q and not _UNQUOTED_SAFE.fullmatch(value):
            q = '"'
        start, end = link.value_span
        self.edits.append((start, end, f"{q}{value}{q}"))


def ascii_url(url: str) -> str:
    """Percent-encode non-ASCII so a URL spliced into a 7bit part keeps it 7bit."""
    if url.isascii():
        return url
    return _NON_ASCII.sub(lambda m: quote(m.group(), safe=""), url)
