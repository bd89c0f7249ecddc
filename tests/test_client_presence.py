"""The client library and the presence extensions (docs/protocol.md 10): resumed rejoins, away restored, paged who."""

from __future__ import annotations

import asyncio

import pytest

from chat.client import ConnectionState
from chat.testing.client import ClientFactory
from chat.testing.servers import ServerFactory

pytestmark = pytest.mark.asyncio


async def test_after_a_restart_rejoins_are_resumed_and_away_is_restored(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice", join="lobby")
    bob = await chat_client(server, "bob", join="lobby")
    await bob.away("lunch")
    await server.restart()
    await alice.expect("connection", state=ConnectionState.CONNECTED, timeout=10)
    await bob.expect("connection", state=ConnectionState.CONNECTED, timeout=10)
    # The library marks its rejoins, and a presence-batch client (the library's default) sees the mark. Whichever
    # of the two rejoined second caused a presence to the other: wait for that one.
    first = [
        asyncio.ensure_future(alice.expect("presence", lambda p: p.resumed is True, nick="bob", timeout=10)),
        asyncio.ensure_future(bob.expect("presence", lambda p: p.resumed is True, nick="alice", timeout=10)),
    ]
    done, pending = await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    assert all(task.exception() is None for task in done)
    # bob's requests wait for its resume, which sets away before it is done
    members = {m.nick: m.away for m in (await bob.who("lobby")).members}
    assert members == {"alice": None, "bob": "lunch"}, "away is set again after the resume"


async def test_paged_who_and_member_count(chat_server: ServerFactory, chat_client: ClientFactory) -> None:
    server = await chat_server()
    clients = [await chat_client(server, f"n{i}", join="r") for i in range(5)]
    joined = await clients[0].join("r")
    assert joined.member_count == 5
    page = await clients[0].who("r", limit=2)
    assert [m.nick for m in page.members] == ["n0", "n1"] and page.count == 5 and page.next == "n1"
    last = await clients[0].who("r", after="n3", limit=2)
    assert [m.nick for m in last.members] == ["n4"] and last.next is None
