"""Every record has a timeline: ``companies list/show``, ``deals show`` and ``tickets show``
through the real CLI (``python -m syncd`` in a subprocess) on a store filled by ``syncd
import``; the same item shape and order as ``timeline``; hostile subjects escaped; bad ids
one line; and ``logging.associate.records`` choosing which records imported mail is on."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import as_json, syncd, write_mbox

ADA = "ada@example.com"


def message(msgid: str, to: str, subject: str, date: str) -> bytes:
    return (
        f"From: Ada <{ADA}>\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\n"
        f"Message-ID: <{msgid}>\r\n\r\nAbout {subject}.\r\n"
    ).encode()


def write_config(tmp: Path, extra: str = "") -> Path:
    config = tmp / "syncd.yaml"
    config.write_text(
        f"store: {{path: {tmp / 'var' / 'syncd.sqlite3'}, attachments_dir: {tmp / 'var' / 'att'}}}\n"
        f"team: [{{name: Ada Lovelace, email: {ADA}}}]\n{extra}",
        encoding="utf-8",
    )
    return config


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Carol and Dan at acme.com, Erin at beta.example; a deal and a ticket for Carol
    made between the first mail and the rest, so only later mail is on them."""
    tmp = tmp_path_factory.mktemp("records")
    config = write_config(tmp)
    first = write_mbox(tmp / "first.mbox",
        message("p1@x", "Carol Jones <carol@acme.com>", "Pricing", "Mon, 01 Jan 2024 10:00:00 +0000"),
        message("e1@x", "Erin <erin@beta.example>", "Elsewhere", "Tue, 02 Jan 2024 10:00:00 +0000"),
    )  # fmt: skip
    assert syncd(config, "import", str(first), "--owner", ADA).returncode == 0
    assert (
        syncd(config, "deals", "create", "Renewal", "--contact", "carol@acme.com").stdout == "1\n"
    )
    assert (
        syncd(config, "tickets", "create", "Broken", "--contact", "carol@acme.com").stdout == "1\n"
    )
    later = write_mbox(tmp / "later.mbox",
        message("z2@x", "carol@acme.com, Dan <dan@acme.com>",
                "Zeppelin \x1b[2J\u202eevil", "Thu, 01 Feb 2024 10:00:00 +0000"),
        message("d3@x", "Dan <dan@acme.com>", "Dan only", "Fri, 02 Feb 2024 10:00:00 +0000"),
    )  # fmt: skip
    assert syncd(config, "import", str(later), "--owner", ADA).returncode == 0
    return config


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["message_id"] for item in items]


def test_companies_list(filled: Path) -> None:
    listed = as_json(filled, "companies", "list")
    assert [(c["id"], c["name"], c["domains"], c["contact_count"]) for c in listed] == [
        (1, "acme.com", ["acme.com"], 2),
        (2, "beta.example", ["beta.example"], 1),
    ]
    assert set(listed[0]) == {
        "id", "name", "domains", "owner", "lifecycle_stage", "contact_count",
        "last_activity", "created_at",
    }  # fmt: skip
    assert listed[0]["last_activity"] == "2024-02-02T10:00:00Z"
    text = syncd(filled, "companies", "list")
    assert text.returncode == 0 and text.stdout.splitlines()[0].split() == [
        "id", "name", "domains", "owner", "lifecycle_stage", "contacts", "last_activity",
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["1", "acme.com", "ACME.com", "mail.acme.com", "someone@acme.com"])
def test_company_show_by_id_domain_or_address(filled: Path, name: str) -> None:
    shown = as_json(filled, "companies", "show", name)
    assert (shown["id"], shown["name"], shown["domains"]) == (1, "acme.com", ["acme.com"])
    assert [c["email"] for c in shown["contacts"]] == ["carol@acme.com", "dan@acme.com"]
    assert shown["contacts"][0]["company"] == "acme.com"
    assert (shown["deals"], shown["tickets"]) == ([1], [1])
    # Every acme.com email, newest first, in the contact timeline's item shape.
    assert ids(shown["timeline"]) == ["d3@x", "z2@x", "p1@x"]
    contact_item = next(i for i in as_json(filled, "timeline", "carol@acme.com") if i["id"] == 3)
    assert shown["timeline"][1] == contact_item


def test_deal_and_ticket_show_their_own_timelines(filled: Path) -> None:
    deal = as_json(filled, "deals", "show", "1")
    assert (deal["id"], deal["name"], deal["stage"], deal["state"]) == (
        1, "Renewal", "appointmentscheduled", "open",
    )  # fmt: skip
    assert (deal["contacts"], deal["companies"]) == (["carol@acme.com"], ["acme.com"])
    # Mail logged after the deal was made, with Carol on it; Dan's own mail is not.
    assert ids(deal["timeline"]) == ["z2@x"]
    assert deal["timeline"][0]["associations"]["deals"] == [1]
    ticket = as_json(filled, "tickets", "show", "1")
    assert (ticket["subject"], ticket["status"], ticket["contacts"]) == (
        "Broken", "new", ["carol@acme.com"],
    )  # fmt: skip
    assert ids(ticket["timeline"]) == ["z2@x"]
    assert ticket["timeline"] == deal["timeline"]


