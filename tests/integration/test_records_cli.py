"""The record commands through ``syncd.cli.main``: what a user types, what they see, the
exit status, and what lands in the SQLite file."""

from __future__ import annotations

import json
import mailbox
import sqlite3
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from syncd.cli.main import main
from syncd.store import db
from syncd.store.erase import scan
from tests.integration.conftest import write_mbox

ADA = "ada@example.com"


def message(
    msgid: str,
    to: str = "Carol Jones <carol@acme.com>",
    *,
    sender: str = ADA,
    subject: str = "Pricing",
    date: str = "Wed, 01 May 2024 09:00:00 +0000",
) -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\n"
        f"Message-ID: <{msgid}>\r\n\r\nLet us talk about {subject.lower()}.\r\n"
    ).encode()  # fmt: skip


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Path]:
    store = tmp_path / "var"
    config = tmp_path / "syncd.yaml"
    config.write_text(
        f"store:\n  path: {store / 'syncd.sqlite3'}\n  attachments_dir: {store / 'attachments'}\n"
        "team:\n  - name: Ada Lovelace\n    email: ada@example.com\n"
        "    aliases: [a.lovelace@example.com]\n"
        "  - name: Bob Martin\n    email: bob@example.com\n",
        encoding="utf-8",
    )
    write_mbox(
        tmp_path / "mail.mbox",
        message("one@x", date="Mon, 01 Jan 2024 10:00:00 +0000", subject="Pricing"),
        message("two@x", "carol@acme.com, Dan <dan@gmail.com>", subject="Zeppelin",
                date="Thu, 01 Feb 2024 10:00:00 +0000"),
        message("one@x"),
    )  # fmt: skip
    return {"config": config, "store": store, "mbox": tmp_path / "mail.mbox", "tmp": tmp_path}


def run(env: dict[str, Path], *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(env["config"]), *args])


def run_json(env: dict[str, Path], *args: str) -> object:
    result = run(env, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def imported(env: dict[str, Path]) -> None:
    result = run(env, "import", str(env["mbox"]), "--owner", "a.lovelace@example.com")
    assert result.exit_code == 0, result.output


def test_import_counts_and_repeat(env) -> None:
    first = run_json(env, "import", str(env["mbox"]), "--owner", ADA)
    assert first == {"logged": 2, "duplicates": 1, "skipped": 0, "quarantined": 0}
    again = run_json(env, "import", str(env["mbox"]), "--owner", ADA)
    assert again == {"logged": 0, "duplicates": 3, "skipped": 0, "quarantined": 0}
    text = run(env, "import", str(env["mbox"]))
    assert text.exit_code == 0 and text.stdout.strip() == (
        "logged 0, duplicates 3, skipped 0, quarantined 0"
    )


def test_import_without_owner_creates_no_contacts(env) -> None:
    counts = run_json(env, "import", str(env["mbox"]))
    assert counts == {"logged": 0, "duplicates": 0, "skipped": 3, "quarantined": 0}
    assert run_json(env, "contacts", "list") == []


def test_import_owner_must_be_on_the_team(env) -> None:
    result = run(env, "import", str(env["mbox"]), "--owner", "eve@evil.example")
    assert result.exit_code == 2 and "not a team member" in result.stderr


def test_import_directory_with_broken_mail_quarantines(env) -> None:
    folder = env["tmp"] / "eml"
    folder.mkdir()
    (folder / "good.eml").write_bytes(message("good@x"))
    (folder / "empty.eml").write_bytes(b"\r\n\r\n")
    (folder / "ignored.txt").write_bytes(b"not mail")
    result = run(env, "import", str(folder), "--owner", ADA, "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "logged": 1,
        "duplicates": 0,
        "skipped": 0,
        "quarantined": 1,
    }
    (item,) = run_json(env, "quarantine", "list")
    assert item["reason"] == "empty message" and item["source"] == "import"
    retry = run(env, "quarantine", "retry")
    assert retry.exit_code == 1 and "quarantined empty message" in retry.stdout
    assert run(env, "quarantine", "retry", "999").exit_code == 1


def test_import_maildir_and_single_eml(env) -> None:
    box = mailbox.Maildir(env["tmp"] / "Maildir")
    box.add(message("md1@x"))
    box.add(message("md2@x", subject="Second"))
    box.add_folder("Sent").add(message("md3@x", subject="Sent one"))
    counts = run_json(env, "import", str(env["tmp"] / "Maildir"), "--owner", ADA)
    assert counts == {"logged": 3, "duplicates": 0, "skipped": 0, "quarantined": 0}
    single = env["tmp"] / "one.eml"
    single.write_bytes(message("md1@x"))
    counts = run_json(env, "import", str(single), "--owner", ADA)
    assert counts == {"logged": 0, "duplicates": 1, "skipped": 0, "quarantined": 0}
    assert run(env, "import", str(env["tmp"] / "missing.mbox")).exit_code == 2


@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        ("no-email.csv", "name,company\nCarol,Acme\n", "needs an 'email' column"),
        ("empty.csv", "", "needs an 'email' column"),
        ("bad.vcf", "BEGIN:VCARD\nVERSION:3.0\nEMAIL:carol@acme.com\n", "not a readable vCard"),
        ("noaddr.csv", "email,first_name\nnot-an-address,Carol\n", "is not an address"),
    ],
)
def test_contacts_import_refuses_broken_files(env, name, content, error) -> None:
    path = env["tmp"] / name
    path.write_text(content, encoding="utf-8")
    result = run(env, "contacts", "import", str(path))
    assert result.exit_code == 1 and error in result.stderr
    assert run_json(env, "contacts", "list") == []


