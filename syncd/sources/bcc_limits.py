"""The BCC endpoint's resource rules, pure and driven by the caller's clock.

``Limits`` holds the caps (connections, DATA time, AUTH failures, ...); its
``data_due`` is the minimum data rate rule. ``DataBudget`` counts the DATA bytes
held in memory across sessions. ``AuthThrottle`` slows and then refuses failed logins
per IP and per account. ``sources.smtpserver`` and ``sources.bcc`` apply them on the
event loop; nothing here does I/O or reads the time itself, so the rules are tested by
tables.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from syncd.mail.addresses import normalise


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
    data_base_s: float = 120.0  # grace before the minimum rate counts; the most bytes can bank
    data_min_rate: float = 500.0  # bytes/s over the whole DATA, as Postfix's smtpd_min_data_rate
    # DATA bytes held in memory across all sessions; aiosmtpd keeps a message in memory
    # until it is stored. A message alone always fits.
    data_budget: int = 256 * 1024 * 1024
    # Failed AUTH, counted per IP (an IPv6 /64) and per login, forgotten after a quiet
    # window. Past auth_free_failures each answer waits longer; at lock_after the IP or
    # the account is refused for lock_s. An account lock is short and spares IPs that
    # logged in to it before, so a guesser cannot keep a member out.
    auth_free_failures: int = 3
    auth_delay_step: float = 1.0
    auth_max_delay: float = 8.0
    auth_ip_lock_after: int = 10
    auth_ip_lock_s: float = 300.0
    auth_account_lock_after: int = 30
    auth_account_lock_s: float = 60.0
    auth_window_s: float = 900.0
    worker_threads: int = 32  # spool writes and DNS checks wait here, not in the loop
    command_call_limit: Mapping[str, int] = field(default_factory=_calls)

    def data_due(self, due: float, now: float, received: int) -> float:
        """The DATA deadline after ``received`` more bytes arrived at ``now``: each byte
        buys 1/min_rate seconds, banked at most data_base_s ahead (as Postfix does), so
        a burst cannot buy a long silence. DATA starts with ``due = start + base``."""
        return min(due + received / self.data_min_rate, now + self.data_base_s)


class DataBudget:
    """DATA bytes held in memory across sessions, against ``Limits.data_budget``.

    A session is charged what it has sent until its message is stored or its connection
    ends. A declared ``SIZE=`` only decides whether a DATA may start: charging it would
    let a sender hold the budget with promises.
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


@dataclass
class _Tally:
    failures: int = 0
    last: float = 0.0
    locked_until: float = 0.0


@dataclass(frozen=True)
class Lock:
    """A lock that has just begun: what to log once for a burst of failures."""

    kind: str  # "ip" or "account"
    key: str
    failures: int
    seconds: float


class AuthThrottle:
    """Failed logins per IP and per account; every method is given the time ``now``.

    Per key::

        quiet --failure--> counting (answers wait step * 2**(n - free), at most max)
        counting --n reaches lock_after--> locked (AUTH refused, no password checked)
        locked --lock_s passes--> counting (one more failure locks again)
        counting --window without a failure--> quiet

    A success does not clear an IP's count (a guesser holding one account could reset
    it); it remembers the IP as one the account logs in from, which an account lock
    spares. Tables are bounded: the oldest entries go first.
    """

    MAX_ENTRIES = 10_000
    KNOWN_PER_ACCOUNT = 8

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._ips: OrderedDict[str, _Tally] = OrderedDict()
        self._accounts: OrderedDict[str, _Tally] = OrderedDict()
        self._known: OrderedDict[str, OrderedDict[str, None]] = OrderedDict()

    def delay(self, ip: str, now: float) -> float:
        """Seconds to wait before checking this IP's next try."""
        limits = self.limits
        failures = self._failures(self._ips, ip_key(ip), now)
        if failures < limits.auth_free_failures:
            return 0.0
        excess = min(failures - limits.auth_free_failures, 32)
        return min(limits.auth_max_delay, limits.auth_delay_step * 2.0**excess)

    def refusal(self, ip: str, account: str | None, now: float) -> str | None:
        """ "ip" or "account" when that lock refuses this try, else None."""
        key = ip_key(ip)
        tally = self._ips.get(key)
        if tally is not None and now < tally.locked_until:
            return "ip"
        if account is None:
            return None
        name = account_key(account)
        tally = self._accounts.get(name)
        if tally is not None and now < tally.locked_until and key not in self._known.get(name, {}):
            return "account"
        return None

    def failed(self, ip: str, account: str, now: float) -> list[Lock]:
        """Count a failed login; the locks it starts."""
        limits = self.limits
        started = []
        for kind, table, key, after, seconds in (
            ("ip", self._ips, ip_key(ip), limits.auth_ip_lock_after, limits.auth_ip_lock_s),
            (
                "account",
                self._accounts,
                account_key(account),
                limits.auth_account_lock_after,
                limits.auth_account_lock_s,
            ),
        ):
            tally = self._tally(table, key, now)
            tally.failures += 1
            tally.last = now
            if tally.failures >= after:
                tally.locked_until = now + seconds
                started.append(Lock(kind, key, tally.failures, seconds))
        return started

    def succeeded(self, ip: str, account: str, now: float) -> None:
        known = self._known.setdefault(account_key(account), OrderedDict())
        self._known.move_to_end(account_key(account))
        known[ip_key(ip)] = None
        known.move_to_end(ip_key(ip))
        while len(known) > self.KNOWN_PER_ACCOUNT:
            known.popitem(last=False)
        while len(self._known) > self.MAX_ENTRIES:
            self._known.popitem(last=False)

    def _failures(self, table: OrderedDict[str, _Tally], key: str, now: float) -> int:
        tally = table.get(key)
        if tally is None or now - tally.last > self.limits.auth_window_s:
            return 0
        return tally.failures

    def _tally(self, table: OrderedDict[str, _Tally], key: str, now: float) -> _Tally:
        tally = table.get(key)
        if tally is None or (
            now - tally.last > self.limits.auth_window_s and now >= tally.locked_until
        ):
            tally = table[key] = _Tally()
        table.move_to_end(key)
        while len(table) > self.MAX_ENTRIES:
            table.popitem(last=False)
        return tally


def ip_key(ip: str) -> str:
    """The unit an address is counted in: itself for IPv4, its /64 for IPv6 (one host
    is commonly given a whole /64)."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def account_key(login: str) -> str:
    return normalise(login)[:320]
