"""Acting on the timeline through the real CLI (``python -m syncd`` as a subprocess) on a
store filled by ``syncd import``, the BCC endpoint of ``syncd run`` and ``syncd sync``
against a real Dovecot: pin, unpin, remove (and the removed email staying removed),
associate, disassociate, contacts set and delete (and the mail coming back)."""

from __future__ import annotations

import json
import smtplib
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from syncd.store.erase import scan
from tests.integration.conftest import (
    ImapUser,
    Notify,
    as_json,
    free_port,
    syncd,
    syncd_run,
    wait_for,
    write_mbox,
)

ADA, BOB, CAROL, DAN = "ada@example.com", "bob@example.com", "carol@acme.com", "dan@gmail.com"
LOG = "log@crm.example.com"
# A Message-ID that holds Carol's address as a whole word, as some mailers make them.
CAROL_MID = f"1714550400/{CAROL}"


def message(
    msgid: str,
    to: str = f"Carol Jones <{CAROL}>",
    *,
    sender: str = ADA,
    subject: str = "Pricing",
    date: str = "Wed, 01 May 2024 09:00:00 +0000",
    attachment: bytes = b"",
) -> bytes:
    head = (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\n"
        f"Message-ID: <{msgid}>\r\n"
    )
    if not attachment:
        return f"{head}\r\nAbout {subject.lower()}.\r\n".encode()
    import base64

    return (
        f"{head}MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n"
        f"--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--b1\r\n"
        "Content-Type: application/pdf\r\n"
        'Content-Disposition: attachment; filename="quote.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
        f"{base64.b64encode(attachment).decode()}\r\n--b1--\r\n"
    ).encode()


def config_text(store: Path, extra: str = "", cap: int = 10000) -> str:
    return (
        f"store:\n  path: {store / 'syncd.sqlite3'}\n  attachments_dir: {store / 'attachments'}\n"
        f"  max_engagements_per_record: {cap}\n"
        f"team:\n  - name: Ada Lovelace\n    email: {ADA}\n    aliases: [a.lovelace@example.com]\n"
        f"  - name: Bob Martin\n    email: {BOB}\n{extra}"
    )


class Env:
    """A config and store under a tmp directory, and the CLI run on it."""

    def __init__(self, tmp: Path, extra: str = "", cap: int = 10000) -> None:
        self.tmp = tmp
        self.store = tmp / "var"
        self.config = tmp / "syncd.yaml"
        self.config.write_text(config_text(self.store, extra, cap), encoding="utf-8")

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return syncd(self.config, *args)

    def json(self, *args: str) -> Any:
        return as_json(self.config, *args)

    def fails(self, code: int, *args: str) -> str:
        """Run a command that must exit ``code`` with one line on stderr; that line."""
        done = self.run(*args)
        assert done.returncode == code, (done.stdout, done.stderr)
        assert done.stdout == ""
        (line,) = done.stderr.strip().splitlines()
        return line

    def mbox(self, name: str, *messages: bytes) -> Path:
        return write_mbox(self.tmp / name, *messages)

    def imported(self, path: Path, *, owner: str | None = ADA) -> dict[str, int]:
        return self.json("import", str(path), *(["--owner", owner] if owner else []))

    def timeline(self, address: str) -> list[dict[str, Any]]:
        return self.json("timeline", address)

    def ids(self, address: str) -> list[str]:
        """The timeline as message ids (notes as 'note:TEXT')."""
        return [t["message_id"] or f"note:{t['text']}" for t in self.timeline(address)]

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.store / "syncd.sqlite3") as conn:
            return conn.execute(sql).fetchall()


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def three_to_carol(env: Env) -> Path:
    return env.mbox(
        "mail.mbox",
        message("old@x", date="Mon, 01 Jan 2024 10:00:00 +0000", subject="Old"),
        message(
            "mid@x",
            f"{CAROL}, Dan <{DAN}>",
            subject="Middle",
            date="Thu, 01 Feb 2024 10:00:00 +0000",
        ),
        message(
            CAROL_MID,
            date="Fri, 01 Mar 2024 10:00:00 +0000",
            subject="New",
            attachment=b"%PDF-1.4 the only copy",
        ),
    )


