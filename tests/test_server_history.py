"""Stored history over real sockets: replay on join, paging, private messages per identity, restarts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import ConnectFactory, ServerFactory
from rawwire import RawConnection

from chat.server.app import ChatServer

pytestmark = pytest.mark.asyncio


async def _fill(conn: RawConnection, room: str, count: int) -> list[int]:
    return [(await conn.say(f"n{i}", room=room))["id"] for i in range(count)]


async def test_join_replays_latest_then_since_replays_the_oldest_missed(
    make_server: ServerFactory, connect: ConnectFactory
) -> None:
    server = await make_server(history={"replay": 5})
    alice = await connect("alice", to=server)
    await alice.join("lobby")
    ids = await _fill(alice, "lobby", 12)
    bob = await connect("bob", to=server)
    latest = await bob.join("lobby")
    assert [m["id"] for m in latest["messages"]] == ids[-5:] and latest["truncated"] is True
    carol = await connect("carol", to=server)
    missed = await carol.join("lobby", since=ids[2])
    assert [m["id"] for m in missed["messages"]] == ids[3:8] and missed["truncated"] is True
    rest = await carol.request({"type": "history", "room": "lobby", "after": ids[7], "limit": 100}, "history")
    assert [m["id"] for m in rest["messages"]] == ids[8:] and rest["truncated"] is False


async def test_history_pages_before_after_and_between(connect: ConnectFactory) -> None:
    alice = await connect("alice")
    await alice.join("lobby")
    ids = await _fill(alice, "lobby", 10)

    async def page(**query: int) -> tuple[list[int], bool]:
        reply = await alice.request({"type": "history", "room": "lobby", **query}, "history")
        assert reply["room"] == "lobby"
        return [m["id"] for m in reply["messages"]], reply["truncated"]

    assert await page(limit=3) == (ids[-3:], True)
    assert await page(before=ids[5], limit=3) == (ids[2:5], True)
    assert await page(before=ids[2], limit=3) == (ids[:2], False)
    assert await page(after=ids[5], limit=3) == (ids[6:9], True)
    assert await page(after=ids[6], limit=3) == (ids[7:], False)
    assert await page(after=ids[1], before=ids[6], limit=3) == (ids[2:5], True)
    assert await page(after=ids[1], before=ids[6], limit=10) == (ids[2:6], False)
    assert await page(after=ids[-1]) == ([], False)


async def test_private_message_to_an_offline_nick_waits_for_its_owner(connect: ConnectFactory) -> None:
    bob = await connect("bob")
    token = bob.welcome["session"] if bob.welcome else ""
    await bob.send({"type": "quit"})
    await bob.wait_closed()
    alice = await connect("alice")
    ack = await alice.say("while you were out", to="bob")
    back = await connect()
    await back.login("bob", session=token, since=0)
    page = await back.expect("history", lambda h: h.get("private") is True)
    assert [m["id"] for m in page["messages"]] == [ack["id"]] and page["truncated"] is False
    conversation = await back.request({"type": "history", "to": "alice"}, "history")
    assert [m["text"] for m in conversation["messages"]] == ["while you were out"]


async def test_a_newcomer_on_a_freed_nick_never_reads_the_old_owners_messages(connect: ConnectFactory) -> None:
    first = await connect("bob")
    alice = await connect("alice")
    await alice.say("for the first bob", to="bob")
    await first.expect("message")
    await first.send({"type": "quit"})
    await first.wait_closed()
    newcomer = await connect()
    welcome = await newcomer.login("bob", since=0)  # nick_hold is 0 in tests: the nick is free
    assert welcome["type"] == "welcome"
    page = await newcomer.expect("history", lambda h: h.get("private") is True)
    assert page["messages"] == []
    mine = await newcomer.request({"type": "history", "private": True}, "history")
    assert mine["messages"] == []
    ack = await alice.say("for the new bob", to="bob")
    assert (await newcomer.expect("message"))["id"] == ack["id"]


async def test_restart_keeps_ids_identities_cids_and_private_messages(make_server: ServerFactory) -> None:
    server = await make_server()
    alice = await RawConnection.open("127.0.0.1", server.port)
    alice_token = (await alice.login("alice"))["session"]
    bob = await RawConnection.open("127.0.0.1", server.port)
    bob_token = (await bob.login("bob"))["session"]
    await alice.join("lobby")
    before = await alice.say("before restart", room="lobby", cid="keep-me")
    private = await alice.say("secret", to="bob")
    await server.restart()
    await alice.error("server_shutdown")
    await bob.error("server_shutdown")
    for conn in (alice, bob):
        await conn.close()

    alice = await RawConnection.open("127.0.0.1", server.port)
    assert (await alice.login("alice", session=alice_token))["session"] == alice_token
    await alice.join("lobby")
    again = await alice.say("before restart", room="lobby", cid="keep-me")
    assert again["id"] == before["id"], "a cid is remembered across a restart"
    after = await alice.say("after restart", room="lobby")
    assert after["id"] > private["id"] > before["id"]
    bob = await RawConnection.open("127.0.0.1", server.port)
    await bob.login("bob", session=bob_token, since=0)
    page = await bob.expect("history", lambda h: h.get("private") is True)
    assert [m["text"] for m in page["messages"]] == ["secret"]
    for conn in (alice, bob):
        await conn.close()


async def test_join_then_live_messages_neither_repeat_nor_skip(server: ChatServer, connect: ConnectFactory) -> None:
    writer = await connect("writer")
    await writer.join("lobby")
    first = await _fill(writer, "lobby", 3)
    # queue says and a join in the same burst: each message must land in joined.messages or live, exactly once
    for i in range(20):
        await writer.send({"type": "say", "room": "lobby", "text": f"burst {i}", "cid": f"b{i}"})
    reader = await connect("reader")
    joined = await reader.join("lobby", since=first[-1])
    last = await writer.expect("message", lambda h: h.get("cid") == "b19")
    if joined["messages"] and joined["messages"][-1]["id"] == last["id"]:
        seen = [m["id"] for m in joined["messages"]]
    else:
        await reader.expect("message", lambda h: h["id"] == last["id"])
        live = [m["id"] for m in reader.inbox if m.get("type") == "message"] + [last["id"]]
        seen = [m["id"] for m in joined["messages"]] + live
    assert seen == sorted(set(seen)) and len(seen) == 20, seen


async def test_a_private_message_to_a_nick_its_identity_left_is_delivered_live(connect: ConnectFactory) -> None:
    bob = await connect("bob")
    await bob.request({"type": "nick", "nick": "bobby"}, "nick")
    alice = await connect("alice")
    to_old = await alice.say("to the old nick", to="bob")
    to_new = await alice.say("to the new nick", to="bobby")
    got = [await bob.expect("message", lambda h, i=i: h["id"] == i) for i in (to_old["id"], to_new["id"])]
    assert [m["to"] for m in got] == ["bob", "bobby"], "both reach the identity, in id order, so resume loses none"


async def test_history_with_a_nick_echoes_its_owners_spelling(connect: ConnectFactory) -> None:
    await connect("Bob")
    alice = await connect("alice")
    await alice.say("hi", to="BOB")
    page = await alice.request({"type": "history", "to": "bOB"}, "history")
    assert page["to"] == "Bob" and [m["to"] for m in page["messages"]] == ["Bob"]


async def test_a_message_stored_while_a_join_reads_its_page_arrives_exactly_once(
    server: ChatServer, connect: ConnectFactory
) -> None:
    # Force the interleaving the join watermark exists for: the joiner's history read is held open while another
    # member's message is stored and fanned out. Reading the page without the watermark bound would return that
    # message (it is committed by then), and the joiner, already a member, would get it live too.
    writer = await connect("writer")
    await writer.join("lobby")
    before = (await writer.say("before the join", room="lobby"))["id"]
    store = server.service.store
    real_page = store.page
    reading, release = asyncio.Event(), asyncio.Event()

    async def held_page(*args: Any, **kwargs: Any) -> Any:
        reading.set()
        await release.wait()
        return await real_page(*args, **kwargs)

    store.page = held_page  # type: ignore[method-assign]
    reader = await connect("reader")
    await reader.send({"type": "join", "room": "lobby", "ref": "j"})
    await asyncio.wait_for(reading.wait(), 5)
    during = (await writer.say("while the page is read", room="lobby"))["id"]
    release.set()
    joined = await reader.expect_ref("j")
    assert [m["id"] for m in joined["messages"]] == [before]
    # after `joined`, in order: the held message, then a later one; nothing else (`expect` takes the first match
    # in arrival order, so a duplicate of `during` anywhere before `after` is left over and caught below)
    assert (await reader.expect("message"))["id"] == during
    after = (await writer.say("after the join", room="lobby"))["id"]
    assert (await reader.expect("message"))["id"] == after
    assert [h for h in reader.inbox if h.get("type") == "message"] == []
