"""syncd.outbound.rewrite on literal MIME bytes: what changes in a tracked message, and what not.

Every case checks the bytes that must stay as they were (headers, other parts, boundaries,
the rest of the HTML), not only the hrefs that must change.
"""

from __future__ import annotations

import binascii
import email
import html
import random
import re
from email import policy
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest

import syncd.outbound.htmllinks as hl
import syncd.outbound.rewrite as rw
from syncd.outbound.rewrite import (
    UNTRACKED_DKIM,
    UNTRACKED_ENCRYPTED,
    UNTRACKED_NO_HTML,
    UNTRACKED_SIGNED,
    Rewritten,
    rewrite,
)

PUBLIC = "https://t.example.com"
PIXEL = "https://t.example.com/o/PIX.gif"
PIXEL_TAG = (
    b'<img src="https://t.example.com/o/PIX.gif" width="1" height="1" alt="" '
    b'style="display:block;border:0;width:1px;height:1px" />'
)


def _tok(i: int) -> str:
    return f"https://t.example.com/c/TOK{i}"


def _rw(raw: bytes, **kw: object) -> Rewritten:
    args: dict[str, object] = {"link_url": _tok, "pixel_url": PIXEL, "public_url": PUBLIC}
    args.update(kw)
    return rewrite(raw, **args)  # type: ignore[arg-type]


def _html_msg(
    body: bytes, *, extra: bytes = b"", ctype: bytes = b"text/html; charset=utf-8"
) -> bytes:
    return (
        b"From: Ann <ann@corp.example>\r\nTo: bob@client.example\r\nSubject: Hi\r\n"
        + extra
        + b"MIME-Version: 1.0\r\nContent-Type: "
        + ctype
        + b"\r\n\r\n"
        + body
    )


# --- Outlook HTML: only the hrefs and the pixel change ----------------------------------

OUTLOOK = (
    b"From: Ann <ann@corp.example>\r\n"
    b"To: bob@client.example\r\n"
    b"Subject: Proposal\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: text/html; charset="us-ascii"\r\n'
    b"Content-Transfer-Encoding: 7bit\r\n"
    b"\r\n"
    b'<HTML xmlns:v="urn:schemas-microsoft-com:vml"><HEAD>\r\n'
    b"<!--[if gte mso 9]><xml><o:OfficeDocumentSettings><o:AllowPNG/></o:OfficeDocumentSettings></xml><![endif]-->\r\n"
    b'<STYLE>A:link {color:#0563C1}</STYLE></HEAD><BODY LANG=EN-US link="#0563C1">\r\n'
    b"<DIV class=WordSection1><P class=MsoNormal>See <A HREF='https://www.example.com/offer?id=7&amp;utm_source=mail'>our offer</A> and\r\n"
    b"<a href=https://docs.example.com/guide.pdf target=_blank>the&nbsp;guide</a>.</P>\r\n"
    b'<!--[if mso]><v:roundrect href="https://www.example.com/book" style="height:40px"><center>Book</center></v:roundrect><![endif]-->\r\n'
    b'<!--[if !mso]><!--><a href="https://www.example.com/book" class="btn">Book&nbsp;now</a><!--<![endif]-->\r\n'
    b'<p>Call <A href="tel:+4930123">us</A> or <a href="mailto:ann@corp.example">mail</a>.</p></DIV>\r\n'
    b"</BODY></HTML>\r\n"
)


def test_outlook_html_only_hrefs_and_pixel_change() -> None:
    r = _rw(OUTLOOK)
    expected = (
        OUTLOOK.replace(
            b"'https://www.example.com/offer?id=7&amp;utm_source=mail'",
            b"'https://t.example.com/c/TOK0'",
        )
        .replace(b"href=https://docs.example.com/guide.pdf ", b"href=https://t.example.com/c/TOK1 ")
        .replace(
            b'href="https://www.example.com/book" class',
            b'href="https://t.example.com/c/TOK2" class',
        )
        .replace(b"</BODY></HTML>", PIXEL_TAG + b"</BODY></HTML>")
    )
    assert r.raw == expected
    assert r.links == (
        "https://www.example.com/offer?id=7&utm_source=mail",
        "https://docs.example.com/guide.pdf",
        "https://www.example.com/book",
    )
    assert r.pixel is True and r.untracked is None