def test_text_output_escapes_what_came_in_a_mail(filled: Path) -> None:
    for args in (("companies", "show", "acme.com"), ("deals", "show", "1")):
        text = syncd(filled, *args)
        assert text.returncode == 0, text.stderr
        assert "\x1b" not in text.stdout and "\u202e" not in text.stdout
        assert "Zeppelin \\x1b[2J\\u202eevil" in text.stdout
    shown = syncd(filled, "companies", "show", "acme.com").stdout
    assert "contacts: carol@acme.com, dan@acme.com" in shown
    assert "timeline: 3 engagement(s)" in shown


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (("deals", "show", "7"), 1, "syncd: no deal 7\n"),
        (("tickets", "show", "7"), 1, "syncd: no ticket 7\n"),
        (("deals", "show", "99999999999999999999999"), 1, "syncd: no deal 99999999999999999999999\n"),
        (("deals", "show", "abc"), 2,
         "syncd: 'abc' is not a deal id (a number, as `syncd deals list` shows)\n"),
        (("tickets", "show", "1x"), 2,
         "syncd: '1x' is not a ticket id (a number, as `syncd tickets list` shows)\n"),
        (("companies", "show", "nowhere.example"), 1,
         "syncd: no company with id, domain or name 'nowhere.example'\n"),
        (("companies", "show", "99"), 1, "syncd: no company with id, domain or name '99'\n"),
        (("companies", "show", "\x1b[2J"), 1,
         "syncd: no company with id, domain or name '\\x1b[2J'\n"),
    ],
)  # fmt: skip
def test_bad_ids_get_one_line(filled: Path, args: tuple[str, ...], code: int, error: str) -> None:
    for extra in ((), ("--json",)):
        done = syncd(filled, *args, *extra)
        assert (done.returncode, done.stderr, done.stdout) == (code, error, "")


def test_a_shared_name_asks_for_an_id(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    people = tmp_path / "people.csv"
    people.write_text(
        "email,first_name,last_name,company\nkim@gmail.com,Kim,Lee,Globex\n", encoding="utf-8"
    )
    assert syncd(config, "contacts", "import", str(people)).returncode == 0
    # A second company by that name, as an older syncd or another tool may have left.
    with sqlite3.connect(tmp_path / "var" / "syncd.sqlite3") as conn:
        conn.execute(
            "INSERT INTO companies(name, created_at) VALUES ('GLOBEX', '2024-01-01T00:00:00Z')"
        )
    done = syncd(config, "companies", "show", "globex")
    assert (done.returncode, done.stderr) == (
        2, "syncd: 2 companies are named 'globex' (ids 1, 2); give an id\n",
    )  # fmt: skip
    assert as_json(config, "companies", "show", "2")["name"] == "GLOBEX"
    assert [c["email"] for c in as_json(config, "companies", "show", "1")["contacts"]] == [
        "kim@gmail.com"
    ]


def test_an_empty_store_has_no_companies(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert as_json(config, "companies", "list") == []
    assert syncd(config, "deals", "show", "1").returncode == 1


@pytest.mark.parametrize(
    ("records", "companies", "deals"),
    [
        ("[contacts, companies, deals, tickets]", ["acme.com"], [1]),
        ("[contacts, deals]", [], [1]),
        ("[contacts]", [], []),
    ],
)
def test_logging_associate_records(
    tmp_path: Path, records: str, companies: list[str], deals: list[int]
) -> None:
    config = write_config(tmp_path, f"logging: {{associate: {{records: {records}}}}}\n")
    first = write_mbox(tmp_path / "first.mbox",
        message("a1@x", "carol@acme.com", "Hello", "Mon, 01 Jan 2024 10:00:00 +0000"),
    )  # fmt: skip
    assert syncd(config, "import", str(first), "--owner", ADA).returncode == 0
    assert syncd(config, "deals", "create", "D", "--contact", "carol@acme.com").returncode == 0
    second = write_mbox(tmp_path / "second.mbox",
        message("a2@x", "carol@acme.com", "Again", "Tue, 02 Jan 2024 10:00:00 +0000"),
    )  # fmt: skip
    assert syncd(config, "import", str(second), "--owner", ADA).returncode == 0
    newest = as_json(config, "timeline", "carol@acme.com")[0]
    assert newest["message_id"] == "a2@x"
    assert newest["associations"] == {
        "contacts": ["carol@acme.com"], "companies": companies, "deals": deals, "tickets": [],
    }  # fmt: skip
    # The contact still gets its company by domain; only the email is not put on it.
    assert as_json(config, "contacts", "show", "carol@acme.com")["company"] == "acme.com"
    assert len(as_json(config, "companies", "show", "acme.com")["timeline"]) == len(companies) * 2


def test_a_bad_records_value_is_one_check_config_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, "logging:\n  associate:\n    records: [contacts, deal]\n")
    done = syncd(config, "check-config")
    assert done.returncode == 78
    assert done.stderr == (
        f"{config}:5:14: logging.associate.records: 'deal' is not one of contacts, "
        "companies, deals, tickets\n"
    )
