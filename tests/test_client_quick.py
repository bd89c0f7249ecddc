"""Quick messages through the client library against a real server: UDP path, TCP fallback, refusals, resume."""

from __future__ import annotations

import asyncio
import socket

import pytest

from chat.client import Client, ServerError, UdpTimings, connect
from chat.client.events import Typing
from chat.protocol.messages import QuickMessage
from chat.server.app import ChatServer

pytestmark = pytest.mark.asyncio
FAST_UDP = UdpTimings().scaled(0.05)


async def next_quick(client: Client, timeout: float = 10.0) -> QuickMessage:
    async with asyncio.timeout(timeout):
        while True:
            event = await client.recv()
            if isinstance(event, QuickMessage):
                return event


async def no_more_quick(client: Client, probe: Client) -> None:
    """A say from `probe` reaches `client` after anything sent before it: no quick message came in between."""
    await client.join("probe-room")
    await probe.join("probe-room")
    marker = await probe.say("marker", room="probe-room")
    async with asyncio.timeout(10):
        while True:
            event = await client.recv()
            assert not isinstance(event, QuickMessage), f"an extra quick message: {event}"
            if getattr(event, "id", None) == marker.id:
                return


async def test_quick_goes_by_udp_and_arrives_once(server: ChatServer) -> None:
    async with (
        connect("127.0.0.1", server.port, nick="alice") as alice,
        connect("127.0.0.1", server.port, nick="bob") as bob,
    ):
        assert await alice.wait_udp(5) and await bob.wait_udp(5)
        receipt = await alice.quick("hello 你好", to="bob", nudge=True)
        assert receipt.via == "udp"
        got = await next_quick(bob)
        assert (got.sender, got.to, got.text, got.nudge) == ("alice", "bob", "hello 你好", True)
        await no_more_quick(bob, alice)


async def test_a_client_with_udp_blocked_still_sends_and_receives_quick_messages(server: ChatServer) -> None:
    async with (
        connect("127.0.0.1", server.port, nick="alice", udp=False) as alice,
        connect("127.0.0.1", server.port, nick="bob", udp=False) as bob,
    ):
        assert alice.udp_state == "off"
        receipt = await alice.quick("over tcp", to="bob")
        assert receipt.via == "tcp" and receipt.qid is not None
        got = await next_quick(bob)
        assert got.qid == receipt.qid and got.text == "over tcp"
        await bob.quick("back", to="alice")
        assert (await next_quick(alice)).text == "back"


async def test_a_dead_udp_port_is_reported_blocked_and_tcp_carries_the_message(server: ChatServer) -> None:
    """Real sockets on a twentieth of the protocol's schedule: BLOCKED 0.25 s after the first HELLO, not 5 s
    (tests/test_client_udp.py checks the full schedule at its exact instants)."""
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never read: HELLOs vanish
    dead.bind(("127.0.0.1", 0))
    try:
        async with (
            connect(
                "127.0.0.1", server.port, nick="alice", udp_port=dead.getsockname()[1], udp_timings=FAST_UDP
            ) as alice,
            connect("127.0.0.1", server.port, nick="bob") as bob,
        ):
            assert not await alice.wait_udp(6)
            assert alice.udp_state == "blocked"
            receipt = await alice.quick("firewalled", to="bob")
            assert receipt.via == "tcp"
            assert (await next_quick(bob)).text == "firewalled"
    finally:
        dead.close()


async def test_long_chinese_text_goes_over_tcp_and_arrives_once(server: ChatServer) -> None:
    async with (
        connect("127.0.0.1", server.port, nick="alice") as alice,
        connect("127.0.0.1", server.port, nick="bob") as bob,
    ):
        assert await alice.wait_udp(5)
        text = "长" * 500
        receipt = await alice.quick(text, to="bob")
        assert receipt.via == "tcp"
        assert (await next_quick(bob)).text == text
        await no_more_quick(bob, alice)


async def test_a_refused_quick_raises_with_the_code_and_is_not_also_an_event(server: ChatServer) -> None:
    async with connect("127.0.0.1", server.port, nick="alice") as alice:
        gone = await connect("127.0.0.1", server.port, nick="gone")
        await gone.quit()
        assert await alice.wait_udp(5)
        with pytest.raises(ServerError) as refused:
            await alice.quick("anyone?", to="gone")
        assert refused.value.code == "nick_offline"
        with pytest.raises(ServerError) as unknown:
            await alice.quick("anyone?", to="nobody")
        assert unknown.value.code == "no_such_nick"
        assert str(unknown.value) == "no_such_nick: nobody ever had that nick", "the code once, then words"
        marker = await alice.ping()
        assert marker >= 0
        leftovers = []
        while True:
            try:
                leftovers.append(await alice.recv(timeout=0.2))
            except TimeoutError:
                break
        assert not [e for e in leftovers if getattr(e, "type", None) == "error"], leftovers


async def test_a_quick_in_flight_when_the_connection_drops_arrives_exactly_once(server: ChatServer) -> None:
    async with (
        connect("127.0.0.1", server.port, nick="alice") as alice,
        connect("127.0.0.1", server.port, nick="bob") as bob,
    ):
        assert await alice.wait_udp(5)
        sending = asyncio.create_task(alice.quick("through the cut", to="bob", cid="cut-1"))
        await asyncio.sleep(0)  # the datagram is on its way
        alice.drop_connection()
        receipt = await asyncio.wait_for(sending, 15)
        assert receipt.via in ("udp", "tcp")
        got = await next_quick(bob)
        assert got.text == "through the cut"
        await no_more_quick(bob, alice)


async def test_room_quick_reaches_the_other_members(server: ChatServer) -> None:
    async with (
        connect("127.0.0.1", server.port, nick="alice") as alice,
        connect("127.0.0.1", server.port, nick="bob") as bob,
        connect("127.0.0.1", server.port, nick="carol", udp=False) as carol,
    ):
        for client in (alice, bob, carol):
            await client.join("lobby")
        await alice.quick("room ping", room="lobby")
        for member in (bob, carol):
            got = await next_quick(member)
            assert got.room == "lobby" and got.sender == "alice"


async def test_udp_round_trip_time_is_measured(server: ChatServer) -> None:
    async with connect("127.0.0.1", server.port, nick="alice") as alice:
        assert await alice.wait_udp(5)
        rtt = await alice.udp_ping(timeout=5)
        assert rtt is not None and 0 < rtt < 1.0
        assert alice.udp_rtt is not None  # the latest measurement, kept for a status bar
        assert alice.clock_offset is not None and abs(alice.clock_offset) < 1.0


async def test_typing_reaches_a_bound_recipient(server: ChatServer) -> None:
    async with (
        connect("127.0.0.1", server.port, nick="alice") as alice,
        connect("127.0.0.1", server.port, nick="bob") as bob,
    ):
        assert await alice.wait_udp(5) and await bob.wait_udp(5)
        assert alice.typing(to="bob")
        async with asyncio.timeout(5):
            while True:
                event = await bob.recv()
                if isinstance(event, Typing):
                    break
        assert event.sender == "alice" and event.to == "bob"
        assert bob.who_is_typing() == ["alice"] and bob.who_is_typing(room="lobby") == []
