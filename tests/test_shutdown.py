"""Graceful shutdown: every client hears server_shutdown, the process exits 0 within 5 s even with stalled clients."""

from __future__ import annotations

import time

import pytest
from conftest import ServerFactory
from rawwire import RawConnection

pytestmark = pytest.mark.asyncio


async def test_sigterm_with_idle_and_stalled_clients_exits_0_within_5s(chat_server_process) -> None:
    server = await chat_server_process(limits={"send_queue_bytes": 64 * 2**20})
    idle = [await RawConnection.open("127.0.0.1", server.port) for _ in range(5)]
    for index, conn in enumerate(idle):
        await conn.login(f"idle{index}")
    unlogged = await RawConnection.open("127.0.0.1", server.port)
    await unlogged.greeting()
    stalled = await RawConnection.open("127.0.0.1", server.port, rcvbuf=4096)
    await stalled.login("stalled")
    await stalled.join("lobby")
    stalled.pause_reading()
    sender = await RawConnection.open("127.0.0.1", server.port)
    await sender.login("sender")
    await sender.join("lobby")
    for i in range(1500):  # 6 MB queued for a client that never reads: the server has unsent bytes for it
        await sender.send({"type": "say", "room": "lobby", "text": "z" * 4000, "cid": f"s{i}"})
    await sender.expect("message", lambda h: h.get("cid") == "s1499", timeout=20)

    started = time.monotonic()
    server.terminate()
    code = await server.wait(timeout=10)
    elapsed = time.monotonic() - started
    assert code == 0, f"exit code {code}; stderr: {server.log(5)}"
    assert elapsed < 5.0, f"shutdown took {elapsed:.2f}s"
    for conn in [*idle, unlogged, sender]:
        await conn.error("server_shutdown")
        await conn.wait_closed()
        await conn.close()
    await stalled.close()


async def test_close_tells_every_connection_and_keeps_acknowledged_messages(make_server: ServerFactory) -> None:
    server = await make_server()
    conn = await RawConnection.open("127.0.0.1", server.port)
    token = (await conn.login("keeper"))["session"]
    await conn.join("lobby")
    ack = await conn.say("acknowledged before the close", room="lobby")
    waiting = await RawConnection.open("127.0.0.1", server.port)
    await waiting.greeting()
    await server.restart()
    for c in (conn, waiting):
        await c.error("server_shutdown")
        await c.wait_closed()
        await c.close()
    again = await RawConnection.open("127.0.0.1", server.port)
    await again.login("keeper", session=token)
    joined = await again.join("lobby", since=0)
    assert [m["id"] for m in joined["messages"]] == [ack["id"]]
    await again.close()


async def test_kill_9_loses_no_acknowledged_message(chat_server_process) -> None:
    server = await chat_server_process(history={"replay": 500})
    conn = await RawConnection.open("127.0.0.1", server.port)
    token = (await conn.login("writer"))["session"]
    await conn.join("lobby")
    for i in range(200):
        await conn.send({"type": "say", "room": "lobby", "text": f"m{i}", "cid": f"c{i}"})
    acked = [(await conn.expect("message", lambda h, i=i: h.get("cid") == f"c{i}"))["id"] for i in range(200)]
    server.kill()  # SIGKILL: no shutdown code runs
    assert await server.wait(timeout=5) == -9
    await conn.close()
    await server.restart()  # same database and ports
    conn = await RawConnection.open("127.0.0.1", server.port)
    await conn.login("writer", session=token)
    joined = await conn.join("lobby", since=0)
    assert [m["id"] for m in joined["messages"]] == acked
    await conn.close()
