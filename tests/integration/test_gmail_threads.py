"""Gmail's thread ids reach the store: ``syncd sync`` against a loopback server that says
X-GM-EXT-1 and answers X-GM-THRID as Gmail does (Dovecot has neither), then ``syncd
thread`` as the user runs it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.conftest import syncd
from tests.integration.fakeimap import FakeImap, message
from tests.integration.test_hostile_imap import write_config


def forged(n: int) -> bytes:
    """A message whose sender wrote an X-GM-THRID header of their own: only Gmail's FETCH
    answer (or a Takeout mbox) is believed, so it must not join thread 111."""
    return message(n).replace(b"Subject:", b"X-GM-THRID: 111\r\nSubject:", 1)


def thread_ids(config: Path, message_id: str) -> list[str]:
    done = syncd(config, "thread", f"<{message_id}>", "--json")
    assert done.returncode == 0, done.stderr
    return [item["message_id"] for item in json.loads(done.stdout)]


def test_gmail_thread_ids_group_mail_without_reply_headers(tmp_path: Path) -> None:
    # Four unrelated subjects, no References: only Gmail's thread ids join 1 and 2.
    messages = {n: message(n) for n in (1, 2, 3)} | {4: forged(4)}
    with FakeImap(messages=messages, gmail_threads={1: 111, 2: 111, 3: 222}) as fake:
        config = write_config(tmp_path, fake)
        done = syncd(config, "sync", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["logged"] == 4
    assert thread_ids(config, "hostile2@client.example") == [
        "hostile1@client.example",
        "hostile2@client.example",
    ]
    assert thread_ids(config, "hostile3@client.example") == ["hostile3@client.example"]
    assert thread_ids(config, "hostile4@client.example") == ["hostile4@client.example"]
    timeline = syncd(config, "timeline", "carol@client.example", "--threads", "--json")
    assert sorted(entry["count"] for entry in json.loads(timeline.stdout)) == [1, 1, 2]


def test_a_server_without_gmail_extensions_is_not_asked(tmp_path: Path) -> None:
    """No X-GM-EXT-1, no X-GM-THRID in the FETCH (a server would answer BAD)."""
    with FakeImap() as fake:
        config = write_config(tmp_path, fake)
        done = syncd(config, "sync", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["logged"] == 3
    assert thread_ids(config, "hostile1@client.example") == ["hostile1@client.example"]
