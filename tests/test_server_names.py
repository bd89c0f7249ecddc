"""Names people can trust, over real sockets (issue 18, the lookalike row; docs/protocol.md 8, Lookalikes).

Each attack of the row is tried against a server on 127.0.0.1 while a legitimate pair, alice and bob, keeps
chatting in `lobby`; every lookalike is written with escapes so that the test reads what it sends.
"""

from __future__ import annotations

import time

import pytest
from conftest import ConnectFactory, ServerFactory
from rawwire import Header, RawConnection, new_cid

pytestmark = pytest.mark.asyncio

CYRILLIC_A = "\u0430"
CYRILLIC_O = "\u043e"
CYRILLIC_POPE = "\u0440\u043e\u0440\u0435"  # all Cyrillic: one script, drawn like the Latin "pope"
LOOKALIKE_NICKS = [
    pytest.param(f"{CYRILLIC_A}lice", "bad_nick", id="cyrillic-a-in-latin-is-a-mixed-script"),
    pytest.param("a\u034flice", "bad_nick", id="combining-grapheme-joiner"),
    pytest.param("alice\ufe0f", "bad_nick", id="variation-selector-16"),
    pytest.param("alice\u180b", "bad_nick", id="mongolian-free-variation-selector"),
    pytest.param("\u3164", "bad_nick", id="only-a-hangul-filler"),
    pytest.param("alice\u3164", "bad_nick", id="trailing-hangul-filler"),
    pytest.param("\uff41\uff4c\uff49\uff43\uff45", "bad_nick", id="fullwidth"),
    pytest.param("\u1d00\u029f\u026a\u1d04\u1d07", "bad_nick", id="small-capitals"),
]


async def _ask(conn: RawConnection, header: Header) -> Header:
    """Send with a fresh ref; the reply carrying it, whatever its type."""
    ref = new_cid()
    await conn.send({**header, "ref": ref})
    return await conn.expect_ref(ref)


async def _chat_pair(connect: ConnectFactory) -> tuple[RawConnection, RawConnection]:
    alice, bob = await connect("alice"), await connect("bob")
    await alice.join("lobby")
    await bob.join("lobby")
    await alice.expect("presence", lambda p: p["nick"] == "bob" and p["event"] == "join")
    return alice, bob


async def _still_chatting(alice: RawConnection, bob: RawConnection, text: str) -> float:
    """Alice says `text` in lobby; the seconds until bob has it."""
    started = time.monotonic()
    await alice.say(text, room="lobby")
    await bob.expect("message", lambda m: m["text"] == text and m["from"] == "alice")
    return time.monotonic() - started


@pytest.mark.parametrize(("nick", "code"), LOOKALIKE_NICKS)
async def test_a_lookalike_of_a_held_nick_is_refused_at_login(connect: ConnectFactory, nick: str, code: str) -> None:
    alice, bob = await _chat_pair(connect)
    impostor = await connect()
    answer = await impostor.login(nick)
    assert answer["type"] == "error" and answer["code"] == code, answer
    await impostor.wait_closed()
    assert await _still_chatting(alice, bob, "still here") < 2.0


@pytest.mark.parametrize(("nick", "code"), LOOKALIKE_NICKS)
async def test_a_lookalike_of_a_held_nick_is_refused_at_nick_change(
    connect: ConnectFactory, nick: str, code: str
) -> None:
    alice, bob = await _chat_pair(connect)
    mallory = await connect("mallory")
    answer = await _ask(mallory, {"type": "nick", "nick": nick})
    assert answer["type"] == "error" and answer["code"] == code, answer
    assert (await mallory.request({"type": "nick", "nick": "mallory2"}, "nick"))["nick"] == "mallory2"
    assert await _still_chatting(alice, bob, "still here") < 2.0


