"""A store whose file is damaged: `run` refuses it, `doctor` and `check-store` say so
briefly, and a daemon whose store is damaged under it answers BCC senders 451 and says
so once.

The store is built by the real CLI (`syncd import`), then pages of its `emails` table
are overwritten with garbage, as a failing disk or a bad copy leaves them. Each test
first confirms that SQLite's own check sees the damage.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import struct
import time
from pathlib import Path

import pytest

from tests.integration.conftest import Notify, free_port, syncd
from tests.integration.test_daemon import MINIMAL, bcc_message, start
from tests.integration.test_health import get
from tests.integration.test_store_failures import send

GARBAGE = b"\xde\xad\xbe\xef"


def config_text(tmp_path: Path, smtp_port: int | None = None) -> str:
    text = MINIMAL + f"store: {{path: '{tmp_path}/var/syncd.sqlite3'}}\n"
    if smtp_port is not None:
        text += (
            f"bcc: {{listen: '127.0.0.1:{smtp_port}', addresses: [log@crm.example.com], "
            "verify_sender: none}\n"
        )
    return text


def build_store(tmp_path: Path, config: str, n: int = 300) -> Path:
    """A store of ``n`` mails logged by `syncd import`; the config file's path."""
    mails = tmp_path / "mails"
    mails.mkdir()
    for i in range(n):
        (mails / f"{i}.eml").write_bytes(
            f"From: Ada <ada@example.com>\r\nTo: client{i}@client{i}.example\r\n"
            f"Subject: offer {i}\r\nMessage-ID: <imported{i}@example.com>\r\n\r\n"
            f"body {i} {'lorem ipsum ' * 200}\r\n".encode()
        )
    path = tmp_path / "syncd.yaml"
    path.write_text(config)
    done = syncd(path, "import", str(mails), "--owner", "ada@example.com")
    assert done.returncode == 0, done.stderr
    assert f"logged {n}" in done.stdout
    return path


def emails_pages(store: Path) -> tuple[int, list[int]]:
    """The `emails` table's root page and the pages its root points to."""
    with contextlib.closing(sqlite3.connect(store)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the file itself
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'emails'").fetchone()
    data = read_page(store, root[0], size)
    assert data[0] == 0x05, "the store should be large enough for an interior root page"
    cells = struct.unpack(">H", data[3:5])[0]
    offsets = [struct.unpack(">H", data[12 + 2 * i : 14 + 2 * i])[0] for i in range(cells)]
    children = [struct.unpack(">I", data[o : o + 4])[0] for o in offsets]
    return root[0], [*children, struct.unpack(">I", data[8:12])[0]]


def read_page(store: Path, number: int, size: int) -> bytes:
    with open(store, "rb") as handle:
        handle.seek((number - 1) * size)
        return handle.read(size)


def overwrite(store: Path, pages: list[int]) -> dict[int, bytes]:
    """Garbage over the start of each page (its b-tree header and first cells); returns
    what was there, to put back."""
    with contextlib.closing(sqlite3.connect(store)) as conn:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    saved = {}
    with open(store, "r+b") as handle:
        for number in pages:
            handle.seek((number - 1) * size)
            saved[number] = handle.read(size)
            handle.seek((number - 1) * size)
            handle.write(GARBAGE * 256)
    return saved


def put_back(store: Path, saved: dict[int, bytes]) -> None:
    with contextlib.closing(sqlite3.connect(store)) as conn:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    with open(store, "r+b") as handle:
        for number, data in saved.items():
            handle.seek((number - 1) * size)
            handle.write(data)


def quick_check_sees_damage(store: Path) -> bool:
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as conn:
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:
            return exc.sqlite_errorname == "SQLITE_CORRUPT"
    return rows != [("ok",)]


def damaged_store(tmp_path: Path) -> tuple[Path, Path]:
    """A store with several of its `emails` pages overwritten, mid-file; (config, store)."""
    config = build_store(tmp_path, config_text(tmp_path))
    store = tmp_path / "var" / "syncd.sqlite3"
    _root, leaves = emails_pages(store)
    middle = len(leaves) // 2
    overwrite(store, leaves[middle - 3 : middle + 3])
    assert quick_check_sees_damage(store)
    return config, store


def test_run_refuses_a_damaged_store_with_one_line_and_exit_65(tmp_path: Path) -> None:
    config, store = damaged_store(tmp_path)
    started = time.monotonic()
    done = syncd(config, "run")
    assert done.returncode == 65, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(store) in lines[0]
    assert "is damaged" in lines[0]
    assert "restore it from a backup" in lines[0]
    assert "syncd check-store" in lines[0]
    assert time.monotonic() - started < 30


def test_doctor_summarises_a_damaged_store(tmp_path: Path) -> None:
    config, store = damaged_store(tmp_path)
    done = syncd(config, "doctor")
    assert done.returncode == 1
    [line] = [ln for ln in done.stdout.splitlines() if str(store) in ln]
    assert line.startswith(f"FAIL store {store}: damaged: ")
    assert "problem(s), first: " in line
    assert "syncd check-store" in line
    assert len(done.stdout.splitlines()) <= 3, done.stdout

    as_json = json.loads(syncd(config, "doctor", "--json").stdout)
    [check] = [c for c in as_json if c["name"] == f"store {store}"]
    assert check["ok"] is False
    assert "\n" not in check["detail"]


def test_check_store_exit_codes_and_summary(tmp_path: Path) -> None:
    config = build_store(tmp_path, config_text(tmp_path))
    store = tmp_path / "var" / "syncd.sqlite3"
    done = syncd(config, "check-store")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"store {store}: ok (full integrity check, ")
    report = json.loads(syncd(config, "check-store", "--json").stdout)
    assert report["ok"] is True and report["problems"] == [] and report["count"] == 0

    _root, leaves = emails_pages(store)
    overwrite(store, leaves[2:12])
    assert quick_check_sees_damage(store)
    done = syncd(config, "check-store")
    assert done.returncode == 65
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"store {store}: damaged, ")
    assert len(lines) <= 8, done.stdout  # the count, five problems, "and N more", what to do
    assert "restore the store from a backup" in done.stdout
    report = json.loads(syncd(config, "check-store", "--json").stdout)
    assert report["ok"] is False
    assert report["count"] == len(report["problems"]) >= 10

    missing = tmp_path / "elsewhere.yaml"
    missing.write_text(MINIMAL + f"store: {{path: '{tmp_path}/none/syncd.sqlite3'}}\n")
    done = syncd(missing, "check-store")
    assert done.returncode == 1
    assert done.stderr.strip() == f"syncd: no store at {tmp_path}/none/syncd.sqlite3"


