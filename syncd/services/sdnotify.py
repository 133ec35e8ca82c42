"""The daemon's side of systemd's notify protocol (sd_notify), with no third-party library.

A ``Notifier`` owns one AF_UNIX datagram socket and sends newline-separated
``KEY=VALUE`` lines to ``$NOTIFY_SOCKET`` (a path, or an abstract-namespace name when
it starts with ``@``). It is built from an environment mapping the caller hands in
(``Notifier.from_env(os.environ)`` in the daemon); nothing is read at import time.
When the daemon does not run under systemd (no ``NOTIFY_SOCKET``) every call is a
no-op, and a failed send is logged at debug and never raised: telling systemd how
we are is never a reason to stop syncing mail.

The messages ``syncd run`` sends, in order::

    READY=1            once every listener is bound and the first jobs are scheduled
    STATUS=...         whenever there is something a `systemctl status` reader wants
    WATCHDOG=1         every watchdog_interval() seconds while the loop is healthy
    RELOADING=1        on SIGHUP, with MONOTONIC_USEC; then READY=1 when reloaded
    STOPPING=1         on SIGTERM, before draining
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

# A send only blocks when PID 1 is not reading its notify socket; never stall the
# event loop for long on that.
_SEND_TIMEOUT = 1.0


class Notifier:
    """Sends sd_notify messages to one address, or does nothing when it has none."""

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: int | None = None,
        watchdog_pid: int | None = None,
        pid: int | None = None,
    ) -> None:
        self._address = _socket_address(address)
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid
        self._pid = os.getpid() if pid is None else pid
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, pid: int | None = None) -> Notifier:
        """Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from ``env``."""
        watchdog_usec = _positive_int(env.get("WATCHDOG_USEC"))
        watchdog_pid = _positive_int(env.get("WATCHDOG_PID"))
        if "WATCHDOG_PID" in env and watchdog_pid is None:
            # Like sd_watchdog_enabled(): a PID we cannot read may not be ours.
            watchdog_usec = None
        return cls(
            env.get("NOTIFY_SOCKET"),
            watchdog_usec=watchdog_usec,
            watchdog_pid=watchdog_pid,
            pid=pid,
        )

    @property
    def enabled(self) -> bool:
        """True when there is a notify socket to send to."""
        return self._address is not None

    def ready(self) -> bool:
        return self.send("READY=1")

    def status(self, text: str) -> bool:
        # A newline would start a new KEY=VALUE field, so STATUS stays one line.
        return self.send("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def reloading(self) -> bool:
        # systemd (Type=notify-reload, v253+) requires MONOTONIC_USEC with RELOADING=1
        # to tell this reload from an older one; older versions ignore it.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half the timeout), or None for no watchdog.

        systemd sets WATCHDOG_PID to the main process; a child that inherited the
        environment must not ping on its parent's behalf.
        """
        if self._watchdog_usec is None:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid != self._pid:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def send(self, message: str) -> bool:
        """Send one datagram; True when it left, False when disabled or it failed."""
        if self._address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.settimeout(_SEND_TIMEOUT)
            self._sock.sendto(message.encode("utf-8"), self._address)
        except OSError as exc:
            log.debug("sd_notify to %r failed: %s", self._address, exc)
            self.close()
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _socket_address(value: str | None) -> str | None:
    """The address to sendto(), or None: '@name' is abstract, '/path' a file."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # vsock: addresses (systemd 254+, for VMs) and relative paths are not for us.
    log.debug("NOTIFY_SOCKET %r is not a unix socket address; not notifying", value)
    return None


def _positive_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number > 0 else None
