"""A timeline is read in a fixed number of statements (``store/items.py``), and every item
is exactly what the one engagement read alone gives (``queries.engagement``): on a real
store with sightings from two sources, associations of every kind, attachments stored and
not, tracking hits, a note and pins."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from syncd.crm.lifecycle import DEFAULT_DEALS, DEFAULT_TICKETS
from syncd.crm.rules import InboxRule, RulesSettings
from syncd.mail.provenance import Provenance
from syncd.pipeline import Pipeline
from syncd.store import actions, db, mailview, queries, records, recordviews, threads, tracking
from syncd.store.tracking import StoredHit, TrackedMessage

ADA = "ada@example.com"
CAROL, DAN, ERIN, FEW = "carol@acme.com", "dan@acme.com", "erin@beta.example", "few@gamma.example"
START = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
CAP = 10_000


def message(n: int, to: str, *, cc: str = "", reply_to: int | None = None, size: int = 0) -> bytes:
    """Mail ``n`` from Ada, a day after mail ``n - 1``; a reply to ``reply_to`` joins its
    thread; ``size`` bytes of attachment (stored when small, not when large)."""
    date = (START + timedelta(days=n)).strftime("%a, %d %b %Y %H:%M:%S +0000")
    head = f"From: Ada <{ADA}>\r\nTo: {to}\r\nSubject: Topic {n % 7}\r\nDate: {date}\r\n"
    head += f"Message-ID: <m{n}@example.com>\r\n" + (f"Cc: {cc}\r\n" if cc else "")
    if reply_to is not None:
        head += f"In-Reply-To: <m{reply_to}@example.com>\r\n"
    if not size:
        return f"{head}\r\nAbout topic {n}.\r\n".encode()
    payload = base64.encodebytes(bytes(range(256)) * (size // 256 + 1))[: size * 4 // 3]
    return (
        f"{head}MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n"
        "--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--b1\r\n"
        f'Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="f{n}.pdf"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{payload.decode()}\r\n--b1--\r\n"
    ).encode()


def mail() -> list[bytes]:
    """32 mails to Carol (some to Dan, Erin on copy, replies, attachments), 3 to Few."""
    out = []
    for n in range(32):
        out.append(
            message(
                n,
                f"Carol <{CAROL}>" + (f", Dan <{DAN}>" if n % 3 == 0 else ""),
                cc=f"Erin <{ERIN}>" if n % 4 == 0 else "",
                reply_to=n - 1 if n % 5 == 1 else None,
                size=(0, 0, 0, 50, 5000)[n % 5],
            )
        )
    out.extend(message(100 + n, f"Few <{FEW}>", reply_to=100 if n else None) for n in range(3))
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    tmp = tmp_path_factory.mktemp("batched")
    conn = db.connect(tmp / "syncd.sqlite3")
    settings = RulesSettings.build(
        team={ADA: ()}, inboxes=(InboxRule("ada", ADA, "personal", ADA, create_contacts=False),)
    )
    pipeline = Pipeline(
        conn, settings, attachments_dir=tmp / "att", max_attachment_bytes=1000, workers=0
    )
    with pipeline:
        raws = mail()
        # Each mail comes by BCC (which creates the contacts) and most again by IMAP:
        # two sources on most items, one on some.
        pipeline.ingest_batch([(raw, Provenance("bcc", START)) for raw in raws])
        pipeline.ingest_batch(
            [
                (raw, Provenance("imap", START, inbox="ada", folder="INBOX", uid=uid))
                for uid, raw in enumerate(raws, 1)
                if uid % 6
            ]
        )
    with db.transaction(conn):
        _records(conn)
    yield conn
    conn.close()


def _id(conn: sqlite3.Connection, sql: str, *args: Any) -> int:
    return int(conn.execute(sql, args).fetchone()[0])


def _email(conn: sqlite3.Connection, n: int) -> int:
    return _id(conn, "SELECT engagement_id FROM emails WHERE message_key = ?", f"m{n}@example.com")


def _records(conn: sqlite3.Connection) -> None:
    """Deals, tickets, extra associations, a note, pins and tracking hits."""
    carol = _id(conn, "SELECT contact_id FROM contact_addresses WHERE address = ?", CAROL)
    beta = _id(conn, "SELECT company_id FROM company_domains WHERE domain = 'beta.example'")
    deals = [records.create_deal(conn, DEFAULT_DEALS, f"Deal {i}", [carol]) for i in range(3)]
    tickets = [records.create_ticket(conn, DEFAULT_TICKETS, f"T{i}", [carol]) for i in range(3)]
    for n in range(0, 32, 2):
        actions.associate(
            conn,
            _email(conn, n),
            {"deal": deals[n % 3 :], "ticket": tickets[(n // 2) % 4 :], "company": [beta]},
            CAP,
        )
    records.add_note(conn, carol, "Called Carol about the renewal", cap=CAP, owner=ADA)
    for n in (3, 17):
        actions.pin(conn, _email(conn, n))
    at = START + timedelta(days=40)
    for token, n in ((1, 7), (2, 12), (3, 20)):
        key = f"m{n}@example.com"
        message = TrackedMessage(token, key, ADA, at, ("https://a.example/", "https://b.example/"))
        assert tracking.record_message(conn, message)
        tracking.attach_engagement(conn, key)
    hits = [
        StoredHit(1, "open", at + timedelta(minutes=5), "192.0.2.0", "Firefox", "human"),
        StoredHit(2, "click", at + timedelta(minutes=6), "192.0.2.0", "Firefox", "human", 1),
        StoredHit(2, "click", at + timedelta(minutes=7), "192.0.2.0", "Firefox", "human", 0),
        StoredHit(2, "open", at + timedelta(minutes=1), "192.0.2.9", "GoogleImageProxy", "machine"),
    ]
    assert tracking.record_hits(conn, hits) == len(hits)


def dumped(value: Any) -> str:
    """JSON as the CLI prints it: key order and list order count."""
    return json.dumps(value, ensure_ascii=False)


def alone(conn: sqlite3.Connection, items: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
    return [queries.engagement(conn, item["id"]) for item in items]


def expected_order(conn: sqlite3.Connection, engagement_ids: str, *args: Any) -> list[int]:
    """The timeline's order worked out apart: pinned first, then newest first, then the
    highest id (stable sorts, the last one's key first)."""
    rows = conn.execute(
        f"SELECT id, pinned_at, occurred_at FROM engagements WHERE id IN ({engagement_ids})", args
    ).fetchall()
    rows.sort(key=lambda r: r[0], reverse=True)
    rows.sort(key=lambda r: r[2], reverse=True)
    rows.sort(key=lambda r: r[1] is None)
    return [r[0] for r in rows]


def test_the_store_has_every_kind_of_item(store: sqlite3.Connection) -> None:
    items = queries.timeline(store, CAROL) or []
    assert len(items) == 33
    emails = [i for i in items if i["type"] == "email"]
    assert {len(i["sources"]) for i in emails} == {1, 2}
    for kind in ("contacts", "companies", "deals", "tickets"):
        assert max(len(i["associations"][kind]) for i in items) >= 2, kind
    for kind in ("deals", "tickets"):
        assert min(len(i["associations"][kind]) for i in items) == 0, kind
    stored = {a["stored"] for i in emails for a in i["attachments"]}
    assert stored == {True, False}
    assert {i["status"] for i in emails} >= {"untracked", "sent", "opened", "clicked"}
    assert [i["type"] for i in items].count("note") == 1
    assert [i["pinned"] for i in items[:3]] == [True, True, False]
    assert any(i["cc"] for i in emails)


@pytest.mark.parametrize(
    "kind, address", [("contact", CAROL), ("contact", DAN), ("contact", ERIN), ("contact", FEW)]
)
def test_a_contact_timeline_is_each_engagement_alone_in_order(
    store: sqlite3.Connection, kind: str, address: str
) -> None:
    items = queries.timeline(store, address) or []
    assert items
    assert dumped(items) == dumped(alone(store, items))
    contact = _id(store, "SELECT contact_id FROM contact_addresses WHERE address = ?", address)
    sql, args = queries.record_engagements(kind, contact)
    assert [i["id"] for i in items] == expected_order(store, sql, *args)


@pytest.mark.parametrize("kind", ["company", "deal", "ticket"])
def test_every_record_timeline_is_each_engagement_alone_in_order(
    store: sqlite3.Connection, kind: str
) -> None:
    table = {"company": "companies", "deal": "deals", "ticket": "tickets"}[kind]
    for (record_id,) in store.execute(f"SELECT id FROM {table} ORDER BY id").fetchall():
        items = queries.record_timeline(store, kind, record_id)
        assert items, (kind, record_id)
        assert dumped(items) == dumped(alone(store, items))
        sql, args = queries.record_engagements(kind, record_id)
        assert [i["id"] for i in items] == expected_order(store, sql, *args)


def test_the_shows_carry_the_same_timeline(store: sqlite3.Connection) -> None:
    company = recordviews.company_show(store, 1)
    deal = recordviews.deal_show(store, 1)
    ticket = recordviews.ticket_show(store, 1)
    assert company is not None and deal is not None and ticket is not None
    for shown in (company, deal, ticket):
        assert dumped(shown["timeline"]) == dumped(alone(store, shown["timeline"]))


def test_the_folded_timeline_folds_the_same_items(store: sqlite3.Connection) -> None:
    items = queries.timeline(store, CAROL) or []
    keys = {
        i["id"]: key
        for i in items
        for (key,) in store.execute(
            "SELECT thread_key FROM emails WHERE engagement_id = ? AND thread_key IS NOT NULL",
            (i["id"],),
        )
    }
    folded = threads.folded_timeline(store, CAROL)
    assert dumped(folded) == dumped(threads.fold(items, keys))
    assert folded is not None and any(f["count"] > 1 for f in folded)


def test_a_thread_and_email_show_are_the_item_alone(store: sqlite3.Connection) -> None:
    for item in queries.timeline(store, CAROL) or []:
        thread = threads.thread(store, item["id"])
        assert dumped(thread) == dumped(alone(store, thread))
        view = mailview.email_view(store, item["id"])
        if item["type"] != "email":
            assert view is None
            continue
        assert view is not None
        assert dumped({key: view[key] for key in item}) == dumped(item)
        assert list(view)[: len(item)] == list(item)


def statements(conn: sqlite3.Connection, read: Callable[[], object]) -> int:
    """How many SQL statements ``read()`` runs."""
    ran: list[str] = []
    conn.set_trace_callback(ran.append)
    try:
        read()
    finally:
        conn.set_trace_callback(None)
    return len(ran)


def test_the_statements_do_not_grow_with_the_items(store: sqlite3.Connection) -> None:
    assert len(queries.timeline(store, FEW) or []) == 3
    assert len(queries.timeline(store, CAROL) or []) == 33
    for read in (queries.timeline, threads.folded_timeline):
        few = statements(store, lambda: read(store, FEW))  # noqa: B023
        many = statements(store, lambda: read(store, CAROL))  # noqa: B023
        assert few == many <= 9, read
    assert len(queries.record_timeline(store, "company", 3)) == 3
    few = statements(store, lambda: queries.record_timeline(store, "company", 3))
    many = statements(store, lambda: queries.record_timeline(store, "company", 1))
    assert few == many <= 8