def test_contacts_list_show_timeline_search(env) -> None:
    imported(env)
    listed = run_json(env, "contacts", "list")
    assert [c["email"] for c in listed] == ["carol@acme.com", "dan@gmail.com"]
    assert listed[0] == {
        "email": "carol@acme.com",
        "name": "Carol Jones",
        "owner": ADA,
        "lifecycle_stage": "lead",
        "company": "acme.com",
        "legal_basis": None,
        "last_contacted": "2024-02-01T10:00:00Z",
    }
    assert listed[1]["company"] is None  # free-mail makes no company
    shown = run_json(env, "contacts", "show", "CAROL@acme.com")
    assert shown["emails"] == ["carol@acme.com"]
    missing = run(env, "contacts", "show", "nobody@acme.com")
    assert missing.exit_code == 1 and "no contact" in missing.stderr
    timeline = run_json(env, "timeline", "carol@acme.com")
    assert [t["message_id"] for t in timeline] == ["two@x", "one@x"]
    first = timeline[0]
    assert {k: first[k] for k in ("type", "direction", "from", "sources", "status")} == {
        "type": "email", "direction": "outgoing", "from": ADA, "sources": ["import"],
        "status": "untracked",
    }  # fmt: skip
    assert first["to"] == ["carol@acme.com", "dan@gmail.com"]
    assert first["associations"] == {
        "contacts": ["carol@acme.com", "dan@gmail.com"], "companies": ["acme.com"],
        "deals": [], "tickets": [],
    }  # fmt: skip
    (hit,) = run_json(env, "search", "zeppelin")
    assert set(hit) == {"message_id", "subject", "date", "from", "snippet"}
    assert hit["message_id"] == "two@x"


def test_deals_tickets_notes(env) -> None:
    imported(env)
    created = run(
        env, "deals", "create", "Renewal", "--contact", "carol@acme.com", "--amount", "1200"
    )
    assert created.exit_code == 0 and created.stdout == "1\n"
    assert run_json(env, "contacts", "show", "carol@acme.com")["lifecycle_stage"] == "opportunity"
    bad = run(env, "deals", "stage", "1", "won")
    assert bad.exit_code == 2 and "unknown deal stage 'won'" in bad.stderr
    assert run(env, "deals", "stage", "7", "closedwon").exit_code == 1
    assert run(env, "deals", "stage", "1", "closedwon").exit_code == 0
    assert run_json(env, "contacts", "show", "carol@acme.com")["lifecycle_stage"] == "customer"
    (deal,) = run_json(env, "deals", "list")
    assert (deal["stage"], deal["amount"], deal["contacts"]) == (
        "closedwon",
        1200.0,
        ["carol@acme.com"],
    )
    assert run(env, "deals", "create", "X", "--contact", "ghost@acme.com").exit_code == 1
    assert run(env, "tickets", "create", "Broken", "--contact", "dan@gmail.com").stdout == "1\n"
    assert run(env, "tickets", "status", "1", "waiting").exit_code == 0
    assert run(env, "tickets", "status", "1", "nope").exit_code == 2
    (ticket,) = run_json(env, "tickets", "list")
    assert (ticket["status"], ticket["contacts"]) == ("waiting", ["dan@gmail.com"])
    note = run(env, "notes", "add", "carol@acme.com", "Called, wants a demo")
    assert note.exit_code == 0 and note.stdout.strip().isdigit()
    newest = run_json(env, "timeline", "carol@acme.com")[0]
    assert (newest["type"], newest["text"]) == ("note", "Called, wants a demo")
    assert run(env, "notes", "add", "ghost@acme.com", "x").exit_code == 1


