"""The ingest pipeline on a real SQLite file: exactly once, rules, quarantine, records,
attachments, the engagement cap, search, erase down to the bytes, and schema versions."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.corpus import generate
from syncd.crm.model import Outcome
from syncd.crm.rules import InboxRule, RulesSettings
from syncd.errors import StoreError
from syncd.mail.provenance import Provenance
from syncd.pipeline import Parsing, Pipeline
from syncd.sources.files import MailFiles
from syncd.store import db, quarantine, queries, records
from syncd.store.erase import erase, scan
from syncd.store.raw import raw_message
from syncd.store.searchquery import QueryError
from tests.integration.conftest import queue_copy, write_mbox

DATA = Path(__file__).resolve().parent.parent / "data"
NOW = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
BCC = Provenance("bcc", NOW)
ADA, BOB = "ada@example.com", "bob@example.com"


def ingest(pipeline: Pipeline, raw: bytes, provenance: Provenance) -> Outcome:
    """One message through the pipeline: a batch of one."""
    return pipeline.ingest_batch([(raw, provenance)])[0]


def message(
    sender: str = ADA,
    to: str = "Carol Jones <carol@acme.com>",
    *,
    subject: str = "Hello",
    msgid: str | None = "<m1@example.com>",
    date: str = "Wed, 01 May 2024 09:00:00 +0000",
    body: str = "Plain text body",
    cc: str | None = None,
    extra: str = "",
) -> bytes:
    lines = [f"From: {sender}", f"To: {to}", f"Subject: {subject}", f"Date: {date}"]
    if cc:
        lines.append(f"Cc: {cc}")
    if msgid:
        lines.append(f"Message-ID: {msgid}")
    head = "\r\n".join(lines) + "\r\n" + extra
    return (head + "\r\n" + body + "\r\n").encode()


def with_attachment(
    msgid: str, payload: bytes, name: str = "report.pdf", to: str = "carol@acme.com"
) -> bytes:
    import base64

    encoded = base64.encodebytes(payload).decode()
    return (
        f"From: {ADA}\r\nTo: {to}\r\nSubject: files\r\nMessage-ID: {msgid}\r\n"
        "Date: Wed, 01 May 2024 09:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        f'--b1\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="{name}"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n--b1--\r\n"
    ).encode()


def rules(**overrides: object) -> RulesSettings:
    base: dict[str, object] = {
        "team": {ADA: ("a.lovelace@example.com",), BOB: ()},
        "inboxes": (InboxRule("ada", ADA, "personal", ADA, create_contacts=False),),
        "bcc_addresses": ("log@crm.example.com",),
        "never_log": ("partner.example", "spouse@example.net"),
    }
    base.update(overrides)
    return RulesSettings.build(**base)  # type: ignore[arg-type]


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = db.connect(tmp_path / "store" / "syncd.sqlite3")
    yield connection
    connection.close()


def make(conn: sqlite3.Connection, tmp_path: Path, **kwargs: object) -> Pipeline:
    limit = kwargs.pop("max_attachment_bytes", 10_000)
    return Pipeline(
        conn,
        rules(**kwargs),
        attachments_dir=tmp_path / "store" / "attachments",
        max_attachment_bytes=limit,  # type: ignore[arg-type]
        workers=0,
    )


def count(conn: sqlite3.Connection, table: str) -> int:
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_mbox_with_duplicates_gives_one_engagement_each(conn, tmp_path) -> None:
    write_mbox(
        tmp_path / "in.mbox", message(), message(msgid="<m2@example.com>"), message(), message()
    )
    pipeline = make(conn, tmp_path)
    items = [(raw, BCC) for raw, _ in MailFiles(tmp_path / "in.mbox")]
    outcomes = pipeline.ingest_batch(items)
    assert [o.status for o in outcomes] == ["logged", "logged", "duplicate", "duplicate"]
    assert count(conn, "emails") == 2
    assert count(conn, "sightings") == 2  # same source label, same uid 0: one sighting
    assert queries.contacts_list(conn)[0]["email"] == "carol@acme.com"


def test_mail_without_message_id_twice_is_one(conn, tmp_path) -> None:
    raw = message(msgid=None)
    pipeline = make(conn, tmp_path)
    first = ingest(pipeline, raw, BCC)
    second = ingest(pipeline, raw, Provenance("imap", NOW, inbox="ada", folder="Sent", uid=9))
    assert (first.status, second.status) == ("logged", "duplicate")
    assert first.key == second.key and first.key.startswith("sha256:")
    (item,) = queries.timeline(conn, "carol@acme.com")
    assert item["sources"] == ["bcc", "imap:ada/Sent"]


@pytest.mark.parametrize(
    "other", ["spouse@example.net", "x@mail.partner.example", "Y@PARTNER.EXAMPLE"]
)
def test_never_log_participant_logs_nothing(conn, tmp_path, other) -> None:
    outcome = ingest(make(conn, tmp_path), message(cc=other), BCC)
    assert outcome.status == "skipped"
    assert queries.counts(conn) == dict.fromkeys(queries.counts(conn), 0)


def test_broken_messages_quarantined_with_reasons_and_retried(conn, tmp_path) -> None:
    pipeline = make(conn, tmp_path)
    outcomes = pipeline.ingest_batch([(b"", BCC), (b"\r\n\r\njust a body", BCC), (message(), BCC)])
    assert [o.status for o in outcomes] == ["quarantined", "quarantined", "logged"]
    listed = queries.quarantine_list(conn)
    assert [q["reason"] for q in listed] == ["empty message", "no header fields: not an email"]
    assert all(q["source"] == "bcc" for q in listed)
    # A message quarantined by an earlier failure logs when retried, and leaves.
    with db.transaction(conn):
        quarantine.quarantine(conn, message(msgid="<later@x>"), BCC, "store was locked")
    results = pipeline.retry_quarantined()
    assert [o.status for _id, o in results] == ["quarantined", "quarantined", "logged"]
    assert [q["attempts"] for q in queries.quarantine_list(conn)] == [2, 2]
    assert count(conn, "emails") == 2


def test_message_with_5000_recipients_is_logged(conn, tmp_path) -> None:
    crowd = ", ".join(f"{n}@c.io" for n in range(5000))
    outcome = ingest(make(conn, tmp_path), message(to=crowd), Provenance("import", NOW, owner=ADA))
    assert outcome.status == "logged"
    assert count(conn, "contacts") == 5000 and count(conn, "engagement_companies") == 1


def test_import_twice_gives_the_same_store(conn, tmp_path) -> None:
    corpus = list(generate(120, seed=3))
    provenance = Provenance("import", NOW, owner=ADA)
    pipeline = make(conn, tmp_path, max_attachment_bytes=None)
    first = pipeline.ingest_batch([(raw, provenance) for raw, _ in corpus])
    after_first = queries.counts(conn)
    second = pipeline.ingest_batch([(raw, provenance) for raw, _ in corpus])
    assert queries.counts(conn) == after_first
    assert {o.status for o in second} <= {"duplicate", "skipped"}
    assert sum(o.status == "logged" for o in first) == after_first["emails"] > 100


def test_parser_pool_gives_the_same_outcomes_as_in_process(tmp_path) -> None:
    """In-process, in the pool, and parsed ahead (batches handed over as they are
    fetched, the pool writing attachment files): the same outcomes, rows and files."""
    corpus = [*generate(250, seed=5), (b"", NOW)]
    provenance = Provenance("import", NOW, owner=ADA)
    items = [(raw, provenance) for raw, _ in corpus]
    results = []
    for mode, workers in (("inline", 0), ("pool", 2), ("ahead", 2)):
        connection = db.connect(tmp_path / f"{mode}.sqlite3")
        attachments = tmp_path / mode
        with Pipeline(connection, rules(), attachments_dir=attachments,
                      max_attachment_bytes=None, workers=workers) as pipeline:  # fmt: skip
            if mode == "ahead":
                batches = [pipeline.parse_ahead(items[i : i + 60]) for i in range(0, 251, 60)]
                outcomes = [o for batch in batches for o in pipeline.ingest_batch(batch)]
            else:
                outcomes = pipeline.ingest_batch(items)
        stored = connection.execute("SELECT sha256, stored FROM attachments ORDER BY id").fetchall()
        files = sorted(p.name for p in attachments.rglob("*") if p.is_file())
        results.append((outcomes, queries.counts(connection), stored, files))
        connection.close()
    assert results[0][2], "the corpus has attachments"
    assert results[0] == results[1] == results[2]


def test_killed_parser_processes_lose_nothing_and_come_back(conn, tmp_path) -> None:
    import os
    import signal
    import time

    pipeline = Pipeline(conn, rules(), attachments_dir=tmp_path / "a",
                        max_attachment_bytes=None, workers=1)  # fmt: skip
    ahead = pipeline.parse_ahead([(message(msgid=f"<k{i}@x>"), BCC) for i in range(40)])
    for pid in list(ahead.pool._processes):
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)  # the pool has seen its process die and refuses work now
    # The fetching thread hands over the next batch before the writer reaches this one:
    # it gets fresh parser processes, and never an exception.
    again = pipeline.parse_ahead([(message(msgid=f"<n{i}@x>"), BCC) for i in range(40)])
    assert isinstance(again, Parsing) and again.pool is not ahead.pool
    assert {o.status for o in pipeline.ingest_batch(ahead)} == {"logged"}
    assert {o.status for o in pipeline.ingest_batch(again)} == {"logged"}
    assert count(conn, "emails") == 80
    pipeline.close()


def test_attachments_of_mail_not_logged_leave_no_file(conn, tmp_path) -> None:
    """Parser processes stage attachment files before the rules run: skipped mail,
    duplicates and quarantined mail leave nothing; logged mail's files are in place."""
    attachments = tmp_path / "store" / "attachments"
    pipeline = Pipeline(conn, rules(), attachments_dir=attachments,
                        max_attachment_bytes=None, workers=1)  # fmt: skip
    private = with_attachment("<p@x>", b"for the spouse only " * 60, to="spouse@example.net")
    logged = with_attachment("<l@x>", b"quarterly figures " * 60)
    batch = [(private, BCC), (logged, BCC), (logged, BCC)]
    outcomes = pipeline.ingest_batch(pipeline.parse_ahead(batch))
    assert [o.status for o in outcomes] == ["skipped", "logged", "duplicate"]
    files = [p for p in attachments.rglob("*") if p.is_file()]
    assert len(files) == 1 and b"quarterly" in files[0].read_bytes()
    assert scan([attachments], "spouse@example.net") == []
    pipeline.close()


