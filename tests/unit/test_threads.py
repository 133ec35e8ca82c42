"""syncd.mail.threads.thread_key: which header wins, table-driven."""

from __future__ import annotations

import pytest

from syncd.mail.threads import thread_key

CASES = [
    # (message_id, in_reply_to, references, gm_thrid, expected)
    ("own@x", None, (), None, "own@x"),
    ("own@x", "parent@x", (), None, "parent@x"),
    ("own@x", "parent@x", ("root@x", "parent@x"), None, "root@x"),
    ("own@x", "parent@x", ("root@x", "parent@x"), "1789", "gm:1789"),
    ("own@x", None, (), "  1789 ", "gm:1789"),
    ("own@x", None, (), "", "own@x"),
    ("own@x", None, ("", "root@x"), None, "root@x"),
    ("sha256:abc", None, (), None, "sha256:abc"),
]


@pytest.mark.parametrize(("mid", "irt", "refs", "thrid", "want"), CASES)
def test_thread_key(
    mid: str, irt: str | None, refs: tuple[str, ...], thrid: str | None, want: str
) -> None:
    assert thread_key(mid, irt, refs, thrid, "Re: Hello") == want


def test_subject_never_joins_threads() -> None:
    a = thread_key("a@x", None, (), None, "Re: Invoice")
    b = thread_key("b@y", None, (), None, "Re: Invoice")
    assert a != b


def test_root_and_reply_share_a_key() -> None:
    root = thread_key("root@x", None, (), None)
    reply = thread_key("r1@y", "root@x", ("root@x",), None)
    late = thread_key("r5@z", "r4@y", ("root@x", "r3@x", "r4@y"), None)
    assert root == reply == late == "root@x"
