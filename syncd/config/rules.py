"""Cross-field rules of the configuration, checked over the raw YAML data.

pydantic checks each key on its own; the rules that tie keys together live here.
They run over the plain data rather than the validated models so that a file with
both a type error and, say, a duplicate inbox name gets both reported in one run.
Each rule skips values of the wrong type (pydantic reports those) and yields
``(key path, message)`` pairs.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from typing import Any

from syncd.crm.team import Team
from syncd.hosts import is_loopback
from syncd.mail.addresses import normalise

Problem = tuple[tuple[str | int, ...], str]
_SECRET_SOURCES = ("password", "password_file", "password_command")


def check(data: dict[str, Any]) -> list[Problem]:
    """Every cross-field problem of a config mapping, in file order as far as known."""
    problems: list[Problem] = []
    for rule in (_team, _inboxes, _inbox_addresses, _bcc, _smarthost, _submission, _tracking):
        problems.extend(rule(data))
    problems.extend(_notify_command(data))
    return problems


def _dicts(value: Any) -> list[tuple[int, dict[str, Any]]]:
    if not isinstance(value, list):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)]


def _lower(value: Any) -> str | None:
    return normalise(value) if isinstance(value, str) and value.strip() else None


def _is_loopback(host: Any) -> bool:
    # A value of the wrong type is pydantic's to report, not a second problem here.
    return not isinstance(host, str) or is_loopback(host)


def _team(data: dict[str, Any]) -> Iterator[Problem]:
    seen: dict[str, int] = {}
    for i, member in _dicts(data.get("team")):
        addresses = [("email", _lower(member.get("email")))]
        aliases = member.get("aliases")
        if isinstance(aliases, list):
            addresses += [(("aliases", j), _lower(a)) for j, a in enumerate(aliases)]
        for key, address in addresses:
            if address is None:
                continue
            path = ("team", i, *((key,) if isinstance(key, str) else key))
            if address in seen and seen[address] != i:
                yield path, f"{address} already belongs to team[{seen[address]}]"
            seen.setdefault(address, i)


def _team_of(data: dict[str, Any]) -> Team:
    """The team as far as the raw data reads; values of the wrong type are left out."""
    members = []
    for _, member in _dicts(data.get("team")):
        email = _lower(member.get("email"))
        aliases = member.get("aliases")
        if email is not None:
            aliases = aliases if isinstance(aliases, list) else []
            members.append((email, [a for a in aliases if _lower(a) is not None]))
    return Team.build(members)


def _inboxes(data: dict[str, Any]) -> Iterator[Problem]:
    members = _team_of(data).emails
    names: dict[str, int] = {}
    for i, inbox in _dicts(data.get("inboxes")):
        name = inbox.get("name")
        if isinstance(name, str):
            if name in names:
                yield (
                    ("inboxes", i, "name"),
                    f"{name!r} is already the name of inboxes[{names[name]}]",
                )
            names.setdefault(name, i)
        kind, owner = inbox.get("kind"), _lower(inbox.get("owner"))
        if kind == "personal":
            if owner is None:
                yield ("inboxes", i, "owner"), "a personal inbox needs an owner (a team member)"
            elif owner not in members:
                yield ("inboxes", i, "owner"), f"{owner} is not the email of a team member"
        elif kind == "team":
            if inbox.get("owner") is not None:
                yield ("inboxes", i, "owner"), "a team inbox has no owner; remove this key"
            if inbox.get("address") is None:
                yield ("inboxes", i, "address"), "a team inbox needs its address (e.g. support@...)"
        imap = inbox.get("imap")
        if isinstance(imap, dict):
            yield from _imap(("inboxes", i, "imap"), imap)


def _imap(path: tuple[str | int, ...], imap: dict[str, Any]) -> Iterator[Problem]:
    given = [k for k in (*_SECRET_SOURCES, "oauth2_token_command") if imap.get(k) is not None]
    if len(given) != 1:
        what = "none is set" if not given else f"{', '.join(given)} are all set"
        yield (
            path,
            (
                "set exactly one of password, password_file, password_command or "
                f"oauth2_token_command ({what})"
            ),
        )
    if imap.get("security") == "none" and not _is_loopback(imap.get("host")):
        yield (
            (*path, "security"),
            "security: none sends the password in clear; only for a loopback host",
        )


def _inbox_addresses(data: dict[str, Any]) -> Iterator[Problem]:
    personal: dict[str, int] = {}
    team: dict[str, int] = {}
    for i, inbox in _dicts(data.get("inboxes")):
        kind = inbox.get("kind")
        address = _lower(inbox.get("address")) or (
            _lower(inbox.get("owner")) if kind == "personal" else None
        )
        if address is None or kind not in ("personal", "team"):
            continue
        path = ("inboxes", i, "address")
        mine, other = (personal, team) if kind == "personal" else (team, personal)
        if address in other:
            yield (
                path,
                (
                    f"{address} is both a personal and a team inbox address "
                    f"(inboxes[{other[address]}]); an address is one or the other"
                ),
            )
        elif kind == "team" and address in mine:
            yield path, f"{address} already belongs to the team inbox inboxes[{mine[address]}]"
        mine.setdefault(address, i)


def _bcc(data: dict[str, Any]) -> Iterator[Problem]:
    bcc = data.get("bcc")
    if not isinstance(bcc, dict):
        return
    if bcc.get("extra_bcc") and bcc.get("relay") is None and data.get("relay") is None:
        yield ("bcc", "extra_bcc"), "extra_bcc needs relay (the smarthost) to send through"
    if bcc.get("require_tls") is True and bcc.get("tls") is None:
        yield ("bcc", "require_tls"), "require_tls needs bcc.tls (cert and key)"
    members = _team_of(data).emails
    for address in bcc.get("addresses") or []:
        if _lower(address) in members:
            yield (
                ("bcc", "addresses"),
                f"{address} is a team member's address, not a logging address",
            )
    yield from _relay(("bcc", "relay"), bcc.get("relay"))
    if bcc.get("verify_sender") == "auth":
        listen = bcc.get("listen", "127.0.0.1:2525")
        host = str(listen).rsplit(":", 1)[0].strip("[]")
        if bcc.get("tls") is None and not _is_loopback(host):
            yield (
                ("bcc", "verify_sender"),
                ("auth on a non-loopback listener needs bcc.tls: no passwords in clear"),
            )
        if not any(m.get("smtp_password_file") for _, m in _dicts(data.get("team"))):
            yield (
                ("bcc", "verify_sender"),
                "auth needs team[].smtp_password_file for at least one member",
            )


def _relay(path: tuple[str, ...], relay: Any) -> Iterator[Problem]:
    if not isinstance(relay, dict):
        return
    given = [k for k in _SECRET_SOURCES if relay.get(k) is not None]
    if len(given) > 1:
        yield path, f"set at most one of {', '.join(_SECRET_SOURCES)}"
    if given and not relay.get("username"):
        yield (*path, "username"), "a relay password needs a username"
    if relay.get("security") == "none" and not _is_loopback(relay.get("host")):
        yield (
            (*path, "security"),
            "security: none sends mail and password in clear; only for a loopback host",
        )


def _smarthost(data: dict[str, Any]) -> Iterator[Problem]:
    yield from _relay(("relay",), data.get("relay"))


def _submission(data: dict[str, Any]) -> Iterator[Problem]:
    submission = data.get("submission")
    if not isinstance(submission, dict):
        return
    if data.get("relay") is None and (data.get("bcc") or {}).get("relay") is None:
        yield ("submission",), "submission needs relay (the smarthost) to send through"
    listen = submission.get("listen", "127.0.0.1:587")
    host = str(listen).rsplit(":", 1)[0].strip("[]")
    if submission.get("tls") is None and not _is_loopback(host):
        yield (
            ("submission", "tls"),
            "a submission listener that is not loopback needs tls: no passwords in clear",
        )
    if not any(m.get("smtp_password_file") for _, m in _dicts(data.get("team"))):
        yield (
            ("submission",),
            "submission needs team[].smtp_password_file for at least one member",
        )


def _tracking(data: dict[str, Any]) -> Iterator[Problem]:
    tracking = data.get("tracking")
    if not isinstance(tracking, dict) or tracking.get("enabled") is not True:
        return
    for key in ("public_url", "secret_file"):
        if not tracking.get(key):
            yield ("tracking", key), f"tracking is enabled, so {key} is required"
    secret = tracking.get("secret_file")
    if isinstance(secret, str) and secret and not os.access(secret, os.R_OK):
        yield (
            ("tracking", "secret_file"),
            f"cannot read {secret}: create it with one 'keyid:base64' line (a 32-byte secret)",
        )


def _notify_command(data: dict[str, Any]) -> Iterator[Problem]:
    """The command is split as a shell would (``shlex``) but run without one: a string
    that does not split, or splits into nothing, is no command."""
    tracking = data.get("tracking")
    command = tracking.get("notify_command") if isinstance(tracking, dict) else None
    if not isinstance(command, str):
        return
    try:
        words = shlex.split(command)
    except ValueError as exc:
        yield ("tracking", "notify_command"), f"cannot be split into words: {exc}"
        return
    if not words:
        yield ("tracking", "notify_command"), "is empty; leave it null for no command"
