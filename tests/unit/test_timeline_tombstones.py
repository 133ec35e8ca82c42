"""The pure parts of acting on the timeline: a tombstone's hash of a message key (its
format is stored, so it must never change) and the addresses an email row names."""

from __future__ import annotations

import pytest

from syncd.store.detached import named_addresses
from syncd.store.tombstones import key_hash


@pytest.mark.parametrize(
    ("key", "digest"),
    [
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("one@x", "dd244721cdf69b859d5727466d349bf8b73d4e2b294eb4f4a64a83318011c58a"),
        # A Message-ID holding an address: the hash holds none of it.
        ("CAF=carol@acme.com", "40863fcf79b3dc234572eb0a5398a53e0cc8eeb90177125ddeb0f4dcb718b2cd"),
        # A key made from the headers when there is no Message-ID.
        ("sha256:" + "0" * 64, "e191bc1aec7e9a1d2e95a24550e97dd2dd947b6d99ca244d85cae37f8d82c61b"),
        ("caf\u00e9@x", "1aca377c32ca79d3408c4597c20f4a211dc8f23f4a745cd9adb1d15ebdbcfc6d"),
        # A lone surrogate (undecodable header bytes) hashes too, as its UTF-8 form.
        ("a\udcff@x", "acc22dc2ff5f758cecff7c9a2648656015c3aa8975929560d4da229225bda5ef"),
    ],
)
def test_key_hash_is_the_sha256_of_the_key(key: str, digest: str) -> None:
    assert key_hash(key) == digest


@pytest.mark.parametrize(
    ("row", "named"),
    [
        (("ada@example.com", "[]", "[]", "[]"), {"ada@example.com"}),
        (
            (
                "Ada@Example.com",
                '[["Carol", "CAROL@acme.com"]]',
                '[["", "dan@gmail.com"]]',
                '[["", "eve@x.example"]]',
            ),
            {"ada@example.com", "carol@acme.com", "dan@gmail.com", "eve@x.example"},
        ),
        ((None, '[["", "carol@acme.com"]]', "", None), {"carol@acme.com"}),  # no From
        ((None, "[]", "[]", "[]"), set()),
    ],
)
def test_named_addresses_of_an_email_row(row: tuple, named: set[str]) -> None:
    assert named_addresses(row) == named
