"""Configuration: every validation rule, reported with its line, and secrets never shown."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from syncd.config.model import Config, HostPort, dotted
from syncd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

BASE = """\
team:
  - name: Ada
    email: ada@example.com
    aliases: [a.l@example.com]
  - name: Bob
    email: bob@example.com
inboxes:
  - name: ada
    kind: personal
    owner: ada@example.com
    imap: {host: imap.example.com, username: ada, password_file: /etc/syncd/ada}
  - name: support
    kind: team
    address: support@example.com
    imap: {host: imap.example.com, username: support, password: hunter2}
bcc:
  addresses: [log@crm.example.com]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "syncd.yaml"
    path.write_text(textwrap.dedent(text))
    path.chmod(0o600)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        Config.from_yaml(write(tmp_path, text))
    return [str(p).split(":", 1)[1] for p in info.value.problems]


def test_base_and_example_are_valid(tmp_path: Path) -> None:
    config = Config.from_yaml(write(tmp_path, BASE))
    assert config.inboxes[0].address == "ada@example.com"  # defaults to the owner
    assert config.inboxes[0].imap.port == 993
    assert config.inboxes[0].sync.from_ == "3m"
    assert config.inboxes[0].sync.poll_interval == 300
    assert config.bcc is not None and config.bcc.listen == HostPort("127.0.0.1", 2525)
    example = Config.from_yaml(ROOT / "syncd.yaml.example")
    assert example.bcc is not None and example.bcc.listen.is_loopback
    assert str(example.store.path) == "var/syncd.sqlite3"


