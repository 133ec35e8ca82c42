"""What a user sees of tracking, and erasing it, through the real CLI on a store filled
through the real pipeline: the timeline's ``status`` and ``tracking`` object, the
activity feed (also followed in a real ``syncd`` process interrupted with SIGINT),
``status`` and ``/metrics`` counts, ``erase`` down to the bytes, and the notify command
(a real program reading its stdin)."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from syncd.cli.main import main
from syncd.config.model import Config
from syncd.mail.provenance import Provenance
from syncd.pipeline import Pipeline
from syncd.services import statusreport
from syncd.services.metrics import render
from syncd.services.notify import NotifyCommand
from syncd.store import db, tracking, trackview
from syncd.store.erase import scan
from syncd.store.tracking import StoredHit, TrackedMessage
from tests.integration.conftest import vm_steps

ADA = "ada@example.com"
SENT = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return SENT + timedelta(minutes=minutes)


@dataclass
class Env:
    tmp: Path
    config: Path
    store: Path

    def run(self, *args: str) -> Result:
        return CliRunner().invoke(main, ["--config", str(self.config), *args])

    def json(self, *args: str) -> object:
        result = self.run(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def connect(self) -> sqlite3.Connection:
        return db.connect(self.store / "syncd.sqlite3")


@pytest.fixture
def env(tmp_path: Path) -> Env:
    store = tmp_path / "var"
    config = tmp_path / "syncd.yaml"
    config.write_text(
        f"store:\n  path: {store / 'syncd.sqlite3'}\n  attachments_dir: {store / 'attachments'}\n"
        "team:\n  - name: Ada Lovelace\n    email: ada@example.com\n"
        "bcc:\n  addresses: [log@crm.example.com]\n  verify_sender: none\n",
        encoding="utf-8",
    )
    return Env(tmp_path, config, store)


def log_mail(env: Env, msgid: str, to: str, subject: str, minutes: int = 0) -> str:
    """An outgoing email from Ada logged through the real pipeline; its message key."""
    date = (SENT + timedelta(minutes=minutes)).strftime("%a, %d %b %Y %H:%M:%S +0000")
    raw = (
        f"From: Ada Lovelace <{ADA}>\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\n"
        f"Message-ID: <{msgid}>\r\n\r\nHello.\r\n"
    ).encode()
    conn = env.connect()
    try:
        pipeline = Pipeline.from_config(Config.from_yaml(env.config), conn, workers=0)
        (outcome,) = pipeline.ingest_batch([(raw, Provenance("bcc", SENT))])
        pipeline.close()
    finally:
        conn.close()
    assert outcome.status == "logged", outcome
    assert outcome.key is not None
    return outcome.key


def track(
    env: Env, token_id: int, key: str, *, to: str | None, links: tuple[str, ...] = ()
) -> None:
    """The relay's record of a tracked message: for contact ``to``, or anonymous."""
    conn = env.connect()
    try:
        with db.transaction(conn):
            contact = None
            if to is not None:
                contact = conn.execute(
                    "SELECT contact_id FROM contact_addresses WHERE address = ?", (to,)
                ).fetchone()[0]
            message = TrackedMessage(
                token_id, key, ADA, SENT, links, contact_id=contact, anonymous=to is None
            )
            assert tracking.record_message(conn, message)
            tracking.attach_engagement(conn, key)
    finally:
        conn.close()


def hit(
    token_id: int,
    kind: str,
    minutes: float,
    verdict: str = "human",
    link: int | None = None,
    *,
    inferred: bool = False,
    ua: str = "Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0",
) -> StoredHit:
    return StoredHit(
        token_id, kind, at(minutes), "192.0.2.0", ua, verdict, link, inferred, f"{verdict} rule"
    )


def store_hits(env: Env, *hits: StoredHit) -> None:
    conn = env.connect()
    try:
        with db.transaction(conn):
            assert tracking.record_hits(conn, hits) == len(hits)
    finally:
        conn.close()


