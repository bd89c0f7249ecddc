"""Presence extensions negotiated at login (PROTOCOL.md 10), over the raw wire against a real server."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from conftest import ConnectFactory

pytestmark = pytest.mark.asyncio


async def test_login_without_caps_gets_no_caps_and_unknown_caps_are_not_echoed(connect: ConnectFactory) -> None:
    plain = await connect("plain")
    assert plain.welcome is not None and "caps" not in plain.welcome
    assert "members_page" not in plain.welcome["limits"]
    asking = await connect("asking", caps=["lazy-members", "no-such-cap", "presence-batch"])
    assert asking.welcome is not None and asking.welcome["caps"] == ["lazy-members", "presence-batch"]
    assert asking.welcome["limits"]["members_page"] == 100


async def test_joins_of_one_turn_reach_a_batch_member_as_one_frame(connect: ConnectFactory) -> None:
    watcher = await connect("watcher", caps=["presence-batch"])
    plain = await connect("plain")
    await watcher.join("big")
    await plain.join("big")
    await watcher.expect("presences")
    joiners = [await connect(f"j{i}") for i in range(50)]
    # The joins are written together, so the server reads them in few turns and batches their presence.
    await asyncio.gather(*(j.send({"type": "join", "room": "big"}) for j in joiners))
    await asyncio.gather(*(j.expect("joined") for j in joiners))
    seen: list[str] = []
    frames = 0
    while len(seen) < 50:
        frame = await watcher.first_of("presences", "presence")
        assert frame["type"] == "presences", "a batch member never gets a plain presence"
        frames += 1
        seen += [e["nick"] for e in frame["events"] if e["event"] == "join"]
    assert sorted(seen) == sorted(f"j{i}" for i in range(50))
    plain_joins = [await plain.expect("presence", lambda h, n=n: h["nick"] == n) for n in seen]
    assert all(set(h) == {"type", "room", "nick", "event"} for h in plain_joins)


async def test_resumed_join_is_marked_only_for_batch_members(connect: ConnectFactory) -> None:
    batch, plain, back = await connect("batch", caps=["presence-batch"]), await connect("plain"), await connect("back")
    await batch.join("r")
    await plain.join("r")
    await back.join("r", resumed=True)
    marked = await batch.expect("presences", lambda h: h["events"][0]["nick"] == "back")
    assert marked["events"] == [{"nick": "back", "event": "join", "resumed": True}]
    unmarked = await plain.expect("presence", lambda h: h["nick"] == "back")
    assert unmarked == {"type": "presence", "room": "r", "nick": "back", "event": "join"}


async def test_lazy_members_pages_cover_every_member_once(connect: ConnectFactory) -> None:
    members = [await connect(f"m{i:03d}") for i in range(130)]
    for m in members:
        await m.join("crowd")
    lazy = await connect("lazy", caps=["lazy-members"])
    joined = await lazy.join("crowd")
    assert joined["member_count"] == 131 and len(joined["members"]) == 100
    seen: list[str] = []
    after = None
    while True:
        who = {"type": "who", "room": "crowd", "limit": 40, **({"after": after} if after else {})}
        page = await lazy.request(who, "members")
        assert page["count"] == 131
        seen += [m["nick"] for m in page["members"]]
        after = page["next"]
        if after is None:
            break
    assert sorted(seen) == seen and len(seen) == len(set(seen)) == 131
    whole = await lazy.request({"type": "who", "room": "crowd"}, "members")
    assert "count" not in whole and "next" not in whole and len(whole["members"]) == 131
    plain = members[0]
    ignored = await plain.request({"type": "who", "room": "crowd", "limit": 5}, "members")
    assert "count" not in ignored and len(ignored["members"]) == 131, "without the cap the fields are ignored"


def test_a_turn_of_presence_events_is_one_frame_for_the_batch_codec() -> None:
    """Room.flush encodes a turn once per codec; the batch codec merges its presence events, in order."""
    from chat.protocol.frames import PREFIX
    from chat.protocol.messages import Message, Presence
    from chat.server.tcp import BatchFrameCodec, FrameCodec

    events = [Presence(room="r", nick=f"n{i}", event="join", resumed=True if i == 3 else None) for i in range(50)]
    message = Message(id=1, room="r", sender="n0", text="hi", ts=0)
    batch = BatchFrameCodec().encode_batch([*events, message, events[0]])
    frames = []
    while batch:
        header_len, _ = PREFIX.unpack(batch[:8])
        frames.append(msgspec.json.decode(batch[8 : 8 + header_len]))
        batch = batch[8 + header_len :]
    assert [f["type"] for f in frames] == ["presences", "message", "presences"]
    assert [e["nick"] for e in frames[0]["events"]] == [f"n{i}" for i in range(50)]
    assert frames[0]["events"][3] == {"nick": "n3", "event": "join", "resumed": True}
    plain = FrameCodec().encode(events[3])
    assert b"resumed" not in plain, "a plain presence never carries resumed"
