"""HTML to plain text for the search body of mail that has no text/plain part.

Owns the HTML parser call (lxml's libxml2 HTML parser, which accepts any tag soup) and the
rules for turning a tree into text: script, style, head and comments are dropped, block
elements end a line, table cells are separated by a space, runs of spaces collapse. This is
all search and snippets need, at a fraction of inscriptis' cost on table-heavy newsletters
(the README's architecture section has the figures). When lxml
refuses a document, tags are stripped with a regex instead, so a broken HTML part still
gives searchable words. Pure: str in, str out; raises only ImportError, for a broken
install.
"""

from __future__ import annotations

import html
import re

# Converting is linear but not free; past this much HTML the extra text adds little to search
# and a lot to the time one message holds the pipeline.
MAX_HTML_CHARS = 4 * 1024 * 1024

_BLOCKS = (
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "footer",
    "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p",
    "pre", "section", "table", "tr", "ul",
)  # fmt: skip
_CELLS = ("td", "th")
_DROPPED = ("script", "style", "head", "title", "noscript", "template")
# libxml2 refuses C0 controls other than tab, CR and LF.
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
_SPACES = re.compile(r"[ \t\r\f\v\xa0]+")
_BLANK_LINES = re.compile(r"\n(?: ?\n)+")
_DROP_RE = re.compile(r"(?is)<(script|style|head)\b.*?</\1\s*>|<!--.*?-->")
_BLOCK_RE = re.compile(r"(?i)<(?:br|/?(?:p|div|tr|li|h\d|table|blockquote))\b[^>]*>")
_TAG_RE = re.compile(r"(?s)<[^>]*>")


def html_to_text(markup: str) -> str:
    """Readable text of an HTML document or fragment."""
    markup = markup[:MAX_HTML_CHARS]
    if not markup.strip():
        return ""
    try:
        try:
            text = _tree_text(markup)
        except ValueError:  # libxml2 refuses C0 controls; rare, so only strip them then
            text = _tree_text(_CONTROLS.sub("", markup))
    except ImportError:  # a broken install: say so (the message is quarantined), loudly
        raise
    except Exception:
        # lxml rejects a few inputs outright (an XML declaration inside a str, documents it
        # finds empty); the crude path is good enough for search.
        text = html.unescape(_TAG_RE.sub(" ", _BLOCK_RE.sub("\n", _DROP_RE.sub(" ", markup))))
    lines = (line.strip() for line in _SPACES.sub(" ", text).split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _tree_text(markup: str) -> str:
    # Imported on first use: the syncing process, which hands its bulk parsing to the
    # parser processes, would otherwise carry lxml's memory at its peak.
    from lxml import etree
    from lxml import html as lxml_html

    root = lxml_html.document_fromstring(markup)
    etree.strip_elements(root, *_DROPPED, etree.Comment, etree.PI, with_tail=False)
    for el in root.iter(*_BLOCKS):
        # A block both starts and ends a line: "<div>a<div>b</div></div>" is two lines.
        el.tail = "\n" + el.tail if el.tail else "\n"
        if el.tag != "br":
            el.text = "\n" + el.text if el.text else "\n"
    for el in root.iter(*_CELLS):
        el.tail = " " + el.tail if el.tail else " "
    return str(root.text_content())
