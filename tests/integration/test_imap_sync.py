"""The IMAP sync engine against a real Dovecot: windows, folders, people filter, cursors,
UIDVALIDITY changes, read-only access, lost connections, SIGKILL, auth failures, IDLE."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from syncd.config.model import Config, Inbox
from syncd.errors import InboxError, MessageError
from syncd.mail.parse import header_message_key, parse
from syncd.services import imap as imap_service
from syncd.sources.imap.conn import connect
from syncd.sources.imap.inbox import Limits, RetryPolicy, sync_inbox
from syncd.sources.imap.syncplan import FolderCheckpoint
from syncd.store import contacts, db, engagements, syncstate
from tests.integration.conftest import ImapUser

TODAY = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def message(n: int, *, frm: str = "ext@partner.example", to: str = "ada@example.com") -> bytes:
    return (
        f"From: {frm}\r\nTo: {to}\r\nSubject: message {n}\r\n"
        f"Message-ID: <m{n}@test.example>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n"
        f"body {n}\r\n"
    ).encode()


def inbox_for(user: ImapUser, *, name: str = "ada", **sync: Any) -> Inbox:
    imap: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": user.server.port,
        "security": "none",
        "username": user.name,
        "password": user.password,
        "timeout": 10,
    }
    imap.update(sync.pop("imap", {}))
    sync_cfg = {"from": "1y", "folders": ["INBOX"], **sync}
    return Inbox.model_validate(
        {"name": name, "kind": "personal", "owner": "ada@example.com", "imap": imap,
         "sync": sync_cfg}
    )  # fmt: skip


@dataclass
class Recorder:
    """A deliver/checkpoint_of pair that 'commits' mail and cursor together in memory."""

    seen: list[tuple[str, int, str]] = field(default_factory=list)
    checkpoints: dict[tuple[str, str], FolderCheckpoint] = field(default_factory=dict)
    calls: int = 0

    def deliver(self, items: list, checkpoint: FolderCheckpoint) -> list[str]:
        self.calls += 1
        for raw, prov in items:
            msgid = raw.split(b"Message-ID: <", 1)[1].split(b">", 1)[0].decode()
            self.seen.append((prov.folder, prov.uid, msgid))
            assert prov.source == "imap" and prov.inbox == checkpoint.inbox
        self.checkpoints[(checkpoint.inbox, checkpoint.folder)] = checkpoint
        return ["logged"] * len(items)

    def checkpoint_of(self, inbox: str, folder: str) -> FolderCheckpoint | None:
        return self.checkpoints.get((inbox, folder))

    def ids(self) -> list[str]:
        return sorted(m for _, _, m in self.seen)


FAST_RETRY = RetryPolicy(attempts=3, base=0.01, cap=0.05)


def run(inbox: Inbox, rec: Recorder, contacts: set[str] | None = None, **kw: Any) -> Any:
    kw.setdefault("today", TODAY)
    kw.setdefault("retry", FAST_RETRY)
    return sync_inbox(
        inbox,
        deliver=rec.deliver,
        checkpoint_of=rec.checkpoint_of,
        known_contacts=lambda: set(contacts or ()),
        **kw,
    )


def test_imaplib_debug_is_off_and_reads_time_out_after_connect(imap_user: ImapUser) -> None:
    session = connect("ada", inbox_for(imap_user).imap, timeout=7.5)
    try:
        # imapclient 4.1.0 sets 5, which costs 5x on large fetches; we reset it.
        assert hasattr(session.client._imap, "debug")
        assert session.client._imap.debug == 0
        # A server that stops answering ends a read, never hangs the inbox's thread.
        assert session.client._imap.sock.gettimeout() == 7.5
    finally:
        session.close()


def test_window_boundaries_follow_internaldate(imap_user: ImapUser) -> None:
    dates = {
        1: datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC),  # a second early
        2: datetime(2024, 3, 1, 0, 0, 0, tzinfo=UTC),  # the first instant
        3: datetime(2024, 3, 1, 1, 30, tzinfo=timezone(timedelta(hours=2))),  # 23:30Z before
        4: datetime(2024, 2, 29, 22, 0, tzinfo=timezone(timedelta(hours=-3))),  # 01:00Z on
        5: datetime(2023, 1, 1, tzinfo=UTC),
        6: datetime(2024, 5, 31, tzinfo=UTC),
    }
    for n, when in dates.items():
        imap_user.append("INBOX", message(n), when)
    rec = Recorder()
    result = run(inbox_for(imap_user, **{"from": "2024-03-01"}), rec)
    assert result.state == "ok"
    assert rec.ids() == ["m2@test.example", "m4@test.example", "m6@test.example"]
    assert result.folders[0].logged == 3
    cp = rec.checkpoint_of("ada", "INBOX")
    assert cp is not None and cp.initial_done and cp.last_uid == 6


def test_folders_all_leaves_out_junk_and_trash(imap_user: ImapUser) -> None:
    when = datetime(2024, 5, 1, tzinfo=UTC)
    for n, folder in enumerate(["INBOX", "Sent", "Junk", "Trash", "Entwürfe", "Kunden/Acme"]):
        imap_user.append(folder, message(n), when)
    rec = Recorder()
    result = run(inbox_for(imap_user, folders="all"), rec)
    names = [f.name for f in result.folders]
    assert sorted(names) == sorted(["INBOX", "Sent", "Entwürfe", "Kunden/Acme"])
    assert names[0] == "INBOX"
    assert sorted(f for f, _, _ in rec.seen) == sorted(names)  # names decoded from UTF-7
    assert rec.checkpoint_of("ada", "Entwürfe") is not None

    listed = Recorder()
    result = run(inbox_for(imap_user, folders=["Entwürfe", "Nope", "Junk"]), listed)
    assert [(f.name, f.error) for f in result.folders] == [
        ("Entwürfe", None),
        ("Nope", "no such folder; the server has: INBOX, Entwürfe, Junk, Kunden/Acme, Sent, Trash"),
        ("Junk", None),
    ]
    assert sorted(listed.ids()) == ["m2@test.example", "m4@test.example"]
    assert result.state == "ok" and "Nope" in (result.error or "")


def test_same_message_in_two_folders_is_delivered_twice(imap_user: ImapUser) -> None:
    when = datetime(2024, 5, 1, tzinfo=UTC)
    imap_user.append("INBOX", message(1), when)
    imap_user.append("Archive", message(1), when)
    rec = Recorder()
    run(inbox_for(imap_user, folders=["INBOX", "Archive"]), rec)
    assert sorted((f, m) for f, _, m in rec.seen) == [
        ("Archive", "m1@test.example"),
        ("INBOX", "m1@test.example"),
    ]


def test_rerun_delivers_nothing_and_new_mail_is_picked_up(imap_user: ImapUser) -> None:
    for n in range(3):
        imap_user.append("INBOX", message(n), datetime(2024, 5, 1, tzinfo=UTC))
    rec = Recorder()
    inbox = inbox_for(imap_user)
    run(inbox, rec)
    calls = rec.calls
    again = run(inbox, rec)
    assert len(rec.seen) == 3 and rec.calls == calls and again.folders[0].logged == 0
    imap_user.append("INBOX", message(9), datetime(2020, 1, 1, tzinfo=UTC))  # outside window
    run(inbox, rec)
    assert rec.ids()[-1] == "m9@test.example" and len(rec.seen) == 4  # new mail: no window


def test_people_contacts_filters_the_past_only(imap_user: ImapUser) -> None:
    when = datetime(2024, 5, 1, tzinfo=UTC)
    imap_user.append("INBOX", message(1, frm="known@client.example"), when)
    imap_user.append("INBOX", message(2, frm="stranger@else.example"), when)
    imap_user.append(
        "INBOX", message(3, frm="x@y.example", to="Known <KNOWN@client.example>"), when
    )
    inbox = inbox_for(imap_user, people="contacts")
    contacts = {"known@client.example"}
    dry = run(inbox, Recorder(), contacts, dry_run=True)
    assert dry.folders[0].would_fetch == 2
    rec = Recorder()
    run(inbox, rec, contacts)
    assert rec.ids() == ["m1@test.example", "m3@test.example"]
    imap_user.append("INBOX", message(4, frm="stranger@else.example"), when)
    run(inbox, rec, contacts)
    assert rec.ids()[-1] == "m4@test.example"  # arrived after the initial sync


def test_dry_run_fetches_no_body_and_commits_nothing(imap_user: ImapUser) -> None:
    for n in range(4):
        imap_user.append("INBOX", message(n), datetime(2024, 5, 1, tzinfo=UTC))
    rec = Recorder()
    result = run(inbox_for(imap_user, **{"from": "now"}), rec, dry_run=True)
    assert result.folders[0].would_fetch == 0 and rec.calls == 0
    result = run(inbox_for(imap_user), rec, dry_run=True)
    assert result.folders[0].would_fetch == 4 and rec.calls == 0
    assert result.as_json()["folders"][0]["would_fetch"] == 4


def test_from_now_skips_the_past_but_takes_new_mail(imap_user: ImapUser) -> None:
    imap_user.append("INBOX", message(1), datetime(2024, 5, 1, tzinfo=UTC))
    rec = Recorder()
    inbox = inbox_for(imap_user, **{"from": "now"})
    run(inbox, rec, today=datetime.now(UTC))
    assert rec.seen == [] and rec.checkpoint_of("ada", "INBOX").last_uid == 1  # type: ignore[union-attr]
    imap_user.append("INBOX", message(2), datetime(2024, 5, 1, tzinfo=UTC))
    run(inbox, rec, today=datetime.now(UTC))
    assert rec.ids() == ["m2@test.example"]


def test_uidvalidity_change_rescans_the_folder(imap_user: ImapUser) -> None:
    for n in range(3):
        imap_user.append("INBOX", message(n), datetime(2024, 5, 1, tzinfo=UTC))
    rec = Recorder()
    inbox = inbox_for(imap_user)
    run(inbox, rec)
    old = rec.checkpoint_of("ada", "INBOX")
    imap_user.server.doveadm(
        "mailbox", "update", "-u", imap_user.name, "--uid-validity", "12345", "INBOX"
    )
    run(inbox, rec)
    new = rec.checkpoint_of("ada", "INBOX")
    assert old is not None and new is not None and new.uidvalidity == 12345
    assert new.initial_started == old.initial_started
    assert rec.ids() == sorted([f"m{n}@test.example" for n in range(3)] * 2)


def test_uidvalidity_rescan_fetches_no_body_already_logged(imap_user: ImapUser) -> None:
    """A rescan skips the bodies logged from the folder before, and goes on skipping them
    after a lost connection resumes it; each skipped message counts once, as committed."""
    for n in range(6):
        imap_user.append("INBOX", message(n), datetime(2024, 5, 1, tzinfo=UTC))
    rec = Recorder()
    inbox = inbox_for(imap_user)
    asked: list[str] = []
    logged: set[str] = set()

    def known_keys(label: str, keys: set[str]) -> set[str]:
        asked.append(label)
        if len(asked) == 2:  # m0 is committed (UID 1): cut the rescan after it
            imap_user.server.doveadm("kick", imap_user.name)
        return keys & logged

    run(inbox, rec, known_keys=known_keys)
    assert asked == []  # a folder's first scan has nothing logged from it to skip
    imap_user.server.doveadm(
        "mailbox", "update", "-u", imap_user.name, "--uid-validity", "4242", "INBOX"
    )
    imap_user.append("INBOX", message(7), datetime(2024, 5, 2, tzinfo=UTC))
    logged.update(f"m{n}@test.example" for n in range(2, 6))  # as if m0, m1 never were
    first_pass = len(rec.seen)
    sleeps: list[float] = []
    result = sync_inbox(
        inbox, deliver=rec.deliver, checkpoint_of=rec.checkpoint_of, known_contacts=set,
        known_keys=known_keys, today=TODAY, limits=Limits(batch_count=1, meta_chunk=2),
        retry=RetryPolicy(attempts=3, base=0.01, cap=0.05, sleep=sleeps.append),
    )  # fmt: skip
    (folder,) = result.folders
    assert result.state == "ok" and sleeps, "the connection was cut and resumed"
    assert set(asked) == {"imap:ada/INBOX"}
    # m2-m5 were skipped, before the cut and after; only m0, m1 and the new m7 came over.
    again = [m for _, _, m in rec.seen[first_pass:]]
    assert again == ["m0@test.example", "m1@test.example", "m7@test.example"]
    assert (folder.logged, folder.duplicates) == (3, 4)
    cp = rec.checkpoint_of("ada", "INBOX")
    assert cp is not None and cp.uidvalidity == 4242 and cp.last_uid == 7 and cp.initial_done


_TAIL = b"\r\nFrom: a@x.example\r\nTo: b@y.example\r\nSubject: s\r\n\r\nbody\r\n"
AWKWARD_IDS = [
    b"Message-ID:\r\n <folded@x>" + _TAIL,
    b"Message-ID : <space-before-colon@x>" + _TAIL,
    b"message-id: <Lower@X.Example>" + _TAIL,
    b"Message-ID: garbage here\r\nMessage-ID: <second@x>" + _TAIL,
    b"garbage line\r\nMessage-ID: <bad-line-before@x>" + _TAIL,
    b"Subject: caf\xe9\r\nMessage-ID: <caf\xe9@x>" + _TAIL,
    b"Message-ID: <n\x00ul@x>" + _TAIL,
    b"Message-ID: no-angle@x" + _TAIL,
    b"\r\nMessage-ID: <leading-blank@x>" + _TAIL,
    b"X-A: 1\n\nMessage-ID: <lf-lf@x>" + _TAIL,
    b"X-Big: " + b"a" * 110_000 + b"\r\nMessage-ID: <huge@x>" + _TAIL,
    b"Message-ID: (c <comment@x>) <real@x>" + _TAIL,
]


def test_key_from_fetched_headers_never_names_another_message(imap_user: ImapUser) -> None:
    """A rescan skips a body when the key read from the server's HEADER.FIELDS answer is
    logged. That key must be the one parse gives the whole message, or none at all."""
    for raw in AWKWARD_IDS:
        imap_user.append("INBOX", raw, datetime(2024, 5, 1, tzinfo=UTC))
    session = connect("ada", inbox_for(imap_user).imap)
    try:
        session.examine("INBOX")
        uids = list(range(1, len(AWKWARD_IDS) + 1))
        headers = {uid: h for uid, _, _, h in session.fetch_meta(uids, headers=True)}
        bodies = {body.uid: body.raw for body in session.fetch_bodies(uids)}
    finally:
        session.close()
    for uid in uids:
        from_headers = header_message_key(headers[uid] or b"")
        try:
            key = parse(bodies[uid], received_at=TODAY).key
        except MessageError:
            continue  # refused by parse (a header over 100 KiB): skipped only if that key is
            # logged from the folder already, so it counts as a duplicate of that mail
        assert from_headers in (None, key), (uid, from_headers, key)


def test_sync_leaves_flags_unchanged(imap_user: ImapUser) -> None:
    imap_user.append("INBOX", message(1), datetime(2024, 5, 1, tzinfo=UTC))
    imap_user.append("INBOX", message(2), datetime(2024, 5, 1, tzinfo=UTC), flags=(b"\\Flagged",))
    run(inbox_for(imap_user), Recorder())
    client = imap_user.client()
    try:
        client.select_folder("INBOX", readonly=True)  # type: ignore[attr-defined]
        flags = client.get_flags([1, 2])  # type: ignore[attr-defined]
    finally:
        client.logout()  # type: ignore[attr-defined]
    assert b"\\Seen" not in flags[1] and b"\\Seen" not in flags[2]
    assert b"\\Flagged" in flags[2]


def test_connection_cut_mid_fetch_resumes_without_gap_or_duplicate(imap_user: ImapUser) -> None:
    """Connections cut while batches are in flight: every UID is handed over exactly once.
    With a budget of one retry the pass still ends ok: it counts cuts in a row, not per
    pass, as on a long sync over a flaky link."""
    for n in range(40):
        imap_user.append("INBOX", message(n), datetime(2024, 5, 1, tzinfo=UTC))
    rec = Recorder()
    kicked: list[int] = []

    def deliver(items: list, checkpoint: FolderCheckpoint) -> list[str]:
        out = rec.deliver(items, checkpoint)
        if rec.calls in (2, 7, 12):
            with contextlib.suppress(RuntimeError):  # nobody to kick: not reconnected yet
                imap_user.server.doveadm("kick", imap_user.name)
                kicked.append(rec.calls)
        return out

    result = sync_inbox(
        inbox_for(imap_user), deliver=deliver, checkpoint_of=rec.checkpoint_of,
        known_contacts=set, today=TODAY, limits=Limits(batch_count=2, queue_batches=1),
        retry=RetryPolicy(attempts=1, base=0.01, cap=0.05, sleep=lambda s: None),
    )  # fmt: skip
    assert result.state == "ok", result.error
    assert len(kicked) >= 2, kicked
    assert sorted(uid for _, uid, _ in rec.seen) == list(range(1, 41))


def test_message_expunged_between_search_and_fetch_is_skipped(imap_user: ImapUser) -> None:
    for n in range(1, 11):
        imap_user.append("INBOX", message(n), datetime(2024, 5, 1, tzinfo=UTC))
    rec = Recorder()

    def deliver(items: list, checkpoint: FolderCheckpoint) -> list[str]:
        if rec.calls == 0:  # SEARCH and metadata are done; UID 9's body is not fetched yet
            imap_user.doveadm("expunge", "mailbox", "INBOX", "uid", "9")
        return rec.deliver(items, checkpoint)

    result = sync_inbox(
        inbox_for(imap_user), deliver=deliver, checkpoint_of=rec.checkpoint_of,
        known_contacts=set, today=TODAY, limits=Limits(batch_count=2, queue_batches=1),
        retry=FAST_RETRY,
    )  # fmt: skip
    assert result.state == "ok" and result.error is None
    assert [uid for _, uid, _ in rec.seen] == [1, 2, 3, 4, 5, 6, 7, 8, 10]
    cp = rec.checkpoint_of("ada", "INBOX")
    assert cp is not None and cp.last_uid == 10 and cp.initial_done


def _message_file(user: ImapUser, n: int) -> Path:
    marker = f"Message-ID: <m{n}@test.example>".encode()
    (found,) = [
        p for p in user.maildir.glob("*/*") if p.parent.name in ("cur", "new")
        and marker in p.read_bytes()
    ]  # fmt: skip
    return found


def test_unfetchable_message_holds_the_checkpoint_and_is_reported(
    imap_user: ImapUser, tmp_path: Path
) -> None:
    for n in range(1, 6):
        imap_user.append("INBOX", message(n), datetime(2024, 5, 1, tzinfo=UTC))
    imap_user.append("Sent", message(100), datetime(2024, 5, 1, tzinfo=UTC))
    unreadable = _message_file(imap_user, 3)  # UID 3; Dovecot answers BYE when it fetches it
    mode = unreadable.stat().st_mode
    unreadable.chmod(0)
    conn = db.connect(tmp_path / "s.sqlite3")
    rec = Recorder()

    def deliver(items: list, checkpoint: FolderCheckpoint) -> list[str]:
        with db.transaction(conn):
            imap_service.save_checkpoint(conn, checkpoint)
        return rec.deliver(items, checkpoint)

    def once() -> Any:
        result = sync_inbox(
            inbox_for(imap_user, folders=["INBOX", "Sent"]), deliver=deliver,
            checkpoint_of=lambda i, f: imap_service.load_checkpoint(conn, i, f),
            known_contacts=set, today=TODAY, retry=FAST_RETRY,
        )  # fmt: skip
        with db.transaction(conn):
            syncstate.record_pass(conn, result)
        return result, syncstate.status_rows(conn)[0]["folders"]

    result, folders = once()
    assert result.state == "ok"  # one folder stalls; the inbox and its other folders go on
    assert "UID 3" in (result.folders[0].error or "")
    assert [(f, uid) for f, uid, _ in rec.seen] == [("INBOX", 1), ("INBOX", 2), ("Sent", 1)]
    assert [(f["name"], f["last_uid"], f["initial_done"]) for f in folders] == [
        ("INBOX", 2, False), ("Sent", 1, True),
    ]  # fmt: skip
    assert "UID 3" in folders[0]["last_error"]  # what `syncd status` shows
    again, _ = once()  # still unreadable: the same stop, nothing skipped, nothing twice
    assert "UID 3" in (again.folders[0].error or "") and len(rec.seen) == 3
    unreadable.chmod(mode)
    fixed, folders = once()
    assert fixed.error is None
    assert [uid for f, uid, _ in rec.seen if f == "INBOX"] == [1, 2, 3, 4, 5]
    assert folders[0]["last_uid"] == 5 and folders[0]["last_error"] is None


def test_auth_failure_marks_inbox_failed_without_retrying(imap_user: ImapUser) -> None:
    sleeps: list[float] = []
    inbox = inbox_for(imap_user, imap={"password": "wrong"})
    started = time.monotonic()
    result = sync_inbox(
        inbox, deliver=Recorder().deliver, checkpoint_of=lambda i, f: None,
        known_contacts=set, today=TODAY, retry=RetryPolicy(sleep=sleeps.append),
    )  # fmt: skip
    assert result.state == "auth_failed" and sleeps == []
    assert "wrong" not in (result.error or "") and imap_user.name in (result.error or "")
    assert time.monotonic() - started < 3
    # Dovecot logs the attempt count when the client disconnects.
    marker = f"user=<{imap_user.name}>"
    deadline = time.monotonic() + 3
    while marker not in imap_user.server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [ln for ln in imap_user.server.log().splitlines() if marker in ln]
    assert len(lines) == 1 and "auth failed, 1 attempts" in lines[0], lines


def test_unreachable_server_fails_after_bounded_retries(imap_user: ImapUser) -> None:
    from tests.integration.conftest import free_port

    sleeps: list[float] = []
    inbox = inbox_for(imap_user, imap={"port": free_port()})
    result = sync_inbox(
        inbox, deliver=Recorder().deliver, checkpoint_of=lambda i, f: None, known_contacts=set,
        today=TODAY, retry=RetryPolicy(attempts=3, base=1.0, cap=8.0, sleep=sleeps.append),
    )  # fmt: skip
    assert result.state == "failed" and "cannot connect" in (result.error or "")
    assert len(sleeps) == 3 and sleeps[0] <= sleeps[1] * 1.0 + 1 and max(sleeps) <= 8.0


def test_password_file_command_and_xoauth2(imap_user: ImapUser, tmp_path: Path) -> None:
    imap_user.append("INBOX", message(1), datetime(2024, 5, 1, tzinfo=UTC))
    secret = tmp_path / "pw"
    secret.write_text(imap_user.password + "\n")
    variants = [
        {"password": None, "password_file": str(secret)},
        {"password": None, "password_command": ["cat", str(secret)]},
        # Dovecot 2.3 checks an XOAUTH2 token against the passdb like a password.
        {"password": None, "oauth2_token_command": ["cat", str(secret)]},
    ]
    for imap in variants:
        rec = Recorder()
        result = run(inbox_for(imap_user, imap=imap), rec)
        assert result.state == "ok", (imap, result.error)
        assert rec.ids() == ["m1@test.example"]
    bad = run(inbox_for(imap_user, imap={"password": None, "password_command": ["false"]}), rec)
    assert bad.state == "failed" and "exited with status 1" in (bad.error or "")


def test_tls_and_starttls(imap_user: ImapUser, monkeypatch: pytest.MonkeyPatch) -> None:
    imap_user.append("INBOX", message(1), datetime(2024, 5, 1, tzinfo=UTC))
    server = imap_user.server
    untrusted = run(inbox_for(imap_user, imap={"security": "tls", "port": server.tls_port}),
                    Recorder())  # fmt: skip
    assert untrusted.state == "failed"  # self-signed: refused until trusted, not retried
    assert "certificate" in (untrusted.error or "")
    monkeypatch.setenv("SSL_CERT_FILE", str(server.cert))
    for imap in (
        {"security": "tls", "port": server.tls_port},
        {"security": "starttls", "port": server.port},
    ):
        rec = Recorder()
        result = run(inbox_for(imap_user, imap=imap), rec)
        assert result.state == "ok", (imap, result.error)
        assert rec.ids() == ["m1@test.example"]


def test_security_none_is_refused_off_loopback(imap_user: ImapUser) -> None:
    inbox = inbox_for(imap_user, imap={"host": "192.0.2.10"})
    with pytest.raises(InboxError, match="loopback"):
        connect("ada", inbox.imap)


def test_idle_wait_wakes_on_new_mail(imap_user: ImapUser) -> None:
    session = connect("ada", inbox_for(imap_user).imap)
    try:
        assert session.idle_wait(0.3) is False
        timer = threading.Timer(
            0.3, imap_user.append, ("INBOX", message(1), datetime(2024, 5, 1, tzinfo=UTC))
        )
        timer.start()
        started = time.monotonic()
        assert session.idle_wait(5) is True
        assert time.monotonic() - started < 3
        timer.join()
    finally:
        session.close()


def test_syncstate_checkpoint_commits_with_its_transaction(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "s.sqlite3")
    cp = FolderCheckpoint("ada", "Entwürfe", 7, 42, 99, True, TODAY)
    with db.transaction(conn):
        imap_service.save_checkpoint(conn, cp)
    assert imap_service.load_checkpoint(conn, "ada", "Entwürfe") == cp
    assert imap_service.load_checkpoint(conn, "ada", "INBOX") is None
    with pytest.raises(RuntimeError), db.transaction(conn):
        imap_service.save_checkpoint(conn, FolderCheckpoint("ada", "Entwürfe", 7, 50))
        raise RuntimeError("the mail write failed")
    assert imap_service.load_checkpoint(conn, "ada", "Entwürfe") == cp
    assert syncstate.record_inbox_state(conn, "ada", "failed", "timeout") == 1
    assert syncstate.record_inbox_state(conn, "ada", "auth_failed", "refused") == 2
    state = conn.execute("SELECT state, failures FROM sync_inboxes WHERE inbox = 'ada'").fetchone()
    assert tuple(state) == ("auth_failed", 2)
    with pytest.raises(ValueError):
        syncstate.record_inbox_state(conn, "ada", "bogus")
    rows = syncstate.status_rows(conn, ["ada", "bob"])
    assert rows[0]["state"] == "auth_failed" and rows[0]["last_error"] == "refused"
    assert rows[0]["folders"][0] | {"last_sync": None} == {
        "name": "Entwürfe", "uidvalidity": 7, "last_uid": 42, "logged": 0, "duplicates": 0,
        "skipped": 0, "quarantined": 0, "initial_done": True, "last_sync": None,
        "last_error": None, "configured": None, "resolved_by": None,
    }  # fmt: skip
    assert rows[1] == {"name": "bob", "state": "never_synced", "last_sync": None,
                       "last_error": None, "next_retry": None, "folders": []}  # fmt: skip


def test_syncstate_records_a_pass(imap_user: ImapUser, tmp_path: Path) -> None:
    imap_user.append("INBOX", message(1), datetime(2024, 5, 1, tzinfo=UTC))
    conn = db.connect(tmp_path / "s.sqlite3")

    def deliver(items: list, checkpoint: FolderCheckpoint) -> list[str]:
        with db.transaction(conn):
            imap_service.save_checkpoint(conn, checkpoint)
        return ["logged"] * len(items)

    result = sync_inbox(
        inbox_for(imap_user, folders=["INBOX", "Nope"]), deliver=deliver,
        checkpoint_of=lambda i, f: imap_service.load_checkpoint(conn, i, f),
        known_contacts=set, today=TODAY,
    )  # fmt: skip
    with db.transaction(conn):
        assert syncstate.record_pass(conn, result) == 0
    (row,) = syncstate.status_rows(conn)
    assert row["state"] == "ok" and "Nope" in row["last_error"] and row["last_sync"]
    assert [(f["name"], f["logged"], f["last_uid"]) for f in row["folders"]] == [("INBOX", 1, 1)]

    # A folder error stays until a pass ends that folder without one, new mail or not.
    with db.transaction(conn):
        syncstate.record_folder_error(conn, "ada", "INBOX", "UID 9 exists but cannot be fetched")
    assert syncstate.status_rows(conn)[0]["folders"][0]["last_error"]
    again = sync_inbox(
        inbox_for(imap_user), deliver=deliver,
        checkpoint_of=lambda i, f: imap_service.load_checkpoint(conn, i, f),
        known_contacts=set, today=TODAY,
    )  # fmt: skip
    with db.transaction(conn):
        syncstate.record_pass(conn, again)
    (row,) = syncstate.status_rows(conn)
    assert row["last_error"] is None and row["folders"][0]["last_error"] is None


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import datetime, timezone
    from syncd.config.model import Inbox
    from syncd.services import imap as imap_service
    from syncd.sources.imap.inbox import Limits, sync_inbox
    from syncd.store import db

    path, kill_at, where, inbox_json = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    conn = db.connect(path)
    conn.execute("CREATE TABLE IF NOT EXISTS test_mail (folder TEXT, uid INTEGER)")
    calls = 0

    def deliver(items, checkpoint):
        global calls
        calls += 1
        if calls == kill_at and where == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        conn.execute("BEGIN IMMEDIATE")
        for raw, prov in items:
            conn.execute("INSERT INTO test_mail VALUES (?, ?)", (prov.folder, prov.uid))
        imap_service.save_checkpoint(conn, checkpoint)
        if calls == kill_at and where == "mid":
            os.kill(os.getpid(), signal.SIGKILL)
        conn.execute("COMMIT")
        if calls == kill_at and where == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return ["logged"] * len(items)

    result = sync_inbox(
        Inbox.model_validate_json(inbox_json), deliver=deliver,
        checkpoint_of=lambda i, f: imap_service.load_checkpoint(conn, i, f),
        known_contacts=set, today=datetime(2024, 6, 1, tzinfo=timezone.utc),
        limits=Limits(batch_count=3),
    )
    print(result.state)
    """
)


