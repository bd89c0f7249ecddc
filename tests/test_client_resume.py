"""The resume bookkeeping of chat/client/resume.py, without sockets or an event loop (docs/protocol.md 4 and 8)."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from chat.client.resume import Backoff, ResumeState
from chat.protocol.messages import Message, Say


def room_message(id: int, room: str = "lobby", sender: str = "bob", cid: str | None = None) -> Message:
    return Message(id=id, room=room, sender=sender, text=f"m{id}", ts=0, cid=cid)


def private_message(id: int, sender: str = "bob", to: str = "alice", cid: str | None = None) -> Message:
    return Message(id=id, to=to, sender=sender, text=f"p{id}", ts=0, cid=cid)


def ids(messages: list[Message]) -> list[int]:
    return [m.id for m in messages]


# --- delivery and dedupe -----------------------------------------------------------------------------------------


def test_a_live_message_at_or_below_the_highest_delivered_id_is_dropped() -> None:
    state = ResumeState()
    assert ids(state.live(room_message(3))) == [3]
    assert state.live(room_message(3)) == []
    assert state.live(room_message(2)) == []
    assert ids(state.live(room_message(4))) == [4]


def test_rooms_and_private_messages_keep_separate_highest_ids() -> None:
    state = ResumeState(private_since=0)
    assert ids(state.live(room_message(10, room="lobby"))) == [10]
    assert ids(state.live(room_message(5, room="dev"))) == [5]
    assert ids(state.live(private_message(7))) == [7]
    assert state.room("lobby").since == 10
    assert state.room("dev").since == 5
    assert state.private.since == 7


def test_room_names_are_compared_folded() -> None:
    state = ResumeState()
    state.live(room_message(1, room="Lobby"))
    assert state.live(room_message(1, room="LOBBY")) == []
    assert len(state.rooms) == 1


def test_replay_delivers_only_new_messages_in_id_order() -> None:
    state = ResumeState()
    lobby = state.room("lobby")
    state.live(room_message(2))
    delivered = state.replay(lobby, [room_message(4), room_message(1), room_message(2), room_message(3)], more=False)
    assert ids(delivered) == [3, 4]
    assert lobby.since == 4


def test_since_is_zero_for_a_conversation_with_nothing_delivered() -> None:
    state = ResumeState()
    assert state.room("lobby").since == 0
    assert state.private.highest is None
    assert ResumeState(private_since=40).private.since == 40


# --- catching up a truncated replay ------------------------------------------------------------------------------


def test_live_messages_wait_while_a_truncated_replay_is_paged_then_follow_in_order() -> None:
    state = ResumeState()
    lobby = state.room("lobby")
    lobby.note_seen(10)
    assert ids(state.replay(lobby, [room_message(i) for i in range(11, 14)], more=True)) == [11, 12, 13]
    assert lobby.catching_up
    # id 20 is stored after the replay was read: sent live, while 14..19 are still to be paged
    assert state.live(room_message(20)) == []
    assert ids(state.page(lobby, [room_message(i) for i in range(14, 17)], truncated=True)) == [14, 15, 16]
    assert state.live(room_message(21)) == []
    # the last page may hold what also came live: each id once, in order
    last = state.page(lobby, [room_message(i) for i in range(17, 21)], truncated=False)
    assert ids(last) == [17, 18, 19, 20, 21]
    assert not lobby.catching_up
    assert ids(state.live(room_message(22))) == [22]


def test_a_truncated_page_that_brings_nothing_new_ends_the_catch_up() -> None:
    state = ResumeState()
    lobby = state.room("lobby")
    state.replay(lobby, [room_message(5)], more=True)
    state.live(room_message(9))
    assert ids(state.page(lobby, [room_message(5)], truncated=True)) == [9]
    assert not lobby.catching_up


def test_losing_the_connection_forgets_held_back_messages_but_not_the_highest_id() -> None:
    state = ResumeState()
    lobby = state.room("lobby")
    state.replay(lobby, [room_message(1), room_message(2)], more=True)
    state.live(room_message(8))
    state.connection_lost()
    assert not lobby.catching_up
    assert lobby.held_back == {}
    assert lobby.since == 2  # message 8 comes again with the next resume


def test_needs_catch_up_lists_private_first() -> None:
    state = ResumeState(private_since=0)
    state.replay(state.room("lobby"), [room_message(3)], more=True)
    state.replay(state.private, [private_message(4)], more=True)
    assert [c.room for c in state.needs_catch_up()] == [None, "lobby"]


# --- unacknowledged says -----------------------------------------------------------------------------------------


def tracked_state(*says: Say) -> ResumeState:
    state = ResumeState()
    state.add_own_nick("alice")
    for say in says:
        state.track(say)
    return state


def test_an_echo_with_our_cid_acknowledges_the_say() -> None:
    say = Say(room="lobby", text="hi", cid="c1")
    state = tracked_state(say)
    assert state.acknowledge(room_message(1, sender="Alice", room="LOBBY", cid="c1")) is say
    assert state.unacked == []
    assert state.acknowledge(room_message(1, sender="alice", cid="c1")) is None


def test_a_message_from_someone_else_with_our_cid_acknowledges_nothing() -> None:
    state = tracked_state(Say(room="lobby", text="hi", cid="c1"))
    assert state.acknowledge(room_message(1, sender="mallory", cid="c1")) is None
    assert state.acknowledge(room_message(2, sender="alice", room="dev", cid="c1")) is None
    assert len(state.unacked) == 1


def test_a_private_echo_acknowledges_by_recipient() -> None:
    say = Say(to="bob", text="hi", cid="c1")
    state = tracked_state(say)
    assert state.acknowledge(private_message(1, sender="alice", to="carol", cid="c1")) is None
    assert state.acknowledge(private_message(1, sender="alice", to="Bob", cid="c1")) is say


def test_an_old_nick_still_counts_as_ours() -> None:
    state = tracked_state(Say(room="lobby", text="hi", cid="c1"))
    state.add_own_nick("alice2")
    assert state.acknowledge(room_message(1, sender="alice", cid="c1")) is not None


def test_unacknowledged_says_are_kept_oldest_first_and_can_be_forgotten() -> None:
    first, second, third = (Say(room="lobby", text=str(i), cid=f"c{i}") for i in range(3))
    state = tracked_state(first, second, third)
    assert state.forget("c1") is second
    assert state.unacked == [first, third]
    assert state.is_tracked("c0") and not state.is_tracked("c1")


def test_a_say_without_cid_cannot_be_tracked() -> None:
    with pytest.raises(ValueError, match="cid"):
        ResumeState().track(Say(room="lobby", text="hi"))


# --- backoff -----------------------------------------------------------------------------------------------------


def test_backoff_retries_first_within_half_a_second_and_never_waits_over_the_cap() -> None:
    backoff = Backoff(0.2, 5.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(40)]
    assert 0 < delays[0] <= 0.5
    assert all(0 < d <= 5.0 for d in delays)
    assert max(delays[10:]) > 2.5  # it does grow to the cap
    assert backoff.attempts == 40


def test_backoff_grows_exponentially_with_jitter_below_each_step() -> None:
    backoff = Backoff(0.1, 100.0, jitter=0.5, rng=random.Random(7))
    for step in range(8):
        base = 0.1 * 2**step
        assert base / 2 <= backoff.next_delay() <= base


def test_backoff_reset_starts_again_from_the_initial_delay() -> None:
    backoff = Backoff(0.2, 5.0, jitter=0.0)
    for _ in range(10):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 0.2
    assert backoff.attempts == 1


@pytest.mark.parametrize("initial, maximum", [(0, 5), (6, 5), (-1, 1)])
def test_backoff_refuses_nonsense_bounds(initial: float, maximum: float) -> None:
    with pytest.raises(ValueError):
        Backoff(initial, maximum)


# --- a simulated server: every message exactly once, in order, whatever the schedule -----------------------------

ROOMS = ("lobby", "dev")
REPLAY = 3  # a small replay page, so that most resumes are truncated and paged
PAGE = 2

Step = tuple[str, int, int]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("post"), st.integers(0, len(ROOMS)), st.integers(1, 6)),  # index len(ROOMS): private
        st.tuples(st.just("read"), st.integers(1, 8), st.just(0)),
        st.tuples(st.just("drop"), st.just(0), st.just(0)),
        st.tuples(st.just("resume"), st.just(0), st.just(0)),
    ),
    max_size=60,
)


class SimulatedLink:
    """A server's store and one connection's byte stream, modelled as an ordered inbox of frames.

    It keeps the promises of protocol.md 8: a replay (joined or login page) is followed by every later message live,
    pages hold the oldest messages above `after`, and frames arrive in the order the server wrote them.
    """

    def __init__(self) -> None:
        self.stored: dict[str, list[int]] = defaultdict(list)  # conversation -> ids, ascending
        self.next_id = 1
        self.connected = True
        self.inbox: list[tuple[str, str, Message | tuple[list[Message], bool]]] = []
        self.state = ResumeState(private_since=0)
        for room in ROOMS:
            self.state.room(room).joined = True
        self.delivered: dict[str, list[int]] = defaultdict(list)

    def key(self, message: Message) -> str:
        return message.room or ""

    def message(self, conversation: str, id: int) -> Message:
        return room_message(id, room=conversation) if conversation else private_message(id)

    def post(self, conversation: str, count: int) -> None:
        for _ in range(count):
            self.stored[conversation].append(self.next_id)
            if self.connected:
                self.inbox.append(("live", conversation, self.message(conversation, self.next_id)))
            self.next_id += 1

    def page_after(self, conversation: str, after: int, limit: int) -> tuple[list[Message], bool]:
        above = [i for i in self.stored[conversation] if i > after]
        return [self.message(conversation, i) for i in above[:limit]], len(above) > limit

    def resume(self) -> None:
        if self.connected:
            return
        self.connected = True
        for conversation in ("", *ROOMS):  # the login page first, then one joined per room
            target = self.state.private if conversation == "" else self.state.room(conversation)
            self.inbox.append(("replay", conversation, self.page_after(conversation, target.since, REPLAY)))

    def drop(self) -> None:
        self.connected = False
        self.inbox.clear()
        self.state.connection_lost()

    def read(self, count: int) -> None:
        for _ in range(count):
            if not self.inbox:
                return
            kind, conversation, payload = self.inbox.pop(0)
            target = self.state.private if conversation == "" else self.state.room(conversation)
            if isinstance(payload, Message):
                self.record(self.state.live(payload))
                continue
            messages, truncated = payload
            if kind == "replay":
                self.record(self.state.replay(target, messages, more=truncated))
            else:
                self.record(self.state.page(target, messages, truncated=truncated))
            if target.catching_up:  # the client asks for the next page; the reply comes after what is queued
                self.inbox.append(("page", conversation, self.page_after(conversation, target.since, PAGE)))

    def record(self, messages: list[Message]) -> None:
        for message in messages:
            self.delivered[self.key(message)].append(message.id)


@given(steps)
@settings(max_examples=400)  # cheap (a few ms each), and interleavings that matter are rare among random ones
# A live message that arrives between a truncated joined and the first catch-up page must wait for the pages.
@example([("drop", 0, 0), ("post", 0, 5), ("resume", 0, 0), ("post", 0, 1)])
def test_every_message_is_delivered_exactly_once_in_order_whatever_the_schedule(schedule: list[Step]) -> None:
    link = SimulatedLink()
    for kind, a, b in schedule:
        if kind == "post":
            link.post("" if a == len(ROOMS) else ROOMS[a], b)
        elif kind == "read":
            link.read(a)
        elif kind == "drop":
            link.drop()
        else:
            link.resume()
    link.resume()
    while link.inbox:
        link.read(1)
    for conversation in ("", *ROOMS):
        assert link.delivered[conversation] == link.stored[conversation]
