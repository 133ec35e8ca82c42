"""A scripted IMAP server on loopback for the hostile-server tests.

It speaks just enough IMAP for one sync pass of one folder (greeting, CAPABILITY, LOGIN,
LIST, EXAMINE/SELECT, UID SEARCH, UID FETCH, NOOP, LOGOUT) over a real socket, and then
misbehaves the way a test asks: garbage in its LOGIN answer, an EXAMINE or a body FETCH
answered one byte at a time, a literal announced far larger than anything it sends. Dovecot
(``conftest.py``) is the server for normal behaviour; this one only exists to be wrong, or
to be Gmail where Dovecot cannot: with ``gmail_threads`` it offers X-GM-EXT-1 and answers
X-GM-THRID, which no Dovecot has.
"""

from __future__ import annotations

import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

# What the server does with a body FETCH of one UID, given the connection's number
# (1 for the first) and the honest response; returns nothing, writes to the socket.
BodyScript = Callable[["Connection", int, int, bytes], None]


def message(n: int, lines: int = 0) -> bytes:
    """A message from a client to Ada, with ``lines`` more lines of body."""
    return (
        f"From: Carol <carol@client.example>\r\nTo: ada@example.com\r\nSubject: hello {n}\r\n"
        f"Message-ID: <hostile{n}@client.example>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
        f"\r\nbody {n}\r\n" + "more text for the body\r\n" * lines
    ).encode()


@dataclass
class FakeImap:
    """The server and what the test scripted. ``logins`` counts LOGIN commands seen."""

    messages: dict[int, bytes] = field(default_factory=lambda: {n: message(n) for n in (1, 2, 3)})
    login_garbage: bytes = b""  # lines sent before the tagged OK to LOGIN
    body: BodyScript | None = None  # None: every body is sent honestly
    slow_examine: bool = False  # the answer to EXAMINE a byte every 50 ms
    # UID -> Gmail thread id: the server then says X-GM-EXT-1 and answers X-GM-THRID
    gmail_threads: dict[int, int] | None = None
    logins: int = 0
    connections: int = 0
    port: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> FakeImap:
        fake = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                with fake._lock:
                    fake.connections += 1
                    number = fake.connections
                Connection(fake, self.request, self.rfile, number).serve()

        self._lock = threading.Lock()
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()


INTERNALDATE = (datetime.now(UTC) - timedelta(days=1)).strftime("%d-%b-%Y %H:%M:%S +0000")
_COMMAND = re.compile(rb"(?P<tag>\S+) (?P<cmd>UID \S+|\S+) ?(?P<args>.*)", re.IGNORECASE)


class Connection:
    """One client connection: reads commands, answers them in order."""

    def __init__(self, fake: FakeImap, sock: socket.socket, rfile: object, number: int) -> None:
        self.fake, self.sock, self.rfile, self.number = fake, sock, rfile, number

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def trickle(self, data: bytes, every: float) -> None:
        """``data`` one byte at a time, ``every`` seconds apart, until the client hangs up."""
        for i in range(len(data)):
            if self.fake.stopping.wait(every):
                return
            try:
                self.sock.sendall(data[i : i + 1])
            except OSError:
                return

    def serve(self) -> None:
        self.send(b"* OK [CAPABILITY IMAP4rev1] fake ready\r\n")
        while not self.fake.stopping.is_set():
            line = self.rfile.readline()  # type: ignore[attr-defined]
            if not line:
                return
            match = _COMMAND.match(line.rstrip(b"\r\n"))
            if match is None:
                self.send(b"* BAD what\r\n")
                continue
            tag, cmd, args = match["tag"], match["cmd"].upper(), match["args"]
            try:
                if not self.answer(tag, cmd, args):
                    return
            except OSError:
                return

    def answer(self, tag: bytes, cmd: bytes, args: bytes) -> bool:
        msgs = self.fake.messages
        if cmd == b"CAPABILITY":
            gmail = b" X-GM-EXT-1" if self.fake.gmail_threads is not None else b""
            self.send(b"* CAPABILITY IMAP4rev1" + gmail + b"\r\n" + tag + b" OK done\r\n")
        elif cmd == b"LOGIN":
            self.fake.logins += 1
            self.send(self.fake.login_garbage + tag + b" OK logged in\r\n")
        elif cmd == b"LIST":
            self.send(b'* LIST (\\HasNoChildren) "/" INBOX\r\n' + tag + b" OK done\r\n")
        elif cmd in (b"EXAMINE", b"SELECT"):
            top = max(msgs, default=0)
            said = (
                f"* {len(msgs)} EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT {top + 1}] ok"
                f"\r\n{tag.decode()} OK [READ-ONLY] done\r\n".encode()
            )
            if self.fake.slow_examine:
                self.trickle(said, 0.05)
            else:
                self.send(said)
        elif cmd == b"UID SEARCH":
            found = " ".join(str(uid) for uid in sorted(msgs) if uid in _uids(args))
            self.send(f"* SEARCH {found}\r\n".encode() + tag + b" OK done\r\n")
        elif cmd == b"UID FETCH":
            uid_set, _, items = args.partition(b" ")
            for uid in sorted(msgs):
                if uid in _uids(uid_set):
                    self.fetch(uid, items)
            self.send(tag + b" OK done\r\n")
        elif cmd == b"LOGOUT":
            self.send(b"* BYE bye\r\n" + tag + b" OK done\r\n")
            return False
        elif cmd == b"NOOP":
            self.send(tag + b" OK done\r\n")
        else:
            self.send(tag + b" BAD not scripted\r\n")
        return True

    def fetch(self, uid: int, items: bytes) -> None:
        seq = sorted(self.fake.messages).index(uid) + 1
        raw = self.fake.messages[uid]
        head = f'* {seq} FETCH (UID {uid} INTERNALDATE "{INTERNALDATE}"'.encode()
        threads = self.fake.gmail_threads
        if threads is not None and b"X-GM-THRID" in items.upper() and uid in threads:
            # Gmail names the thread first, before the items asked for.
            head = head.replace(b"(UID", f"(X-GM-THRID {threads[uid]} UID".encode(), 1)
        if not re.search(rb"BODY(\.PEEK)?\[\]", items.upper()):
            self.send(head + f" RFC822.SIZE {len(raw)})\r\n".encode())
            return
        honest = head + f" BODY[] {{{len(raw)}}}\r\n".encode() + raw + b")\r\n"
        if self.fake.body is None:
            self.send(honest)
        else:
            self.fake.body(self, self.number, uid, honest)


def _uids(text: bytes) -> set[int]:
    """UIDs named by a UID set such as ``1:3,7`` (the first set in ``text``)."""
    found = re.search(rb"(\d+(?::\d+)?(?:,\d+(?::\d+)?)*)", text)
    out: set[int] = set()
    for part in (found[1] if found else b"").split(b","):
        if not part:
            continue
        low, _, high = part.partition(b":")
        out.update(range(int(low), int(high or low) + 1))
    return out


def wait_for(predicate: Callable[[], object], seconds: float) -> object:
    """``predicate()`` once it is truthy, polled until ``seconds`` pass; else its last value."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)
