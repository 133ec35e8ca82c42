"""Configured folder names resolved against literal LIST and NAMESPACE answers."""

from __future__ import annotations

import pytest

from syncd.sources.imap.folders import Resolved, Unresolved, describe, resolve

# Dovecot's default: no prefix, "/" delimiter; SPECIAL-USE flags as its config sets them.
DOVECOT = [
    ((b"\\HasNoChildren",), "INBOX"),
    ((b"\\HasNoChildren", b"\\Sent"), "Sent"),
    ((b"\\HasNoChildren", b"\\Trash"), "Trash"),
    ((b"\\HasChildren",), "Projects"),
    ((b"\\HasNoChildren",), "Projects/Acme"),
]
DOVECOT_NS = [("", "/")]
# Cyrus, Courier and Dovecot with `prefix = INBOX.`: everything under INBOX, "." delimiter.
PREFIXED = [
    ((b"\\HasChildren",), "INBOX"),
    ((b"\\HasNoChildren", b"\\Sent"), "INBOX.Sent"),
    ((b"\\HasNoChildren", b"\\Drafts"), "INBOX.Drafts"),
    ((b"\\HasNoChildren", b"\\Archive"), "INBOX.Archiv"),
    ((b"\\HasNoChildren",), "INBOX.Projects.Acme"),
    ((b"\\HasNoChildren",), "INBOX.Trash"),
]
PREFIXED_NS = [("INBOX.", ".")]
# Gmail: labels are folders; the system folders sit under a \Noselect [Gmail].
GMAIL = [
    ((b"\\HasNoChildren",), "INBOX"),
    ((b"\\HasNoChildren",), "Clients/Acme"),
    ((b"\\HasChildren", b"\\Noselect"), "[Gmail]"),
    ((b"\\All", b"\\HasNoChildren"), "[Gmail]/All Mail"),
    ((b"\\HasNoChildren", b"\\Sent"), "[Gmail]/Sent Mail"),
    ((b"\\HasNoChildren", b"\\Junk"), "[Gmail]/Spam"),
    ((b"\\HasNoChildren", b"\\Trash"), "[Gmail]/Trash"),
    ((b"\\Drafts", b"\\HasNoChildren"), "[Gmail]/Drafts"),
]
GMAIL_NS = [("", "/")]


@pytest.mark.parametrize(
    ("listing", "namespace", "configured", "folder", "how"),
    [
        (DOVECOT, DOVECOT_NS, "INBOX", "INBOX", "name"),
        (DOVECOT, DOVECOT_NS, "inbox", "INBOX", "name"),
        (DOVECOT, DOVECOT_NS, "Sent", "Sent", "name"),
        (DOVECOT, DOVECOT_NS, "Projects/Acme", "Projects/Acme", "name"),
        (DOVECOT, [], "Sent", "Sent", "name"),  # no NAMESPACE capability
        (PREFIXED, PREFIXED_NS, "INBOX", "INBOX", "name"),
        (PREFIXED, PREFIXED_NS, "Sent", "INBOX.Sent", "namespace"),
        (PREFIXED, PREFIXED_NS, "INBOX.Sent", "INBOX.Sent", "name"),
        (PREFIXED, PREFIXED_NS, "Projects/Acme", "INBOX.Projects.Acme", "namespace"),
        (PREFIXED, PREFIXED_NS, "Projects.Acme", "INBOX.Projects.Acme", "namespace"),
        (PREFIXED, PREFIXED_NS, "Archive", "INBOX.Archiv", "role"),  # role only
        (PREFIXED, [], "Sent", "INBOX.Sent", "role"),  # no NAMESPACE: the flag still says
        (PREFIXED, PREFIXED_NS, "Trash", "INBOX.Trash", "namespace"),
        (GMAIL, GMAIL_NS, "Sent", "[Gmail]/Sent Mail", "role"),
        (GMAIL, GMAIL_NS, "All", "[Gmail]/All Mail", "role"),
        (GMAIL, GMAIL_NS, "all mail", "[Gmail]/All Mail", "role"),
        (GMAIL, GMAIL_NS, "Spam", "[Gmail]/Spam", "role"),
        (GMAIL, GMAIL_NS, "Drafts", "[Gmail]/Drafts", "role"),
        (GMAIL, GMAIL_NS, "[Gmail]/Sent Mail", "[Gmail]/Sent Mail", "name"),
        (GMAIL, GMAIL_NS, "Clients/Acme", "Clients/Acme", "name"),  # a label, as today
        # A folder named like a role wins over the flagged one: as written comes first.
        ([*GMAIL, ((), "Sent")], GMAIL_NS, "Sent", "Sent", "name"),
    ],
)  # fmt: skip
def test_resolves(listing: list, namespace: list, configured: str, folder: str, how: str) -> None:
    assert resolve([configured], listing, namespace) == [Resolved(configured, folder, how)]


@pytest.mark.parametrize(
    ("listing", "namespace", "configured", "error"),
    [
        (PREFIXED, PREFIXED_NS, "Kunden",
         "no such folder (nor INBOX.Kunden); the server has: INBOX, INBOX.Archiv,"
         " INBOX.Drafts, INBOX.Projects.Acme, INBOX.Sent, INBOX.Trash"),
        (DOVECOT, DOVECOT_NS, "Junk",
         "no such folder (nor a folder flagged \\Junk); the server has: INBOX, Projects,"
         " Projects/Acme, Sent, Trash"),
        (DOVECOT, DOVECOT_NS, "sent/x", "no such folder; the server has: INBOX, Projects,"
         " Projects/Acme, Sent, Trash"),
        (GMAIL, GMAIL_NS, "[Gmail]", "the server lists it as holding no mail (\\Noselect)"),
        ([*GMAIL, ((b"\\Sent",), "Sent Items")], GMAIL_NS, "Sent",
         "2 folders are flagged \\Sent ([Gmail]/Sent Mail, Sent Items); write the one to"
         " sync in `folders`"),
        ([], [], "INBOX", "no such folder; the server has: no folders"),
        ([((), f"F{n:02}") for n in range(12)], [], "X",
         "no such folder; the server has: F00, F01, F02, F03, F04, F05, F06, F07 and 4 more"),
    ],
)  # fmt: skip
def test_unresolved(listing: list, namespace: list, configured: str, error: str) -> None:
    assert resolve([configured], listing, namespace) == [Unresolved(configured, error)]


def test_each_name_in_the_configured_order() -> None:
    got = resolve(["Sent", "Nope", "INBOX"], PREFIXED, PREFIXED_NS)
    assert [type(r).__name__ for r in got] == ["Resolved", "Unresolved", "Resolved"]
    assert [r.configured for r in got] == ["Sent", "Nope", "INBOX"]


@pytest.mark.parametrize(
    ("configured", "folder", "how", "shown"),
    [
        ("INBOX", "INBOX", "name", "INBOX"),
        ("inbox", "INBOX", "name", "inbox -> INBOX (as written)"),
        ("Sent", "INBOX.Sent", "namespace", "Sent -> INBOX.Sent (by namespace)"),
        ("Sent", "[Gmail]/Sent Mail", "role", "Sent -> [Gmail]/Sent Mail (by role \\Sent)"),
        ("All", "[Gmail]/All Mail", "role", "All -> [Gmail]/All Mail (by role \\All)"),
        (None, "Kunden/Acme", None, "Kunden/Acme"),  # folders: all
    ],
)
def test_describe(configured: str | None, folder: str, how: str | None, shown: str) -> None:
    assert describe(configured, folder, how) == shown
