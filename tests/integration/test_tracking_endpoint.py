"""The tracking endpoint over real sockets on 127.0.0.1, with a real store file.

``TrackingService`` runs in-process on an event loop thread with a real ``StoreWorker``;
requests go through ``http.client`` (no redirects followed; a chosen source address,
127.0.0.2, plays the trusted proxy). Tracked messages are made as the submission relay
makes them: the mail is logged through the pipeline, then ``record_message`` and
``attach_engagement``. One test runs the real ``syncd run`` daemon with tracking on.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from syncd.config.model import Config
from syncd.errors import StoreError
from syncd.mail.provenance import Provenance
from syncd.outbound import verdicts
from syncd.outbound.tokens import Signer, load_keys, new_key_line
from syncd.outbound.tracking import PIXEL_GIF, RawHit
from syncd.outbound.verdicts import Hit
from syncd.services.storeworker import StoreJob, StoreWorker
from syncd.services.tracking import Judging, TrackingService, judge_and_store
from syncd.store import db
from syncd.store import tracking as store
from tests.integration.conftest import Notify, as_json, free_port, syncd_run, vm_steps

HUMAN_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
PIXEL_HEADERS = {
    "Content-Type": "image/gif",
    "Cache-Control": "no-store, private",
    "Pragma": "no-cache",
    "X-Robots-Tag": "noindex",
}
LINKS = (
    "https://shop.example.com/offer?a=1&b=2",
    "https://docs.example.org/guide#part-2",
    "https://example.net/",
    "https://example.net/pricing",
)


def config_for(tmp_path: Path, **tracking: Any) -> Config:
    secret = tmp_path / "tracking.key"
    if not secret.exists():
        secret.write_text(new_key_line("k1") + "\n")
        secret.chmod(0o600)
    return Config.from_mapping(
        {
            "store": {
                "path": str(tmp_path / "store.sqlite3"),
                "attachments_dir": str(tmp_path / "att"),
            },
            "team": [{"name": "Ada", "email": "ada@example.com"}],
            "tracking": {
                "enabled": True,
                "listen": f"127.0.0.1:{free_port()}",
                "public_url": "https://t.example.com",
                "secret_file": str(secret),
                "trusted_proxies": ["127.0.0.2/32"],
                "blocked_ips": ["203.0.113.7"],
            }
            | tracking,
        }
    )


def signer_of(config: Config) -> Signer:
    assert config.tracking.secret_file is not None
    keys = load_keys(Path(config.tracking.secret_file).read_text())
    return Signer(keys, next(iter(keys)))


def log_tracked(
    job: StoreJob, message_id: int, relayed_at: datetime, to: str = "client@customer.example"
) -> int:
    """Log an outgoing mail through the pipeline and track it; its engagement id."""
    raw = (
        f"From: Ada <ada@example.com>\r\nTo: {to}\r\nSubject: Offer {message_id}\r\n"
        f"Message-ID: <m{message_id}@example.com>\r\nDate: Mon, 3 Nov 2025 10:00:00 +0000\r\n"
        "\r\nHello\r\n"
    ).encode()
    provenance = Provenance(source="bcc", received_at=relayed_at, sender="ada@example.com")
    [outcome] = job.pipeline.ingest_batch([(raw, provenance)])
    assert outcome.status == "logged", outcome
    conn = job.session.conn
    key, engagement = conn.execute(
        "SELECT message_key, engagement_id FROM emails WHERE message_id = ?",
        (f"m{message_id}@example.com",),
    ).fetchone()
    with job.session.transaction():
        tracked = store.TrackedMessage(message_id, key, "ada@example.com", relayed_at, LINKS)
        assert store.record_message(conn, tracked)
        store.attach_engagement(conn, key)
        conn.execute("UPDATE engagements SET status = 'sent' WHERE id = ?", (engagement,))
    return int(engagement)


class Running:
    """A TrackingService on its own event loop thread, with its StoreWorker."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.signer = signer_of(config)
        self.worker = StoreWorker(config)
        self.worker.open()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.service = TrackingService(config, self.worker)
        self.await_(self.service.start(lambda *_: None))
        assert self.service.port is not None
        self.port = self.service.port
        self.reader = db.connect(config.store.path, readonly=True)

    def await_(self, coro: Any, timeout: float = 20) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def track(self, message_id: int, relayed_at: datetime | None = None) -> int:
        at = relayed_at or datetime.now(UTC) - timedelta(hours=1)
        return self.worker.call(log_tracked, message_id, at)

    def get(
        self,
        path: str,
        *,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        source: str = "127.0.0.1",
    ) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=5, source_address=(source, 0)
        )
        conn.request(method, path, headers={"User-Agent": HUMAN_UA} | (headers or {}))
        response = conn.getresponse()
        response.body = response.read()  # type: ignore[attr-defined]
        conn.close()
        return response

    def pixel(self, message_id: int, **kwargs: Any) -> http.client.HTTPResponse:
        return self.get(f"/o/{self.signer.open_token(message_id)}.gif", **kwargs)

    def click(self, message_id: int, index: int, **kwargs: Any) -> http.client.HTTPResponse:
        return self.get(f"/c/{self.signer.click_token(message_id, index)}", **kwargs)

    def hits(self, message_id: int, count: int, timeout: float = 10) -> list[sqlite3.Row]:
        """The message's stored hits once there are ``count`` (and the queue is empty)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.reader.execute(
                "SELECT * FROM tracking_hits WHERE message_id = ? ORDER BY at, id", (message_id,)
            ).fetchall()
            idle = self.service.counts.written + self.service.counts.dropped >= (
                self.service.counts.queued
            )
            if (len(rows) >= count and idle) or time.monotonic() > deadline:
                return rows
            time.sleep(0.02)

    def status(self, engagement: int) -> str | None:
        return self.reader.execute(
            "SELECT status FROM engagements WHERE id = ?", (engagement,)
        ).fetchone()[0]

    def close(self) -> None:
        self.await_(self.service.stop(time.monotonic() + 10))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.reader.close()
        self.worker.close()


@pytest.fixture
def make_running(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def make(**tracking: Any) -> Running:
        running = Running(config_for(tmp_path, **tracking))
        started.append(running)
        return running

    yield make
    for running in started:
        running.close()


@pytest.fixture
def running(make_running: Callable[..., Running]) -> Running:
    return make_running()


def altered(token: str) -> str:
    middle = len(token) // 2
    return token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]


def test_pixel_answers_the_gif_for_good_and_bad_tokens(running: Running) -> None:
    running.track(1)
    good = running.signer.open_token(1)
    paths = [
        f"/o/{good}.gif",
        f"/o/{altered(good)}.gif",
        f"/o/{running.signer.click_token(1, 0)}.gif",  # a click token is no pixel
        "/o/not-a-token.gif",
        "/o/%00%ff%0d%0aSet-Cookie:%20x.gif",
        f"/o/{'A' * 4000}.gif",
        f"/o/{new_signer().open_token(1)}.gif",  # another installation's key
    ]
    for path in paths:
        response = running.get(path)
        assert response.status == 200, path
        assert response.body == PIXEL_GIF  # type: ignore[attr-defined]
        for name, value in PIXEL_HEADERS.items():
            assert response.getheader(name) == value, (path, name)
        assert response.getheader("Location") is None
        assert response.getheader("Set-Cookie") is None
    [hit] = running.hits(1, 1)
    assert (hit["kind"], hit["verdict"], hit["ip"]) == ("open", "human", "127.0.0.0/24")
    assert running.service.counts.bad_tokens == len(paths) - 1


def new_signer() -> Signer:
    keys = load_keys(new_key_line("k1"))
    return Signer(keys, "k1")


def test_click_redirects_to_the_stored_url(running: Running) -> None:
    running.track(2)
    for index, url in enumerate(LINKS):
        response = running.click(2, index)
        assert response.status == 302
        assert response.getheader("Location") == url
        assert response.getheader("Cache-Control") == "no-store, private"
        assert response.getheader("Referrer-Policy") == "no-referrer"
    rows = running.hits(2, len(LINKS))
    assert [(r["kind"], r["link_idx"]) for r in rows] == [("click", i) for i in range(len(LINKS))]


def test_clicks_that_miss_the_cache_together_share_reads(running: Running) -> None:
    for message_id in range(20, 32):
        running.track(message_id)
    links = running.service._links
    assert links is not None
    reads: list[list[int]] = []
    read = links._read
    links._read = lambda ids: reads.append(sorted(ids)) or read(ids)  # type: ignore[method-assign]
    # The reader's thread is busy: every click below misses the cache and waits.
    release = threading.Event()
    held = links._executor.submit(release.wait, 10)
    wanted = [(m, i) for m in range(20, 32) for i in (0, 1)]  # two links of each message
    answers: dict[tuple[int, int], tuple[int, str | None]] = {}

    def click(message_id: int, index: int) -> None:
        response = running.click(message_id, index)
        answers[message_id, index] = (response.status, response.getheader("Location"))

    clickers = [threading.Thread(target=click, args=pair) for pair in wanted]
    for clicker in clickers:
        clicker.start()
    deadline = time.monotonic() + 5
    while len(links._wanted) + len(links._reading) < 12 and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    held.result(5)
    for clicker in clickers:
        clicker.join(10)
    assert answers == {(m, i): (302, LINKS[i]) for m, i in wanted}
    # One read for the first click, one for all that came while it waited; no message twice.
    assert len(reads) <= 2, reads
    assert sorted(m for ids in reads for m in ids) == list(range(20, 32))


def test_a_link_the_store_cannot_read_now_gets_503_and_no_location(running: Running) -> None:
    running.track(33)
    links = running.service._links
    assert links is not None

    def failing(ids: list[int]) -> dict[int, tuple[str, ...] | None]:
        raise StoreError("cannot read a tracked link: disk I/O error")

    links._read = failing  # type: ignore[method-assign]
    response = running.click(33, 0)
    assert (response.status, response.getheader("Location")) == (503, None)
    assert response.getheader("Cache-Control") == "no-store, private"
    del links._read  # the store can be read again: the reader retries, nothing was cached
    response = running.click(33, 0)
    assert (response.status, response.getheader("Location")) == (302, LINKS[0])


def test_forged_or_unknown_click_tokens_get_404_without_location(running: Running) -> None:
    running.track(3)
    good = running.signer.click_token(3, 0)
    forged = [
        f"/c/{altered(good)}",
        f"/c/{running.signer.open_token(3)}",
        f"/c/{new_signer().click_token(3, 0)}",
        "/c/https:%2F%2Fevil.example",
        "/c/https://evil.example/",
        "/c/" + base64.urlsafe_b64encode(b"https://evil.example").decode().rstrip("="),
        f"/c/{good}?url=https://evil.example",  # the query is ignored: the stored URL
    ]
    for path in forged[:-1]:
        response = running.get(path)
        assert response.status == 404, path
        assert response.getheader("Location") is None
    assert running.get(forged[-1]).getheader("Location") == LINKS[0]
    # Forged tokens are turned away before any read: no lookup happened for them.
    assert running.service.counts.unknown_links == 0
    # Genuine tokens the store does not know (no such message, no such link): 404 too.
    for path in (
        f"/c/{running.signer.click_token(999, 0)}",
        f"/c/{running.signer.click_token(3, 9)}",
    ):
        response = running.get(path)
        assert response.status == 404 and response.getheader("Location") is None
    assert running.service.counts.unknown_links == 2
    for path in ("/", "/o/", "/c/", "/x", "/o/token.png", "/robots.txt", "/c/a/b"):
        assert running.get(path).status == 404, path


def test_head_and_prefetch_are_answered_not_recorded(running: Running) -> None:
    running.track(4)
    assert running.pixel(4, method="HEAD").status == 200
    assert running.click(4, 0, method="HEAD").status == 302
    assert running.pixel(4, headers={"Purpose": "prefetch"}).status == 200
    response = running.click(4, 1, headers={"Sec-Purpose": "prefetch;prerender"})
    assert response.status == 302 and response.getheader("Location") == LINKS[1]
    assert running.pixel(4).status == 200  # the one real open
    rows = running.hits(4, 1)
    time.sleep(0.3)
    rows = running.hits(4, 1)
    assert [r["kind"] for r in rows] == ["open"]
    assert running.service.counts.not_recorded == 4


def test_blocked_ip_through_a_trusted_proxy_and_a_spoofed_xff(running: Running) -> None:
    running.track(5)
    xff = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}
    running.pixel(5, headers=xff, source="127.0.0.2")  # our proxy: the header is believed
    running.pixel(5, headers=xff, source="127.0.0.1")  # anyone else: ignored
    rows = running.hits(5, 2)
    assert [(r["ip"], r["verdict"]) for r in rows] == [
        ("203.0.113.0/24", "blocked"),
        ("127.0.0.0/24", "human"),
    ]


def test_rate_limit_answers_but_does_not_record(make_running: Callable[..., Running]) -> None:
    running = make_running(rate_per_minute=5)
    running.track(6)
    statuses = [running.pixel(6).status for _ in range(8)]
    assert statuses == [200] * 8
    # Another client is not held back by the first one's limit.
    running.pixel(6, headers={"X-Forwarded-For": "198.51.100.9"}, source="127.0.0.2")
    rows = running.hits(6, 6)
    assert len(rows) == 6
    assert running.service.counts.rate_limited == 3


def test_full_queue_drops_and_counts_never_blocks(make_running: Callable[..., Running]) -> None:
    running = make_running(queue_size=3)
    running.track(7)
    release = threading.Event()
    # The store thread is busy (a slow store): hits wait in the queue, then are dropped.
    held = running.worker.submit(lambda job: release.wait(10))
    times = []
    for _ in range(10):
        started = time.monotonic()
        assert running.pixel(7).status == 200
        times.append(time.monotonic() - started)
    assert max(times) < 2.0, times  # far below the 10 s the store is held for
    counts = running.service.counts
    assert counts.dropped >= 6 and counts.queued + counts.dropped == 10
    release.set()
    held.result(5)
    rows = running.hits(7, counts.queued)
    assert len(rows) == counts.queued  # every queued hit is stored: none lost below the bound


def test_each_verdict_rule_is_stored(running: Running) -> None:
    # Apple Mail Privacy Protection: exactly "Mozilla/5.0".
    running.track(10)
    running.pixel(10, headers={"User-Agent": "Mozilla/5.0"})
    [hit] = running.hits(10, 1)
    assert hit["verdict"] == "machine" and "Apple" in hit["reason"]

    # An open within prefetch_seconds of the smarthost's 250.
    running.track(11, relayed_at=datetime.now(UTC))
    running.pixel(11)
    [hit] = running.hits(11, 1)
    assert hit["verdict"] == "prefetch"

    # The sender's own address (submitted from lately): their Sent copy.
    engagement = running.track(12)
    running.worker.call(
        lambda job: store.remember_submitter(
            job.session.conn, "ada@example.com", "127.0.0.0/24", datetime.now(UTC)
        )
    )
    running.pixel(12)
    running.click(12, 0)
    rows = running.hits(12, 2)
    assert [r["verdict"] for r in rows] == ["self", "self"]
    assert running.status(engagement) == "sent"


def test_scanner_burst_is_rejudged(running: Running) -> None:
    engagement = running.track(13)
    for index in range(3):  # three distinct links within 2 s
        assert running.click(13, index, headers={"X-Forwarded-For": "192.0.2.50"}).status == 302
    rows = running.hits(13, 3)
    time.sleep(0.2)
    rows = running.hits(13, 3)
    assert [r["verdict"] for r in rows] == ["scanner"] * 3, [dict(r) for r in rows]
    assert not any(r["inferred_open"] for r in rows)
    # The first click had lifted the status when it looked human; the re-judge undid it.
    assert running.status(engagement) == "sent"


def test_status_moves_sent_opened_clicked_on_human_hits_only(running: Running) -> None:
    engagement = running.track(14)
    assert running.status(engagement) == "sent"
    running.pixel(14, headers={"User-Agent": "Mozilla/5.0"})  # a machine open
    running.hits(14, 1)
    assert running.status(engagement) == "sent"
    running.pixel(14)
    running.hits(14, 2)
    assert running.status(engagement) == "opened"
    running.click(14, 3, headers={"User-Agent": "curl/8.0"})  # a machine click
    running.hits(14, 3)
    assert running.status(engagement) == "opened"
    running.click(14, 3)
    rows = running.hits(14, 4)
    assert running.status(engagement) == "clicked"
    assert [r["verdict"] for r in rows] == ["machine", "human", "machine", "human"]

    # A human click with no open before: an inferred open, and the status is clicked.
    other = running.track(15)
    running.click(15, 1)
    [hit] = running.hits(15, 1)
    assert hit["verdict"] == "human" and hit["inferred_open"] == 1
    assert running.status(other) == "clicked"


def test_stop_flushes_the_queue(make_running: Callable[..., Running]) -> None:
    running = make_running()
    running.track(16)
    release = threading.Event()
    held = running.worker.submit(lambda job: release.wait(10))
    for _ in range(5):
        running.pixel(16)
    threading.Timer(0.3, release.set).start()
    running.await_(running.service.stop(time.monotonic() + 10))
    held.result(5)
    count = running.reader.execute(
        "SELECT count(*) FROM tracking_hits WHERE message_id = 16"
    ).fetchone()[0]
    assert count == 5
    running.service.stop = _noop  # type: ignore[method-assign]  # stopped already


async def _noop(_deadline: float) -> None:
    return None


# The real daemon -----------------------------------------------------------------------


def test_syncd_run_with_tracking(tmp_path: Path, notify: Notify) -> None:
    config = config_for(tmp_path)
    path = tmp_path / "syncd.yaml"
    t = config.tracking
    metrics_port = free_port()
    path.write_text(
        f"store: {{path: {config.store.path}, attachments_dir: {tmp_path / 'att'}}}\n"
        "team: [{name: Ada, email: ada@example.com}]\n"
        f"tracking: {{enabled: true, listen: '{t.listen}', public_url: 'https://t.example.com',"
        f" secret_file: {t.secret_file}}}\n"
        f"metrics: {{listen: '127.0.0.1:{metrics_port}'}}\n"
    )
    # The tracked mail is in the store before the daemon starts (as after a relay).
    worker = StoreWorker(config)
    worker.open()
    engagement = worker.call(log_tracked, 20, datetime.now(UTC) - timedelta(hours=1))
    worker.close()
    signer = signer_of(config)
    with syncd_run(path, notify) as daemon:
        port = t.listen.port

        def get(target: str) -> http.client.HTTPResponse:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", target, headers={"User-Agent": HUMAN_UA})
            response = conn.getresponse()
            response.read()
            conn.close()
            return response

        assert get("/o/bogus.gif").status == 200
        assert get(f"/o/{signer.open_token(20)}.gif").status == 200
        response = get(f"/c/{signer.click_token(20, 1)}")
        assert (response.status, response.getheader("Location")) == (302, LINKS[1])
        assert get(f"/c/{altered(signer.click_token(20, 1))}").status == 404
        # The running daemon's counts reach `status` and /metrics with its heartbeat (5 s).
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            report = status_json(path)
            if report["tracking"].get("bad_tokens") == 2:
                break
            time.sleep(0.5)
        assert report["tracking"]["bad_tokens"] == 2 and report["tracking"]["dropped"] == 0
        assert report["tracking"]["state"] == "listening"
        metrics = get_metrics(metrics_port)
        assert "syncd_tracking_bad_tokens_total 2.0" in metrics
        assert "syncd_tracking_dropped_total 0.0" in metrics
        assert daemon.stop(30) == 0
    assert "tracking on 127.0.0.1:" in daemon.stderr
    conn = db.connect(config.store.path, readonly=True)
    rows = conn.execute("SELECT kind, verdict FROM tracking_hits ORDER BY id").fetchall()
    assert [tuple(r) for r in rows] == [("open", "human"), ("click", "human")]
    assert (
        conn.execute("SELECT status FROM engagements WHERE id = ?", (engagement,)).fetchone()[0]
        == "clicked"
    )
    conn.close()
    hits = status_json(path)["tracking"]["hits"]
    assert {v: n for v, n in hits.items() if n} == {"human": 2}


def status_json(path: Path) -> dict[str, Any]:
    return dict(as_json(path, "status"))


def get_metrics(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/metrics")
    body = conn.getresponse().read().decode()
    conn.close()
    return body


def test_notify_command_gets_each_human_hit_as_json(
    make_running: Callable[..., Running], tmp_path: Path
) -> None:
    """tracking.notify_command runs for a person's open and click, not a machine's."""
    out = tmp_path / "events.jsonl"
    script = tmp_path / "notify.py"
    script.write_text(
        "import sys\n"
        f"with open({str(out)!r}, 'a') as f:\n"
        "    f.write(sys.stdin.read().strip() + '\\n')\n"
    )
    running = make_running(notify_command=f"{sys.executable} {script}")
    running.track(41)
    assert running.pixel(41, headers={"User-Agent": "Mozilla/5.0"}).status == 200  # Apple MPP
    assert running.pixel(41).status == 200
    assert running.click(41, 1).status == 302
    running.hits(41, 3)
    deadline = time.monotonic() + 10
    while (
        time.monotonic() < deadline
        and len(out.read_text().splitlines() if out.exists() else []) < 2
    ):
        time.sleep(0.05)
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e["kind"], e["verdict"]) for e in events] == [("open", "human"), ("click", "human")]
    assert events[1]["url"] == LINKS[1] and events[1]["subject"] == "Offer 41"


def _judge_counting_steps(running: Running, batch: list[RawHit]) -> int:
    """``judge_and_store`` of ``batch`` on the store thread; the SQLite VM steps it took
    (counted 100 at a time)."""
    judging = Judging.from_config(running.config.tracking)

    def judge(job: StoreJob) -> int:
        return vm_steps(
            job.session.conn, lambda: judge_and_store(job.session, batch, judging), 100
        )[1]

    return running.worker.call(judge)


def test_a_rejudge_writes_only_the_verdicts_it_changes(running: Running) -> None:
    """A scanner's fourth click, on a link it clicked already, re-judges the burst's
    window; the three clicks judged `scanner` stay as they are (three links within 2 s),
    so the store writes the new hit alone."""
    now = datetime.now(UTC)
    running.track(32, relayed_at=now - timedelta(hours=1))
    judging = Judging.from_config(running.config.tracking)
    clicks = [
        RawHit("click", 32, i % 3, now + timedelta(seconds=i / 4), "198.51.100.9", HUMAN_UA)
        for i in range(4)
    ]

    def judge(job: StoreJob, batch: list[RawHit]) -> int:
        before = job.session.conn.total_changes
        judge_and_store(job.session, batch, judging)
        return job.session.conn.total_changes - before

    # The first click stored human, then re-judged scanner with the next two.
    assert running.worker.call(judge, clicks[:1]) == 2  # the hit, the status
    assert running.worker.call(judge, clicks[1:3]) == 2 + 2 + 1  # hits, old verdicts, status
    assert running.worker.call(judge, clicks[3:]) == 1
    stored = running.worker.call(lambda job: store.hits(job.session.conn, 32))
    assert [h.verdict for h in stored] == ["scanner"] * 4


def test_a_burst_rejudges_its_window_not_the_message_history(running: Running) -> None:
    """A scanner burst re-judges the hits a burst can hold; a message with 3,000 hits from
    the past hour costs no more to re-judge than one with three, and the result is what
    re-judging the whole message gives."""
    now = datetime.now(UTC)
    hour_ago = now - timedelta(hours=1)
    for message_id, old in ((30, 1), (31, 1000)):
        running.track(message_id, relayed_at=hour_ago - timedelta(hours=1))
        past = [
            store.StoredHit(message_id, kind, hour_ago + timedelta(seconds=i), "192.0.2.0/24",
                            HUMAN_UA, "human", link, False, "a person")
            for i in range(old)
            for kind, link in (("open", None), ("open", None), ("click", 0))
        ]  # fmt: skip
        running.worker.call(lambda job, hits=past: store.record_hits(job.session.conn, hits))
    burst = [
        RawHit("click", message_id, index, now + timedelta(seconds=index / 4), "198.51.100.9",
               HUMAN_UA)
        for message_id in (30, 31)
        for index in range(3)
    ]  # fmt: skip
    few = _judge_counting_steps(running, [h for h in burst if h.message_id == 30])
    many = _judge_counting_steps(running, [h for h in burst if h.message_id == 31])
    assert many <= few + 5, (few, many)

    judging = Judging.from_config(running.config.tracking)
    for message_id in (30, 31):
        stored = running.worker.call(lambda job, m=message_id: store.hits(job.session.conn, m))
        assert [h.verdict for h in stored[-3:]] == ["scanner"] * 3
        whole = verdicts.rejudge(
            [Hit(h.kind, h.at, h.ip, h.user_agent, h.link_idx) for h in stored],  # type: ignore[arg-type]
            hour_ago - timedelta(hours=1),
            frozenset(),
            judging.rules,
            judging.thresholds,
        )
        assert [(h.verdict, h.inferred_open) for h in stored] == [
            (j.verdict.verdict, j.verdict.inferred_open) for j in whole
        ]