@pytest.fixture
def filled(env: Env) -> Env:
    """Four mails to Carol (untracked, sent, opened, clicked) and one to Carol and Dan
    (anonymous), with human and machine hits."""
    carol = "Carol Jones <carol@acme.com>"
    log_mail(env, "untracked@x", carol, "Untracked note", 0)
    track(env, 11, log_mail(env, "sent@x", carol, "Just sent", 1), to="carol@acme.com")
    track(env, 12, log_mail(env, "opened@x", carol, "Opened one", 2), to="carol@acme.com")
    track(
        env,
        13,
        log_mail(env, "clicked@x", carol, "Clicked \x1b[31mred\x1b[0m", 3),
        to="carol@acme.com",
        links=("https://acme.example/price?a=1&b=2", "https://acme.example/docs"),
    )
    track(
        env,
        14,
        log_mail(env, "anon@x", f"{carol}, Dan <dan@gmail.com>", "To both", 4),
        to=None,
        links=("https://acme.example/both",),
    )
    store_hits(
        env,
        hit(11, "open", 0.05, "prefetch"),
        hit(12, "open", 10),
        hit(12, "open", 30),
        hit(12, "open", 10.5, "machine", ua="Mozilla/5.0"),
        hit(13, "click", 20, link=0, inferred=True),
        hit(13, "click", 25, link=0),
        hit(13, "click", 26, link=1),
        hit(13, "click", 3.2, "scanner", link=1),
        hit(14, "open", 40),
    )
    return env


def test_timeline_status_and_tracking_object(filled: Env) -> None:
    items = filled.json("timeline", "carol@acme.com")
    assert isinstance(items, list)
    by_subject = {i["subject"]: i for i in items}
    assert [i["status"] for i in items] == ["opened", "clicked", "opened", "sent", "untracked"]
    assert by_subject["Untracked note"]["tracking"] is None
    assert by_subject["Just sent"]["tracking"] == {
        "anonymous": False,
        "opens": {"count": 0, "first": None, "last": None},
        "clicks": {"count": 0, "first": None, "last": None, "links": []},
        "machine": {"opens": 1, "clicks": 0, "by_verdict": {"prefetch": 1}},
    }
    opened = by_subject["Opened one"]["tracking"]
    assert opened["opens"] == {"count": 2, "first": "2024-05-01T09:10:00Z",
                               "last": "2024-05-01T09:30:00Z"}  # fmt: skip
    assert opened["machine"] == {"opens": 1, "clicks": 0, "by_verdict": {"machine": 1}}
    clicked = by_subject["Clicked \x1b[31mred\x1b[0m"]["tracking"]
    # The first human click had no open before it: one open is inferred.
    assert clicked["opens"] == {"count": 1, "first": "2024-05-01T09:20:00Z",
                                "last": "2024-05-01T09:20:00Z"}  # fmt: skip
    assert clicked["clicks"] == {
        "count": 3,
        "first": "2024-05-01T09:20:00Z",
        "last": "2024-05-01T09:26:00Z",
        "links": [
            {"url": "https://acme.example/price?a=1&b=2", "count": 2},
            {"url": "https://acme.example/docs", "count": 1},
        ],
    }
    assert clicked["machine"] == {"opens": 0, "clicks": 1, "by_verdict": {"scanner": 1}}
    anonymous = by_subject["To both"]
    assert anonymous["tracking"]["anonymous"] is True and anonymous["status"] == "opened"
    # Dan's timeline has the same anonymous email, the same way.
    (dans,) = filled.json("timeline", "dan@gmail.com")
    assert dans["tracking"] == anonymous["tracking"]

    text = filled.run("timeline", "carol@acme.com")
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert "To both  (opened 1x, by someone)" in lines[0]
    assert (
        "Clicked \\x1b[31mred\\x1b[0m  (opened 1x, clicked 3x, 1 machine hit(s) apart)"
        in (lines[1])
    )
    assert "\x1b" not in text.stdout
    assert "Just sent  (sent, not opened, 1 machine hit(s) apart)" in lines[3]
    assert lines[4].endswith("Untracked note  [bcc]")


def test_export_json_carries_status_too(filled: Env) -> None:
    out = filled.tmp / "export.json"
    assert filled.run("export", "--format", "json", "-o", str(out)).exit_code == 0
    emails = json.loads(out.read_text())["engagements"]
    assert [e["status"] for e in emails] == ["untracked", "sent", "opened", "clicked", "opened"]