def test_staged_files_left_by_a_crash_are_purged_and_erased(tmp_path) -> None:
    import os

    from syncd.store.blobs import STAGING, purge_staging, stage_blob

    attachments = tmp_path / "attachments"
    old = stage_blob(attachments, "a" * 64, b"old copy for carol@acme.com")
    new = stage_blob(attachments, "b" * 64, b"in flight")
    os.utime(old, (1, 1))
    assert purge_staging(attachments) == 1
    assert [p.name for p in (attachments / STAGING).iterdir()] == [os.path.basename(new)]
    stage_blob(attachments, "c" * 64, b"mail to carol@acme.com being logged")
    conn = db.connect(tmp_path / "s.sqlite3")
    assert erase(conn, "carol@acme.com", attachments).files == 1
    assert scan([attachments], "carol@acme.com") == []
    conn.close()


def test_parsed_ahead_batch_survives_a_closed_pool_and_a_lost_file(conn, tmp_path) -> None:
    attachments = tmp_path / "store" / "attachments"
    pipeline = Pipeline(conn, rules(), attachments_dir=attachments,
                        max_attachment_bytes=None, workers=1)  # fmt: skip
    ahead = pipeline.parse_ahead([(with_attachment("<a1@x>", b"A" * 4000), BCC)])
    assert [o.status for o in pipeline.ingest_batch(ahead)] == ["logged"]
    # The parser process wrote the file; an erase removes it before the writer logs
    # the next message that carries it: the row must not claim it is stored.
    again = pipeline.parse_ahead([(with_attachment("<a2@x>", b"A" * 4000), BCC)])
    list(again.chunks[0].result())
    for path in attachments.rglob("*"):
        if path.is_file():
            path.unlink()
    assert [o.status for o in pipeline.ingest_batch(again)] == ["logged"]
    rows = conn.execute("SELECT stored, note FROM attachments ORDER BY id").fetchall()
    assert [tuple(r) for r in rows][1] == (0, "file removed before the message was logged")
    pipeline.close()
    # A pipeline closed by a reload hands batches back unparsed, and still logs them.
    late = pipeline.parse_ahead([(message(msgid="<late@x>"), BCC)])
    assert type(late) is list
    assert [o.status for o in pipeline.ingest_batch(late)] == ["logged"]