def test_backup_of_a_damaged_store_names_the_store_and_writes_nothing(tmp_path: Path) -> None:
    config, store = damaged_store(tmp_path)
    dest = tmp_path / "backups" / "syncd.tar"
    dest.parent.mkdir()
    done = syncd(config, "backup", str(dest))
    assert done.returncode == 65, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"syncd: the store {store} is damaged ("), line
    assert "restore it from a backup" in line
    assert list(dest.parent.iterdir()) == []  # no archive, no work directory left


def root_page(store: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(store)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                                (table,)).fetchone()[0])  # fmt: skip


# `emails`: the spool takes the mail and the drain meets the damage. `spool`: the spool
# itself cannot be written, so the endpoint refuses from the first message.
@pytest.mark.parametrize("table", ["emails", "spool"])
def test_store_damaged_while_running_answers_451_and_says_so_once(
    tmp_path: Path, notify: Notify, table: str
) -> None:
    port, metrics = free_port(), free_port()
    config = config_text(tmp_path, port) + f"metrics: {{listen: '127.0.0.1:{metrics}'}}\n"
    build_store(tmp_path, config)
    store = tmp_path / "var" / "syncd.sqlite3"
    proc = start(tmp_path, notify, config)
    try:
        notify.wait_for("READY=1")
        assert send(port, bcc_message(1)) == 250
        wait_logged(store, {"kill1@example.com"})

        saved = overwrite(store, [root_page(store, table)])  # every use of `table` fails

        assert quick_check_sees_damage(store)
        # The first message may reach the spool before a drain meets the damage.
        first = send(port, bcc_message(2))
        assert first in ((250, 451) if table == "emails" else (451,))
        codes = []
        for n in range(3, 9):  # over several drain attempts (every 2 s, then backing off)
            time.sleep(1.5)
            codes.append(send(port, bcc_message(n)))
        assert codes == [451] * 6, codes
        code, body = get(f"http://127.0.0.1:{metrics}/health")
        assert code == 503, body
        [failing] = json.loads(body)["failing"]
        assert failing["part"] == "store" and failing["error"], body

        put_back(store, saved)  # restored in place
        deadline = time.monotonic() + 60
        while send(port, bcc_message(20)) != 250 and time.monotonic() < deadline:
            time.sleep(1)
        expected = {"kill1@example.com", "kill20@example.com"}
        if first == 250:  # acknowledged while the store was damaged: logged now
            expected.add("kill2@example.com")
        wait_logged(store, expected)
        assert get(f"http://127.0.0.1:{metrics}/health")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        _, stderr = proc.communicate()
    assert stderr.count("is damaged") == 1, stderr
    assert stderr.count(" ERROR ") == 1, stderr  # that line, and nothing else
    [line] = [ln for ln in stderr.splitlines() if "is damaged" in ln]
    assert str(store) in line and "451" in line and "restore it from a backup" in line
    assert stderr.count("reads as sound again") == 1, stderr
    assert "Traceback" not in stderr, stderr
    assert "draining the BCC spool failed" not in stderr
    assert logged_ids(store) >= expected


def logged_ids(store: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(store)) as conn:
        return {row[0] for row in conn.execute("SELECT message_id FROM emails")}


def wait_logged(store: Path, ids: set[str]) -> None:
    deadline = time.monotonic() + 20
    while ids - logged_ids(store) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ids <= logged_ids(store)
