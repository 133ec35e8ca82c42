"""Content-addressed files under ``attachments_dir``: each attachment's bytes once, at
``ab/cd/<sha256>``. A name is its content, so writing is idempotent and a file left by a
rolled-back transaction is harmless; an original filename is never part of a path.

Parser processes write attachments before the rules have decided whether their message
is logged at all, so they write to ``.staging/`` (``stage_blob``); the writer moves a
file into place when its message is logged (``adopt_blob``) and the pipeline discards
the rest after the batch: mail that is skipped leaves no file behind.

A write that fails because of the disk, not the message (``storage_failure``: full,
over quota, read-only, I/O errors, out of file handles), is the store's failure: the
pipeline aborts the batch as it does for SQLITE_FULL, and the source hands the mail
over again later.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Errors that say the filesystem, not the attachment, is at fault; they pass with time.
STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EMFILE, errno.ENFILE}
)


def storage_failure(exc: BaseException) -> bool:
    """True for an OSError that the disk caused (see ``STORAGE_ERRNOS``)."""
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def blob_path(directory: Path, digest: str) -> Path:
    """Content-addressed path of an attachment; ``digest`` is checked to be 64 hex."""
    if not HEX64.match(digest):
        raise ValueError("attachment digest is not a sha256 hex string")
    return directory / digest[:2] / digest[2:4] / digest


def write_blob(directory: Path, digest: str, data: bytes) -> None:
    """Write once: an existing file with this name already holds these bytes. The file
    is on disk before this returns: the row that says "stored" commits right after."""
    adopt_blob(directory, digest, stage_blob(directory, digest, data))


STAGING = ".staging"


def stage_blob(directory: Path, digest: str, data: bytes) -> str:
    """Write ``data`` to a new file under ``directory/.staging`` (on disk before this
    returns) and return its path; '' when the attachment is stored already."""
    if blob_path(directory, digest).exists():
        return ""
    staging = directory / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{digest}.", dir=staging)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return name


def adopt_blob(directory: Path, digest: str, staged: str) -> bool:
    """Move a staged file into place (or drop it: a file already there holds the same
    bytes). False when the attachment's file is not there even so (an erase removed it)."""
    path = blob_path(directory, digest)
    if staged:
        with contextlib.suppress(FileNotFoundError):  # the staged file was purged
            if path.exists():
                os.unlink(staged)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, path)
    return path.exists()


def discard_staged(paths: Iterable[str]) -> None:
    """Remove staged files their messages did not use (adopted ones are gone already)."""
    for path in paths:
        if path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def purge_staging(directory: Path, older_than: float = 3600.0) -> int:
    """Remove staged files left by a crash: older than ``older_than`` seconds, so files
    of a batch another process is writing right now stay."""
    removed = 0
    cutoff = time.time() - older_than
    try:
        entries = list(os.scandir(directory / STAGING))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            continue
    return removed
