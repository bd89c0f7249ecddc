"""The server object and its lifecycle: listeners, keepalive sweep, retention, graceful shutdown.

`ChatServer` is an async context manager. On close it stops accepting, commits what is pending (so pending
acknowledgements go out), sends `error server_shutdown` to every connection, waits a short grace for the peers to
read it, then aborts whatever is left: a stalled client cannot hold the shutdown up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from types import TracebackType

from chat.config import Config, config_with
from chat.core.admission import AddressBook, address_key, address_limits
from chat.core.limits import SharedBytes, TokenBucket
from chat.core.service import ChatService
from chat.core.session import Session
from chat.engine.local import LocalEngine
from chat.protocol.errors import ChatError, ErrorCode
from chat.protocol.frames import FrameLimits
from chat.protocol.messages import encode_error
from chat.server.tcp import BatchFrameCodec, FrameCodec, TcpConnection, TurnWriter
from chat.server.tls import TlsConnection, TlsUnavailable, server_context
from chat.server.udp import QuickChannel
from chat.store.history import now_ms
from chat.store.sqlite import AsyncStore

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE = 2.0
RETENTION_SWEEP_SECONDS = 3600.0


class ListenError(ChatError):
    """A listening socket cannot be opened at start; the message names the protocol, address and port."""


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reason(exc: OSError) -> str:
    """What the operating system said ("Address already in use"), not the event loop's wrapping of it."""
    cause: BaseException | None = exc
    while cause is not None:  # uvloop wraps the socket's error without its errno
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno)
        cause = cause.__cause__ or cause.__context__
    return exc.strerror or str(exc)


