"""The BCC endpoint's resource rules, pure and driven by the caller's clock.

``Limits`` holds the caps (connections, DATA time, ...); its ``data_deadline`` is the
minimum data rate rule. ``DataBudget`` counts the DATA bytes held in memory across
sessions. ``sources.bcc`` applies them on the event loop; nothing here
does I/O or reads the time itself, so the rules are tested by tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from syncd.sources.senders import MAX_HEADER_BYTES


def _calls() -> dict[str, int]:
    # Per connection. MAIL/RCPT/DATA allow long sessions of a busy sending MTA.
    return {
        "MAIL": 1000, "RCPT": 20000, "DATA": 1000, "RSET": 1000, "NOOP": 100,
        "EHLO": 10, "HELO": 10, "STARTTLS": 2, "AUTH": 3, "QUIT": 1, "*": 20,
    }  # fmt: skip


@dataclass(frozen=True)
class Limits:
    """Resource caps; the defaults suit a small team's endpoint on the public internet."""

    max_connections: int = 200
    max_per_ip: int = 32
    idle_timeout: float = 120.0  # no bytes for this long: close (also during DATA)
    data_base_s: float = 120.0  # grace before the minimum data rate counts
    data_min_rate: float = 500.0  # bytes/s over the whole DATA, as Postfix's smtpd_min_data_rate
    max_header_bytes: int = MAX_HEADER_BYTES
    # DATA bytes held in memory across all sessions; aiosmtpd keeps a message in memory
    # until it is stored. A message alone always fits.
    data_budget: int = 256 * 1024 * 1024
    worker_threads: int = 32  # spool writes and DNS checks wait here, not in the loop
    command_call_limit: Mapping[str, int] = field(default_factory=_calls)

    def data_deadline(self, started: float, received: int) -> float:
        """When a DATA that began at ``started`` and has brought ``received`` bytes so
        far becomes too slow: each byte buys 1/min_rate seconds past the grace."""
        return started + self.data_base_s + received / self.data_min_rate


class DataBudget:
    """DATA bytes held in memory across sessions, against ``Limits.data_budget``.

    A session is charged what it declared with ``SIZE=`` when DATA starts and then what
    it has sent, whichever is more, until its message is stored or its connection ends.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def admits(self, declared: int) -> bool:
        """May a DATA that declared ``declared`` bytes start now?"""
        return self.in_flight == 0 or self.in_flight + declared <= self.limit

    def grow(self, charged: int, received: int) -> int:
        """A session charged ``charged`` has now received ``received``; its new charge."""
        if received > charged:
            self.in_flight += received - charged
            return received
        return charged

    def over(self, charged: int) -> bool:
        """Past the budget, with other sessions holding bytes too (alone, a message
        always fits: the message size limit is its cap)."""
        return self.in_flight > self.limit and self.in_flight > charged

    def release(self, charged: int) -> None:
        self.in_flight -= charged
