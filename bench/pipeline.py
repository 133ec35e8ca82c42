"""Pipeline throughput: N generated messages from memory into a fresh store, in batches.

Prints, from one run over the same messages: the bare parser in this process (the
ceiling of one core), the full pipeline (parse in worker processes, each batch handed
to them one batch ahead as the IMAP sync does, + rules + one writer committing each
batch), and the write side alone (messages parsed and their row values and raw copies
prepared beforehand, as the parser processes hand them over), each in msg/s, plus the
pipeline/parser ratio and the store's size. The store is a fresh SQLite file in a
temporary directory (or --dir), with the same PRAGMAs as the daemon's.

    python -m bench.pipeline [-n 20000] [--batch 1000] [--workers N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.corpus import generate
from syncd.crm.rules import InboxRule, RulesSettings
from syncd.mail.parse import parse
from syncd.mail.provenance import Provenance
from syncd.pipeline import Pipeline, _Parsed
from syncd.store import db
from syncd.store.prepared import prepare

TEAM = {"ada@example.com": (), "bob@example.com": ()}
MAX_ATTACHMENT = 50 * 1024 * 1024


def _settings() -> RulesSettings:
    return RulesSettings.build(
        team=TEAM,
        inboxes=(InboxRule("ada", "ada@example.com", "personal", "ada@example.com", True),),
    )


def _timed(label: str, n: int, work: Callable[[], object]) -> float:
    start, cpu = time.perf_counter(), time.process_time()
    work()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    rate = n / elapsed
    print(
        f"{label:<34} {rate:>7,.0f} msg/s  {elapsed:6.2f} s wall  {cpu * 1e6 / n:5.0f} µs CPU/msg"
    )
    return rate


def _ingest(
    directory: Path,
    items: list[tuple[bytes, Provenance]],
    batch: int,
    workers: int | None,
    parsed: list[object] | None = None,
) -> tuple[Counter[str], int]:
    shutil.rmtree(directory, ignore_errors=True)
    conn = db.connect(directory / "syncd.sqlite3")
    statuses: Counter[str] = Counter()
    pipeline = Pipeline(
        conn,
        _settings(),
        attachments_dir=directory / "attachments",
        max_attachment_bytes=MAX_ATTACHMENT,
        workers=workers,
    )
    if parsed is not None:
        feed = iter(parsed)
        # Write side alone: hand the pipeline messages parsed before the clock started.
        pipeline._parse = lambda chunk: iter([next(feed) for _ in chunk])  # type: ignore[method-assign]
    with pipeline:
        # As the IMAP sync does: the next batch is handed to the parsers (parse_ahead)
        # before the writer takes the current one.
        ahead = pipeline.parse_ahead(items[:batch])
        for start in range(0, len(items), batch):
            current, ahead = ahead, pipeline.parse_ahead(items[start + batch : start + 2 * batch])
            for outcome in pipeline.ingest_batch(current):
                statuses[outcome.status] += 1
    conn.close()
    size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    return statuses, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=None, help="parser processes (cores-1)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the stores")
    args = parser.parse_args(argv)

    corpus: list[tuple[bytes, datetime]] = list(generate(args.n, seed=1))
    items = [(raw, Provenance("imap", when, inbox="ada", folder="INBOX", uid=i + 1))
             for i, (raw, when) in enumerate(corpus)]  # fmt: skip
    total = sum(len(raw) for raw, _ in corpus)
    print(f"{args.n} messages, {total / 1e6:.1f} MB, {os.cpu_count()} cores, batch {args.batch}")

    parsed: list[object] = []

    def bare() -> None:
        parsed.extend(
            parse(r, received_at=w, max_attachment_bytes=MAX_ATTACHMENT) for r, w in corpus
        )

    parse_rate = _timed("parser alone (1 process)", args.n, bare)
    emails: list[Any] = parsed
    prepared: list[object] = [
        _Parsed(e, prepare(e, raw)) for (raw, _), e in zip(corpus, emails, strict=True)
    ]
    root = args.dir or Path(tempfile.mkdtemp(prefix="syncd-bench-"))
    try:
        results: dict[str, tuple[Counter[str], int]] = {}
        write_rate = _timed(
            "write side alone (pre-parsed)",
            args.n,
            lambda: results.setdefault("w", _ingest(root / "w", items, args.batch, 0, prepared)),
        )
        full_rate = _timed(
            "pipeline (parse pool + writer)",
            args.n,
            lambda: results.setdefault("p", _ingest(root / "p", items, args.batch, args.workers)),
        )
        statuses, size = results["p"]
        print(f"outcomes: {dict(statuses)}; store {size / 1e6:.1f} MB")
        print(f"pipeline / parser = {full_rate / parse_rate:.2f}; "
              f"pipeline / write side = {full_rate / write_rate:.2f}")  # fmt: skip
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