def test_lists_and_search_show_text_from_mail_escaped(env) -> None:
    """A name or subject from a mail (or typed) is shown escaped in every list table and
    in search results, as `contacts show` and `timeline` show it."""
    hostile = message(
        "h@x", '"Eve \x1b[31mRed" <eve@evil.example>', subject="Zebra \x1b]0;pwned\x07"
    )
    path = env["tmp"] / "hostile.eml"
    path.write_bytes(hostile)
    assert run(env, "import", str(path), "--owner", ADA).exit_code == 0
    eve = ("--contact", "eve@evil.example")
    assert run(env, "deals", "create", "Big \x1b[2Jdeal", *eve).exit_code == 0
    assert run(env, "tickets", "create", "T \u202ex", *eve).exit_code == 0
    shown = {
        ("contacts", "list"): "Eve \\x1b[31mRed",
        ("deals", "list"): "Big \\x1b[2Jdeal",
        ("tickets", "list"): "T \\u202ex",
        ("search", "zebra"): "Zebra \\x1b]0;pwned\\x07",
    }
    for args, escaped in shown.items():
        result = run(env, *args)
        assert result.exit_code == 0, result.output
        assert escaped in result.stdout, (args, result.stdout)
        assert "\x1b" not in result.stdout and "\u202e" not in result.stdout, args
    assert run_json(env, "deals", "list")[0]["name"] == "Big \x1b[2Jdeal"  # JSON as it is


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (("deals", "stage", "9" * 30, "closedwon"), 1, f"syncd: no deal {'9' * 30}\n"),
        (("tickets", "status", "9" * 30, "closed"), 1, f"syncd: no ticket {'9' * 30}\n"),
        (("deals", "stage", "x", "closedwon"), 2,
         "syncd: 'x' is not a deal id (a number, as `syncd deals list` shows)\n"),
        (("tickets", "status", "\x1b[2J", "closed"), 2,
         "syncd: '\\x1b[2J' is not a ticket id (a number, as `syncd tickets list` shows)\n"),
    ],
)  # fmt: skip
def test_stage_and_status_ids_as_show_reads_them(env, args, code: int, error: str) -> None:
    """Before: a number past SQLite's integers raised OverflowError (a traceback)."""
    imported(env)
    result = run(env, *args)
    assert (result.exit_code, result.stderr, result.stdout) == (code, error, "")


def test_contacts_import_csv_upserts_and_refuses_bad_rows(env) -> None:
    imported(env)
    good = env["tmp"] / "good.csv"
    good.write_text(
        "email,first_name,last_name,company,owner,lifecycle_stage,legal_basis\n"
        "carol@acme.com,Caroline,,,bob@example.com,subscriber,consent\n"
        "erin@initech.example,Erin,Stone,Initech,,customer,\n",
        encoding="utf-8",
    )
    result = run(env, "contacts", "import", str(good))
    assert result.exit_code == 0 and result.stdout.strip() == "created 1, updated 1"
    carol = run_json(env, "contacts", "show", "carol@acme.com")
    assert (carol["name"], carol["owner"], carol["legal_basis"]) == (
        "Caroline Jones",
        "bob@example.com",
        "consent",
    )
    assert carol["lifecycle_stage"] == "lead"  # forward only: subscriber does not undo lead
    erin = run_json(env, "contacts", "show", "erin@initech.example")
    assert (erin["company"], erin["lifecycle_stage"]) == ("Initech", "customer")
    bad = env["tmp"] / "bad.csv"
    bad.write_text(
        "email,lifecycle_stage,owner\nfrank@acme.com,prospect,\ngina@acme.com,,eve@evil.example\n",
        encoding="utf-8",
    )
    refused = run(env, "contacts", "import", str(bad))
    assert refused.exit_code == 1
    assert "bad.csv:2: unknown lifecycle stage 'prospect'" in refused.stderr
    assert "bad.csv:3: owner eve@evil.example is not a team member" in refused.stderr
    assert len(run_json(env, "contacts", "list")) == 3


def test_export_formats_and_vcard_round_trip(env) -> None:
    imported(env)
    document = json.loads(run(env, "export", "--format", "json").stdout)
    assert set(document) == {"contacts", "companies", "deals", "tickets", "engagements"}
    assert [e["message_id"] for e in document["engagements"]] == ["one@x", "two@x"]
    out = env["tmp"] / "contacts.vcf"
    assert run(env, "export", "--format", "vcard", "-o", str(out)).exit_code == 0
    assert out.read_text().count("BEGIN:VCARD") == 2
    csv_text = run(env, "export", "--format", "csv").stdout
    assert csv_text.splitlines()[1].startswith(
        "carol@acme.com,Carol,Jones,acme.com,ada@example.com,lead"
    )
    before = run_json(env, "contacts", "list")
    assert run(env, "contacts", "import", str(out)).stdout.strip() == "created 0, updated 2"
    assert run_json(env, "contacts", "list") == before


