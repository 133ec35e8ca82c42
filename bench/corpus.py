"""Deterministic generator of realistic RFC 5322 messages for benchmarks and load tests.

``generate(n, seed)`` yields ``(raw_bytes, internaldate)`` pairs: plain-text mail,
multipart/alternative with HTML, a few HTML-only messages, a small share with large base64
attachments, reply threads (In-Reply-To/References), several charsets (utf-8, iso-8859-1,
windows-1252, koi8-r) and RFC 2047 encoded words in subjects and display names. People come
from a fixed pool of ~500 external contacts at ~80 domains (some free-mail) plus the team
members ada@example.com and bob@example.com. Same arguments, same bytes: everything random
comes from one ``random.Random(seed)``; only the default ``now`` (today, UTC midnight) moves
the dates. Pure standard library; ``python -m bench.corpus N out.mbox`` writes an mbox.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import random
import re
import sys
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime


def _w(words: str) -> tuple[str, ...]:
    return tuple(words.split())


TEAM = (("Ada Lovelace", "ada@example.com"), ("Bob Martin", "bob@example.com"))
FREE_MAIL = ("gmail.com", "yahoo.com")

_FIRST = _w(
    "Alice Anna Bruno Carla David Emma Felix Greta Hugo Ines Jonas Klara Lena Marco Nina Oscar "
    "Paula Quentin Rosa Stefan Tina Ulrich Vera Walter Yara Zoe Liam Olivia Noah Mia Ethan Sofia "
    "Lucas Chloe Mateo Leah Aaron Ruth Samuel Ivy"
)
_FIRST_INTL = _w(
    "José Zoë Jürgen Françoise Søren Łukasz Ångström Renée Björn Inés Müge Ştefan Dmitrí Chloé"
)
_FIRST_RU = _w("Дмитрий Ольга Сергей Наталья Алексей Ирина Павел Мария")
_LAST = _w(
    "Smith Jones Miller Becker Rossi Dubois Novak Larsen Walsh Kowalski Fischer Moreau Costa "
    "Schmidt Nguyen Brown Wilson Taylor Clark Lewis Young Hall Allen King Wright Scott Green"
)
_LAST_INTL = _w("García Müller Ødegaard Nuñez Schröder Þórsson Lefèvre Straße Çelik Wójcik")
_LAST_RU = _w("Иванов Петрова Смирнов Кузнецова Попов Соколова")

_WORDS = {
    "en": _w(
        "the a of to and in for on with as by we our your this that proposal contract invoice "
        "meeting call schedule next week pricing license renewal support ticket issue update "
        "please let me know thanks regards quarter budget team project timeline review draft "
        "attached document signed order delivery shipment customer account demo trial feature "
        "request integration server migration report numbers forecast agreement terms discount"
    ),
    "de": _w(
        "und der die das für über Größe Angebot Vertrag Rechnung Besprechung nächste Woche "
        "Preis Lizenz Verlängerung Grüße bitte danke Übersicht Änderung Lösung Kunde schön "
        "möglich Frühjahr Straße Prüfung Qualität zurück gemäß Auftrag Lieferung"
    ),
    "fr": _w(
        "le la les et pour avec une des réunion contrat facture prochaine semaine prix été "
        "déjà très merci cordialement élève à propos équipe problème résolu livraison "
        "reçu données sécurité créé où garçon français"
    ),
    "ru": _w(
        "и в на с по для договор счёт встреча следующей неделе цена лицензия спасибо "
        "пожалуйста клиент проект отчёт поставка заказ документ подпись вопрос ответ "
        "сервер интеграция бюджет квартал команда"
    ),
}
# Which languages each charset can carry, and how the body is usually transferred.
_CHARSETS = (
    ("utf-8", ("en", "de", "fr", "ru"), ("8bit", "quoted-printable", "base64"), 55),
    ("us-ascii", ("en",), ("7bit",), 15),
    ("iso-8859-1", ("de", "fr", "en"), ("quoted-printable", "8bit"), 14),
    ("windows-1252", ("de", "fr", "en"), ("quoted-printable", "8bit"), 10),
    ("koi8-r", ("ru",), ("8bit", "base64"), 6),
)
_ATTACH_TYPES = (
    ("application/pdf", "pdf"),
    ("image/png", "png"),
    ("image/jpeg", "jpg"),
    ("application/zip", "zip"),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx"),
)
_ATTACH_NAMES = (
    "Angebot",
    "invoice",
    "contract",
    "Präsentation",
    "scan",
    "report",
    "счёт",
    "photo",
)
_TZS = tuple(timezone(timedelta(hours=h)) for h in (-8, -5, 0, 1, 2, 3, 5.5, 9))
_FROM_LINE = re.compile(rb"(?m)^(>*From )")
_BLOB_LINES = 36_000  # 57 raw bytes per base64 line: ~2 MB of attachment material


@dataclass(frozen=True, slots=True)
class _Person:
    name: str
    email: str


@dataclass(slots=True)
class _Thread:
    subject: str
    refs: list[str]
    people: list[_Person]
    charset: int


@dataclass(slots=True)
class _Pools:
    people: list[_Person]
    paragraphs: dict[str, list[str]]
    blob_lines: list[bytes]
    threads: list[_Thread] = field(default_factory=list)


def _domains(rng: random.Random) -> list[str]:
    syll = _w("ac bel cor dra en fin gal hol in jet kor lum mar nov or pax quin ros sol tek")
    tlds = ("com", "com", "com", "de", "fr", "io", "co.uk", "net", "ru", "es")
    out: set[str] = set()
    while len(out) < 78:
        out.add(f"{rng.choice(syll)}{rng.choice(syll)}.{rng.choice(tlds)}")
    return sorted(out)


_RU_LATIN = str.maketrans(
    "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
    "abvgdeejziiklmnoprstufhccss'y'eyy",
)


def _ascii(text: str) -> str:
    """A plausible ASCII local part for a name (Ødegaard -> odegaard, Попов -> popov)."""
    flat = unicodedata.normalize("NFKD", text.translate(_RU_LATIN).replace("ø", "o"))
    return "".join(c for c in flat if c.isascii() and (c.isalnum() or c == ".")).strip(".")


def _people(rng: random.Random) -> list[_Person]:
    domains = _domains(rng)
    people: list[_Person] = []
    seen: set[str] = set()
    while len(people) < 500:
        kind = rng.random()
        if kind < 0.75:
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
        elif kind < 0.93:
            first, last = rng.choice(_FIRST_INTL), rng.choice(_LAST_INTL)
        else:
            first, last = rng.choice(_FIRST_RU), rng.choice(_LAST_RU)
        domain = rng.choice(FREE_MAIL) if rng.random() < 0.15 else rng.choice(domains)
        local = _ascii(f"{first[0]}.{last}".lower())
        email = f"{local}{rng.randrange(100)}@{domain}" if local in seen else f"{local}@{domain}"
        if email in seen:
            continue
        seen.add(email)
        people.append(_Person(f"{first} {last}", email))
    return people


def _paragraphs(rng: random.Random) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for lang, words in _WORDS.items():
        base = _WORDS["en"] if lang != "en" else words
        paras = []
        for _ in range(300):
            n = rng.randrange(40, 140)
            picked = rng.choices(words, k=n // 2) + rng.choices(base, k=n - n // 2)
            rng.shuffle(picked)
            lines, line = [], []
            for i, w in enumerate(picked):
                line.append(w)
                if len(line) >= 11 or i == len(picked) - 1:
                    lines.append(" ".join(line))
                    line = []
            paras.append("\n".join(lines).capitalize() + ".")
        out[lang] = paras
    return out


def _pools(seed: int) -> _Pools:
    rng = random.Random(seed * 7919 + 17)
    blob = rng.randbytes(_BLOB_LINES * 57)
    lines = [base64.b64encode(blob[i * 57 : (i + 1) * 57]) for i in range(_BLOB_LINES)]
    return _Pools(_people(rng), _paragraphs(rng), lines)


def encode_word(text: str, charset: str = "utf-8", mode: str = "b") -> str:
    """``text`` as RFC 2047 encoded words, split so each stays well under 75 characters."""
    if text.isascii():
        return text
    words = []
    for start in range(0, len(text), 12):
        chunk = text[start : start + 12].encode(charset, "replace")
        if mode == "b":
            body = base64.b64encode(chunk).decode("ascii")
        else:
            body = binascii.b2a_qp(chunk, header=True).decode("ascii").replace("?", "=3F")
        words.append(f"=?{charset}?{mode}?{body}?=")
    return " ".join(words)


def _addr(p: _Person, rng: random.Random) -> str:
    if p.name.isascii():
        return f'"{p.name}" <{p.email}>' if rng.random() < 0.5 else f"{p.name} <{p.email}>"
    charset, mode = ("utf-8", "b") if rng.random() < 0.7 else ("iso-8859-1", "q")
    if charset == "iso-8859-1" and not all(ord(c) < 256 for c in p.name):
        charset = "utf-8"
    return f"{encode_word(p.name, charset, mode)} <{p.email}>"


def _body_text(rng: random.Random, pools: _Pools, lang: str, target: int) -> str:
    paras = pools.paragraphs[lang]
    out: list[str] = []
    size = 0
    while size < target:
        p = rng.choice(paras)
        out.append(p)
        size += len(p) + 2
    return "\n\n".join(out)


def _encode_body(text: str, charset: str, cte: str) -> bytes:
    data = text.encode(charset, "replace").replace(b"\n", b"\r\n")
    if cte == "base64":
        return base64.encodebytes(text.encode(charset, "replace")).replace(b"\n", b"\r\n")
    if cte == "quoted-printable":
        return binascii.b2a_qp(text.encode(charset, "replace")).replace(b"\n", b"\r\n")
    return data


def _leaf(text: str, subtype: str, charset: str, cte: str) -> bytes:
    head = (
        f"Content-Type: text/{subtype}; charset={charset}\r\n"
        f"Content-Transfer-Encoding: {cte}\r\n\r\n"
    ).encode("ascii")
    return head + _encode_body(text, charset, cte)


def _html(text: str) -> str:
    paras = "".join(f'<p style="margin:0 0 1em">{p}</p>\n' for p in text.split("\n\n"))
    return (
        "<html><head><style>p{font-family:Arial}</style></head><body>\n<div>"
        + paras
        + '<a href="https://www.example.org/pricing">pricing</a></div></body></html>'
    )


def _attachment(rng: random.Random, pools: _Pools, size: int, boundary: str) -> bytes:
    ctype, ext = rng.choice(_ATTACH_TYPES)
    name = f"{rng.choice(_ATTACH_NAMES)}-{rng.randrange(1000)}.{ext}"
    nlines = max(1, size // 57)
    start = rng.randrange(0, _BLOB_LINES - nlines) if nlines < _BLOB_LINES else 0
    data = b"\r\n".join(pools.blob_lines[start : start + nlines])
    if name.isascii():
        disp = f'attachment; filename="{name}"'
    else:
        disp = f"attachment; filename*=utf-8''{_rfc2231(name)}"
    head = (
        f'--{boundary}\r\nContent-Type: {ctype}; name="{encode_word(name)}"\r\n'
        f"Content-Disposition: {disp}\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    )
    return head.encode("ascii") + data + b"\r\n"


def _rfc2231(name: str) -> str:
    safe = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")
    return "".join(chr(b) if chr(b) in safe else f"%{b:02X}" for b in name.encode("utf-8"))


def _subject(rng: random.Random, pools: _Pools, lang: str) -> str:
    words = rng.choices(_WORDS[lang], k=rng.randrange(3, 9))
    return " ".join(words).capitalize()


def _header_subject(subject: str, rng: random.Random) -> str:
    if subject.isascii():
        return subject
    if rng.random() < 0.3 and all(ord(c) < 256 for c in subject):
        return encode_word(subject, "iso-8859-1", "q")
    return encode_word(subject, "utf-8", "b")


def _participants(
    rng: random.Random, pools: _Pools
) -> tuple[_Person, list[_Person], list[_Person]]:
    """(sender, to, cc): outgoing from a team member ~40% of the time, else incoming."""
    team = [_Person(n, e) for n, e in TEAM]
    ext = rng.sample(pools.people, rng.choice((1, 1, 1, 2, 3)))
    cc = rng.sample(pools.people, rng.choice((0, 0, 0, 1, 2)))
    member = rng.choice(team)
    if rng.random() < 0.4:
        return member, ext, cc
    if rng.random() < 0.2:
        cc = [*cc, team[1] if member is team[0] else team[0]]
    return ext[0], [member, *ext[1:]], cc


def _body(rng: random.Random, pools: _Pools, charset_idx: int, boundary: str) -> tuple[str, bytes]:
    """(top-level content headers, body bytes) for the text part(s)."""
    charset, langs, ctes, _ = _CHARSETS[charset_idx]
    lang = rng.choice(langs)
    text = _body_text(rng, pools, lang, int(2000 * 10 ** rng.random()))
    cte = rng.choice(ctes)
    kind = rng.random()
    if kind < 0.05:
        leaf = _leaf(_html(text), "html", charset, cte)
    elif kind < 0.35:
        alt = f"alt-{boundary}"
        leaf = (
            f'Content-Type: multipart/alternative; boundary="{alt}"\r\n\r\n'.encode("ascii")
            + f"--{alt}\r\n".encode("ascii")
            + _leaf(text, "plain", charset, cte)
            + f"\r\n--{alt}\r\n".encode("ascii")
            + _leaf(_html(text), "html", charset, cte)
            + f"\r\n--{alt}--\r\n".encode("ascii")
        )
    else:
        leaf = _leaf(text, "plain", charset, cte)
    head, _, body = leaf.partition(b"\r\n\r\n")
    return head.decode("ascii"), body


def _headers(
    rng: random.Random,
    msg_id: str | None,
    date: datetime,
    sender: _Person,
    to: list[_Person],
    cc: list[_Person],
    subject: str,
    refs: list[str],
) -> list[str]:
    sdomain = sender.email.rpartition("@")[2]
    h = [
        f"Return-Path: <{sender.email}>",
        f"Received: from mail.{sdomain} (mail.{sdomain} [192.0.2.{rng.randrange(1, 255)}])\r\n"
        f"\tby mx.example.com with ESMTPS id {rng.getrandbits(48):012x};\r\n"
        f"\t{format_datetime(date + timedelta(seconds=rng.randrange(1, 90)))}",
    ]
    if rng.random() < 0.3:
        sig = base64.b64encode(rng.randbytes(128)).decode("ascii")
        h.append(
            f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={sdomain}; s=s1;\r\n"
            f"\th=from:to:subject:date:message-id; bh={sig[:44]};\r\n\tb={sig[44:]}"
        )
    if msg_id:
        h.append(f"Message-ID: {msg_id}")
    h += [f"Date: {format_datetime(date)}", f"From: {_addr(sender, rng)}"]
    h.append("To: " + ",\r\n ".join(_addr(p, rng) for p in to))
    if cc:
        h.append("Cc: " + ",\r\n ".join(_addr(p, rng) for p in cc))
    h.append(f"Subject: {_header_subject(subject, rng)}")
    if refs:
        h.append(f"In-Reply-To: {refs[-1]}")
        h.append("References: " + "\r\n ".join(refs))
    h += ["MIME-Version: 1.0", f"X-Mailer: Bench-Mailer/{rng.randrange(1, 9)}.0"]
    return h


def _message(
    rng: random.Random, pools: _Pools, i: int, date: datetime, attach: int, max_bytes: int | None
) -> bytes:
    thread = None
    if pools.threads and rng.random() < 0.35:
        thread = pools.threads[rng.randrange(max(0, len(pools.threads) - 300), len(pools.threads))]
    if thread is None:
        charset_idx = rng.choices(range(len(_CHARSETS)), [c[3] for c in _CHARSETS])[0]
        lang = rng.choice(_CHARSETS[charset_idx][1])
        sender, to, cc = _participants(rng, pools)
        thread = _Thread(_subject(rng, pools, lang), [], [sender, *to, *cc], charset_idx)
        pools.threads.append(thread)
        subject, refs = thread.subject, []
    else:
        people = thread.people
        sender = rng.choice(people)
        to = [p for p in people if p is not sender][:3] or [_Person(*TEAM[0])]
        cc = [p for p in people if p is not sender][3:5]
        refs = thread.refs if len(thread.refs) <= 10 else thread.refs[:1] + thread.refs[-9:]
        subject = f"Re: {thread.subject}"
    sdomain = sender.email.rpartition("@")[2]
    digest = hashlib.blake2b(f"{i}:{rng.random()}".encode(), digest_size=10).hexdigest()
    msg_id = None if rng.random() < 0.002 else f"<{digest}.{i}@mail.{sdomain}>"
    if msg_id:
        thread.refs.append(msg_id)
    tz = rng.choice(_TZS)
    h = _headers(rng, msg_id, date.astimezone(tz), sender, to, cc, subject, refs)
    boundary = f"b{digest}"
    ctype, body = _body(rng, pools, thread.charset, boundary)
    # An attachment costs a 78-byte base64 line per 57 bytes, plus its part headers.
    size = sum(map(len, h)) + len(body) + (attach // 57) * 78 + 2000
    if max_bytes is not None and size > max_bytes:
        attach = 0
    if attach:
        mixed = f"mix-{boundary}"
        body = (
            f"--{mixed}\r\n{ctype}\r\n\r\n".encode("ascii")
            + body
            + b"\r\n"
            + _attachment(rng, pools, attach, mixed)
            + f"--{mixed}--\r\n".encode("ascii")
        )
        ctype = f'Content-Type: multipart/mixed; boundary="{mixed}"'
    h.append(ctype)
    return ("\r\n".join(h) + "\r\n\r\n").encode("ascii") + body


def generate(
    n: int,
    seed: int = 1,
    *,
    attachment_ratio: float = 0.03,
    label_copies: bool = False,
    max_bytes: int | None = None,
    now: datetime | None = None,
) -> Iterator[tuple[bytes, datetime]]:
    """Yield ``n`` ``(raw, internaldate)`` pairs, oldest first, over the 400 days before ``now``.

    ``attachment_ratio`` of messages carry a 0.1-2 MB base64 attachment, unless that would
    make the message bigger than ``max_bytes`` (then it goes without). With
    ``label_copies`` about one message in five is yielded a second time a little later,
    byte for byte, as Gmail shows one message under several labels; copies count in ``n``.
    ``now`` defaults to today at 00:00 UTC so a day's runs give identical bytes.
    """
    rng = random.Random(seed)
    pools = _pools(seed)
    if now is None:
        now = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start, span = now - timedelta(days=400), timedelta(days=400).total_seconds()
    pending: list[tuple[int, bytes, datetime]] = []
    produced = made = 0
    while produced < n:
        if pending and pending[0][0] <= made:
            _, raw, when = pending.pop(0)
        else:
            when = start + timedelta(seconds=(made + rng.random()) * span / max(n, 1))
            attach = 0
            if rng.random() < attachment_ratio:
                attach = int(100_000 * 20 ** rng.random())
            sent = when - timedelta(seconds=rng.randrange(5, 900))
            raw = _message(rng, pools, made, sent, attach, max_bytes)
            made += 1
            if label_copies and rng.random() < 0.2:
                pending.append((made + rng.randrange(1, 50), raw, when))
                pending.sort(key=lambda t: t[0])
        produced += 1
        yield raw, when.replace(microsecond=0)


def write_mbox(
    path: str,
    n: int,
    seed: int = 1,
    *,
    attachment_ratio: float = 0.03,
    max_bytes: int | None = None,
) -> int:
    """Write ``n`` generated messages to an mbox at ``path`` (LF line ends, mboxrd quoting)."""
    total = 0
    with open(path, "wb") as out:
        for raw, when in generate(n, seed, attachment_ratio=attachment_ratio, max_bytes=max_bytes):
            body = _FROM_LINE.sub(rb">\1", raw.replace(b"\r\n", b"\n"))
            stamp = when.astimezone(UTC).strftime("%a %b %d %H:%M:%S %Y")
            out.write(f"From MAILER-DAEMON {stamp}\n".encode("ascii") + body)
            out.write(b"\n" if body.endswith(b"\n") else b"\n\n")
            total += 1
    return total


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        print("usage: python -m bench.corpus N OUT.mbox [SEED]", file=sys.stderr)
        return 2
    count = write_mbox(args[1], int(args[0]), int(args[2]) if len(args) == 3 else 1)
    print(f"wrote {count} messages to {args[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
