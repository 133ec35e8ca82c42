"""Registrable domains from the bundled public suffix list, free-mail, never_log matching."""

from __future__ import annotations

import pytest

from syncd.crm.domains import (
    company_domain,
    domain_matches,
    is_free_mail,
    registrable_domain,
)
from syncd.mail.addresses import domain_of


@pytest.mark.parametrize(
    ("domain", "registrable"),
    [
        ("example.com", "example.com"),
        ("mail.example.co.uk", "example.co.uk"),
        ("a.b.c.example.com.au", "example.com.au"),
        ("EXAMPLE.COM.", "example.com"),
        ("foo.github.io", "foo.github.io"),  # private suffixes count: each user is separate
        ("co.uk", None),  # a bare public suffix names no one
        ("localhost", None),
        ("", None),
        ("host.example.internal", "example.internal"),  # unlisted TLD: the last label
    ],
)
def test_registrable_domain(domain: str, registrable: str | None) -> None:
    assert registrable_domain(domain) == registrable


@pytest.mark.parametrize(
    ("domain", "free"),
    [
        ("gmail.com", True),
        ("googlemail.com", True),
        ("yahoo.com", True),
        ("yahoo.co.jp", True),
        ("mail.yahoo.co.uk", True),
        ("hotmail.de", True),
        ("outlook.com", True),
        ("live.com", True),
        ("icloud.com", True),
        ("me.com", True),
        ("aol.com", True),
        ("gmx.net", True),
        ("gmx.at", True),
        ("web.de", True),
        ("proton.me", True),
        ("protonmail.com", True),
        ("yandex.ru", True),
        ("mail.ru", True),
        ("qq.com", True),
        ("163.com", True),
        ("example.com", False),
        ("gmail.example.com", False),  # a company's host named gmail is not Gmail
        ("acme.co.uk", False),
    ],
)
def test_free_mail(domain: str, free: bool) -> None:
    assert is_free_mail(domain) is free


@pytest.mark.parametrize(
    ("address", "company"),
    [
        ("ann@sales.acme.co.uk", "acme.co.uk"),
        ("ann@ACME.com", "acme.com"),
        ("ann@gmail.com", None),
        ("ann@yahoo.fr", None),
        ("no-at-sign", None),
        ("ann@co.uk", None),
    ],
)
def test_company_domain(address: str, company: str | None) -> None:
    assert company_domain(address) == company


def test_domain_of() -> None:
    assert domain_of("A@Mail.Example.COM.") == "mail.example.com"
    assert domain_of("a@b@c.org") == "c.org"
    assert domain_of("nothing") == ""


@pytest.mark.parametrize(
    ("domain", "rule", "matches"),
    [
        ("partner.example", "partner.example", True),
        ("mail.partner.example", "partner.example", True),
        ("MAIL.Partner.Example", "partner.EXAMPLE", True),
        ("notpartner.example", "partner.example", False),
        ("partner.example.com", "partner.example", False),
        ("partner.example", "", False),
    ],
)
def test_domain_matches(domain: str, rule: str, matches: bool) -> None:
    assert domain_matches(domain, rule) is matches
