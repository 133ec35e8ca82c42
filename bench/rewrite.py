"""Rewriting benchmark: ``syncd.outbound.rewrite`` on a 100 KB newsletter, against a parse.

The peer, timed in the same run on the same message, is ``email.message_from_bytes`` with
``policy.default``: building the tree alone, which any relay that looks at a message pays.
The newsletter is multipart/alternative (text/plain + HTML with MSO comments, tables and
about 150 links), with the HTML in quoted-printable, base64 and 8bit in turn.

Rates are messages per CPU-second of this process (``time.process_time``), best of
``--repeat`` passes, so other work on a shared machine does not skew them.
Usage: ``python -m bench.rewrite [N] [--repeat K] [--size BYTES]`` (``--size 10000`` for a
10 KB message).
"""

from __future__ import annotations

import argparse
import binascii
import email
import time
from collections.abc import Callable
from email import policy

from syncd.outbound.rewrite import rewrite


def newsletter_html(target: int = 100_000) -> bytes:
    head = (
        '<!DOCTYPE html><HTML xmlns:v="urn:schemas-microsoft-com:vml"><HEAD>'
        '<meta charset="utf-8"><!--[if gte mso 9]><xml><o:OfficeDocumentSettings>'
        "<o:AllowPNG/></o:OfficeDocumentSettings></xml><![endif]-->"
        "<style>td{font-family:Arial} a{color:#0563C1}</style></HEAD>\n<BODY style='margin:0'>\n"
    )
    rows: list[str] = []
    i = 0
    while len(head) + sum(map(len, rows)) < target - 400:
        rows.append(
            f'<table role="presentation" width="100%"><tr><td class=col style="padding:8px">'
            f"<h2>Story {i}: Grüße from the team</h2><p>Lorem ipsum dolor sit amet, "
            f"consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore.</p>"
            f"<A HREF='https://news.example.com/story/{i}?utm_source=mail&amp;utm_id={i}'>"
            f"Read more</A> &middot; <a href=https://cdn.example.com/p/{i}.pdf>PDF</a>"
            f'<!--[if mso]><v:roundrect href="https://news.example.com/s/{i}"></v:roundrect>'
            f"<![endif]--></td></tr></table>\n"
        )
        i += 1
    tail = (
        '<p><a href="https://news.example.com/unsubscribe?u=1">Unsubscribe</a> '
        '<a href="mailto:news@example.com">Contact</a></p>\n</BODY></HTML>\n'
    )
    return (head + "".join(rows) + tail).encode("utf-8")


def _message(html_body: bytes, cte: str) -> bytes:
    if cte == "quoted-printable":
        body = binascii.b2a_qp(html_body).replace(b"\n", b"\r\n")
    elif cte == "base64":
        step = 57
        body = b"".join(
            binascii.b2a_base64(html_body[i : i + step], newline=False) + b"\r\n"
            for i in range(0, len(html_body), step)
        )
    else:
        body = html_body.replace(b"\n", b"\r\n")
    return (
        b"From: News <news@example.com>\r\nTo: bob@client.example\r\nSubject: Weekly\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=NL\r\n\r\n"
        b"--NL\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe weekly news.\r\n"
        b"--NL\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: "
        + cte.encode()
        + b"\r\n\r\n"
        + body
        + b"\r\n--NL--\r\n"
    )


def _rewrite(raw: bytes) -> object:
    return rewrite(
        raw,
        link_url=lambda i: f"https://t.example.com/c/AbCdEf{i:04d}",
        pixel_url="https://t.example.com/o/AbCdEf.gif",
        public_url="https://t.example.com",
    )


def _parse(raw: bytes) -> object:
    return email.message_from_bytes(raw, policy=policy.default)


def _rate(fn: Callable[[bytes], object], raw: bytes, n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(n):
            fn(raw)
        best = min(best, time.process_time() - start)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("n", nargs="?", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--size", type=int, default=100_000, help="HTML size in bytes")
    args = ap.parse_args()
    html_body = newsletter_html(args.size)
    for cte in ("quoted-printable", "base64", "8bit"):
        raw = _message(html_body, cte)
        links = len(rewrite(raw, link_url=str, pixel_url=None, public_url="https://t.x").links)
        ours = _rate(_rewrite, raw, args.n, args.repeat)
        peer = _rate(_parse, raw, args.n, args.repeat)
        print(
            f"{cte:17} {len(raw) / 1000:6.1f} KB {links:4d} links  rewrite {ours:7.1f} msg/s  "
            f"email.message_from_bytes {peer:7.1f} msg/s  ratio {ours / peer:5.2f}"
        )


if __name__ == "__main__":
    main()