@pytest.mark.parametrize(("kill_at", "where"), [(1, "before"), (2, "mid"), (3, "after")])
def test_sigkill_at_any_point_resumes_exactly_once(
    imap_user: ImapUser, tmp_path: Path, kill_at: int, where: str
) -> None:
    for n in range(8):
        imap_user.append("INBOX", message(n), datetime(2024, 5, 1, tzinfo=UTC))
        imap_user.append("Sent", message(100 + n), datetime(2024, 5, 1, tzinfo=UTC))
    store = tmp_path / "kill.sqlite3"
    inbox_json = inbox_for(imap_user, folders="all").model_dump_json(by_alias=True)
    inbox_json = inbox_json.replace('"**********"', f'"{imap_user.password}"')
    argv = [sys.executable, "-c", CHILD, str(store), str(kill_at), where, inbox_json]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env, cwd=ROOT)
    assert first.returncode == -signal.SIGKILL, first.stderr
    argv[4] = "0"  # no kill this time
    second = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env, cwd=ROOT)
    assert second.returncode == 0 and second.stdout.strip() == "ok", second.stderr
    conn = db.connect(store)
    rows = conn.execute("SELECT folder, uid, count(*) FROM test_mail GROUP BY 1, 2").fetchall()
    assert sorted((r[0], r[1]) for r in rows) == sorted(
        [("INBOX", u) for u in range(1, 9)] + [("Sent", u) for u in range(1, 9)]
    )
    assert all(r[2] == 1 for r in rows)


