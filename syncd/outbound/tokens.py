"""Opaque, signed URL tokens for the open pixel and tracked links, and the key file.

Owns the token format and its check; pure (no I/O). A token names a tracked message (an
integer the store assigned), a link index or the open pixel, and the key that signed it;
the MAC is checked before anything else happens, so the endpoint needs no database to
turn away a forged or damaged token. The destination of a link is never in the token: the
store has it, so a token that is not ours can never redirect anywhere. No contact data.

Layout, before URL-safe base64 without padding::

    key id length (1) | key id (1-8 ASCII) | sealed body (11) | MAC (12)
    body = kind (1: b"o" open, b"c" click) | message id (8, unsigned big-endian)
           | link index (2, 0 for the open)

The MAC is HMAC-SHA256 over the key id and the plain body, truncated to 12 bytes (96
bits): a forger's chance per try is 2**-96; at a million guesses a second, one expected
hit takes about 2.5e15 years. 10 bytes (2**-80) would still do against online guessing;
12 keep a wide margin for 3 more URL characters. The key id is under the MAC, so a token
cannot be moved to another key. The body is then XORed with HMAC(enc key, MAC), a
synthetic-IV construction: the same message and link always give the same token, and the
URL shows neither the message id (which would tell how much a team sends) nor whether it
is a pixel or a link. The MAC and encryption keys are derived from the secret apart.
With a 2-character key id a token is 35 characters.

Key file: one ``keyid:base64secret`` line per key, the newest first (it signs; the rest
only verify, so links in mail sent before a rotation keep working). Blank lines and
``#`` comments are ignored. Secrets shorter than 32 bytes are refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from syncd.errors import SyncdError

MAC_BYTES = 12
MIN_SECRET_BYTES = 32
MAX_MESSAGE_ID = 2**64 - 1
MAX_LINK_INDEX = 0xFFFF

_OPEN = b"o"
_CLICK = b"c"
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,8}")
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]+")
_BODY = struct.Struct(">cQH")
# length + 1..8 key id + body + MAC, in base64 characters: anything outside this
# is refused before decoding, so a hostile megabyte costs nothing.
_MIN_BYTES = 1 + 1 + _BODY.size + MAC_BYTES
_MAX_BYTES = 1 + 8 + _BODY.size + MAC_BYTES
_MAX_CHARS = -(-_MAX_BYTES * 4 // 3)


class KeyFileError(SyncdError):
    """The tracking secret file is unusable; ``str`` says which line and why, never the
    secret itself."""


@dataclass(frozen=True)
class Verified:
    """What a genuine token names. ``link_index`` is None for the open pixel."""

    message_id: int
    link_index: int | None
    key_id: str

    @property
    def is_open(self) -> bool:
        return self.link_index is None


def _check_key_id(key_id: str) -> None:
    if not _KEY_ID.fullmatch(key_id):
        raise KeyFileError(f"key id {key_id!r}: use 1 to 8 of A-Z a-z 0-9 _ -")


def _check_secret(key_id: str, secret: bytes) -> None:
    if len(secret) < MIN_SECRET_BYTES:
        raise KeyFileError(
            f"key {key_id!r}: the secret is {len(secret)} bytes, at least "
            f"{MIN_SECRET_BYTES} are needed (generate one with `new_key_line`)"
        )


class Signer:
    """Makes tokens with the ``current`` key and verifies tokens of any key in ``keys``."""

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        for key_id, secret in keys.items():
            _check_key_id(key_id)
            _check_secret(key_id, secret)
        if current not in keys:
            raise KeyFileError(f"the current key {current!r} is not among the keys")
        self._keys = {k.encode("ascii"): _derive(bytes(v)) for k, v in keys.items()}
        self._current = current.encode("ascii")

    def open_token(self, message_id: int) -> str:
        return self._make(_OPEN, message_id, 0)

    def click_token(self, message_id: int, index: int) -> str:
        if not 0 <= index <= MAX_LINK_INDEX:
            raise ValueError(f"link index {index} is outside 0..{MAX_LINK_INDEX}")
        return self._make(_CLICK, message_id, index)

    def verify(self, token: str) -> Verified | None:
        """What ``token`` names, or None if it is not a genuine token of one of our keys.

        Never raises: any str (or anything else) an HTTP client can send yields None.
        """
        if not isinstance(token, str) or not _TOKEN_CHARS.fullmatch(token):
            return None
        if len(token) > _MAX_CHARS:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        # One spelling per token: base64 lets the last character's spare bits vary, and
        # a second spelling of a genuine token should not count as a different URL.
        if _b64(raw) != token or not _MIN_BYTES <= len(raw) <= _MAX_BYTES:
            return None
        kid_len = raw[0]
        if len(raw) != 1 + kid_len + _BODY.size + MAC_BYTES:
            return None
        key_id = raw[1 : 1 + kid_len]
        derived = self._keys.get(key_id)
        if derived is None:
            return None
        mac_key, enc_key = derived
        mac = raw[-MAC_BYTES:]
        body = _xor(raw[1 + kid_len : -MAC_BYTES], _mac(enc_key, mac, _BODY.size))
        if not hmac.compare_digest(_mac(mac_key, raw[: 1 + kid_len] + body), mac):
            return None
        kind, message_id, index = _BODY.unpack(body)
        name = key_id.decode("ascii")
        if kind == _OPEN and index == 0:
            return Verified(message_id, None, name)
        if kind == _CLICK:
            return Verified(message_id, index, name)
        return None

    def _make(self, kind: bytes, message_id: int, index: int) -> str:
        if not 0 <= message_id <= MAX_MESSAGE_ID:
            raise ValueError(f"message id {message_id} is outside 0..2**64-1")
        head = bytes([len(self._current)]) + self._current
        body = _BODY.pack(kind, message_id, index)
        mac_key, enc_key = self._keys[self._current]
        mac = _mac(mac_key, head + body)
        return _b64(head + _xor(body, _mac(enc_key, mac, _BODY.size)) + mac)


def _derive(secret: bytes) -> tuple[bytes, bytes]:
    """Separate MAC and encryption keys from one secret, so neither use weakens the other."""
    return (
        hmac.new(secret, b"syncd token mac", hashlib.sha256).digest(),
        hmac.new(secret, b"syncd token seal", hashlib.sha256).digest(),
    )


def _mac(key: bytes, data: bytes, size: int = MAC_BYTES) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()[:size]


def _xor(data: bytes, pad: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(data, pad, strict=True))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def load_keys(text: str) -> dict[str, bytes]:
    """The keys of a secret file, in file order (the first is current: ``next(iter(...))``).

    Raises KeyFileError naming the line for a malformed line, a bad key id, a duplicate,
    a secret that is not base64 or is shorter than 32 bytes, or a file with no key.
    """
    keys: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key_id, sep, encoded = line.partition(":")
        key_id, encoded = key_id.strip(), encoded.strip()
        if not sep or not encoded:
            raise KeyFileError(f"line {number}: expected keyid:base64secret")
        try:
            _check_key_id(key_id)
            if key_id in keys:
                raise KeyFileError(f"key id {key_id!r} appears twice")
            secret = _decode_secret(key_id, encoded)
            _check_secret(key_id, secret)
        except KeyFileError as exc:
            raise KeyFileError(f"line {number}: {exc}") from None
        keys[key_id] = secret
    if not keys:
        raise KeyFileError("no key: add a line made by `new_key_line`")
    return keys


def _decode_secret(key_id: str, encoded: str) -> bytes:
    # Standard or URL-safe alphabet, padding optional: people paste either.
    normal = encoded.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(normal + "=" * (-len(normal) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError(f"key {key_id!r}: the secret is not base64") from None


def new_key_line(key_id: str | None = None, taken: Iterable[str] = ()) -> str:
    """A fresh ``keyid:base64secret`` line (32 random bytes) to put first in the file.

    Without ``key_id``, a random 2-character id not in ``taken``: short, because it is in
    every URL, and random so two installations rarely share one.
    """
    taken = set(taken)
    if key_id is None:
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
        while (key_id := "".join(secrets.choice(alphabet) for _ in range(2))) in taken:
            pass
    _check_key_id(key_id)
    if key_id in taken:
        raise KeyFileError(f"key id {key_id!r} is already in use")
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(MIN_SECRET_BYTES)).decode('ascii')}"


def tracked_message_id(secret: bytes, message_key: str) -> int:
    """The token id of a relayed message: an HMAC of its message key under the tracking
    secret, 63 bits (SQLite's INTEGER PRIMARY KEY is signed). The same message resent
    after a crash gets the same id, so it is one tracked message, not two; the id tells
    nothing of the Message-ID without the secret."""
    mac = hmac.new(secret, b"syncd-tracked-message\0" + message_key.encode(), hashlib.sha256)
    return int.from_bytes(mac.digest()[:8], "big") >> 1
