"""Files and directories only their owner can read, put on disk before they count: what
backups, restores and the CLI write beside the store. Everything written is 0600 and
every directory made is 0700, whatever the umask."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def private_file(path: Path) -> Iterator[IO[bytes]]:
    """A new file only its owner can read, on disk when the block ends."""
    private_dir(path.parent)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # the file may have been there with other bits
    with os.fdopen(fd, "wb") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def private_dir(path: Path) -> None:
    """Make ``path`` and missing parents 0700 (umask or not); leave existing ones be."""
    missing = []
    for parent in [path, *path.parents]:
        if parent.exists():
            break
        missing.append(parent)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
            directory.chmod(0o700)


def sync_dir(path: Path) -> None:
    """Put a directory's entries (files created, renamed or removed in it) on disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
