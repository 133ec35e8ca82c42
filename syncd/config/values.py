"""The value types of syncd.yaml's keys: what each scalar may be, and how it is read.

Each is a pydantic ``Annotated`` type whose validator takes the YAML value and gives the
typed one, or raises ``ValueError`` with the one-line reason ``check-config`` shows:
``Email`` (a plain address, normalised), ``AddressOrDomain``, ``Duration`` (30s, 5m, 1h,
1d or a number of seconds), ``SyncFrom`` (now, 1m, 3m, 6m, 1y or a date), ``Listen``
(host:port or [v6]:port, as ``HostPort``), ``Network`` (an IP or CIDR), ``Command`` (a
path or an argv list), ``Folders`` ("all" or names), ``Port`` and ``Name``.
``config.model`` builds the models from them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from typing import Annotated, Any, NamedTuple

from pydantic import BeforeValidator, Field, PlainSerializer

from syncd.hosts import is_loopback
from syncd.mail.addresses import normalise

EMAIL_RE = re.compile(r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
FROM_CHOICES = ("now", "1m", "3m", "6m", "1y")


def _email(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected an email address, got {type(value).__name__}")
    text = normalise(value)
    if not EMAIL_RE.match(text):
        raise ValueError(f"{value!r} is not an email address")
    return text


def _address_or_domain(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not an address or a domain")
    text = normalise(value).lstrip("@")
    if "@" in text:
        return _email(text)
    if not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", text):
        raise ValueError(f"{value!r} is not an address or a domain")
    return text


def _duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration like 30s, 5m, 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION_RE.match(str(value).strip())
        if not match:
            raise ValueError(f"{value!r} is not a duration like 30s, 5m, 1h")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"{value!r} must be longer than zero")
    return seconds


def _sync_from(value: Any) -> str:
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        return value.isoformat()
    text = str(value).strip()
    if text in FROM_CHOICES:
        return text
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{value!r} is not one of now, 1m, 3m, 6m, 1y or a date") from None
    return text


class HostPort(NamedTuple):
    """A listening or connecting address."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        return is_loopback(self.host)


def _host_port(value: Any) -> HostPort:
    if isinstance(value, HostPort):
        return value
    text = str(value).strip()
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]\s]+):(\d+)", text)
    if not match:
        raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:2525 or [::1]:2525)")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is not between 1 and 65535")
    return HostPort(host, port)


def _network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or a CIDR network") from None


def _command(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a command as a list of strings, e.g. [/usr/bin/pass, ada]")
    return value


def _folders(value: Any) -> str | list[str]:
    if value == "all":
        return value
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, str | int) and str(v).strip() for v in value)
    ):
        return [str(v) for v in value]
    raise ValueError("expected 'all' or a list of folder names, e.g. [INBOX, Sent]")


Email = Annotated[str, BeforeValidator(_email)]
Folders = Annotated[str | list[str], BeforeValidator(_folders)]
AddressOrDomain = Annotated[str, BeforeValidator(_address_or_domain)]
Duration = Annotated[float, BeforeValidator(_duration)]
SyncFrom = Annotated[str, BeforeValidator(_sync_from)]
Listen = Annotated[HostPort, BeforeValidator(_host_port), PlainSerializer(str)]
Network = Annotated[
    ipaddress.IPv4Network | ipaddress.IPv6Network,
    BeforeValidator(_network),
    PlainSerializer(str),
]
Command = Annotated[list[str], BeforeValidator(_command)]
Port = Annotated[int, Field(ge=1, le=65535)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
