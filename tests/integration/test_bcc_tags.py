"""Picking the records for one email with a tag on the BCC address, end to end: mail sent
with smtplib to the real endpoint of ``syncd run``, records made and read with the real
CLI (``python -m syncd`` in a subprocess), what the user sees asserted from ``timeline
--json``, ``deals show --json`` and friends. Also: the tag waits in the spool across a
restart, ``bcc.create_contacts: false``, and RCPT refusing every form that is not a
logging address's."""

from __future__ import annotations

import smtplib
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from syncd.crm.team import Team
from syncd.sources.bcc import BccHandler
from syncd.sources.senders import SenderPolicy
from syncd.sources.smtpserver import ServerOptions, ThreadedEndpoint
from syncd.store.spool import SpoolWriter
from tests.integration.conftest import Daemon, Notify, as_json, free_port, syncd, syncd_run

ADA = "ada@example.com"
LOG = "log@crm.example.com"


def write_config(tmp: Path, port: int, bcc_extra: str = "") -> Path:
    config = tmp / "syncd.yaml"
    config.write_text(
        f"store: {{path: {tmp / 'var' / 'syncd.sqlite3'}, attachments_dir: {tmp / 'var' / 'att'}}}\n"
        f"team: [{{name: Ada, email: {ADA}}}]\n"
        f"bcc: {{listen: '127.0.0.1:{port}', addresses: [{LOG}], verify_sender: none{bcc_extra}}}\n",
        encoding="utf-8",
    )
    return config


@pytest.fixture
def daemon(notify: Notify) -> Iterator[Callable[[Path], Daemon]]:
    """Start ``syncd run`` on a config (call with the config path); stopped at the end."""
    with ExitStack() as running:
        yield lambda config: running.enter_context(syncd_run(config, notify))


def mail(mid: str, to: str, subject: str = "") -> bytes:
    return (
        f"From: Ada <{ADA}>\r\nTo: {to}\r\nSubject: {subject or mid}\r\n"
        f"Message-ID: <{mid}@example.com>\r\nDate: Mon, 3 Nov 2025 10:00:00 +0000\r\n"
        "\r\nHello\r\n"
    ).encode()


