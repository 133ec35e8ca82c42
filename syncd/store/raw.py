"""Raw message bytes, kept so mail can be re-processed, without storing attachments twice.

Most of a message's bytes are usually its attachments, and those are already stored
once by content under ``attachments_dir``. So before the raw copy goes into the
``raw_messages`` table, each stored attachment's base64 text is cut out of it and
replaced by a hole: (offset, length, sha256, line width, line ending). ``hydrate`` puts
the exact bytes back by re-encoding the attachment file, and checks the result against
the original's CRC-32 and size. Only a base64 body that re-encodes byte for byte is cut
out; anything else stays in the raw copy. Attachments over ``max_attachment_mb`` are not
stored, so their encoded bytes stay in the raw copy too. What is left is compressed with
zstd level 1 in the parser processes (the ``zstandard`` library: faster than zlib's
fastest level at a better ratio; figures in the README), so the store writes less than
half the bytes per message. ``unpack`` gives the bytes back, for
``hydrate`` and for erase's search.
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Iterable
from hashlib import sha256
from pathlib import Path
from typing import Any, NamedTuple

import zstandard

from syncd.errors import StoreDamaged, StoreDenied
from syncd.mail.headers import b2a_base64
from syncd.store.blobs import HEX64, blob_path

_EOL = {"lf": b"\n", "crlf": b"\r\n"}
_MIN_HOLE = 512  # shorter base64 bodies are not worth a file read on hydration
ZSTD = "zstd"
_local = threading.local()  # a zstd context is not for two threads at once


def _encode(data: bytes, width: int, eol: bytes) -> bytes:
    """``data`` as base64 in lines of ``width`` characters joined by ``eol`` (no final eol)."""
    encoded = memoryview(b2a_base64(data))
    if width <= 0 or width >= len(encoded):
        return bytes(encoded)
    return eol.join([encoded[i : i + width] for i in range(0, len(encoded), width)])


def _locate(raw: bytes, data: bytes, start: int) -> tuple[int, int, int, str] | None:
    """Where ``data``'s base64 text sits in ``raw`` (from ``start``), and its layout.

    The candidate is checked without building the wrapped text: its line breaks must sit
    every ``width`` characters (an extended slice) and the text between them must be the
    encoding of ``data``, so ``_encode`` gives back exactly these bytes."""
    encoded = b2a_base64(data)
    if len(encoded) < _MIN_HOLE:
        return None
    probe = encoded[:64]
    pos = raw.find(probe, start)
    while pos >= 0:
        newline = raw.find(b"\n", pos)
        newline = len(raw) if newline < 0 else newline
        eol = b"\r\n" if raw[newline - 1 : newline] == b"\r" else b"\n"
        width = min(newline - pos - len(eol) + 1, len(encoded))
        breaks = -(-len(encoded) // width) - 1
        length = len(encoded) + breaks * len(eol)
        segment = raw[pos : pos + length]
        stride = width + len(eol)
        if (
            all(segment[width + i :: stride] == eol[i : i + 1] * breaks for i in range(len(eol)))
            # Every break sits where it should; deleting all CR and LF leaves the text
            # between them (any stray CR or LF makes it shorter or different: no match).
            and segment.translate(None, b"\r\n") == encoded
        ):
            return pos, length, width, "crlf" if eol == b"\r\n" else "lf"
        pos = raw.find(probe, pos + 1)
    return None


def dehydrate(raw: bytes, attachments: Iterable[tuple[str, bytes]]) -> tuple[bytes, list[Any]]:
    """``raw`` without the base64 text of the given (sha256, data) attachments, and the holes."""
    holes: list[Any] = []
    cursor = 0
    pieces: list[bytes] = []
    for digest, data in attachments:
        found = _locate(raw, data, cursor)
        if found is None:
            continue
        offset, length, width, eol = found
        pieces.append(raw[cursor:offset])
        holes.append([offset, length, digest, width, eol])
        cursor = offset + length
    if not holes:
        return raw, holes
    pieces.append(raw[cursor:])
    return b"".join(pieces), holes


def hydrate(blob: bytes, holes: list[Any], attachments_dir: Path) -> bytes:
    """The original bytes from a dehydrated blob; StoreError if an attachment is gone."""
    out = bytearray()
    source = 0
    removed = 0
    for offset, length, digest, width, eol in holes:
        cut = offset - removed
        out += blob[source:cut]
        source = cut
        try:
            data = blob_path(attachments_dir, digest).read_bytes()
        except PermissionError as exc:
            raise StoreDenied(f"raw copy unreadable: {exc.filename}: {exc.strerror}") from exc
        except OSError as exc:
            raise StoreDamaged(f"raw copy incomplete: attachment {digest} is gone") from exc
        out += _encode(data, width, _EOL[eol])
        removed += length
    out += blob[source:]
    return bytes(out)


class RawCopy(NamedTuple):
    """What ``raw_messages`` keeps of a message: ``blob`` stored with ``codec``."""

    blob: bytes
    codec: str  # '' (as they are) or ZSTD
    holes: str | None  # JSON
    size: int
    crc32: int


def stored_digest(part: Any) -> str:
    """The sha256 an attachment part is stored under ('' when it is not stored)."""
    digest = part.sha256 if HEX64.match(part.sha256 or "") else ""
    if part.data is not None and not digest:
        digest = sha256(part.data).hexdigest()
    return digest


def prepare_raw(raw: bytes, attachments: Iterable[tuple[str, bytes]]) -> RawCopy:
    """The raw copy of a message, the given (sha256, data) attachments cut out, compressed.

    Pure and free of the store, so a parser process can do it beside the writer."""
    blob, holes = dehydrate(raw, attachments)
    packed = _compressor().compress(blob)
    return RawCopy(
        *((packed, ZSTD) if len(packed) < len(blob) else (blob, "")),
        json.dumps(holes) if holes else None,
        len(raw),
        zlib.crc32(raw),
    )


def unpack(blob: bytes | None, codec: str) -> bytes | None:
    """A raw copy's bytes as dehydrated (holes still cut out); StoreError if unreadable."""
    if blob is None or codec == "":
        return blob
    if codec != ZSTD:
        raise StoreDamaged(f"raw copy stored with an unknown codec {codec!r}")
    try:
        return zstandard.decompress(blob)
    except zstandard.ZstdError as exc:
        raise StoreDamaged(f"raw copy does not decompress: {exc}") from exc