class ChatServer:
    """A running chat server: `async with ChatServer(config) as server:` then `server.port`, `server.udp_port`
    (and `server.tls_port` when `[server] tls_cert` is set)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.host = config.server.host
        self.port = config.server.port
        self.udp_port = config.server.udp_port
        self.tls_port: int | None = None  # bound when TLS is on
        self.connections: dict[Session, TcpConnection] = {}  # each holds its read loop's task
        self._server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None
        self._tls_context: ssl.SSLContext | None = None
        self._udp: QuickChannel | None = None
        self._store: AsyncStore | None = None
        self._turn: TurnWriter | None = None
        self._codec = FrameCodec()
        self._batch_codec = BatchFrameCodec()  # one object for every presence-batch connection: rooms share batches
        limits = config.limits
        self._frame_limits = FrameLimits(limits.max_header_bytes, limits.max_payload_bytes)
        self._login_limits = FrameLimits(
            min(limits.max_header_bytes, limits.max_header_bytes_before_login),
            min(limits.max_payload_bytes, limits.max_payload_bytes_before_login),
        )
        # docs/security.md, memory before trust: the input held for frames bigger than a connection's own allowance
        self.read_pool = SharedBytes(limits.max_buffered_bytes)
        self._service: ChatService | None = None
        # Bound once: an attribute lookup of a method makes a new bound-method object, which a connection would keep.
        self._handle_frame: Callable[[Session, bytes, bytes], Awaitable[None] | None] | None = None
        self._on_open = self._on_connection
        self._on_closed = self._connection_closed
        self._housekeeping: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self.refused = 0

    @property
    def service(self) -> ChatService:
        assert self._service is not None, "the server is not started"
        return self._service

    @property
    def database(self) -> str:
        return self.config.history.database

    async def start(self) -> None:
        """Open the store and the listeners; the bound ports are in `.port`, `.udp_port` (and `.tls_port`).

        A certificate or key that cannot be used raises TlsUnavailable before anything is opened. A start that fails
        later closes whatever it had opened, and raises a `ChatError` whose message is one line naming the file or
        port at fault (`StoreError` for the database and the files folder, `ListenError` for a port).
        """
        loop = asyncio.get_running_loop()
        server_config = self.config.server
        if server_config.tls_cert:
            self._tls_context = server_context(server_config.tls_cert, server_config.tls_key)
        history = self.config.history
        self._store = AsyncStore(history.database, synchronous=history.synchronous)
        await self._store.start()
        try:
            await self._start_listening(loop)
        except BaseException:
            await self._abandon_start()
            raise

    async def _start_listening(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._store is not None
        engine = LocalEngine(lambda: turn.schedule())
        turn = self._turn = TurnWriter(loop, engine.flush)
        self.addresses = AddressBook(address_limits(self.config))
        self._service = ChatService(self.config, self._store, engine, loop.time, addresses=self.addresses)
        await self._service.start()
        self._handle_frame = self._service.handle_frame
        self._service.files.start()
        await self._prune()
        server = self.config.server
        try:
            self._server = await loop.create_server(
                self._new_connection,
                host=server.host,
                port=server.port,
                backlog=server.backlog,
                reuse_address=True,
            )
        except OSError as exc:
            raise ListenError(f"cannot listen on tcp {_host_port(server.host, server.port)}: {_reason(exc)}") from None
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]
        family = self._server.sockets[0].family
        if self._tls_context is not None:
            await self._listen_tls(loop)
        router = self._service.quick
        try:
            transport, self._udp = await loop.create_datagram_endpoint(
                lambda: QuickChannel(router),
                local_addr=(server.host, server.udp_port),
                family=family,
            )
        except OSError as exc:
            where = _host_port(server.host, server.udp_port)
            raise ListenError(f"cannot listen on udp {where}: {_reason(exc)}") from None
        self.udp_port = transport.get_extra_info("sockname")[1]
        self._service.udp_port = self.udp_port
        self._housekeeping = asyncio.create_task(self._sweep(), name="chat-housekeeping")
        self._closed.clear()
        tls = "" if self.tls_port is None else f", tls {self.tls_port}"
        logger.info(
            "serving on tcp %s:%d, udp %d%s, database %s", self.host, self.port, self.udp_port, tls, self.database
        )

    async def _listen_tls(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the TLS port beside the plain one (chat.server.tls)."""
        port = self.config.server.tls_port
        try:
            self._tls_server = await loop.create_server(
                self._new_tls_connection,
                host=self.config.server.host,
                port=port,
                backlog=self.config.server.backlog,
                reuse_address=True,
                ssl=self._tls_context,
                ssl_handshake_timeout=self.config.limits.tls_handshake_timeout,
            )
        except OSError as exc:
            raise TlsUnavailable(
                f"cannot listen on {self.config.server.host}:{port} (the TLS port): {exc.strerror or exc}"
            ) from None
        self.tls_port = self._tls_server.sockets[0].getsockname()[1]

    async def _abandon_start(self) -> None:
        """Close what a failed start had opened, so the process can exit with its one line."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._tls_server is not None:
            self._tls_server.close()
            self._tls_server = None
        if self._service is not None:
            self._service.files.close()
        if self._store is not None:
            with contextlib.suppress(Exception):
                await self._store.close()

    @property
    def listening_line(self) -> str:
        """The line the CLI prints once every port is bound."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        line = f"chat-server listening on tcp://{host}:{self.port} udp://{host}:{self.udp_port}"
        return line if self.tls_port is None else f"{line} tls://{host}:{self.tls_port}"

    async def __aenter__(self) -> ChatServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def serve_forever(self) -> None:
        """Wait until `close()` has run."""
        await self._closed.wait()

    async def restart(self) -> None:
        """Close and start again on the same database, host and ports (connected clients resume by themselves)."""
        ports = {"host": self.host, "port": self.port, "udp_port": self.udp_port}
        if self.tls_port is not None:
            ports["tls_port"] = self.tls_port
        self.config = config_with(self.config, server=ports)
        await self.close()
        await self.start()

    def _new_connection(self, kind: type[TcpConnection] = TcpConnection) -> TcpConnection:
        """The protocol of an accepted connection: a `TcpConnection` (or `kind`) feeding its own `StreamReader`,
        with the same limits before and after login on every port."""
        assert self._turn is not None
        own = self.config.limits.max_buffered_bytes_per_connection
        return kind(
            asyncio.StreamReader(limit=own // 2),  # the reader stops reading the socket above twice its limit
            codec=self._codec,
            batch_codec=self._batch_codec,
            turn=self._turn,
            limits=self._frame_limits,
            send_queue_bytes=self.config.limits.send_queue_bytes,
            on_open=self._on_open,
            login_limits=self._login_limits,
            pool=self.read_pool,
            own_bytes=own,
        )

    def _new_tls_connection(self) -> TcpConnection:
        """The protocol of a connection to the TLS port: greeted, as on the plain port, once its handshake is done."""
        return self._new_connection(TlsConnection)

    def _on_connection(self, connection: TcpConnection) -> None:
        """A connection is made (on the TLS port: its handshake is done): greet it and start its read loop, or
        refuse it.

        Both event loops set TCP_NODELAY on every TCP connection they make, so nothing is set here.
        """
        key = self._admit(connection.transport, say_why=True)
        if key is not None:
            self._open_session(connection, key)

    def _admit(self, transport: asyncio.Transport, *, say_why: bool) -> str | None:
        """Count a new connection under its source address, or refuse it (max_clients and the per-address limits,
        docs/security.md) with the `error` frame if `say_why`, and close it: the key it counts under, or None."""
        peer = transport.get_extra_info("peername")
        key = address_key(str(peer[0])) if isinstance(peer, tuple) else str(peer)
        refusal = self.addresses.admit(key, asyncio.get_running_loop().time())
        if refusal is not None:
            self.refused += 1
            if say_why:
                code, message = refusal
                transport.write(encode_error(code, message))
            transport.close()
            return None
        return self.addresses.opened(key)

    def _open_session(self, connection: TcpConnection, key: str) -> None:
        """Greet an admitted connection and start its read loop: the one path of both ports."""
        limits = self.config.limits
        now = asyncio.get_running_loop().time()
        connection.admission_key = key
        session = connection.session = Session(
            connection, TokenBucket(limits.messages_per_second, limits.burst, now), now
        )
        self.connections[session] = connection
        logger.debug("connection from %r", connection)
        self.service.greet(session)
        assert self._handle_frame is not None
        # The read loop is the task itself (no wrapper coroutine, no done callback): an idle connection is
        # suspended in as few frames as it can be.
        connection.task = asyncio.create_task(connection.run(session, self._handle_frame, self._on_closed))

    def _connection_closed(self, session: Session) -> None:
        """The read loop of `session`'s connection has ended (run by the loop itself, last)."""
        logged_in = session.identity != 0
        try:
            self.service.connection_lost(session)
        finally:
            connection = self.connections.pop(session, None)
            if connection is not None and connection.admission_key is not None:
                self.addresses.closed(
                    connection.admission_key, logged_in=logged_in, now=asyncio.get_running_loop().time()
                )

    async def _sweep(self) -> None:
        """Keepalive pings and timeouts for every connection, and the retention sweep now and then."""
        limits = self.config.limits
        tick = max(0.02, min(1.0, limits.idle_timeout / 4, limits.login_timeout / 4))
        loop = asyncio.get_running_loop()
        next_prune = loop.time() + RETENTION_SWEEP_SECONDS
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            for session in list(self.connections):
                self.service.keepalive(session, now)
            self.service.files.sweep(now)
            self.service.sweep(now)
            self.addresses.sweep(now)
            if now >= next_prune:
                next_prune = now + RETENTION_SWEEP_SECONDS
                await self._prune()

    async def _prune(self) -> None:
        await self.prune_history(now_ms())

    async def prune_history(self, now: int) -> int:
        """Retention (`[history] retention_days`, docs/protocol.md 8): delete the messages and files older than that as
        of `now` (ms since the epoch; the sweep passes the wall clock), and return how many messages went."""
        days = self.config.history.retention_days
        removed = 0
        if days > 0 and self._store is not None:
            cutoff = now - int(days * 86_400_000)
            removed = await self._store.delete_older_than(cutoff)
            self.service.files.remove_stored(await self._store.delete_files_older_than(cutoff))
            if removed:
                logger.info("retention: removed %d message(s) older than %g days", removed, days)
        return removed

    async def close(self) -> None:
        """Stop accepting, flush history, tell every client `server_shutdown`, and close everything."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        tls_server, self._tls_server = self._tls_server, None
        if tls_server is not None:
            tls_server.close()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        for connection in self.connections.values():
            connection.stop_reading()  # what is read is answered; nothing more is read
        await self.service.store.flush()
        for session in list(self.connections):
            session.close_with(ErrorCode.SERVER_SHUTDOWN, "the server is shutting down")
        tasks = {connection.task for connection in self.connections.values() if connection.task is not None}
        if tasks:
            _, stalled = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE)
            for session in list(self.connections):
                session.abort()
            if stalled:
                await asyncio.wait(stalled, timeout=1.0)
        if self._udp is not None:
            self._udp.close()
        for listener in (server, tls_server):
            if listener is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(listener.wait_closed(), 1.0)
        await self.service.store.flush()
        self.service.files.close()
        assert self._store is not None
        await self._store.close()
        self._closed.set()
        logger.info("server on port %d closed", self.port)
