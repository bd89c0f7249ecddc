"""The TCP listener's connections: frames read with `readexactly`, events written in one call per loop turn.

Reading: 8 bytes of prefix, both lengths checked (docs/protocol.md 1), then exactly the header and the payload in one
`readexactly`; a length over its limit is answered with `frame_too_large` and the connection closes before
anything of that size is read. Frames already buffered are handled one after another without yielding to the loop
(`readexactly` returns at once when the bytes are there); only a handler that must wait (login, join, history)
holds this connection's reading, never another's.

Writing: `send_event` and `send_batch` append encoded bytes to the connection's outbox and return at once; when the
loop turn ends, `TurnWriter` hands each outbox to the transport in one `write` (one `send()` system call per
connection per turn, however many frames the turn produced; nothing is delayed when the loop is idle, since the
turn ends as soon as the current callbacks are done). The slow-consumer cap counts the outbox and the transport's
buffer together: over `send_queue_bytes`, the peer is not reading and is cut off (no frame, its queue is full), so
it can neither stall a room nor grow the server's memory.

Memory before trust (docs/security.md): until `welcome` the frame limits are the small `login_limits`, so a
connection nobody knows yet can make the server hold only a few KiB. Afterwards a frame up to the connection's own
allowance (`own_bytes`, which is also twice the reader's pause mark) is read as it comes; a bigger one must first
reserve its size out of the server-wide `SharedBytes`, and gets `server_busy` when that is full. Both checks are
one comparison per frame.

Memory: an idle connection is what the server holds most of, so one costs only what it must (docs/performance.md,
memory). `TcpConnection` is itself the protocol that feeds its `StreamReader` (asyncio's `StreamReaderProtocol` and
`StreamWriter` add a 760-byte deque of drain waiters, two futures, a weak reference and two instance dicts: 1.5 KiB
per connection); its reading task awaits `readexactly` directly; the outbox is allocated only while it holds bytes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import msgspec

from chat.core.limits import SharedBytes
from chat.protocol.caps import PRESENCE_BATCH
from chat.protocol.errors import ErrorCode, FrameTooLarge
from chat.protocol.frames import PREFIX, PREFIX_SIZE, FrameLimits, encode_frame, parse_prefix
from chat.protocol.messages import Error, FileData, Presence, PresenceEvent, Presences, Ref, ServerFrame

if TYPE_CHECKING:
    from chat.core.session import Session

logger = logging.getLogger(__name__)

LINGER_SECONDS = 1.0  # how long a connection closed for an oversize frame is drained before the close
DRAIN_LOW_WATER = 64 * 1024
# Frames handled in a row before the read loop lets the turn end. Without a bound, a sender with hundreds of
# messages in flight makes a convoy: the server reads them all, then stores them all, then writes them all, while
# the receivers wait, then idles while they read. Ending the turn every 64 frames gets the first messages stored and
# written while the rest is read: measured at 100 receivers, 1.5 M deliveries/s with the server's core 60% busy
# without the bound, 2.5-2.8 M at 95% with it (docs/performance.md).
FRAMES_PER_TURN = 64


class FrameCodec:
    """Events as chat-protocol frames: an `!II` prefix, the JSON header, the payload (file data only)."""

    __slots__ = ("_encode", "_pack")

    def __init__(self) -> None:
        self._encode = msgspec.json.Encoder().encode
        self._pack = PREFIX.pack

    def encode(self, event: ServerFrame) -> bytes:
        kind = type(event)
        if kind is FileData:
            assert isinstance(event, FileData)
            return encode_frame(self._encode(msgspec.structs.replace(event, data=b"")), event.data)
        if kind is Presence:
            assert isinstance(event, Presence)
            if event.resumed:  # docs/protocol.md 10.2: `resumed` is written only inside `presences`
                event = msgspec.structs.replace(event, resumed=None)
        header = self._encode(event)
        return self._pack(len(header), 0) + header

    def join(self, parts: list[Any]) -> bytes:
        return b"".join(parts)

    def encode_batch(self, events: Sequence[ServerFrame]) -> bytes:
        encode = self.encode
        return encode(events[0]) if len(events) == 1 else b"".join([encode(event) for event in events])


def _presence_event(event: Presence) -> PresenceEvent:
    return PresenceEvent(nick=event.nick, event=event.event, old=event.old, text=event.text, resumed=event.resumed)


class BatchFrameCodec(FrameCodec):
    """The frames of a `presence-batch` connection (docs/protocol.md 10.2): every presence goes out in a `presences`
    frame, and consecutive presence events of one room in a batch are merged into one such frame, so a turn in
    which N members join costs each member one frame, not N."""

    __slots__ = ()

    def encode(self, event: ServerFrame) -> bytes:
        if type(event) is Presence:
            assert isinstance(event, Presence)
            return super().encode(Presences(room=event.room, events=[_presence_event(event)]))
        return super().encode(event)

    def encode_batch(self, events: Sequence[ServerFrame]) -> bytes:
        parts: list[bytes] = []
        run: list[Presence] = []
        for event in events:
            if type(event) is Presence:
                assert isinstance(event, Presence)
                if run and run[0].room != event.room:
                    parts.append(self._encode_run(run))
                    run = []
                run.append(event)
                continue
            if run:
                parts.append(self._encode_run(run))
                run = []
            parts.append(super().encode(event))
        if run:
            parts.append(self._encode_run(run))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _encode_run(self, run: list[Presence]) -> bytes:
        return super().encode(Presences(room=run[0].room, events=[_presence_event(e) for e in run]))


class TurnWriter:
    """Writes every connection's outbox once the loop turn that filled it is over."""

    def __init__(self, loop: asyncio.AbstractEventLoop, before_write: Callable[[], None]) -> None:
        self._loop = loop
        self._before_write = before_write  # the engine's room flush: rooms fill outboxes first
        self._dirty: list[TcpConnection] = []
        self._scheduled = False

    def schedule(self) -> None:
        """Run at the end of this loop turn."""
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.run)

    def add(self, connection: TcpConnection) -> None:
        self._dirty.append(connection)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.run)

    def run(self) -> None:
        self._scheduled = False
        self._before_write()
        dirty, self._dirty = self._dirty, []
        for connection in dirty:
            connection.write_out()


