"""Rooms, messages and presence between two and three real clients; every request error code of the issue."""

from __future__ import annotations

import pytest
from conftest import ConnectFactory
from rawwire import new_cid

pytestmark = pytest.mark.asyncio


async def test_three_clients_chat_in_a_room(connect: ConnectFactory) -> None:
    alice, bob, carol = [await connect(n) for n in ("alice", "bob", "carol")]
    joined = await alice.join("Lobby")
    assert joined["members"] == ["alice"] and joined["messages"] == [] and joined["truncated"] is False
    await bob.join("lobby")
    assert (await alice.expect("presence"))["nick"] == "bob"
    third = await carol.join("LOBBY")
    assert third["room"] == "Lobby", "a room keeps the spelling of the join that created it"
    assert sorted(third["members"]) == ["alice", "bob", "carol"]
    ack = await alice.say("hello, 世界", room="lobby")
    assert ack["from"] == "alice" and ack["room"] == "Lobby" and ack["text"] == "hello, 世界"
    for other in (bob, carol):
        got = await other.expect("message", lambda h: h["id"] == ack["id"])
        assert got == ack, "every member gets the same frame, the sender's cid included"


async def test_ids_increase_across_rooms_and_senders(connect: ConnectFactory) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    for conn in (alice, bob):
        await conn.join("one")
        await conn.join("two")
    ids = []
    for i in range(10):
        sender = alice if i % 2 else bob
        ids.append((await sender.say(f"m{i}", room="one" if i % 3 else "two"))["id"])
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_private_message_reaches_only_its_two_ends(connect: ConnectFactory) -> None:
    alice, bob, carol = [await connect(n) for n in ("alice", "bob", "carol")]
    for conn in (alice, bob, carol):
        await conn.join("lobby")
    ack = await alice.say("psst", to="BOB")
    assert ack["to"] == "bob" and "room" not in ack
    assert (await bob.expect("message", lambda h: h["id"] == ack["id"]))["text"] == "psst"
    marker = await alice.say("marker", room="lobby")
    await carol.expect("message", lambda h: h["id"] == marker["id"])
    assert not [h for h in carol.inbox if h.get("text") == "psst"]


async def test_same_cid_twice_gives_one_message(connect: ConnectFactory) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    await alice.join("lobby")
    await bob.join("lobby")
    first = await alice.say("once", room="lobby", cid="fixed")
    again = await alice.say("once", room="lobby", cid="fixed")
    assert again == first
    marker = await alice.say("marker", room="lobby")
    await bob.expect("message", lambda h: h["id"] == marker["id"])
    copies = [h for h in bob.inbox if h.get("cid") == "fixed"]
    assert len(copies) == 1


async def test_part_quit_nick_and_away_presence(connect: ConnectFactory) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    await alice.join("lobby")
    await bob.join("lobby")
    await alice.expect("presence", lambda h: h["event"] == "join")
    away = await bob.request({"type": "away", "text": "lunch"}, "away")
    assert away["text"] == "lunch"
    presence = await alice.expect("presence", lambda h: h["event"] == "away")
    assert presence["nick"] == "bob" and presence["text"] == "lunch"
    members = await alice.request({"type": "who", "room": "lobby"}, "members")
    assert {m["nick"]: m["away"] for m in members["members"]} == {"alice": None, "bob": "lunch"}
    back = await bob.request({"type": "away", "text": None}, "away")
    assert back["text"] is None
    renamed = await bob.request({"type": "nick", "nick": "robert"}, "nick")
    assert renamed["nick"] == "robert" and renamed["old"] == "bob"
    presence = await alice.expect("presence", lambda h: h["event"] == "nick")
    assert presence["nick"] == "robert" and presence["old"] == "bob"
    parted = await bob.request({"type": "part", "room": "lobby"}, "parted")
    assert parted["room"] == "lobby"
    assert (await alice.expect("presence", lambda h: h["event"] == "part"))["nick"] == "robert"
    await bob.join("lobby")
    await bob.send({"type": "quit", "reason": "bye"})
    await bob.wait_closed()
    assert (await alice.expect("presence", lambda h: h["event"] == "quit"))["nick"] == "robert"