@pytest.mark.parametrize(
    ("position", "body", "expected"),
    [
        (
            "top",
            b"<html><Body class=x>\r\n<p>a</p></Body></html>\r\n",
            b"<html><Body class=x>" + PIXEL_TAG + b"\r\n<p>a</p></Body></html>\r\n",
        ),
        ("top", b"<p>no body tag</p>\r\n", PIXEL_TAG + b"<p>no body tag</p>\r\n"),
        ("bottom", b"<p>no body tag</p>\r\n\r\n", b"<p>no body tag</p>" + PIXEL_TAG + b"\r\n\r\n"),
        # the last </body> that is a tag: not the one in a comment, a script or a quoted doc
        (
            "bottom",
            b"<body><!-- </body> --><script>x='</body>'</script>p</body>\n",
            b"<body><!-- </body> --><script>x='</body>'</script>p" + PIXEL_TAG + b"</body>\n",
        ),
    ],
)
def test_pixel_position(position: str, body: bytes, expected: bytes) -> None:
    r = _rw(_html_msg(body), pixel_position=position)
    assert r.raw == _html_msg(expected)
    assert r.pixel


def test_no_pixel_and_no_links_leaves_the_message_identical() -> None:
    raw = _html_msg(b"<p>hello <a href='#top'>top</a></p>")
    r = _rw(raw, pixel_url=None)
    assert r == Rewritten(raw, (), False, None)


# --- a quoted reply carrying an old pixel and an old tracked link ------------------------

REPLY = _html_msg(
    b'<div>Thanks, see <a href="https://new.example.com/x">this</a>.</div>\r\n'
    b'<blockquote class="gmail_quote"><div>Earlier: <a href="https://T.EXAMPLE.COM/c/OLD1">the deck</a>\r\n'
    b'<a href="https://t.example.com/c/OLD2">gone</a>'
    b'<img src="https://t.example.com/o/OLD.gif" width="1" height="1" alt="" style="display:block"/>\r\n'
    b'<img src="https://t.example.com/logo.png"></div></blockquote></body>\r\n'
)


def test_quoted_reply_old_pixel_removed_old_links_unwrapped() -> None:
    known = {"https://T.EXAMPLE.COM/c/OLD1": "https://deck.example.com/d?a=1&b=2"}
    r = _rw(REPLY, unwrap=known.get)
    expected = (
        REPLY.replace(b"https://new.example.com/x", b"https://t.example.com/c/TOK0")
        .replace(b"https://T.EXAMPLE.COM/c/OLD1", b"https://deck.example.com/d?a=1&amp;b=2")
        .replace(
            b'<img src="https://t.example.com/o/OLD.gif" width="1" height="1" alt="" style="display:block"/>',
            b"",
        )
        .replace(b"</blockquote></body>", b"</blockquote>" + PIXEL_TAG + b"</body>")
    )
    assert r.raw == expected
    # the unwrapped link and the unknown old link (unwrap -> None, href kept) are not tracked
    assert r.links == ("https://new.example.com/x",)


# --- transfer encodings -------------------------------------------------------------------

HTML_B64_SOURCE = (
    "<html><body><p>Grüße aus Berlin. " + "Lorem ipsum dolor sit amet. " * 12 + "</p>\r\n"
    '<a href="https://shop.example.com/a?x=1&amp;y=2">Shop</a></body></html>\r\n'
).encode("utf-8")
PLAIN = b"Gr=C3=BC=C3=9Fe aus Berlin.\r\nShop: https://shop.example.com/a?x=3D1&y=3D2\r\n"
ATTACHMENT = b"JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSL0ZpbHRlci9GbGF0ZURl\r\nY29kZT4+CnN0cmVhbQp4nDPQM1Qo5ypUMFAw0DMwslAwtTTVMzIxVbAxtLNTSM7PS0pNLlEwVNCwsNKs\r\n"


def _b64_lines(data: bytes, width: int = 76) -> bytes:
    step = width // 4 * 3
    return b"".join(
        binascii.b2a_base64(data[i : i + step], newline=False) + b"\r\n"
        for i in range(0, len(data), step)
    )


MIXED = (
    b"From: Ann <ann@corp.example>\r\nTo: bob@client.example\r\nSubject: Offer\r\n"
    b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="==MIX=="\r\n\r\n'
    b"This is a multi-part message in MIME format.\r\n"
    b"--==MIX==\r\n"
    b'Content-Type: multipart/alternative;\r\n boundary="alt-7"\r\n\r\n'
    b"--alt-7\r\n"
    b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
    + PLAIN
    + b"\r\n--alt-7\r\n"
    b'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    + _b64_lines(HTML_B64_SOURCE)
    + b"\r\n--alt-7--\r\n"
    b"\r\n--==MIX==\r\n"
    b'Content-Type: application/pdf; name="offer.pdf"\r\n'
    b'Content-Disposition: attachment; filename="offer.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    + ATTACHMENT
    + b"\r\n--==MIX==\r\n"
    b'Content-Type: text/html; charset="utf-8"; name="page.html"\r\n'
    b'Content-Disposition: attachment; filename="page.html"\r\n\r\n'
    b'<a href="https://attached.example.com/">not touched</a></body>\r\n'
    b"--==MIX==--\r\n"
)


