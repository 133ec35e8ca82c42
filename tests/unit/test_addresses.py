"""Tables for the one address module: normal form, domains, and the strict reader."""

from __future__ import annotations

import pytest

from syncd.mail.addresses import Address, domain_of, normalise, normalise_domain, parse_addresses


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("ada@example.com", "ada@example.com"),
        ("  Ada@Example.COM \r\n", "ada@example.com"),
        ("ADA@BÜCHER.EXAMPLE", "ada@bücher.example"),
        ("no-at-sign", "no-at-sign"),
        ("", ""),
    ],
)
def test_normalise(text: str, want: str) -> None:
    assert normalise(text) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("Example.COM", "example.com"),
        (" example.com. ", "example.com"),
        ("BÜCHER.example", "bücher.example"),
        ("", ""),
    ],
)
def test_normalise_domain(text: str, want: str) -> None:
    assert normalise_domain(text) == want


@pytest.mark.parametrize(
    ("address", "want"),
    [
        ("ada@example.com", "example.com"),
        ("A@Mail.Example.COM", "mail.example.com"),
        ("a@example.com.", "example.com"),
        ("a@b@c.org", "c.org"),
        ('"a@b"@evil.example', "evil.example"),
        ("ada@BÜCHER.example", "bücher.example"),
        ("ada@xn--bcher-kva.example", "xn--bcher-kva.example"),
        (" ada@example.com ", "example.com"),
        ("nothing", ""),
        ("example.com", ""),
        ("ada@", ""),
        ("", ""),
    ],
)
def test_domain_of(address: str, want: str) -> None:
    assert domain_of(address) == want


@pytest.mark.parametrize(
    ("value", "want", "defects"),
    [
        ("Ada <Ada@Example.com>", [("Ada", "ada@example.com")], 0),
        ("a@x.example, B <b@y.example>", [("", "a@x.example"), ("B", "b@y.example")], 0),
        ('"a@b.com"@evil.com', [], 1),
        ("Ada <ada@example.com", [], 1),
        ("undisclosed-recipients", [], 1),
        (
            "=?utf-8?q?=3Cceo=40example=2Ecom=3E?= <X@attacker.example>",
            [("<ceo@example.com>", "x@attacker.example")],
            0,
        ),
    ],
)
def test_parse_addresses(value: str, want: list[tuple[str, str]], defects: int) -> None:
    found: list[str] = []
    assert parse_addresses([value], found) == tuple(Address(n, e) for n, e in want)
    assert len(found) == defects