def store_config(inbox: Inbox, user: ImapUser, tmp_path: Path) -> Config:
    """A whole config around ``inbox``, with a store under ``tmp_path``."""
    return Config.from_mapping(
        {
            "store": {"path": str(tmp_path / "crm.sqlite3"),
                      "attachments_dir": str(tmp_path / "att")},
            "team": [{"name": "Ada", "email": "ada@example.com"}],
            "inboxes": [inbox.model_dump(by_alias=True, exclude_none=True)
                        | {"imap": inbox.imap.model_dump(exclude_none=True)
                           | {"password": user.password}}],
        }
    )  # fmt: skip


def test_a_pass_stopped_midway_counts_what_it_committed(
    imap_user: ImapUser, tmp_path: Path
) -> None:
    from syncd.pipeline import Pipeline
    from syncd.services.imap import Stopping, inbox_pass
    from syncd.services.storeworker import StoreJob

    yesterday = datetime.now(UTC) - timedelta(days=1)  # inbox_pass syncs as of now
    for n in range(3):
        imap_user.append("INBOX", message(n), yesterday)
        imap_user.append("Archive", message(10 + n), yesterday)
    inbox = inbox_for(imap_user, folders=["INBOX", "Archive"], create_contacts=True)
    config = store_config(inbox, imap_user, tmp_path)
    conn = db.connect(config.store.path)
    with Pipeline.from_config(config, conn, workers=0) as pipeline:
        # The daemon is asked to stop once INBOX has committed: Archive is not synced.
        logged = lambda: conn.execute("SELECT count(*) FROM emails").fetchone()[0]  # noqa: E731
        with pytest.raises(Stopping):
            inbox_pass(
                config.inboxes[0],
                lambda fn, *a: fn(StoreJob(pipeline.session, pipeline), *a),
                should_stop=lambda: logged() > 0,
            )
    (row,) = syncstate.status_rows(conn)
    assert [(f["name"], f["logged"]) for f in row["folders"]] == [("INBOX", 3)]


