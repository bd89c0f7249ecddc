"""The datagram core: layout, tag, bodies, replay window, retransmission schedule (no sockets, no clock)."""

from __future__ import annotations

import struct

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chat.protocol import datagrams as dg

KEY = bytes(range(32))


@given(
    kind=st.sampled_from(list(dg.Kind)),
    sid=st.integers(1, 2**53 - 1),
    seq=st.integers(1, dg.MAX_SEQ),
    body=st.binary(max_size=dg.MAX_BODY),
)
def test_datagrams_round_trip_and_verify(kind: dg.Kind, sid: int, seq: int, body: bytes) -> None:
    data = dg.encode_datagram(kind, sid, seq, body, KEY)
    assert len(data) <= dg.MAX_DATAGRAM
    parsed = dg.parse_datagram(data)
    assert (parsed.kind, parsed.sid, parsed.seq, parsed.body) == (kind, sid, seq, body)
    assert dg.verify(parsed, KEY)
    assert not dg.verify(parsed, bytes(32))


@given(data=st.binary(max_size=1300))
def test_arbitrary_bytes_either_parse_or_raise_datagram_error(data: bytes) -> None:
    try:
        parsed = dg.parse_datagram(data)
    except dg.DatagramError:
        return
    if dg.verify(parsed, KEY):  # only the one signed encoding of those fields carries the right tag
        assert data == dg.encode_datagram(parsed.kind, parsed.sid, parsed.seq, parsed.body, KEY)


@given(position=st.integers(0, 40), flip=st.integers(1, 255))
def test_any_flipped_byte_breaks_the_tag(position: int, flip: int) -> None:
    data = bytearray(dg.encode_datagram(dg.Kind.QUICK, 7, 1, b'{"to":"bob","text":"hi"}', KEY))
    position %= len(data)
    data[position] ^= flip
    try:
        parsed = dg.parse_datagram(bytes(data))
    except dg.DatagramError:
        return
    assert not dg.verify(parsed, KEY)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01\x02" + b"\0" * 10,  # shorter than prefix + tag
        struct.pack("!BBQI", 2, 1, 7, 1) + b"\0" * 16,  # version 2
        struct.pack("!BBQI", 1, 9, 7, 1) + b"\0" * 16,  # unknown kind
        struct.pack("!BBQI", 1, 0, 7, 1) + b"\0" * 16,  # kind 0
        struct.pack("!BBQI", 1, 2, 7, 1) + b"x" * 1200,  # over 1,200 bytes
    ],
    ids=["empty", "short", "version", "kind", "kind-zero", "oversize"],
)
def test_malformed_layouts_are_refused(data: bytes) -> None:
    with pytest.raises(dg.DatagramError):
        dg.parse_datagram(data)


def test_a_body_too_big_for_a_datagram_is_refused_at_encoding() -> None:
    with pytest.raises(dg.DatagramError):
        dg.encode_datagram(dg.Kind.QUICK, 1, 1, b"x" * (dg.MAX_BODY + 1), KEY)
    assert len(dg.encode_datagram(dg.Kind.QUICK, 1, 1, b"x" * dg.MAX_BODY, KEY)) == dg.MAX_DATAGRAM


def test_five_hundred_chinese_characters_do_not_fit_in_a_datagram() -> None:
    body = dg.encode_body(dg.QuickRequest(to="bob", text="中" * 500))
    assert len(body) > dg.MAX_BODY


def test_bodies_are_utf8_without_escapes_and_rename_from() -> None:
    raw = dg.encode_body(dg.QuickDelivery(qid=1, sender="amélie", room="lobby", text="你好", ts=5))
    assert raw == '{"qid":1,"from":"amélie","room":"lobby","text":"你好","ts":5}'.encode()
    assert dg.decode_body(raw, dg.QuickDelivery).sender == "amélie"


# Found by reading, confirmed by fuzz/fuzz_datagrams.py: msgspec raises RecursionError near 1,000 levels of nesting,
# which a body under the 1,200-byte limit reaches; from a signed PING it went up through the router to the loop.
DEEP_BODIES = [b'{"t":' + b"[" * 1100, b'{"unknown":' + b"[" * 1100, b"[" * dg.MAX_BODY]


@pytest.mark.parametrize("raw", DEEP_BODIES, ids=["ping-t", "ignored-field", "top-level"])
@pytest.mark.parametrize("body_type", [dg.QuickRequest, dg.AckBody, dg.PingBody, dg.PongBody, dg.TypingRequest])
def test_a_body_nested_too_deep_is_a_decode_error_not_a_recursion_error(raw: bytes, body_type: type[dg.Body]) -> None:
    with pytest.raises(msgspec.DecodeError):
        dg.decode_body(raw, body_type)


def test_replay_window_accepts_each_seq_once_and_refuses_the_too_old() -> None:
    window = dg.ReplayWindow()
    for seq in (5, 3, 4, 1, 2000):
        assert window.check(seq) is dg.Seen.NEW
        window.mark(seq)
    assert window.check(2000) is dg.Seen.DUPLICATE
    assert window.check(2000 - dg.WINDOW + 1) is dg.Seen.NEW
    assert window.check(2000 - dg.WINDOW) is dg.Seen.TOO_OLD
    assert window.check(5) is dg.Seen.TOO_OLD
    assert window.check(0) is dg.Seen.TOO_OLD


@given(seqs=st.lists(st.integers(1, 5000), max_size=300))
def test_replay_window_matches_a_set_within_its_window(seqs: list[int]) -> None:
    window = dg.ReplayWindow()
    seen: set[int] = set()
    for seq in seqs:
        verdict = window.check(seq)
        highest = max(seen, default=0)
        if seq > highest:
            assert verdict is dg.Seen.NEW
        elif highest - seq >= dg.WINDOW:
            assert verdict is dg.Seen.TOO_OLD
        else:
            assert verdict is (dg.Seen.DUPLICATE if seq in seen else dg.Seen.NEW)
        if verdict is dg.Seen.NEW:
            window.mark(seq)
            seen.add(seq)


def test_retransmission_schedule_then_give_up_at_five_seconds() -> None:
    queue = dg.Retransmitter()
    queue.add(1, b"d1", now=100.0)
    sends = []
    for tick in range(0, 600):
        now = 100.0 + tick / 100
        resend, expired = queue.poll(now)
        sends += [round(now - 100.0, 2) for _ in resend]
        if expired:
            assert round(now - 100.0, 2) == 5.0
            break
    assert sends == [0.25, 0.75, 1.75, 3.75]
    assert len(queue) == 0


def test_an_ack_stops_retransmission() -> None:
    queue = dg.Retransmitter()
    queue.add(1, b"d1", now=0.0)
    queue.add(2, b"d2", now=0.0)
    assert queue.ack(1) is not None and queue.ack(1) is None
    resend, _ = queue.poll(0.3)
    assert [p.seq for p in resend] == [2]
    assert queue.next_deadline() == 0.75