def _section(raw: bytes, start: bytes, end: bytes) -> bytes:
    i = raw.index(start)
    return raw[i : raw.index(end, i + len(start))]


def test_base64_html_in_mixed_message() -> None:
    r = _rw(MIXED)
    assert r.links == ("https://shop.example.com/a?x=1&y=2",)
    # everything before the HTML body and after it is byte-identical
    head = MIXED.index(b"base64\r\n\r\n") + len(b"base64\r\n\r\n")
    tail = MIXED.index(b"\r\n--alt-7--")
    assert r.raw[:head] == MIXED[:head]
    assert r.raw.endswith(MIXED[tail:])
    encoded = r.raw[head : len(r.raw) - len(MIXED) + tail]
    lines = encoded.split(b"\r\n")
    assert lines[-1] == b"" and all(len(x) == 76 for x in lines[:-2]) and 0 < len(lines[-2]) <= 76
    assert b"\n" not in encoded.replace(b"\r\n", b"")
    expected = HTML_B64_SOURCE.replace(
        b"https://shop.example.com/a?x=1&amp;y=2", b"https://t.example.com/c/TOK0"
    ).replace(b"</body>", PIXEL_TAG + b"</body>")
    assert binascii.a2b_base64(encoded) == expected
    # the email package reads it as the same tree
    parsed = email.message_from_bytes(r.raw, policy=policy.default)
    assert [p.get_content_type() for p in parsed.walk()] == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "application/pdf",
        "text/html",
    ]


def test_attachment_and_plain_parts_byte_identical() -> None:
    r = _rw(MIXED)
    for start, end in [
        (b"--alt-7\r\nContent-Type: text/plain", b"--alt-7\r\nContent-Type: text/html"),
        (b"--==MIX==\r\nContent-Type: application/pdf", b"--==MIX==\r\nContent-Type: text/html"),
        (b'Content-Type: text/html; charset="utf-8"; name="page.html"', b"--==MIX==--"),
    ]:
        assert _section(r.raw, start, end) == _section(MIXED, start, end)


QP_BODY = (
    b'<html><body style=3D"margin:0"><p class=3D"intro">Hello Bob, this line i=\r\n'
    b"s long enough that the encoder had to break it with a soft line break.</p>\r\n"
    b'<a href=3D"https://example.com/r?u=3D1&amp;v=3D2">Read the report =E2=80=93=\r\n'
    b" now</a>\r\n"
    b"<p>Unchanged line stays byte-identical =E2=9C=93</p>\r\n"
    b"</body></html>\r\n"
)
QP_MSG = (
    b"From: ann@corp.example\r\nTo: bob@client.example\r\nSubject: QP\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n'
    b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nRead the report: https://example.com/r?u=1&v=2\r\n"
    b"--b1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    + QP_BODY
    + b"--b1--\r\n"
)


def test_quoted_printable_html() -> None:
    r = _rw(QP_MSG)
    assert r.links == ("https://example.com/r?u=1&v=2",)
    head = QP_MSG.index(QP_BODY)
    out_body = r.raw[head : len(r.raw) - len(b"--b1--\r\n")]
    assert r.raw[:head] == QP_MSG[:head] and r.raw.endswith(b"\r\n--b1--\r\n")
    expected = (
        binascii.a2b_qp(QP_BODY)
        .replace(b"https://example.com/r?u=1&amp;v=2", b"https://t.example.com/c/TOK0")
        .replace(b"</body>", PIXEL_TAG + b"</body>")
    )
    assert binascii.a2b_qp(out_body) == expected
    lines = out_body.split(b"\r\n")
    assert all(len(x) <= 76 for x in lines)
    assert b"\n" not in out_body.replace(b"\r\n", b"")
    # lines without an edit keep their bytes; the soft-broken first paragraph too
    assert out_body.startswith(QP_BODY[: QP_BODY.index(b"<a href")])
    assert b"<p>Unchanged line stays byte-identical =E2=9C=93</p>\r\n" in out_body
    assert b'href=3D"https://t.example.com/c/TOK0"' in out_body


def test_iso_8859_1_html_stays_in_its_charset() -> None:
    body = (
        b"<html><body><p>Caf\xe9 cr\xe8me \xe0 la fran\xe7aise</p>\n"
        b'<a href="https://caf\xe9.example.com/men\xfc">Men\xfc</a>\n'
        b'<a href="https://news.example.com/out">Se d\xe9sabonner</a></body></html>\n'
    )
    raw = _html_msg(body, ctype=b"text/html; charset=iso-8859-1").replace(b"\r\n", b"\n")
    r = _rw(raw)
    assert r.links == ("https://café.example.com/menü",)
    assert r.raw == raw.replace(
        b"https://caf\xe9.example.com/men\xfc", b"https://t.example.com/c/TOK0"
    ).replace(b"</body>", PIXEL_TAG + b"</body>")