async def test_a_whole_script_lookalike_of_a_held_nick_is_taken(connect: ConnectFactory) -> None:
    alice, bob = await _chat_pair(connect)
    await connect("pope")
    impostor = await connect()
    answer = await impostor.login(CYRILLIC_POPE)
    assert answer["code"] == "nick_taken" and "looks like 'pope'" in answer["message"], answer
    await impostor.wait_closed()
    other = await connect()
    assert (await other.login(CYRILLIC_POPE + "_"))["type"] == "welcome", "a Cyrillic nick like no held one is fine"
    assert await _still_chatting(alice, bob, "still here") < 2.0


async def test_the_refusal_names_the_invisible_character(connect: ConnectFactory) -> None:
    impostor = await connect()
    answer = await impostor.login("a\u034flice")
    assert answer["code"] == "bad_nick" and "U+034F" in answer["message"], answer


async def test_a_lookalike_of_a_nick_held_after_its_owner_left_is_refused(make_server: ServerFactory) -> None:
    server = await make_server(server={"nick_hold": 3600})
    owner = await RawConnection.open("127.0.0.1", server.port)
    await owner.login("pope")
    await owner.send({"type": "quit"})
    await owner.wait_closed()
    impostor = await RawConnection.open("127.0.0.1", server.port)
    assert (await impostor.login(CYRILLIC_POPE))["code"] == "nick_taken"
    for conn in (owner, impostor):
        await conn.close()


async def test_a_lookalike_of_a_nick_held_before_a_restart_is_refused(make_server: ServerFactory) -> None:
    """The skeleton index is built from the store's nick table at start (LocalEngine.load)."""
    first = await make_server(server={"nick_hold": 3600})
    owner = await RawConnection.open("127.0.0.1", first.port)
    await owner.login("pope")
    await owner.close()
    await first.close()
    second = await make_server(server={"nick_hold": 3600})
    impostor = await RawConnection.open("127.0.0.1", second.port)
    assert (await impostor.login(CYRILLIC_POPE))["code"] == "nick_taken"
    await impostor.close()


async def test_a_capital_i_for_an_l_is_taken_as_the_nick_is_spelled(connect: ConnectFactory) -> None:
    """`AIice` and `Alice` fold apart but are drawn alike: their skeletons as spelled meet (docs/protocol.md 8)."""
    await connect("Alice")
    impostor = await connect()
    assert (await impostor.login("AIice"))["code"] == "nick_taken"


async def test_the_holder_may_take_a_lookalike_of_its_own_nick(connect: ConnectFactory) -> None:
    alice = await connect("alice")
    answer = await alice.request({"type": "nick", "nick": "AIice"}, "nick")
    assert answer["nick"] == "AIice"


async def test_a_room_that_looks_like_a_live_room_is_refused_and_names_it(connect: ConnectFactory) -> None:
    alice, bob = await _chat_pair(connect)
    mallory = await connect("mallory")
    answer = await _ask(mallory, {"type": "join", "room": f"l{CYRILLIC_O}bby"})
    assert answer["type"] == "error" and answer["code"] == "bad_room", answer  # a mixed script
    assert (await mallory.join("LOBBY_"))["room"] == "LOBBY_"
    answer = await _ask(mallory, {"type": "join", "room": "L0BBY_"})  # a zero for the O: one script, a lookalike
    assert answer["type"] == "error" and answer["code"] == "bad_room", answer
    assert "'LOBBY_'" in answer["message"], answer
    assert (await mallory.join("Lobby"))["room"] == "lobby", "the same name in another case is the same room"
    assert await _still_chatting(alice, bob, "still here") < 2.0


async def test_a_room_may_take_a_lookalike_name_once_the_live_room_is_gone(connect: ConnectFactory) -> None:
    alice = await connect("alice")
    await alice.join("LOBBY")
    assert (await _ask(alice, {"type": "join", "room": "L0BBY"}))["code"] == "bad_room"
    await alice.request({"type": "part", "room": "LOBBY"}, "parted")
    assert (await alice.join("L0BBY"))["room"] == "L0BBY"
