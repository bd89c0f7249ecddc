"""Fuzz target: the request decoder, `decode_request` (docs/protocol.md 1.4 and 1.6).

Input: one request header, as the bytes after a frame's prefix.

Contract checked on every input:
- it returns a `Request` of one of the request types, or raises `ProtocolViolation` with `bad_request` or
  `unknown_type`; any other exception, or any other code, is a bug;
- a refusal echoes a `ref` only when it is a string or an integer within int64 (section 1.6), and names the request
  type only as a string;
- the fast path for `say` and the general path agree: both accept the header as the same `Say`, or both refuse it;
- round trip: the decoded request, encoded again (`encode_header`), decodes to the same request.
"""

from __future__ import annotations

from chat.protocol import messages as wire
from chat.protocol.errors import ErrorCode, ProtocolViolation

MAX_LEN = 4096
REQUEST_CLASSES = frozenset(wire.ClientRequest.__args__)
REFUSAL_CODES = frozenset({ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_TYPE})


def decoded(raw: bytes) -> wire.Request | ProtocolViolation:
    """The request, or the refusal; anything else raised goes up as the bug it is."""
    try:
        return wire.decode_request(raw)
    except ProtocolViolation as exc:
        return exc


def check_refusal(exc: ProtocolViolation) -> None:
    assert type(exc) is ProtocolViolation and exc.code in REFUSAL_CODES, (type(exc), exc.code)
    ref = exc.ref
    assert ref is None or isinstance(ref, str) or (type(ref) is int and abs(ref) <= wire.INT64_MAX), (
        f"a malformed ref is echoed: {ref!r}"
    )
    assert exc.request_type is None or isinstance(exc.request_type, str)


def check(data: bytes) -> None:
    """One fuzz input (see the module doc)."""
    result = decoded(data)
    if isinstance(result, ProtocolViolation):
        check_refusal(result)
        if result.code is ErrorCode.UNKNOWN_TYPE:
            assert result.request_type not in wire.REQUEST_TYPES
        general: wire.Request | ProtocolViolation = result
    else:
        assert type(result) in REQUEST_CLASSES, type(result)
        again = wire.decode_request(wire.encode_header(result))
        assert again == result, f"round trip changed {result!r} into {again!r}"
        try:
            general = wire._decode_request(data)
        except ProtocolViolation as exc:
            general = exc
    if isinstance(result, wire.Say) or isinstance(general, wire.Say):
        assert result == general, f"the say fast path gives {result!r}, the general path {general!r}"
