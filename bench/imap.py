"""Benchmark of the IMAP initial sync against a throwaway Dovecot, with its ceiling.

Generates a mailbox with ``bench.corpus`` (10,000 messages; ``--n 50000`` for more),
writes it straight into the Maildir of a fresh Dovecot user (mtime = INTERNALDATE) and lets
Dovecot index it, then times, each in its own process so peak RSS is per phase:

- ``imaplib``: a bare imaplib loop, UID FETCH BODY.PEEK[] in batches of 200 (the ceiling);
- ``sync``: ``sync_inbox`` with a deliver callable that only counts;
- ``pipeline``: ``sync_inbox`` into a real ``Pipeline`` on a fresh SQLite store (end to end).

Prints messages/s, MB/s, the ratio to the ceiling and peak RSS. Run as root (the Dovecot
fixture of tests/integration runs the server):  python -m bench.imap [--n 50000]
"""

from __future__ import annotations

import argparse
import imaplib
import multiprocessing
import os
import pwd
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.corpus import generate
from tests.integration.conftest import Dovecot, ImapUser, dovecot_missing

FROM = "2000-01-01"


def fill_maildir(user: ImapUser, n: int) -> int:
    """Write n corpus messages into the user's INBOX; returns total bytes."""
    nobody = pwd.getpwnam("nobody")
    home = user.maildir.parent
    cur = user.maildir / "cur"
    for sub in ("cur", "new", "tmp"):
        (user.maildir / sub).mkdir(parents=True, exist_ok=True)
    total = 0
    for i, (raw, when) in enumerate(generate(n, seed=1)):
        raw = raw.replace(b"\r\n", b"\n")  # Maildir files use bare LF
        stamp = int(when.timestamp())
        path = cur / f"{stamp}.M{i}P1.bench,S={len(raw)}:2,"
        path.write_bytes(raw)
        os.utime(path, (stamp, stamp))
        total += len(raw)
    for root, dirs, files in os.walk(home):
        for name in [root, *(os.path.join(root, x) for x in dirs + files)]:
            os.chown(name, nobody.pw_uid, nobody.pw_gid)
    user.server.doveadm("index", "-u", user.name, "INBOX")
    return total


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def phase_imaplib(port: int, username: str, password: str) -> dict[str, Any]:
    started = time.perf_counter()
    conn = imaplib.IMAP4("127.0.0.1", port)
    conn.login(username, password)
    conn.select("INBOX", readonly=True)
    _, data = conn.uid("SEARCH", "ALL")
    uids = data[0].split()
    count = size = 0
    for i in range(0, len(uids), 200):
        _, resp = conn.uid("FETCH", b",".join(uids[i : i + 200]).decode(), "(BODY.PEEK[])")
        for part in resp:
            if isinstance(part, tuple):
                count += 1
                size += len(part[1])
    conn.logout()
    return {"messages": count, "bytes": size, "seconds": time.perf_counter() - started}


def _inbox(port: int, username: str, password: str, create_contacts: bool = False) -> Any:
    from syncd.config.model import Inbox

    return Inbox.model_validate(
        {
            "name": "bench", "kind": "personal", "owner": "ada@example.com",
            "imap": {"host": "127.0.0.1", "port": port, "security": "none",
                     "username": username, "password": password},
            "sync": {"from": FROM, "folders": ["INBOX"], "create_contacts": create_contacts},
        }
    )  # fmt: skip


def phase_sync(port: int, username: str, password: str) -> dict[str, Any]:
    from syncd.sources.imap.inbox import sync_inbox

    totals = {"messages": 0, "bytes": 0}

    def deliver(items: list, checkpoint: Any) -> list[str]:
        totals["messages"] += len(items)
        totals["bytes"] += sum(len(raw) for raw, _ in items)
        return ["logged"] * len(items)

    started = time.perf_counter()
    result = sync_inbox(
        _inbox(port, username, password),
        deliver=deliver,
        checkpoint_of=lambda inbox, folder: None,
        known_contacts=set,
        today=datetime.now(UTC),
    )
    assert result.state == "ok", result.error
    return {**totals, "seconds": time.perf_counter() - started}