def engagement_of(env: Env, address: str, msgid: str) -> int:
    return next(t["id"] for t in env.timeline(address) if t["message_id"] == msgid)


# --- pin ----------------------------------------------------------------------------------


def test_pinned_first_then_newest_first(env: Env) -> None:
    assert env.imported(three_to_carol(env))["logged"] == 3
    assert env.run("notes", "add", CAROL, "Prefers mornings").returncode == 0
    note, new, mid, old = env.timeline(CAROL)
    assert (note["type"], new["message_id"], old["message_id"]) == ("note", CAROL_MID, "old@x")
    assert not any(t["pinned"] for t in (note, new, mid, old))

    pinned = env.json("pin", str(old["id"]))
    assert (pinned["id"], pinned["pinned"], pinned["message_id"]) == (old["id"], True, "old@x")
    env.json("pin", f"#{mid['id']}")  # as the timeline shows it
    assert env.ids(CAROL) == ["mid@x", "old@x", "note:Prefers mornings", CAROL_MID]
    # Pinned on every timeline it is on: Dan's too, and the company's.
    assert [t["pinned"] for t in env.timeline(DAN)] == [True]
    company = env.json("companies", "show", "acme.com")["timeline"]
    assert [t["message_id"] or t["type"] for t in company] == ["mid@x", "old@x", "note", CAROL_MID]
    text = env.run("timeline", CAROL).stdout.splitlines()
    assert text[0].startswith(f"*#{mid['id']} ") and text[3].startswith(f" #{new['id']} ")

    again = env.run("pin", str(old["id"]))
    assert again.returncode == 0 and again.stdout.startswith("already pinned")
    assert env.json("unpin", str(mid["id"]))["pinned"] is False
    assert env.ids(CAROL) == ["old@x", "note:Prefers mornings", CAROL_MID, "mid@x"]
    assert env.run("unpin", str(mid["id"])).stdout.startswith("not pinned")


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (("pin", "999"), 1, "syncd: no engagement 999"),
        (("unpin", "abc"), 2, "syncd: not an engagement id: 'abc'"),
        (("remove", "12abc"), 2, "syncd: not an engagement id: '12abc'"),
        (("pin", "\x1b[31m1"), 2, "syncd: not an engagement id: '\\x1b[31m1'"),
        (("remove", "0"), 2, "syncd: not an engagement id: '0'"),
        (("pin", "9" * 30), 2, "syncd: not an engagement id: '999"),
        (("associate", "1"), 2, "syncd: name a record: --deal N"),
        (("associate", "1", "--deal", "7"), 1, "syncd: no deal 7"),
        (("associate", "1", "--company", "Nowhere Inc"), 1, "no company with id, domain or name"),
        (("disassociate", "1", "--contact", "ghost@acme.com"), 1, "no contact with address"),
        (("associate", "99", "--contact", CAROL), 1, "syncd: no engagement 99"),
    ],
)
def test_bad_ids_and_records_get_one_line(env: Env, args: tuple[str, ...], code: int, error: str):
    env.imported(three_to_carol(env))
    before = env.timeline(CAROL)
    line = env.fails(code, *args)
    assert line.startswith(error) or error in line, line
    assert "\x1b" not in line
    assert env.timeline(CAROL) == before


