"""chat/protocol/frames.py: the 8-byte prefix, the limits, and the sans-I/O FrameDecoder (docs/protocol.md 1 and 8)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chat.protocol.errors import ErrorCode, FrameTooLarge, ProtocolViolation
from chat.protocol.frames import (
    DEFAULT_MAX_HEADER,
    DEFAULT_MAX_PAYLOAD,
    MAX_SERVER_HEADER,
    PREFIX,
    PREFIX_SIZE,
    Frame,
    FrameDecoder,
    FrameLimits,
    check_lengths,
    encode_frame,
    parse_prefix,
)

headers = st.binary(min_size=1, max_size=200)
payloads = st.binary(max_size=300)
frame_lists = st.lists(st.tuples(headers, payloads), min_size=1, max_size=8)


def _stream(frames: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(encode_frame(header, payload) for header, payload in frames)


def _expected(frames: list[tuple[bytes, bytes]]) -> list[Frame]:
    return [Frame(header, payload) for header, payload in frames]


SAMPLE_FRAMES = [
    (b'{"type":"hello"}', b""),
    (b"{}", b"\x00\x01\x02 file data"),
    (b"x", b""),
    ('{"type":"say","text":"héllo 你好"}'.encode(), b""),
]


# --- encoding ---------------------------------------------------------------------------------------------------


def test_frame_is_big_endian_prefix_then_header_then_payload() -> None:
    assert encode_frame(b"{}", b"abc") == b"\x00\x00\x00\x02\x00\x00\x00\x03{}abc"


def test_payload_defaults_to_empty() -> None:
    assert encode_frame(b"{}") == b"\x00\x00\x00\x02\x00\x00\x00\x00{}"


# --- round trips and arbitrary cuts -----------------------------------------------------------------------------


@given(header=headers, payload=payloads)
def test_encoded_frame_decodes_to_the_same_header_and_payload(header: bytes, payload: bytes) -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(header, payload)) == [Frame(header, payload)]
    assert decoder.buffered == 0


@given(frames=frame_lists)
def test_many_frames_in_one_chunk_come_out_in_order(frames: list[tuple[bytes, bytes]]) -> None:
    decoder = FrameDecoder()
    assert decoder.feed(_stream(frames)) == _expected(frames)
    assert decoder.buffered == 0


def test_stream_cut_at_every_byte_boundary_gives_the_same_frames() -> None:
    stream = _stream(SAMPLE_FRAMES)
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder()
        got = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert got == _expected(SAMPLE_FRAMES), f"cut at byte {cut}"
        assert decoder.buffered == 0


def test_stream_fed_one_byte_at_a_time_gives_the_same_frames() -> None:
    stream = _stream(SAMPLE_FRAMES)
    decoder = FrameDecoder()
    got: list[Frame] = []
    for index in range(len(stream)):
        got += decoder.feed(stream[index : index + 1])
    assert got == _expected(SAMPLE_FRAMES)
    assert decoder.buffered == 0


def test_frame_is_returned_by_the_feed_that_completes_it_and_not_before() -> None:
    frame = encode_frame(b'{"type":"ping"}', b"xy")
    decoder = FrameDecoder()
    assert decoder.feed(frame[:-1]) == []
    assert decoder.buffered == len(frame) - PREFIX_SIZE - 1  # the prefix is consumed once it is parsed
    assert decoder.feed(frame[-1:]) == [Frame(b'{"type":"ping"}', b"xy")]


@given(frames=frame_lists, data=st.data())
def test_stream_cut_at_random_points_across_many_frames_gives_the_same_frames(
    frames: list[tuple[bytes, bytes]], data: st.DataObject
) -> None:
    stream = _stream(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20), label="cuts"))
    bounds = [0, *cuts, len(stream)]
    decoder = FrameDecoder()
    got: list[Frame] = []
    for start, end in itertools.pairwise(bounds):
        got += decoder.feed(stream[start:end])
    assert got == _expected(frames)
    assert decoder.buffered == 0


def test_empty_feed_changes_nothing() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"") == []
    assert decoder.buffered == 0


# --- limits: checked as soon as the prefix is complete ----------------------------------------------------------


def test_oversized_payload_is_refused_before_allocation() -> None:
    """A 4 GiB declared payload: refused on the 8th byte, with nothing of that size buffered."""
    decoder = FrameDecoder()
    prefix = PREFIX.pack(2, 2**32 - 1)
    assert decoder.feed(prefix[:-1]) == []
    with pytest.raises(FrameTooLarge):
        decoder.feed(prefix[-1:])
    assert decoder.buffered <= PREFIX_SIZE


def test_oversized_header_is_refused_before_allocation() -> None:
    decoder = FrameDecoder()
    with pytest.raises(FrameTooLarge):
        decoder.feed(PREFIX.pack(2**32 - 1, 0))
    assert decoder.buffered <= PREFIX_SIZE


def test_oversized_length_is_refused_without_waiting_for_the_header_bytes() -> None:
    decoder = FrameDecoder()
    with pytest.raises(FrameTooLarge):
        decoder.feed(PREFIX.pack(DEFAULT_MAX_HEADER + 1, 0) + b"{")


def test_oversized_frame_after_a_good_one_is_refused_when_its_prefix_completes() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(b"{}")) == [Frame(b"{}", b"")]
    with pytest.raises(FrameTooLarge):
        decoder.feed(PREFIX.pack(1, DEFAULT_MAX_PAYLOAD + 1))
    assert decoder.buffered <= PREFIX_SIZE


def test_empty_header_is_refused() -> None:
    decoder = FrameDecoder()
    with pytest.raises(FrameTooLarge):
        decoder.feed(PREFIX.pack(0, 0))


def test_frame_too_large_is_a_protocol_violation_with_code_frame_too_large() -> None:
    with pytest.raises(ProtocolViolation) as caught:
        check_lengths(DEFAULT_MAX_HEADER + 1, 0, FrameLimits())
    assert isinstance(caught.value, FrameTooLarge)
    assert caught.value.code == ErrorCode.FRAME_TOO_LARGE


def test_frame_too_large_says_what_was_declared_and_what_the_limit_is() -> None:
    with pytest.raises(FrameTooLarge, match=f"{DEFAULT_MAX_PAYLOAD + 1}.*{DEFAULT_MAX_PAYLOAD}"):
        check_lengths(1, DEFAULT_MAX_PAYLOAD + 1, FrameLimits())
    with pytest.raises(FrameTooLarge, match=f"{DEFAULT_MAX_HEADER + 1}.*{DEFAULT_MAX_HEADER}"):
        check_lengths(DEFAULT_MAX_HEADER + 1, 0, FrameLimits())


def test_default_limits_are_the_protocol_defaults() -> None:
    assert FrameLimits() == FrameLimits(max_header=65_536, max_payload=1_048_576)


@pytest.mark.parametrize(
    ("header_len", "payload_len"),
    [(1, 0), (DEFAULT_MAX_HEADER, 0), (1, DEFAULT_MAX_PAYLOAD), (DEFAULT_MAX_HEADER, DEFAULT_MAX_PAYLOAD)],
)
def test_lengths_exactly_at_the_limits_are_accepted(header_len: int, payload_len: int) -> None:
    check_lengths(header_len, payload_len, FrameLimits())
    assert parse_prefix(PREFIX.pack(header_len, payload_len), FrameLimits()) == (header_len, payload_len)


@pytest.mark.parametrize(
    ("header_len", "payload_len"),
    [
        (0, 0),
        (DEFAULT_MAX_HEADER + 1, 0),
        (1, DEFAULT_MAX_PAYLOAD + 1),
        (2**32 - 1, 0),
        (1, 2**32 - 1),
    ],
)
def test_lengths_one_past_the_limits_are_refused(header_len: int, payload_len: int) -> None:
    with pytest.raises(FrameTooLarge):
        check_lengths(header_len, payload_len, FrameLimits())
    with pytest.raises(FrameTooLarge):
        parse_prefix(PREFIX.pack(header_len, payload_len), FrameLimits())


def test_configured_limits_are_enforced_at_their_exact_boundaries() -> None:
    limits = FrameLimits(max_header=10, max_payload=0)
    check_lengths(10, 0, limits)
    with pytest.raises(FrameTooLarge):
        check_lengths(11, 0, limits)
    with pytest.raises(FrameTooLarge):
        check_lengths(10, 1, limits)


def test_client_limits_accept_the_largest_header_a_server_may_send() -> None:
    limits = FrameLimits(max_header=MAX_SERVER_HEADER)
    check_lengths(MAX_SERVER_HEADER, 0, limits)
    with pytest.raises(FrameTooLarge):
        check_lengths(MAX_SERVER_HEADER + 1, 0, limits)


def test_decoder_uses_its_configured_limits() -> None:
    decoder = FrameDecoder(FrameLimits(max_header=4, max_payload=2))
    assert decoder.feed(encode_frame(b"abcd", b"xy")) == [Frame(b"abcd", b"xy")]
    with pytest.raises(FrameTooLarge):
        decoder.feed(encode_frame(b"abcde"))


@given(header_len=st.integers(0, 2**32 - 1), payload_len=st.integers(0, 2**32 - 1))
def test_decoder_accepts_a_prefix_exactly_when_check_lengths_does(header_len: int, payload_len: int) -> None:
    limits = FrameLimits(max_header=1000, max_payload=1000)
    try:
        check_lengths(header_len, payload_len, limits)
    except FrameTooLarge:
        allowed = False
    else:
        allowed = True
    decoder = FrameDecoder(limits)
    if allowed:
        assert decoder.feed(PREFIX.pack(header_len, payload_len)) == []
        assert decoder.buffered == 0
    else:
        with pytest.raises(FrameTooLarge):
            decoder.feed(PREFIX.pack(header_len, payload_len))
        assert decoder.buffered <= PREFIX_SIZE
