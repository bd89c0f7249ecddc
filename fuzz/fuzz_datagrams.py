"""Fuzz target: the datagram decoder, `parse_datagram` and `decode_body` (docs/protocol.md 6.1 to 6.3).

Input: one datagram, as the bytes a UDP socket delivered.

Contract checked on every input:
- `parse_datagram` returns a `Datagram` or raises `DatagramError`, nothing else (the module's promise: a receiver
  drops and counts whatever does not parse);
- a parsed datagram is exactly its fields laid out again (prefix, body, tag), and `encode_datagram` of its fields
  parses back to them and verifies with the key that signed it; `verify` agrees with a tag computed afresh;
- its body, and the whole input taken as a body, decode as every body type or raise `msgspec.ValidationError` or
  `msgspec.DecodeError`, nothing else (the router drops exactly those); a decoded body, encoded again, decodes to the
  same body.
"""

from __future__ import annotations

import hmac

import msgspec

from chat.protocol import datagrams as dg

MAX_LEN = 1300  # a little over the 1,200-byte datagram limit, so the size check is exercised both ways
KEY = bytes(range(32))  # the key of the seed corpus (fuzz/make_seeds.py)
BODY_TYPES: tuple[type[dg.Body], ...] = (
    dg.QuickRequest,
    dg.QuickDelivery,
    dg.AckBody,
    dg.PingBody,
    dg.PongBody,
    dg.TypingRequest,
    dg.TypingNotice,
    dg.HelloBody,
)


def check_body(raw: bytes) -> None:
    for body_type in BODY_TYPES:
        try:
            body = dg.decode_body(raw, body_type)
        except (msgspec.ValidationError, msgspec.DecodeError):
            continue
        again = dg.decode_body(dg.encode_body(body), body_type)
        assert again == body, f"round trip changed {body!r} into {again!r}"


def check(data: bytes) -> None:
    """One fuzz input (see the module doc)."""
    try:
        datagram = dg.parse_datagram(data)
    except dg.DatagramError:
        check_body(data[: dg.MAX_BODY])
        return
    assert dg.PREFIX.pack(dg.VERSION, datagram.kind, datagram.sid, datagram.seq) == data[: dg.PREFIX.size]
    assert datagram.signed + datagram.tag == data and datagram.signed[dg.PREFIX.size :] == datagram.body
    assert dg.verify(datagram, KEY) == hmac.compare_digest(dg.sign(KEY, datagram.signed), datagram.tag)
    rebuilt = dg.parse_datagram(dg.encode_datagram(datagram.kind, datagram.sid, datagram.seq, datagram.body, KEY))
    assert (rebuilt.kind, rebuilt.sid, rebuilt.seq, rebuilt.body) == (
        datagram.kind,
        datagram.sid,
        datagram.seq,
        datagram.body,
    )
    assert dg.verify(rebuilt, KEY)
    check_body(datagram.body)
