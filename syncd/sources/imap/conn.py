"""The IMAP connection: secrets, TLS, login, timeouts, and read-only access to folders.

``connect`` opens an ``ImapSession`` for one inbox's ``imap:`` settings: implicit TLS,
STARTTLS or plain (loopback only), connect and read timeouts always set, the password from
``password``, ``password_file`` or ``password_command``, or XOAUTH2 with a token from
``oauth2_token_command``. A refused login (NO or BAD) raises ``InboxError(auth=True)``;
an answer to LOGIN that is not IMAP raises a plain ``InboxError`` (a protocol error, with
the normal backoff rather than the hour a refused login waits); a network fault, or a
command past its deadline (``imap_wire``), raises ``ConnectionLost`` (an ``InboxError``
worth retrying). The session only ever EXAMINEs folders and fetches with BODY.PEEK, so
syncing never changes a flag, and it passes explicit UID lists to imapclient (4.1.0 raises
on ``1:*`` sequences). ``idle_wait`` is the push primitive the daemon uses on INBOX. A
server that has not answered the connection or the login after ``WAIT_NOTICE`` seconds
gets one log line saying what is awaited and for how long. This module and ``imap_wire``
are the only users of imapclient.
"""

from __future__ import annotations

import imaplib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import date, datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from imapclient import IMAPClient, SocketTimeout
from imapclient.exceptions import LoginError

from syncd import secrets
from syncd.errors import InboxError
from syncd.hosts import is_loopback
from syncd.sources.imap.fetchparse import (
    FetchParseError,
    Fields,
    gm_thrid,
    internal_date,
    parse_fetch,
)
from syncd.sources.imap.syncplan import FolderStatus, idle_slices
from syncd.sources.imap.wire import Client

HEADER_FIELDS = "BODY.PEEK[HEADER.FIELDS (FROM TO CC BCC MESSAGE-ID)]"
CONNECT_TIMEOUT = 20.0
WAIT_NOTICE = 3.0  # seconds without an answer before the log says what is awaited
log = logging.getLogger("syncd.imap")


class FetchedBody(NamedTuple):
    """One message's body as a body FETCH returned it."""

    uid: int
    raw: bytes
    internal_date: datetime | None
    gm_thrid: str | None = None  # Gmail's thread id, from a server with X-GM-EXT-1


class ImapSettings(Protocol):
    """The ``imap:`` block of an inbox (syncd.config.ImapConfig has this shape)."""

    host: str
    port: int | None
    security: str
    username: str
    password: Any  # SecretStr | None
    password_file: Path | None
    password_command: list[str] | None
    oauth2_token_command: list[str] | None


class ConnectionLost(InboxError):
    """The server went away or timed out; the inbox is retried with backoff."""


class FolderError(Exception):
    """The server refused a command on one folder (NO/BAD); other folders go on."""


def read_password(inbox: str, settings: ImapSettings) -> str:
    """The inbox's password; a secret that cannot be read fails the inbox, not the daemon."""
    try:
        return secrets.read_password(settings)
    except secrets.SecretError as exc:
        raise InboxError(inbox, str(exc)) from None


def _oauth2_token(inbox: str, command: Sequence[str]) -> str:
    try:
        return secrets.from_command(command, "oauth2_token_command")
    except secrets.SecretError as exc:
        raise InboxError(inbox, str(exc)) from None


def connect(inbox: str, settings: ImapSettings, *, timeout: float = 60.0) -> ImapSession:
    """Open, secure and log in; the session is ready to EXAMINE folders."""
    security = settings.security
    if security == "none" and not is_loopback(settings.host):
        raise InboxError(inbox, "security: none is allowed only to a loopback host")
    port = settings.port or (993 if security == "tls" else 143)
    context = ssl.create_default_context()
    connect_timeout = min(CONNECT_TIMEOUT, timeout)
    with _WaitNotice(f"{settings.host}:{port}", "connecting", connect_timeout) as notice:
        try:
            client = Client(
                settings.host,
                port=port,
                ssl=security == "tls",
                ssl_context=context,
                timeout=SocketTimeout(connect=connect_timeout, read=timeout),
            )
        except ssl.SSLCertVerificationError as exc:
            # A certificate that does not verify will not fix itself in seconds: no retry.
            raise InboxError(inbox, f"TLS certificate of {settings.host} refused: {exc}") from None
        except (OSError, imaplib.IMAP4.error) as exc:
            raise ConnectionLost(
                inbox, f"cannot connect to {settings.host}:{port}: {exc}"
            ) from None
        # imapclient sets imaplib's debug level to 5, which formats every line it reads and
        # makes large fetches several times slower. Private attribute: imapclient is
        # pinned to 4.1.0.
        client._imap.debug = 0
        client.normalise_times = False  # keep INTERNALDATE timezone-aware
        notice.doing, notice.timeout = "logging in", timeout
        try:
            if security == "starttls":
                _starttls(inbox, client, context, settings.host)
            _login(inbox, client, settings)
        except BaseException:
            _close_quietly(client)
            raise
    return ImapSession(inbox, client)


