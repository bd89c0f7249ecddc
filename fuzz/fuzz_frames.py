"""Fuzz target: the frame reader (docs/protocol.md 1.1 and 1.3), the pure one and the server's.

Input: one byte saying how the stream is cut (chunks of 1 to 16 bytes, or all at once), then the stream.

Contract checked on every input:
- `FrameDecoder` raises nothing but `FrameTooLarge`, exactly at the first prefix whose lengths are out of bounds
  (protocol.md 1.3), never later and never for a good prefix; the frames it returned re-encode to the bytes they came
  from; what it holds back is the incomplete tail, less the 8-byte prefix once that prefix is complete. (A `feed`
  that raises loses the frames it completed before the bad prefix: only tests use this decoder, and a refused
  prefix ends the connection.)
- Cutting the stream differently changes nothing: the same frames, the same refusal.
- The server's read loop (`TcpConnection.run`, driven through a real `asyncio.StreamReader` fed the same bytes, over
  an in-memory transport: no socket) hands the handler the same frames, answers a refused prefix with one
  `frame_too_large` error and nothing else, lets no exception out and closes the transport.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from chat.protocol.errors import ErrorCode, FrameTooLarge
from chat.protocol.frames import (
    MAX_SERVER_HEADER,
    PREFIX,
    PREFIX_SIZE,
    Frame,
    FrameDecoder,
    FrameLimits,
    encode_frame,
)
from chat.protocol.messages import Error, decode_server_frame
from chat.server.tcp import FrameCodec, TcpConnection, TurnWriter

MAX_LEN = 8192
# Small limits, so that random prefixes are often in bounds and whole frames (payloads included) fit in an input.
LIMITS = FrameLimits(max_header=1024, max_payload=2048)


def chunks(stream: bytes, cut: int) -> list[bytes]:
    """The stream as a transport might deliver it: `cut` 0 is one piece, else pieces of 1 to 16 bytes."""
    if cut % 17 == 0:
        return [stream]
    sizes = [1 + (cut * (i + 3)) % 16 for i in range(16)]
    pieces: list[bytes] = []
    position = 0
    while position < len(stream):
        size = sizes[len(pieces) % len(sizes)]
        pieces.append(stream[position : position + size])
        position += size
    return pieces


def decode(pieces: list[bytes]) -> tuple[list[Frame], bool, int]:
    """(frames, refused, bytes held back) of one `FrameDecoder` fed these pieces."""
    decoder = FrameDecoder(LIMITS)
    frames: list[Frame] = []
    for piece in pieces:
        try:
            frames.extend(decoder.feed(piece))
        except FrameTooLarge:
            return frames, True, decoder.buffered
    return frames, False, decoder.buffered


def expected(stream: bytes) -> tuple[list[Frame], bool]:
    """The frames of the stream and whether it hits a bad prefix, read straight from the layout (the oracle)."""
    frames: list[Frame] = []
    position = 0
    while len(stream) - position >= PREFIX_SIZE:
        header_len, payload_len = PREFIX.unpack_from(stream, position)
        if not (1 <= header_len <= LIMITS.max_header and payload_len <= LIMITS.max_payload):  # docs/protocol.md 1.3
            return frames, True
        start = position + PREFIX_SIZE
        if len(stream) - start < header_len + payload_len:
            break
        frames.append(
            Frame(stream[start : start + header_len], stream[start + header_len : start + header_len + payload_len])
        )
        position = start + header_len + payload_len
    return frames, False


def check_decoder(stream: bytes, cut: int) -> tuple[list[Frame], bool]:
    frames, refused = expected(stream)
    consumed = sum(PREFIX_SIZE + len(f.header) + len(f.payload) for f in frames)
    assert b"".join(encode_frame(f.header, f.payload) for f in frames) == stream[:consumed]
    for pieces in ([stream], chunks(stream, cut)):
        got, got_refused, held = decode(pieces)
        assert got_refused == refused, "refused a good prefix" if got_refused else "missed a bad prefix"
        if refused:  # the frames completed by the same feed() as the bad prefix are lost with the exception
            assert got == frames[: len(got)], "the decoder's frames differ from the layout's"
        else:
            assert got == frames, "the decoder's frames differ from the layout's"
            tail = len(stream) - consumed
            assert held == (tail - PREFIX_SIZE if tail >= PREFIX_SIZE else tail), f"holds {held} of a {tail}-byte tail"
    return frames, refused


# --- the server's read loop over an in-memory transport --------------------------------------------------------


class MemoryTransport(asyncio.Transport):
    """A transport that keeps what is written and records closing; reading is the StreamReader's business."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: Any) -> None:
        assert not self.closed, "written after close"
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("fuzz", 0) if name == "peername" else default


class MemoryWriter:
    """What `TcpConnection` asks of a `StreamWriter`."""

    def __init__(self, transport: MemoryTransport) -> None:
        self.transport = transport

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    async def drain(self) -> None:
        pass


async def server_read(pieces: list[bytes]) -> tuple[list[Frame], bytes, bool]:
    """(frames handed to the handler, bytes written back, transport closed) of one connection fed these pieces."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport = MemoryTransport()
    options: dict[str, Any] = {
        "codec": FrameCodec(),
        "turn": TurnWriter(loop, lambda: None),
        "limits": LIMITS,
        "send_queue_bytes": 1 << 20,
    }
    if issubclass(TcpConnection, asyncio.Protocol):  # the connection as its reader's protocol (no StreamWriter)
        connection: Any = TcpConnection(reader, **options)
        connection.connection_made(transport)
    else:
        connection = TcpConnection(reader, MemoryWriter(transport), **options)  # type: ignore[arg-type]
    for piece in pieces:
        reader.feed_data(piece)
    reader.feed_eof()
    frames: list[Frame] = []

    def on_frame(session: Any, header: bytes, payload: bytes) -> None:
        frames.append(Frame(bytes(header), bytes(payload)))

    await connection.run(SimpleNamespace(last_heard=0.0, pinged=False), on_frame)
    return frames, bytes(transport.written), transport.closed


_runner: asyncio.Runner | None = None


def check_server(stream: bytes, cut: int, frames: list[Frame], refused: bool) -> None:
    global _runner
    if _runner is None:
        _runner = asyncio.Runner()
    got, written, closed = _runner.run(server_read(chunks(stream, cut)))
    assert got == frames, "the server read other frames than the layout has"
    assert closed, "the server left the transport open"
    answers = FrameDecoder(FrameLimits(MAX_SERVER_HEADER, 0)).feed(written)
    if refused:
        assert len(answers) == 1, f"{len(answers)} frames answer a bad prefix"
        error = decode_server_frame(answers[0].header)
        assert isinstance(error, Error) and error.code == ErrorCode.FRAME_TOO_LARGE, error
    else:
        assert written == b"", f"the server wrote {written!r} for good frames"


def check(data: bytes) -> None:
    """One fuzz input (see the module doc)."""
    if not data:
        return
    cut, stream = data[0], data[1:]
    frames, refused = check_decoder(stream, cut)
    check_server(stream, cut, frames, refused)
