"""Search and the contact list through ``syncd.cli.main`` on a store filled by ``syncd
import`` (the real pipeline), and the store as datasette and sqlite-utils see it."""

from __future__ import annotations

import asyncio
import json
import mailbox
import sqlite3
from pathlib import Path

import pytest
import sqlite_utils
from click.testing import CliRunner, Result
from datasette.app import Datasette

from syncd.cli.main import main
from syncd.store import db
from tests.integration.conftest import write_mbox

ADA, BOB = "ada@example.com", "bob@example.com"
DATA = Path(__file__).parent.parent / "data"


def message(msgid: str, to: str, subject: str, body: str, attachment: str = "") -> bytes:
    head = (
        f"From: {ADA}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Date: Wed, 01 May 2024 09:00:0{len(msgid) % 10} +0000\r\nMessage-ID: <{msgid}>\r\n"
    )
    if not attachment:
        return f"{head}\r\n{body}\r\n".encode()
    return (
        f"{head}MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n"
        f"--b1\r\nContent-Type: text/plain\r\n\r\n{body}\r\n"
        f"--b1\r\nContent-Type: application/pdf\r\n"
        f'Content-Disposition: attachment; filename="{attachment}"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n"
    ).encode()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Path]:
    store = tmp_path / "var"
    config = tmp_path / "syncd.yaml"
    config.write_text(
        f"store:\n  path: {store / 'syncd.sqlite3'}\n  attachments_dir: {store / 'attachments'}\n"
        f"team:\n  - name: Ada Lovelace\n    email: {ADA}\n    aliases: [a.lovelace@example.com]\n"
        f"  - name: Bob Martin\n    email: {BOB}\n",
        encoding="utf-8",
    )
    mail = write_mbox(
        tmp_path / "mail.mbox",
        message("zp@x", "Carol Jones <carol@acme.com>", "The zebra plan", "Stripes first."),
        message("zc@x", "dan@gmail.com", "Zebra crossing", "Okapi sighted, no plans."),
        message("doc@x", "erin@beta.example", "Documents", "See attached.", "Quote-7781.pdf"),
        mailbox.mboxMessage((DATA / "forwarded-as-attachment.eml").read_bytes()),
    )
    env = {"config": config, "db": store / "syncd.sqlite3", "tmp": tmp_path}
    assert run(env, "import", str(mail), "--owner", ADA).exit_code == 0
    people = tmp_path / "people.csv"
    people.write_text(
        "email,first_name,last_name,company,owner,lifecycle_stage,legal_basis\n"
        f"frank@acme.com,Frank,Zed,,{BOB},customer,\n"
        "grace@hopper.example,Grace,Hopper,Hopper Labs,a.lovelace@example.com,opportunity,\n",
        encoding="utf-8",
    )
    assert run(env, "contacts", "import", str(people)).exit_code == 0
    return env


def run(env: dict[str, Path], *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(env["config"]), *args])


def index_matches_emails(path: Path) -> None:
    """FTS5's own check that the index holds exactly what the ``emails`` rows say (what
    the write path indexed must equal what the triggers later delete)."""
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO emails_fts(emails_fts, rank) VALUES ('integrity-check', 1)")
    conn.close()


def found(env: dict[str, Path], *query: str) -> list[str]:
    result = run(env, "search", *query, "--json")
    assert result.exit_code == 0, result.output
    return sorted(hit["message_id"] for hit in json.loads(result.stdout))


def test_search_syntax_works_as_written(env) -> None:
    assert found(env, "zebra AND plan") == ["zp@x"]  # found nothing before
    assert found(env, "zebra", "plan") == ["zp@x"]
    assert found(env, "zebra OR okapi") == ["zc@x", "zp@x"]
    assert found(env, "zebra NOT plan") == ["zc@x"]
    assert found(env, '"zebra plan"') == ["zp@x"]
    assert found(env, '"plan zebra"') == []
    assert found(env, "zeb*") == ["zc@x", "zp@x"]
    assert found(env, "subject:okapi") == []
    assert found(env, "body:okapi") == ["zc@x"]
    assert found(env, "(okapi OR stripes) zebra") == ["zc@x", "zp@x"]
    assert found(env, "carol@acme.com") == ["zp@x"]
    assert found(env, "zebra and plan") == []  # lower case: three words, "and" in none


def test_attachment_names_and_forwarded_text_are_searchable(env) -> None:
    assert found(env, "quote-7781.pdf") == ["doc@x"]
    assert found(env, "attachments:quote") == ["doc@x"]
    assert found(env, "attachments:pdf") == ["doc@x"]  # not the forward's inner attachment
    assert found(env, "revised price") == ["fwd-7781@example.com"]  # text of a forward


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ('"zebra plan', 'unbalanced quote: a "phrase" needs its closing "'),
        ("AND", "AND needs a search term on each side, as in: a AND b"),
        ("(zebra", "unbalanced parentheses: a ( without its )"),
        ("@", "nothing to search for: the query has no words"),
    ],
)
def test_malformed_query_is_one_line_and_exit_2(env, query: str, error: str) -> None:
    result = run(env, "search", query)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == f"syncd: search: {error} (syncd search --help shows the syntax)\n"


def test_search_help_documents_the_syntax(env) -> None:
    result = run(env, "search", "--help")
    assert "zebra NOT plan" in result.stdout and "attachments:" in result.stdout


def listed(env: dict[str, Path], *args: str) -> list[str]:
    result = run(env, "contacts", "list", *args, "--json")
    assert result.exit_code == 0, result.output
    return [c["email"] for c in json.loads(result.stdout)]