class _WaitNotice:
    """Says once, on the log, what a connection is waiting for when the server has not
    answered within ``WAIT_NOTICE`` seconds, so a silent server is not silence here too."""

    def __init__(self, server: str, doing: str, timeout: float) -> None:
        self.server, self.doing, self.timeout = server, doing, timeout
        self._timer = threading.Timer(WAIT_NOTICE, self._say)
        self._timer.daemon = True

    def __enter__(self) -> _WaitNotice:
        self._timer.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._timer.cancel()

    def _say(self) -> None:
        log.info("waiting for %s (%s, %.0f s timeout)...", self.server, self.doing, self.timeout)


def _starttls(inbox: str, client: IMAPClient, context: ssl.SSLContext, host: str) -> None:
    if not client.has_capability("STARTTLS"):
        raise InboxError(inbox, f"{host} does not offer STARTTLS")
    try:
        client.starttls(context)
    except ssl.SSLCertVerificationError as exc:
        raise InboxError(inbox, f"TLS certificate of {host} refused: {exc}") from None
    except (OSError, imaplib.IMAP4.abort) as exc:
        raise ConnectionLost(inbox, f"STARTTLS failed: {_short(exc)}") from None


def _login(inbox: str, client: IMAPClient, settings: ImapSettings) -> None:
    try:
        if settings.oauth2_token_command:
            token = _oauth2_token(inbox, settings.oauth2_token_command)
            client.oauth2_login(settings.username, token)
        else:
            client.login(settings.username, read_password(inbox, settings))
    except LoginError as exc:
        # imapclient makes a LoginError of any error during LOGIN, but only a NO or BAD
        # is a refusal: an abort means the answer was not IMAP (or a BYE), which waiting
        # an hour will not mend. The server's text may echo what we sent; it never
        # enters the error.
        if isinstance(exc.__context__, imaplib.IMAP4.abort):
            raise InboxError(
                inbox,
                "protocol error: the server's answer to LOGIN is not IMAP (or it ended"
                " the session); not a refused login",
            ) from None
        raise InboxError(
            inbox, f"authentication failed for {settings.username}", auth=True
        ) from None
    except (OSError, imaplib.IMAP4.abort) as exc:
        raise ConnectionLost(inbox, f"connection lost during login: {_short(exc)}") from None
    except imaplib.IMAP4.error as exc:
        raise InboxError(inbox, f"login refused: {_short(exc)}", auth=True) from None


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "..."


def _close_quietly(client: IMAPClient) -> None:
    # The socket may already be gone; there is nothing more to do about it.
    with suppress(Exception):
        client.shutdown()


@contextmanager
def _imap_errors(inbox: str, what: str) -> Iterator[None]:
    """Map imaplib/socket errors: lost connection -> ConnectionLost, NO/BAD -> FolderError."""
    try:
        yield
    except imaplib.IMAP4.abort as exc:
        raise ConnectionLost(inbox, f"connection lost during {what}: {_short(exc)}") from None
    except (OSError, EOFError) as exc:
        raise ConnectionLost(inbox, f"connection lost during {what}: {_short(exc)}") from None
    except imaplib.IMAP4.error as exc:
        raise FolderError(f"{what}: {_short(exc)}") from None