def test_timeline_newest_first_and_records_follow(conn, tmp_path) -> None:
    pipeline = make(conn, tmp_path)
    ingest(pipeline, message(msgid="<old@x>", date="Mon, 01 Jan 2024 10:00:00 +0000"), BCC)
    ingest(
        pipeline,
        message("carol@acme.com", ADA, msgid="<new@x>", date="Fri, 01 Mar 2024 10:00:00 +0000"),
        Provenance("imap", NOW, inbox="ada", folder="INBOX", uid=4),
    )
    ingest(pipeline, message(msgid="<mid@x>", date="Thu, 01 Feb 2024 10:00:00 +0000"), BCC)
    items = queries.timeline(conn, "carol@acme.com")
    assert [i["message_id"] for i in items] == ["new@x", "mid@x", "old@x"]
    assert [i["direction"] for i in items] == ["incoming", "outgoing", "outgoing"]
    assert items[0]["associations"]["companies"] == ["acme.com"]
    contact = queries.contact_show(conn, "carol@acme.com")
    assert contact["owner"] == ADA and contact["lifecycle_stage"] == "lead"
    assert contact["name"] == "Carol Jones" and contact["marketing"] is False
    assert contact["last_contacted"] == "2024-02-01T10:00:00Z"  # the latest outgoing
    assert contact["last_activity"] == "2024-03-01T10:00:00Z"