def test_contacts_list_filters_pages_and_sorts(env) -> None:
    everyone = listed(env)
    assert everyone == sorted(everyone) and len(everyone) == 6
    assert listed(env, "--owner", BOB) == ["frank@acme.com"]
    assert listed(env, "--owner", "A.Lovelace@example.com", "--stage", "opportunity") == [
        "grace@hopper.example"
    ]
    assert listed(env, "--stage", "customer") == ["frank@acme.com"]
    assert listed(env, "--company", "ACME.com") == ["carol@acme.com", "frank@acme.com"]
    assert listed(env, "--company", "hopper labs") == ["grace@hopper.example"]
    assert listed(env, "--limit", "2") == everyone[:2]
    assert listed(env, "--limit", "2", "--offset", "2") == everyone[2:4]
    assert listed(env, "--offset", "5") == everyone[5:]
    assert listed(env, "--sort", "name") == [
        "carol@acme.com",  # Carol Jones
        "dan@buyer.example",  # Dan Buyer
        "frank@acme.com",  # Frank Zed
        "grace@hopper.example",  # Grace Hopper
        "dan@gmail.com",  # then those without a name, by address
        "erin@beta.example",
    ]
    never = listed(env, "--sort", "last-contacted")[-2:]
    assert never == ["frank@acme.com", "grace@hopper.example"]  # imported, never mailed
    page = run(env, "contacts", "list", "--limit", "2", "--offset", "2")
    assert page.exit_code == 0 and page.stdout.splitlines()[-1] == "contacts 3-4 of 6"


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (("--stage", "vip"), 2, "unknown lifecycle stage 'vip'"),
        (("--owner", "eve@evil.example"), 2, "owner eve@evil.example is not a team member"),
        (("--company", "Initech"), 1, "no company named Initech"),
        (("--limit", "0"), 2, "0 is not in the range x>=1"),
    ],
)
def test_contacts_list_bad_filters(env, args: tuple[str, ...], code: int, error: str) -> None:
    result = run(env, "contacts", "list", *args)
    assert result.exit_code == code and error in result.stderr and result.stdout == ""


def test_sqlite_utils_and_datasette_find_the_index_and_emails(env) -> None:
    index_matches_emails(env["db"])
    store = sqlite_utils.Database(env["db"])
    assert store["emails"].detect_fts() == "emails_fts"
    hits = list(store["emails"].search("attachment_names:quote", columns=["message_id"]))
    assert hits == [{"message_id": "doc@x"}]
    frank = next(r for r in store["contacts_view"].rows if r["email"] == "frank@acme.com")
    assert (frank["name"], frank["owner"], frank["lifecycle_stage"]) == (
        "Frank Zed",
        BOB,
        "customer",
    )

    async def browse() -> tuple[dict, dict]:
        app = Datasette([str(env["db"])], immutables=[])
        emails = await app.client.get(
            "/syncd/emails.json?_search=zebra&_shape=objects&_col=message_id"
        )
        view = await app.client.get("/syncd/contacts_view.json?_shape=objects&email=carol@acme.com")
        return emails.json(), view.json()

    emails, view = asyncio.run(browse())
    assert sorted(r["message_id"] for r in emails["rows"]) == ["zc@x", "zp@x"]
    assert [r["name"] for r in view["rows"]] == ["Carol Jones"]


def test_a_store_from_before_0008_gains_attachment_search(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, _name, sql in db._migrations():
        if number < 8:
            for statement in db._split_sql(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
    conn.execute(
        "INSERT INTO engagements(id, type, occurred_at, created_at) VALUES (1, 'email', 'x', 'x')"
    )
    conn.execute(
        "INSERT INTO emails(engagement_id, message_key, message_id, direction, subject, body, "
        "addresses, date) VALUES (1, 'k', 'old@x', 'incoming', 'Invoice', 'see file', '', 'x')"
    )
    conn.execute(
        "INSERT INTO emails_fts(rowid, subject, body, addresses) "
        "VALUES (1, 'Invoice', 'see file', '')"
    )
    conn.execute(
        "INSERT INTO attachments(engagement_id, sha256, filename, content_type, size, stored) "
        "VALUES (1, 'ab', 'march-statement.xlsx', '', 1, 0)"
    )
    conn.close()
    db.connect(path).close()  # as the daemon or a sync does when it starts
    config = tmp_path / "syncd.yaml"
    config.write_text(
        f"store:\n  path: {path}\nteam:\n  - name: Ada\n    email: {ADA}\n", encoding="utf-8"
    )
    env = {"config": config}
    assert found(env, "attachments:statement") == ["old@x"]
    assert found(env, "invoice") == ["old@x"]  # the old text is indexed again
    assert sqlite_utils.Database(path)["emails"].detect_fts() == "emails_fts"
    index_matches_emails(path)


def test_erase_scrubs_an_address_from_attachment_names(env) -> None:
    shared = write_mbox(
        env["tmp"] / "shared.mbox",
        message("sh@x", "carol@acme.com, dan@gmail.com", "Shared", "Both.",
                "notes to carol@acme.com.pdf"),
    )  # fmt: skip
    assert run(env, "import", str(shared), "--owner", ADA).exit_code == 0
    assert found(env, "attachments:carol") == ["sh@x"]
    erased = run(env, "erase", "carol@acme.com")
    assert erased.exit_code == 0, erased.output  # no trace left in the store's files
    assert found(env, "attachments:carol") == []
    assert found(env, "attachments:erased") == ["sh@x"]  # dan's copy of the mail stays
    index_matches_emails(env["db"])
