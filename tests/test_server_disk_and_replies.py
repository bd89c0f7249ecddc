"""Over real sockets on 127.0.0.1: the disk a host can fill is bounded (stored bytes per identity, retention on by
default) and every list reply stays under the 1 MiB frame limit (docs/security.md). The raw connection reads with
the protocol's 1 MiB header limit, so a reply over it fails the test by itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from conftest import ServerFactory
from rawwire import RawConnection

from chat.client import Client
from chat.protocol.names import fold
from chat.store.history import Draft, HistoryStore, now_ms

pytestmark = pytest.mark.asyncio
DAY_MS = 86_400_000
ClientFactory = Callable[..., Awaitable[Client]]


async def test_retention_is_on_by_default_and_deletes_what_is_older_than_90_days(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    store = HistoryStore(tmp_path / "chat.db")  # the database the server opens (tests/conftest.py)
    now = now_ms()
    store.append_batch(
        [
            Draft(ts=ts, sender_identity=1, sender="ghost", sender_key="ghost", text=text, cid=None,
                  room="lobby", room_key="lobby")
            for ts, text in ((now - 91 * DAY_MS, "a season ago"), (now - 89 * DAY_MS, "within the season"))
        ]
    )  # fmt: skip
    store.close()
    server = await make_server()
    assert server.config.history.retention_days == 90
    conn = await RawConnection.open("127.0.0.1", server.port)
    await conn.login("reader")
    page = await conn.request({"type": "history", "room": "lobby"}, "history")
    assert [m["text"] for m in page["messages"]] == ["within the season"]
    assert await server.prune_history(now + 91 * DAY_MS) == 1, "a later sweep, as of 91 days on"
    page = await conn.request({"type": "history", "room": "lobby"}, "history")
    assert page["messages"] == []
    await conn.close()


async def test_a_flood_of_long_messages_stops_at_the_identity_budget_and_a_neighbour_still_chats(
    make_server: ServerFactory,
) -> None:
    server = await make_server(limits={"stored_bytes_per_hour_per_identity": 100_000})
    flooder = await RawConnection.open("127.0.0.1", server.port)
    await flooder.login("flooder")
    await flooder.join("lobby")
    stored = 0
    for number in range(10):  # 16,100 bytes each: 6 fit in 100,000
        await flooder.send({"type": "say", "room": "lobby", "text": "😀" * 4000, "cid": f"f-{number}", "ref": number})
    for _ in range(10):
        answer = await flooder.first_of("message", "error")
        if answer["type"] == "message":
            stored += 1
        else:
            assert answer["code"] == "storage_rate_limited", answer
    assert stored == 6
    neighbour = await RawConnection.open("127.0.0.1", server.port)
    await neighbour.login("neighbour")
    await neighbour.join("lobby")
    assert (await neighbour.say("still here", room="lobby"))["text"] == "still here"
    page = await neighbour.request({"type": "history", "room": "lobby", "limit": 100}, "history")
    assert len(page["messages"]) == 7, "nothing refused was stored"
    for conn in (flooder, neighbour):
        await conn.close()


async def test_history_of_a_hundred_long_messages_comes_under_the_frame_limit_and_truncated(
    make_server: ServerFactory,
) -> None:
    server = await make_server()
    conn = await RawConnection.open("127.0.0.1", server.port)
    await conn.login("writer")
    await conn.join("lobby")
    for number in range(100):
        await conn.send({"type": "say", "room": "lobby", "text": "😀" * 4000, "cid": f"w-{number}"})
    for _ in range(100):
        await conn.expect("message")
    page = await conn.request({"type": "history", "room": "lobby", "limit": 100}, "history")
    assert page["truncated"] is True and 55 <= len(page["messages"]) < 100
    ids = [m["id"] for m in page["messages"]]
    assert ids == sorted(ids)
    older = await conn.request({"type": "history", "room": "lobby", "before": ids[0], "limit": 100}, "history")
    assert len(older["messages"]) == 100 - len(ids), "paging back reaches the rest"
    await conn.close()


async def test_the_client_library_gets_all_of_twenty_thousand_rooms_through_pages(
    make_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await make_server()
    owner = await RawConnection.open("127.0.0.1", server.port)
    await owner.login("owner")
    # 20,000 rooms held by one member (joined in the core directly: 20,000 joins over the wire would only add time)
    session = next(s for s in server.connections if s.nick == "owner")
    names = [f"{number:05d}" + "r" * 27 for number in range(20_000)]  # 32 characters: 1.1 MB of `rooms` in all
    for name in names:
        session.rooms[fold(name)] = server.service.rooms.add_member(name, fold(name), session)
    sizes: list[int] = []
    asker = await RawConnection.open("127.0.0.1", server.port)
    await asker.login("asker")
    after = None
    while True:  # on the wire: every page under 1 MiB (the raw reader refuses more), `next` until the last
        page = await asker.request({"type": "rooms", **({"after": after} if after else {})}, "rooms")
        sizes.append(len(page["rooms"]))
        after = page.get("next")
        if after is None:
            break
    assert len(sizes) >= 2 and sum(sizes) == 20_000
    client = await chat_client(server, "library")
    listed = await client.rooms()
    assert [info.room for info in listed.rooms] == sorted(names, key=fold)
    for conn in (owner, asker):
        await conn.close()