def test_an_email_is_named_by_its_message_id_too(env: Env) -> None:
    """Every command that takes an engagement ID takes an email's Message-ID, with or
    without <>, its domain in any case, as `email show` and `thread` do."""
    env.imported(three_to_carol(env))
    old, mid, new = (engagement_of(env, CAROL, m) for m in ("old@x", "mid@x", CAROL_MID))
    assert env.json("pin", "<old@x>")["id"] == old
    assert env.ids(CAROL) == ["old@x", CAROL_MID, "mid@x"]
    assert env.json("unpin", " old@X ")["pinned"] is False
    assert env.json("email", "show", f"<{CAROL_MID}>")["id"] == new
    assert [i["id"] for i in env.json("thread", CAROL_MID)] == [new]
    item = env.json("associate", f"<{CAROL_MID}>", "--contact", DAN)
    assert (item["id"], item["associations"]["contacts"]) == (new, [CAROL, DAN])
    done = env.run("disassociate", CAROL_MID, "--contact", DAN)
    assert done.stdout.strip() == f"took #{new} off contact {DAN}"
    assert env.json("remove", "<mid@X>") == {
        "id": mid, "type": "email", "message_id": "mid@x", "subject": "Middle",
        "date": "2024-02-01T10:00:00Z", "removed": True,
    }  # fmt: skip
    assert env.ids(CAROL) == [CAROL_MID, "old@x"]
    assert env.fails(1, "pin", "mid@x") == "syncd: no email with Message-ID <mid@x>"


# Each command that takes an engagement ID: its words before the ID, its options after.
ENGAGEMENT_COMMANDS = [
    (("email", "show"), ()),
    (("thread",), ()),
    (("pin",), ()),
    (("unpin",), ()),
    (("remove",), ()),
    (("associate",), ("--contact", DAN)),
    (("disassociate",), ("--contact", CAROL)),
]
NOT_AN_ID = "syncd: not an engagement id: '{}' (the #id timeline shows, or an email's Message-ID)"


def test_every_engagement_command_names_an_unknown_or_hostile_id_alike(env: Env) -> None:
    """One resolver: the same line and exit status from all seven commands; text from the
    command line is shown escaped, and nothing is changed."""
    env.imported(three_to_carol(env))
    before = env.timeline(CAROL)
    for words, options in ENGAGEMENT_COMMANDS:
        missing = env.fails(1, *words, "<Nobody@NOWHERE.example>", *options)
        assert missing == "syncd: no email with Message-ID <Nobody@nowhere.example>", words
        hostile = env.fails(2, *words, "\x1b]0;pwned\x07\u202e9", *options)
        assert hostile == NOT_AN_ID.format("\\x1b]0;pwned\\x07\\u202e9"), words
    assert env.fails(1, "email", "show", "999999") == "syncd: no engagement 999999"
    assert env.fails(2, "thread", "9" * 30) == NOT_AN_ID.format("9" * 30)
    assert env.fails(1, "unpin", "\x1b[31m<ghost@x>") == "syncd: no email with Message-ID <ghost@x>"
    assert env.timeline(CAROL) == before


# --- remove -------------------------------------------------------------------------------


def test_removed_email_stays_removed_after_a_reimport(env: Env) -> None:
    mail = three_to_carol(env)
    env.imported(mail)
    (blob,) = [p for p in (env.store / "attachments").rglob("*") if p.is_file()]
    new = engagement_of(env, CAROL, CAROL_MID)
    gone = env.json("remove", str(new))
    assert gone == {
        "id": new, "type": "email", "message_id": CAROL_MID, "subject": "New",
        "date": "2024-03-01T10:00:00Z", "removed": True,
    }  # fmt: skip
    assert env.ids(CAROL) == ["mid@x", "old@x"]
    assert not blob.exists(), "an attachment no other email uses goes with it"
    assert env.json("search", "new") == []
    assert env.json("contacts", "show", CAROL)["last_contacted"] == "2024-02-01T10:00:00Z"

    # The same email again, alone and with the rest: a duplicate, never logged again.
    again = env.imported(env.mbox("again.mbox", message(CAROL_MID, subject="New")))
    assert again == {"logged": 0, "duplicates": 1, "skipped": 0, "quarantined": 0}
    assert env.imported(mail) == {"logged": 0, "duplicates": 3, "skipped": 0, "quarantined": 0}
    assert env.ids(CAROL) == ["mid@x", "old@x"]
    assert env.json("quarantine", "list") == []
    # What stays is a hash of the key, not the key (which holds Carol's address).
    (tombstone,) = env.rows("SELECT key_hash FROM removed_emails")
    assert len(tombstone[0]) == 64 and CAROL not in tombstone[0]
    assert env.fails(1, "remove", str(new)) == f"syncd: no engagement {new}"