class TcpConnection(asyncio.Protocol):
    """One client connection over TCP: the protocol that feeds its `StreamReader`, the `Peer` the core writes to,
    and the read loop that feeds the core."""

    __slots__ = (
        "_batch_codec",
        "_budget",
        "_closing",
        "_delay",
        "_drain_waiter",
        "_on_open",
        "_out",
        "_paused",
        "_queued",
        "_turn",
        "admission_key",
        "cap",
        "codec",
        "limits",
        "login_limits",
        "own_bytes",
        "pool",
        "reader",
        "session",
        "slow_consumer",
        "task",
        "transport",
    )

    def __init__(
        self,
        reader: asyncio.StreamReader,
        *,
        codec: FrameCodec,
        batch_codec: FrameCodec | None = None,
        turn: TurnWriter,
        limits: FrameLimits,
        send_queue_bytes: int,
        on_open: Callable[[TcpConnection], None] | None = None,
        login_limits: FrameLimits | None = None,
        pool: SharedBytes | None = None,
        own_bytes: int = 2**62,
    ) -> None:
        self.reader = reader
        self.transport: asyncio.Transport  # set by connection_made, before anything else runs
        self.codec = codec
        self._batch_codec = batch_codec or BatchFrameCodec()
        self.limits = limits
        self.login_limits = login_limits or limits  # until welcome
        self.pool = pool or SharedBytes(0)
        self.own_bytes = own_bytes  # a frame bigger than this reserves its size out of `pool`
        self.cap = send_queue_bytes
        self.session: Session | None = None
        self.task: asyncio.Task[None] | None = None  # the read loop, once the listener has started it
        self.admission_key: str | None = None  # the source address it is counted under (chat.core.admission)
        self.slow_consumer = False
        self._turn = turn
        self._on_open = on_open
        self._out: list[bytes] | None = None  # allocated while it holds bytes
        self._queued = 0  # bytes in the outbox
        self._budget = send_queue_bytes  # what the outbox may hold: the cap less the transport's buffer
        self._closing = False
        self._delay = 0.0
        self._paused = False  # the transport's buffer is over its high-water mark
        self._drain_waiter: asyncio.Future[None] | None = None

    @property
    def address(self) -> Any:
        """The peer's address (asked of the transport when wanted: logging, not kept per connection)."""
        return self.transport.get_extra_info("peername")

    def __repr__(self) -> str:
        return f"<TcpConnection {self.address}>"

    # --- the asyncio protocol: what StreamReaderProtocol does for a stream, without its per-connection objects --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's subclasses
        self.reader.set_transport(transport)  # the reader pauses reading when its buffer is over twice its limit
        on_open, self._on_open = self._on_open, None
        if on_open is not None:
            on_open(self)

    def data_received(self, data: bytes) -> None:
        self.reader.feed_data(data)

    def eof_received(self) -> bool:
        self.reader.feed_eof()
        return True  # keep the transport: the read loop closes it once what is queued is written

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self.reader.feed_eof()
        else:
            self.reader.set_exception(exc)
        self.resume_writing()  # a drain returns; its caller sees the connection is closed

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- the Peer protocol ---------------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return not self._closing and not self.transport.is_closing()

    @property
    def pending_bytes(self) -> int:
        return self._queued + self.transport.get_write_buffer_size()

    def negotiated(self, caps: frozenset[str]) -> None:
        """The session's caps are set (at login, before it is in any room): pick the codec that writes them."""
        if PRESENCE_BATCH in caps:
            self.codec = self._batch_codec

    def send_event(self, event: ServerFrame) -> None:
        self.send_batch(self.codec.encode(event), ())

    def send_batch(self, encoded: bytes, events: Sequence[ServerFrame]) -> None:
        if self._closing:
            return
        out = self._out
        if out is None:
            self._out = [encoded]
            self._turn.add(self)
        else:
            out.append(encoded)
        self._queued += len(encoded)
        if self._queued > self._budget:
            self._check_cap()

    def close_with(self, code: ErrorCode, message: str, ref: Ref | None = None) -> None:
        if not self._closing:
            self.send_event(Error(code=code.value, message=message, ref=ref))
        self.close()

    def close(self) -> None:
        if not self._closing:
            self.write_out()
            self._closing = True
        if not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        self._closing = True
        self._out = None
        self._queued = 0
        self.transport.abort()

    def throttle(self, seconds: float) -> None:
        self._delay = max(self._delay, seconds)

    async def drain(self) -> None:
        self.write_out()
        transport = self.transport
        if transport.get_write_buffer_size() <= DRAIN_LOW_WATER:
            return
        if transport.is_closing():
            raise ConnectionResetError("connection closing")
        if self._paused:  # until resume_writing or connection_lost; one future for every waiting download
            if self._drain_waiter is None:
                self._drain_waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._drain_waiter)

    def stop_reading(self) -> None:
        """Read nothing more (the server is shutting down)."""
        if not self.transport.is_closing():
            self.transport.pause_reading()

    # --- writing -------------------------------------------------------------------------------------------------

    def write_out(self) -> None:
        """Hand the outbox to the transport in one write."""
        out = self._out
        if out is None or self._closing:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        self._out = None
        self._queued = 0
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(data)
        buffered = transport.get_write_buffer_size()
        self._budget = self.cap - buffered if buffered else self.cap  # no new int object while nothing waits
        if self._budget < 0:
            self._cut_off()

    def _check_cap(self) -> None:
        """The outbox is over what the last write left room for: write now, and cut off a peer still over the cap
        (what the kernel would not take waits in the transport's buffer, which counts)."""
        self.write_out()

    def _cut_off(self) -> None:
        self.slow_consumer = True
        logger.warning("%r: over %d unsent bytes, disconnected as a slow consumer", self, self.cap)
        if self.session is not None:
            self.session.abort()
        else:
            self.abort()

    # --- reading -------------------------------------------------------------------------------------------------

    async def _linger(self) -> None:
        """Half-close, then read and discard for a moment before closing.

        Closing a socket that still has unread bytes makes the kernel send a reset, which can destroy the error frame
        before the peer reads it; a peer streaming an oversize frame always has bytes in flight. What is read here
        is thrown away in small chunks, so memory stays flat whatever size the peer declared.
        """
        self.write_out()
        self._closing = True
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

    async def _read_reserved(self, size: int) -> bytes | None:
        """Read a frame body over the connection's own allowance, holding its size out of the server-wide pool
        meanwhile; None when the pool has no room (then `server_busy` is sent and the connection lingers)."""
        pool = self.pool
        if not pool.reserve(size):
            message = (
                f"the server holds {pool.in_use} bytes of unfinished frames, the limit is {pool.limit}: "
                f"a frame of {size} bytes does not fit now"
            )
            logger.warning("%r: %s", self, message)
            self.send_event(Error(code=ErrorCode.SERVER_BUSY.value, message=message))
            await self._linger()
            return None
        try:
            return await self.reader.readexactly(size)
        finally:
            pool.release(size)

    async def run(
        self,
        session: Session,
        on_frame: Callable[[Session, bytes, bytes], Any],
        on_closed: Callable[[Session], None] | None = None,
    ) -> None:
        """Read and dispatch frames until the peer leaves or the connection is closed, then call `on_closed`.

        The listener runs this as the connection's task itself: an idle connection is suspended in this frame,
        `readexactly` and its `_wait_for_data`, and every frame of that chain costs memory (200-400 bytes each).
        """
        loop = asyncio.get_running_loop()
        reader = self.reader
        limits = self.login_limits  # the small limits until welcome (docs/security.md)
        own = self.own_bytes
        run = 0
        try:
            while not self._closing:
                prefix = await reader.readexactly(PREFIX_SIZE)
                try:
                    header_len, payload_len = parse_prefix(prefix, limits)
                except FrameTooLarge as exc:
                    message = str(exc) if limits is self.limits else f"{exc} before login"
                    logger.info("%r: %s", self, message)
                    self.send_event(Error(code=ErrorCode.FRAME_TOO_LARGE.value, message=message))
                    await self._linger()
                    break
                size = header_len + payload_len
                if size > own:
                    body = await self._read_reserved(size)
                    if body is None:
                        break
                    header, payload = body[:header_len], body[header_len:]
                elif payload_len:
                    body = await reader.readexactly(size)
                    header, payload = body[:header_len], body[header_len:]
                else:
                    header = await reader.readexactly(header_len)
                    payload = b""
                session.last_heard = loop.time()
                session.pinged = False
                waiting = on_frame(session, header, payload)
                if waiting is not None:
                    await waiting
                    del waiting, header, payload  # not kept alive while this connection idles
                    run = 0
                    if limits is not self.limits and session.logged_in:  # login is the one handler that waits first
                        limits = self.limits
                else:
                    run += 1
                    if run >= FRAMES_PER_TURN:
                        run = 0
                        await asyncio.sleep(0)
                if self._delay:
                    delay, self._delay = self._delay, 0.0
                    await asyncio.sleep(delay)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        except Exception:
            logger.exception("%r: connection crashed", session)
        finally:
            self.write_out()
            self._closing = True
            if not self.transport.is_closing():
                self.transport.close()
            if on_closed is not None:
                on_closed(session)