def test_feed_newest_first_human_only_then_all(filled: Env) -> None:
    found = filled.json("tracking", "feed")
    assert isinstance(found, list)
    assert [(f["at"][11:16], f["kind"]) for f in found] == [
        ("09:40", "open"),
        ("09:30", "open"),
        ("09:26", "click"),
        ("09:25", "click"),
        ("09:20", "click"),
        ("09:10", "open"),
    ]
    newest = found[0]
    assert newest["who"] == "someone" and newest["contact"] is None and newest["anonymous"]
    click_ = found[2]
    assert click_ | {"id": 0, "engagement_id": 0} == {
        "id": 0,
        "at": "2024-05-01T09:26:00Z",
        "kind": "click",
        "who": "Carol Jones <carol@acme.com>",
        "contact": "carol@acme.com",
        "name": "Carol Jones",
        "anonymous": False,
        "subject": "Clicked \x1b[31mred\x1b[0m",
        "url": "https://acme.example/docs",
        "engagement_id": 0,
        "sender": ADA,
        "verdict": "human",
        "reason": "human rule",
        "inferred_open": False,
    }
    everything = filled.json("tracking", "feed", "--all")
    assert len(everything) == 9
    assert {f["verdict"] for f in everything} == {"human", "machine", "prefetch", "scanner"}
    assert [f["at"] for f in everything] == sorted((f["at"] for f in everything), reverse=True)
    assert len(filled.json("tracking", "feed", "--all", "--limit", "2")) == 2

    text = filled.run("tracking", "feed", "--all")
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0] == '2024-05-01T09:40:00Z  someone opened "To both"'
    assert lines[2] == (
        "2024-05-01T09:26:00Z  Carol Jones <carol@acme.com> clicked https://acme.example/docs"
        ' in "Clicked \\x1b[31mred\\x1b[0m"'
    )
    assert lines[-1] == (
        '2024-05-01T09:00:03Z  Carol Jones <carol@acme.com> opened "Just sent"'
        "  [prefetch: prefetch rule]"
    )
    assert "\x1b" not in text.stdout


def test_a_batch_is_stored_in_time_order_whatever_order_its_messages_came_in(
    filled: Env,
) -> None:
    """The writer inserts a batch in index order (by second, then message) so it walks
    the indexes once; ``feed --follow`` reads new hits by id, so ids must still follow
    time, and one message's hits in the same second keep the order they came in."""
    store_hits(
        filled,
        hit(14, "click", 50.01, link=0),
        hit(12, "open", 50.02),
        hit(13, "click", 50, link=1),
        hit(13, "click", 50.005, link=0),
        hit(11, "open", 50.001),
    )
    conn = filled.connect()
    try:
        rows = conn.execute(
            "SELECT at, message_id, link_idx FROM tracking_hits WHERE at >= ? ORDER BY id",
            ("2024-05-01T09:50:00Z",),
        ).fetchall()
    finally:
        conn.close()
    assert [tuple(r) for r in rows] == [
        ("2024-05-01T09:50:00Z", 11, None),
        ("2024-05-01T09:50:00Z", 13, 1),
        ("2024-05-01T09:50:00Z", 13, 0),
        ("2024-05-01T09:50:00Z", 14, 0),
        ("2024-05-01T09:50:01Z", 12, None),
    ]


def test_feed_on_a_store_not_made_yet_is_empty(env: Env) -> None:
    assert env.json("tracking", "feed") == []


def test_follow_streams_a_new_hit_and_sigint_exits_130(filled: Env) -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "syncd", "--config", str(filled.config),
         "tracking", "feed", "--follow", "--json", "--limit", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As a terminal starts it: a SIGINT the runner ignores would be ignored here too.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        assert child.stdout is not None
        backlog = [json.loads(child.stdout.readline()) for _ in range(2)]
        # tail -f: the latest ones oldest first, the newest last.
        assert [b["at"][11:16] for b in backlog] == ["09:30", "09:40"]
        store_hits(filled, hit(12, "open", 50, "machine"), hit(13, "click", 55, link=1))
        started = time.monotonic()
        line = child.stdout.readline()
        assert time.monotonic() - started < 5
        new = json.loads(line)
        assert (new["kind"], new["at"], new["url"]) == (
            "click",
            "2024-05-01T09:55:00Z",
            "https://acme.example/docs",
        )
        child.send_signal(signal.SIGINT)
        # communicate, not wait: the pipes are drained while it exits (a loaded machine).
        rest, errors = child.communicate(timeout=30)
        assert child.returncode == 130
        assert rest == ""  # the machine hit never showed
        assert errors == ""
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_status_and_metrics_count_tracking(filled: Env) -> None:
    report = filled.json("status")
    assert isinstance(report, dict)
    counts = report["tracking"]
    assert counts["messages"] == 4
    assert counts["hits"] == {"human": 6, "blocked": 0, "self": 0, "machine": 1,
                              "prefetch": 1, "scanner": 1}  # fmt: skip
    assert counts["clicks"]["human"] == 3 and counts["opens"]["human"] == 3
    text = filled.run("status")
    assert "tracking: 4 tracked message(s); hits: 6 human, 1 machine, 1 prefetch, 1 scanner" in (
        text.stdout
    )
    metrics = render(statusreport.gather(Config.from_yaml(filled.config))).decode()
    assert "syncd_tracking_messages_total 4.0" in metrics
    assert 'syncd_tracking_hits_total{kind="click",verdict="scanner"} 1.0' in metrics
    assert 'syncd_tracking_hits_total{kind="open",verdict="human"} 3.0' in metrics


