"""`whois` over the raw wire (docs/protocol.md 3.13): online nicks, held ones, unknown ones; and the library's call."""

from __future__ import annotations

import time

import pytest
from conftest import ConnectFactory, ServerFactory
from rawwire import new_cid

from chat.client import ServerError
from chat.client import connect as library_connect

pytestmark = pytest.mark.asyncio


async def test_an_online_nick_shows_its_rooms_in_join_order_away_idle_and_connection_time(
    connect: ConnectFactory,
) -> None:
    alice, bob = await connect("alice"), await connect("Bob")
    await bob.join("Lobby")
    await bob.join("ops")
    await bob.request({"type": "away", "text": "lunch"}, "away")
    await bob.say("hi", room="ops")
    reply = await alice.request({"type": "whois", "nick": "BOB"}, "whois")
    now_ms = time.time() * 1000
    assert (reply["nick"], reply["online"], reply["rooms"], reply["away"]) == ("Bob", True, ["Lobby", "ops"], "lunch")
    assert 0 <= reply["idle"] < 30, "seconds since bob's last say"
    assert now_ms - 60_000 < reply["connected"] <= now_ms + 1_000
    assert "seen" not in reply


async def test_an_online_nick_not_away_and_in_no_room_has_null_away_and_no_rooms(connect: ConnectFactory) -> None:
    alice = await connect("alice")
    await connect("carol")
    reply = await alice.request({"type": "whois", "nick": "carol"}, "whois")
    assert (reply["online"], reply["rooms"], reply["away"]) == (True, [], None)


async def test_a_held_nick_of_an_offline_identity_shows_when_it_was_last_used(make_server: ServerFactory) -> None:
    server = await make_server(server={"nick_hold": 3600})
    async with library_connect("127.0.0.1", server.port, nick="dave", udp=False):
        pass
    left_ms = time.time() * 1000
    async with library_connect("127.0.0.1", server.port, nick="alice", udp=False) as alice:
        info = await alice.whois("Dave")
    assert (info.nick, info.online) == ("dave", False)
    assert isinstance(info.seen, int) and left_ms - 60_000 < info.seen <= left_ms + 1_000


async def test_a_nick_nobody_ever_had_is_no_such_nick_and_a_bad_one_bad_nick(connect: ConnectFactory) -> None:
    alice = await connect("alice")
    for nick, code in (("nobody", "no_such_nick"), ("not a nick", "bad_nick")):
        ref = new_cid()
        await alice.send({"type": "whois", "nick": nick, "ref": ref})
        reply = await alice.expect_ref(ref)
        assert (reply["type"], reply["code"]) == ("error", code)
    assert (await alice.request({"type": "whois", "nick": "alice"}, "whois"))["online"] is True, "still served"


async def test_the_library_raises_server_error_for_an_unknown_nick(make_server: ServerFactory) -> None:
    server = await make_server()
    async with library_connect("127.0.0.1", server.port, nick="alice", udp=False) as alice:
        with pytest.raises(ServerError) as refused:
            await alice.whois("ghost")
    assert refused.value.code == "no_such_nick"
