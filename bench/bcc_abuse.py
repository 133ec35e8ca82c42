"""The BCC endpoint under abuse: memory under concurrent big messages, AUTH guessing.

``python -m bench.bcc_abuse memory [--clients 16] [--mb 49]`` starts the real endpoint
in a child process (store under ``--dir``, default /var/tmp) and sends ``--clients``
messages of ``--mb`` MiB at once over loopback, half declaring ``SIZE=`` and half not;
a sender answered 4xx (or cut) tries again a second later. It prints the child's peak
RSS (VmHWM), how many tries were put off and the time until all were stored, with the
default budget and, as the peer in the same run, with the budget out of the way.

``python -m bench.bcc_abuse auth [--seconds 10] [--clients 32]`` starts the endpoint
with ``verify_sender: auth`` and has ``--clients`` threads guess passwords from
127.0.0.1 for ``--seconds``, a new connection for every three guesses. It prints how
many guesses were checked (answered 535) and how many were turned away (454), with the
default throttle and with the throttle out of the way.
"""

from __future__ import annotations

import argparse
import base64
import os
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

LOG = "log@crm.example.com"
ROOT = Path(__file__).resolve().parents[1]

SERVER = """
import sys, threading
from pathlib import Path
from syncd.sources.bcc import BccHandler, Limits, PasswordFiles
from syncd.sources.smtpserver import ServerOptions, ThreadedEndpoint
from syncd.crm.team import Team
from syncd.sources.senders import SenderPolicy
from syncd.store.spool import SpoolWriter
store, mode, unlimited = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
directory = Team.build([("ada@example.com", [])])
writer = SpoolWriter(store)
big = 1 << 40
if mode == "auth":
    secret = Path(store).with_suffix(".smtp")
    secret.write_text("correct horse battery staple\\n")
    off = Limits(auth_free_failures=big, auth_ip_lock_after=big, auth_account_lock_after=big)
    limits = off if unlimited else Limits()
    handler = BccHandler(
        addresses=["log@crm.example.com"], policy=SenderPolicy("auth", directory), spool=writer,
        credentials=PasswordFiles({"ada@example.com": secret}, directory), limits=limits,
    )
else:
    limits = Limits(data_budget=big) if unlimited else Limits()
    handler = BccHandler(
        addresses=["log@crm.example.com"], policy=SenderPolicy("none", directory),
        spool=writer, limits=limits,
    )
endpoint = ThreadedEndpoint(handler, ServerOptions(port=0, hostname="mx.test")).start()
print(endpoint.port, flush=True)
threading.Event().wait()
"""


def start_server(directory: Path, mode: str, unlimited: bool) -> tuple[subprocess.Popen, int]:
    store = tempfile.mktemp(suffix=".sqlite3", dir=directory)
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, store, mode, "1" if unlimited else "0"],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None
    return process, int(process.stdout.readline())


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def big_message(mb: int) -> bytes:
    line = b"x" * 998 + b"\r\n"
    head = b"From: Ada <ada@example.com>\r\nSubject: big\r\n\r\n"
    return head + line * (mb * 1024 * 1024 // len(line))


def deliver(port: int, raw: bytes, declare: bool, put_off: list[int]) -> None:
    while True:
        try:
            with smtplib.SMTP("127.0.0.1", port, local_hostname="c.test", timeout=300) as client:
                if declare:
                    client.sendmail("ada@example.com", [LOG], raw)
                    return
                client.ehlo()
                client.mail("ada@example.com")
                client.rcpt(LOG)
                code, _ = client.data(raw)
                if code == 250:
                    return
        except (OSError, smtplib.SMTPException):
            pass
        put_off.append(1)
        time.sleep(1.0)


def memory_run(directory: Path, clients: int, mb: int, unlimited: bool) -> None:
    process, port = start_server(directory, "memory", unlimited)
    try:
        raw = big_message(mb)
        put_off: list[int] = []
        threads = [
            threading.Thread(target=deliver, args=(port, raw, i % 2 == 0, put_off))
            for i in range(clients)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        label = "budget out of the way" if unlimited else "default budget (256 MiB)"
        print(
            f"{label:>26}: {clients} x {mb} MiB stored in {elapsed:.1f} s, "
            f"{len(put_off)} tries put off, server peak RSS {peak_rss_mb(process.pid):,.0f} MiB"
        )
    finally:
        process.kill()
        process.wait()


def guess(port: int, stop: float, replies: dict[int, int], lock: threading.Lock) -> None:
    n = 0
    while time.monotonic() < stop:
        try:
            with smtplib.SMTP("127.0.0.1", port, local_hostname="c.test", timeout=30) as client:
                client.ehlo()
                for _ in range(3):
                    n += 1
                    token = base64.b64encode(b"\0ada@example.com\0guess%d" % n).decode()
                    code, _ = client.docmd("AUTH", "PLAIN " + token)
                    with lock:
                        replies[code] = replies.get(code, 0) + 1
                    if code != 535 or time.monotonic() >= stop:
                        break
        except (OSError, smtplib.SMTPException):
            with lock:
                replies[0] = replies.get(0, 0) + 1


def auth_run(directory: Path, clients: int, seconds: float, unlimited: bool) -> None:
    process, port = start_server(directory, "auth", unlimited)
    try:
        replies: dict[int, int] = {}
        lock = threading.Lock()
        stop = time.monotonic() + seconds
        threads = [
            threading.Thread(target=guess, args=(port, stop, replies, lock)) for _ in range(clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        label = "throttle out of the way" if unlimited else "default throttle"
        print(
            f"{label:>24}: {replies.get(535, 0):,} guesses checked (535), "
            f"{replies.get(454, 0):,} turned away (454) in {seconds:.0f} s from one IP; "
            f"other replies {dict((k, v) for k, v in replies.items() if k not in (535, 454))}"
        )
    finally:
        process.kill()
        process.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["memory", "auth"])
    parser.add_argument("--clients", type=int, default=0)
    parser.add_argument("--mb", type=int, default=49)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="syncd-abuse-") as tmp:
        for unlimited in (False, True):
            if args.what == "memory":
                memory_run(Path(tmp), args.clients or 16, args.mb, unlimited)
            else:
                auth_run(Path(tmp), args.clients or 32, args.seconds, unlimited)


if __name__ == "__main__":
    main()
