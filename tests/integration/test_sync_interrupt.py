"""`syncd sync` stopped mid-pass, as a user stops it: Ctrl-C (SIGINT to the terminal's
process group), `kill` (SIGTERM to syncd alone) and SIGKILL. It stops at the next batch
with one line and the shell's exit code, leaves no process behind, and `status` counts
what the store holds; the next sync finishes the mailbox exactly once."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.imap import fill_maildir
from tests.integration.conftest import ImapUser, syncd
from tests.integration.test_orphans import alive, descendants
from tests.integration.test_sync_cli import write_config

TOTAL = 2500
LINE = re.compile(
    r"syncd: interrupted: (\d+) logged, ada/INBOX stopped at UID (\d+);"
    r" run sync again to continue"
)


def store_counts(tmp_path: Path) -> dict[str, int]:
    """What the store holds, read as any SQLite reader would."""
    uri = f"file:{tmp_path / 'var' / 'syncd.sqlite3'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as conn:
        (emails,) = conn.execute("SELECT count(*) FROM emails").fetchone()
        (seen,) = conn.execute(
            "SELECT count(*) FROM sightings WHERE inbox = 'ada' AND folder = 'INBOX'"
        ).fetchone()
        (keys,) = conn.execute("SELECT count(DISTINCT message_key) FROM emails").fetchone()
        (quarantined,) = conn.execute("SELECT count(*) FROM quarantine").fetchone()
    assert keys == emails
    return {"emails": emails, "sightings": seen, "quarantined": quarantined}


def logged_so_far(tmp_path: Path) -> int:
    try:
        return store_counts(tmp_path)["emails"]
    except sqlite3.OperationalError:  # the store or its tables are not there yet
        return 0


def status_folder(config: Path) -> dict[str, int]:
    status = syncd(config, "status", "--json")
    assert status.returncode == 0, status.stderr
    (inbox,) = json.loads(status.stdout)["inboxes"]
    (folder,) = inbox["folders"]
    return folder


def assert_status_matches_store(tmp_path: Path, config: Path) -> dict[str, int]:
    folder, held = status_folder(config), store_counts(tmp_path)
    assert folder["logged"] == held["emails"]
    assert folder["logged"] + folder["duplicates"] == held["sightings"]
    assert folder["quarantined"] == held["quarantined"]
    return folder


def start_sync(tmp_path: Path, config: Path, *args: str) -> subprocess.Popen[str]:
    # Its own session: a terminal's Ctrl-C reaches syncd's whole process group.
    return subprocess.Popen(
        [sys.executable, "-m", "syncd", "--config", str(config), "sync", *args],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def wait_mid_pass(tmp_path: Path, proc: subprocess.Popen[str]) -> set[int]:
    """Once batches are committed and the parser processes run: syncd's processes (the
    parsers, their forkserver, the resource tracker)."""
    family: set[int] = set()
    deadline = time.monotonic() + 60
    while len(family) < 3 or logged_so_far(tmp_path) == 0:
        assert proc.poll() is None, "sync ended before it was interrupted"
        assert time.monotonic() < deadline, f"no batch committed; processes {family}"
        family |= descendants(proc.pid)
        time.sleep(0.02)
    return family


def assert_none_left(family: set[int]) -> None:
    deadline = time.monotonic() + 5
    while any(alive(p) for p in family) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = {p: Path(f"/proc/{p}/cmdline").read_bytes()[:100] for p in family if alive(p)}
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == {}


def rerun_finishes_exactly_once(tmp_path: Path, config: Path) -> None:
    again = syncd(config, "sync", "--json")
    assert again.returncode == 0, again.stderr
    folder = assert_status_matches_store(tmp_path, config)
    handed = sum(folder[c] for c in ("logged", "duplicates", "skipped", "quarantined"))
    assert handed == TOTAL  # each message counted once over the two passes
    assert folder["last_uid"] == TOTAL and folder["initial_done"]


@pytest.mark.parametrize(
    ("how", "code", "as_json"),
    [("ctrl-c", 130, False), ("kill", 143, True)],
)
def test_interrupted_sync_stops_cleanly(
    tmp_path: Path, imap_user: ImapUser, how: str, code: int, as_json: bool
) -> None:
    fill_maildir(imap_user, TOTAL)
    config = write_config(tmp_path, imap_user, folders=["INBOX"], **{"from": "2000-01-01"})
    proc = start_sync(tmp_path, config, *(["--json"] if as_json else []))
    family: set[int] = set()
    try:
        family = wait_mid_pass(tmp_path, proc)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        while proc.poll() is None:
            family |= descendants(proc.pid)
            time.sleep(0.01)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == code, err
    assert "Traceback" not in err and "Aborted" not in err, err
    said = [line for line in err.splitlines() if not line.startswith("  INBOX: ")]  # progress
    assert len(said) == 1 and (match := LINE.fullmatch(said[0])), err
    assert_none_left(family)

    folder = assert_status_matches_store(tmp_path, config)
    assert int(match[1]) == folder["logged"] > 0
    if as_json:  # what committed, for a script
        report = json.loads(out)
        assert report["interrupted"] is True and report["logged"] == folder["logged"]
    else:
        assert out == ""
    assert int(match[2]) == folder["last_uid"] < TOTAL, "the signal did not land mid-pass"
    assert not folder["initial_done"]
    rerun_finishes_exactly_once(tmp_path, config)


def test_killed_sync_counts_what_it_committed(tmp_path: Path, imap_user: ImapUser) -> None:
    """SIGKILL gives syncd no say: each batch's counts committed with it all the same."""
    fill_maildir(imap_user, TOTAL)
    config = write_config(tmp_path, imap_user, folders=["INBOX"], **{"from": "2000-01-01"})
    proc = start_sync(tmp_path, config)
    try:
        family = wait_mid_pass(tmp_path, proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert_none_left(family)
    folder = assert_status_matches_store(tmp_path, config)
    assert 0 < folder["last_uid"] < TOTAL, "the kill did not land mid-pass"
    rerun_finishes_exactly_once(tmp_path, config)