TRACKING_COLUMNS = {
    "tracked_messages": ("message_key", "sender"),
    "tracked_links": ("url",),
    "tracking_hits": ("user_agent", "reason"),
    "submitter_ips": ("member",),
}


def test_erase_removes_tracking_and_no_byte_remains(filled: Env) -> None:
    # A link whose destination names her, a hit whose user agent does.
    track(
        filled,
        15,
        log_mail(filled, "unsub@x", "carol@acme.com", "Newsletter", 5),
        to="carol@acme.com",
        links=("https://acme.example/unsubscribe?u=carol@acme.com",),
    )
    store_hits(filled, hit(15, "click", 60, link=0, ua="Outlook (carol@acme.com)"))
    result = filled.run("erase", "carol@acme.com")
    assert result.exit_code == 0, result.output
    assert "5 tracked message(s)" in result.stdout  # four of hers, the anonymous one
    conn = filled.connect()
    try:
        left = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("tracked_messages", "tracked_links", "tracking_hits")}  # fmt: skip
        assert left == {"tracked_messages": 0, "tracked_links": 0, "tracking_hits": 0}
        for table, columns in TRACKING_COLUMNS.items():
            for column in columns:
                found = conn.execute(
                    f"SELECT count(*) FROM {table} WHERE {column} LIKE '%carol@acme.com%'"
                ).fetchone()[0]
                assert found == 0, (table, column)
    finally:
        conn.close()
    assert scan([filled.store], "carol@acme.com") == []
    # Dan keeps the email, redacted; its tracking went with hers: untracked now.
    (dans,) = filled.json("timeline", "dan@gmail.com")
    assert (dans["status"], dans["tracking"]) == ("untracked", None)
    assert filled.json("tracking", "feed", "--all") == []


def test_erase_leaves_other_contacts_tracking(filled: Env) -> None:
    track(
        filled,
        21,
        log_mail(filled, "dan@x", "Dan <dan@gmail.com>", "Dan only", 6),
        to="dan@gmail.com",
    )
    store_hits(filled, hit(21, "open", 70))
    assert filled.run("erase", "carol@acme.com").exit_code == 0
    (feed_item,) = filled.json("tracking", "feed")
    assert (feed_item["contact"], feed_item["subject"]) == ("dan@gmail.com", "Dan only")


# --- notify_command ------------------------------------------------------------------------

WRITER = """\
import sys
data = sys.stdin.buffer.read()
with open(sys.argv[1], "ab") as out:
    out.write(data)
"""


