"""One TCP connection: reads frames with `readexactly`, hands them to the service, writes without waiting.

Reading: 8 bytes of prefix, both lengths checked (PROTOCOL.md 1), then exactly the header and the payload; a length
over its limit is answered with `frame_too_large` and the connection closes before anything of that size is read.

Writing: `send` puts bytes in the transport's buffer and returns at once. When more than `send_queue_bytes` wait
there, the peer is not reading: it is cut off as a slow consumer (no frame, its queue is full), so it can neither
stall a room nor grow the server's memory.
"""

from __future__ import annotations

import asyncio
import logging
from enum import Enum
from typing import TYPE_CHECKING

from chat.protocol.errors import ErrorCode, FrameTooLarge
from chat.protocol.frames import PREFIX_SIZE, FrameLimits, parse_prefix
from chat.protocol.messages import encode_error
from chat.server.limits import TokenBucket

if TYPE_CHECKING:
    from chat.server.quick import UdpPeer
    from chat.server.rooms import Room
    from chat.server.service import ChatService

logger = logging.getLogger("chat.server")

LINGER_SECONDS = 1.0  # how long a connection closed for an oversize frame is drained before the close


class State(Enum):
    """Where a connection is in its life."""

    GREETED = "greeted"  # hello sent, waiting for login
    ACTIVE = "active"  # welcome sent
    CLOSING = "closing"  # an error or quit closes it; nothing more is read


class Session:
    """A client connection and what it is logged in as."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        service: ChatService,
        *,
        limits: FrameLimits,
        send_queue_bytes: int,
        bucket: TokenBucket,
        now: float,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.transport = writer.transport
        self.service = service
        self.limits = limits
        self.send_queue_bytes = send_queue_bytes
        self.bucket = bucket
        self.peer = writer.get_extra_info("peername")
        self.state = State.GREETED
        self.connected_at = now
        self.last_heard = now
        self.pinged = False
        self.nonce: bytes | None = None
        # set at login
        self.identity = 0
        self.token = ""
        self.nick = ""
        self.nick_key = ""
        self.away: str | None = None
        self.udp: UdpPeer | None = None
        self.rooms: dict[str, Room] = {}
        self.slow_consumer = False
        self.read_delay = 0.0  # seconds to wait before reading on (a file transfer over its byte rate)
        self.frames_in = 0

    def __repr__(self) -> str:
        return f"<Session {self.nick or '-'} {self.peer}>"

    @property
    def logged_in(self) -> bool:
        return self.state is State.ACTIVE

    @property
    def open(self) -> bool:
        return self.state is not State.CLOSING and not self.transport.is_closing()

    def send(self, frame: bytes) -> None:
        """Queue bytes for the peer without waiting; cut the peer off if its queue is over the cap."""
        if self.transport.is_closing():
            return
        self.transport.write(frame)
        if self.transport.get_write_buffer_size() > self.send_queue_bytes:
            self.slow_consumer = True
            logger.warning("%r: over %d unsent bytes, disconnected as a slow consumer", self, self.send_queue_bytes)
            self.abort()

    def close_with(self, code: ErrorCode, message: str, ref: str | int | None = None) -> None:
        """Send a closing error, then close once it is written (PROTOCOL.md 8, errors that close)."""
        if self.state is not State.CLOSING:
            self.send(encode_error(code, message, ref))
        self.close()

    def close(self) -> None:
        """Close after the queued bytes are written; the read loop then ends."""
        self.state = State.CLOSING
        if not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection now, discarding whatever is queued."""
        self.state = State.CLOSING
        self.transport.abort()

    async def _linger(self) -> None:
        """Half-close, then read and discard for a moment before closing.

        Closing a socket that still has unread bytes makes the kernel send a reset, which can destroy the error frame
        before the peer reads it; a peer streaming an oversize frame always has bytes in flight. What is read here
        is thrown away in small chunks, so memory stays flat whatever size the peer declared.
        """
        self.state = State.CLOSING
        if self.transport.is_closing():
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER_SECONDS
        try:
            while (remaining := deadline - loop.time()) > 0:
                if not await asyncio.wait_for(self.reader.read(65536), remaining):
                    break
        except (TimeoutError, ConnectionError):
            pass

    async def run(self) -> None:
        """Read and dispatch frames until the peer leaves or the connection is closed."""
        loop = asyncio.get_running_loop()
        reader = self.reader
        try:
            while self.state is not State.CLOSING:
                prefix = await reader.readexactly(PREFIX_SIZE)
                try:
                    header_len, payload_len = parse_prefix(prefix, self.limits)
                except FrameTooLarge as exc:
                    logger.info("%r: %s", self, exc)
                    self.send(encode_error(ErrorCode.FRAME_TOO_LARGE, str(exc)))
                    await self._linger()
                    break
                header = await reader.readexactly(header_len)
                payload = await reader.readexactly(payload_len) if payload_len else b""
                self.last_heard = loop.time()
                self.pinged = False
                self.frames_in += 1
                self.service.handle_frame(self, header, payload)
                if self.read_delay:
                    delay, self.read_delay = self.read_delay, 0.0
                    await asyncio.sleep(delay)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        finally:
            self.state = State.CLOSING
            self.service.connection_lost(self)
            if not self.transport.is_closing():
                self.transport.close()
