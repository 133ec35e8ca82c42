"""Which server folder a configured folder name means.

``folders: [INBOX, Sent]`` is written once for every server, but servers name folders
differently: Dovecot's default is ``Sent``, Cyrus and Courier put every folder under
``INBOX.`` (``INBOX.Sent``), Gmail has ``[Gmail]/Sent Mail``, a German account has
``Gesendet``. ``resolve`` looks for each configured name, in this order:

1. as written (INBOX in any case, every other name exactly);
2. under a personal NAMESPACE prefix (RFC 2342), a ``/`` in the name written with the
   namespace's own delimiter: ``Sent`` -> ``INBOX.Sent``, ``Projects/Acme`` ->
   ``INBOX.Projects.Acme``;
3. by its SPECIAL-USE role (RFC 6154): ``Sent`` is the folder flagged ``\\Sent``; also
   Drafts, Archive, Junk, Trash and All (Gmail's ``[Gmail]/All Mail``).

A name found nowhere, or whose role two folders claim, is an ``Unresolved`` with a
one-line reason that lists (briefly) what the server has. Gmail labels are folders in
LIST, so they are found as written. Nothing here does I/O: the IMAP session gives the
LIST result and the NAMESPACE answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

UNSELECTABLE_FLAGS = frozenset({"\\noselect", "\\nonexistent"})
# A configured name (case-folded) -> the SPECIAL-USE flag (lower-cased) it stands for.
ROLES = {
    "sent": "\\sent", "sent mail": "\\sent", "sent items": "\\sent",
    "sent messages": "\\sent",
    "drafts": "\\drafts", "draft": "\\drafts",
    "archive": "\\archive", "archives": "\\archive",
    "junk": "\\junk", "spam": "\\junk",
    "trash": "\\trash", "deleted items": "\\trash", "deleted messages": "\\trash",
    "all": "\\all", "all mail": "\\all",
}  # fmt: skip
FLAG_SPELLING = {flag: "\\" + flag[1:].capitalize() for flag in ROLES.values()}
SHOWN_NAMES = 8  # server folders listed in an error before "... and N more"
HOW = {"name": "as written", "namespace": "by namespace", "role": "by role"}

Listing = Iterable[tuple[Sequence[bytes | str], str]]  # LIST: (flags, name) per folder
Namespace = Sequence[tuple[str, str | None]]  # personal namespaces: (prefix, delimiter)


@dataclass(frozen=True, slots=True)
class Resolved:
    """A configured name and the server folder it means."""

    configured: str
    folder: str
    how: str  # name | namespace | role


@dataclass(frozen=True, slots=True)
class Unresolved:
    """A configured name no server folder answers to, and why."""

    configured: str
    error: str


Resolution = Resolved | Unresolved


def flag_text(flag: bytes | str) -> str:
    """A LIST flag, lower-cased (flags are case-insensitive)."""
    text = flag.decode("ascii", "replace") if isinstance(flag, bytes) else flag
    return text.lower()


def folder_key(name: str) -> str:
    # INBOX is case-insensitive in IMAP; every other name is case-sensitive.
    return "INBOX" if name.upper() == "INBOX" else name


def resolve(wanted: Sequence[str], listing: Listing, personal: Namespace = ()) -> list[Resolution]:
    """One resolution per configured name, in the configured order."""
    entries = [(frozenset(flag_text(f) for f in flags), name) for flags, name in listing]
    selectable = {folder_key(n): n for flags, n in entries if not flags & UNSELECTABLE_FLAGS}
    unselectable = {folder_key(n) for flags, n in entries if flags & UNSELECTABLE_FLAGS}
    return [_resolve_one(name, entries, selectable, unselectable, personal) for name in wanted]


def _resolve_one(
    name: str,
    entries: list[tuple[frozenset[str], str]],
    selectable: dict[str, str],
    unselectable: set[str],
    personal: Namespace,
) -> Resolution:
    found = selectable.get(folder_key(name))
    if found is not None:
        return Resolved(name, found, "name")
    tried = [c for c in _under_namespaces(name, personal) if c != name]
    for candidate in tried:
        found = selectable.get(folder_key(candidate))
        if found is not None:
            return Resolved(name, found, "namespace")
    role = ROLES.get(name.casefold())
    if role is not None:
        flagged = [n for flags, n in entries if role in flags and folder_key(n) in selectable]
        if len(flagged) == 1:
            return Resolved(name, flagged[0], "role")
        if flagged:
            return Unresolved(
                name,
                f"{len(flagged)} folders are flagged {FLAG_SPELLING[role]} ({', '.join(flagged)});"
                " write the one to sync in `folders`",
            )
    if folder_key(name) in unselectable:
        return Unresolved(name, "the server lists it as holding no mail (\\Noselect)")
    looked = [*tried, f"a folder flagged {FLAG_SPELLING[role]}"] if role else tried
    also = f" (nor {' or '.join(looked)})" if looked else ""
    return Unresolved(name, f"no such folder{also}; the server has: {_short_list(selectable)}")


def _under_namespaces(name: str, personal: Namespace) -> list[str]:
    """The names ``name`` may have under each personal namespace prefix."""
    out: list[str] = []
    for prefix, delimiter in personal:
        local = name.replace("/", delimiter) if delimiter and delimiter != "/" else name
        for candidate in (name, local):
            full = candidate if candidate.startswith(prefix) else prefix + candidate
            if full not in out:
                out.append(full)
    return out


def _short_list(selectable: dict[str, str]) -> str:
    names = sorted(selectable.values(), key=lambda n: (n.upper() != "INBOX", n))
    if not names:
        return "no folders"
    shown = ", ".join(names[:SHOWN_NAMES])
    more = len(names) - SHOWN_NAMES
    return f"{shown} and {more} more" if more > 0 else shown


def describe(configured: str | None, folder: str, how: str | None) -> str:
    """How ``status`` and ``sync`` name a folder: the server name alone when it is the
    configured one, else ``Sent -> INBOX.Sent (by namespace)``."""
    if configured is None or how is None or (how == "name" and configured == folder):
        return folder
    said = HOW.get(how, how)
    if how == "role" and configured.casefold() in ROLES:
        said += " " + FLAG_SPELLING[ROLES[configured.casefold()]]
    return f"{configured} -> {folder} ({said})"