def test_unwrapped_non_ascii_destination_is_percent_encoded_in_a_7bit_part() -> None:
    raw = _html_msg(b'<a href="https://t.example.com/c/OLD">x</a>')
    r = _rw(raw, pixel_url=None, unwrap=lambda u: "https://ex.com/\u00fc")
    assert r.raw == raw.replace(b"https://t.example.com/c/OLD", b"https://ex.com/%C3%BC")


# --- which links are rewritten and which are left alone -----------------------------------

LINK_ROWS: list[tuple[str, bytes, bytes, tuple[str, ...]]] = [
    # (case, anchor, extra headers, links tracked)
    ("http", b'<a href="http://ex.com/">x</a>', b"", ("http://ex.com/",)),
    ("scheme case", b'<a href="HtTpS://ex.com/A">x</a>', b"", ("HtTpS://ex.com/A",)),
    ("whitespace", b'<a href="\r\n  https://ex.com/  ">x</a>', b"", ("https://ex.com/",)),
    (
        "entities",
        b'<a href="https://ex.com/?a=1&amp;b=&#50;&lt;">x</a>',
        b"",
        ("https://ex.com/?a=1&b=2<",),
    ),
    ("unquoted", b"<a class=x href=https://ex.com/>x</a>", b"", ("https://ex.com/",)),
    ("area", b'<map><area shape=rect href="https://ex.com/m"></map>', b"", ("https://ex.com/m",)),
    ("mailto", b'<a href="mailto:a@b.example">x</a>', b"", ()),
    ("tel", b'<a href="tel:+49301234">x</a>', b"", ()),
    ("sms", b'<a href="sms:+49301234">x</a>', b"", ()),
    ("cid", b'<a href="cid:part1@x">x</a>', b"", ()),
    ("data", b'<a href="data:text/html,hi">x</a>', b"", ()),
    ("javascript", b'<a href="JavaScript:alert(1)">x</a>', b"", ()),
    ("ftp", b'<a href="ftp://ex.com/f">x</a>', b"", ()),
    ("anchor", b'<a href="#section2">x</a>', b"", ()),
    ("relative", b'<a href="/path/page.html">x</a>', b"", ()),
    ("protocol-relative", b'<a href="//ex.com/p">x</a>', b"", ()),
    ("no host", b'<a href="https:///p">x</a>', b"", ()),
    ("empty href", b'<a href="">x</a>', b"", ()),
    ("href without value", b"<a href>x</a>", b"", ()),
    ("no href", b"<a name=top>x</a>", b"", ()),
    ("public_url", b'<a href="https://t.example.com/view/1">x</a>', b"", ()),
    ("public_url, other case", b'<a href="HTTPS://T.Example.com/c/abc">x</a>', b"", ()),
    ("opt-out attribute", b'<a data-syncd-notrack href="https://ex.com/">x</a>', b"", ()),
    (
        "opt-out attribute with value",
        b'<a href="https://ex.com/" DATA-SYNCD-NOTRACK="1">x</a>',
        b"",
        (),
    ),
    (
        "List-Unsubscribe header",
        b'<a href="https://ex.com/u?id=1&amp;t=2">x</a>',
        b"List-Unsubscribe: <mailto:u@ex.com>,\r\n <https://ex.com/u?id=1&t=2>\r\n",
        (),
    ),
    ("unsubscribe text", b'<a href="https://ex.com/u">Click to <b>UNSUBSCRIBE</b></a>', b"", ()),
    ("abmelden", b'<a href="https://ex.com/u">Newsletter abmelden</a>', b"", ()),
    ("se desabonner", b'<a href="https://ex.com/u">Se d\xc3\xa9sabonner</a>', b"", ()),
    ("darse de baja", b'<a href="https://ex.com/u">Darse de baja</a>', b"", ()),
    (
        "other public host",
        b'<a href="https://t.example.com.evil.example/c/x">x</a>',
        b"",
        ("https://t.example.com.evil.example/c/x",),
    ),
]


@pytest.mark.parametrize(
    ("anchor", "extra", "links"), [r[1:] for r in LINK_ROWS], ids=[r[0] for r in LINK_ROWS]
)
def test_link_rules(anchor: bytes, extra: bytes, links: tuple[str, ...]) -> None:
    raw = _html_msg(b"<p>" + anchor + b"</p>\r\n", extra=extra)
    r = _rw(raw, pixel_url=None)
    assert r.links == links
    if not links:
        assert r.raw == raw
    else:
        changed = r.raw[len(raw) - len(anchor) - 6 :]
        assert r.raw[: len(raw) - len(anchor) - 6] == raw[: len(raw) - len(anchor) - 6]
        assert b"https://t.example.com/c/TOK0" in changed