# (snippet appended to or replacing BASE, the exact "LINE:COL: path: message" expected)
BAD = [
    (
        "team:\n  - name: Ada\n    email: nope\n",
        "3:12: team[0].email: 'nope' is not an email address",
    ),
    (BASE + "stroe: {}\n", "18:1: stroe: unknown key (is it misspelt?)"),
    (
        BASE + "store: {max_attachment_mb: lots}\n",
        "18:28: store.max_attachment_mb: Input should be a valid number, unable to parse string as a number",
    ),
    (
        BASE + "store: {max_engagements_per_record: 0}\n",
        "18:37: store.max_engagements_per_record: Input should be greater than or equal to 1",
    ),
    (
        BASE.replace("password_file: /etc/syncd/ada}", "password_file: /x, password: y}"),
        "11:11: inboxes[0].imap: set exactly one of password, password_file, password_command or oauth2_token_command (password, password_file are all set)",
    ),
    (
        BASE.replace("password_file: /etc/syncd/ada}", "port: 993}"),
        "11:11: inboxes[0].imap: set exactly one of password, password_file, password_command or oauth2_token_command (none is set)",
    ),
    (
        BASE.replace("owner: ada@example.com", "owner: eve@example.com"),
        "10:12: inboxes[0].owner: eve@example.com is not the email of a team member",
    ),
    (
        BASE.replace("    owner: ada@example.com\n", ""),
        "8:5: inboxes[0].owner: a personal inbox needs an owner (a team member)",
    ),
    (
        BASE.replace("address: support@example.com", "address: ada@example.com"),
        "14:14: inboxes[1].address: ada@example.com is both a personal and a team inbox address (inboxes[0]); an address is one or the other",
    ),
    (
        BASE.replace("name: support", "name: ada"),
        "12:11: inboxes[1].name: 'ada' is already the name of inboxes[0]",
    ),
    (
        BASE.replace("name: support", "name: 'bad name'"),
        "12:11: inboxes[1].name: has characters that are not allowed here",
    ),
    (
        BASE.replace("kind: team", "kind: shared"),
        "13:11: inboxes[1].kind: must be one of 'personal', 'team'",
    ),
    (
        BASE.replace("    address: support@example.com\n", ""),
        "12:5: inboxes[1].address: a team inbox needs its address (e.g. support@...)",
    ),
    (
        BASE.replace(
            "bcc:",
            "  - name: sales\n    kind: team\n    address: support@example.com\n    imap: {host: h, username: u, password: p}\nbcc:",
        ),
        "18:14: inboxes[2].address: support@example.com already belongs to the team inbox inboxes[1]",
    ),
    (
        BASE.replace(
            "imap.example.com, username: ada", "imap.example.com, security: none, username: ada"
        ),
        "11:46: inboxes[0].imap.security: security: none sends the password in clear; only for a loopback host",
    ),
    (
        BASE.replace(
            "    imap: {host: imap.example.com, username: ada",
            "    sync: {from: two weeks}\n    imap: {host: imap.example.com, username: ada",
        ),
        "11:18: inboxes[0].sync.from: 'two weeks' is not one of now, 1m, 3m, 6m, 1y or a date",
    ),
    (
        BASE.replace(
            "    imap: {host: imap.example.com, username: ada",
            "    sync: {poll_interval: soon}\n    imap: {host: imap.example.com, username: ada",
        ),
        "11:27: inboxes[0].sync.poll_interval: 'soon' is not a duration like 30s, 5m, 1h",
    ),
    (
        BASE.replace(
            "    imap: {host: imap.example.com, username: ada",
            "    sync: {folders: INBOX}\n    imap: {host: imap.example.com, username: ada",
        ),
        "11:21: inboxes[0].sync.folders: expected 'all' or a list of folder names, e.g. [INBOX, Sent]",
    ),
    (
        BASE.replace(
            "    imap: {host: imap.example.com, username: ada",
            "    sync: {people: some}\n    imap: {host: imap.example.com, username: ada",
        ),
        "11:20: inboxes[0].sync.people: must be one of 'all', 'contacts'",
    ),
    (
        BASE.replace(
            "    imap: {host: imap.example.com, username: ada",
            "    sync: {idle: [1]}\n    imap: {host: imap.example.com, username: ada",
        ),
        "11:18: inboxes[0].sync.idle: Input should be a valid boolean",
    ),
    (
        BASE.replace(
            "    imap: {host: imap.example.com, username: ada",
            "    imap: {host: imap.example.com, port: 99999, username: ada",
        ),
        "11:42: inboxes[0].imap.port: Input should be less than or equal to 65535",
    ),
    (
        BASE + "  listen: nowhere\n",
        "18:11: bcc.listen: 'nowhere' is not host:port (e.g. 127.0.0.1:2525 or [::1]:2525)",
    ),
    (
        BASE + "  verify_sender: maybe\n",
        "18:18: bcc.verify_sender: must be one of 'auth', 'spf', 'dkim', 'none'",
    ),
    (
        BASE + "  extra_bcc: [x@example.org]\n",
        "18:14: bcc.extra_bcc: extra_bcc needs relay (the smarthost) to send through",
    ),
    (
        BASE + "  require_tls: true\n",
        "18:16: bcc.require_tls: require_tls needs bcc.tls (cert and key)",
    ),
    (
        BASE + "  verify_sender: auth\n",
        "18:18: bcc.verify_sender: auth needs team[].smtp_password_file for at least one member",
    ),
    (
        BASE.replace("bcc:\n  addresses: [log@crm.example.com]", "bcc:\n  addresses: []"),
        "17:14: bcc.addresses: List should have at least 1 item after validation, not 0",
    ),
    (
        BASE.replace(
            "  - name: Bob\n    email: bob@example.com", "  - name: Bob\n    email: a.l@example.com"
        ),
        "6:12: team[1].email: a.l@example.com already belongs to team[0]",
    ),
    (
        BASE + "logging: {associate: {records: [contacts, deal]}}\n",
        "18:32: logging.associate.records: 'deal' is not one of contacts, companies, deals, tickets",
    ),
    (
        BASE + "logging: {associate: {records: [companies, deals]}}\n",
        "18:32: logging.associate.records: must include contacts (a logged email is always on its contacts)",
    ),
    (
        BASE + "logging: {associate: {records: all}}\n",
        "18:32: logging.associate.records: expected a list of record types, some of contacts, companies, deals, tickets",
    ),
    (
        BASE + "logging: {associate: {records: []}}\n",
        "18:32: logging.associate.records: expected a list of record types, some of contacts, companies, deals, tickets",
    ),
    (
        BASE + "  create_contacts: sometimes\n",
        "18:20: bcc.create_contacts: Input should be a valid boolean, unable to interpret input",
    ),
    (
        BASE + "logging: {never_log: [not a domain]}\n",
        "18:23: logging.never_log[0]: 'not a domain' is not an address or a domain",
    ),
    (
        BASE + "tracking: {enabled: true, public_url: https://t.example.com}\n",
        "18:11: tracking.secret_file: tracking is enabled, so secret_file is required",
    ),
    (
        BASE + "tracking: {blocked_ips: [1.2.3.4, 10.0.0.0/8, bogus]}\n",
        "18:47: tracking.blocked_ips[2]: 'bogus' is not an IP address or a CIDR network",
    ),
    (
        BASE + "pipelines: {deals: {open: [], won: w, lost: l}}\n",
        "18:27: pipelines.deals.open: List should have at least 1 item after validation, not 0",
    ),
    (BASE + "team: []\n", "18:1: team: duplicate key"),
    (
        BASE + "tracking: {enabled: true, public_url: https://t.example.com, secret_file: /s}\n",
        "18:75: tracking.secret_file: cannot read /s: create it with one 'keyid:base64' line (a 32-byte secret)",
    ),
    (
        BASE + "  relay: {host: smtp.example.org, security: none}\n  extra_bcc: [x@example.org]\n",
        "18:45: bcc.relay.security: security: none sends mail and password in clear; only for a loopback host",
    ),
    ("- just\n- a list\n", "1:1: (top): expected a mapping, the file is a list"),
    ("", "1:1: (top): expected a mapping, the file is empty"),
    ("team: [\n", "2:1: (top): YAML: expected the node content, but found '<stream end>'"),
    ("bcc: {addresses: [log@x.org]}\n", "1:1: team: required key is missing"),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[e.split(": ")[1] for _, e in BAD])
