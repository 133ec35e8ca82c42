"""Host names and IP addresses as the config and the listeners judge them: which hosts
are this machine (loopback), where plain text and no TLS are allowed."""

from __future__ import annotations

import ipaddress

_LOOPBACK_NAMES = {"localhost"}


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (an IPv6 zone suffix is allowed)."""
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