def test_unsubscribe_argument() -> None:
    raw = _html_msg(b'<a href="https://ex.com/u?x=1">Manage</a> <a href="https://ex.com/y">y</a>')
    r = _rw(raw, pixel_url=None, unsubscribe=["https://ex.com/u?x=1"])
    assert r.links == ("https://ex.com/y",)


def test_replacement_needing_quotes_is_quoted() -> None:
    raw = _html_msg(b"<a href=https://ex.com/>x</a>")
    r = _rw(raw, pixel_url=None, link_url=lambda i: f"https://t.example.com/c/{i}?k=v&w")
    assert r.raw == raw.replace(
        b"href=https://ex.com/>", b'href="https://t.example.com/c/0?k=v&amp;w">'
    )


def test_link_indices_run_across_html_parts() -> None:
    raw = (
        b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=X\r\n\r\n"
        b'--X\r\nContent-Type: text/html\r\n\r\n<a href="https://a.example/">a</a></body>\r\n'
        b'--X\r\nContent-Type: text/html\r\n\r\n<a href="https://b.example/">b</a></body>\r\n--X--\r\n'
    )
    r = _rw(raw)
    assert r.links == ("https://a.example/", "https://b.example/")
    # the pixel goes to the last HTML part only
    assert r.raw.count(PIXEL_TAG) == 1 and r.raw.index(PIXEL_TAG) > r.raw.index(b"TOK1")


# --- messages left untouched --------------------------------------------------------------

SIGNED = (
    b'From: a@b.example\r\nContent-Type: multipart/signed; protocol="application/pgp-signature"; boundary=S\r\n\r\n'
    b'--S\r\nContent-Type: text/html\r\n\r\n<a href="https://ex.com/">x</a>\r\n'
    b"--S\r\nContent-Type: application/pgp-signature\r\n\r\nsig\r\n--S--\r\n"
)
UNTOUCHED_ROWS: list[tuple[str, bytes, str]] = [
    (
        "dkim",
        _html_msg(
            b'<a href="https://ex.com/">x</a>',
            extra=b"DKIM-Signature: v=1; a=rsa-sha256; d=corp.example;\r\n b=abc\r\n",
        ),
        UNTRACKED_DKIM,
    ),
    ("pgp signed", SIGNED, UNTRACKED_SIGNED),
    ("encrypted", SIGNED.replace(b"multipart/signed", b"multipart/encrypted"), UNTRACKED_ENCRYPTED),
    (
        "s/mime",
        _html_msg(
            b"MIIB...", ctype=b'application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"'
        ),
        UNTRACKED_ENCRYPTED,
    ),
    ("plain only", _html_msg(b"see https://ex.com/\r\n", ctype=b"text/plain"), UNTRACKED_NO_HTML),
    (
        "no content-type",
        b"From: a@b.example\r\n\r\n<a href='https://ex.com/'>x</a>\r\n",
        UNTRACKED_NO_HTML,
    ),
    (
        "html attachment only",
        _html_msg(
            b"<a href='https://ex.com/'>x</a>",
            extra=b"Content-Disposition: attachment; filename=a.html\r\n",
        ),
        UNTRACKED_NO_HTML,
    ),
    (
        "signed inside mixed",
        b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=M\r\n\r\n--M\r\n"
        + SIGNED.split(b"\r\n", 1)[1]
        + b"--M--\r\n",
        UNTRACKED_NO_HTML,
    ),
]


@pytest.mark.parametrize(
    ("raw", "reason"), [r[1:] for r in UNTOUCHED_ROWS], ids=[r[0] for r in UNTOUCHED_ROWS]
)
def test_untouched(raw: bytes, reason: str) -> None:
    assert _rw(raw) == Rewritten(raw, (), False, reason)


# --- hostile HTML never raises and never corrupts the bytes around it ---------------------