def test_each_rule_reports_its_line(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in problems(tmp_path, text)


def test_every_problem_at_once_sorted_by_line(tmp_path: Path) -> None:
    text = BASE.replace("kind: team", "kind: shared") + "  listen: nowhere\nstroe: 1\n"
    found = problems(tmp_path, text)
    assert [p.split(":")[0] for p in found] == ["13", "18", "19"]


def test_secrets_never_printed(tmp_path: Path) -> None:
    text = BASE.replace("password: hunter2", "password: hunter2, port: lots")
    with pytest.raises(ConfigError) as info:
        Config.from_yaml(write(tmp_path, text))
    assert "hunter2" not in str(info.value)
    config = Config.from_yaml(write(tmp_path, BASE))
    assert "hunter2" not in config.show()
    assert "hunter2" not in repr(config)
    assert "hunter2" not in str(config.inboxes[1].imap)
    assert config.inboxes[1].imap.password.get_secret_value() == "hunter2"


def test_inline_password_in_readable_file_warns(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    assert Config.from_yaml(path).warnings == ()
    path.chmod(0o644)
    (warning,) = Config.from_yaml(path).warnings
    assert "readable by group or others" in warning and "hunter2" not in warning


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_yaml(tmp_path / "missing.yaml")
    assert str(info.value) == f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory"


def test_values_are_normalised_and_frozen(tmp_path: Path) -> None:
    text = BASE.replace("email: bob@example.com", "email: Bob@Example.COM") + (
        "  listen: '[::1]:2626'\nlogging: {never_log: [Partner.Example, '@x.org', S@Y.net]}\n"
    )
    config = Config.from_yaml(write(tmp_path, text))
    assert config.team[1].email == "bob@example.com"
    assert config.bcc.listen == HostPort("::1", 2626) and str(config.bcc.listen) == "[::1]:2626"
    assert config.logging.never_log == ["partner.example", "x.org", "s@y.net"]
    with pytest.raises(ValueError):
        config.team[0].name = "x"  # type: ignore[misc]


def test_dates_and_durations(tmp_path: Path) -> None:
    text = BASE.replace(
        "    imap: {host: imap.example.com, username: ada",
        "    sync: {from: 2024-02-29, poll_interval: 90s}\n"
        "    imap: {host: imap.example.com, username: ada",
    )
    sync = Config.from_yaml(write(tmp_path, text)).inboxes[0].sync
    assert sync.from_ == "2024-02-29" and sync.poll_interval == 90


def test_dotted() -> None:
    assert dotted(("inboxes", 0, "sync", "from")) == "inboxes[0].sync.from"
    assert dotted(()) == ""


def test_show_masks_command_arguments(tmp_path: Path) -> None:
    text = BASE.replace(
        "password_file: /etc/syncd/ada}", "password_command: [/usr/bin/pass, show, s3cr3t-token]}"
    )
    shown = Config.from_yaml(write(tmp_path, text)).show()
    assert "s3cr3t-token" not in shown and "/usr/bin/pass" in shown


def test_the_smarthost_is_relay_and_bcc_relay_still_works_with_a_warning(tmp_path) -> None:
    base = "team: [{email: ada@example.com, name: Ada}]\nbcc: {addresses: [log@example.com]"
    old = tmp_path / "old.yaml"
    old.write_text(base + ", relay: {host: smtp.example.com}}\n")
    config = Config.from_yaml(old)
    assert config.smarthost is not None and config.smarthost.host == "smtp.example.com"
    assert config.warnings == (
        f"{old}:2: bcc.relay still works but is deprecated; move it to the top-level relay: "
        "key, which serves extra_bcc and submission alike",
    )
    new = tmp_path / "new.yaml"
    new.write_text(base + "}\nrelay: {host: relay.example.com, port: 465, security: tls}\n")
    config = Config.from_yaml(new)
    assert config.smarthost is not None and config.smarthost.port == 465
    assert config.warnings == ()


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "submission: {listen: '0.0.0.0:587'}\nrelay: {host: r.example.com}\n",
            "submission.tls: a submission listener that is not loopback needs tls",
        ),
        ("submission: {}\n", "submission: submission needs relay (the smarthost)"),
        (
            "relay: {host: r.example.com, security: none}\n",
            "relay.security: security: none sends mail and password in clear",
        ),
    ],
)
def test_submission_and_relay_rules(tmp_path, yaml_text: str, message: str) -> None:
    path = tmp_path / "syncd.yaml"
    path.write_text("team: [{email: ada@example.com, name: Ada}]\n" + yaml_text)
    with pytest.raises(ConfigError) as caught:
        Config.from_yaml(path)
    assert message in str(caught.value)
