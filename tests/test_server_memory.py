"""Memory and decode work before trust (docs/security.md): small frames until `welcome`, a server-wide pool for big
frames while they arrive, and large headers paid for before they are decoded. Each attack runs beside a legitimate
client, which keeps chatting."""

from __future__ import annotations

import contextlib

import pytest
from conftest import ConnectFactory, ServerFactory
from rawwire import RawConnection, frame
from test_server_limits import rss_bytes

from chat.protocol.frames import PREFIX

pytestmark = pytest.mark.asyncio
MIB = 2**20


async def chat_round(conn: RawConnection, text: str) -> None:
    """One message of a logged-in member of `lobby`, acknowledged."""
    await conn.send({"type": "say", "room": "lobby", "text": text, "cid": text})
    await conn.expect("message", lambda h: h.get("cid") == text)


async def test_a_large_frame_before_login_is_refused_at_its_prefix(connect: ConnectFactory) -> None:
    member = await connect("member")
    await member.join("lobby")
    for header_len, payload_len in ((MIB - 1, 0), (4097, 0), (100, 1), (100, MIB - 1)):
        conn = await connect()
        await conn.greeting()
        await conn.send_raw(PREFIX.pack(header_len, payload_len) + b"{" * 1000)
        error = await conn.error("frame_too_large")
        assert "before login" in error["message"]
        await chat_round(member, f"after {header_len}/{payload_len}")


async def test_a_login_fits_the_limits_before_welcome_and_the_full_limits_apply_after(connect: ConnectFactory) -> None:
    conn = await connect("somebody", caps=["presence-batch", "lazy-members"], ref="r" * 1000)
    await conn.request({"type": "ping", "t": "x" * 60_000}, "pong")  # 60 KB header: fine once logged in


async def test_many_connections_holding_large_partial_frames_stay_within_the_pool(
    make_server: ServerFactory,
) -> None:
    """The attack of issue 18 scaled down: logged-in connections each start a 1 MiB frame and stop one byte short.
    The server reserves at most `max_buffered_bytes` for them; the rest are refused with `server_busy` at once."""
    server = await make_server(limits={"max_buffered_bytes": 4 * MIB})
    member = await RawConnection.open("127.0.0.1", server.port)
    await member.login("member")
    await member.join("lobby")
    attackers = [await RawConnection.open("127.0.0.1", server.port) for _ in range(6)]
    size = MIB - 1  # header and payload together
    header = frame({"type": "file_chunk", "fid": "0" * 32, "offset": 0})[8:]
    start = PREFIX.pack(len(header), size - len(header)) + header
    for index, conn in enumerate(attackers):
        await conn.login(f"attacker{index}")
        with contextlib.suppress(ConnectionError):
            await conn.send_raw(start + b"\0" * (size - 1 - len(header)))
        if index >= 4:  # 4 x (1 MiB - 1) fill the 4 MiB pool: every later one is refused at its prefix
            error = await conn.error("server_busy")
            assert "does not fit" in error["message"]
            assert server.read_pool.in_use == 4 * size, "refused because the four held frames fill the pool"
        await chat_round(member, f"beside attacker {index}")
    assert server.read_pool.peak == 4 * size <= 4 * MIB and server.read_pool.refused == 2
    for conn in [*attackers, member]:
        await conn.close()


async def test_a_large_header_over_the_rate_is_refused_before_it_is_decoded(make_server: ServerFactory) -> None:
    """64 KiB of small integers cost about 12 ms to decode: such a header spends one token per KiB (62) first, and
    with fewer left it is answered `rate_limited` undecoded (no `ref`): one token no longer buys 12 ms."""
    server = await make_server(limits={"burst": 100, "messages_per_second": 1})
    attacker = await RawConnection.open("127.0.0.1", server.port)
    await attacker.login("attacker")
    body = b'{"type":"ping","ref":"r","t":[' + b",".join(b"1" for _ in range(32_000)) + b"]}"
    assert 62 * 1024 <= len(body) < 63 * 1024  # 62 tokens
    await attacker.send(body)
    assert (await attacker.expect("pong"))["ref"] == "r", "the first one is paid for: 62 of 100 tokens"
    await attacker.send(body)
    error = await attacker.error("rate_limited")
    assert "ref" not in error and "tokens" in error["message"]
    assert (await attacker.request({"type": "ping", "t": 1}, "pong"))["t"] == 1, "small ones still pass"


async def test_partial_frames_before_login_leave_a_server_process_rss_flat(chat_server_process) -> None:
    """900 connections with a 1 MiB frame minus a byte took 1 GiB before; now each is refused at its prefix, and
    what a connection may buffer before login (a 4 KiB frame) is what stays."""
    server_process = await chat_server_process()
    member = await RawConnection.open("127.0.0.1", server_process.port)
    await member.login("member")
    await member.join("lobby")
    baseline = rss_bytes(server_process.pid)
    conns = []
    for _ in range(200):
        conn = await RawConnection.open("127.0.0.1", server_process.port)
        conns.append(conn)
        await conn.greeting()
        with contextlib.suppress(ConnectionError):
            await conn.send_raw(PREFIX.pack(4096, 0) + b"{" * 4095)  # the largest frame allowed, a byte short
    await chat_round(member, "beside 200 partial frames")
    grown = rss_bytes(server_process.pid) - baseline
    assert grown < 16 * MIB, f"{grown / MIB:.1f} MiB for 200 partial login frames"
    for conn in conns:
        await conn.close()
    await member.close()