HOSTILE: list[tuple[str, bytes]] = [
    ("unclosed tags", b"<html><body><table><tr><td><a href='https://ex.com/a'>x<div><p><b>"),
    ("href without value at end", b"<p>x</p><a href="),
    ("href without value", b"<a href= >x</a><a href=>y</a>"),
    ("huge attribute", b'<a title="' + b"x" * 300_000 + b'" href="https://ex.com/">x</a>'),
    ("nul bytes", b'<a\x00 href="https://ex.com/\x00">x\x00</a>\x00</body>'),
    ("body end in comment", b"<body><p>a</p><!-- </body> -->"),
    ("body end in script", b"<body><script>document.write('</body>')</script>"),
    ("bad marked section", b"<![if x]><![foo[ <a href='https://ex.com/'>x</a>"),
    ("bogus declaration", b"<!DOCTYPE<<<><a href='https://ex.com/'>x</a><!"),
    ("lone lt", b"<<<a<a href=https://ex.com/>>x</a><"),
    ("unterminated comment", b"<a href='https://ex.com/'>x</a><!-- </body>"),
    ("unterminated quote", b'<a href="https://ex.com/>x</a></body>'),
    ("invalid ipv6", b'<a href="https://[::1/">x</a>'),
    ("stray cr", b"<a\rhref=https://ex.com/\r>x</a>\r</body>\r"),
    ("invalid utf-8", b'<p>\xff\xfe <a href="https://ex.com/">\xc3</a>'),
]


@pytest.mark.parametrize("html_body", [r[1] for r in HOSTILE], ids=[r[0] for r in HOSTILE])
@pytest.mark.parametrize("cte", ["7bit", "quoted-printable", "base64"])
def test_hostile_html(html_body: bytes, cte: str) -> None:
    encoded = {
        "7bit": html_body,
        "quoted-printable": binascii.b2a_qp(html_body, istext=False).replace(b"\n", b"\r\n"),
        "base64": _b64_lines(html_body),
    }[cte]
    head = (
        b'From: a@b.example\r\nContent-Type: multipart/alternative; boundary="h"\r\n\r\n'
        b"--h\r\nContent-Type: text/plain\r\n\r\nplain <a href='https://ex.com/'>\r\n"
        b"--h\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: "
        + cte.encode()
        + b"\r\n\r\n"
    )
    tail = b"\r\n--h--\r\n"
    raw = head + encoded + tail
    r = _rw(raw, unwrap=lambda u: None)
    assert r.raw.startswith(head) and r.raw.endswith(tail)
    out = r.raw[len(head) : len(r.raw) - len(tail)]
    decoded = {
        "7bit": lambda b: b,
        "quoted-printable": binascii.a2b_qp,
        "base64": binascii.a2b_base64,
    }[cte](out)
    # what changed is only tracked hrefs and the pixel: put them back and the input returns
    undo = decoded.replace(PIXEL_TAG, b"", 1)
    for i, dest in enumerate(r.links):
        undo = undo.replace(_tok(i).encode(), dest.encode(), 1)
    original = binascii.a2b_qp(encoded) if cte == "quoted-printable" else html_body
    assert undo == original


def test_lf_only_message() -> None:
    raw = b"From: a@b.example\nContent-Type: multipart/alternative; boundary=q\n\n--q\nContent-Type: text/plain\n\nx\n--q\nContent-Type: text/html\n\n<a href='https://ex.com/'>x</a></body>\n--q--\n"
    r = _rw(raw)
    assert r.raw == raw.replace(b"'https://ex.com/'", b"'https://t.example.com/c/TOK0'").replace(
        b"</body>", PIXEL_TAG + b"</body>"
    )


def test_headers_only_html_message_gets_the_pixel() -> None:
    raw = b"From: a@b.example\r\nContent-Type: text/html"
    assert _rw(raw) == Rewritten(raw + PIXEL_TAG, (), True, None)


def test_deep_nesting_does_not_recurse_without_bound() -> None:
    raw = b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=d\r\n\r\n"
    raw += b"--d\r\nContent-Type: multipart/mixed; boundary=d\r\n\r\n" * 3000
    assert _rw(raw).untracked == UNTRACKED_NO_HTML


@pytest.mark.parametrize(
    "seed_msg", [OUTLOOK, MIXED, QP_MSG, REPLY], ids=["outlook", "mixed", "qp", "reply"]
)
def test_mutated_messages_never_raise(seed_msg: bytes) -> None:
    rng = random.Random(14)
    for _ in range(150):
        raw = bytearray(seed_msg)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(raw))
            op = rng.random()
            if op < 0.4:
                raw[i] = rng.choice(b"<>\"'=&/-\r\n\x00\xff ")
            elif op < 0.7:
                del raw[i : i + rng.randint(1, 40)]
            else:
                raw[i:i] = rng.choice(
                    [b"<a href=", b"<!--", b"-->", b"</body>", b"<![", b"--", b"=\r\n"]
                )
        r = _rw(bytes(raw), unwrap=lambda u: "https://x.example/")
        assert isinstance(r.raw, bytes)


# --- the fast scanner against html.parser's own feed/close (the implementation it replaced) --

