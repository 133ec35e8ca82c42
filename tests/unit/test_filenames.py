"""syncd.mail.filenames.save_name: the name an attachment is saved under, from the
hostile filename in the mail (as the store keeps it: control characters escaped)."""

from __future__ import annotations

import pytest

from syncd.mail.filenames import UnsafeName, save_name
from syncd.store.engagements import safe_filename


@pytest.mark.parametrize(
    ("filename", "content_type", "saved"),
    [
        ("q3.pdf", "application/pdf", "q3.pdf"),
        ("Quote 7781 (final).pdf", "application/pdf", "Quote 7781 (final).pdf"),
        ("Grüße.txt", "text/plain", "Grüße.txt"),
        ("reports/q3.pdf", "application/pdf", "q3.pdf"),  # directories stripped
        ("/etc/passwd", "text/plain", "passwd"),
        ("C:\\Users\\ada\\q3.pdf", "application/pdf", "q3.pdf"),
        (".bashrc", "text/plain", "bashrc"),  # never a hidden file
        ("  ...profile ", "text/plain", "profile"),
        ("", "application/pdf", "attachment-7.pdf"),  # no name: the id and the type's extension
        (".", "image/png", "attachment-7.png"),
        ("dir/", "application/x-unknown-thing", "attachment-7"),
        ("a\u200db.txt", "text/plain", "a\u200db.txt"),  # a joiner (emoji, Persian) is kept
    ],
)
def test_save_name(filename: str, content_type: str, saved: str) -> None:
    assert save_name(filename, 7, content_type) == saved


@pytest.mark.parametrize(
    ("filename", "why"),
    [
        ("..", "parent directory"),
        ("../../.ssh/authorized_keys", "parent directory"),
        ("a/../b.txt", "parent directory"),
        ("..\\..\\boot.ini", "parent directory"),
        (safe_filename("invoice\x1b]0;owned\x07.pdf"), "control"),  # as the store keeps it
        (safe_filename("two\nlines.txt"), "control"),
        ("invoice\x1b[31m.pdf", "control"),  # in case a name reaches here unescaped
        ("annexe\u202efdp.exe", "control"),  # right-to-left override: shows "exe.pdf"
        ("zero\u200bwidth.pdf", "control"),
        ("line\u2028sep.pdf", "control"),
        ("é" * 200 + ".pdf", "longer than 255 bytes"),
    ],
)
def test_unsafe_names_are_refused_with_the_reason(filename: str, why: str) -> None:
    with pytest.raises(UnsafeName, match=why):
        save_name(filename, 7, "application/pdf")