def send(port: int, raw: bytes, *recipients: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        refused = smtp.sendmail(ADA, list(recipients) or [LOG], raw)
    assert refused == {}


def settled(config: Path, *mids: str) -> None:
    """Wait until the daemon has drained: each message logged or quarantined."""
    store = config.parent / "var" / "syncd.sqlite3"
    wanted = {f"<{m}@example.com>".encode() for m in mids}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
        try:
            logged = {f"<{r[0]}>".encode() for r in conn.execute("SELECT message_id FROM emails")}
            held = {bytes(r[0]) for r in conn.execute("SELECT raw FROM quarantine")}
            spooled = conn.execute("SELECT count(*) FROM spool").fetchone()[0]
        finally:
            conn.close()
        if not spooled and all(w in logged or any(w in h for h in held) for w in wanted):
            return
        time.sleep(0.1)
    raise AssertionError(f"not drained in time: {mids}")


def item(config: Path, contact: str, mid: str) -> dict[str, Any]:
    return next(
        i for i in as_json(config, "timeline", contact) if i["message_id"] == f"{mid}@example.com"
    )


def on(items: list[dict[str, Any]]) -> list[str]:
    return sorted(i["message_id"].split("@")[0] for i in items)


def test_tags_pick_the_records_of_one_email(tmp_path: Path, daemon: Any) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    daemon(config)
    send(port, mail("hello", "Carol <carol@acme.com>"))
    settled(config, "hello")
    assert (
        syncd(config, "deals", "create", "Renewal", "--contact", "carol@acme.com").stdout == "1\n"
    )
    assert syncd(config, "deals", "create", "Upsell", "--contact", "carol@acme.com").stdout == "2\n"
    assert (
        syncd(config, "tickets", "create", "Broken", "--contact", "carol@acme.com").stdout == "1\n"
    )

    send(port, mail("auto", "carol@acme.com"))
    send(port, mail("deal1", "carol@acme.com"), "log+deal-1@crm.example.com")
    send(port, mail("both", "carol@acme.com"), "Log+Deal-2+Ticket-1@CRM.example.com")
    send(port, mail("two-rcpts", "carol@acme.com"), "log+deal-1@crm.example.com",
         "log+ticket-1@crm.example.com")  # fmt: skip
    send(port, mail("ghost", "carol@acme.com"), "log+deal-99@crm.example.com")
    send(port, mail("nocreate", "carol@acme.com, Neil <neil@new.example>"),
         "log+nocreate@crm.example.com")  # fmt: skip
    send(port, mail("stranger", "Sam <sam@other.example>"), "log+deal-2+nocreate@crm.example.com")
    send(port, mail("lost", "Lou <lou@other.example>"), "log+deal-99+nocreate@crm.example.com")
    settled(config, "auto", "deal1", "both", "two-rcpts", "ghost", "nocreate", "stranger", "lost")

    def records(mid: str) -> tuple[list[int], list[int]]:
        found = item(config, "carol@acme.com", mid)["associations"]
        return found["deals"], found["tickets"]

    assert records("auto") == ([1, 2], [1])  # no tag: the most recent open ones
    assert records("deal1") == ([1], [])  # exactly those records
    assert records("both") == ([2], [1])
    assert records("two-rcpts") == ([1], [1])  # several tagged recipients add up
    assert records("ghost") == ([], [])  # a deal that does not exist: logged without it
    assert item(config, "carol@acme.com", "ghost")["associations"]["companies"] == ["acme.com"]
    # nocreate: Neil stays unknown, Carol still gets the mail (and her open records).
    assert records("nocreate") == ([1, 2], [1])
    contacts = [c["email"] for c in as_json(config, "contacts", "list")]
    assert contacts == ["carol@acme.com"]
    # A picked deal keeps mail that has no contact to go on.
    deal2 = as_json(config, "deals", "show", "2")
    assert on(deal2["timeline"]) == ["auto", "both", "nocreate", "stranger"]
    stranger = next(i for i in deal2["timeline"] if i["message_id"].startswith("stranger"))
    assert stranger["associations"] == {
        "contacts": [], "companies": [], "deals": [2], "tickets": [],
    }  # fmt: skip
    assert stranger["sources"] == ["bcc"]
    assert on(as_json(config, "deals", "show", "1")["timeline"]) == [
        "auto", "deal1", "nocreate", "two-rcpts",
    ]  # fmt: skip
    assert on(as_json(config, "tickets", "show", "1")["timeline"]) == [
        "auto", "both", "nocreate", "two-rcpts",
    ]  # fmt: skip
    assert on(as_json(config, "companies", "show", "acme.com")["timeline"]) == [
        "auto", "both", "deal1", "ghost", "hello", "nocreate", "two-rcpts",
    ]  # fmt: skip
    # Nothing to put it on at all: kept in the quarantine with the reason and its tag.
    (held,) = as_json(config, "quarantine", "list")
    assert held["reason"] == (
        "the BCC tag names no deal or ticket that exists, and no participant is a contact "
        "(deal-99+nocreate)"
    )
    # ... and its tag with it: a retry judges it by the same picks (without them it would
    # be skipped, and leave the quarantine unlogged).
    retried = syncd(config, "quarantine", "retry")
    assert retried.returncode == 1 and "the BCC tag names no deal" in retried.stdout
    assert [q["reason"] for q in as_json(config, "quarantine", "list")] == [held["reason"]]

    # The same message again from another source (an import of the Sent folder, say)
    # adds where it was seen, and no automatic deals or tickets.
    sent = tmp_path / "sent.eml"
    sent.write_bytes(mail("deal1", "carol@acme.com"))
    assert as_json(config, "import", str(sent), "--owner", ADA)["duplicates"] == 1
    again = item(config, "carol@acme.com", "deal1")
    assert (again["associations"]["deals"], again["associations"]["tickets"]) == ([1], [])
    assert again["sources"] == ["bcc", "import"]


@pytest.mark.parametrize(
    ("recipient", "reply"),
    [
        ("other+deal-1@crm.example.com", b"5.7.1 Relaying denied"),
        ("log+deal-1@other.example", b"5.7.1 Relaying denied"),
        ("log+deal-1@crm.example.com.evil.example", b"5.7.1 Relaying denied"),
        ("log+@crm.example.com", b"5.1.1 Unknown tag on the logging address"),
        ("log+deal-x@crm.example.com", b"5.1.1 Unknown tag on the logging address"),
        ("log+company-3@crm.example.com", b"5.1.1 Unknown tag on the logging address"),
    ],
)
def test_rcpt_refuses_all_but_a_logging_address_and_its_tags(
    tmp_path: Path, recipient: str, reply: bytes
) -> None:
    """The endpoint as the daemon wires it, without the daemon: the refusal, and nothing
    spooled."""
    writer = SpoolWriter(tmp_path / "spool.sqlite3")
    handler = BccHandler(
        addresses=[LOG],
        policy=SenderPolicy("none", Team.build([(ADA, [])], (), [LOG])),
        spool=writer,
    )
    endpoint = ThreadedEndpoint(handler, ServerOptions(port=0, hostname="mx.test")).start()
    try:
        with smtplib.SMTP("127.0.0.1", endpoint.port, timeout=10) as smtp:
            smtp.ehlo()
            smtp.mail(ADA)
            code, text = smtp.rcpt(recipient)
            assert (code, text[: len(reply)]) == (550, reply)
            assert smtp.rcpt("log+deal-1@crm.example.com")[0] == 250  # the session goes on
    finally:
        endpoint.stop()
    writer.close()
    conn = sqlite3.connect(tmp_path / "spool.sqlite3")
    assert conn.execute("SELECT count(*) FROM spool").fetchone()[0] == 0
    conn.close()


def test_a_tagged_mail_waiting_in_the_spool_keeps_its_records(tmp_path: Path, daemon: Any) -> None:
    """Accepted (250) by an endpoint that stops before draining, logged by the next start
    of ``syncd run``; with ``bcc.create_contacts: false``, the unknown stay unknown."""
    port = free_port()
    config = write_config(tmp_path, port, ", create_contacts: false")
    people = tmp_path / "people.csv"
    people.write_text("email,first_name\ncarol@acme.com,Carol\n", encoding="utf-8")
    assert syncd(config, "contacts", "import", str(people)).returncode == 0
    assert (
        syncd(config, "deals", "create", "Renewal", "--contact", "carol@acme.com").stdout == "1\n"
    )
    assert syncd(config, "deals", "create", "Upsell", "--contact", "carol@acme.com").stdout == "2\n"

    # The endpoint alone (no drain), on the daemon's store: what a crash after 250 leaves.
    store = tmp_path / "var" / "syncd.sqlite3"
    writer = SpoolWriter(store)
    handler = BccHandler(
        addresses=[LOG],
        policy=SenderPolicy("none", Team.build([(ADA, [])], (), [LOG])),
        spool=writer,
    )
    with ThreadedEndpoint(handler, ServerOptions(port=0, hostname="mx.test")) as endpoint:
        send(endpoint.port, mail("waited", "carol@acme.com, Neil <neil@new.example>"),
             "log+deal-1@crm.example.com")  # fmt: skip
        send(endpoint.port, mail("plain", "carol@acme.com, Nora <nora@new.example>"))
    writer.close()
    conn = sqlite3.connect(store)
    assert [r[0] for r in conn.execute("SELECT tag FROM spool ORDER BY id")] == ["deal-1", None]
    conn.close()

    daemon(config)  # drains the spool at start
    settled(config, "waited", "plain")
    assert item(config, "carol@acme.com", "waited")["associations"]["deals"] == [1]
    assert item(config, "carol@acme.com", "plain")["associations"]["deals"] == [1, 2]
    assert on(as_json(config, "deals", "show", "1")["timeline"]) == ["plain", "waited"]
    assert on(as_json(config, "deals", "show", "2")["timeline"]) == ["plain"]
    # bcc.create_contacts: false: neither Neil nor Nora became a contact.
    assert [c["email"] for c in as_json(config, "contacts", "list")] == ["carol@acme.com"]
