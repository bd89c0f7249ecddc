"""One TCP connection to a chat server: framing, the login handshake, requests matched by `ref`, keepalive.

A `Connection` knows nothing of resuming; the `Client` opens a new one for every attempt and drops the old one.

Reading: one task reads each frame with `readexactly` (the 8-byte prefix, both lengths checked against the limits
before anything of that size is read, then the header and the payload; docs/protocol.md 1) and dispatches it at once, in
the order it came:

- a frame whose `ref` matches a request in flight answers it: the request's `on_reply` hook runs first, still in
  read order, so the client's bookkeeping (a joined room, a changed nick) is done before any later frame is seen;
  then the request's future resolves, or fails with `ServerError` if the frame is an `error`;
- a `ping` is answered with a `pong` echoing `t`; a `pong` only proves the link is alive;
- an `error` without a ref whose code closes the connection (docs/protocol.md 8) becomes the close reason;
- everything else goes to the `on_frame` callback.

Writing: `send` hands the frame to the transport at once and returns; `drain()` waits only when more than
`WRITE_HIGH_WATER` bytes are queued, so a burst of requests costs no round trip through the loop per frame.

Keepalive: with the server's `idle_timeout` (from `welcome.limits`), the client pings after a third of it without a
frame from the server and gives the link up as dead after all of it, so a silent half-open link is noticed.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from chat.client.errors import FATAL_LOGIN_CODES, ConnectionLost, LoginRefused, ProtocolError, ServerError
from chat.protocol.auth import compute_proof
from chat.protocol.errors import CLOSING_CODES, FrameTooLarge
from chat.protocol.frames import DEFAULT_MAX_PAYLOAD, MAX_SERVER_HEADER, PREFIX_SIZE, FrameLimits, parse_prefix
from chat.protocol.messages import (
    Error,
    FileData,
    Hello,
    Login,
    Ping,
    Pong,
    Request,
    ServerFrame,
    ServerPing,
    ServerPong,
    Welcome,
    decode_server_frame,
    encode,
)

logger = logging.getLogger("chat.client")

PROTOCOL_VERSION = 1
# docs/protocol.md 8: the server never sends a header over 1 MiB; payloads (file chunks) are far below 1 MiB + 64 KiB.
CLIENT_LIMITS = FrameLimits(max_header=MAX_SERVER_HEADER, max_payload=DEFAULT_MAX_PAYLOAD + 64 * 1024)
WRITE_HIGH_WATER = 256 * 1024
DEFAULT_IDLE_TIMEOUT = 120.0

RefValue = str | int
FrameHook = Callable[[ServerFrame], None]


@dataclass(slots=True)
class _Pending:
    """A request in flight: the future its caller awaits and the hook that runs in read order on its reply."""

    future: asyncio.Future[ServerFrame]
    on_reply: FrameHook | None


class Connection:
    """One logged-in (or logging-in) TCP connection to a chat server."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, limits: FrameLimits = CLIENT_LIMITS
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.transport = writer.transport
        self.limits = limits
        self.peer: Any = writer.get_extra_info("peername")
        self.hello: Hello | None = None
        self.welcome: Welcome | None = None
        self.close_reason: str | None = None  # why the connection ended, once it has
        self.close_code: str | None = None  # the server's error code, when a closing `error` ended it
        self._loop = asyncio.get_running_loop()
        self.last_received = self._loop.time()
        self._pending: dict[RefValue, _Pending] = {}
        self._on_frame: FrameHook | None = None
        self._closed = asyncio.Event()
        self._reader_task: asyncio.Task[None] | None = None
        self._keepalive_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Connection {self.peer!r}{' closed' if self.closed else ''}>"

    # --- opening and login ---------------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        ssl: ssl_module.SSLContext | bool | None = None,
        limits: FrameLimits = CLIENT_LIMITS,
        local_addr: tuple[str, int] | None = None,
    ) -> Connection:
        """Open the TCP (or, with `ssl`, TLS) connection, from `local_addr` if given; nothing is read yet."""
        reader, writer = await asyncio.open_connection(host, port, ssl=ssl, local_addr=local_addr)
        return cls(reader, writer, limits=limits)

    def peer_certificate(self) -> bytes | None:
        """The server's TLS certificate (DER), or None on a plain connection."""
        ssl_object = self.writer.get_extra_info("ssl_object")  # an ssl.SSLObject on both event loops
        if ssl_object is None:
            return None
        certificate: bytes | None = ssl_object.getpeercert(binary_form=True)
        return certificate

    async def handshake(
        self,
        *,
        nick: str,
        secret: str | None,
        session: str | None,
        since: int | None,
        ref: RefValue,
        caps: tuple[str, ...] | None = None,
    ) -> Welcome:
        """Read `hello`, send `login` (with the HMAC proof when the server asks for one), return `welcome`.

        Raises LoginRefused for a refusal no retry can fix, ServerError for one that may pass later
        (`too_many_clients`, `server_shutdown`), ConnectionLost if the server hangs up, ProtocolError if it sends
        something that is not this protocol. Nothing after `welcome` is read here: the private history page that
        follows it is left for the reader task.
        """
        first = await self._read_frame()
        if isinstance(first, Error):
            raise self._refusal(first)
        if not isinstance(first, Hello):
            raise ProtocolError(f"expected hello, got {type(first).__name__ if first else 'an unreadable frame'}")
        self.hello = first
        if first.protocol != PROTOCOL_VERSION:
            logger.warning("%r speaks protocol %r, this client %d", self.peer, first.protocol, PROTOCOL_VERSION)
        proof = None
        if first.auth == "hmac-sha256":
            if not secret:
                logger.warning("%r asks for a shared secret and none was given", self.peer)
            else:
                try:
                    nonce = bytes.fromhex(first.nonce)
                except ValueError:
                    raise ProtocolError(f"hello carries a nonce that is not hex: {first.nonce!r}") from None
                proof = compute_proof(secret, nonce, nick)  # docs/protocol.md 2.2: over the nick exactly as sent
        self.send(
            Login(
                nick=nick,
                protocol=PROTOCOL_VERSION,
                proof=proof,
                session=session,
                since=since,
                ref=ref,
                caps=None if caps is None else list(caps),
            )
        )
        while True:
            frame = await self._read_frame()
            if isinstance(frame, Welcome):
                self.welcome = frame
                return frame
            if isinstance(frame, Error):
                raise self._refusal(frame)
            if isinstance(frame, ServerPing):
                self.send(Pong(t=frame.t))
            elif frame is not None:
                logger.debug("%r: ignoring %s before welcome", self.peer, frame.type)

    def _refusal(self, error: Error) -> ServerError:
        self.close_code, self.close_reason = error.code, error.message
        if error.code in FATAL_LOGIN_CODES:
            return LoginRefused(error.code, error.message)
        return ServerError(error.code, error.message)

    def start(self, on_frame: FrameHook, *, idle_timeout: float | None = None) -> None:
        """Start reading frames after `welcome`; frames that answer no request go to `on_frame`."""
        if self._reader_task is not None:
            raise RuntimeError("the connection is already started")
        self._on_frame = on_frame
        self._reader_task = asyncio.create_task(self._read_loop(), name=f"chat-client-reader {self.peer!r}")
        if idle_timeout is not None and idle_timeout > 0:
            self._keepalive_task = asyncio.create_task(
                self._keepalive(idle_timeout), name=f"chat-client-keepalive {self.peer!r}"
            )

    # --- writing -------------------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the connection is lost or closed (or going)."""
        return self._closed.is_set() or self.transport.is_closing()

    def send(self, request: Request, payload: bytes = b"") -> None:
        """Write one request frame (with a payload for file data) now, without waiting; ConnectionLost if the
        connection is gone."""
        if self.closed:
            raise ConnectionLost(self.close_reason or "the connection is closed")
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%r <- %s ref=%r", self.peer, request.type, request.ref)
        self.transport.write(encode(request, payload))

    async def drain(self) -> None:
        """Wait for the transport's buffer to go down, but only when it holds more than WRITE_HIGH_WATER bytes."""
        if self.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            try:
                await self.writer.drain()
            except ConnectionError as exc:
                raise ConnectionLost(self.close_reason or f"connection error: {exc}") from None

    def request(self, request: Request, on_reply: FrameHook | None = None) -> asyncio.Future[ServerFrame]:
        """Send a request that carries a `ref`; the future resolves with the frame that carries the same ref.

        `on_reply` runs in the reader, in read order, before the future resolves (and even if the caller has
        stopped waiting), so bookkeeping never misses a reply. An `error` reply fails the future with ServerError;
        a lost connection fails it with ConnectionLost.
        """
        if request.ref is None:
            raise ValueError("a request awaiting its reply needs a ref")
        future: asyncio.Future[ServerFrame] = self._loop.create_future()
        self.send(request)
        self._pending[request.ref] = _Pending(future, on_reply)
        return future

    # --- reading -------------------------------------------------------------------------------------------------

    async def _read_frame(self) -> ServerFrame | None:
        """The next frame, or None for one that cannot be decoded (logged, and its request failed if it has one)."""
        try:
            prefix = await self.reader.readexactly(PREFIX_SIZE)
            header_len, payload_len = parse_prefix(prefix, self.limits)
            header = await self.reader.readexactly(header_len)
            payload = await self.reader.readexactly(payload_len) if payload_len else b""
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise ConnectionLost("the server closed the connection in the middle of a frame") from None
            raise ConnectionLost("the server closed the connection") from None
        except FrameTooLarge as exc:
            raise ProtocolError(f"the server sent an oversized frame: {exc}") from None
        except (ConnectionError, ssl_module.SSLError) as exc:
            raise ConnectionLost(f"connection error: {exc!r}") from None
        self.last_received = self._loop.time()
        try:
            frame = decode_server_frame(header)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._undecodable(header, exc)
            return None
        if payload and isinstance(frame, FileData):
            frame = msgspec.structs.replace(frame, data=payload)
        return frame

    def _undecodable(self, header: bytes, exc: Exception) -> None:
        """A frame of an unknown type, or with a field of the wrong type: skip it, failing its request if any."""
        try:
            raw = msgspec.json.decode(header)
        except msgspec.DecodeError:
            raw = None
        kind = raw.get("type") if isinstance(raw, dict) else None
        ref = raw.get("ref") if isinstance(raw, dict) else None
        logger.warning("%r: skipping a %r frame this client cannot read: %s", self.peer, kind, exc)
        pending = self._pending.pop(ref, None) if isinstance(ref, str | int) else None
        if pending is not None and not pending.future.done():
            pending.future.set_exception(ProtocolError(f"cannot read the server's {kind!r} reply: {exc}"))

    async def _read_loop(self) -> None:
        reason = "the connection was closed"
        try:
            while True:
                frame = await self._read_frame()
                if frame is not None:
                    self._dispatch(frame)
        except (ConnectionLost, ProtocolError) as exc:
            reason = str(exc)
        except OSError as exc:
            reason = f"connection error: {exc!r}"
        except asyncio.CancelledError:
            reason = "the connection was closed"
            raise
        except Exception as exc:
            logger.exception("%r: the reader failed", self.peer)
            reason = f"internal error in the client's reader: {exc!r}"
        finally:
            self._finish(reason)

    def _dispatch(self, frame: ServerFrame) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%r -> %s", self.peer, frame.type)
        ref = getattr(frame, "ref", None)
        if ref is not None:
            pending = self._pending.pop(ref, None)
            if pending is not None:
                self._answer(pending, frame)
                return
        if isinstance(frame, ServerPing):
            if not self.closed:
                self.send(Pong(t=frame.t))  # docs/protocol.md 2.4: the same `t`, whatever JSON value it is
            return
        if isinstance(frame, ServerPong):
            return
        if isinstance(frame, Error) and frame.code in CLOSING_CODES:
            # docs/protocol.md 8: the server closes right after this; keep reading until it does.
            self.close_code, self.close_reason = frame.code, frame.message
            logger.info("%r is closing the connection: %s: %s", self.peer, frame.code, frame.message)
            return
        if self._on_frame is not None:
            try:
                self._on_frame(frame)
            except Exception:
                logger.exception("%r: handling a %s frame failed", self.peer, frame.type)

    def _answer(self, pending: _Pending, frame: ServerFrame) -> None:
        if isinstance(frame, Error):
            if not pending.future.done():
                pending.future.set_exception(ServerError(frame.code, frame.message))
            return
        if pending.on_reply is not None:
            try:
                pending.on_reply(frame)
            except Exception:
                logger.exception("%r: handling the %s reply failed", self.peer, frame.type)
        if not pending.future.done():
            pending.future.set_result(frame)

    async def _keepalive(self, idle_timeout: float) -> None:
        """Ping after a third of the idle timeout without a frame; give up after all of it (docs/protocol.md 8)."""
        ping_after = idle_timeout / 3
        tick = idle_timeout / 6
        pinged_at: float | None = None
        while not self.closed:
            await asyncio.sleep(tick)
            now = self._loop.time()
            silent = now - self.last_received
            if silent >= idle_timeout:
                self.abort(f"no frame from the server for {silent:.1f} s (idle timeout {idle_timeout:g} s)")
                return
            if silent >= ping_after and (pinged_at is None or pinged_at < self.last_received):
                pinged_at = now
                try:
                    self.send(Ping(t=int(now * 1000)))
                except ConnectionLost:
                    return

    # --- closing -------------------------------------------------------------------------------------------------

    def abort(self, reason: str) -> None:
        """Drop the connection now; `reason` becomes the close reason unless the server already gave one."""
        if self.close_reason is None:
            self.close_reason = reason
        self.transport.abort()
        if self._reader_task is None:
            self._finish(reason)

    async def wait_closed(self) -> None:
        """Wait until the connection has ended and every request in flight has failed."""
        await self._closed.wait()

    def _finish(self, reason: str) -> None:
        if self._closed.is_set():
            return
        if self.close_reason is None:
            self.close_reason = reason
        if not self.transport.is_closing():
            self.transport.close()
        if self._keepalive_task is not None and self._keepalive_task is not asyncio.current_task():
            self._keepalive_task.cancel()
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            if not entry.future.done():
                entry.future.set_exception(ConnectionLost(self.close_reason))
        self._closed.set()
        logger.debug("%r closed: %s", self.peer, self.close_reason)
