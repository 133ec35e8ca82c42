"""The submission relay against real parts: smtplib (STARTTLS, AUTH) against the real
listener, a real aiosmtpd sink on loopback as the smarthost, a real store and the BCC
drain through the pipeline; and the real ``syncd run`` killed with SIGKILL."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import select
import signal
import smtplib
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from syncd.crm.team import InboxRule, Team
from syncd.outbound.relay import Relay, RelaySettings, Submitter
from syncd.outbound.tokens import Signer, load_keys, new_key_line
from syncd.services.bcc import drain_spool
from syncd.services.relayer import Relayer, TrackingSetup
from syncd.sources.bcc import PasswordFiles
from syncd.sources.smtpserver import ServerOptions, ThreadedEndpoint, tls_context
from syncd.sources.submission import Forward, Forwarded, Outgoing, SubmissionHandler, threaded
from syncd.store import contacts, db
from syncd.store.spool import SpoolWriter
from tests.integration.conftest import Notify, free_port
from tests.integration.test_bcc import Sink

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = "https://t.example.com"
ADA_PW, BOB_PW = "ada-secret-pw", "bob-secret-pw"
PDF = bytes(range(256)) * 40


def html_mail(
    to: str = "Client <client@customer.example>",
    sender: str = "Ada <ada@example.com>",
    mid: str = "offer-1",
    extra: str = "",
) -> bytes:
    attachment = base64.encodebytes(PDF).replace(b"\n", b"\r\n")
    return (
        (
            f"From: {sender}\r\nTo: {to}\r\n{extra}Subject: Offer\r\n"
            f"Message-ID: <{mid}@example.com>\r\nDate: Mon, 3 Nov 2025 10:00:00 +0000\r\n"
            'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="BB"\r\n\r\n'
            "--BB\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            '<html><body><p>See <a href="https://shop.example/p?a=1&amp;b=2">the offer</a>'
            ' and <A HREF="mailto:x@y.example">mail</A></p></body></html>\r\n'
            '--BB\r\nContent-Type: application/pdf; name="o.pdf"\r\n'
            "Content-Transfer-Encoding: base64\r\n"
            'Content-Disposition: attachment; filename="o.pdf"\r\n\r\n'
        ).encode()
        + attachment
        + b"--BB--\r\n"
    )


@dataclass
class Harness:
    path: Path
    sink: Sink
    endpoint: ThreadedEndpoint
    writer: SpoolWriter
    signer: Signer | None
    cert: Path | None
    team: Team

    def client(self, login: str | None = "ada@example.com", password: str = ADA_PW) -> Any:
        client = smtplib.SMTP("127.0.0.1", self.endpoint.port, local_hostname="c.test", timeout=10)
        client.ehlo()
        if self.cert is not None:
            client.starttls(context=ssl.create_default_context(cafile=str(self.cert)))
            client.ehlo()
        if login is not None:
            client.login(login, password)
        return client

    def db(self) -> sqlite3.Connection:
        return db.connect(self.path)

    def drain(self, **settings: Any) -> dict[str, int]:
        from syncd.config.model import Config
        from syncd.pipeline import Pipeline

        config = Config.from_mapping(
            {
                "store": {"path": str(self.path), "attachments_dir": str(self.path.parent / "a")},
                "team": [
                    {"name": "Ada", "email": "ada@example.com", "aliases": ["a.l@example.com"]},
                    {"name": "Bob", "email": "bob@example.com"},
                ],
                **settings,
            }
        )
        pipeline = Pipeline.from_config(config, db.connect(self.path), workers=0)
        statuses: dict[str, int] = {}
        try:
            while (result := drain_spool(pipeline.session.conn, pipeline.ingest_batch)).taken:
                for key, value in result.statuses.items():
                    statuses[key] = statuses.get(key, 0) + value
        finally:
            pipeline.close()
        return statuses


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def build(
        *,
        replies: list[str] | None = None,
        tracking: bool = True,
        legal_basis: bool = False,
        cert: tuple[Path, Path] | None = None,
    ) -> Harness:
        path = tmp_path / "store.sqlite3"
        db.connect(path).close()
        team = Team.build(
            [("ada@example.com", ["a.l@example.com"]), ("bob@example.com", [])],
            [InboxRule("sales", "sales@example.com", "team")],
            ["log@crm.example.com"],
        )
        (tmp_path / "ada.pw").write_text(ADA_PW)
        (tmp_path / "bob.pw").write_text(BOB_PW)
        sink = Sink(replies or [])
        writer = SpoolWriter(path)
        setup = None
        if tracking:
            setup = TrackingSetup(load_keys(new_key_line("k1")), PUBLIC, "bottom")
        relayer = Relayer(
            team=team,
            submitter=Submitter(Relay(RelaySettings("127.0.0.1", sink.port, "none"))),
            record=writer,
            store_path=path,
            setup=setup,
            require_legal_basis=legal_basis,
        )
        files = {"ada@example.com": tmp_path / "ada.pw", "bob@example.com": tmp_path / "bob.pw"}
        handler = SubmissionHandler(
            team=team,
            forward=in_thread(relayer.forward),
            credentials=PasswordFiles(files, team),
            on_event=writer.count,
            require_tls=cert is not None,
        )
        tls = tls_context(*cert) if cert else None
        options = ServerOptions(port=0, hostname="relay.test", tls=tls, require_tls=tls is not None)
        endpoint = threaded(handler, options).start()
        harness = Harness(
            path, sink, endpoint, writer, setup.signer if setup else None,
            cert[0] if cert else None, team,
        )  # fmt: skip
        made.append(harness)
        return harness

    yield build
    for harness in made:
        harness.endpoint.stop()
        harness.writer.close()
        harness.sink.close()


def in_thread(forward: Callable[[Outgoing], Forwarded]) -> Forward:
    """The Relayer in this process, in a thread (the daemon runs it in its worker)."""

    async def run(message: Outgoing) -> Forwarded:
        return await asyncio.to_thread(forward, message)

    return run


def tracked_rows(h: Harness) -> list[sqlite3.Row]:
    with h.db() as conn:
        return conn.execute("SELECT * FROM tracked_messages").fetchall()


def spool_rows(h: Harness) -> list[sqlite3.Row]:
    with h.db() as conn:
        return conn.execute("SELECT source, raw FROM spool").fetchall()


# Relaying with tracking ------------------------------------------------------------------


def test_starttls_auth_rewrites_relays_and_logs_the_original(
    make: Callable[..., Harness], certificate: tuple[Path, Path]
) -> None:
    h = make(cert=certificate)
    raw = html_mail()
    client = h.client()
    refused = client.sendmail("ada@example.com", ["client@customer.example"], raw)
    assert refused == {}
    client.quit()
    [(mail_from, rcpts, relayed)] = h.sink.received
    assert (mail_from, rcpts) == ("ada@example.com", ["client@customer.example"])
    # The pixel and a signed link went out; the attachment went out byte-identical.
    assert f"{PUBLIC}/o/".encode() in relayed and b".gif" in relayed
    assert b"https://shop.example/p" not in relayed and b'HREF="mailto:x@y.example"' in relayed
    start = raw.index(b"--BB\r\nContent-Type: application/pdf")
    assert relayed.endswith(raw[start:])
    link = relayed.split(f"{PUBLIC}/c/".encode(), 1)[1].split(b'"', 1)[0].decode()
    assert h.signer is not None
    verified = h.signer.verify(link)
    assert verified is not None and verified.link_index == 0
    # The ORIGINAL is spooled as relay mail, with its tracked message, in one commit.
    [(source, spooled)] = [(r[0], bytes(r[1])) for r in spool_rows(h)]
    assert source == "relay" and spooled == raw
    [row] = tracked_rows(h)
    assert row["id"] == verified.message_id and row["anonymous"] == 0
    assert row["sender"] == "ada@example.com" and row["engagement_id"] is None
    with h.db() as conn:
        assert conn.execute("SELECT url FROM tracked_links").fetchone()[0] == (
            "https://shop.example/p?a=1&b=2"
        )
        assert conn.execute("SELECT ip FROM submitter_ips").fetchone()[0] == "127.0.0.0/24"
    # The drain logs it once, as relay mail, and ties the tracking to it.
    assert h.drain() == {"logged": 1}
    from syncd.store import queries

    with h.db() as conn:
        [entry] = queries.timeline(conn, "client@customer.example") or []
        assert entry["sources"] == ["relay"]
        status = conn.execute("SELECT status FROM engagements").fetchone()[0]
        assert status == "sent"
    [row] = tracked_rows(h)
    assert row["engagement_id"] is not None and row["contact_id"] is not None


def test_refusals_before_anything_is_relayed(
    make: Callable[..., Harness], certificate: tuple[Path, Path]
) -> None:
    h = make(cert=certificate)
    # Before STARTTLS: nothing but EHLO/STARTTLS (require_tls).
    plain = smtplib.SMTP("127.0.0.1", h.endpoint.port, local_hostname="c.test", timeout=10)
    plain.ehlo()
    assert not plain.has_extn("auth")
    assert plain.mail("ada@example.com")[0] == 530
    plain.close()
    # After STARTTLS, without AUTH: MAIL and RCPT get 530.
    client = h.client(login=None)
    assert client.has_extn("auth")
    assert client.mail("ada@example.com")[0] == 530
    assert client.rcpt("client@customer.example")[0] == 530
    # A wrong password: 535.
    with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
        client.login("ada@example.com", "wrong")
    assert failed.value.smtp_code == 535
    client.close()
    # Logged in as Ada: Bob's envelope sender, then Bob's header From.
    client = h.client()
    code, text = client.mail("bob@example.com")
    assert code == 550 and b"5.7.1" in text and b"ada@example.com" in text
    assert client.mail("sales@example.com")[0] == 250  # a team inbox is fine
    client.rset()
    assert client.mail("a.l@example.com")[0] == 250  # and an alias
    client.rcpt("client@customer.example")
    code, text = client.data(html_mail(sender="Bob <bob@example.com>"))
    assert code == 550 and b"From header is bob@example.com" in text
    client.mail("ada@example.com")
    client.rcpt("client@customer.example")
    code, _ = client.data(b"From: ada@example.com\r\nFrom: bob@example.com\r\n\r\nx\r\n")
    assert code == 550
    client.quit()
    assert h.sink.received == [] and spool_rows(h) == [] and tracked_rows(h) == []


def test_rcpt_before_auth_is_530_on_loopback(make: Callable[..., Harness]) -> None:
    h = make()
    client = h.client(login=None)
    assert client.has_extn("auth")  # loopback: AUTH without TLS
    assert client.rcpt("client@customer.example")[0] == 530
    assert client.docmd("DATA")[0] == 530
    client.close()


@pytest.mark.parametrize(
    "reply", ["451 4.3.0 Greylisted, try again in 5 minutes", "550 5.7.1 Rejected by policy"]
)
def test_smarthost_refusal_is_passed_back_and_nothing_logged(
    make: Callable[..., Harness], reply: str
) -> None:
    h = make(replies=[reply])
    client = h.client()
    client.mail("ada@example.com")
    client.rcpt("client@customer.example")
    code, text = client.data(html_mail())
    assert f"{code} {text.decode()}" == reply
    client.quit()
    assert spool_rows(h) == [] and tracked_rows(h) == []
    assert h.drain() == {}


def test_only_crlf_dot_crlf_ends_data(make: Callable[..., Harness]) -> None:
    h = make()
    sock = socket.create_connection(("127.0.0.1", h.endpoint.port), timeout=5)
    reader = sock.makefile("rb")

    def say(line: bytes) -> bytes:
        sock.sendall(line)
        reply = reader.readline()
        while reply[3:4] == b"-":
            reply = reader.readline()
        return reply

    reader.readline()
    say(b"EHLO c.test\r\n")
    token = base64.b64encode(b"\0ada@example.com\0" + ADA_PW.encode())
    assert say(b"AUTH PLAIN " + token + b"\r\n").startswith(b"235")
    say(b"MAIL FROM:<ada@example.com>\r\n")
    say(b"RCPT TO:<client@customer.example>\r\n")
    assert say(b"DATA\r\n").startswith(b"354")
    sock.sendall(
        b"From: ada@example.com\r\nTo: client@customer.example\r\nSubject: dots\r\n\r\n"
        b"one\n.\ntwo\r\n"
    )
    readable, _, _ = select.select([sock], [], [], 0.5)
    assert readable == []  # a bare LF-dot-LF did not end it
    sock.sendall(b"three\r\n.\r\n")
    assert reader.readline().startswith(b"250")
    sock.close()
    [(_f, _r, relayed)] = h.sink.received
    assert b"two\r\nthree" in relayed


# Who is tracked --------------------------------------------------------------------------


def test_one_contact_gets_the_hits_several_recipients_are_anonymous(
    make: Callable[..., Harness],
) -> None:
    h = make()
    with h.db() as conn, db.transaction(conn):
        known = contacts.create_contact(conn, "known@customer.example", "Kim", None)
    client = h.client()
    client.sendmail("ada@example.com", ["known@customer.example"],
                    html_mail(to="known@customer.example", mid="one"))  # fmt: skip
    client.sendmail(
        "ada@example.com",
        ["known@customer.example", "other@else.example", "bob@example.com"],
        html_mail(to="known@customer.example, other@else.example", mid="two"),
    )
    client.quit()
    rows = {r["message_key"]: r for r in tracked_rows(h)}
    assert rows["one@example.com"]["contact_id"] == known
    assert rows["one@example.com"]["anonymous"] == 0
    assert rows["two@example.com"]["contact_id"] is None
    assert rows["two@example.com"]["anonymous"] == 1


def test_legal_basis_gates_tracking(make: Callable[..., Harness]) -> None:
    h = make(legal_basis=True)
    with h.db() as conn, db.transaction(conn):
        contacts.create_contact(conn, "basis@customer.example", "B", None, legal_basis="consent")
        contacts.create_contact(conn, "nobasis@customer.example", "N", None)
    cases = {
        "gated-stranger": "stranger@customer.example",
        "gated-nobasis": "nobasis@customer.example",
        "tracked": "basis@customer.example",
    }
    client = h.client()
    for mid, to in cases.items():
        client.sendmail("ada@example.com", [to], html_mail(to=to, mid=mid))
    client.quit()
    by_mid = {mid: raw for (_f, _t, raw), mid in zip(h.sink.received, cases, strict=True)}
    assert by_mid["gated-stranger"] == html_mail(to=cases["gated-stranger"], mid="gated-stranger")
    assert by_mid["gated-nobasis"] == html_mail(to=cases["gated-nobasis"], mid="gated-nobasis")
    assert f"{PUBLIC}/o/".encode() in by_mid["tracked"]
    assert [r["message_key"] for r in tracked_rows(h)] == ["tracked@example.com"]
    # The pipeline's own rules log only mail to contacts with a legal basis.
    h.drain(privacy={"require_legal_basis": True})
    with h.db() as conn:
        statuses = [r[0] for r in conn.execute("SELECT status FROM engagements ORDER BY id")]
    assert statuses == ["sent"]


def test_dkim_signed_mail_is_relayed_byte_identical_and_untracked(
    make: Callable[..., Harness],
) -> None:
    h = make()
    raw = html_mail(extra="DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s; b=abc\r\n")
    client = h.client()
    client.sendmail("ada@example.com", ["client@customer.example"], raw)
    client.quit()
    assert h.sink.received[0][2] == raw
    assert tracked_rows(h) == []
    assert h.drain() == {"logged": 1}
    with h.db() as conn:
        assert conn.execute("SELECT status FROM engagements").fetchone()[0] is None


def test_tracking_disabled_still_relays_and_logs(make: Callable[..., Harness]) -> None:
    h = make(tracking=False)
    raw = html_mail()
    client = h.client()
    client.sendmail("ada@example.com", ["client@customer.example"], raw)
    client.quit()
    assert h.sink.received[0][2] == raw
    assert h.drain() == {"logged": 1} and tracked_rows(h) == []


def test_8bit_mail_is_relayed_with_body_8bitmime(make: Callable[..., Harness]) -> None:
    h = make(tracking=False)
    client = h.client()
    client.sendmail("ada@example.com", ["client@customer.example"], html_mail())
    eight_bit = html_mail(mid="offer-2").replace(b"</p>", "<p>Grüße</p>".encode(), 1)
    client.sendmail("ada@example.com", ["client@customer.example"], eight_bit)
    client.quit()
    assert h.sink.received[1][2] == eight_bit
    assert [[o.upper() for o in options] for options in h.sink.mail_options] == [
        [],
        ["BODY=8BITMIME"],
    ]


def test_a_bcc_to_a_tagged_logging_address_picks_the_relayed_copys_records(
    make: Callable[..., Harness],
) -> None:
    h = make(tracking=False)
    client = h.client()
    rcpts = ["client@customer.example", "log+deal-1+nocreate@crm.example.com"]
    assert client.sendmail("ada@example.com", rcpts, html_mail()) == {}
    client.quit()
    assert h.sink.received[0][1] == rcpts  # relayed to every recipient, as sent
    with h.db() as conn:
        assert [tuple(r) for r in conn.execute("SELECT source, tag FROM spool")] == [
            ("relay", "deal-1+nocreate")
        ]


def test_a_resend_is_one_engagement_and_one_tracked_message(
    make: Callable[..., Harness],
) -> None:
    h = make()
    client = h.client()
    for _ in range(2):  # the client resends: it never saw the first 250
        client.sendmail("ada@example.com", ["client@customer.example"], html_mail())
    client.quit()
    first, second = (r[2] for r in h.sink.received)
    assert first == second  # the same tokens both times
    assert len(tracked_rows(h)) == 1
    assert h.drain() == {"logged": 1, "duplicate": 1}
    with h.db() as conn:
        assert conn.execute("SELECT count(*) FROM engagements").fetchone()[0] == 1
        assert conn.execute("SELECT status FROM engagements").fetchone()[0] == "sent"
    [row] = tracked_rows(h)
    assert row["engagement_id"] is not None


# The real daemon, killed right after a 250 -------------------------------------------------


def daemon_config(tmp_path: Path, port: int, sink_port: int) -> str:
    (tmp_path / "ada.pw").write_text(ADA_PW)
    (tmp_path / "ada.pw").chmod(0o600)
    secret = tmp_path / "tracking.key"
    secret.write_text(new_key_line("k1") + "\n")
    secret.chmod(0o600)
    return json.dumps(
        {
            "team": [{"name": "Ada", "email": "ada@example.com",
                      "smtp_password_file": str(tmp_path / "ada.pw")}],
            "relay": {"host": "127.0.0.1", "port": sink_port, "security": "none"},
            "submission": {"listen": f"127.0.0.1:{port}"},
            # Its own tracking port: another daemon test may hold the default meanwhile.
            "tracking": {"enabled": True, "public_url": PUBLIC, "secret_file": str(secret),
                         "listen": f"127.0.0.1:{free_port()}"},
        }
    )  # fmt: skip


def start_daemon(tmp_path: Path, notify: Notify, config: str) -> subprocess.Popen[str]:
    path = tmp_path / "syncd.yaml"
    path.write_text(config)
    return subprocess.Popen(
        [sys.executable, "-m", "syncd", "--config", str(path), "run"],
        cwd=tmp_path,
        env={**os.environ, "NOTIFY_SOCKET": str(notify.path), "PYTHONPATH": str(ROOT)},
        stderr=subprocess.PIPE,
        text=True,
    )


def timeline(tmp_path: Path, email: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "syncd", "--config", str(tmp_path / "syncd.yaml"),
         "timeline", email, "--json"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    return list(json.loads(out.stdout))


def test_sigkill_right_after_the_250_logs_it_once(tmp_path: Path, notify: Notify) -> None:
    sink = Sink([])
    port = free_port()
    config = daemon_config(tmp_path, port, sink.port)
    proc = start_daemon(tmp_path, notify, config)
    try:
        notify.wait_for("READY=1")
        client = smtplib.SMTP("127.0.0.1", port, timeout=10)
        client.login("ada@example.com", ADA_PW)
        client.sendmail("ada@example.com", ["client@customer.example"], html_mail())
        proc.send_signal(signal.SIGKILL)  # right after the 250
        proc.wait(timeout=10)
        client.close()
        assert len(sink.received) == 1
        proc = start_daemon(tmp_path, notify, config)
        notify.wait_for("READY=1")
        deadline = time.monotonic() + 15
        entries: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            with sqlite3.connect(tmp_path / "var" / "syncd.sqlite3") as conn:
                if conn.execute("SELECT count(*) FROM spool").fetchone()[0] == 0:
                    break
            time.sleep(0.2)
        entries = timeline(tmp_path, "client@customer.example")
        assert [e["message_id"] for e in entries] == ["offer-1@example.com"]
        assert entries[0]["sources"] == ["relay"]
        with sqlite3.connect(tmp_path / "var" / "syncd.sqlite3") as conn:
            assert conn.execute("SELECT status FROM engagements").fetchall() == [("sent",)]
            assert (
                conn.execute(
                    "SELECT count(*) FROM tracked_messages WHERE engagement_id IS NOT NULL"
                ).fetchone()[0]
                == 1
            )
            counters = dict(conn.execute("SELECT name, value FROM bcc_counters").fetchall())
        assert counters.get("submission.relayed") == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=25) == 0
    finally:
        proc.kill()
        _, stderr = proc.communicate()
        sink.close()
    assert ADA_PW not in stderr
