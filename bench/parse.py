"""Parser benchmark: ``syncd.mail.parse.parse`` against the standard library's email parser.

Generates messages with ``bench.corpus`` (once, outside the timing), then times, one core:

- ``syncd parse()``: the full job (ids, addresses, dates, search text, attachment digests);
- ``email policy.default``: ``message_from_bytes`` alone, building the tree and nothing else;
- ``email policy.default + fields``: the same plus what syncd needs from it (subject, from,
  to, date, message-id, the text body), the honest comparison;
- ``email policy.compat32``: ``message_from_bytes`` alone.

Rates are messages per CPU-second of this process (``time.process_time``), so other work on
a shared machine does not skew them; each is run ``--repeat`` times and the best pass wins.
Usage: ``python -m bench.parse [N] [--attachments RATIO] [--repeat K]``.
"""

from __future__ import annotations

import argparse
import email
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage

from bench.corpus import generate
from syncd.mail.parse import parse

_NOW = datetime(2025, 6, 1, tzinfo=UTC)


def _ours(raw: bytes) -> object:
    return parse(raw, received_at=_NOW)


def _default(raw: bytes) -> object:
    return email.message_from_bytes(raw, policy=policy.default)


def _default_fields(raw: bytes) -> object:
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    body = msg.get_body(("plain", "html"))
    text = body.get_content() if body is not None else ""
    return (msg["subject"], msg["from"], msg["to"], msg["date"], msg["message-id"], text)


def _compat32(raw: bytes) -> object:
    return email.message_from_bytes(raw, policy=policy.compat32)


def _rate(fn: Callable[[bytes], object], msgs: list[bytes], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for raw in msgs:
            fn(raw)
        best = min(best, time.process_time() - start)
    return len(msgs) / best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=10_000)
    ap.add_argument("--attachments", type=float, default=0.0, help="attachment ratio")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args(argv)
    msgs = [raw for raw, _ in generate(args.n, 1, attachment_ratio=args.attachments, now=_NOW)]
    size = sum(map(len, msgs)) / len(msgs)
    print(f"{len(msgs)} messages, mean {size / 1024:.1f} KiB, attachments {args.attachments:.0%}")
    ours = _rate(_ours, msgs, args.repeat)
    rows = [
        ("syncd parse()", ours),
        ("email policy.default", _rate(_default, msgs, args.repeat)),
        ("email policy.default + fields", _rate(_default_fields, msgs, args.repeat)),
        ("email policy.compat32", _rate(_compat32, msgs, args.repeat)),
    ]
    for name, rate in rows:
        print(f"{name:32} {rate:8.0f} msg/s (per CPU-second)   syncd is x{ours / rate:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
