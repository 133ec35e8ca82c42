"""Mail larger than store.max_attachment_mb, synced from a real Dovecot into a real store,
is fetched by parts (the attachments the store would not keep stay on the server); mail
that stops every pass is given up to the quarantine after a few."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from syncd.config.model import Config
from syncd.mail.parse import parse
from syncd.pipeline import Pipeline
from syncd.services.imap import inbox_pass
from syncd.services.storeworker import StoreJob
from syncd.sources.imap.syncplan import MAX_STUCK_PASSES
from syncd.store import db, queries
from tests.integration.conftest import ImapUser

MIB = 1024 * 1024
WHEN = datetime.now(UTC) - timedelta(days=1)  # inbox_pass syncs as of now


def big_message(message_id: str | None, attachment: bytes, small: bytes) -> bytes:
    """A text part, a small attachment and a large one, base64 in 76-character lines."""
    encoded = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    ident = f"Message-ID: <{message_id}>\r\n" if message_id else ""
    return (
        (
            f"From: Jane Doe <jane@acme.example>\r\nTo: ada@example.com\r\n{ident}"
            "Subject: the site survey\r\nDate: Mon, 3 Mar 2025 09:00:00 +0000\r\n"
            'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="=_outer"\r\n\r\n'
            "This is a multi-part message in MIME format.\r\n"
            "--=_outer\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            "Survey photos attached, the drone footage is too big for the CRM.\r\n"
            "--=_outer\r\nContent-Type: text/csv; name=points.csv\r\n"
            "Content-Disposition: attachment; filename=points.csv\r\n\r\n"
        ).encode()
        + small
        + (
            b'\r\n--=_outer\r\nContent-Type: video/mp4; name="drone footage.mp4"\r\n'
            b"Content-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="drone footage.mp4"\r\n\r\n'
        )
        + encoded
        + b"--=_outer--\r\n"
    )


def config_for(user: ImapUser, tmp_path: Path) -> Config:
    return Config.from_mapping(
        {
            "store": {"path": str(tmp_path / "crm.sqlite3"),
                      "attachments_dir": str(tmp_path / "att"), "max_attachment_mb": 1},
            "team": [{"name": "Ada", "email": "ada@example.com"}],
            "inboxes": [{
                "name": "ada", "kind": "personal", "owner": "ada@example.com",
                "imap": {"host": "127.0.0.1", "port": user.server.port, "security": "none",
                         "username": user.name, "password": user.password, "timeout": 10},
                "sync": {"from": "1m", "folders": ["INBOX"], "create_contacts": True},
            }],
        }
    )  # fmt: skip


def test_large_message_is_logged_once_without_its_big_attachment(
    imap_user: ImapUser, tmp_path: Path
) -> None:
    footage = os.urandom(3 * MIB)
    small = b"x,y\r\n" + b"1,2\r\n" * 2000
    with_id = big_message("survey@acme.example", footage, small)
    without_id = big_message(None, footage, small + b"3,4\r\n")
    for raw in (with_id, without_id):
        imap_user.append("INBOX", raw, WHEN)
    config = config_for(imap_user, tmp_path)
    conn = db.connect(config.store.path)

    def sync() -> Any:
        with Pipeline.from_config(config, conn, workers=1) as pipeline:
            result, _ = inbox_pass(
                config.inboxes[0],
                lambda fn, *a: fn(StoreJob(pipeline.session, pipeline), *a),
                parse_ahead=pipeline.parse_ahead,
            )
        assert result.state == "ok" and result.error is None, result.error
        return result.folders[0]

    first = sync()
    assert (first.logged, first.quarantined) == (2, 0)
    timeline = queries.timeline(conn, "jane@acme.example")
    assert timeline is not None and len(timeline) == 2
    keys = conn.execute("SELECT message_key, body, size FROM emails ORDER BY engagement_id")
    originals = [parse(raw, received_at=WHEN) for raw in (with_id, without_id)]
    # The same key a whole fetch gives, the text, the size on the server.
    assert [tuple(row) for row in keys] == [
        (o.key, o.text, len(raw)) for o, raw in zip(originals, (with_id, without_id), strict=True)
    ]
    assert originals[0].key == "survey@acme.example"
    assert originals[1].key.startswith("sha256:")
    for item in timeline:
        assert item["subject"] == "the site survey"
        points, footage_row = item["attachments"]
        assert (points["filename"], points["stored"]) == ("points.csv", True)
        assert footage_row["filename"] == "drone footage.mp4"
        assert footage_row["content_type"] == "video/mp4" and not footage_row["stored"]
        assert footage_row["note"] == "not stored: larger than store.max_attachment_mb"
        assert 3 * MIB * 0.97 < footage_row["size"] <= 3 * MIB  # estimated from base64
    # The raw copy is the rebuilt message, marked partial: the footage never reached it.
    for size, raw_size in conn.execute(
        "SELECT e.size, r.size FROM emails e JOIN raw_messages r USING (engagement_id)"
    ):
        assert size > 4 * MIB and raw_size < 64 * 1024

    again = sync()  # nothing new
    assert (again.logged, again.duplicates) == (0, 0)
    imap_user.server.doveadm(
        "mailbox", "update", "-u", imap_user.name, "--uid-validity", "999", "INBOX"
    )
    # A rescan skips the one with a Message-ID and fetches the other by parts again: the
    # same digest key, so a duplicate.
    rescan = sync()
    assert (rescan.logged, rescan.duplicates) == (0, 2)
    assert conn.execute("SELECT count(*) FROM engagements").fetchone()[0] == 2


def test_a_message_that_fails_every_pass_is_quarantined_and_the_folder_goes_on(
    imap_user: ImapUser, tmp_path: Path
) -> None:
    def note(n: int) -> bytes:
        return (
            f"From: jane@acme.example\r\nTo: ada@example.com\r\nSubject: note {n}\r\n"
            f"Message-ID: <note{n}@acme.example>\r\n\r\nnote {n}\r\n"
        ).encode()

    config = config_for(imap_user, tmp_path)
    conn = db.connect(config.store.path)

    def sync() -> Any:
        with Pipeline.from_config(config, conn, workers=0) as pipeline:
            result, _ = inbox_pass(
                config.inboxes[0], lambda fn, *a: fn(StoreJob(pipeline.session, pipeline), *a)
            )
        assert result.state == "ok", result.error
        return result.folders[0]

    imap_user.append("INBOX", note(1), WHEN)
    assert sync().logged == 1  # the past scan is done: later passes fetch no headers
    for n in (2, 3):
        imap_user.append("INBOX", note(n), WHEN)
    (unreadable,) = [p for p in imap_user.maildir.glob("*/*") if b"<note2@" in p.read_bytes()]
    unreadable.chmod(0)  # Dovecot answers BYE whenever it fetches UID 2

    for _ in range(MAX_STUCK_PASSES):
        stalled = sync()
        assert "UID 2" in (stalled.error or "")
    assert conn.execute("SELECT count(*) FROM emails").fetchone()[0] == 1
    assert tuple(conn.execute("SELECT stuck_uid, stuck_passes FROM sync_folders").fetchone()) == (
        2, MAX_STUCK_PASSES,
    )  # fmt: skip
    given_up = sync()
    assert (given_up.error, given_up.logged, given_up.quarantined) == (None, 1, 1)
    (reason, label, raw) = conn.execute("SELECT reason, label, raw FROM quarantine").fetchone()
    assert label == "imap:ada/INBOX" and "UID 2 in INBOX" in reason and b"UID 2" in raw
    assert tuple(conn.execute("SELECT last_uid, stuck_uid FROM sync_folders").fetchone()) == (3, 0)
