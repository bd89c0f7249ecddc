"""chat/protocol/auth.py: the shared-secret login proof and the per-session secrets (docs/protocol.md 2.2 and 8)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

import chat.protocol.auth as auth
from chat.protocol.auth import (
    MAX_UDP_SID,
    NONCE_BYTES,
    compute_proof,
    new_nonce,
    new_session_token,
    new_udp_credentials,
    token_digest,
    verify_proof,
)

SECRET = "correct horse battery staple"
NONCE = bytes(range(NONCE_BYTES))
NICK = "zoë"
LOWER_HEX_64 = re.compile(r"[0-9a-f]{64}")

utf8_text = st.text(st.characters(codec="utf-8"), max_size=40)


def test_proof_is_lowercase_hex_hmac_sha256_over_raw_nonce_then_utf8_nick() -> None:
    expected = hmac.new(SECRET.encode(), NONCE + NICK.encode("utf-8"), hashlib.sha256).hexdigest()
    assert compute_proof(SECRET, NONCE, NICK) == expected
    assert LOWER_HEX_64.fullmatch(expected)


def test_proof_matches_an_independent_client_working_from_the_hello_nonce() -> None:
    # What a third-party client does with protocol.md alone: bytes.fromhex(hello.nonce), then HMAC over nonce + nick.
    hello_nonce = NONCE.hex()
    proof = hmac.new(b"s3cret", bytes.fromhex(hello_nonce) + b"alice", hashlib.sha256).hexdigest()
    assert verify_proof("s3cret", NONCE, "alice", proof)


@given(secret=utf8_text, nonce=st.binary(min_size=NONCE_BYTES, max_size=NONCE_BYTES), nick=utf8_text)
def test_compute_and_verify_agree(secret: str, nonce: bytes, nick: str) -> None:
    assert verify_proof(secret, nonce, nick, compute_proof(secret, nonce, nick))


def test_wrong_secret_is_refused() -> None:
    assert not verify_proof(SECRET, NONCE, NICK, compute_proof("guess", NONCE, NICK))


def test_proof_for_another_nick_is_refused() -> None:
    assert not verify_proof(SECRET, NONCE, "mallory", compute_proof(SECRET, NONCE, NICK))


def test_proof_is_over_the_nick_exactly_as_sent_not_its_nfc_form() -> None:
    # docs/protocol.md 8, "Spelling": the login proof is computed over the nick exactly as sent.
    decomposed = "zoe\u0308"
    assert not verify_proof(SECRET, NONCE, decomposed, compute_proof(SECRET, NONCE, NICK))
    assert verify_proof(SECRET, NONCE, decomposed, compute_proof(SECRET, NONCE, decomposed))


def test_proof_for_another_nonce_is_refused() -> None:
    other = bytes(NONCE_BYTES)
    assert not verify_proof(SECRET, NONCE, NICK, compute_proof(SECRET, other, NICK))


def test_proof_over_the_hex_text_of_the_nonce_is_refused() -> None:
    wrong = hmac.new(SECRET.encode(), NONCE.hex().encode() + NICK.encode(), hashlib.sha256).hexdigest()
    assert not verify_proof(SECRET, NONCE, NICK, wrong)


def test_uppercase_hex_proof_is_accepted() -> None:
    # Clients must send lowercase (docs/protocol.md 2.2), but the server reads the proof with bytes.fromhex, which takes
    # either case; accepting the same digest in upper case gives an attacker nothing.
    assert verify_proof(SECRET, NONCE, NICK, compute_proof(SECRET, NONCE, NICK).upper())


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda proof: proof[:-2], id="one-byte-short"),
        pytest.param(lambda proof: proof + "00", id="one-byte-long"),
        pytest.param(lambda proof: proof[:-1], id="odd-length"),
        pytest.param(lambda proof: "", id="empty"),
        pytest.param(lambda proof: proof[:-1] + "g", id="non-hex-letter"),
        pytest.param(lambda proof: proof[:-2] + " 0", id="embedded-space"),
        pytest.param(lambda proof: " " + proof[:-1], id="leading-space"),
        pytest.param(lambda proof: proof[:-1] + "\u0660", id="non-ascii-digit"),
        pytest.param(lambda proof: proof[:-2] + "ff", id="last-byte-changed"),
        pytest.param(lambda proof: "0x" + proof[2:], id="0x-prefix"),
    ],
)
def test_malformed_or_altered_proof_is_refused(mangle: object) -> None:
    proof = compute_proof(SECRET, NONCE, NICK)
    mangled = mangle(proof)  # type: ignore[operator]
    assert mangled != proof
    assert not verify_proof(SECRET, NONCE, NICK, mangled)


@pytest.mark.parametrize(
    "proof",
    [None, 0, 1.5, True, ["ab"], {"proof": "ab"}],
    ids=["none", "int", "float", "bool", "list", "dict"],
)
def test_non_string_proof_is_refused(proof: object) -> None:
    assert not verify_proof(SECRET, NONCE, NICK, proof)


def test_proof_as_bytes_is_refused_even_when_they_spell_the_right_hex() -> None:
    assert not verify_proof(SECRET, NONCE, NICK, compute_proof(SECRET, NONCE, NICK).encode())


@given(proof=st.one_of(st.text(max_size=80), st.binary(max_size=80), st.integers(), st.none()))
def test_random_proofs_are_refused_without_raising(proof: object) -> None:
    assert not verify_proof(SECRET, NONCE, NICK, proof)


def test_nonce_is_32_fresh_bytes() -> None:
    nonces = {new_nonce() for _ in range(20)}
    assert len(nonces) == 20
    assert all(len(nonce) == NONCE_BYTES for nonce in nonces)


def test_session_tokens_differ_and_are_url_safe() -> None:
    tokens = {new_session_token() for _ in range(20)}
    assert len(tokens) == 20
    for token in tokens:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43,}", token), token


def test_token_digest_is_the_sha256_of_the_token() -> None:
    token = new_session_token()
    assert token_digest(token) == hashlib.sha256(token.encode()).digest()
    assert token_digest(token) != token_digest(new_session_token())


def test_udp_credentials_are_a_json_safe_sid_and_a_64_hex_key() -> None:
    assert MAX_UDP_SID == 2**53 - 1
    credentials = [new_udp_credentials() for _ in range(50)]
    for sid, key in credentials:
        assert isinstance(sid, int)
        assert 1 <= sid <= MAX_UDP_SID
        assert LOWER_HEX_64.fullmatch(key), key
        assert len(bytes.fromhex(key)) == 32
    assert len({sid for sid, _ in credentials}) == len(credentials)
    assert len({key for _, key in credentials}) == len(credentials)


@pytest.mark.parametrize(
    ("drawn", "sid"), [(lambda n: 0, 1), (lambda n: n - 1, MAX_UDP_SID)], ids=["lowest", "highest"]
)
def test_udp_sid_ends_of_the_random_range_map_to_1_and_2_pow_53_minus_1(
    monkeypatch: pytest.MonkeyPatch, drawn: Callable[[int], int], sid: int
) -> None:
    # secrets.randbelow(n) gives 0..n-1; the sid must then be 1..2^53 - 1, never 0 and never 2^53.
    monkeypatch.setattr(auth, "secrets", SimpleNamespace(randbelow=drawn, token_hex=secrets.token_hex))
    assert new_udp_credentials()[0] == sid