def test_remove_a_note_and_an_email_shared_with_another_contact(env: Env) -> None:
    env.imported(three_to_carol(env))
    note = env.run("notes", "add", CAROL, "Call back").stdout.strip()
    assert env.run("remove", note).stdout.startswith(f"removed #{note} note Call back")
    mid = engagement_of(env, CAROL, "mid@x")
    env.json("remove", str(mid))
    assert env.ids(DAN) == []  # off every timeline it was on
    assert env.ids(CAROL) == [CAROL_MID, "old@x"]
    counts = dict(env.rows("SELECT c.id, c.engagement_count FROM contacts c"))
    assert sorted(counts.values()) == [0, 2]  # the count triggers took the links away


def test_removed_bcc_mail_stays_removed_when_sent_again(tmp_path: Path, notify: Notify) -> None:
    port = free_port()
    bcc = f"bcc: {{listen: '127.0.0.1:{port}', addresses: [{LOG}], verify_sender: none}}\n"
    env = Env(tmp_path, bcc)
    raw = message(CAROL_MID, subject="By BCC")
    with syncd_run(env.config, notify) as daemon:
        send(port, raw)
        wait_for(lambda: env.rows("SELECT count(*) FROM emails") == [(1,)])
        (item,) = env.timeline(CAROL)
        assert item["sources"] == ["bcc"]
        env.json("remove", str(item["id"]))
        send(port, raw)  # answered 250 and spooled, then drained as a duplicate
        send(port, message("other@x", subject="Another"))
        wait_for(lambda: env.rows("SELECT count(*) FROM spool") == [(0,)] and env.ids(CAROL))
        assert env.ids(CAROL) == ["other@x"]
        assert env.json("quarantine", "list") == []
        assert daemon.stop() == 0


