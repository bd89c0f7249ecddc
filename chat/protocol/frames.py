"""TCP framing: an 8-byte `!II` prefix (header length, payload length), a JSON header, raw payload bytes.

Both lengths are checked against the limits right after the prefix is read, before a single byte of the header or
payload is read or allocated (protocol.md 1). `FrameDecoder` is the sans-I/O reader used by the client and the tests;
the server reads the same layout with `StreamReader.readexactly`, calling `check_lengths` in between.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from chat.protocol.errors import FrameTooLarge

PREFIX = struct.Struct("!II")
PREFIX_SIZE = PREFIX.size

DEFAULT_MAX_HEADER = 65_536
DEFAULT_MAX_PAYLOAD = 1_048_576
# docs/protocol.md 8: the server never sends a header over 1 MiB, and clients accept headers up to that size.
MAX_SERVER_HEADER = 1_048_576


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """Largest header and payload a reader accepts; a header is never empty."""

    max_header: int = DEFAULT_MAX_HEADER
    max_payload: int = DEFAULT_MAX_PAYLOAD


def encode_frame(header: bytes, payload: bytes = b"") -> bytes:
    """One frame from an already-encoded JSON header and its payload."""
    return PREFIX.pack(len(header), len(payload)) + header + payload


def parse_prefix(prefix: bytes, limits: FrameLimits) -> tuple[int, int]:
    """(header_len, payload_len) from the 8-byte prefix; raises FrameTooLarge if either is out of bounds."""
    header_len, payload_len = PREFIX.unpack(prefix)
    check_lengths(header_len, payload_len, limits)
    return header_len, payload_len


def check_lengths(header_len: int, payload_len: int, limits: FrameLimits) -> None:
    """Refuse lengths outside the limits, before anything of that size is read (docs/protocol.md 1)."""
    if not 1 <= header_len <= limits.max_header:
        raise FrameTooLarge(f"header length {header_len} is outside 1..{limits.max_header} bytes")
    if payload_len > limits.max_payload:
        raise FrameTooLarge(f"payload length {payload_len} is over the limit of {limits.max_payload} bytes")


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame: the header's raw JSON bytes and the payload."""

    header: bytes
    payload: bytes


class FrameDecoder:
    """Turns a byte stream, cut anywhere, into whole frames.

    Feed it whatever the transport delivered; `frames()` yields every frame completed so far. A length over the
    limits raises FrameTooLarge as soon as the 8-byte prefix is complete, so the declared size is never buffered.
    """

    def __init__(self, limits: FrameLimits | None = None) -> None:
        self.limits = limits or FrameLimits()
        self._buffer = bytearray()
        self._lengths: tuple[int, int] | None = None

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes and return the frames they complete, in order."""
        self._buffer += data
        frames: list[Frame] = []
        while True:
            if self._lengths is None:
                if len(self._buffer) < PREFIX_SIZE:
                    return frames
                self._lengths = parse_prefix(bytes(self._buffer[:PREFIX_SIZE]), self.limits)
                del self._buffer[:PREFIX_SIZE]
            header_len, payload_len = self._lengths
            if len(self._buffer) < header_len + payload_len:
                return frames
            header = bytes(self._buffer[:header_len])
            payload = bytes(self._buffer[header_len : header_len + payload_len])
            del self._buffer[: header_len + payload_len]
            self._lengths = None
            frames.append(Frame(header, payload))

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete."""
        return len(self._buffer)