def test_search_finds_new_mail_at_once(conn, tmp_path) -> None:
    pipeline = make(conn, tmp_path)
    ingest(pipeline, message(subject="Quarterly zeppelin order", body="about the blimp"), BCC)
    (hit,) = queries.search(conn, "zeppelin")
    assert hit["message_id"] == "m1@example.com" and hit["from"] == ADA
    assert queries.search(conn, "blimp")[0]["snippet"] == "about the [blimp]"
    assert queries.search(conn, "carol@acme.com")[0]["subject"] == "Quarterly zeppelin order"
    with pytest.raises(QueryError, match="unbalanced quote"):
        queries.search(conn, 'AND OR "( NEAR')

    # A forward as attachment (message/rfc822) is found by the forwarded mail's words.
    forward = (DATA / "forwarded-as-attachment.eml").read_bytes()
    assert ingest(pipeline, forward, BCC).status == "logged"
    (hit,) = queries.search(conn, "revised price")
    assert hit["subject"] == "Fwd: Quote 7781"


def test_deal_stage_effects(conn, tmp_path) -> None:
    ingest(make(conn, tmp_path), message(to="carol@acme.com, dan@acme.com"), BCC)
    deals = rules().pipelines.deals
    with db.transaction(conn):
        carol = records.contact_ids_for(conn, ["carol@acme.com"])
        won = records.create_deal(conn, deals, "Won", carol, amount=10)
        lost = records.create_deal(
            conn, deals, "Lost", records.contact_ids_for(conn, ["dan@acme.com"])
        )

    def stages() -> tuple[str, str, str]:
        company = conn.execute("SELECT lifecycle_stage FROM companies").fetchone()[0]
        people = {c["email"]: c["lifecycle_stage"] for c in queries.contacts_list(conn)}
        return people["carol@acme.com"], people["dan@acme.com"], company

    assert stages() == ("opportunity", "opportunity", "lead")
    with db.transaction(conn):
        records.set_deal_stage(conn, deals, lost, "closedlost")
    assert stages() == ("opportunity", "opportunity", "lead")
    with db.transaction(conn):
        records.set_deal_stage(conn, deals, won, "closedwon")
    assert stages() == ("customer", "opportunity", "customer")
    with db.transaction(conn):
        records.set_deal_stage(conn, deals, won, "qualifiedtobuy")  # stages never go back
    assert stages() == ("customer", "opportunity", "customer")