def send(port: int, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.sendmail(ADA, [LOG], raw)


def imap_config(env: Env, user: ImapUser) -> None:
    inbox = {
        "name": "ada", "kind": "personal", "owner": ADA,
        "imap": {"host": "127.0.0.1", "port": user.server.port, "security": "none",
                 "username": user.name, "password": user.password, "timeout": "10s"},
        "sync": {"from": "1m", "folders": ["INBOX", "Archive"], "create_contacts": True},
    }  # fmt: skip
    env.config.write_text(
        config_text(env.store) + "inboxes:\n  - " + json.dumps(inbox) + "\n", encoding="utf-8"
    )
    env.config.chmod(0o600)


def folders(env: Env) -> dict[str, tuple[int, int]]:
    (inbox,) = env.json("status")["inboxes"]
    return {f["name"]: (f["uidvalidity"], f["last_uid"]) for f in inbox["folders"]}


def test_removed_email_stays_removed_after_a_uidvalidity_rescan(
    tmp_path: Path, imap_user: ImapUser
) -> None:
    env = Env(tmp_path)
    imap_config(env, imap_user)
    when = datetime.now(UTC) - timedelta(days=1)
    imap_user.server.doveadm("mailbox", "create", "-u", imap_user.name, "Archive")
    for n in range(3):
        imap_user.append("INBOX", message(f"i{n}@x", subject=f"Inbox {n}", sender=CAROL,
                                          to=ADA), when)  # fmt: skip
    first = env.json("sync")
    assert (first["logged"], first["duplicates"]) == (3, 0)
    removed = engagement_of(env, CAROL, "i1@x")
    env.json("remove", str(removed))

    imap_user.server.doveadm(
        "mailbox", "update", "-u", imap_user.name, "--uid-validity", "4242", "INBOX"
    )
    # The same email filed in another folder is fetched there for the first time: the
    # pipeline meets its tombstone. The checkpoint moves past it all the same.
    imap_user.append("Archive", message("i1@x", subject="Inbox 1", sender=CAROL, to=ADA), when)
    dry = env.json("sync", "--dry-run")
    assert dry["duplicates"] == 3  # the rescan knows i1 as removed without fetching it
    rescan = env.json("sync")
    counts = {f["name"]: (f["logged"], f["duplicates"]) for f in rescan["inboxes"][0]["folders"]}
    assert counts == {"INBOX": (0, 3), "Archive": (0, 1)}
    assert env.ids(CAROL) == ["i2@x", "i0@x"]
    state = folders(env)
    assert state["INBOX"] == (4242, 3) and state["Archive"][1] == 1
    assert env.json("sync")["duplicates"] == 0  # nothing is handed over again


# --- associate ------------------------------------------------------------------------------


def test_associate_and_disassociate_records(env: Env) -> None:
    env.imported(three_to_carol(env))
    old = engagement_of(env, CAROL, "old@x")
    assert env.run("deals", "create", "Renewal", "--contact", DAN).stdout == "1\n"
    assert env.run("tickets", "create", "Broken", "--contact", DAN).stdout == "1\n"
    item = env.json("associate", str(old), "--deal", "1", "--ticket", "1", "--contact", DAN,
                    "--company", "ACME.COM")  # fmt: skip
    assert item["associations"] == {
        "contacts": [CAROL, DAN], "companies": ["acme.com"], "deals": [1], "tickets": [1],
    }  # fmt: skip
    assert env.ids(DAN) == ["mid@x", "old@x"]
    dan = env.json("contacts", "show", DAN)
    assert dan["last_contacted"] == "2024-02-01T10:00:00Z"
    text = env.run("associate", str(old), "--deal", "1").stdout
    assert text.strip() == f"#{old}: no new association"

    company = env.rows("SELECT id FROM companies WHERE name = 'acme.com'")[0][0]
    done = env.run("disassociate", str(old), "--contact", CAROL, "--company", str(company))
    assert done.stdout.strip() == f"took #{old} off company acme.com, contact {CAROL}"
    assert env.ids(CAROL) == [CAROL_MID, "mid@x"]
    item = env.json("disassociate", str(old), "--deal", "1", "--ticket", "1", "--contact", DAN)
    assert item["associations"] == {"contacts": [], "companies": [], "deals": [], "tickets": []}
    # Dan's last_contacted follows what is left: the Middle email of February.
    assert env.json("contacts", "show", DAN)["last_contacted"] == "2024-02-01T10:00:00Z"
    assert env.ids(DAN) == ["mid@x"]
    # On no timeline, the email is still in the store: associate puts it back.
    env.json("associate", str(old), "--contact", CAROL)
    assert env.ids(CAROL) == [CAROL_MID, "mid@x", "old@x"]


def test_the_engagement_cap_holds_for_associations(tmp_path: Path) -> None:
    env = Env(tmp_path, cap=2)
    env.imported(three_to_carol(env))  # Carol is at the cap (2 of 3 logged with her)
    assert [len(env.timeline(a)) for a in (CAROL, DAN)] == [2, 1]
    mid = engagement_of(env, DAN, "mid@x")
    ((new,),) = env.rows(f"SELECT engagement_id FROM emails WHERE message_id = '{CAROL_MID}'")
    line = env.fails(1, "associate", str(new), "--contact", DAN, "--contact", CAROL)
    assert line == (
        f"syncd: contact {CAROL} has 2 engagements, the store.max_engagements_per_record "
        "limit (2); nothing was associated"
    )
    assert [len(env.timeline(a)) for a in (CAROL, DAN)] == [2, 1]  # Dan's link rolled back
    env.json("disassociate", str(mid), "--contact", CAROL)
    assert env.json("associate", str(new), "--contact", CAROL)["associations"]["contacts"] == [
        CAROL
    ]


# --- contacts set ---------------------------------------------------------------------------


def test_contacts_set(env: Env) -> None:
    hostile = message("h@x", '"Eve \x1b[31mRed" <eve@evil.example>', subject="Hi")
    env.imported(env.mbox("m.mbox", message("one@x"), hostile))
    shown = env.json("contacts", "set", CAROL, "--owner", "bob@example.com", "--stage",
                     "opportunity", "--legal-basis", "consent", "--name", "Jones, Carol",
                     "--company-name", "Acme Ltd")  # fmt: skip
    assert {k: shown[k] for k in ("owner", "lifecycle_stage", "legal_basis", "name", "company")} == {
        "owner": BOB, "lifecycle_stage": "opportunity", "legal_basis": "consent",
        "name": "Carol Jones", "company": "Acme Ltd",
    }  # fmt: skip
    assert env.json("contacts", "set", CAROL, "--owner", "a.lovelace@example.com")["owner"] == ADA
    back = env.fails(1, "contacts", "set", CAROL, "--stage", "lead")
    assert back == (
        f"syncd: {CAROL}: lifecycle stages move forward only (opportunity to lead); "
        "clear the stage first (--clear-stage)"
    )
    cleared = env.json("contacts", "set", CAROL, "--clear-stage", "--stage", "lead")
    assert cleared["lifecycle_stage"] == "lead"
    assert env.json("contacts", "set", CAROL, "--clear-stage")["lifecycle_stage"] is None
    assert env.json("contacts", "set", CAROL, "--stage", "subscriber")["lifecycle_stage"] == (
        "subscriber"
    )
    assert env.json("contacts", "set", CAROL, "--legal-basis", "")["legal_basis"] is None
    assert env.json("contacts", "set", CAROL, "--company-name", "")["company"] is None
    assert "not a team member" in env.fails(2, "contacts", "set", CAROL, "--owner", "x@y.example")
    assert "unknown lifecycle stage 'won'" in env.fails(
        2, "contacts", "set", CAROL, "--stage", "won"
    )
    assert env.fails(2, "contacts", "set", CAROL).startswith("syncd: nothing to set")
    assert env.fails(1, "contacts", "set", "ghost@acme.com", "--name", "G") == (
        "syncd: no contact with address ghost@acme.com"
    )
    # A name from mail is shown escaped; a contact created by logging is no marketing contact.
    eve = env.run("contacts", "show", "eve@evil.example").stdout
    assert "name: Eve \\x1b[31mRed" in eve and "\x1b" not in eve
    assert env.json("contacts", "show", "eve@evil.example")["marketing_contact"] is False


# --- contacts delete ------------------------------------------------------------------------


def test_deleted_contact_mail_returns_when_it_is_a_contact_again(env: Env) -> None:
    mail = three_to_carol(env)
    env.imported(mail)
    env.run("notes", "add", CAROL, "Met at the fair")
    env.json("pin", str(engagement_of(env, CAROL, "old@x")))
    assert env.json("contacts", "show", CAROL)["marketing_contact"] is False
    deleted = env.json("contacts", "delete", CAROL)
    assert deleted == {"email": CAROL, "emails": [CAROL], "engagements_kept": 4}
    assert env.fails(1, "timeline", CAROL) == f"syncd: no contact with address {CAROL}"
    assert CAROL not in [c["email"] for c in env.json("contacts", "list")]
    assert env.ids(DAN) == ["mid@x"]  # the mail stays in the store, on Dan's timeline
    # Mail logged while Carol is no contact (on Dan, no contact created) waits with hers.
    later = message("later@x", f"{CAROL}, {DAN}", subject="Later",
                    date="Mon, 01 Apr 2024 10:00:00 +0000")  # fmt: skip
    assert env.imported(env.mbox("later.mbox", later), owner=None)["logged"] == 1

    people = env.tmp / "people.csv"
    people.write_text(
        "email,first_name,last_name,company,owner,lifecycle_stage,legal_basis\n"
        f"{CAROL},Carol,Jones,,,customer,\n",
        encoding="utf-8",
    )
    assert env.run("contacts", "import", str(people)).returncode == 0
    assert env.ids(CAROL) == ["old@x", "note:Met at the fair", "later@x", CAROL_MID, "mid@x"]
    carol = env.json("contacts", "show", CAROL)
    assert (carol["lifecycle_stage"], carol["last_contacted"]) == (
        "customer",
        "2024-04-01T10:00:00Z",
    )
    assert env.rows("SELECT count(*) FROM detached_engagements") == [(0,)]

    # Deleted again, and created again by logging: an import with an owner creates her.
    env.json("contacts", "delete", CAROL)
    fresh = message("fresh@x", subject="Fresh", date="Wed, 01 May 2024 10:00:00 +0000")
    assert env.imported(env.mbox("fresh.mbox", fresh))["logged"] == 1
    assert env.ids(CAROL) == ["old@x", "note:Met at the fair", "fresh@x", "later@x",
                              CAROL_MID, "mid@x"]  # fmt: skip
    assert [t["pinned"] for t in env.timeline(CAROL)][:2] == [True, False]
    carol = env.json("contacts", "show", CAROL)
    assert (carol["lifecycle_stage"], carol["marketing_contact"]) == ("lead", False)
    assert env.json("import", str(mail), "--owner", ADA)["duplicates"] == 3
    assert len(env.ids(CAROL)) == 6


def test_with_require_legal_basis_mail_waits_for_a_legal_basis(tmp_path: Path) -> None:
    env = Env(tmp_path, "privacy: {require_legal_basis: true}\n")
    people = tmp_path / "people.csv"
    header = "email,first_name,last_name,company,owner,lifecycle_stage,legal_basis\n"
    people.write_text(header + f"{CAROL},Carol,Jones,,,,consent\n", encoding="utf-8")
    assert env.run("contacts", "import", str(people)).returncode == 0
    assert env.imported(three_to_carol(env))["logged"] == 3
    env.json("contacts", "delete", CAROL)
    people.write_text(header + f"{CAROL},Carol,Jones,,,,\n", encoding="utf-8")
    assert env.run("contacts", "import", str(people)).returncode == 0
    assert env.ids(CAROL) == []  # no legal basis: nothing may be associated with her
    env.json("contacts", "set", CAROL, "--legal-basis", "consent")
    assert env.ids(CAROL) == [CAROL_MID, "mid@x", "old@x"]


def test_deleted_contact_mail_returns_when_bcc_logs_to_the_address(
    tmp_path: Path, notify: Notify
) -> None:
    port = free_port()
    bcc = f"bcc: {{listen: '127.0.0.1:{port}', addresses: [{LOG}], verify_sender: none}}\n"
    env = Env(tmp_path, bcc)
    env.imported(three_to_carol(env))
    env.json("contacts", "delete", CAROL)
    with syncd_run(env.config, notify) as daemon:
        send(port, message("bcc@x", subject="By BCC", date="Wed, 01 May 2024 10:00:00 +0000"))
        wait_for(lambda: env.run("timeline", CAROL).returncode == 0)
        assert env.ids(CAROL) == ["bcc@x", CAROL_MID, "mid@x", "old@x"]
        carol = env.json("contacts", "show", CAROL)
        assert (carol["marketing_contact"], carol["owner"]) == (False, ADA)
        assert daemon.stop() == 0


def test_erase_after_delete_leaves_no_byte_and_removed_mail_stays_removed(env: Env) -> None:
    mail = three_to_carol(env)
    env.imported(mail)
    env.json("remove", str(engagement_of(env, CAROL, CAROL_MID)))
    env.json("contacts", "delete", CAROL)
    erased = env.run("erase", CAROL)
    assert erased.returncode == 0, erased.stderr
    assert scan([env.store], CAROL) == []
    assert env.rows("SELECT count(*) FROM detached_engagements") == [(0,)]
    assert env.rows("SELECT count(*) FROM removed_emails") == [(1,)]
    # Mail that names her later logs her again (erase keeps no list of people; the Middle
    # email was only redacted, as Dan's too), but the email removed before stays removed:
    # its tombstone holds no address.
    assert env.imported(mail) == {"logged": 1, "duplicates": 2, "skipped": 0, "quarantined": 0}
    assert env.ids(CAROL) == ["mid@x", "old@x"]