class ImapSession:
    """One logged-in connection, used by one thread at a time."""

    def __init__(self, inbox: str, client: Client) -> None:
        self.inbox = inbox
        self.client = client
        self.selected: str | None = None
        self._interrupted = False
        self._gmail: bool | None = None

    def close(self) -> None:
        try:
            self.client.logout()
        except Exception:  # logging out of a dead connection: close the socket instead
            _close_quietly(self.client)

    def interrupt(self) -> None:
        """From another thread: end a blocking wait (IDLE) by shutting the socket down."""
        self._interrupted = True
        with suppress(Exception):
            self.client.socket().shutdown(socket.SHUT_RDWR)

    def list_folders(self) -> list[tuple[tuple[bytes, ...], str]]:
        with _imap_errors(self.inbox, "LIST"):
            return [(tuple(flags), name) for flags, _delim, name in self.client.list_folders()]

    def personal_namespaces(self) -> list[tuple[str, str | None]]:
        """(prefix, delimiter) of each personal namespace (RFC 2342): ``INBOX.`` on Cyrus
        and Courier, empty on Dovecot's default and Gmail. A server without NAMESPACE
        has none to offer, and one that refuses the command is taken at its word."""
        if not self.client.has_capability("NAMESPACE"):
            return []
        try:
            with _imap_errors(self.inbox, "NAMESPACE"):
                personal = self.client.namespace().personal or ()
        except FolderError:
            return []
        return [(_text(prefix), _text(delim) if delim else None) for prefix, delim in personal]

    def examine(self, folder: str) -> FolderStatus:
        """Select read-only (EXAMINE): nothing we do afterwards can change the folder."""
        with _imap_errors(self.inbox, f"EXAMINE {folder}"):
            info = self.client.select_folder(folder, readonly=True)
            self.selected = folder
            uidnext = info.get(b"UIDNEXT")
            if uidnext is None:  # a server that omits UIDNEXT: derive it from the UIDs
                uids = self.client.search(["ALL"])
                uidnext = max(uids, default=0) + 1
            highest = info.get(b"HIGHESTMODSEQ")
            if highest is None and self.client.has_capability("CONDSTORE"):
                status = self.client.folder_status(folder, ["HIGHESTMODSEQ"])
                highest = status.get(b"HIGHESTMODSEQ")
            return FolderStatus(
                uidvalidity=int(info[b"UIDVALIDITY"]),
                uidnext=int(uidnext),
                exists=int(info.get(b"EXISTS", 0)),
                highestmodseq=int(highest) if highest is not None else None,
            )

    def search_uids(self, after_uid: int, top: int, since: date | None) -> list[int]:
        """UIDs in (after_uid, top], optionally SINCE a date, ascending."""
        if top <= after_uid:
            return []
        criteria: list[Any] = ["UID", f"{after_uid + 1}:{top}"]
        if since is not None:
            criteria += ["SINCE", since]
        with _imap_errors(self.inbox, "SEARCH"):
            found = self.client.search(criteria)
        # "n:m" may return a UID outside the range when the folder has none in it.
        return sorted(uid for uid in found if after_uid < uid <= top)

    def fetch_meta(
        self, uids: Sequence[int], *, headers: bool
    ) -> list[tuple[int, int, datetime | None, bytes | None]]:
        """(uid, size, internaldate, From/To/Cc/Bcc/Message-ID) for each UID still there. A UID
        the server leaves out but still has comes back as (uid, 0, None, None): unknown
        metadata, so the caller keeps it rather than filter it out on a guess."""
        items = "INTERNALDATE RFC822.SIZE" + (f" {HEADER_FIELDS}" if headers else "")
        response = self._uid_fetch(uids, items)
        out: list[tuple[int, int, datetime | None, bytes | None]] = []
        for uid in uids:
            data = response.get(uid)
            if data is None:
                if self.uid_exists(uid):
                    out.append((uid, 0, None, None))
                continue  # expunged since the SEARCH
            header = _header_value(data) if headers else None
            size = data.get(b"RFC822.SIZE")
            size = size if isinstance(size, int) else 0
            out.append((uid, size, internal_date(data.get(b"INTERNALDATE")), header))
        return out

    @property
    def gmail(self) -> bool:
        """Whether the server offers Gmail's extensions (X-GM-EXT-1): then each body fetch
        also asks for X-GM-THRID, Gmail's thread id, which no message header carries."""
        if self._gmail is None:
            with _imap_errors(self.inbox, "CAPABILITY"):
                self._gmail = bool(self.client.has_capability("X-GM-EXT-1"))
        return self._gmail

    def fetch_bodies(self, uids: Sequence[int]) -> list[FetchedBody]:
        """Each message's raw bytes, INTERNALDATE and (Gmail) thread id, with BODY.PEEK[],
        so \\Seen is never set. Only the UIDs whose body came back are listed (an expunged
        message comes back as ``BODY[] NIL`` or not at all): the caller compares them with
        what it asked for."""
        thrid = " X-GM-THRID" if self.gmail else ""
        response = self._uid_fetch(uids, f"INTERNALDATE{thrid} BODY.PEEK[]")
        out = []
        for uid in uids:
            data = response.get(uid)
            body = None if data is None else data.get(b"BODY[]")
            if data is not None and isinstance(body, bytes):
                out.append(
                    FetchedBody(uid, body, internal_date(data.get(b"INTERNALDATE")), gm_thrid(data))
                )
        return out

    def fetch_structure(self, uid: int) -> Fields | None:
        """INTERNALDATE, BODYSTRUCTURE and (Gmail) X-GM-THRID of ``uid``; None when it is
        gone."""
        thrid = " X-GM-THRID" if self.gmail else ""
        return self._uid_fetch([uid], f"INTERNALDATE{thrid} BODYSTRUCTURE").get(uid)

    def fetch_parts(self, uid: int, items: Sequence[str]) -> Fields | None:
        """``items`` (BODY.PEEK sections, see ``bodystructure.fetch_items``) of ``uid`` in
        one FETCH; None when it is gone."""
        return self._uid_fetch([uid], " ".join(items)).get(uid)

    def _uid_fetch(self, uids: Sequence[int], items: str) -> dict[int, Fields]:
        """UID FETCH through imaplib, read by ``fetchparse`` (imapclient's parser costs
        several times more on bulk fetches). NO or BAD, or a response we cannot read,
        is a FolderError."""
        with _imap_errors(self.inbox, "FETCH"):
            typ, data = self.client._imap.uid("FETCH", ",".join(map(str, uids)), f"(UID {items})")
            if typ != "OK":
                said = b" ".join(d for d in data if isinstance(d, bytes))
                raise imaplib.IMAP4.error(f"{typ}: {said.decode(errors='replace')}")
            try:
                return parse_fetch(data)
            except FetchParseError as exc:
                raise imaplib.IMAP4.error(f"unreadable FETCH response: {exc}") from None

    def uid_exists(self, uid: int) -> bool:
        """Whether the selected folder still holds ``uid`` (UID SEARCH UID n)."""
        with _imap_errors(self.inbox, "SEARCH"):
            return uid in self.client.search(["UID", str(uid)])

    def idle_wait(self, timeout: float, folder: str = "INBOX") -> bool:
        """Wait up to ``timeout`` seconds for new mail in ``folder`` (EXAMINEd here).
        True as soon as the server reports EXISTS; False when the time is up. IDLE is
        re-issued at least every 9 minutes so servers and NATs keep the session."""
        if self.selected != folder:
            self.examine(folder)
        with _imap_errors(self.inbox, "IDLE"):
            for slice_ in idle_slices(timeout):
                self.client.idle()
                try:
                    responses = self._idle_until(slice_)
                finally:
                    self.client.idle_done()
                if responses:
                    return True
        return False

    def _idle_until(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._interrupted:
                raise ConnectionLost(self.inbox, "interrupted")
            self.client.clock.start(extra=left)  # waiting is what IDLE is for
            responses = self.client.idle_check(timeout=left)
            if any(len(r) >= 2 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                return True
            if not responses and deadline - time.monotonic() > 0.5:
                # imapclient's idle_check returns [] at EOF rather than raising; an empty
                # answer well before the timeout means the server closed the connection.
                raise ConnectionLost(self.inbox, "connection closed during IDLE")
        return False


def _header_value(data: dict[bytes, Any]) -> bytes:
    for key, value in data.items():
        if isinstance(key, bytes) and key.startswith(b"BODY[HEADER"):
            return bytes(value or b"")
    return b""


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
