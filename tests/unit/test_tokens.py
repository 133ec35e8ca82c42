"""Tables for the tracking tokens: round trips, tampering, rotation, hostile input, key file."""

from __future__ import annotations

import base64

import pytest

from syncd.outbound.tokens import (
    MAX_LINK_INDEX,
    MAX_MESSAGE_ID,
    KeyFileError,
    Signer,
    Verified,
    load_keys,
    new_key_line,
)

OLD = b"o" * 32
NEW = b"n" * 32
SIGNER = Signer({"k2": NEW, "k1": OLD}, "k2")


@pytest.mark.parametrize("message_id", [0, 1, 4242, 2**63 - 1, MAX_MESSAGE_ID])
def test_open_round_trip(message_id: int) -> None:
    assert SIGNER.verify(SIGNER.open_token(message_id)) == Verified(message_id, None, "k2")


@pytest.mark.parametrize("index", [0, 1, 7, MAX_LINK_INDEX])
def test_click_round_trip(index: int) -> None:
    got = SIGNER.verify(SIGNER.click_token(99, index))
    assert got == Verified(99, index, "k2")
    assert not got.is_open


def test_tokens_are_url_safe_fixed_length_and_opaque() -> None:
    tokens = {SIGNER.open_token(1), SIGNER.click_token(1, 0), SIGNER.click_token(2, 0)}
    assert len(tokens) == 3  # an open and link 0 of the same message differ
    for token in tokens:
        assert len(token) == 35
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    # deterministic: the same link of the same message is the same URL
    assert SIGNER.click_token(5, 3) == SIGNER.click_token(5, 3)
    # the message id is not readable in the URL
    raw = base64.urlsafe_b64decode(SIGNER.click_token(5, 3) + "=")
    assert (5).to_bytes(8, "big") not in raw


@pytest.mark.parametrize("token", [SIGNER.open_token(12345), SIGNER.click_token(12345, 2)])
def test_every_bit_flip_is_refused(token: str) -> None:
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for i in range(len(raw)):
        for bit in range(8):
            flipped = bytearray(raw)
            flipped[i] ^= 1 << bit
            forged = base64.urlsafe_b64encode(bytes(flipped)).rstrip(b"=").decode()
            assert SIGNER.verify(forged) is None, (i, bit)


def test_every_character_change_is_refused() -> None:
    token = SIGNER.click_token(7, 1)
    for i, ch in enumerate(token):
        for other in "Aa0-_z":
            if other != ch:
                assert SIGNER.verify(token[:i] + other + token[i + 1 :]) is None


def test_truncated_and_extended_tokens_are_refused() -> None:
    token = SIGNER.click_token(7, 1)
    for n in range(len(token)):
        assert SIGNER.verify(token[:n]) is None
    for tail in ("A", "AA", "AAAA", token):
        assert SIGNER.verify(token + tail) is None


def test_other_spelling_of_the_same_bytes_is_refused() -> None:
    token = SIGNER.open_token(7)  # 35 chars: the last carries 2 spare bits
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(token[-1])
    other = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last | 1]
    if other != token[-1]:
        assert SIGNER.verify(token[:-1] + other) is None


def test_rotation_old_key_verifies_new_key_signs() -> None:
    before = Signer({"k1": OLD}, "k1")
    old_token = before.open_token(3)
    assert SIGNER.verify(old_token) == Verified(3, None, "k1")
    assert SIGNER.verify(SIGNER.open_token(3)) == Verified(3, None, "k2")
    assert before.verify(SIGNER.open_token(3)) is None  # k2 unknown to the old signer
    retired = Signer({"k2": NEW}, "k2")
    assert retired.verify(old_token) is None


def test_same_key_id_other_secret_is_refused() -> None:
    impostor = Signer({"k2": b"x" * 32}, "k2")
    assert SIGNER.verify(impostor.click_token(1, 1)) is None


def test_key_id_cannot_be_swapped() -> None:
    both_same = Signer({"k1": NEW, "k2": NEW}, "k2")
    token = both_same.open_token(9)
    raw = bytearray(base64.urlsafe_b64decode(token + "="))
    raw[2] = ord("1")  # k2 -> k1, a key with the same secret
    swapped = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert both_same.verify(swapped) is None


