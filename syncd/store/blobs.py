"""Content-addressed files under ``attachments_dir``: each attachment's bytes once, at
``ab/cd/<sha256>``. A name is its content, so writing is idempotent and a file left by a
rolled-back transaction is harmless; an original filename is never part of a path.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def blob_path(directory: Path, digest: str) -> Path:
    """Content-addressed path of an attachment; ``digest`` is checked to be 64 hex."""
    if not HEX64.match(digest):
        raise ValueError("attachment digest is not a sha256 hex string")
    return directory / digest[:2] / digest[2:4] / digest


def write_blob(directory: Path, digest: str, data: bytes) -> None:
    """Write once: an existing file with this name already holds these bytes."""
    path = blob_path(directory, digest)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{digest}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        # The row that says "stored" commits right after: the bytes must be on disk first.
        os.fsync(handle.fileno())
    os.replace(tmp, path)
