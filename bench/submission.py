"""Benchmark of the submission relay against the BCC endpoint's durable path, same run.

``python -m bench.submission [--messages 2000] [--size 10240] [--clients 1,16]`` sends
``--messages`` HTML messages of about ``--size`` bytes over loopback with smtplib, each
client on its own connection (AUTH PLAIN once per connection on the relay):

- ``bcc``: the real BCC endpoint (SpoolWriter group commit, FULL sync), as bench.bcc;
- ``submit``: the real submission relay: AUTH and From checks in the listener, then in
  its relay worker process (``services.relayworker``) the who-is-tracked lookup on a
  read-only connection, rewriting with signed tokens, relaying to a no-op smarthost on
  loopback (another process; ``serve_sink``), and the original and its tracked message
  spooled in one FULL commit (group commit) before the 250.

A last row times the relay's SMTP client alone (``Submitter``, one thread, PIPELINING
offered) against smtplib's ``sendmail`` on one kept connection to the same sink.

The clients run in a child process, as real mail clients are elsewhere, so the
endpoint's process spends its GIL on the endpoint alone. Prints messages/s, p50/p99
(MAIL to 250), the endpoint process's CPU time per message, and submit/bcc; under each
row the CPU the relay worker, the clients and the sink spent per message, the rest of
what the shared cores carried. Goal: >= 0.7.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bcc import drive_apart, real_endpoint
from syncd.config.model import Config
from syncd.crm.team import Team
from syncd.outbound.relay import Relay, RelaySettings, Submitter
from syncd.outbound.tokens import load_keys, new_key_line
from syncd.services.relayer import TrackingSetup
from syncd.services.relayworker import RelayWorker, Setup
from syncd.sources.bcc import PasswordFiles
from syncd.sources.smtpserver import ServerOptions
from syncd.sources.submission import SubmissionHandler, threaded
from syncd.store import db
from syncd.store.spool import SpoolWriter

PASSWORD = "bench-password"
PER_CONNECTION = 900
# The smarthost: in production another machine, here a process sharing this machine's
# cores with the endpoint and the clients. It reads DATA in one call (aiosmtpd reads it
# line by line, about 1.5 ms of CPU a message here, which the endpoint would lose).
SINK = "from bench.submission import serve_sink; serve_sink()"
SINK_EHLO = b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"


async def _sink_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 sink.test ESMTP\r\n")
    try:
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                writer.write(SINK_EHLO)
            elif verb == b"DATA":
                writer.write(b"354 go on\r\n")
                await reader.readuntil(b"\r\n.\r\n")
                writer.write(b"250 2.0.0 kept\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 bye\r\n")
                break
            else:  # MAIL, RCPT, RSET, NOOP
                writer.write(b"250 2.0.0 OK\r\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    writer.close()


def serve_sink() -> None:
    """A smarthost that keeps nothing and costs as little CPU as it can; prints its port."""

    async def serve() -> None:
        server = await asyncio.start_server(_sink_session, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(serve())


def make_messages(n: int, size: int) -> list[bytes]:
    para = b"<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do.</p>\r\n"
    body = para * max(1, size // len(para))
    return [
        b"From: Ada <ada@example.com>\r\nTo: Client <client%d@customer.example>\r\n"
        b"Subject: Proposal %d\r\nMessage-ID: <bench-%d@example.com>\r\n"
        b"Date: Mon, 3 Nov 2025 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n<html><body>"
        b'<a href="https://shop.example/p?i=%d">offer</a>\r\n'
        % (i, i, i, i)
        + body
        + b"</body></html>\r\n"
        for i in range(n)
    ]


def run_submission(directory: Path, messages: list[bytes], clients: int) -> dict[str, float]:
    path = directory / f"bench-submit-{time.monotonic_ns()}.sqlite3"
    db.connect(path).close()
    (directory / "ada.pw").write_text(PASSWORD)
    team = Team.build([("ada@example.com", [])])
    writer = SpoolWriter(path)  # the listener's counters, as in the daemon
    # The smarthost is another process, as in production: in this one it would share
    # the GIL with the relay it measures.
    sink = subprocess.Popen(
        [sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True
    )  # fmt: skip
    assert sink.stdout is not None
    sink_port = int(sink.stdout.readline())
    config = Config.from_mapping(
        {
            "store": {"path": str(path)},
            "team": [{"name": "Ada", "email": "ada@example.com"}],
            "relay": {"host": "127.0.0.1", "port": sink_port, "security": "none"},
        }
    )
    tracking = TrackingSetup(load_keys(new_key_line("k1")), "https://t.example", "bottom")
    worker = RelayWorker(Setup(config, tracking))
    try:
        handler = SubmissionHandler(
            team=team,
            forward=worker.forward,
            credentials=PasswordFiles({"ada@example.com": directory / "ada.pw"}, team),
            on_event=writer.count,
        )
        endpoint = threaded(handler, ServerOptions(port=0, hostname="bench.test")).start()
        try:
            assert endpoint.call(worker.start()) and worker.pid is not None
            outside = {"sink": sink.pid, "worker": worker.pid}
            before = {name: _process_cpu(pid) for name, pid in outside.items()}
            figures = _with_cpu(
                drive_apart,
                endpoint.port,
                messages,
                clients,
                rcpt="client@customer.example",
                login=("ada@example.com", PASSWORD),
            )
            for name, pid in outside.items():
                used = _process_cpu(pid) - before[name]
                figures[f"{name}_ms"] = used * 1000 / len(messages)
        finally:
            endpoint.call(worker.stop(time.monotonic() + 10))
            endpoint.stop()
            writer.close()
    finally:
        sink.kill()
        sink.wait()
    conn = db.connect(path)
    spooled = conn.execute("SELECT count(*) FROM spool").fetchone()[0]
    tracked = conn.execute("SELECT count(*) FROM tracked_messages").fetchone()[0]
    conn.close()
    print(f"    ({spooled} spooled, {tracked} tracked)")
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=10 * 1024)
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    args = parser.parse_args(argv)
    messages = make_messages(args.messages, args.size)
    directory = Path(tempfile.mkdtemp(prefix="syncd-bench-submit-", dir=args.dir))
    print(f"{len(messages)} messages of {len(messages[0])} bytes; store in {directory}")
    print(f"{'path':<9} {'clients':>7} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms':>7}")
    try:
        for clients in (int(c) for c in args.clients.split(",")):
            with real_endpoint(directory, naive=False) as (port, _writer):
                bcc = _with_cpu(drive_apart, port, messages, clients)
            _row("bcc", clients, bcc)
            print(f"    the clients used {bcc['client_ms']:.2f} CPU ms a message")
            submit = run_submission(directory, messages, clients)
            _row("submit", clients, submit)
            print(
                f"    the relay worker process used {submit['worker_ms']:.2f} CPU ms a "
                f"message (listener and worker: {submit['cpu_ms'] + submit['worker_ms']:.2f})"
                f"; the clients {submit['client_ms']:.2f}, the smarthost sink "
                f"{submit['sink_ms']:.2f}"
            )
            print(f"    submit/bcc = {submit['rate'] / bcc['rate']:.2f}")
        relay_only(messages)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def relay_only(messages: list[bytes]) -> None:
    """The relay's client against smtplib's sendmail, one thread, the same sink process."""
    sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    assert sink.stdout is not None
    port = int(sink.stdout.readline())
    submitter = Submitter(Relay(RelaySettings("127.0.0.1", port, "none")))
    plain = smtplib.SMTP("127.0.0.1", port)
    to = ["client@customer.example"]
    try:
        for name, send in (
            ("smtplib", lambda raw: plain.sendmail("ada@example.com", to, raw)),
            ("relay", lambda raw: submitter.submit(raw, "ada@example.com", to)),
        ):
            before = time.process_time()
            started = time.perf_counter()
            for raw in messages:
                send(raw)
            elapsed = time.perf_counter() - started
            used = time.process_time() - before
            print(
                f"{name:<9} {1:>7} {len(messages) / elapsed:>8.0f} {'':>8} {'':>8} "
                f"{used * 1000 / len(messages):>7.2f}"
            )
    finally:
        plain.quit()
        submitter.close()
        sink.kill()
        sink.wait()


def _with_cpu(
    drive: Any, port: int, messages: list[bytes], *args: Any, **kw: Any
) -> dict[str, float]:
    """``drive``'s figures plus this process's CPU milliseconds per message."""
    before = time.process_time()
    figures = drive(port, messages, *args, **kw)
    used = time.process_time() - before
    return figures | {"cpu_ms": used * 1000 / len(messages)}


def _process_cpu(pid: int) -> float:
    """Seconds of CPU another process has used (user + system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _row(name: str, clients: int, figures: dict[str, float]) -> None:
    print(
        f"{name:<9} {clients:>7} {figures['rate']:>8.0f} "
        f"{figures['p50_ms']:>8.2f} {figures['p99_ms']:>8.2f} {figures['cpu_ms']:>7.2f}"
    )


if __name__ == "__main__":
    main()
