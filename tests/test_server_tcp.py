"""The TCP connection's structure: what an idle joined connection holds (docs/performance.md, memory)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import ConnectFactory

from chat.core.session import NO_CAPS
from chat.server.app import ChatServer
from chat.server.tcp import TcpConnection

pytestmark = pytest.mark.asyncio


def await_chain(task: asyncio.Task[Any]) -> list[str]:
    """The names of the coroutines a suspended task is waiting in, outermost first."""
    names = []
    awaited: Any = task.get_coro()
    while awaited is not None and hasattr(awaited, "cr_code"):
        names.append(awaited.cr_code.co_name)
        awaited = awaited.cr_await
    return names


async def only_connection(server: ChatServer) -> TcpConnection:
    for _ in range(100):
        if server.connections and all(c.session and c.session.rooms for c in server.connections.values()):
            break
        await asyncio.sleep(0.01)
    (connection,) = server.connections.values()
    return connection


async def test_an_idle_joined_connection_waits_in_readexactly_with_no_wrapper(
    server: ChatServer, connect: ConnectFactory
) -> None:
    conn = await connect("alice")
    await conn.join("lobby")
    connection = await only_connection(server)
    assert connection.task is not None
    assert await_chain(connection.task) == ["run", "readexactly", "_wait_for_data"]


async def test_an_idle_connection_keeps_no_outbox_writer_or_own_caps(
    server: ChatServer, connect: ConnectFactory
) -> None:
    conn = await connect("alice")
    await conn.join("lobby")
    connection = await only_connection(server)
    assert connection.transport.get_protocol() is connection  # the stream's protocol itself: no StreamWriter
    assert connection._out is None
    assert connection.session is not None and connection.session.caps is NO_CAPS
    assert connection.address == connection.transport.get_extra_info("peername")


class PausedTransport(asyncio.Transport):
    """A transport whose buffer is over the drain mark until told otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.buffered = 1 << 20

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass


def paused_connection() -> TcpConnection:
    connection = TcpConnection(
        asyncio.StreamReader(),
        codec=None,  # type: ignore[arg-type]  # nothing is encoded here
        turn=None,  # type: ignore[arg-type]
        limits=None,  # type: ignore[arg-type]
        send_queue_bytes=1 << 26,
    )
    connection.connection_made(PausedTransport())
    connection.pause_writing()
    return connection


async def test_drain_waits_for_resume_writing_and_every_waiter_wakes() -> None:
    connection = paused_connection()
    first = asyncio.ensure_future(connection.drain())
    second = asyncio.ensure_future(connection.drain())
    await asyncio.sleep(0)
    assert not first.done() and not second.done()
    connection.resume_writing()
    await asyncio.wait_for(asyncio.gather(first, second), 1)


async def test_a_cancelled_drain_leaves_the_others_waiting() -> None:
    connection = paused_connection()
    first = asyncio.ensure_future(connection.drain())
    second = asyncio.ensure_future(connection.drain())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    assert not second.done()
    connection.resume_writing()
    await asyncio.wait_for(second, 1)


async def test_drain_returns_when_the_connection_is_lost() -> None:
    connection = paused_connection()
    waiting = asyncio.ensure_future(connection.drain())
    await asyncio.sleep(0)
    connection.connection_lost(ConnectionResetError())
    await asyncio.wait_for(waiting, 1)
    with pytest.raises(ConnectionResetError):
        await connection.reader.readexactly(1)
