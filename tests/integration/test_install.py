"""Installing syncd as a service on Debian 12, as README.md's "Running as a service" says
(issue 15 item 2), and ``syncd init`` / ``syncd install-service`` as a user meets them.

The install test runs the README's own lines: the venv and ``pip install .`` for real
(about 40 s), everything that writes to ``/etc`` under a temporary root instead of ``/``,
then ``systemd-analyze verify`` on the units as written. Lines that need the host's
package manager, user database or running systemd are only checked to be in the README.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEV_SYNCD = Path(sys.executable).parent / "syncd"

# The README block, line by line; True: run here (under the temporary root).
README_STEPS = [
    ("apt-get install -y python3-venv", False),
    ("python3 -m venv /opt/syncd", True),
    ("/opt/syncd/bin/pip install .", True),
    ("/opt/syncd/bin/syncd install-service", True),
    ("systemd-sysusers", True),
    ("systemctl daemon-reload", False),
    ("install -d -m 0755 /etc/syncd", True),
    ("/opt/syncd/bin/syncd init /etc/syncd/syncd.yaml", True),
    ("chgrp syncd /etc/syncd/syncd.yaml && chmod 0640 /etc/syncd/syncd.yaml", False),
    ("systemctl enable --now syncd", False),
]


def umask_022() -> None:
    os.umask(0o022)


def readme_block() -> list[str]:
    """The command lines of the README's "Running as a service" shell block."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Running as a service", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def rooted(line: str, opt: Path, root: Path) -> list[str]:
    """A README line as run here: /opt/syncd is ``opt``, /etc is under ``root``."""
    argv = line.replace("/opt/syncd", str(opt)).replace("/etc/", f"{root}/etc/").split()
    if argv[0] == "python3":
        argv[0] = sys.executable
    if argv[-1] in ("install-service", "systemd-sysusers"):
        argv.append(f"--root={root}")
    return argv


def verify(unit: Path, name: str) -> list[str]:
    """What systemd-analyze verify says about our unit (it exits 0 on warnings)."""
    env = {**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": ""}
    target = str(unit.parent / name)
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", target],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    ours = name.split("@")[0] + "@" if "@" in name else name
    return [line for line in (proc.stdout + proc.stderr).splitlines() if ours in line]


@pytest.mark.timeout(400)
def test_readme_service_steps_install_verified_units(tmp_path: Path) -> None:
    for tool in ("systemd-analyze", "systemd-sysusers"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (apt-get install systemd; .ci/run does)")
    assert readme_block() == [line for line, _ in README_STEPS]
    opt, root = tmp_path / "opt" / "syncd", tmp_path / "root"
    root.mkdir()
    for line, runs in README_STEPS:
        if runs:
            done = subprocess.run(
                rooted(line, opt, root), cwd=REPO, preexec_fn=umask_022,
                capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip
            assert done.returncode == 0, f"{line}:\n{done.stderr[-2000:]}"

    units = root / "etc" / "systemd" / "system"
    for unit in ("syncd.service", "syncd@.service"):
        text = (units / unit).read_text(encoding="utf-8")
        execs = re.findall(r"^Exec\w+=(\S+)", text, re.M)
        assert execs == [f"{opt}/bin/syncd"] * 3 + ["/bin/kill"]
        assert oct((units / unit).stat().st_mode & 0o777) == "0o644"
    assert "syncd:x:" in (root / "etc" / "passwd").read_text(encoding="utf-8")

    # The wheel carries the example: init in the fresh venv wrote it, private.
    config = root / "etc" / "syncd" / "syncd.yaml"
    assert config.read_text(encoding="utf-8") == (REPO / "syncd.yaml.example").read_text("utf-8")
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    check = subprocess.run(
        [str(opt / "bin" / "syncd"), "--config", str(config), "check-config"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr

    for name in ("syncd.service", "syncd@.service", "syncd@sales.service"):
        assert verify(units / "syncd.service", name) == []


def syncd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DEV_SYNCD), *args], preexec_fn=umask_022,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_init_writes_a_private_starter_config_and_keeps_an_existing_one(tmp_path: Path) -> None:
    config = tmp_path / "syncd.yaml"
    done = syncd("--config", str(config), "init")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr == f"wrote {config}; edit it, then: syncd --config {config} check-config\n"
    assert config.read_text(encoding="utf-8") == (REPO / "syncd.yaml.example").read_text("utf-8")
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    assert syncd("--config", str(config), "check-config").returncode == 0

    config.write_text("team: []\n", encoding="utf-8")
    config.chmod(0o644)
    again = syncd("init", str(config))
    assert (again.returncode, again.stderr) == (1, f"syncd: {config} exists; --force replaces it\n")
    assert config.read_text(encoding="utf-8") == "team: []\n"

    forced = syncd("init", "--force", str(config))
    assert forced.returncode == 0, forced.stderr
    assert config.read_text(encoding="utf-8").startswith("# syncd.yaml")
    assert oct(config.stat().st_mode & 0o777) == "0o600"

    nowhere = syncd("init", str(tmp_path / "absent" / "syncd.yaml"))
    assert (nowhere.returncode, nowhere.stderr) == (
        1, f"syncd: no directory {tmp_path / 'absent'}; create it first\n"
    )  # fmt: skip


def test_install_service_rewrites_only_with_force(tmp_path: Path) -> None:
    first = syncd("install-service", "--root", str(tmp_path))
    assert first.returncode == 0, first.stderr
    unit = tmp_path / "etc" / "systemd" / "system" / "syncd.service"
    sysusers = tmp_path / "etc" / "sysusers.d" / "syncd.conf"
    assert first.stderr.splitlines()[-1] == (
        f"units start {DEV_SYNCD}; next: systemd-sysusers && systemctl daemon-reload"
    )
    assert f"ExecStart={DEV_SYNCD} --config /etc/syncd/syncd.yaml run\n" in unit.read_text()
    assert sysusers.read_text() == (REPO / "contrib/systemd/syncd.sysusers").read_text()
    assert {oct(p.stat().st_mode & 0o777) for p in (unit, sysusers, unit.parent)} == {
        "0o644", "0o755"
    }  # fmt: skip

    assert syncd("install-service", "--root", str(tmp_path)).returncode == 0  # same files

    unit.write_text(unit.read_text() + "# local change\n")
    refused = syncd("install-service", "--root", str(tmp_path))
    assert (refused.returncode, refused.stderr) == (
        1, f"syncd: {unit}: not this syncd's text (edited, or another version); --force replaces\n"
    )  # fmt: skip
    assert unit.read_text().endswith("# local change\n")
    assert syncd("install-service", "--root", str(tmp_path), "--force").returncode == 0
    assert not unit.read_text().endswith("# local change\n")
