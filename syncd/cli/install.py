"""Putting syncd on a machine: ``syncd init`` (a starter config) and ``syncd install-service``
(the systemd units and sysusers file, naming the syncd that writes them).

Both read what they write from ``syncd/share/``, which the wheel carries: symlinks in the
source tree to ``syncd.yaml.example`` and ``contrib/systemd/``, so those stay the one copy
people edit. The units name ``/opt/syncd/bin/syncd``, the documented venv; install-service
puts this syncd's own path there instead, so a venv anywhere else gets units that fit it.
"""

from __future__ import annotations

import os
import re
import sys
from importlib import resources
from pathlib import Path

import click

from syncd.cli.common import App, fail

UNIT_BINARY = "/opt/syncd/bin/syncd"
# Where install-service writes, relative to --root. /etc, not /usr/lib: this is the
# admin's install, not a distribution package's.
SERVICE_FILES = (
    ("systemd/syncd.service", "etc/systemd/system/syncd.service"),
    ("systemd/syncd@.service", "etc/systemd/system/syncd@.service"),
    ("systemd/syncd.sysusers", "etc/sysusers.d/syncd.conf"),
)
# The units' ProtectHome=yes hides these from the service: a syncd there fails to start
# with status 203/EXEC. pipx run as root puts its venvs in /root/.local.
HIDDEN_FROM_SERVICE = ("/home", "/root", "/run/user")
# An Exec line would need quoting or %-escaping for anything else.
PLAIN_PATH = re.compile(r"/[A-Za-z0-9/._+@-]+")


def shipped(name: str) -> str:
    """A file from syncd/share/ as text."""
    return resources.files("syncd").joinpath("share", *name.split("/")).read_text("utf-8")


def service_path_problem(path: str) -> str | None:
    """Why the unit cannot run syncd from ``path`` (its real location), or None."""
    if not PLAIN_PATH.fullmatch(path):
        return f"syncd is at {path!r}; a unit can name only a plain absolute path"
    for hidden in HIDDEN_FROM_SERVICE:
        if path == hidden or path.startswith(hidden + "/"):
            return (
                f"syncd is at {path}, which the unit's ProtectHome=yes hides from the "
                "service; install it in a venv under /opt (see README: Running as a service)"
            )
    return None


def _this_syncd() -> str:
    """The path of the ``syncd`` command running now: its console script, not the
    interpreter, so that the units start the same install."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "syncd" and os.access(argv0, os.X_OK):
        return os.path.abspath(argv0)
    beside = Path(sys.executable).parent / "syncd"
    if os.access(beside, os.X_OK):
        return str(beside)
    fail(f"no syncd command beside {sys.executable}; run install-service as that command")


def _write(path: Path, text: str, mode: int) -> None:
    """Write ``text`` to ``path`` with ``mode``, atomically: the CLI's umask 077 would
    make unit files root-only, and a replaced file must not keep its old mode."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            fd = -1
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise


def _public_dirs(directory: Path) -> None:
    """Create ``directory`` and missing parents 0755, as /etc's directories are."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        path.mkdir()
        path.chmod(0o755)


@click.command("init")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace an existing file.")
@click.pass_obj
def init(app: App, path: Path | None, force: bool) -> None:
    """Write a starter config (the commented example, which runs as it is) to PATH.

    PATH defaults to the config path (--config, $SYNCD_CONFIG, /etc/syncd/syncd.yaml).
    The file is created 0600; an existing one is kept unless --force.
    """
    target = path or app.config_path
    if target.exists() and not force:
        fail(f"{target} exists; --force replaces it")
    if not target.parent.is_dir():
        fail(f"no directory {target.parent}; create it first")
    _write(target, shipped("syncd.yaml.example"), 0o600)
    click.echo(f"wrote {target}; edit it, then: syncd --config {target} check-config", err=True)


@click.command("install-service")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="Write under this directory instead (to package or inspect the files).",
)
@click.option("--force", is_flag=True, help="Replace files that differ from syncd's.")
def install_service(root: Path, force: bool) -> None:
    """Write syncd.service, syncd@.service and the sysusers file, with every Exec line
    naming this syncd command.

    Files: /etc/systemd/system/syncd.service, /etc/systemd/system/syncd@.service,
    /etc/sysusers.d/syncd.conf. Then run systemd-sysusers and systemctl daemon-reload.
    """
    binary = _this_syncd()
    problem = service_path_problem(os.path.realpath(binary))
    if problem:
        fail(problem)
    files = [
        (root / dest, shipped(name).replace(UNIT_BINARY, binary)) for name, dest in SERVICE_FILES
    ]
    differ = [
        str(path) for path, text in files if path.exists() and path.read_text("utf-8") != text
    ]
    if differ and not force:
        listed = ", ".join(differ)
        fail(f"{listed}: not this syncd's text (edited, or another version); --force replaces")
    for path, text in files:
        _public_dirs(path.parent)
        _write(path, text, 0o644)
        click.echo(f"wrote {path}", err=True)
    click.echo(f"units start {binary}; next: systemd-sysusers && systemctl daemon-reload", err=True)


def register(group: click.Group) -> None:
    """Add the install commands to the main CLI group."""
    for command in (init, install_service):
        group.add_command(command)
