"""Reading a secret from where the config says: inline, a file, or a command's output.

One reader for every secret syncd uses (IMAP and relay passwords, OAuth2 tokens, SMTP
AUTH password files), so they all behave alike: a file's trailing line break is not
part of the secret, a command runs without a shell and with a time limit, and errors
name the source (a path, a program) but never carry the secret or the command's output.
``scrub`` takes secrets out of text a remote server sent, before it is stored or shown.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from syncd.errors import SyncdError

COMMAND_TIMEOUT = 30.0


class SecretError(SyncdError):
    """A secret could not be read; ``str`` says from where, never what."""


def from_command(command: Sequence[str], what: str = "password_command") -> str:
    try:
        done = subprocess.run(
            list(command), capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SecretError(f"{what} {command[0]!r} could not run: {type(exc).__name__}") from None
    if done.returncode != 0:
        raise SecretError(f"{what} {command[0]!r} exited with status {done.returncode}")
    value = done.stdout.strip()
    if not value:
        raise SecretError(f"{what} {command[0]!r} printed nothing")
    return value


def from_file(path: Path | str, what: str = "password_file") -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise SecretError(f"cannot read {what} {path}: {reason}") from None
    return text.rstrip("\r\n")


def read_password(settings: Any) -> str:
    """The password of a config block with password / password_file / password_command."""
    if getattr(settings, "password", None) is not None:
        value = settings.password
        return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    if getattr(settings, "password_file", None) is not None:
        return from_file(settings.password_file)
    if getattr(settings, "password_command", None):
        return from_command(settings.password_command)
    raise SecretError("no password, password_file or password_command is set")


def scrub(text: str, secrets: Iterable[str | None], username: str | None = None) -> str:
    """``text`` with each secret, and the base64 forms an SMTP AUTH exchange sent of it,
    replaced by ``***``: a server that echoes what it was sent must not get it stored."""
    for secret in secrets:
        if not secret:
            continue
        forms = {secret, _b64(secret)}
        if username is not None:
            forms.add(_b64(f"\0{username}\0{secret}"))
        for form in sorted(forms, key=len, reverse=True):
            text = text.replace(form, "***")
            if form != secret:  # an echo may drop base64 padding
                text = text.replace(form.rstrip("="), "***")
    return text


def _b64(value: str) -> str:
    return base64.b64encode(value.encode("utf-8")).decode("ascii")
