"""chat/core/rooms.py on in-memory peers: what one loop turn of joins hands each member and each joiner.

A turn is everything published before `engine.flush()`; a peer here records each batch it is handed, so the tests see
how the room grouped the turn's events (a presence-batch codec makes one `presences` frame of one batch's presence
events, chat/server/tcp.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from corefakes import MemoryPeer

from chat.core.limits import TokenBucket
from chat.core.session import Session, State
from chat.engine.local import LocalEngine
from chat.protocol.messages import Message, Presence, ServerFrame
from chat.protocol.names import fold


@dataclass(eq=False)
class BatchPeer(MemoryPeer):
    """A MemoryPeer that also keeps the batches it was handed, one list per `send_batch`."""

    batches: list[list[ServerFrame]] = field(default_factory=list)

    def send_batch(self, encoded: Any, events: Sequence[ServerFrame]) -> None:
        self.batches.append(list(events))
        super().send_batch(encoded, events)


def session(engine: LocalEngine, nick: str, identity: int) -> Session:
    joined = Session(BatchPeer(address=(nick, identity)), TokenBucket(1000.0, 1000, 0.0), 0.0)
    joined.state, joined.identity, joined.nick, joined.nick_key = State.ACTIVE, identity, nick, fold(nick)
    engine.register(joined)
    return joined


def join_in_this_turn(engine: LocalEngine, joiner: Session) -> None:
    """What the service does for a join before it awaits the history page (chat/core/service.py `join`)."""
    room = engine.rooms.add_member("big", "big", joiner, hold=True)
    room.publish(Presence(room="big", nick=joiner.nick, event="join"), skip=joiner)


def batches_of(member: Session) -> list[list[ServerFrame]]:
    assert isinstance(member.peer, BatchPeer)
    return member.peer.batches


def nicks(events: Sequence[ServerFrame]) -> list[str]:
    return [event.nick for event in events if isinstance(event, Presence)]


@pytest.fixture
def engine() -> LocalEngine:
    return LocalEngine(lambda: None)


def test_the_presence_joins_of_one_turn_reach_a_member_as_one_batch_in_join_order(engine: LocalEngine) -> None:
    member = session(engine, "member", 1)
    engine.rooms.add_member("big", "big", member)
    joiners = [session(engine, f"j{i}", 10 + i) for i in range(50)]
    for joiner in joiners:
        join_in_this_turn(engine, joiner)
    engine.flush()
    assert [nicks(batch) for batch in batches_of(member)] == [[j.nick for j in joiners]]


def test_a_joiner_holds_the_joins_after_its_own_and_nothing_from_before_it(engine: LocalEngine) -> None:
    member = session(engine, "member", 1)
    room = engine.rooms.add_member("big", "big", member)
    room.publish(Message(id=1, room="big", sender="member", text="before everyone", ts=0))
    joiners = [session(engine, f"j{i}", 10 + i) for i in range(5)]
    for joiner in joiners:
        join_in_this_turn(engine, joiner)
    engine.flush()
    for index, joiner in enumerate(joiners):
        held = room.release(joiner)
        assert nicks(held) == [j.nick for j in joiners[index + 1 :]], joiner.nick
        assert not [event for event in held if isinstance(event, Message)], "message 1 is in its history page"
    delivered = [event for batch in batches_of(member) for event in batch]
    assert [getattr(event, "nick", None) or event.text for event in delivered] == [  # type: ignore[attr-defined]
        "before everyone",
        *(j.nick for j in joiners),
    ]
