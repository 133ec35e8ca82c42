"""``Backoff``: the pause a periodic job takes after failures, on an injected clock."""

from __future__ import annotations

from syncd.services.schedule import Backoff


def test_backoff_doubles_to_its_cap_and_a_success_ends_it() -> None:
    now = [0.0]
    pause = Backoff(2.0, 5.0, clock=lambda: now[0])
    assert pause.ready()
    assert [pause.failed() for _ in range(4)] == [2.0, 4.0, 5.0, 5.0]
    assert not pause.ready()
    now[0] = 4.9
    assert not pause.ready()
    now[0] = 5.0
    assert pause.ready()
    pause.succeeded()
    assert pause.ready() and pause.failed() == 2.0