def phase_pipeline(port: int, username: str, password: str, store_dir: str) -> dict[str, Any]:
    from syncd.config.model import Config
    from syncd.pipeline import Pipeline
    from syncd.services import imap as imap_service
    from syncd.sources.imap.inbox import sync_inbox
    from syncd.store import contacts, db

    inbox = _inbox(port, username, password, create_contacts=True)
    config = Config.from_mapping(
        {
            "store": {"path": f"{store_dir}/crm.sqlite3", "attachments_dir": f"{store_dir}/att"},
            "team": [{"name": "Ada", "email": "ada@example.com"},
                     {"name": "Bob", "email": "bob@example.com"}],
            "inboxes": [inbox.model_dump(by_alias=True, exclude_none=True)
                        | {"imap": inbox.imap.model_dump(exclude_none=True)
                           | {"password": password}}],
        }
    )  # fmt: skip
    conn = db.connect(config.store.path)
    totals = {"messages": 0, "bytes": 0}
    parsers: dict[int, float] = {}
    with Pipeline.from_config(config, conn) as pipeline:

        def deliver(items: list, checkpoint: Any) -> list[Any]:
            totals["messages"] += len(items)
            totals["bytes"] += sum(len(raw) for raw, _ in items)
            outcomes = pipeline.ingest_batch(
                items, on_commit=lambda c: imap_service.save_checkpoint(c, checkpoint)
            )
            if pipeline._pool is not None:  # noted while the parser processes still run
                parsers.update((p, _cpu_of(p)) for p in pipeline._pool._processes)
            return outcomes

        started = time.perf_counter()
        result = sync_inbox(
            config.inboxes[0],
            deliver=deliver,
            checkpoint_of=lambda i, f: imap_service.load_checkpoint(conn, i, f),
            known_contacts=lambda: contacts.contact_emails(pipeline.session.conn),
            today=datetime.now(UTC),
            parse_ahead=pipeline.parse_ahead,
        )
        seconds = time.perf_counter() - started
    assert result.state == "ok", result.error
    return {
        **totals,
        "seconds": seconds,
        "outcomes": result.folders[0].as_json(),
        "cpu_parsers": sum(parsers.values()),
    }


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _child(target: Any, args: tuple[Any, ...], out: Any) -> None:
    figures = target(*args)
    figures["peak_rss_mb"] = _peak_rss_mb()
    own = resource.getrusage(resource.RUSAGE_SELF)
    figures["cpu_self"] = own.ru_utime + own.ru_stime
    # The pipeline's parser processes have memory of their own: report the largest.
    figures["child_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    out.put(figures)


def _machine_cpu() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine so far, every core, from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    not_ours = ticks[3] + ticks[4] + ticks[7]  # idle, iowait, steal (the hypervisor's)
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - not_ours) / tick, sum(ticks) / tick


def run_phase(target: Any, *args: Any) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    busy, total = _machine_cpu()
    proc = ctx.Process(target=_child, args=(target, args, out))
    proc.start()
    figures = out.get()
    proc.join()
    busy_after, total_after = _machine_cpu()
    figures["cpu_machine"] = busy_after - busy
    figures["machine_busy"] = (busy_after - busy) / max(total_after - total, 1e-9)
    return figures


def report(name: str, figures: dict[str, Any], ceiling: dict[str, Any] | None) -> None:
    rate = figures["messages"] / figures["seconds"]
    mbps = figures["bytes"] / figures["seconds"] / 1e6
    line = (
        f"{name:9s} {figures['messages']:7d} msgs {figures['seconds']:7.2f} s "
        f"{rate:8.0f} msg/s {mbps:7.1f} MB/s  peak RSS {figures['peak_rss_mb']:6.0f} MB"
    )
    if figures.get("child_rss_mb"):
        line += f" (+ parser process {figures['child_rss_mb']:.0f} MB)"
    # CPU per message: this process (all its threads, start-up included), then its
    # parser processes.
    per = 1e6 / max(figures["messages"], 1)
    line += f"  CPU {figures['cpu_self'] * per:.0f} µs/msg"
    if figures.get("cpu_parsers"):
        line += f" + parsers {figures['cpu_parsers'] * per:.0f}"
    if ceiling:
        line += f"  {rate / (ceiling['messages'] / ceiling['seconds']):.2f}x of imaplib"
    print(line, flush=True)
    if figures.get("cpu_parsers"):
        # Everything the machine spent, Dovecot and the kernel included (and anything else
        # running: keep the machine quiet): how fast this much CPU per message could go
        # with every core busy, whatever the pipeline's shape.
        ours = (figures["cpu_self"] + figures["cpu_parsers"]) * per
        every = max(figures["cpu_machine"] * per, ours)
        cores = os.cpu_count() or 1
        print(
            f"{'':9s} machine {figures['machine_busy']:.0%} busy; all CPU per message "
            f"{every:.0f} µs (Dovecot, kernel, the rest {every - ours:.0f}): {cores} cores "
            f"allow at most {cores * 1e6 / every:.0f} msg/s",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--no-pipeline", action="store_true", help="skip the end-to-end phase")
    args = parser.parse_args(argv)
    reason = dovecot_missing()
    if reason:
        print(f"bench.imap: {reason}", file=sys.stderr)
        return 69
    root = Path(tempfile.mkdtemp(prefix="syncd-bench-"))
    os.chmod(root, 0o755)
    server = Dovecot(root)
    try:
        server.start()
        user = server.add_user()
        started = time.perf_counter()
        size = fill_maildir(user, args.n)
        print(
            f"mailbox: {args.n} messages, {size / 1e6:.0f} MB, "
            f"written and indexed in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        creds = (server.port, user.name, user.password)
        ceiling = run_phase(phase_imaplib, *creds)
        report("imaplib", ceiling, None)
        report("sync", run_phase(phase_sync, *creds), ceiling)
        if not args.no_pipeline:
            store_dir = tempfile.mkdtemp(prefix="syncd-bench-store-")
            try:
                figures = run_phase(phase_pipeline, *creds, store_dir)
                report("pipeline", figures, ceiling)
                print(f"pipeline outcomes: {figures['outcomes']}", flush=True)
            finally:
                shutil.rmtree(store_dir, ignore_errors=True)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
