"""Reading latency on a large store: ``timeline``, ``timeline --threads``, ``thread`` and
``email show``, p50 and p99, each beside a bare SQLite SELECT of the same rows.

The store is built through the real pipeline (parser processes, rules, the one writer,
batches of ``--batch``) from ``bench.corpus`` mail (reply threads, several charsets, 1%
with attachments; one mail in 20 also copies a key account, whose timeline is the
longest), generated and ingested a batch at a time, so memory stays flat. With
``--dir DIR`` the store is kept there and reused by the next run if it holds ``-n``
emails already.

Then, on a read-only connection as the CLI opens it:

- ``timeline``: ``queries.timeline`` of the contact with the most engagements (the
  worst timeline the store has), and of ``--sample`` contacts drawn at random;
- ``timeline --threads``: the same, folded (``threads.folded_timeline``);
- ``thread``: ``threads.thread`` of ``--sample`` random emails, and of the largest thread;
- ``email show``: ``mailview.email_view`` of ``--sample`` random emails.

Each line's ceiling is one SELECT returning the same rows with the same columns
(``fetchall``), no per-row reads; the ratio says how much the shaping costs. Then each
command once more through the real CLI in a process of its own (``--cli-rounds`` runs,
median), beside ``syncd --version``, which starts the same interpreter and imports the
same CLI but opens no store. ``EXPLAIN QUERY PLAN`` of the timeline and thread queries
is printed last, to show they use indexes.

    python -m bench.timeline [-n 100000] [--dir DIR] [--sample 300] [--cli-rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from bench.corpus import generate
from syncd.crm.rules import InboxRule, RulesSettings
from syncd.mail.provenance import Provenance
from syncd.pipeline import Pipeline
from syncd.store import db, items, mailview, queries, threads

TEAM = {"ada@example.com": (), "bob@example.com": ()}
MAX_ATTACHMENT = 50 * 1024 * 1024
# The corpus spreads mail over ~500 people; a CRM also has the key account on copy of
# one mail in 20 (5,000 of 100,000): the long timeline a user scrolls.
KEY_ACCOUNT = b"Cc: Kim Key <kim@key-account.example>\r\n"
KEY_ACCOUNT_EVERY = 20


def _settings() -> RulesSettings:
    return RulesSettings.build(
        team=TEAM,
        inboxes=(InboxRule("ada", "ada@example.com", "personal", "ada@example.com", True),),
    )


def _batches(n: int, size: int) -> Iterator[list[tuple[bytes, Provenance]]]:
    mail = generate(n, seed=1, attachment_ratio=0.01, max_bytes=300_000)
    uid = 0
    while chunk := list(islice(mail, size)):
        items = []
        for raw, when in chunk:
            uid += 1
            if uid % KEY_ACCOUNT_EVERY == 0:
                raw = KEY_ACCOUNT + raw
            items.append((raw, Provenance("imap", when, inbox="ada", folder="INBOX", uid=uid)))
        yield items


def build(directory: Path, n: int, batch: int) -> None:
    """A store of ``n`` generated emails through the real pipeline, batch by batch."""
    shutil.rmtree(directory, ignore_errors=True)
    conn = db.connect(directory / "syncd.sqlite3")
    started = time.perf_counter()
    pipeline = Pipeline(
        conn,
        _settings(),
        attachments_dir=directory / "attachments",
        max_attachment_bytes=MAX_ATTACHMENT,
    )
    with pipeline:
        batches = _batches(n, batch)
        ahead = pipeline.parse_ahead(next(batches, []))
        for following in batches:
            current, ahead = ahead, pipeline.parse_ahead(following)
            pipeline.ingest_batch(current)
        pipeline.ingest_batch(ahead)
    conn.close()
    elapsed = time.perf_counter() - started
    print(f"built {n:,} emails through the pipeline in {elapsed:.0f} s ({n / elapsed:,.0f} msg/s)")


def _emails(path: Path) -> int:
    try:
        conn = db.connect(path, readonly=True)
    except Exception:
        return 0
    try:
        return int(conn.execute("SELECT count(*) FROM emails").fetchone()[0])
    finally:
        conn.close()


def _timed(fn: Callable[[Any], object], args: list[Any], repeat: int = 1) -> list[float]:
    """Seconds per call of ``fn(arg)`` for each arg (``repeat`` passes over ``args``)."""
    out = []
    for _ in range(repeat):
        for arg in args:
            start = time.perf_counter()
            fn(arg)
            out.append(time.perf_counter() - start)
    return out


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _row(label: str, ours: list[float], ceiling: list[float], rows: str) -> None:
    ratio = statistics.median(ours) / max(statistics.median(ceiling), 1e-9)
    print(
        f"{label:<36} p50 {_p(ours, 0.5) * 1e3:8.2f} ms  p99 {_p(ours, 0.99) * 1e3:8.2f} ms"
        f"   bare SELECT p50 {_p(ceiling, 0.5) * 1e3:7.2f} ms  p99 {_p(ceiling, 0.99) * 1e3:7.2f}"
        f" ms  x{ratio:5.1f}  {rows}"
    )


# The ceilings: the rows each function returns, in one SELECT, nothing per row.
TIMELINE_ROWS = (
    items.ITEM_SQL + " WHERE g.id IN (SELECT engagement_id FROM engagement_contacts "
    "WHERE contact_id = (SELECT contact_id FROM contact_addresses WHERE address = ?)) "
    f"ORDER BY {queries.TIMELINE_ORDER}"
)
THREAD_ROWS = (
    items.ITEM_SQL + " WHERE e.thread_key = "
    "(SELECT thread_key FROM emails WHERE engagement_id = ?) ORDER BY g.occurred_at, g.id"
)
SHOW_ROWS = items.ENGAGEMENT_SQL + " WHERE g.id = ?"


def measure(path: Path, sample: int) -> dict[str, Any]:
    conn = db.connect(path, readonly=True)
    rng = random.Random(7)
    top = conn.execute(
        "SELECT a.address, c.engagement_count FROM contacts c JOIN contact_addresses a "
        "ON a.contact_id = c.id AND a.is_primary = 1 ORDER BY c.engagement_count DESC LIMIT 1"
    ).fetchone()
    addresses = [r[0] for r in conn.execute("SELECT address FROM contact_addresses")]
    some_contacts = rng.sample(addresses, min(sample, len(addresses)))
    ids = [r[0] for r in conn.execute("SELECT engagement_id FROM emails")]
    some_emails = rng.sample(ids, min(sample, len(ids)))
    biggest = conn.execute(
        "SELECT min(engagement_id), count(*) AS n FROM emails GROUP BY thread_key "
        "ORDER BY n DESC LIMIT 1"
    ).fetchone()
    sizes = [len(queries.timeline(conn, a) or []) for a in some_contacts]
    threads_sizes = [len(threads.thread_of(conn, i)) for i in some_emails]
    print(
        f"store: {len(ids):,} emails, {len(addresses):,} contacts; busiest contact "
        f"{top[1]:,} engagements; sampled contacts {statistics.median(sizes):.0f} (median); "
        f"threads of sampled emails {statistics.median(threads_sizes):.0f} (median), "
        f"largest {biggest[1]}"
    )

    def bare(sql: str) -> Callable[[Any], object]:
        return lambda arg: conn.execute(sql, (arg,)).fetchall()

    rounds = max(20, sample // 10)
    _row(
        "timeline, busiest contact",
        _timed(lambda a: queries.timeline(conn, a), [top[0]], rounds),
        _timed(bare(TIMELINE_ROWS), [top[0]], rounds),
        f"{top[1]:,} items",
    )
    _row(
        "timeline, random contacts",
        _timed(lambda a: queries.timeline(conn, a), some_contacts),
        _timed(bare(TIMELINE_ROWS), some_contacts),
        f"{statistics.median(sizes):.0f} items (median)",
    )
    _row(
        "timeline --threads, busiest contact",
        _timed(lambda a: threads.folded_timeline(conn, a), [top[0]], rounds),
        _timed(bare(TIMELINE_ROWS), [top[0]], rounds),
        f"{len(threads.folded_timeline(conn, top[0]) or []):,} threads",
    )
    _row(
        "thread, random emails",
        _timed(lambda i: threads.thread(conn, i), some_emails),
        _timed(bare(THREAD_ROWS), some_emails),
        f"{statistics.median(threads_sizes):.0f} emails (median)",
    )
    _row(
        "thread, largest",
        _timed(lambda i: threads.thread(conn, i), [biggest[0]], rounds),
        _timed(bare(THREAD_ROWS), [biggest[0]], rounds),
        f"{biggest[1]} emails",
    )
    _row(
        "email show, random emails",
        _timed(lambda i: mailview.email_view(conn, i), some_emails),
        _timed(bare(SHOW_ROWS), some_emails),
        "1 email",
    )
    plans = {
        "timeline": conn.execute(f"EXPLAIN QUERY PLAN {TIMELINE_ROWS}", (top[0],)).fetchall(),
        "thread": conn.execute(f"EXPLAIN QUERY PLAN {THREAD_ROWS}", (biggest[0],)).fetchall(),
    }
    conn.close()
    return {"top": top[0], "email": some_emails[0], "thread": biggest[0], "plans": plans}


def cli(path: Path, targets: dict[str, Any], rounds: int) -> None:
    """Each command through the real CLI, a process per run; ``--version`` as the floor."""
    config = path.parent / "bench-syncd.yaml"
    config.write_text(
        json.dumps(
            {
                "store": {"path": str(path), "attachments_dir": str(path.parent / "attachments")},
                "team": [{"name": "Ada", "email": "ada@example.com"}],
            }
        )
    )
    base = [sys.executable, "-m", "syncd", "--config", str(config)]
    commands = [
        ("syncd --version (no store)", ["--version"]),
        ("syncd timeline --json (busiest)", ["timeline", targets["top"], "--json"]),
        ("syncd timeline --threads --json", ["timeline", targets["top"], "--threads", "--json"]),
        ("syncd thread --json (largest)", ["thread", str(targets["thread"]), "--json"]),
        ("syncd email show --json", ["email", "show", str(targets["email"]), "--json"]),
        ("syncd email show --raw", ["email", "show", str(targets["email"]), "--raw"]),
    ]
    for label, args in commands:
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            done = subprocess.run([*base, *args], stdout=subprocess.DEVNULL, check=False)
            times.append(time.perf_counter() - start)
            if done.returncode:
                raise SystemExit(f"{label}: exit {done.returncode}")
        print(f"{label:<36} median {statistics.median(times) * 1e3:7.0f} ms  ({rounds} runs)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--dir", type=Path, default=None, help="keep (and reuse) the store here")
    parser.add_argument("--sample", type=int, default=300, help="random contacts and emails")
    parser.add_argument("--cli-rounds", type=int, default=5)
    args = parser.parse_args(argv)
    root = args.dir or Path(tempfile.mkdtemp(prefix="syncd-bench-timeline-"))
    path = root / "syncd.sqlite3"
    print(f"{os.cpu_count()} cores, store {path}")
    try:
        if _emails(path) < args.n:
            build(root, args.n, args.batch)
        else:
            db.connect(path).close()  # migrated to this version's schema, if older
            print(f"reusing the store ({_emails(path):,} emails)")
        targets = measure(path, args.sample)
        cli(path, targets, args.cli_rounds)
        for name, plan in targets["plans"].items():
            print(f"plan of the {name} query: " + "; ".join(row[3] for row in plan))
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