def test_erase_then_no_byte_of_the_address_remains(env) -> None:
    imported(env)
    run(env, "notes", "add", "carol@acme.com", "carol@acme.com prefers mornings")
    # A removed email whose Message-ID holds the address leaves a tombstone: a hash.
    removed = write_mbox(
        env["tmp"] / "removed.mbox", message("2024/carol@acme.com", subject="Removed")
    )
    assert run(env, "import", str(removed), "--owner", ADA).exit_code == 0
    (item,) = [t for t in run_json(env, "timeline", "carol@acme.com") if t["subject"] == "Removed"]
    assert run(env, "remove", str(item["id"])).exit_code == 0
    result = run(env, "erase", "carol@acme.com")
    assert result.exit_code == 0, result.output
    assert "erased carol@acme.com: 1 contact(s)" in result.stdout
    assert scan([env["store"]], "carol@acme.com") == []
    assert [c["email"] for c in run_json(env, "contacts", "list")] == ["dan@gmail.com"]
    assert run(env, "erase", "carol@acme.com").exit_code == 1
    # The tombstone still works: the removed email is not logged again.
    again = run_json(env, "import", str(removed), "--owner", ADA)
    assert (again["logged"], again["duplicates"]) == (0, 1)


@pytest.mark.parametrize("text", ["acme.com", "", "carol", "@acme.com"])
def test_erase_refuses_what_is_not_one_whole_address(env, text) -> None:
    imported(env)
    before = run_json(env, "timeline", "carol@acme.com")
    result = run(env, "erase", text)
    assert result.exit_code == 2 and "is not an email address" in result.stderr
    assert run_json(env, "timeline", "carol@acme.com") == before


def test_erase_leaves_longer_addresses_alone(env) -> None:
    imported(env)
    run(env, "notes", "add", "carol@acme.com", "write to carol@acme.com or carol@acme.co")
    result = run(env, "erase", "arol@acme.com")  # only inside carol@acme.com
    assert result.exit_code == 1 and "no trace of" in result.stderr
    assert run(env, "erase", "carol@acme.co").exit_code == 0
    (note,) = [e for e in run_json(env, "timeline", "carol@acme.com") if e["type"] == "note"]
    assert note["text"] == "write to carol@acme.com or [erased]"
    assert [c["email"] for c in run_json(env, "contacts", "list")] == [
        "carol@acme.com",
        "dan@gmail.com",
    ]


def test_backup_is_consistent_while_another_writer_runs(env) -> None:
    imported(env)
    writer = sqlite3.connect(env["store"] / "syncd.sqlite3", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("DELETE FROM contact_addresses")
    dest = env["tmp"] / "copy.tar"
    result = run(env, "backup", str(dest))
    writer.execute("ROLLBACK")
    writer.close()
    assert result.exit_code == 0, result.output
    with tarfile.open(dest) as tar:
        tar.extract("syncd.sqlite3", env["tmp"] / "out", filter="data")
    copy = sqlite3.connect(env["tmp"] / "out" / "syncd.sqlite3")
    assert copy.execute("SELECT count(*) FROM contact_addresses").fetchone()[0] == 2
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    copy.close()


def test_newer_store_refused_with_clear_message(env) -> None:
    env["store"].mkdir()
    raw = sqlite3.connect(env["store"] / "syncd.sqlite3")
    raw.execute(f"PRAGMA user_version = {db.latest_version() + 5}")
    raw.close()
    result = run(env, "contacts", "list")
    assert result.exit_code == 65  # EX_DATAERR: waiting will not make it readable
    assert "written by a newer syncd" in result.stderr


def test_backup_is_private_and_csv_cells_are_not_formulas(env) -> None:
    imported(env)
    run(env, "contacts", "import", str(_csv(env, "email,first_name\nevil@x.org,=HYPERLINK(1)\n")))
    dest = env["tmp"] / "private.tar"
    assert run(env, "backup", str(dest)).exit_code == 0
    assert dest.stat().st_mode & 0o077 == 0
    exported = run(env, "export", "--format", "csv").stdout
    assert "'=HYPERLINK(1)" in exported


def _csv(env: dict[str, Path], text: str) -> Path:
    path = env["tmp"] / "people.csv"
    path.write_text(text, encoding="utf-8")
    return path
