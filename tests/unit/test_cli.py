"""The CLI's exit codes and outputs, through the installed entry point in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import syncd.cli.main
from syncd.cli.common import engagement_ref
from syncd.cli.daemon import _Lines

ROOT = Path(__file__).resolve().parents[2]
BAD = """\
team:
  - name: Ada
    email: ada@example
inboxes:
  - name: ada
    kind: personal
    owner: ada@example.com
    imap: {host: imap.example.com, username: ada, password: s3cret-pass, port: nope}
    sync: {from: two weeks}
"""


def syncd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "SYNCD_CONFIG"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=60,
    )


def test_example_config_is_valid() -> None:
    result = syncd("--config", "syncd.yaml.example", "check-config")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_config_after_the_command_name_too(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    assert syncd("check-config", "--config", "syncd.yaml.example").returncode == 0
    assert syncd("check-config", "--config", str(bad)).returncode == 78
    # after the command, it wins over the one before it
    assert (
        syncd("--config", str(bad), "check-config", "--config", "syncd.yaml.example").returncode
        == 0
    )
    listed = syncd("contacts", "list", "--config", str(bad), "--json")
    assert listed.returncode == 78 and "two weeks" in listed.stderr


def test_bad_config_reports_every_problem_and_exits_78(tmp_path: Path) -> None:
    path = tmp_path / "syncd.yaml"
    path.write_text(BAD)
    result = syncd("--config", str(path), "check-config")
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"{path}:3:12: team[0].email: 'ada@example' is not an email address",
        f"{path}:7:12: inboxes[0].owner: ada@example.com is not the email of a team member",
        f"{path}:8:80: inboxes[0].imap.port: Input should be a valid integer, "
        "unable to parse string as an integer",
        f"{path}:9:18: inboxes[0].sync.from: 'two weeks' is not one of now, 1m, 3m, 6m, 1y "
        "or a date",
    ]
    assert "s3cret-pass" not in result.stderr + result.stdout


def test_show_masks_secrets(tmp_path: Path) -> None:
    path = tmp_path / "syncd.yaml"
    path.write_text(
        BAD.replace("ada@example\n", "ada@example.com\n")
        .replace(", port: nope", "")
        .replace("two weeks", "1m")
    )
    path.chmod(0o600)
    result = syncd("--config", str(path), "check-config", "--show")
    assert result.returncode == 0, result.stderr
    assert "s3cret-pass" not in result.stdout + result.stderr
    assert "password: '**********'" in result.stdout
    assert "from: 1m" in result.stdout


def test_config_from_environment_then_default(tmp_path: Path) -> None:
    result = syncd("check-config", env={"SYNCD_CONFIG": "syncd.yaml.example"})
    assert result.returncode == 0, result.stderr
    missing = tmp_path / "nope.yaml"
    result = syncd("check-config", env={"SYNCD_CONFIG": str(missing)})
    assert result.returncode == 78
    assert result.stderr.strip() == f"{missing}: cannot read: No such file or directory"


def test_usage_errors_exit_2() -> None:
    assert syncd("no-such-command").returncode == 2
    assert syncd("check-config", "--bogus").returncode == 2


def test_help_describes_every_command() -> None:
    result = syncd("--help")
    assert result.returncode == 0
    for command in ("run", "sync", "check-config", "doctor", "status"):
        assert f"  {command} " in result.stdout
    for command in ("run", "sync", "status", "doctor"):
        assert syncd(command, "--help").returncode == 0


DIGEST = "sha256:" + "0" * 64


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("12", 12),
        (" #12 ", 12),  # as timeline shows it
        (str(2**63 - 1), 2**63 - 1),
        ("<a@B.example>", "a@b.example"),  # the domain as the parser keys mail
        (" a@B.example ", "a@b.example"),
        ("<12>", "12"),  # a Message-ID of digits alone, by its <>
        ("<1714550400/carol@acme.com>", "1714550400/carol@acme.com"),
        (DIGEST, DIGEST),  # mail without a Message-ID
        ("0", None),
        ("-1", None),
        (str(2**63), None),  # past SQLite's integers
        ("١٢", None),  # digits, but not ASCII ones
        ("abc", None),
        ("12abc", None),
        ("", None),
        ("\x1b[31m1", None),
        ("<\u202eevil@x>", None),
    ],
)
def test_engagement_ref_reads_an_id_or_a_message_id(
    text: str, ref: int | str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    if ref is not None:
        assert engagement_ref(text) == ref
        return
    with pytest.raises(SystemExit) as exited:
        engagement_ref(text)
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("syncd: not an engagement id: '") and "\x1b" not in line
    assert "\u202e" not in line


def test_plain_progress_lines_are_throttled(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _Lines()
    for done in (200, 400, 600):
        lines("INBOX", done, 50_000)  # within 10 s of the first: one line
    lines.clear()  # the next inbox starts with a line of its own
    lines("Sent", 200, 300)
    assert capsys.readouterr().err == "  INBOX: 200/50000\n  Sent: 200/300\n"