async def test_rooms_lists_rooms_with_members(connect: ConnectFactory) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    await alice.join("beta")
    await bob.join("alpha")
    await bob.join("beta")
    listing = await alice.request({"type": "rooms"}, "rooms")
    assert listing["rooms"] == [{"room": "alpha", "members": 1}, {"room": "beta", "members": 2}]
    await bob.request({"type": "part", "room": "alpha"}, "parted")
    listing = await alice.request({"type": "rooms"}, "rooms")
    assert [r["room"] for r in listing["rooms"]] == ["beta"]


async def test_changing_to_another_spelling_of_ones_own_nick_is_allowed(connect: ConnectFactory) -> None:
    alice = await connect("alice")
    renamed = await alice.request({"type": "nick", "nick": "Alice"}, "nick")
    assert renamed["nick"] == "Alice"


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        ({"type": "say", "room": "lobby", "text": "", "cid": "c1"}, "bad_text"),
        ({"type": "say", "room": "lobby", "text": "x" * 4001}, "bad_text"),
        ({"type": "say", "room": "lobby", "text": "esc \x1b[31m red"}, "bad_text"),
        ({"type": "say", "room": "lobby", "text": "c1 \x85 control"}, "bad_text"),
        ({"type": "say", "room": "nowhere", "text": "hi"}, "no_such_room"),
        ({"type": "say", "room": "busy", "text": "hi"}, "not_in_room"),
        ({"type": "say", "to": "ghost", "text": "hi"}, "no_such_nick"),
        ({"type": "say", "text": "hi"}, "bad_request"),
        ({"type": "say", "room": "lobby", "to": "bob", "text": "hi"}, "bad_request"),
        ({"type": "say", "room": "lobby", "text": "hi", "cid": "x" * 65}, "bad_request"),
        ({"type": "join", "room": "bad room"}, "bad_room"),
        ({"type": "join", "room": 7}, "bad_request"),
        ({"type": "part", "room": "nowhere"}, "no_such_room"),
        ({"type": "part", "room": "busy"}, "not_in_room"),
        ({"type": "who", "room": "nowhere"}, "no_such_room"),
        ({"type": "nick", "nick": "owner"}, "nick_taken"),
        ({"type": "nick", "nick": "no way"}, "bad_nick"),
        ({"type": "away", "text": "\x07"}, "bad_text"),
        ({"type": "history", "room": "lobby", "to": "owner"}, "bad_request"),
        ({"type": "history", "to": "ghost"}, "no_such_nick"),
        ({"type": "history", "room": "lobby", "limit": 0}, "bad_request"),
        ({"type": "join", "room": "lobby", "since": 2**63}, "bad_request"),
        ({"type": "frobnicate"}, "unknown_type"),
    ],
)
async def test_request_errors_answer_with_code_and_ref_and_keep_the_connection(
    connect: ConnectFactory, request_: dict[str, object], code: str
) -> None:
    owner = await connect("owner")
    await owner.join("busy")
    conn = await connect("tester")
    await conn.join("lobby")
    ref = new_cid()
    await conn.send({**request_, "ref": ref})
    reply = await conn.expect_ref(ref)
    assert reply["type"] == "error" and reply["code"] == code, reply
    assert reply["message"]
    await conn.request({"type": "ping", "t": 1}, "pong")


async def test_a_payload_on_a_frame_that_takes_none_is_bad_request(connect: ConnectFactory) -> None:
    conn = await connect("tester")
    await conn.send({"type": "ping", "t": 1, "ref": 9}, b"surprise")
    assert (await conn.expect_ref(9))["code"] == "bad_request"
    await conn.request({"type": "ping", "t": 2}, "pong")


@pytest.mark.parametrize("raw", [b"not json", b"[1,2]", b'{"no":"type"}', b'{"type":"ping","t":NaN}', b"\xff\xfe"])
async def test_malformed_headers_are_bad_request_and_keep_the_connection(connect: ConnectFactory, raw: bytes) -> None:
    conn = await connect("tester")
    await conn.send(raw)
    await conn.error("bad_request")
    await conn.request({"type": "ping", "t": 1}, "pong")
