"""Shared-secret login: HMAC-SHA256 over the raw nonce bytes followed by the UTF-8 nick (docs/protocol.md 2.2).

Randomness is passed in or drawn from `secrets`; nothing here keeps state. The server makes one nonce per connection
and forgets it after the first login attempt, which is what makes it single use.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

NONCE_BYTES = 32
PROOF_BYTES = hashlib.sha256().digest_size
UDP_KEY_BYTES = 32
MAX_UDP_SID = 2**53 - 1  # docs/protocol.md 8: exact in every JSON parser


def new_nonce() -> bytes:
    """A fresh 32-byte login challenge."""
    return secrets.token_bytes(NONCE_BYTES)


def compute_proof(secret: str, nonce: bytes, nick: str) -> str:
    """Lowercase hex HMAC-SHA256 keyed by the secret over nonce + nick, exactly as the nick is sent."""
    return hmac.new(secret.encode("utf-8"), nonce + nick.encode("utf-8"), hashlib.sha256).hexdigest()


def verify_proof(secret: str, nonce: bytes, nick: str, proof: object) -> bool:
    """True if `proof` is the right HMAC; a missing or malformed proof is simply wrong.

    The comparison runs on two digests of fixed length with `hmac.compare_digest`, so its time says nothing about
    how much of the proof was right.
    """
    if not isinstance(proof, str) or len(proof) != 2 * PROOF_BYTES:
        return False
    try:
        given = bytes.fromhex(proof)
    except ValueError:
        return False
    expected = hmac.new(secret.encode("utf-8"), nonce + nick.encode("utf-8"), hashlib.sha256).digest()
    return hmac.compare_digest(given, expected)


def new_session_token() -> str:
    """An identity's secret token (docs/protocol.md 8: a session token is an identity)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    """What the store keeps of a token: its SHA-256, so a stolen database holds no usable tokens."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_udp_credentials() -> tuple[int, str]:
    """(sid, hex key) for one session's UDP channel."""
    return secrets.randbelow(MAX_UDP_SID) + 1, secrets.token_hex(UDP_KEY_BYTES)