def test_mail_is_associated_with_recent_open_deals_and_tickets(conn, tmp_path) -> None:
    pipeline = make(conn, tmp_path, max_deals=2)
    ingest(pipeline, message(msgid="<first@x>"), BCC)
    with db.transaction(conn):
        ids = records.contact_ids_for(conn, ["carol@acme.com"])
        deals = [records.create_deal(conn, rules().pipelines.deals, f"d{i}", ids) for i in range(4)]
        records.set_deal_stage(conn, rules().pipelines.deals, deals[3], "closedlost")
        ticket = records.create_ticket(conn, rules().pipelines.tickets, "help", ids)
    ingest(pipeline, message(msgid="<second@x>"), BCC)
    newest = queries.timeline(conn, "carol@acme.com")[0]
    assert newest["associations"]["deals"] == sorted(deals[1:3])
    assert newest["associations"]["tickets"] == [ticket]


def test_a_batch_looks_up_each_contacts_own_recent_deals(conn, tmp_path) -> None:
    """Contacts and their open deals are looked up for many messages at once: each
    message still gets its own contacts' most recent ones, up to max_deals each."""
    pipeline = make(conn, tmp_path, max_deals=2)
    ingest(pipeline, message(msgid="<seed@x>", to="carol@acme.com, dave@bolt.io"), BCC)
    deals: dict[str, list[int]] = {}
    with db.transaction(conn):
        for person in ("carol@acme.com", "dave@bolt.io"):
            ids = records.contact_ids_for(conn, [person])
            deals[person] = [
                records.create_deal(conn, rules().pipelines.deals, f"{person}{i}", ids)
                for i in range(3)
            ]
    batch = [
        (message(msgid="<c@x>", to="carol@acme.com"), BCC),
        (message(msgid="<d@x>", to="dave@bolt.io, erin@new.io"), BCC),
        (message(msgid="<e@x>", to="erin@new.io"), BCC),
    ]
    assert [o.status for o in pipeline.ingest_batch(batch)] == ["logged"] * 3
    by_id = {e["message_id"]: e for e in queries.timeline(conn, "carol@acme.com")}
    assert by_id["c@x"]["associations"]["deals"] == sorted(deals["carol@acme.com"][1:])
    by_id = {e["message_id"]: e for e in queries.timeline(conn, "erin@new.io")}
    assert by_id["d@x"]["associations"]["deals"] == sorted(deals["dave@bolt.io"][1:])
    assert by_id["e@x"]["associations"]["deals"] == []


def test_engagement_cap_stops_associations_not_storage(conn, tmp_path) -> None:
    pipeline = make(conn, tmp_path, max_engagements_per_record=2)
    for n in range(3):
        ingest(pipeline, message(msgid=f"<cap{n}@x>"), BCC)
    assert count(conn, "emails") == 3
    assert len(queries.timeline(conn, "carol@acme.com")) == 2
    assert count(conn, "engagement_companies") == 2