def _compressor() -> zstandard.ZstdCompressor:
    compressor = getattr(_local, "zstd", None)
    if compressor is None:
        compressor = _local.zstd = zstandard.ZstdCompressor(level=1)
    return compressor


def insert_raw(conn: Any, engagement_id: int, copy: RawCopy) -> None:
    """Insert the raw copy (from ``prepare_raw``) of an engagement's message."""
    conn.execute(
        "INSERT INTO raw_messages(engagement_id, raw, codec, holes, size, crc32) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (engagement_id, *copy),
    )


def raw_message(conn: Any, engagement_id: int, attachments_dir: Path) -> bytes | None:
    """The exact bytes of the message behind an engagement, or None if none are kept."""
    row = conn.execute(
        "SELECT raw, codec, holes, size, crc32 FROM raw_messages WHERE engagement_id = ?",
        (engagement_id,),
    ).fetchone()
    if row is None:
        return None
    blob, holes, size, crc = unpack(bytes(row[0]), row[1]) or b"", row[2], row[3], row[4]
    raw = hydrate(blob, json.loads(holes), attachments_dir) if holes else blob
    if len(raw) != size or zlib.crc32(raw) != crc:
        raise StoreDamaged(f"raw copy of engagement {engagement_id} does not match its checksum")
    return raw
