"""syncd.memory: the malloc thresholds are set once, on glibc."""

from __future__ import annotations

import platform

from syncd.memory import return_large_buffers


def test_large_buffers_go_back_to_the_os_on_glibc() -> None:
    expected = platform.libc_ver()[0] == "glibc"
    assert return_large_buffers() is expected
    assert return_large_buffers() is expected  # once per process, then cached
