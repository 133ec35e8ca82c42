"""Which syncd paths a systemd unit can start: ``service_path_problem`` on literal paths."""

from __future__ import annotations

import pytest

from syncd.cli.install import service_path_problem

HIDDEN = "which the unit's ProtectHome=yes hides from the service; install it in a venv under /opt (see README: Running as a service)"


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/opt/syncd/bin/syncd", None),
        ("/usr/local/bin/syncd", None),
        ("/srv/tools/venv-3.11/bin/syncd", None),
        ("/homeless/bin/syncd", None),
        (
            "/root/.local/pipx/venvs/syncd/bin/syncd",
            f"syncd is at /root/.local/pipx/venvs/syncd/bin/syncd, {HIDDEN}",
        ),
        ("/home/ada/.venv/bin/syncd", f"syncd is at /home/ada/.venv/bin/syncd, {HIDDEN}"),
        ("/run/user/1000/syncd", f"syncd is at /run/user/1000/syncd, {HIDDEN}"),
        (
            "/opt/my syncd/bin/syncd",
            "syncd is at '/opt/my syncd/bin/syncd'; a unit can name only a plain absolute path",
        ),
        (
            "/opt/100%/bin/syncd",
            "syncd is at '/opt/100%/bin/syncd'; a unit can name only a plain absolute path",
        ),
        ("bin/syncd", "syncd is at 'bin/syncd'; a unit can name only a plain absolute path"),
    ],
)
def test_service_path_problem(path: str, problem: str | None) -> None:
    assert service_path_problem(path) == problem
