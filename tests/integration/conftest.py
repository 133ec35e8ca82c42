"""What the integration tests share: a throwaway Dovecot IMAP server, a stand-in for
systemd's notify socket, a self-signed certificate (``certificate``), and running the
real ``syncd`` in a subprocess.

Dovecot: one server per test session (``dovecot`` fixture; ``dovecot_prefixed`` is a
second one laid out as Cyrus and Courier are, every folder under ``INBOX.``), listening on
a free 127.0.0.1 port with plain IMAP and, on a second port, implicit TLS with a
self-signed certificate made by the ``openssl`` CLI. Everything lives under a fresh
directory: config, base_dir, passwd-file, Maildirs, log. Each test gets a fresh user
(``imap_user`` fixture), so tests never see each other's mail. Users are added by
appending to the passwd-file, which Dovecot re-reads when it changes. Mail belongs to
``nobody`` because Dovecot refuses to access mail as root. When Dovecot is not installed
the tests are skipped with a reason.

Running syncd: ``syncd(config, ...)`` runs one command to its end (``as_json`` for the
document ``--json`` prints), ``syncd_run(config, notify)`` the daemon for a ``with``
block, ``write_mbox`` writes mail for ``syncd import``, ``wait_for`` polls until
something is true. Always the checkout's syncd (``PYTHONPATH``), whatever is installed.
"""

from __future__ import annotations

import itertools
import json
import mailbox
import os
import pwd
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOVECOT = "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"
USERS = 400

_CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{root}/tls.crt
ssl_key = <{root}/tls.key
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2
auth_failure_delay = 0
default_login_user = dovenull
default_internal_user = dovecot
mail_location = maildir:~/Maildir
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = 1
login_trusted_networks =
mail_max_userip_connections = 100
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
  process_min_avail = 0
}}
service anvil {{
  chroot =
}}
{namespace}"""
# Dovecot's default layout: folders at the top, "/" between levels.
DEFAULT_NAMESPACE = """\
namespace inbox {
  inbox = yes
  separator = /
  mailbox Junk {
    special_use = \\Junk
  }
  mailbox Trash {
    special_use = \\Trash
  }
  mailbox Sent {
    special_use = \\Sent
  }
}
"""
# Cyrus's and Courier's layout: every folder under INBOX, "." between levels. Archiv is
# found only by its SPECIAL-USE flag.
PREFIXED_NAMESPACE = """\
namespace inbox {
  inbox = yes
  separator = .
  prefix = INBOX.
  mailbox Sent {
    special_use = \\Sent
  }
  mailbox Trash {
    special_use = \\Trash
  }
  mailbox Archiv {
    special_use = \\Archive
  }
}
"""


def free_port() -> int:
    """A port free now, for a server a test starts next.

    Taken below the kernel's ephemeral range (32768 and up on Linux), so no outgoing
    connection of this or another test can take it before the server binds it, and from
    a block of its own for each pytest-xdist worker, so two workers never pick the same.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    base = 20000 + (int(worker) % 4 if worker.isdigit() else 0) * 3000
    for _ in range(100):
        port = base + random.randrange(3000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ImapUser:
    """A fresh mailbox on the test server."""

    server: Dovecot
    name: str
    password: str

    @property
    def maildir(self) -> Path:
        return self.server.root / "home" / self.name / "Maildir"

    def client(self) -> object:
        """A plain IMAPClient logged in as this user (test setup only)."""
        from imapclient import IMAPClient

        client = IMAPClient("127.0.0.1", port=self.server.port, ssl=False, timeout=10)
        client.normalise_times = False
        client.login(self.name, self.password)
        return client

    def append(self, folder: str, raw: bytes, when: datetime, flags: tuple = ()) -> None:
        client = self.client()
        try:
            if folder != "INBOX" and not client.folder_exists(folder):
                client.create_folder(folder)
            client.append(folder, raw, flags=flags, msg_time=when)
        finally:
            client.logout()

    def doveadm(self, *args: str) -> str:
        return self.server.doveadm(*args[:1], "-u", self.name, *args[1:])


class Dovecot:
    """One Dovecot master process with its own config, dirs and port."""

    def __init__(self, root: Path, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.root = root
        self.namespace = namespace
        self.port = free_port()
        self.tls_port = free_port()
        self.config = root / "dovecot.conf"
        self.cert = root / "tls.crt"
        self._users = itertools.count(1)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        nobody = pwd.getpwnam("nobody")
        (self.root / "home").mkdir(parents=True)
        (self.root / "state").mkdir()
        # Users are created up front: passwd-file reloads on an mtime change with one-second
        # granularity, so users added while the server runs may stay unknown for a second.
        (self.root / "passwd").write_text(
            "".join(f"{n}:{{PLAIN}}{self._password(n)}\n" for n in self._names())
        )
        os.chown(self.root / "home", nobody.pw_uid, nobody.pw_gid)
        self._make_cert()
        self.config.write_text(
            _CONFIG.format(
                root=self.root,
                port=self.port,
                tls_port=self.tls_port,
                uid=nobody.pw_uid,
                gid=nobody.pw_gid,
                namespace=self.namespace,
            )
        )
        self._proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"dovecot exited: {err} {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"dovecot did not listen on {self.port}: {self.log()}")

    def _make_cert(self) -> None:
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout", str(self.root / "tls.key"), "-out", str(self.cert),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    @staticmethod
    def _names() -> list[str]:
        return [f"user{n}" for n in range(1, USERS + 1)]

    @staticmethod
    def _password(name: str) -> str:
        return f"pw-{name}-secret"

    def add_user(self) -> ImapUser:
        """A user whose mailbox no test has touched yet."""
        n = next(self._users)
        if n > USERS:
            raise RuntimeError(f"the test server has only {USERS} users")
        name = f"user{n}"
        return ImapUser(self, name, self._password(name))

    def doveadm(self, *args: str) -> str:
        done = subprocess.run(
            [DOVEADM, "-c", str(self.config), *args], capture_output=True, text=True, timeout=30
        )
        if done.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""


def dovecot_missing() -> str | None:
    """Why Dovecot cannot be used here, or None."""
    if not Path(DOVECOT).exists():
        return "dovecot is not installed (apt-get install dovecot-imapd)"
    if os.geteuid() != 0:
        return "the Dovecot fixture runs dovecot as root (it drops to nobody for mail)"
    if not shutil.which("openssl"):
        return "the openssl CLI is needed for the fixture's TLS certificate"
    return None


def _running_dovecot(namespace: str) -> Iterator[Dovecot]:
    reason = dovecot_missing()
    if reason:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="syncd-dovecot-"))
    os.chmod(root, 0o755)  # mail processes run as nobody and must reach home/
    server = Dovecot(root, namespace)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    yield from _running_dovecot(DEFAULT_NAMESPACE)


@pytest.fixture(scope="session")
def dovecot_prefixed() -> Iterator[Dovecot]:
    """A server laid out as Cyrus and Courier are (``PREFIXED_NAMESPACE``)."""
    yield from _running_dovecot(PREFIXED_NAMESPACE)


@pytest.fixture
def imap_user(dovecot: Dovecot) -> ImapUser:
    return dovecot.add_user()


@pytest.fixture
def prefixed_user(dovecot_prefixed: Dovecot) -> ImapUser:
    """A fresh mailbox whose folders are ``INBOX.Sent``, ``INBOX.Archiv``, ..."""
    return dovecot_prefixed.add_user()


class Notify:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(15)

    def wait_for(self, key: str) -> list[str]:
        """Messages received until one has a line starting with ``key``."""
        seen: list[str] = []
        while True:
            lines = self.sock.recv(4096).decode().splitlines()
            seen += lines
            if any(line.startswith(key) for line in lines):
                return seen


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[Notify]:
    n = Notify(tmp_path / "notify.sock")
    yield n
    n.sock.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and its key for 127.0.0.1 and localhost (the SMTP tests'
    STARTTLS), made once per test module by the ``openssl`` CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def queue_copy(conn: Any, raw: bytes, mail_from: str, recipients: list[str], now: float) -> None:
    """An extra_bcc copy in the outbox, queued the way the BCC drain queues one: held with
    its spooled message, released once that message is logged."""
    from syncd.store import db, spool

    spool_id = spool.spool_message(conn, raw, mail_from, "127.0.0.1", now=now)
    with db.transaction(conn):
        spool.hold_copies(conn, [spool_id], recipients, now)
        spool.delete_spooled(conn, [spool_id])
    spool.release_copies(conn, [spool_id], [])


