"""The systemd units in contrib/systemd: the lines the daemon relies on, and systemd's verdict.

`systemd-analyze verify` runs on copies whose syncd path points at a fake executable
(verify refuses an ExecStart= binary that does not exist). It reports typos and bad
values only as warnings with exit status 0, so any output line naming our unit is a
failure. Without systemd-analyze on PATH that part is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "systemd"
SERVICE = CONTRIB / "syncd.service"
TEMPLATE = CONTRIB / "syncd@.service"
SYSUSERS = CONTRIB / "syncd.sysusers"
INSTALLED_BINARY = "/opt/syncd/bin/syncd"

Entries = list[tuple[str, str, str]]


def _entries(path: Path) -> Entries:
    """(section, key, value) for every setting, in order; repeated keys kept."""
    section = ""
    entries: Entries = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a KEY=VALUE line: {raw!r}"
        entries.append((section, key.strip(), value.strip()))
    return entries


def _values(entries: Entries, key: str, section: str = "Service") -> list[str]:
    return [v for s, k, v in entries if s == section and k == key]


def _one(entries: Entries, key: str, section: str = "Service") -> str:
    values = _values(entries, key, section)
    assert len(values) == 1, f"{key}= set {len(values)} times"
    return values[0]


@pytest.mark.parametrize(("unit", "config"), [(SERVICE, "syncd"), (TEMPLATE, "%i")])
def test_daemon_contract_lines(unit: Path, config: str) -> None:
    entries = _entries(unit)
    cfg = f"--config /etc/syncd/{config}.yaml"
    assert _one(entries, "Type") == "notify"
    assert _one(entries, "NotifyAccess") == "main"
    assert _one(entries, "ExecStart") == f"{INSTALLED_BINARY} {cfg} run"
    assert _one(entries, "ExecStartPre") == f"{INSTALLED_BINARY} {cfg} check-config"
    # Validate first, then HUP: a bad file fails the reload and leaves the daemon alone.
    assert _values(entries, "ExecReload") == [
        f"{INSTALLED_BINARY} {cfg} check-config",
        "/bin/kill -HUP $MAINPID",
    ]
    assert _one(entries, "Restart") == "on-failure"
    assert _one(entries, "RestartSec") == "5"
    # A damaged store (65), a refused login or permission (77), a bad config (78): a
    # restart would fail the same way, so systemd must not loop on them.
    assert set(_one(entries, "RestartPreventExitStatus").split()) >= {"65", "77", "78"}
    assert _one(entries, "WatchdogSec") == "60"
    assert _one(entries, "TimeoutStopSec") == "30"
    assert _one(entries, "User") == _one(entries, "Group") == "syncd"
    assert _one(entries, "DynamicUser") == "no"
    assert _one(entries, "StateDirectory") == ("syncd" if config == "syncd" else "syncd/%i")
    assert _one(entries, "ConfigurationDirectory") == "syncd"
    assert _one(entries, "UMask") == "0077"
    assert _one(entries, "WantedBy", "Install") == "multi-user.target"


@pytest.mark.parametrize("unit", [SERVICE, TEMPLATE])
def test_hardening(unit: Path) -> None:
    entries = _entries(unit)
    for key in (
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "PrivateMounts",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
        "RestrictNamespaces",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "LockPersonality",
        "MemoryDenyWriteExecute",
    ):
        assert _one(entries, key) == "yes", key
    assert _one(entries, "ProtectSystem") == "strict"
    assert _one(entries, "RestrictAddressFamilies") == "AF_UNIX AF_INET AF_INET6"
    assert _one(entries, "SystemCallArchitectures") == "native"
    assert _values(entries, "SystemCallFilter") == ["@system-service", "~@privileged @resources"]
    assert _one(entries, "SystemCallErrorNumber") == "EPERM"
    assert _values(entries, "CapabilityBoundingSet") == [""]
    assert _values(entries, "AmbientCapabilities") == []
    assert _values(entries, "LoadCredential") == []


def test_template_differs_only_by_instance() -> None:
    """The two units must not drift apart: same settings once %i is filled in."""
    differ = ("Description", "StateDirectory", "WorkingDirectory")
    plain = [entry for entry in _entries(SERVICE) if entry[1] not in differ]
    template = [
        (s, k, v.replace("/etc/syncd/%i.yaml", "/etc/syncd/syncd.yaml"))
        for s, k, v in _entries(TEMPLATE)
        if k not in differ
    ]
    assert template == plain


@pytest.mark.parametrize(
    ("unit", "state", "credentials"),
    [
        (SERVICE, "/var/lib/syncd/syncd.sqlite3", "/run/credentials/syncd.service/"),
        (TEMPLATE, "/var/lib/syncd/NAME/syncd.sqlite3", "/run/credentials/syncd@sales.service/"),
    ],
)
def test_comments_tell_where_the_store_and_passwords_go(
    unit: Path, state: str, credentials: str
) -> None:
    text = unit.read_text(encoding="utf-8")
    assert state in text
    assert f"password_file: {credentials}" in text
    assert "#LoadCredential=" in text
    assert "#AmbientCapabilities=CAP_NET_BIND_SERVICE" in text


def test_sysusers_creates_the_service_user() -> None:
    lines = [
        line
        for line in SYSUSERS.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines == ['u syncd - "syncd CRM mail sync" /var/lib/syncd']


def _verify_copies(tmp_path: Path, replace: dict[str, str] | None = None) -> Path:
    """Copy both units into tmp_path with syncd pointing at a fake executable there."""
    fake = tmp_path / "syncd"
    fake.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    fake.chmod(0o755)
    for unit in (SERVICE, TEMPLATE):
        text = unit.read_text(encoding="utf-8").replace(INSTALLED_BINARY, str(fake))
        for old, new in (replace or {}).items():
            text = text.replace(old, new)
        (tmp_path / unit.name).write_text(text, encoding="utf-8")
    return tmp_path


def _systemd_verify(directory: Path, unit: str) -> list[str]:
    """Lines systemd-analyze says about our unit; skips when it cannot run here."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    env = {**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": ""}
    proc = subprocess.run(
        [analyze, "verify", "--man=no", str(directory / unit)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    output = (proc.stdout + proc.stderr).splitlines()
    # A template is verified as an instance ("syncd@i.service") and an instance is
    # read from the template file, so for both any "syncd@" line is about ours.
    name = unit.split("@")[0] + "@" if "@" in unit else unit
    ours = [line for line in output if name in line]
    if proc.returncode != 0 and not ours:
        pytest.skip(f"systemd-analyze verify cannot run here: {' | '.join(output)[:300]}")
    return ours


@pytest.mark.parametrize("unit", ["syncd.service", "syncd@.service", "syncd@sales.service"])
def test_systemd_analyze_verify(tmp_path: Path, unit: str) -> None:
    directory = _verify_copies(tmp_path)
    assert _systemd_verify(directory, unit) == []


@pytest.mark.parametrize("unit", ["syncd.service", "syncd@.service", "syncd@sales.service"])
def test_systemd_analyze_verify_notices_a_typo(tmp_path: Path, unit: str) -> None:
    """Guards the check above: a misspelt key must show up as a line about our unit."""
    directory = _verify_copies(tmp_path, {"ProtectClock=yes": "ProtectClocks=yes"})
    complaints = _systemd_verify(directory, unit)
    assert any("ProtectClocks" in line for line in complaints), complaints


def test_systemd_analyze_verify_notices_a_missing_binary(tmp_path: Path) -> None:
    """The one error verify exits non-zero for is reported, not mistaken for a skip."""
    directory = _verify_copies(tmp_path, {str(tmp_path / "syncd"): str(tmp_path / "absent")})
    complaints = _systemd_verify(directory, "syncd@.service")
    assert any("is not executable" in line for line in complaints), complaints
