"""``syncd doctor``: try each thing syncd depends on and say plainly what fails.

Each check returns a ``Check`` (name, ok, detail) and never raises: an IMAP login per
inbox, the BCC listener (is something answering SMTP there), DNS for each BCC
logging domain (MX, else A/AAAA), and the store: whether this user may write it (or the
directory it will be created in) and its integrity (``PRAGMA quick_check``, summarised
in one line: the count and the first problem). Details never include a password.
"""

from __future__ import annotations

import smtplib
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.resolver

from syncd.config.model import Config, Inbox
from syncd.errors import SyncdError
from syncd.mail.addresses import domain_of
from syncd.sources.imap.conn import connect
from syncd.store import db, integrity

STORE_CHECK_SECONDS = 30.0
LIMIT = 100


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def run_checks(config: Config) -> list[Check]:
    checks = [check_imap(inbox) for inbox in config.inboxes]
    if config.bcc is not None:
        checks.append(check_listener(config.bcc.listen.host, config.bcc.listen.port))
        for domain in sorted({domain_of(a) for a in config.bcc.addresses}):
            checks.append(check_dns(domain))
    checks.append(check_store(config))
    return checks


def check_imap(inbox: Inbox) -> Check:
    name = f"imap login {inbox.name} ({inbox.imap.host}:{inbox.imap.port})"
    try:
        session = connect(inbox.name, inbox.imap, timeout=min(inbox.imap.timeout, 20.0))
    except SyncdError as exc:
        return Check(name, False, str(exc))
    session.close()
    return Check(name, True, "logged in")


def check_listener(host: str, port: int) -> Check:
    name = f"bcc listener {host}:{port}"
    try:
        with smtplib.SMTP(host, port, timeout=5) as smtp:
            code, _ = smtp.noop()
    except (OSError, smtplib.SMTPException) as exc:
        return Check(name, False, f"no SMTP answer ({exc}); is `syncd run` running?")
    return Check(name, code == 250, f"answers NOOP with {code}")


def check_dns(domain: str) -> Check:
    name = f"dns {domain}"
    resolver = dns.resolver.Resolver()
    resolver.lifetime = 5.0
    for rdtype in ("MX", "A", "AAAA"):
        try:
            answer = resolver.resolve(domain, rdtype)
        except (dns.exception.DNSException, OSError):
            continue
        return Check(name, True, f"{rdtype} {', '.join(sorted(str(r) for r in answer))}")
    return Check(name, False, "no MX, A or AAAA record: senders cannot reach the logging address")


def check_store(config: Config) -> Check:
    path = config.store.path
    name = f"store {path}"
    denied = db.not_permitted(path if path.exists() else _first_existing(path))
    if denied is not None:
        return Check(name, False, f"cannot be written: {denied}")
    if not path.exists():
        return Check(name, True, "not created yet (created on first run)")
    try:
        verdict = integrity.check(path, seconds=STORE_CHECK_SECONDS, limit=LIMIT)
    except sqlite3.Error as exc:
        return Check(name, False, f"cannot read: {exc}")
    full = "`syncd check-store` runs the full check"
    if verdict.problems:
        count = f"{len(verdict.problems)}{'+' if len(verdict.problems) >= LIMIT else ''}"
        return Check(
            name,
            False,
            f"damaged: {count} problem(s), first: {verdict.problems[0]}; "
            f"restore it from a backup ({full})",
        )
    if not verdict.finished:
        return Check(name, True, f"no problem in the first {STORE_CHECK_SECONDS:.0f} s; {full}")
    return Check(name, True, "integrity ok (quick check)")


def _first_existing(store: Path) -> Path:
    """A stand-in store path whose directory exists: the directory the first run will
    create the store's directories in, so its permissions are the ones that count."""
    directory = store.parent
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    return directory / store.name
