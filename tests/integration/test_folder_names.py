"""Configured folder names against a server laid out as Cyrus and Courier are (every
folder under ``INBOX.``, SPECIAL-USE flags set), through the real `syncd` CLI and store."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path

from tests.integration.conftest import ImapUser, syncd
from tests.integration.test_sync_cli import NOW, message, write_config


def _stored(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "var" / "syncd.sqlite3") as conn:
        return int(conn.execute("SELECT count(*) FROM emails").fetchone()[0])


def _status_folders(config: Path) -> dict[str, dict]:
    status = syncd(config, "status", "--json")
    assert status.returncode == 0, status.stderr
    (inbox,) = json.loads(status.stdout)["inboxes"]
    return {f["name"]: f for f in inbox["folders"]}


def test_inbox_and_sent_find_inbox_sent_by_namespace(
    tmp_path: Path, prefixed_user: ImapUser
) -> None:
    prefixed_user.append("INBOX", message(1), NOW - timedelta(days=1))
    prefixed_user.append("INBOX.Sent", message(2), NOW - timedelta(days=1))
    prefixed_user.append("INBOX.Sent", message(3), NOW - timedelta(days=1))
    config = write_config(tmp_path, prefixed_user, folders=["INBOX", "Sent"])

    dry = syncd(config, "sync", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stderr.splitlines()[-2:] == [
        "ada/INBOX: would fetch 1",
        "ada/Sent -> INBOX.Sent (by namespace): would fetch 2",
    ]

    done = syncd(config, "sync", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["logged"] == 3 and _stored(tmp_path) == 3
    sent = report["inboxes"][0]["folders"][1]
    assert (sent["name"], sent["configured"], sent["resolved_by"]) == (
        "INBOX.Sent", "Sent", "namespace"
    )  # fmt: skip

    text = syncd(config, "status").stdout.splitlines()
    assert text[2].startswith("  INBOX: uidvalidity ")
    assert text[3].startswith("  Sent -> INBOX.Sent (by namespace): uidvalidity ")
    assert text[3].endswith("; 2 logged, 0 duplicates, 0 skipped, 0 quarantined")
    folders = _status_folders(config)
    assert folders["INBOX.Sent"]["configured"] == "Sent"
    assert folders["INBOX.Sent"]["resolved_by"] == "namespace"


def test_a_folder_found_only_by_its_special_use_flag(
    tmp_path: Path, prefixed_user: ImapUser
) -> None:
    prefixed_user.append("INBOX.Archiv", message(1), NOW - timedelta(days=1))
    config = write_config(tmp_path, prefixed_user, folders=["Archive"])
    done = syncd(config, "sync")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1] == (
        "ada/Archive -> INBOX.Archiv (by role \\Archive): 1 logged, 0 duplicates, 0 skipped,"
        " 0 quarantined"
    )
    assert set(_status_folders(config)) == {"INBOX.Archiv"}


def test_a_name_found_nowhere_is_one_error_listing_what_exists(
    tmp_path: Path, prefixed_user: ImapUser
) -> None:
    prefixed_user.append("INBOX", message(1), NOW - timedelta(days=1))
    prefixed_user.append("INBOX.Sent", message(2), NOW - timedelta(days=1))
    config = write_config(tmp_path, prefixed_user, folders=["INBOX", "Kunden"])
    done = syncd(config, "sync")
    assert done.returncode == 1  # a folder failed; the others synced
    error = "no such folder (nor INBOX.Kunden); the server has: INBOX, INBOX.Sent"
    assert [line for line in done.stderr.splitlines() if "Kunden" in line] == [
        f"ada/Kunden: 0 logged, 0 duplicates, 0 skipped, 0 quarantined (error: {error})"
    ]
    assert _stored(tmp_path) == 1
    status = json.loads(syncd(config, "status", "--json").stdout)
    assert status["inboxes"][0]["last_error"] == f"Kunden: {error}"


def test_renamed_or_unconfigured_folders_leave_status(
    tmp_path: Path, prefixed_user: ImapUser
) -> None:
    prefixed_user.append("INBOX", message(1), NOW - timedelta(days=1))
    prefixed_user.append("INBOX.Projekte", message(2), NOW - timedelta(days=1))
    prefixed_user.append("INBOX.Sent", message(3), NOW - timedelta(days=1))
    config = write_config(tmp_path, prefixed_user, folders="all")
    assert syncd(config, "sync").returncode == 0
    assert set(_status_folders(config)) == {"INBOX", "INBOX.Projekte", "INBOX.Sent"}

    client = prefixed_user.client()
    client.rename_folder("INBOX.Projekte", "INBOX.Projekte-2024")  # type: ignore[attr-defined]
    client.logout()  # type: ignore[attr-defined]
    again = syncd(config, "sync", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["duplicates"] == 1  # the renamed folder's mail is known
    folders = _status_folders(config)
    assert set(folders) == {"INBOX", "INBOX.Projekte-2024", "INBOX.Sent"}
    assert folders["INBOX.Projekte-2024"]["configured"] is None  # folders: all

    # No longer configured: it leaves status too; the mail it logged stays.
    config = write_config(tmp_path, prefixed_user, folders=["INBOX"])
    assert syncd(config, "sync").returncode == 0
    assert set(_status_folders(config)) == {"INBOX"}
    assert _stored(tmp_path) == 3
    # A dry run lists the server but records nothing.
    config = write_config(tmp_path, prefixed_user, folders=["Sent"])
    assert syncd(config, "sync", "--dry-run").returncode == 0
    assert set(_status_folders(config)) == {"INBOX"}
