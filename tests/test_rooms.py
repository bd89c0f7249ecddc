"""Room fan-out of chat/core/rooms.py on in-memory peers: batches per turn, order, skips, the join hold."""

from __future__ import annotations

from corefakes import logged_in, peer_of

from chat.core.rooms import RoomDirectory
from chat.core.session import Session
from chat.engine.local import LocalEngine
from chat.protocol.messages import Message, Presence, ServerFrame


def _room_of(*nicks: str) -> tuple[RoomDirectory, list[Session], list[int]]:
    flushes: list[int] = []
    engine = LocalEngine(lambda: flushes.append(1))
    rooms = engine.rooms
    members = [logged_in(engine, nick, index + 1) for index, nick in enumerate(nicks)]
    for member in members:
        rooms.add_member("lobby", "lobby", member)
    rooms.flush()
    for member in members:
        peer_of(member).events.clear()
    return rooms, members, flushes


def _message(number: int) -> Message:
    return Message(id=number, room="lobby", sender="ann", text=f"m{number}", ts=0)


def test_a_turn_of_events_reaches_each_member_as_one_batch_in_publish_order() -> None:
    rooms, members, _ = _room_of("ann", "bob", "cy")
    room = rooms.get("lobby")
    assert room is not None
    for number in range(1, 4):
        room.publish(_message(number))
    assert all(peer_of(member).events == [] for member in members)  # nothing before the turn ends
    rooms.flush()
    for member in members:
        assert [event.text for event in peer_of(member).of_type(Message)] == ["m1", "m2", "m3"]


def test_a_skipped_live_member_gets_the_turn_without_its_own_presence_and_others_get_all_in_order() -> None:
    rooms, (ann, bob, cy), _ = _room_of("ann", "bob", "cy")
    room = rooms.get("lobby")
    assert room is not None
    away = Presence(room="lobby", nick="bob", event="away", text="lunch")
    room.publish(_message(1))
    room.publish(away, skip=bob)
    room.publish(_message(2))
    rooms.flush()
    everything: list[ServerFrame] = [_message(1), away, _message(2)]
    assert peer_of(ann).events == everything
    assert peer_of(cy).events == everything
    assert peer_of(bob).events == [_message(1), _message(2)]


def test_a_skipped_joiner_has_only_the_others_events_held() -> None:
    rooms, (ann,), _ = _room_of("ann")
    room = rooms.get("lobby")
    assert room is not None
    engine_joiner = logged_in(LocalEngine(lambda: None), "dee", 9)
    rooms.add_member("lobby", "lobby", engine_joiner, hold=True)
    join = Presence(room="lobby", nick="dee", event="join")
    room.publish(join, skip=engine_joiner)
    room.publish(_message(5))
    rooms.flush()
    assert peer_of(ann).events == [join, _message(5)]
    assert peer_of(engine_joiner).events == []  # held, not sent
    assert room.release(engine_joiner) == [_message(5)]


def test_a_member_added_during_a_turn_gets_only_what_is_published_after_it_and_shares_the_batch() -> None:
    rooms, (ann, bob), _ = _room_of("ann", "bob")
    room = rooms.get("lobby")
    assert room is not None
    room.publish(_message(1))
    cy = logged_in(LocalEngine(lambda: None), "cy", 3)
    rooms.add_member("lobby", "lobby", cy)  # no flush: the turn's batch goes on growing
    assert peer_of(ann).events == []
    join = Presence(room="lobby", nick="cy", event="join")
    room.publish(join, skip=cy)
    room.publish(_message(2))
    rooms.flush()
    assert peer_of(ann).events == peer_of(bob).events == [_message(1), join, _message(2)]
    assert peer_of(cy).events == [_message(2)], "not message 1 (before it came in), not its own join"