# The reference: the scanner rewrite.py had before the fast path, driven by html.parser's
# feed()/close() on the whole part, every tag parsed, offsets from getpos(). The fast
# scanner must find exactly the same edits, <body> offsets, links, and refuse the same parts.
_REF_TAG_NAME = re.compile(r"([a-zA-Z][^\t\n\r\f />\x00]*)(?:\s|/(?!>))*")
_REF_ATTR = re.compile(
    r"((?<=['\"\s/])[^\s/>][^\s/=>]*)(\s*=+\s*('[^']*'|\"[^\"]*\"|(?!['\"])[^>\s]*))?"
    r"(?:\s|/(?!>))*"
)


def _ref_http(url: str) -> bool:
    try:
        u = urlsplit(url)
    except ValueError:
        return False
    return u.scheme.lower() in ("http", "https") and bool(u.netloc)


def _ref_link(source: str, at: int, attrs: list[tuple[str, str | None]]) -> hl._Link:
    notrack = any(k == hl.NOTRACK_ATTRIBUTE for k, _ in attrs)
    m = _REF_TAG_NAME.match(source, 1)
    k = m.end() if m else len(source)
    seen = 0
    while k < len(source):
        a = _REF_ATTR.match(source, k)
        if not a:
            break
        name, rest, value = a.group(1, 2, 3)
        if name.lower() == "href":
            if not rest or value is None or seen >= len(attrs):
                break
            quote_char = value[:1] if value[:1] in "'\"" and value[-1:] == value[:1] else ""
            inner = value[1:-1] if quote_char else value
            if attrs[seen] != ("href", html.unescape(inner) if inner else inner):
                break
            return hl._Link((at + a.start(3), at + a.end(3)), quote_char, inner, notrack, [])
        seen += 1
        k = a.end()
    return hl._Link(None, "", None, notrack, [])


class _ReferenceScanner(HTMLParser):
    def __init__(self, text: str, codec: str, ctx: hl.Context) -> None:
        super().__init__(convert_charrefs=True)
        self.text, self.codec, self.ctx = text, codec, ctx
        self.edits: list[tuple[int, int, str]] = []
        self.body_open: int | None = None
        self.body_close: int | None = None
        self._link: hl._Link | None = None
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def run(self) -> None:
        self.feed(self.text)
        self.close()
        self._finish_link()

    def _offset(self) -> int:
        line, col = self.getpos()
        return self._line_starts[line - 1] + col

    def _real(self, s: str) -> str:
        return s.encode("latin-1").decode(self.codec, "replace")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        source = self.get_starttag_text() or ""
        at = self._offset()
        if tag in ("a", "area"):
            self._finish_link()
            self._link = _ref_link(source, at, attrs)
            if tag == "area":
                self._finish_link()
        elif tag == "img":
            src = next((v for k, v in attrs if k == "src"), None)
            path = self.ctx.public_path(self._real(src).strip()) if src else None
            if path is not None and path.startswith("/o/"):
                self.edits.append((at, at + len(source), ""))
        elif tag == "body" and self.body_open is None:
            self.body_open = at + len(source)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._finish_link()
        elif tag == "body":
            self.body_close = self._offset()

    def handle_data(self, data: str) -> None:
        link = self._link
        if link is not None and sum(map(len, link.text)) < hl._LINK_TEXT_CAP:
            link.text.append(data)

    def _finish_link(self) -> None:
        link, self._link = self._link, None
        if link is None or link.href is None or link.value_span is None or link.notrack:
            return
        ctx = self.ctx
        dest = html.unescape(self._real(link.href)).strip()
        path = ctx.public_path(dest)
        if path is not None:
            if path.startswith("/c/") and ctx.unwrap is not None:
                old = ctx.unwrap(dest)
                if old is not None:
                    self._set_href(link, old)
            return
        if not _ref_http(dest) or dest in ctx.unsub:
            return
        text = self._real("".join(link.text)).casefold()
        if any(word in text for word in hl._UNSUBSCRIBE_WORDS):
            return
        index = len(ctx.links)
        ctx.links.append(dest)
        self._set_href(link, ctx.link_url(index))

    def _set_href(self, link: hl._Link, url: str) -> None:
        assert link.value_span is not None
        value = html.escape(hl.ascii_url(url), quote=True)
        q = link.quote
        if not q and not hl._UNQUOTED_SAFE.fullmatch(value):
            q = '"'
        start, end = link.value_span
        self.edits.append((start, end, f"{q}{value}{q}"))


def _reference_scan_text(text: str, codec: str, ctx: hl.Context) -> hl.Found | None:
    scanner = _ReferenceScanner(text, codec, ctx)
    try:
        scanner.run()
    except Exception:
        return None
    return scanner.edits, scanner.body_open, scanner.body_close


def _unwrap(u: str) -> str | None:
    return "https://x.example/\u00fc" if "OLD1" in u or "1" in u[-3:] else None


