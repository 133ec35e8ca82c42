"""The bytes between syncd and an IMAP server: a deadline on each command, a cap on literals.

imaplib reads with one socket timeout per read, so a server that sends a byte every few
seconds keeps a command going for ever; and it reads a literal whole, asking for all of
it at once, so a server that announces ``{1099511627776}`` gets a MemoryError out of it.
``Client`` is the IMAPClient that ``imap_conn`` connects with. Its imaplib connection reads
through a ``CommandClock``:

- Each command (and the greeting) has a deadline: ``COMMAND_TIMEOUTS`` times the read
  timeout (``imap.timeout``) from when it was sent, plus one second for every ``MIN_RATE``
  bytes of answer received so far. A large honest FETCH earns its time as its bytes
  arrive; a server that trickles earns almost none. Where a wait is meant to be long
  (IDLE), the caller grants it with ``CommandClock.start(extra=...)``.
- A literal over ``MAX_LITERAL`` is refused before anything is read into memory. That is
  the ceiling of ``bcc.max_message_mb``, the largest message syncd takes anywhere, and far
  above what mail servers in common use accept (Gmail 50 MB, Exchange Online 150 MB).

Either way the stream cannot be read on, so the socket is shut down and an ``OSError``
raised (``CommandTooSlow``, ``LiteralTooLarge``): every caller already treats that as the
lost connection it now is, with its reconnect and backoff.

imaplib documents ``open``, ``read``, ``readline``, ``send`` and ``shutdown`` as the
methods to override for its I/O. imapclient builds its imaplib object in
``_create_IMAP4``, a private method we override: imapclient is pinned to 4.1.0.
"""

from __future__ import annotations

import imaplib
import io
import socket
import time
from contextlib import suppress
from typing import Any

from imapclient import IMAPClient, SocketTimeout
from imapclient.imap4 import IMAP4WithTimeout
from imapclient.tls import IMAP4_TLS

COMMAND_TIMEOUTS = 5  # the deadline's fixed part, in read timeouts
MIN_RATE = 16 * 1024  # bytes per second of answer that earn one more second
MAX_LITERAL = 1024 * 1024 * 1024  # bcc.max_message_mb's ceiling, 1024 MB
_MAXLINE = 1_000_000  # imaplib's own bound on a line


class CommandTooSlow(TimeoutError):
    """The server's answer did not complete by the command's deadline; the socket is shut."""


class LiteralTooLarge(OSError):
    """The server announced a literal over ``MAX_LITERAL``; the socket is shut."""


class CommandClock:
    """The deadline of the command in flight on one connection."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.start()

    def start(self, extra: float = 0.0) -> None:
        """A new command was sent (``extra``: seconds of waiting the caller expects)."""
        self.started = time.monotonic()
        self.allowed = COMMAND_TIMEOUTS * self.timeout + extra
        self.received = 0

    def overdue(self) -> str | None:
        """Why the command is past its deadline, or None while it is not."""
        took = time.monotonic() - self.started
        if took <= self.allowed + self.received / MIN_RATE:
            return None
        return (
            f"the server is too slow: {self.received} bytes of its answer in {took:.1f} s"
            f" (syncd waits {COMMAND_TIMEOUTS} x imap.timeout for a command, plus 1 s for"
            f" every {MIN_RATE // 1024} KiB received)"
        )


class _ClockedReader(io.RawIOBase):
    """The socket's raw reader, checking the command's deadline before every read."""

    def __init__(self, sock: socket.socket, clock: CommandClock) -> None:
        self._sock, self._clock = sock, clock
        self._raw = sock.makefile("rb", buffering=0)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        why = self._clock.overdue()
        if why is not None:
            _cut(self._sock)
            raise CommandTooSlow(why)
        n = self._raw.readinto(buffer)
        if n:
            self._clock.received += n
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def _cut(sock: socket.socket) -> None:
    # The rest of the answer will never be read: the server must stop sending it.
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Clocked(imaplib.IMAP4):
    """imaplib's I/O, read through the connection's ``CommandClock``."""

    clock: CommandClock
    _reader: io.BufferedReader | None = None
    _reader_of: socket.socket | None = None

    def open(self, host: str = "", port: int = imaplib.IMAP4_PORT, timeout: Any = None) -> None:
        super().open(host, port, timeout)
        self.clock.start()  # the greeting's deadline

    def _stream(self) -> io.BufferedReader:
        # STARTTLS replaces the socket: read the new one (bytes buffered in the clear
        # before it are dropped, as they must be).
        if self._reader is None or self._reader_of is not self.sock:
            self._reader = io.BufferedReader(_ClockedReader(self.sock, self.clock))
            self._reader_of = self.sock
        return self._reader

    def read(self, size: int) -> bytes:
        if size > MAX_LITERAL:
            _cut(self.sock)
            raise LiteralTooLarge(
                f"the server announced a literal of {size} bytes; syncd reads at most"
                f" {MAX_LITERAL} ({MAX_LITERAL // 1024**2} MiB)"
            )
        return self._stream().read(size)

    def readline(self) -> bytes:
        line = self._stream().readline(_MAXLINE + 1)
        if len(line) > _MAXLINE:
            raise self.error(f"got more than {_MAXLINE} bytes")
        return line

    def send(self, data: bytes) -> None:
        self.clock.start()
        super().send(data)

    def shutdown(self) -> None:
        if self._reader is not None:
            with suppress(OSError):
                self._reader.close()
        super().shutdown()


class _Plain(_Clocked, IMAP4WithTimeout):
    def __init__(self, clock: CommandClock, host: str, port: int, timeout: float) -> None:
        self.clock = clock
        IMAP4WithTimeout.__init__(self, host, port, timeout)


class _Tls(_Clocked, IMAP4_TLS):
    def __init__(
        self, clock: CommandClock, host: str, port: int, context: Any, timeout: float
    ) -> None:
        self.clock = clock
        IMAP4_TLS.__init__(self, host, port, context, timeout)


class Client(IMAPClient):
    """IMAPClient over a connection with a deadline per command and a cap on literals."""

    def __init__(
        self, host: str, *, port: int, ssl: bool, ssl_context: Any, timeout: SocketTimeout
    ) -> None:
        self.clock = CommandClock(timeout.read)
        super().__init__(host, port=port, ssl=ssl, ssl_context=ssl_context, timeout=timeout)

    def _create_IMAP4(self) -> imaplib.IMAP4:
        connect = self._timeout.connect
        if self.ssl:
            return _Tls(self.clock, self.host, self.port, self.ssl_context, connect)
        return _Plain(self.clock, self.host, self.port, connect)