def test_attachments_stored_once_and_oversized_not_stored(conn, tmp_path) -> None:
    pipeline = make(conn, tmp_path, max_attachment_bytes=1000)
    small, big = b"%PDF small " * 20, b"%PDF big " * 500
    ingest(pipeline, with_attachment("<a1@x>", small, name="../../etc/passwd"), BCC)
    ingest(pipeline, with_attachment("<a2@x>", small, name="copy.pdf"), BCC)
    ingest(pipeline, with_attachment("<a3@x>", big), BCC)
    files = sorted(p for p in (tmp_path / "store" / "attachments").rglob("*") if p.is_file())
    assert len(files) == 1 and files[0].read_bytes() == small
    assert files[0].parent.parent.parent == tmp_path / "store" / "attachments"
    items = {i["message_id"]: i["attachments"][0] for i in queries.timeline(conn, "carol@acme.com")}
    assert items["a1@x"]["filename"] == "../../etc/passwd"  # metadata only, never a path
    assert items["a1@x"]["stored"] and items["a2@x"]["stored"]
    assert not items["a3@x"]["stored"] and "max_attachment_mb" in items["a3@x"]["note"]
    assert items["a3@x"]["size"] == len(big)


def test_raw_bytes_kept_exactly_and_attachments_not_twice(conn, tmp_path) -> None:
    corpus = [raw for raw, _ in generate(150, seed=2)]
    corpus.append(with_attachment("<crlf@x>", bytes(range(256)) * 40))
    pipeline = make(conn, tmp_path, max_attachment_bytes=None)
    outcomes = pipeline.ingest_batch(
        [(raw, Provenance("import", NOW, owner=ADA)) for raw in corpus]
    )
    by_key = {o.key: raw for o, raw in zip(outcomes, corpus, strict=True) if o.status == "logged"}
    rows = conn.execute("SELECT engagement_id, message_key FROM emails").fetchall()
    attachments = tmp_path / "store" / "attachments"
    assert len(rows) == len(by_key) > 140
    for engagement_id, key in rows:
        assert raw_message(conn, engagement_id, attachments) == by_key[key]
    kept = conn.execute("SELECT sum(length(raw)) FROM raw_messages").fetchone()[0]
    assert kept < 0.6 * sum(map(len, by_key.values()))  # attachments' base64 is cut out


def test_on_commit_runs_inside_the_batch_transaction(conn, tmp_path) -> None:
    pipeline = make(conn, tmp_path)
    seen: list[int] = []
    pipeline.ingest_batch([(message(), BCC)], on_commit=lambda c: seen.append(count(c, "emails")))
    assert seen == [1]

    def fail(_c: sqlite3.Connection) -> None:
        raise RuntimeError("checkpoint failed")

    with pytest.raises(RuntimeError):
        pipeline.ingest_batch([(message(msgid="<rolled@x>"), BCC)], on_commit=fail)
    assert count(conn, "emails") == 1 and count(conn, "contacts") == 1