def _both(text: str, codec: str = "utf-8") -> None:
    found = []
    for scan in (_reference_scan_text, hl.scan_text):
        ctx = hl.Context(_tok, PUBLIC, {"https://ex.com/u"}, _unwrap)
        found.append((scan(text, codec, ctx), ctx.links))
    assert found[0] == found[1], text[:300]


def _mutations(seed: bytes, rng: random.Random, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        raw = bytearray(seed)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(raw))
            op = rng.random()
            if op < 0.4:
                raw[i] = rng.choice(b"<>\"'=&/-\r\n\x00\xff ")
            elif op < 0.7:
                del raw[i : i + rng.randint(1, 40)]
            else:
                raw[i:i] = rng.choice(
                    [b"<a href=", b"<!--", b"-->", b"</body>", b"<![", b"--", b"=\r\n"]
                )
        out.append(bytes(raw))
    return out


@pytest.mark.parametrize("html_body", [r[1] for r in HOSTILE], ids=[r[0] for r in HOSTILE])
def test_fast_scan_equals_html_parser_on_hostile_html(html_body: bytes) -> None:
    _both(html_body.decode("latin-1"))
    _both(html_body.decode("latin-1"), "iso8859-1")


@pytest.mark.parametrize(
    "seed_msg", [OUTLOOK, MIXED, QP_MSG, REPLY], ids=["outlook", "mixed", "qp", "reply"]
)
def test_fast_scan_equals_html_parser_on_mutated_messages(
    seed_msg: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = _mutations(seed_msg, random.Random(14), 150)
    for raw in bodies:
        _both(raw.decode("latin-1"))  # the whole message read as HTML: hostile enough
    fast = [_rw(raw, unwrap=_unwrap) for raw in bodies]
    monkeypatch.setattr(rw, "scan_text", _reference_scan_text)
    assert fast == [_rw(raw, unwrap=_unwrap) for raw in bodies]


# Pieces that move html.parser between its states: tags it skips and tags it reads, quoted
# attributes holding markup, comments (MSO conditionals, --!>, unterminated), raw text in
# script/style, marked sections, declarations, processing instructions, lone < and &.
_SOUP = [
    "<a href=https://ex.com/1>",
    "</ab>",
    "</a x>",
    "<A HREF='https://ex.com/2?a=1&amp;b=2'>",
    "</a>",
    "</A >",
    '<a href="https://t.example.com/c/OLD1">',
    '<a href="https://ex.com/u">',
    "<a/>",
    "<area href=https://ex.com/m>",
    "<a data-syncd-notrack href=https://ex.com/n>",
    "<a href>",
    "<a href=",
    "<a\rhref=https://ex.com/3\r>",
    "<ab href=https://ex.com/4>",
    '<img src="https://t.example.com/o/x.gif">',
    "<IMG SRC=https://t.example.com/o/y.gif/>",
    "<img src=",
    "<body class=x>",
    "<BODY>",
    "</body>",
    "</ body >",
    "</body x>",
    "</bodyx>",
    "<p title=\"<a href='https://ex.com/5'>\">",
    "<td class=c style='x:1'>",
    "<br/>",
    "<b>",
    "</b>",
    "</b x='>'>",
    "</>",
    "</ >",
    "</3>",
    '<v:roundrect href="https://ex.com/6">',
    "<!--",
    "-->",
    "--!>",
    "-- >",
    "<!-->",
    "<!--[if mso]>",
    "<![endif]-->",
    "<!--<![endif]-->",
    "<script>",
    "</script>",
    "<SCRIPT type=x>",
    "</script >",
    "<style>",
    "</style>",
    "<style/>",
    "<![CDATA[",
    "]]>",
    "<![if !mso]>",
    "<![endif]>",
    "<![foo[",
    "<!DOCTYPE html>",
    "<!x>",
    "<?xml version='1.0'?>",
    "<?",
    "<",
    ">",
    "<3",
    "&",
    "&amp;",
    "&#60;",
    "&nbsp",
    '"',
    "'",
    "=",
    " ",
    "\n",
    "\r\n",
    "\t",
    "\x00",
    "\xff",
    "unsubscribe",
    "Abmelden",
    "text",
    "Se d\xc3\xa9sabonner",
    "x" * 300,
]


def test_fast_scan_equals_html_parser_on_tag_soup() -> None:
    rng = random.Random(1414)
    for _ in range(3000):
        _both("".join(rng.choice(_SOUP) for _ in range(rng.randint(1, 40))))
    long_text = "<a href=https://ex.com/7>" + "unsubscribe<b>" * 400 + "</a></body>"
    _both(long_text)
    _both("<p>x</p>" * 5 + "<a href=https://ex.com/8>tail &amp")