def test_notify_command_gets_json_of_human_hits_only(filled: Env) -> None:
    script = filled.tmp / "notify me.py"
    script.write_text(WRITER)
    out = filled.tmp / "events.jsonl"
    (filled.tmp / "cfg2.yaml").write_text(
        filled.config.read_text()
        + f"tracking:\n  notify_command: \"{sys.executable} '{script}' {out}\"\n"
    )
    notifier = NotifyCommand.from_config(Config.from_yaml(filled.tmp / "cfg2.yaml"))
    assert notifier is not None
    notifier.start()
    conn = filled.connect()
    try:
        # As the endpoint does after storing a batch: human hits notify.
        for stored in (hit(13, "click", 90, link=0), hit(12, "open", 91, "machine")):
            event = trackview.event(conn, stored)
            assert event is not None
            notifier.event(event)
        assert trackview.event(conn, hit(999, "open", 1)) is None  # an unknown message
    finally:
        conn.close()
    notifier.stop(timeout=20)
    (line,) = out.read_text().splitlines()
    got = json.loads(line)
    assert {k: got[k] for k in ("who", "kind", "url", "at", "subject", "verdict")} == {
        "who": "Carol Jones <carol@acme.com>",
        "kind": "click",
        "url": "https://acme.example/price?a=1&b=2",
        "at": "2024-05-01T10:30:00Z",
        "subject": "Clicked \x1b[31mred\x1b[0m",
        "verdict": "human",
    }
    assert isinstance(got["engagement_id"], int)
    assert notifier.counts == {"run": 1, "failed": 0, "dropped": 0}


def test_notify_failures_never_block_and_are_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "hooks.example/T0KEN"
    hang = NotifyCommand([sys.executable, "-c", "import time; time.sleep(30)", secret], timeout=0.5)
    hang.start()
    caplog.set_level(logging.WARNING, "syncd.services.notify")
    started = time.monotonic()
    for n in range(3):
        hang.event({"kind": "open", "verdict": "human", "n": n})
    assert time.monotonic() - started < 0.2  # the caller never waits on the command
    hang.stop(timeout=10)
    assert hang.counts["failed"] == 3
    warnings = [r.getMessage() for r in caplog.records]
    # One line when it first failed, one at stop with the rest: never one per event.
    assert len(warnings) == 2, warnings
    assert "1 failed" in warnings[0] and "was killed" in warnings[0]
    assert "2 failed" in warnings[1]
    assert all(secret not in w for w in warnings)

    caplog.clear()
    missing = NotifyCommand([str(tmp_path / "no-such-program")])
    missing.start()
    for n in range(5):
        missing.event({"verdict": "human", "n": n})
    missing.stop(timeout=10)
    assert missing.counts["failed"] == 5
    assert "cannot start it" in caplog.records[0].getMessage()


def test_notify_full_queue_drops_and_counts(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    slow = NotifyCommand(
        [
            sys.executable,
            "-c",
            f"import time; time.sleep(1); open({str(marker)!r}, 'a').write('x')",
        ],
        queue_size=2,
    )
    slow.start()
    for n in range(10):
        slow.event({"verdict": "human", "n": n})
    slow.stop(timeout=20)
    assert slow.counts["dropped"] >= 7
    assert slow.counts["run"] == marker.read_text().count("x") >= 1
    assert os.path.exists(marker)


def _steps(conn: sqlite3.Connection, message_id: int) -> tuple[tracking.Recent, int]:
    """``tracking.recent`` and the SQLite VM steps it took (counted 10 at a time)."""
    found, steps = vm_steps(
        conn,
        lambda: tracking.recent(conn, [message_id], SENT, at(500), history_of=[message_id]),
        10,
    )
    return found[message_id], steps


def test_judging_a_hit_reads_the_same_however_often_the_message_was_opened(env: Env) -> None:
    """What a new hit is judged against (the first human open, the clicks of the burst
    window) is read through indexes: a message opened 5,000 times (by people and by
    machines) costs no more to judge than one opened once."""
    track(env, 21, log_mail(env, "once@x", "carol@acme.com", "Once", 0), to="carol@acme.com")
    track(env, 22, log_mail(env, "often@x", "carol@acme.com", "Often", 1), to="carol@acme.com")
    store_hits(
        env, hit(21, "open", 5, "machine"), hit(21, "open", 10), hit(21, "click", 501, link=0)
    )
    store_hits(
        env,
        *(hit(22, "open", 5 + i / 100, "machine") for i in range(2500)),
        *(hit(22, "open", 10 + i / 100) for i in range(2500)),
        hit(22, "click", 400, link=0),  # before the burst window: not read
        hit(22, "click", 501, link=0),
    )
    conn = env.connect()
    try:
        once, once_steps = _steps(conn, 21)
        often, often_steps = _steps(conn, 22)
    finally:
        conn.close()
    assert once.human_open is not None and often.human_open is not None
    assert often.human_open.at == at(10)  # the first human open
    assert [c.at for c in often.clicks] == [at(501)]
    assert often_steps <= once_steps + 2
