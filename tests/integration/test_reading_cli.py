"""Reading what was logged, as a user does: ``syncd email show``, ``attachment save``,
``thread`` and ``timeline --threads``, each run as the real CLI in a subprocess on a store
filled by ``syncd import`` (and, for one email, by the BCC endpoint of ``syncd run``).
What is asserted is what the user gets: the JSON document, the bytes on stdout, the
files written, the one line on stderr and the exit status."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Notify, as_json, free_port, syncd, syncd_run

ADA = "ada@example.com"
PDF = bytes(range(256)) * 16  # 4 KiB: its base64 is cut out of the raw copy (a hole)
BIG = b"\x00\x01" * 10_000  # 20 KB, over max_attachment_mb: 0.01
ESC = "\x1b"
# The parser drops control characters from file names; what is left climbs out of the
# directory and would be a hidden file.
HOSTILE_NAME = f"../{ESC}[2J../.bashrc"
STORED_NAME = "../[2J../.bashrc"


def b64(data: bytes) -> str:
    text = base64.b64encode(data).decode()
    return "\r\n".join(text[i : i + 76] for i in range(0, len(text), 76))


def attachment(name: str, ctype: str, data: bytes) -> str:
    return (
        f'--b1\r\nContent-Type: {ctype}\r\nContent-Disposition: attachment; filename="{name}"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{b64(data)}\r\n"
    )


ROOT = (
    "From: Carol Jones <carol@acme.com>\r\nTo: Ada <ada@example.com>\r\n"
    "Cc: Dan Brown <dan@acme.com>\r\nSubject: Pricing\r\n"
    "Date: Mon, 01 Jan 2024 10:00:00 +0000\r\nMessage-ID: <root@acme.com>\r\n"
    "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n"
    "--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    "<html><body><p>Hello <b>Ada</b>,</p><p>our prices are attached.</p></body></html>\r\n"
    + attachment("price list.pdf", "application/pdf", PDF)
    + attachment(HOSTILE_NAME, "application/pdf", b"%PDF-1.4 not really\n")
    + attachment("footage.bin", "application/octet-stream", BIG)
    + "--b1--\r\n"
).encode()
# The reply is imported before its root (files are read in name order): it must join the
# root's thread once the root comes.
REPLY = (
    b"From: Ada <ada@example.com>\r\nTo: Carol Jones <carol@acme.com>\r\nCc: dan@acme.com\r\n"
    b"Subject: Re: Pricing\r\nDate: Mon, 01 Jan 2024 11:00:00 +0000\r\n"
    b"Message-ID: <r1@example.com>\r\nIn-Reply-To: <root@acme.com>\r\n"
    b"References: <root@acme.com>\r\n\r\nThanks, Carol.\r\n"
)
# No References, no In-Reply-To: joins by its subject within the same participants.
BARE_REPLY = (
    b"From: Carol Jones <carol@acme.com>\r\nTo: ada@example.com\r\nCc: dan@acme.com\r\n"
    b"Subject: RE: Re: Pricing\r\nDate: Mon, 01 Jan 2024 12:00:00 +0000\r\n"
    b"Message-ID: <r2@acme.com>\r\n\r\nYou are welcome.\r\n"
)
# The same subject between other people: another conversation.
OTHER = (
    b"From: Eve <eve@other.example>\r\nTo: ada@example.com\r\nSubject: Re: Pricing\r\n"
    b"Date: Mon, 01 Jan 2024 13:00:00 +0000\r\nMessage-ID: <e1@other.example>\r\n\r\nHi.\r\n"
)
HOSTILE = (
    f"From: Carol{ESC}[31m <carol@acme.com>\r\nTo: ada@example.com\r\n"
    f"Subject: Urgent{ESC}[2J{ESC}]0;pwned\x07 \u202eexe.pdf\r\n"
    "Date: Tue, 02 Jan 2024 10:00:00 +0000\r\nMessage-ID: <esc@acme.com>\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n\r\n"
    f"line one\r\n{ESC}[31mred\ttab\r\n"
).encode()
FILES = {
    "01-reply.eml": REPLY,
    "02-root.eml": ROOT,
    "03-bare-reply.eml": BARE_REPLY,
    "04-other.eml": OTHER,
    "05-hostile.eml": HOSTILE,
}


def write_config(root: Path, extra: str = "") -> Path:
    var = root / "var"
    config = root / "syncd.yaml"
    config.write_text(
        f"store:\n  path: {var / 'syncd.sqlite3'}\n  attachments_dir: {var / 'attachments'}\n"
        "  max_attachment_mb: 0.01\n"
        f"team:\n  - name: Ada Lovelace\n    email: {ADA}\n{extra}",
        encoding="utf-8",
    )
    return config


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("reading")
    mail = root / "mail"
    mail.mkdir()
    for name, raw in FILES.items():
        (mail / name).write_bytes(raw)
    config = write_config(root)
    assert as_json(config, "import", str(mail), "--owner", ADA)["logged"] == 5
    note = syncd(config, "notes", "add", "carol@acme.com", "Called about pricing")
    assert note.returncode == 0, note.stderr
    ids = {
        item["message_id"]: item["id"]
        for email in ("carol@acme.com", "eve@other.example")
        for item in as_json(config, "timeline", email)
        if item["type"] == "email"
    }
    yield {"config": config, "root": root, "ids": ids, "note": int(note.stdout)}


def test_email_show_json_has_headers_body_attachments_and_records(store) -> None:
    config, ids = store["config"], store["ids"]
    view = as_json(config, "email", "show", str(ids["root@acme.com"]))
    assert view["id"] == ids["root@acme.com"] and view["type"] == "email"
    assert (view["from"], view["from_name"]) == ("carol@acme.com", "Carol Jones")
    assert view["recipients"] == {
        "to": [{"name": "Ada", "email": ADA}],
        "cc": [{"name": "Dan Brown", "email": "dan@acme.com"}],
    }
    assert (view["subject"], view["date"]) == ("Pricing", "2024-01-01T10:00:00Z")
    assert view["message_id"] == "root@acme.com" and view["direction"] == "incoming"
    # HTML only: its text, not its tags.
    assert "Hello Ada," in view["body"] and "our prices are attached." in view["body"]
    assert "<b>" not in view["body"]
    pdf, hostile, big = view["attachments"]
    assert (pdf["filename"], pdf["content_type"], pdf["size"]) == (
        "price list.pdf",
        "application/pdf",
        len(PDF),
    )
    assert pdf["stored"] is True and pdf["sha256"] == hashlib.sha256(PDF).hexdigest()
    assert hostile["filename"] == STORED_NAME
    assert big["stored"] is False and big["size"] == len(BIG)
    assert big["note"] == "not stored: larger than store.max_attachment_mb"
    assert len({pdf["id"], hostile["id"], big["id"]}) == 3
    assert view["sources"] == ["import"]
    assert view["associations"]["contacts"] == ["carol@acme.com", "dan@acme.com"]
    assert view["status"] == "untracked" and view["tracking"] is None
    assert view["thread"] == {"count": 3} and view["raw_kept"] is True


@pytest.mark.parametrize("form", ["<root@acme.com>", "root@acme.com", " <root@ACME.com> "])
def test_a_message_id_names_the_email_too(store, form: str) -> None:
    view = as_json(store["config"], "email", "show", form)
    assert view["id"] == store["ids"]["root@acme.com"]


def test_unknown_ids_fail_in_one_line_like_contacts_show(store) -> None:
    config = store["config"]
    contact = syncd(config, "contacts", "show", "nobody@nowhere.example")
    for args in (
        ("email", "show", "999999"),
        ("email", "show", "<nobody@nowhere.example>"),
        ("thread", "999999"),
        ("attachment", "save", "999999"),
    ):
        done = syncd(config, *args)
        assert done.returncode == contact.returncode == 1, args
        assert done.stdout == "" and len(done.stderr.splitlines()) == 1, args
        assert done.stderr.startswith("syncd: no "), done.stderr
    note = syncd(config, "email", "show", str(store["note"]))
    assert note.returncode == 1
    assert note.stderr == f"syncd: engagement {store['note']} is a note, not an email\n"
    # Text that can name nothing is a usage error, one line, as for pin and remove.
    for args in (
        ("email", "show", "not an id"),
        ("thread", "9" * 30),  # past SQLite's integers
        ("attachment", "save", "x1"),
        ("attachment", "save", "9" * 30),
    ):
        done = syncd(config, *args)
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, (args, done.stderr)
        kind = "attachment" if args[0] == "attachment" else "engagement"
        assert done.stderr.startswith(f"syncd: not an {kind} id: '"), done.stderr


def test_hostile_subject_name_and_body_are_shown_escaped(store) -> None:
    config, eid = store["config"], str(store["ids"]["esc@acme.com"])
    for args in (
        ("email", "show", eid),
        ("email", "show", str(store["ids"]["root@acme.com"])),  # the hostile file name
        ("thread", eid),
        ("timeline", "carol@acme.com"),
        ("timeline", "carol@acme.com", "--threads"),
    ):
        done = syncd(config, *args)
        assert done.returncode == 0, done.stderr
        assert ESC not in done.stdout and "\x07" not in done.stdout and "\u202e" not in done.stdout
    shown = syncd(config, "email", "show", eid).stdout
    assert "Subject:    Urgent\\x1b[2J\\x1b]0;pwned\\x07 \\u202eexe.pdf" in shown
    assert "From:       Carol\\x1b[31m <carol@acme.com>" in shown
    assert shown.endswith("line one\n\\x1b[31mred     tab\n\n")  # tabs expanded, not escaped
    root = syncd(config, "email", "show", str(store["ids"]["root@acme.com"])).stdout
    assert "footage.bin  application/octet-stream  20.0 KB  not stored: larger than" in root


def test_raw_is_the_original_bytes_through_a_pipe(store) -> None:
    config, ids = store["config"], store["ids"]
    for message_id, name in (("root@acme.com", "02-root.eml"), ("esc@acme.com", "05-hostile.eml")):
        done = syncd(config, "email", "show", str(ids[message_id]), "--raw", text=False)
        assert done.returncode == 0 and done.stderr == b""
        assert done.stdout == FILES[name]
    # Piped on to another program, as a user does (`| sha256sum`).
    command = f"{sys.executable} -m syncd --config {config} email show {ids['root@acme.com']} --raw"
    piped = subprocess.run(f"{command} | sha256sum", shell=True, capture_output=True, text=True)
    assert piped.stdout.split()[0] == hashlib.sha256(ROOT).hexdigest()


def test_raw_and_attachment_content_refuse_a_terminal(store) -> None:
    config, eid = store["config"], str(store["ids"]["root@acme.com"])
    main, terminal = os.openpty()
    try:
        for args in (("email", "show", eid, "--raw"), ("attachment", "save", "1", "-o", "-")):
            done = syncd(config, *args, stdout=terminal, stderr=subprocess.PIPE)
            assert done.returncode == 2, done.stderr
            assert "not to a terminal" in done.stderr and len(done.stderr.splitlines()) == 1
    finally:
        os.close(main)
        os.close(terminal)
    both = syncd(config, "email", "show", eid, "--raw", "--json")
    assert both.returncode == 2 and "do not go together" in both.stderr


def attachments_of(store: dict[str, Any]) -> list[dict[str, Any]]:
    return as_json(store["config"], "email", "show", str(store["ids"]["root@acme.com"]))[
        "attachments"
    ]


def test_attachment_save_writes_the_content_under_a_safe_name(store, tmp_path: Path) -> None:
    config = store["config"]
    pdf = attachments_of(store)[0]
    done = syncd(config, "attachment", "save", str(pdf["id"]), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "price list.pdf\n"
    saved = tmp_path / "price list.pdf"
    assert saved.read_bytes() == PDF and saved.stat().st_mode & 0o777 == 0o600
    # Never over an existing file without --force; with it, replaced whole.
    saved.write_bytes(b"mine")
    again = syncd(config, "attachment", "save", str(pdf["id"]), cwd=tmp_path)
    assert again.returncode == 1 and "exists; --force replaces it" in again.stderr
    assert saved.read_bytes() == b"mine"
    forced = syncd(config, "attachment", "save", str(pdf["id"]), "--force", cwd=tmp_path)
    assert forced.returncode == 0 and saved.read_bytes() == PDF
    # A symbolic link where the file would go is not followed.
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "price list.pdf").symlink_to(tmp_path / "victim")
    linked = syncd(config, "attachment", "save", str(pdf["id"]), "-o", "out", cwd=tmp_path)
    assert linked.returncode == 1 and not (tmp_path / "victim").exists()
    # -o names a file, or a directory to put the mail's name in, or - for stdout.
    named = syncd(config, "attachment", "save", str(pdf["id"]), "-o", "x/../q3.pdf", cwd=tmp_path)
    assert named.returncode == 1  # x/ does not exist: the user's path is taken as given
    named = syncd(config, "attachment", "save", str(pdf["id"]), "-o", "q3.pdf", cwd=tmp_path)
    assert named.returncode == 0 and (tmp_path / "q3.pdf").read_bytes() == PDF
    (tmp_path / "dir").mkdir()
    into = syncd(config, "attachment", "save", str(pdf["id"]), "-o", "dir", cwd=tmp_path)
    assert into.returncode == 0 and (tmp_path / "dir" / "price list.pdf").read_bytes() == PDF
    out = syncd(config, "attachment", "save", str(pdf["id"]), "-o", "-", text=False)
    assert out.returncode == 0 and out.stdout == PDF
    told = syncd(
        config, "attachment", "save", str(pdf["id"]), "-o", "j.pdf", "--json", cwd=tmp_path
    )
    assert json.loads(told.stdout) == {
        "id": pdf["id"],
        "path": str((tmp_path / "j.pdf").resolve()),
        "size": len(PDF),
        "content_type": "application/pdf",
        "sha256": hashlib.sha256(PDF).hexdigest(),
    }


def test_attachment_save_refuses_hostile_names_and_says_why_not_stored(
    store, tmp_path: Path
) -> None:
    config = store["config"]
    _pdf, hostile, big = attachments_of(store)
    refused = syncd(config, "attachment", "save", str(hostile["id"]), cwd=tmp_path)
    assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1
    assert refused.stderr == (
        f"syncd: attachment {hostile['id']}: its file name '{STORED_NAME}' is not safe to save "
        "under (it names a parent directory); name the file with -o PATH\n"
    )
    assert list(tmp_path.iterdir()) == [] and not (tmp_path.parent / ".bashrc").exists()
    named = syncd(config, "attachment", "save", str(hostile["id"]), "-o", "inv.pdf", cwd=tmp_path)
    assert named.returncode == 0 and (tmp_path / "inv.pdf").read_bytes() == b"%PDF-1.4 not really\n"
    missing = syncd(config, "attachment", "save", str(big["id"]), cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr == (
        f"syncd: attachment {big['id']} (footage.bin, 20.0 KB) is not stored: "
        "larger than store.max_attachment_mb\n"
    )


def test_a_damaged_attachment_file_is_refused_and_leaves_nothing(store, tmp_path: Path) -> None:
    # A copy of the store, so the damage stays in this test.
    root = tmp_path / "copy"
    shutil.copytree(store["root"] / "var", root / "var")
    config = write_config(root)
    pdf = attachments_of(store)[0]
    digest = pdf["sha256"]
    blob = root / "var" / "attachments" / digest[:2] / digest[2:4] / digest
    blob.write_bytes(b"something else")
    done = syncd(config, "attachment", "save", str(pdf["id"]), "-o", "out.pdf", cwd=tmp_path)
    assert done.returncode == 65 and "does not match its checksum" in done.stderr
    assert not (tmp_path / "out.pdf").exists()
    blob.unlink()
    gone = syncd(config, "attachment", "save", str(pdf["id"]), "-o", "out.pdf", cwd=tmp_path)
    assert gone.returncode == 65 and "is missing" in gone.stderr
    assert not (tmp_path / "out.pdf").exists()
    # The raw copy needs that file too: a damaged store, said in one line.
    raw = syncd(config, "email", "show", str(store["ids"]["root@acme.com"]), "--raw")
    assert raw.returncode == 65 and len(raw.stderr.splitlines()) == 1


def test_thread_lists_the_conversation_oldest_first(store) -> None:
    config, ids = store["config"], store["ids"]
    for member in ("root@acme.com", "r1@example.com", "<r2@acme.com>"):
        items = as_json(config, "thread", member if member.startswith("<") else str(ids[member]))
        assert [i["message_id"] for i in items] == [
            "root@acme.com",
            "r1@example.com",
            "r2@acme.com",
        ]
        assert [i["date"] for i in items] == sorted(i["date"] for i in items)
    assert [i["message_id"] for i in as_json(config, "thread", "<e1@other.example>")] == [
        "e1@other.example"
    ]
    text = syncd(config, "thread", str(ids["r2@acme.com"])).stdout.splitlines()
    assert len(text) == 3 and "Pricing  [3 attachments]" in text[0]
    assert text[1].split()[2:5] == ["->", "ada@example.com", "Re:"]


def test_timeline_threads_folds_each_thread_with_a_count(store) -> None:
    config, ids = store["config"], store["ids"]
    folded = as_json(config, "timeline", "carol@acme.com", "--threads")
    by_latest = {entry["latest"]["id"]: entry for entry in folded}
    thread = by_latest[ids["r2@acme.com"]]
    assert thread["count"] == 3
    assert thread["ids"] == [ids["r2@acme.com"], ids["r1@example.com"], ids["root@acme.com"]]
    assert thread["latest"]["subject"] == "RE: Re: Pricing"
    assert by_latest[ids["esc@acme.com"]]["count"] == 1
    assert (
        by_latest[store["note"]]["count"] == 1
        and by_latest[store["note"]]["latest"]["type"] == "note"
    )
    assert len(folded) == 3
    # The same entries, newest first, as the unfolded timeline orders them.
    timeline = as_json(config, "timeline", "carol@acme.com")
    assert sum(entry["count"] for entry in folded) == len(timeline)
    text = syncd(config, "timeline", "carol@acme.com", "--threads").stdout.splitlines()
    assert len(text) == 3 and any("RE: Re: Pricing  (3 emails)  [import]" in t for t in text)
    eve = as_json(config, "timeline", "eve@other.example", "--threads")
    assert [e["count"] for e in eve] == [1]
    missing = syncd(config, "timeline", "nobody@nowhere.example", "--threads")
    assert missing.returncode == 1 and missing.stderr == (
        "syncd: no contact with address nobody@nowhere.example\n"
    )


def test_a_pinned_email_leads_the_folded_timeline_with_its_thread(store, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(store["root"] / "var", root / "var")
    config, ids = write_config(root), store["ids"]
    pinned = syncd(config, "pin", str(ids["root@acme.com"]))  # the thread's oldest email
    assert pinned.returncode == 0, pinned.stderr
    first = as_json(config, "timeline", "carol@acme.com", "--threads")[0]
    assert (first["pinned"], first["count"]) == (True, 3)
    assert first["latest"]["id"] == ids["r2@acme.com"]  # the newest stands for the thread
    text = syncd(config, "timeline", "carol@acme.com", "--threads").stdout.splitlines()
    assert text[0].startswith(f"*#{ids['r2@acme.com']}") and "(3 emails)" in text[0]
    removed = syncd(config, "remove", str(ids["r1@example.com"]))
    assert removed.returncode == 0, removed.stderr
    items = as_json(config, "thread", str(ids["root@acme.com"]))
    assert [i["message_id"] for i in items] == ["root@acme.com", "r2@acme.com"]
    gone = syncd(config, "email", "show", str(ids["r1@example.com"]))
    assert gone.returncode == 1 and gone.stderr == f"syncd: no engagement {ids['r1@example.com']}\n"


def test_email_logged_by_bcc_shows_and_gives_back_its_bytes(tmp_path: Path, notify: Notify) -> None:
    port = free_port()
    config = write_config(
        tmp_path,
        f"bcc: {{listen: '127.0.0.1:{port}', addresses: [log@crm.example.com], "
        "verify_sender: none}\n",
    )
    sent = (
        b"From: Ada <ada@example.com>\r\nTo: Grace Hopper <grace@hopper.example>\r\n"
        b"Subject: Proposal\r\nMessage-ID: <bcc-1@example.com>\r\n"
        b"Date: Mon, 3 Nov 2025 10:00:00 +0000\r\n\r\n.leading dot\r\nbody\r\n"
    )
    with syncd_run(config, notify):
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.sendmail(ADA, ["log@crm.example.com"], sent)
        deadline = time.monotonic() + 20
        while (shown := syncd(config, "email", "show", "<bcc-1@example.com>", "--json")).returncode:
            assert time.monotonic() < deadline, shown.stderr
            time.sleep(0.2)
        view = json.loads(shown.stdout)
        assert view["sources"] == ["bcc"] and view["direction"] == "outgoing"
        assert view["associations"]["contacts"] == ["grace@hopper.example"]
        assert view["body"] == ".leading dot\nbody\n"
        raw = syncd(config, "email", "show", str(view["id"]), "--raw", text=False)
        assert raw.returncode == 0 and raw.stdout == sent
