"""Benchmark of the BCC endpoint: durable 250s per second against a no-op ceiling.

``python -m bench.bcc [--messages 5000] [--size 10240] [--clients 1,16]`` sends
``--messages`` messages of about ``--size`` bytes over loopback with smtplib, from one
client and from 16 concurrent clients (threads, each with its own connection sending
many messages, reconnecting before the per-connection MAIL limit). Three endpoints:

- ``noop``: aiosmtpd with a handler that answers 250 at once (the protocol's ceiling);
- ``durable``: the real endpoint (sender check, SpoolWriter group commit, FULL sync);
- ``naive``: the real endpoint with one FULL commit per message (``spool_message``).

For each it prints messages/s and p50/p99 of the time from MAIL to the 250, then the
durable/noop ratio. The store lives in a temporary directory under ``--dir`` (default
/var/tmp: a real disk, where fsync costs what it costs in production).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import shutil
import smtplib
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from syncd.crm.team import Team
from syncd.sources.bcc import BccHandler
from syncd.sources.senders import SenderPolicy
from syncd.sources.smtpserver import ServerOptions, ThreadedEndpoint
from syncd.store import db
from syncd.store.spool import SpoolWriter, spool_message

LOG = "log@crm.example.com"
PER_CONNECTION = 900  # below the endpoint's MAIL call limit per connection


def make_messages(n: int, size: int) -> list[bytes]:
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"
    body = line * max(1, size // len(line))
    return [
        b"From: Ada <ada@example.com>\r\nTo: Client <client%d@customer.example>\r\n"
        b"Subject: Proposal %d\r\nMessage-ID: <bench-%d@example.com>\r\n"
        b"Date: Mon, 3 Nov 2025 10:00:00 +0000\r\n\r\n" % (i, i, i) + body
        for i in range(n)
    ]


def _client_run(
    port: int,
    messages: list[bytes],
    latencies: list[float],
    rcpt: str = LOG,
    login: tuple[str, str] | None = None,
) -> None:
    client = None
    for i, raw in enumerate(messages):
        if i % PER_CONNECTION == 0:
            if client is not None:
                client.quit()
            client = smtplib.SMTP("127.0.0.1", port, local_hostname="bench.test", timeout=60)
            client.ehlo()
            if login is not None:
                client.login(*login)
        assert client is not None
        started = time.perf_counter()
        client.mail("ada@example.com")
        client.rcpt(rcpt)
        code, text = client.data(raw)
        latencies.append(time.perf_counter() - started)
        if code != 250:
            raise RuntimeError(f"unexpected reply {code} {text!r}")
    if client is not None:
        client.quit()


def drive(
    port: int,
    messages: list[bytes],
    clients: int,
    *,
    rcpt: str = LOG,
    login: tuple[str, str] | None = None,
) -> dict[str, float]:
    """``messages`` sent by ``clients`` threads at once; rate and latency figures."""
    shares = [messages[i::clients] for i in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    threads = [
        threading.Thread(target=_client_run, args=(port, share, lat, rcpt, login))
        for share, lat in zip(shares, latencies, strict=True)
    ]
    cpu = time.process_time()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    used = time.process_time() - cpu
    every = sorted(x for lat in latencies for x in lat)
    return {
        "rate": len(every) / elapsed,
        "p50_ms": statistics.median(every) * 1000,
        "p99_ms": every[max(0, int(len(every) * 0.99) - 1)] * 1000,
        "client_ms": used * 1000 / len(every),  # the clients' own CPU per message
    }


def drive_apart(
    port: int,
    messages: list[bytes],
    clients: int,
    *,
    rcpt: str = LOG,
    login: tuple[str, str] | None = None,
) -> dict[str, float]:
    """``drive`` from a child process, as real mail clients are: the endpoint's process
    then spends its GIL on the endpoint alone."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        job = pool.submit(drive, port, messages, clients, rcpt=rcpt, login=login)
        return job.result()


class _Noop:
    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, lines: list[str]
    ) -> list[str]:
        # Offered as real smarthosts (Postfix, Gmail's relay) offer it; smtplib clients
        # never pipeline, so only the submission relay's client makes use of it.
        session.host_name = hostname
        return [lines[0], "250-PIPELINING", *lines[1:]]

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 OK"


@contextmanager
def noop_endpoint() -> Iterator[int]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    factory: Callable[[], SMTP] = lambda: SMTP(  # noqa: E731
        _Noop(), hostname="noop.test", enable_SMTPUTF8=True, loop=loop
    )
    server = asyncio.run_coroutine_threadsafe(
        loop.create_server(factory, "127.0.0.1", 0), loop
    ).result(10)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@contextmanager
def real_endpoint(directory: Path, naive: bool) -> Iterator[tuple[int, Any]]:
    path = directory / f"bench-{'naive' if naive else 'group'}-{time.monotonic_ns()}.sqlite3"
    writer = SpoolWriter(path)
    lock = threading.Lock()
    conn = db.connect(path)

    def one_by_one(raw: bytes, mail_from: str, peer: str, owner: str | None = None) -> None:
        with lock:
            spool_message(conn, raw, mail_from, peer, owner)

    policy = SenderPolicy("none", Team.build([("ada@example.com", [])]))
    handler = BccHandler(
        addresses=[LOG], policy=policy, spool=one_by_one if naive else writer
    )  # fmt: skip
    endpoint = ThreadedEndpoint(handler, ServerOptions(port=0, hostname="bench.test")).start()
    try:
        yield endpoint.port, writer
    finally:
        endpoint.stop()
        writer.close()
        count = conn.execute("SELECT count(*) FROM spool").fetchone()[0]
        conn.close()
        print(f"    ({count} messages in the spool)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--size", type=int, default=10 * 1024)
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    args = parser.parse_args(argv)
    messages = make_messages(args.messages, args.size)
    directory = Path(tempfile.mkdtemp(prefix="syncd-bench-bcc-", dir=args.dir))
    print(f"{len(messages)} messages of {len(messages[0])} bytes; store in {directory}")
    print(f"{'endpoint':<9} {'clients':>7} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    try:
        for clients in (int(c) for c in args.clients.split(",")):
            with noop_endpoint() as port:
                noop = drive(port, messages, clients)
            _row("noop", clients, noop)
            with real_endpoint(directory, naive=True) as (port, _writer):
                _row("naive", clients, drive(port, messages, clients))
            with real_endpoint(directory, naive=False) as (port, writer):
                durable = drive(port, messages, clients)
                commits = writer.commits
            _row("durable", clients, durable)
            print(
                f"    durable/noop = {durable['rate'] / noop['rate']:.2f}; "
                f"{len(messages) / max(commits, 1):.1f} messages per commit"
            )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _row(name: str, clients: int, figures: dict[str, float]) -> None:
    print(
        f"{name:<9} {clients:>7} {figures['rate']:>8.0f} "
        f"{figures['p50_ms']:>8.2f} {figures['p99_ms']:>8.2f}"
    )


if __name__ == "__main__":
    main()
