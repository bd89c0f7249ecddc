"""Presence extensions negotiated at login (docs/protocol.md 10), over the raw wire against a real server."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from conftest import ConnectFactory
from rawwire import frame

pytestmark = pytest.mark.asyncio


async def test_login_without_caps_gets_no_caps_and_unknown_caps_are_not_echoed(connect: ConnectFactory) -> None:
    plain = await connect("plain")
    assert plain.welcome is not None and "caps" not in plain.welcome
    assert "members_page" not in plain.welcome["limits"]
    asking = await connect("asking", caps=["lazy-members", "no-such-cap", "presence-batch"])
    assert asking.welcome is not None and asking.welcome["caps"] == ["lazy-members", "presence-batch"]
    assert asking.welcome["limits"]["members_page"] == 100


async def test_50_joins_of_one_turn_reach_a_batch_member_as_one_frame_and_a_plain_member_as_50_in_order(
    connect: ConnectFactory,
) -> None:
    watcher = await connect("watcher", caps=["presence-batch"])
    plain = await connect("plain")
    await watcher.join("big")
    await plain.join("big")
    await watcher.expect("presences")
    joiners = [await connect(f"j{i}") for i in range(50)]
    # One turn: every join is written to its socket (loopback delivers at once) before this coroutine yields, and
    # the server runs on this loop, so its next turn finds all 50 readable and handles them before it flushes.
    for joiner in joiners:
        joiner.writer.write(frame({"type": "join", "room": "big"}))
    await asyncio.gather(*(j.writer.drain() for j in joiners))
    await asyncio.gather(*(j.expect("joined") for j in joiners))
    batched = await watcher.first_of("presences", "presence")
    await plain.request({"type": "rooms"}, "rooms")
    await watcher.request({"type": "rooms"}, "rooms")

    assert batched["type"] == "presences", "a batch member never gets a plain presence"
    seen = [e["nick"] for e in batched["events"]]
    assert all(e["event"] == "join" and set(e) == {"nick", "event"} for e in batched["events"])
    assert sorted(seen) == sorted(f"j{i}" for i in range(50)), "the 50 joins of the turn share one frame"
    plain_joins = [await plain.first_of("presences", "presence") for _ in range(50)]
    assert all(h.keys() == {"type", "room", "nick", "event"} and h["event"] == "join" for h in plain_joins)
    assert [h["nick"] for h in plain_joins] == seen, "one presence per join, in the order of the batch"
    for member in (watcher, plain):
        await member.request({"type": "rooms"}, "rooms")  # a barrier: nothing else came before its answer
        assert not [h for h in member.inbox if h["type"] in ("presence", "presences")]


async def test_50_joins_of_one_turn_reach_a_member_without_caps_as_50_presence_frames_in_join_order(
    connect: ConnectFactory,
) -> None:
    plain = await connect("plain")
    await plain.join("big")
    joiners = [await connect(f"j{i}") for i in range(50)]
    for joiner in joiners:  # one server turn, as above
        joiner.writer.write(frame({"type": "join", "room": "big"}))
    await asyncio.gather(*(j.writer.drain() for j in joiners))
    await asyncio.gather(*(j.expect("joined") for j in joiners))
    joins = [await plain.first_of("presences", "presence") for _ in range(50)]
    assert all(h == {"type": "presence", "room": "big", "nick": h["nick"], "event": "join"} for h in joins)
    who = await plain.request({"type": "who", "room": "big"}, "members")
    assert [h["nick"] for h in joins] == [m["nick"] for m in who["members"]][1:], "one per join, in join order"


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


async def test_a_turn_of_presence_events_is_one_frame_for_the_batch_codec() -> None:
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


# docs/protocol.md 2.5, 3.2, 3.6 and 3.7: the frames of the protocol before section 10, keys in the documented order.
PRE_EXTENSION_KEYS = {
    "welcome": ["type", "nick", "session", "udp", "limits", "ref"],
    "udp": ["port", "sid", "key"],
    "limits": [
        "max_header_bytes",
        "max_payload_bytes",
        "max_text_chars",
        "send_queue_bytes",
        "messages_per_second",
        "burst",
        "idle_timeout",
        "login_timeout",
        "replay",
        "history_limit",
    ],
    "joined": ["type", "room", "members", "messages", "truncated", "ref"],
    "presence": ["type", "room", "nick", "event"],
    "members": ["type", "room", "members", "ref"],
    "member": ["nick", "away"],
}


async def test_a_client_asking_for_no_caps_sees_exactly_the_pre_extension_frames(connect: ConnectFactory) -> None:
    """Whatever caps the others asked for and whatever fields it sends itself, a client without caps gets the
    pre-extension frames key for key, in order: no caps, members_page, member_count, count, next, resumed."""
    plain = await connect()
    welcome = await plain.login("plain", ref=1)
    assert list(welcome) == PRE_EXTENSION_KEYS["welcome"]
    assert list(welcome["udp"]) == PRE_EXTENSION_KEYS["udp"]
    assert list(welcome["limits"]) == PRE_EXTENSION_KEYS["limits"]
    joined = await plain.request({"type": "join", "room": "r", "ref": 2}, "joined")
    assert list(joined) == PRE_EXTENSION_KEYS["joined"] and joined["members"] == ["plain"]
    rich = await connect("rich", caps=["presence-batch", "lazy-members"])
    await rich.join("r", resumed=True)
    presence = await plain.first_of("presence", "presences")
    assert list(presence) == PRE_EXTENSION_KEYS["presence"]
    assert presence == {"type": "presence", "room": "r", "nick": "rich", "event": "join"}
    paged = {"type": "who", "room": "r", "limit": 1, "after": "a", "ref": 4}  # ignored without lazy-members
    for who in ({"type": "who", "room": "r", "ref": 3}, paged):
        members = await plain.request(who, "members")
        assert list(members) == PRE_EXTENSION_KEYS["members"]
        assert [list(m) for m in members["members"]] == [PRE_EXTENSION_KEYS["member"]] * 2
        assert [m["nick"] for m in members["members"]] == ["plain", "rich"], "the whole list, in join order"
    await plain.request({"type": "rooms", "ref": 5}, "rooms")  # a barrier: nothing else arrived before it
    assert plain.inbox == []