def test_end_to_end_one_engagement_per_message(imap_user: ImapUser, tmp_path: Path) -> None:
    pipeline_mod = pytest.importorskip("syncd.pipeline")
    when = datetime(2024, 5, 1, tzinfo=UTC)
    for n in range(3):
        imap_user.append("INBOX", message(n), when)
        imap_user.append("Archive", message(n), when)
    inbox = inbox_for(imap_user, folders="all", create_contacts=True)
    config = store_config(inbox, imap_user, tmp_path)
    conn = db.connect(config.store.path)
    with pipeline_mod.Pipeline.from_config(config, conn, workers=0) as pipeline:

        def deliver(items: list, checkpoint: FolderCheckpoint) -> list[Any]:
            return pipeline.ingest_batch(
                items, on_commit=lambda c: imap_service.save_checkpoint(c, checkpoint)
            )

        def once() -> Any:
            return sync_inbox(
                config.inboxes[0], deliver=deliver,
                checkpoint_of=lambda i, f: imap_service.load_checkpoint(conn, i, f),
                known_contacts=lambda: contacts.contact_emails(pipeline.session.conn),
                known_keys=lambda label, keys: engagements.sighted_keys(pipeline.session.conn, label, keys),
                today=TODAY,
            )  # fmt: skip

        first = once()
        assert first.state == "ok", first.error
        counts = {f.name: (f.logged, f.duplicates) for f in first.folders}
        assert counts == {"INBOX": (3, 0), "Archive": (0, 3)}
        imap_user.append("Archive", message(9), when)
        assert once().folders[1].logged == 1  # m9 logged from Archive only
        imap_user.append("INBOX", message(9), when)  # then also filed in INBOX, and
        imap_user.server.doveadm(  # INBOX's UIDVALIDITY changes before the next pass
            "mailbox", "update", "-u", imap_user.name, "--uid-validity", "777", "INBOX"
        )
        second = once()
        # m0-m2 were logged from INBOX: skipped. m9 was not, so its body is fetched and
        # the copy adds where it was seen.
        assert {f.name: (f.logged, f.duplicates) for f in second.folders} == {
            "INBOX": (0, 4),
            "Archive": (0, 0),
        }
    assert conn.execute("SELECT count(*) FROM engagements").fetchone()[0] == 4
    sightings = conn.execute(
        "SELECT e.message_id, group_concat(s.label, ' ') FROM sightings s"
        " JOIN emails e ON e.engagement_id = s.engagement_id GROUP BY 1"
    ).fetchall()
    both = "imap:ada/Archive imap:ada/INBOX"
    assert sorted((m, " ".join(sorted(set(labels.split())))) for m, labels in sightings) == [
        (f"m{n}@test.example", both) for n in (0, 1, 2, 9)
    ]
