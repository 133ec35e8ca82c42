"""The name an attachment is saved under when the user gives none: its filename from
the mail, which the sender chose and so is hostile.

``save_name`` keeps the last part of the name (a sender's ``reports/q3.pdf`` or
``C:\\Users\\x\\q3.pdf`` becomes ``q3.pdf``), drops leading dots and spaces (never a hidden
file such as ``.bashrc``) and refuses, with the reason, a name that climbs out of the
directory (``..``), holds control, format or line-separator characters (escape codes,
a right-to-left override that shows ``exe.pdf`` for ``fdp.exe``), or is longer than a
file name may be. An attachment without a name gets ``attachment-ID`` with the
extension its content type suggests. Pure: strings in, a string or ``UnsafeName`` out.
"""

from __future__ import annotations

import mimetypes
import re
import unicodedata

# What the store wrote for a control character in a filename (store.engagements.safe_filename
# escapes C0, DEL and C1 as \xNN text).
_ESCAPED_CONTROL = re.compile(r"\\x(?:[01][0-9a-f]|7f|[89][0-9a-f])", re.IGNORECASE)
_UNSAFE = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
# Format characters that names in Persian, Indic scripts and emoji sequences need, and
# that move nothing on a screen.
_JOINERS = frozenset({"\u200c", "\u200d"})
_SEPARATORS = re.compile(r"[/\\]")
NAME_MAX = 255  # bytes, as Linux file systems count them


class UnsafeName(ValueError):
    """A filename from the mail that is not saved under as it is; says why."""


def save_name(filename: str, attachment_id: int, content_type: str = "") -> str:
    """The name to save an attachment under in the current directory; ``UnsafeName``
    when the mail's name may not be used (the user then names the file)."""
    name = filename or ""
    if _ESCAPED_CONTROL.search(name) or any(_unsafe(c) for c in name):
        raise UnsafeName("it holds control or formatting characters")
    parts = _SEPARATORS.split(name)
    if any(part.strip() == ".." for part in parts):
        raise UnsafeName("it names a parent directory")
    name = parts[-1].lstrip(". \t").rstrip()
    if not name:
        extension = mimetypes.guess_extension(content_type.split(";")[0].strip().lower()) or ""
        return f"attachment-{attachment_id}{extension}"
    if len(name.encode("utf-8")) > NAME_MAX:
        raise UnsafeName(f"it is longer than {NAME_MAX} bytes")
    return name


def _unsafe(char: str) -> bool:
    return char not in _JOINERS and unicodedata.category(char) in _UNSAFE