def test_wal_is_checkpointed_off_the_writer_and_the_thread_ends(conn, tmp_path) -> None:
    """The writer's own automatic checkpoint only bounds the WAL (4,096 pages); a thread moves
    each commit's pages into the database file, and ends when idle or closed."""
    from syncd.store.walcheckpoint import FALLBACK_PAGES, WalCheckpointer

    path = tmp_path / "store" / "syncd.sqlite3"
    pipeline = make(conn, tmp_path)
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == FALLBACK_PAGES
    before = path.stat().st_size
    text = " ".join(f"word{i}" for i in range(40_000))  # ~350 KB: far below the fallback
    items = [(message(msgid=f"<wal{i}@x>", body=text), BCC) for i in range(3)]
    assert [o.status for o in pipeline.ingest_batch(items)] == ["logged"] * 3
    deadline = time.monotonic() + 10
    while path.stat().st_size < before + 500_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.stat().st_size >= before + 500_000  # the pages reached the database file
    pipeline.close()
    name = f"wal-checkpoint:{path}"  # other tests' pipelines may still have theirs
    assert not [t for t in threading.enumerate() if t.name == name]

    idle = WalCheckpointer(path)
    idle.IDLE_SECONDS = 0.1
    idle.poke()
    deadline = time.monotonic() + 10
    while any(t.name == name for t in threading.enumerate()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    idle.poke()  # a poke after it ended starts it again
    idle.close()
    assert not [t for t in threading.enumerate() if t.name == name]
    assert queries.search(conn, "word39999")

    missing = tmp_path / "gone" / "syncd.sqlite3"  # cannot open: the writer keeps the work
    gone = WalCheckpointer(missing)
    gone.poke()
    deadline = time.monotonic() + 10
    while any(t.name == f"wal-checkpoint:{missing}" for t in threading.enumerate()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    gone.poke()  # no new thread for every commit after that
    assert not [t for t in threading.enumerate() if t.name == f"wal-checkpoint:{missing}"]
    gone.close()
    assert not missing.parent.exists()


def test_batches_leave_their_fsync_to_the_checkpoint_thread_and_nothing_else_does(
    conn, tmp_path
) -> None:
    """A batch commits with synchronous=NORMAL (it carries the source's own record, so a
    power cut rolls both back together) and the checkpoint thread syncs the WAL; every
    other commit on the connection stays FULL. Closing the pipeline moves every commit
    into the database file."""
    path = tmp_path / "store" / "syncd.sqlite3"
    pipeline = make(conn, tmp_path)
    inside: list[int] = []
    item = [(message(msgid="<n1@x>"), BCC)]
    on_commit = lambda c: inside.append(c.execute("PRAGMA synchronous").fetchone()[0])  # noqa: E731
    assert [o.status for o in pipeline.ingest_batch(item, on_commit=on_commit)] == ["logged"]
    assert inside == [1]  # NORMAL inside the batch
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again after it
    pipeline.close()
    # immutable=1 reads the database file alone, never the WAL.
    reader = sqlite3.connect(f"{path.as_uri()}?immutable=1", uri=True)
    assert reader.execute("SELECT message_id FROM emails").fetchall() == [("n1@x",)]
    reader.close()


def test_erase_leaves_no_byte_of_the_address(conn, tmp_path) -> None:
    pipeline = make(conn, tmp_path, max_attachment_bytes=100_000)
    ingest(pipeline, message(to="Carol <carol@acme.com>", body="write to carol@acme.com"), BCC)
    ingest(
        pipeline,
        message(
            to="carol@acme.com, dan@other.org", msgid="<shared@x>", subject="cc CAROL@acme.com"
        ),
        BCC,
    )
    ingest(pipeline, with_attachment("<att@x>", b"only for carol " * 50), BCC)
    ingest(pipeline, b"\r\n\r\nfrom carol@acme.com", BCC)  # quarantined, names her
    with db.transaction(conn):
        contact = records.contact_ids_for(conn, ["carol@acme.com"])
        records.add_note(conn, contact[0], "met carol@acme.com", cap=10)
        records.create_deal(conn, rules().pipelines.deals, "carol@acme.com renewal", contact)
    report = erase(conn, "carol@acme.com", tmp_path / "store" / "attachments")
    assert (report.contacts, report.deleted, report.redacted) == (1, 3, 1)  # 2 emails, 1 note
    assert report.quarantined == 1 and report.files == 1 and not report.wal_busy
    assert scan([tmp_path / "store"], "carol@acme.com") == []
    assert scan([tmp_path / "store"], "dan@other.org") != []  # the other contact stays
    (left,) = queries.timeline(conn, "dan@other.org")
    assert left["to"] == ["dan@other.org"] and left["subject"] == "cc [erased]"
    assert queries.search(conn, "carol") == []


def test_erase_finds_the_address_inside_compressed_raw_copies(conn, tmp_path) -> None:
    """An address only in a header nothing else keeps is found in the (compressed) raw
    copy; an attachment another contact's mail still uses stays on disk."""
    from syncd.store.erase import raw_copies_naming

    attachments = tmp_path / "store" / "attachments"
    pipeline = make(conn, tmp_path, max_attachment_bytes=100_000)
    ingest(pipeline, message(to="carol@acme.com", msgid="<c@x>"), BCC)
    hidden = message(to="dan@other.org", msgid="<h@x>", extra="X-Original-To: carol@acme.com\r\n")
    ingest(pipeline, hidden, BCC)
    ingest(pipeline, with_attachment("<a1@x>", b"quarterly figures " * 60), BCC)
    ingest(pipeline, with_attachment("<a2@x>", b"quarterly figures " * 60, to="dan@other.org"), BCC)
    codecs = {r[0] for r in conn.execute("SELECT codec FROM raw_messages")}
    assert codecs == {"zstd"} and raw_copies_naming(conn, "carol@acme.com") == 3
    report = erase(conn, "carol@acme.com", attachments)
    assert (report.deleted, report.redacted, report.files) == (2, 1, 0)
    assert raw_copies_naming(conn, "carol@acme.com") == 0
    assert scan([tmp_path / "store"], "carol@acme.com") == []
    assert len([p for p in attachments.rglob("*") if p.is_file()]) == 1  # dan's mail uses it


def test_erasing_an_address_that_is_no_contact_redacts_others_mail(conn, tmp_path) -> None:
    pipeline = make(conn, tmp_path, inboxes=())
    ingest(pipeline, message(to="dan@other.org", cc="Eve <eve@third.example>"), BCC)
    with db.transaction(conn):
        conn.execute(
            "DELETE FROM contacts WHERE id = ?",
            records.contact_ids_for(conn, ["eve@third.example"]),
        )
    report = erase(conn, "eve@third.example", tmp_path / "store" / "attachments")
    assert (report.contacts, report.deleted, report.redacted) == (0, 0, 1)
    (item,) = queries.timeline(conn, "dan@other.org")
    assert item["cc"] == [] and scan([tmp_path / "store"], "eve@third.example") == []


def test_new_stores_get_16_kib_pages_and_old_ones_keep_theirs(tmp_path) -> None:
    fresh = db.connect(tmp_path / "new.sqlite3")
    assert fresh.execute("PRAGMA page_size").fetchone()[0] == db.PAGE_SIZE == 16384
    fresh.close()
    old = tmp_path / "old.sqlite3"
    legacy = sqlite3.connect(old)
    legacy.execute("PRAGMA page_size = 4096")
    legacy.execute("PRAGMA journal_mode = WAL")
    legacy.execute("CREATE TABLE t (x)")
    legacy.close()
    reopened = db.connect(old)
    assert reopened.execute("PRAGMA page_size").fetchone()[0] == 4096
    assert reopened.execute("PRAGMA user_version").fetchone()[0] == db.latest_version()
    reopened.close()


def test_newer_store_is_refused(tmp_path) -> None:
    path = tmp_path / "new.sqlite3"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {db.latest_version() + 1}")
    raw.close()
    with pytest.raises(StoreError, match="written by a newer syncd"):
        db.connect(path)


def test_erase_clears_the_bcc_spool_and_outbox(conn, tmp_path) -> None:
    from syncd.store import spool

    raw = message(to="carol@acme.com", msgid="<spooled@x>")
    spool.spool_message(conn, raw, "ada@example.com", "127.0.0.1")
    queue_copy(conn, raw, "ada@example.com", ["archive@example.org"], 0.0)
    ingest(make(conn, tmp_path), message(to="carol@acme.com"), BCC)
    erase(conn, "carol@acme.com", tmp_path / "store" / "attachments")
    assert conn.execute("SELECT count(*) FROM spool").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
    assert scan([tmp_path / "store"], "carol@acme.com") == []