@pytest.mark.parametrize(
    "hostile",
    [
        "",
        "=",
        "A",
        "A" * 35,
        "A" * 10_000_000,
        "../../etc/passwd",
        "..%2F..%2F",
        "ä" * 35,
        "\u0661" * 35,  # Arabic-Indic digit one: \d would take it
        "\x00" * 35,
        "AmtyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "AmtyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
        " " + SIGNER.open_token(1),
        SIGNER.open_token(1) + "\n",
        SIGNER.open_token(1) + "==",
        "https://evil.example/",
    ],
)
def test_hostile_strings_give_none(hostile: str) -> None:
    assert SIGNER.verify(hostile) is None


def test_standard_base64_alphabet_is_refused() -> None:
    token = next(t for t in map(SIGNER.open_token, range(100)) if "-" in t or "_" in t)
    assert SIGNER.verify(token.replace("-", "+").replace("_", "/")) is None


@pytest.mark.parametrize("hostile", [None, b"AmFi", 5, ["x"]])
def test_non_strings_give_none(hostile: object) -> None:
    assert SIGNER.verify(hostile) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: SIGNER.open_token(-1), "outside"),
        (lambda: SIGNER.open_token(MAX_MESSAGE_ID + 1), "outside"),
        (lambda: SIGNER.click_token(1, MAX_LINK_INDEX + 1), "outside"),
        (lambda: SIGNER.click_token(1, -1), "outside"),
        (lambda: Signer({"k1": OLD}, "k9"), "not among"),
        (lambda: Signer({"k1": b"short"}, "k1"), "at least 32"),
        (lambda: Signer({"k/1": OLD}, "k/1"), "key id"),
        (lambda: Signer({"toolongid": OLD}, "toolongid"), "key id"),
    ],
)
def test_misuse_raises(call, match: str) -> None:
    with pytest.raises((ValueError, KeyFileError), match=match):
        call()


def test_load_keys_in_order_first_is_current() -> None:
    b64 = base64.b64encode
    text = (
        f"# rotated 2025-11\n\nk2:{b64(NEW).decode()}\n  k1 : {b64(OLD).decode().rstrip('=')}  \n"
    )
    keys = load_keys(text)
    assert list(keys) == ["k2", "k1"]
    assert keys == {"k2": NEW, "k1": OLD}
    assert Signer(keys, next(iter(keys))).verify(SIGNER.open_token(1)) == Verified(1, None, "k2")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "no key"),
        ("# only a comment\n", "no key"),
        ("k1\n", "line 1: expected keyid:base64secret"),
        ("k1:\n", "line 1: expected"),
        (
            f"k1:{base64.b64encode(b'x' * 31).decode()}\n",
            "line 1: key 'k1': the secret is 31 bytes",
        ),
        ("\nk1:!!!not base64!!!\n", "line 2: key 'k1': the secret is not base64"),
        (f"bad id:{base64.b64encode(OLD).decode()}\n", "line 1: key id 'bad id'"),
        (
            f"k1:{base64.b64encode(OLD).decode()}\nk1:{base64.b64encode(NEW).decode()}\n",
            "line 2: key id 'k1' appears twice",
        ),
    ],
)
def test_load_keys_refuses(text: str, match: str) -> None:
    with pytest.raises(KeyFileError, match=match) as caught:
        load_keys(text)
    assert base64.b64encode(OLD).decode() not in str(caught.value)


def test_short_secret_error_does_not_show_the_secret() -> None:
    secret = base64.b64encode(b"s3cr3t-but-short").decode()
    with pytest.raises(KeyFileError) as caught:
        load_keys(f"k1:{secret}")
    assert secret not in str(caught.value)


def test_new_key_line_loads_and_signs() -> None:
    line = new_key_line()
    keys = load_keys(line)
    (key_id,) = keys
    assert len(key_id) == 2 and len(keys[key_id]) == 32
    assert new_key_line("k7").startswith("k7:")
    assert new_key_line(taken=[key_id]).split(":")[0] != key_id
    assert new_key_line() != new_key_line()
    with pytest.raises(KeyFileError, match="already in use"):
        new_key_line("k7", taken=["k7"])