T = TypeVar("T")


def vm_steps(conn: sqlite3.Connection, run: Callable[[], T], every: int) -> tuple[T, int]:
    """``run()`` and the SQLite VM steps it took on ``conn``, counted ``every`` at a time:
    what a read costs, whatever the machine's speed."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, every)
    try:
        return run(), steps
    finally:
        conn.set_progress_handler(None, 0)


# --- running syncd ---------------------------------------------------------------------


def _environment(notify: Notify | None = None) -> dict[str, str]:
    """The test's environment, with the checkout first on the path; NOTIFY_SOCKET only
    when a test listens on one (never systemd's, should pytest run under it)."""
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env["PYTHONPATH"] = str(ROOT)
    if notify is not None:
        env["NOTIFY_SOCKET"] = str(notify.path)
    return env


def syncd(
    config: Path,
    *args: str,
    cwd: Path | None = None,
    text: bool = True,
    timeout: float = 120,
    **kwargs: Any,
) -> subprocess.CompletedProcess[Any]:
    """``python -m syncd --config CONFIG ARGS...`` run to its end, in the config's
    directory unless ``cwd``; stdout and stderr captured (as text unless ``text=False``)
    unless ``stdout=`` says where to. Other ``kwargs`` go to ``subprocess.run``."""
    kwargs.setdefault("env", _environment())
    return subprocess.run(
        [sys.executable, "-m", "syncd", "--config", str(config), *args],
        cwd=cwd or config.parent, capture_output="stdout" not in kwargs, text=text,
        timeout=timeout, **kwargs,
    )  # fmt: skip


def as_json(config: Path, *args: str, **kwargs: Any) -> Any:
    """The document ``syncd ... --json`` prints; the command must exit 0."""
    done = syncd(config, *args, "--json", **kwargs)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@dataclass
class Daemon:
    """A ``syncd run`` of ``syncd_run``: its process, and once the ``with`` block is left,
    all it wrote on stderr."""

    proc: subprocess.Popen[str]
    stderr: str = ""

    def stop(self, seconds: float = 25) -> int:
        """SIGTERM, as systemd stops it; its exit status once it has ended."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=seconds)


@contextmanager
def syncd_run(
    config: Path, notify: Notify | None = None, *, stderr: Any = subprocess.PIPE
) -> Iterator[Daemon]:
    """``syncd run`` on ``config`` in its directory for a ``with`` block; with ``notify``
    it is ready (READY=1) when the block starts. On the way out, however the block ended,
    a daemon still running gets SIGTERM (and SIGKILL after 25 s), and is reaped; a test
    that cares how it stops says so itself: ``assert daemon.stop() == 0``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "--config", str(config), "run"],
        cwd=config.parent, env=_environment(notify), stderr=stderr, text=True,
    )  # fmt: skip
    daemon = Daemon(proc)
    try:
        if notify is not None:
            notify.wait_for("READY=1")
        yield daemon
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                proc.kill()
        daemon.stderr = proc.communicate()[1] or ""


def write_mbox(path: Path, *messages: bytes | Message) -> Path:
    """An mbox file at ``path`` holding ``messages`` (for ``syncd import``); its path."""
    box = mailbox.mbox(path)
    for raw in messages:
        box.add(raw)
    box.flush()
    return path


def wait_for(condition: Callable[[], T], seconds: float = 20, what: str = "it") -> T:
    """``condition()`` as soon as it is true, asked every 0.2 s; a failed test when it is
    not within ``seconds``."""
    deadline = time.monotonic() + seconds
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out after {seconds} s waiting for {what}"
        time.sleep(0.2)
    return found
