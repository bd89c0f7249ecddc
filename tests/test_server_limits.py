"""Hostile and slow clients: oversize lengths, slow consumers; the others never notice."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from conftest import ConnectFactory, ServerFactory
from rawwire import RawConnection, frame

pytestmark = pytest.mark.asyncio


def rss_bytes(pid: int) -> int:
    """Resident memory of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024


async def test_declared_4gib_payload_leaves_server_memory_flat(chat_server_process) -> None:
    server_process = await chat_server_process()
    assert server_process.pid is not None
    declared = (100).to_bytes(4, "big") + (2**32 - 1).to_bytes(4, "big")
    junk = b"\0" * 65536

    async def attack(streamed_chunks: int) -> None:
        conn = await RawConnection.open("127.0.0.1", server_process.port)
        await conn.greeting()
        with contextlib.suppress(ConnectionError):
            await conn.send_raw(declared)
            for _ in range(streamed_chunks):  # then stream, as if the 4 GiB were coming
                await conn.send_raw(junk)
        await conn.error("frame_too_large")
        await conn.wait_closed()
        await conn.close()

    # warm up: logged-in clients and a few attacks first, so allocator pools exist before the baseline
    warm = [await RawConnection.open("127.0.0.1", server_process.port) for _ in range(5)]
    for index, conn in enumerate(warm):
        await conn.login(f"warm{index}")
    for _ in range(5):
        await attack(32)
    baseline = rss_bytes(server_process.pid)
    attackers, chunks = 50, 64  # 50 declared 4 GiB frames, 200 MiB streamed after them in all
    for _ in range(attackers):
        await attack(chunks)
    grown = rss_bytes(server_process.pid) - baseline
    streamed = attackers * chunks * len(junk)
    assert grown < 16 * 2**20, (
        f"server memory grew by {grown / 2**20:.1f} MiB after {attackers} oversize frames ({streamed / 2**20:.0f} MiB "
        "streamed): it should not depend on what was declared or streamed"
    )
    for conn in warm:  # everyone else is still served
        await conn.request({"type": "ping", "t": 1}, "pong")
        await conn.close()


async def test_oversize_header_length_is_refused_before_reading_it(connect: ConnectFactory) -> None:
    conn = await connect("x")
    await conn.send_raw(frame(b"")[:0] + (65_537).to_bytes(4, "big") + (0).to_bytes(4, "big"))
    error = await conn.error("frame_too_large")
    assert "65536" in error["message"]
    await conn.wait_closed()


async def test_slow_consumer_is_cut_off_and_the_room_gets_everything(make_server: ServerFactory) -> None:
    server = await make_server(limits={"send_queue_bytes": 64 * 1024})
    sender = await RawConnection.open("127.0.0.1", server.port)
    await sender.login("sender")
    member = await RawConnection.open("127.0.0.1", server.port)
    await member.login("member")
    stuck = await RawConnection.open("127.0.0.1", server.port, rcvbuf=4096)
    await stuck.login("stuck")
    for conn in (sender, member, stuck):
        await conn.join("lobby")
    stuck.pause_reading()  # never reads again
    text = "x" * 4000
    count = 1500  # 6 MB: beyond 64 KiB plus what the kernel buffers on both ends (up to 4 MiB on loopback)
    for i in range(count):
        await sender.send({"type": "say", "room": "lobby", "text": text, "cid": f"s{i}"})
    last = await sender.expect("message", lambda h: h.get("cid") == f"s{count - 1}", timeout=15)
    await member.expect("message", lambda h: h["id"] == last["id"], timeout=15)
    received = [h for h in member.inbox if h.get("type") == "message"]
    assert len(received) == count - 1, "the member got every message"
    quit_ = await member.expect("presence", lambda h: h["nick"] == "stuck" and h["event"] == "quit", timeout=15)
    assert quit_["room"] == "lobby"
    for conn in (sender, member, stuck):
        await conn.close()


async def test_slow_consumer_does_not_delay_the_sender(make_server: ServerFactory) -> None:
    # the sender's acknowledgements keep flowing while a member never reads (no per-recipient await)
    server = await make_server(limits={"send_queue_bytes": 8 * 2**20})
    sender = await RawConnection.open("127.0.0.1", server.port)
    await sender.login("sender")
    stuck = await RawConnection.open("127.0.0.1", server.port, rcvbuf=4096)
    await stuck.login("stuck")
    for conn in (sender, stuck):
        await conn.join("lobby")
    stuck.pause_reading()
    for i in range(200):
        await sender.send({"type": "say", "room": "lobby", "text": "y" * 1000, "cid": f"s{i}"})
    await sender.expect("message", lambda h: h.get("cid") == "s199", timeout=15)
    assert await asyncio.wait_for(sender.request({"type": "ping", "t": 1}, "pong"), 5)
    for conn in (sender, stuck):
        await conn.close()
