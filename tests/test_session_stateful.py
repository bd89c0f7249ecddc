"""Server-side sessions as a state machine (hypothesis.stateful): login, join, part, say, nick, away, who, ping, quit,
dropped connections and malformed frames, in any order, illegal ones included, on several connections at once.

Each step is one frame through the real `ChatService.handle_frame` (a real `LocalEngine`, a real `AsyncStore` on a
SQLite file of its own), to connections that are `MemoryPeer`s (tests/corefakes.py); then the store's commits and
the rooms' end-of-turn flush run, as a loop turn would. After every step, every connection must have received
exactly what the model predicts from docs/protocol.md, nothing more:
- the reply, or the `error` with the documented code and the request's `ref` (sections 1.4 to 1.7, 2, 3, 7); a refused
  login closes the connection with its code, every other error leaves it open; no `internal_error`, ever;
- the `presence` events of the others in its rooms (section 3.6), the `joined` page of the room's stored messages
  with the members in join order (3.2), each `message` to the members of its room or to both ends of a private one
  (3.5);
- the `message` frames of a connection in strictly increasing id, each say's echo with an id above every id before;
and the engine's rooms hold exactly the members the model predicts, in order.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from corefakes import MemoryPeer
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from chat.config import Config, config_with
from chat.core.limits import TokenBucket
from chat.core.service import ChatService
from chat.core.session import Session
from chat.engine.local import LocalEngine
from chat.protocol import messages as wire
from chat.protocol.names import fold
from chat.store.sqlite import AsyncStore

REPLAY = 3  # the joined page: small, so pages are cut and marked truncated
NICKS = ("alice", "Alice", "bob", "carol", "bad nick", "")
GOOD_NICKS = {"alice", "Alice", "bob", "carol"}
ROOMS = ("lobby", "Lobby", "den", "bad room", "")
GOOD_ROOMS = {"lobby", "Lobby", "den"}
TEXTS = ("hi", "héllo\n\tthere", "\x1b[31mred", "")
GOOD_TEXTS = {"hi", "héllo\n\tthere"}
AWAY_TEXTS = ("lunch", None, "\x07")
MAX_CONNECTIONS = 4

Expected = list[tuple[Any, ...]]
# Headers the decoder refuses or that break a rule before any handler runs: (header, payload, what an open
# connection gets once logged in, what a connection not yet logged in gets). "closed" means the connection is closed
# with that code (docs/protocol.md 2.3: a refused login always closes).
MALFORMED: list[tuple[bytes, bytes, tuple[Any, ...], tuple[Any, ...]]] = [
    (b"{", b"", ("error", "bad_request", None), ("error", "bad_request", None)),
    (b'{"type":"shout","ref":1}', b"", ("error", "unknown_type", 1), ("error", "unknown_type", 1)),
    (b'{"type":"join","ref":2}', b"", ("error", "bad_request", 2), ("error", "bad_request", 2)),
    (b'{"type":"login","nick":5,"ref":3}', b"", ("error", "bad_request", 3), ("closed", "bad_request")),
    (b'{"type":"say","text":"x","ref":4}', b"", ("error", "bad_request", 4), ("error", "not_logged_in", 4)),
    (b'{"type":"ping","ref":5}', b"x", ("error", "bad_request", 5), ("error", "bad_request", 5)),
    (b'{"type":"ping","ref":true}', b"", ("error", "bad_request", None), ("error", "bad_request", None)),
    (
        b'{"type":"ping","t":' + b"[" * 40 + b"]" * 40 + b"}",
        b"",
        ("error", "bad_request", None),
        ("error", "bad_request", None),
    ),
]


@dataclass(eq=False)
class Connection:
    """The model of one connection: its state, nick, rooms and away text, and how much of its events were read."""

    number: int
    session: Session
    logged_in: bool = False
    nick: str = ""
    identity: int = 0
    away: str | None = None
    read: int = 0
    last_id: int = 0

    @property
    def peer(self) -> MemoryPeer:
        assert isinstance(self.session.peer, MemoryPeer)
        return self.session.peer

    @property
    def key(self) -> str:
        return fold(self.nick)

    def __repr__(self) -> str:
        return f"<connection {self.number} {self.nick or '-'}>"


@dataclass
class RoomModel:
    name: str
    members: list[Connection] = field(default_factory=list)


def canonical(event: wire.ServerFrame) -> tuple[Any, ...]:
    """The parts of an event the model predicts (ids are checked apart)."""
    if isinstance(event, wire.Error):
        return ("error", event.code, event.ref)
    if isinstance(event, wire.Welcome):
        return ("welcome", event.nick, event.ref)
    if isinstance(event, wire.Joined):
        page = tuple(m.id for m in event.messages)
        return ("joined", fold(event.room), tuple(event.members), page, event.truncated, event.ref)
    if isinstance(event, wire.Parted):
        return ("parted", fold(event.room), event.ref)
    if isinstance(event, wire.Message):
        return (
            "message",
            fold(event.room) if event.room else None,
            fold(event.to) if event.to else None,
            event.sender,
            event.text,
        )
    if isinstance(event, wire.Presence):
        return ("presence", fold(event.room), event.nick, event.event, event.old, event.text)
    if isinstance(event, wire.AwayChanged):
        return ("away", event.text, event.ref)
    if isinstance(event, wire.NickChanged):
        return ("nick", event.nick, event.old, event.ref)
    if isinstance(event, wire.Members):
        return ("members", fold(event.room), tuple((m.nick, m.away) for m in event.members), event.ref)
    if isinstance(event, wire.ServerPong):
        return ("pong", event.ref)
    return ("unexpected", event)


class SessionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="chat-session-machine-"))
        self.runner = asyncio.Runner()
        config = config_with(
            Config(),
            server={"nick_hold": 0},
            limits={"messages_per_second": 1_000_000.0, "burst": 1_000_000},
            history={"database": str(self.folder / "chat.db"), "replay": REPLAY},
            files={"directory": str(self.folder / "files")},
        )
        self.store = AsyncStore(config.history.database)
        self.runner.run(self.store.start())
        self.engine = LocalEngine(lambda: None)  # the rooms are flushed after every step, as at the end of a turn
        self.service = ChatService(config, self.store, self.engine, lambda: 0.0)
        self.runner.run(self.service.start())
        self.connections: list[Connection] = []
        self.opened = 0
        self.rooms: dict[str, RoomModel] = {}
        self.history: dict[str, list[int]] = {}  # room key -> stored message ids
        self.holders: dict[str, int] = {}  # nick key -> the identity that last held it
        self.highest_id = 0
        self.step_ids: set[int] = set()  # ids of the message frames received in the last step
        self.ref = 0

    def teardown(self) -> None:
        try:
            self.runner.run(self.store.close())
        finally:
            self.runner.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    # --- driving the service -----------------------------------------------------------------------------------

    def _frame(self, connection: Connection, header: bytes, payload: bytes = b"") -> dict[Connection, Expected]:
        """One frame, then the commits and the end of the turn; what every connection received, canonical."""
        waiting = self.service.handle_frame(connection.session, header, payload)
        if waiting is not None:
            self.runner.run(_wait(waiting))
        self.runner.run(_wait(self.store.flush()))
        self.engine.flush()
        return self._received()

    def _request(self, connection: Connection, request: wire.Request) -> dict[Connection, Expected]:
        return self._frame(connection, msgspec.json.encode(request))

    def _received(self) -> dict[Connection, Expected]:
        received: dict[Connection, Expected] = {}
        self.step_ids = set()
        for connection in list(self.connections):
            events = connection.peer.events
            new, connection.read = events[connection.read :], len(events)
            for frame in new:
                if isinstance(frame, wire.Message):
                    assert frame.id > connection.last_id, (
                        f"{connection} got message {frame.id} after {connection.last_id}"
                    )
                    connection.last_id = frame.id
                    self.step_ids.add(frame.id)
            canon = [canonical(frame) for frame in new]
            if connection.peer.closed:
                code = connection.peer.closed_with[0].value if connection.peer.closed_with else None
                canon.append(("closed", code))
                self.connections.remove(connection)
                self.service.connection_lost(connection.session)  # what the listener does once reading ends
            if canon:
                received[connection] = canon
        return received

    def _check(self, received: dict[Connection, Expected], expected: dict[Connection, Expected]) -> None:
        expected = {c: e for c, e in expected.items() if e}
        got = {c: Counter(e) for c, e in received.items()}
        want = {c: Counter(e) for c, e in expected.items()}
        assert got == want, f"received {received}, expected {expected}"

    def _next_ref(self) -> int:
        self.ref += 1
        return self.ref

    def _others(
        self, connection: Connection, event: tuple[Any, ...], rooms: list[RoomModel]
    ) -> dict[Connection, Expected]:
        expected: dict[Connection, Expected] = {}
        for room in rooms:
            for member in room.members:
                if member is not connection:
                    expected.setdefault(member, []).append((*event[:1], fold(room.name), *event[1:]))
        return expected

    def _rooms_of(self, connection: Connection) -> list[RoomModel]:
        return [room for room in self.rooms.values() if connection in room.members]

    def _leave_everything(self, connection: Connection) -> dict[Connection, Expected]:
        """Rooms hear `quit` (docs/protocol.md 3.6); the nick stays held by its identity."""
        rooms = self._rooms_of(connection)
        expected = self._others(connection, ("presence", connection.nick, "quit", None, None), rooms)
        for room in rooms:
            room.members.remove(connection)
            if not room.members:
                del self.rooms[fold(room.name)]
        if connection.logged_in:
            self.holders[connection.key] = connection.identity
        return expected

    # --- rules -------------------------------------------------------------------------------------------------

    @initialize()
    def alice_and_bob_in_the_lobby_and_one_more_connection(self) -> None:
        """A start that reaches the interesting states sooner; every step of it is checked like any other."""
        for nick in ("alice", "bob", None):
            self.connect()
            if nick is not None:
                self._login(self.connections[-1], nick, 1)
                self._join(self.connections[-1], "lobby")

    @rule()
    def connect(self) -> None:
        if len(self.connections) >= MAX_CONNECTIONS:
            return
        self.opened += 1
        session = Session(MemoryPeer(address=("memory", self.opened)), TokenBucket(1e6, 1_000_000, 0.0), 0.0)
        connection = Connection(self.opened, session)
        self.connections.append(connection)
        self.service.greet(session)
        assert [type(event) for event in connection.peer.events] == [wire.Hello]
        connection.read = 1

    def _pick(self, data: st.DataObject) -> Connection:
        """One of the open connections; closed ones are replaced, so two at least are open (new clients)."""
        while len(self.connections) < 2:
            self.connect()
        return data.draw(st.sampled_from(self.connections))

    @rule(data=st.data(), nick=st.sampled_from(NICKS), protocol=st.sampled_from([1, 1, 1, 2]))
    def login(self, data: st.DataObject, nick: str, protocol: int) -> None:
        self._login(self._pick(data), nick, protocol)

    def _login(self, connection: Connection, nick: str, protocol: int) -> None:
        ref = self._next_ref()
        received = self._request(connection, wire.Login(nick=nick, protocol=protocol, ref=ref))
        if connection.logged_in:  # docs/protocol.md 7: already_logged_in does not close
            expected: Expected = [("error", "already_logged_in", ref)]
        elif protocol != 1:  # 2.3: protocol first, then the nick
            expected = [("closed", "protocol_mismatch")]
        elif nick not in GOOD_NICKS:
            expected = [("closed", "bad_nick")]
        elif any(c.logged_in and c.key == fold(nick) for c in self.connections if c is not connection):
            expected = [("closed", "nick_taken")]
        else:
            expected = [("welcome", nick, ref)]
            event("login")
            connection.logged_in, connection.nick = True, nick
            connection.identity = connection.session.identity
            assert connection.identity not in {c.identity for c in self.connections if c is not connection}
            self.holders[connection.key] = connection.identity
        self._check(received, {connection: expected})

    def _not_logged_in(self, connection: Connection, received: dict[Connection, Expected], ref: int) -> bool:
        """Before `welcome`, anything but login and ping is `not_logged_in` (docs/protocol.md 2.7)."""
        if connection.logged_in:
            return False
        self._check(received, {connection: [("error", "not_logged_in", ref)]})
        return True

    @rule(data=st.data(), name=st.sampled_from(ROOMS))
    def join(self, data: st.DataObject, name: str) -> None:
        self._join(self._pick(data), name)

    def _join(self, connection: Connection, name: str) -> None:
        ref = self._next_ref()
        received = self._request(connection, wire.Join(room=name, ref=ref))
        if self._not_logged_in(connection, received, ref):
            return
        if name not in GOOD_ROOMS:
            self._check(received, {connection: [("error", "bad_room", ref)]})
            return
        key = fold(name)
        room = self.rooms.setdefault(key, RoomModel(name))
        expected: dict[Connection, Expected] = {}
        if connection not in room.members:  # 3.2: a second join answers joined again, with no presence
            expected = self._others(connection, ("presence", connection.nick, "join", None, None), [room])
            room.members.append(connection)
        stored = self.history.get(key, [])
        page = tuple(stored[-REPLAY:])
        joined = ("joined", key, tuple(m.nick for m in room.members), page, len(stored) > REPLAY, ref)
        expected[connection] = [joined]
        self._check(received, expected)
        event(f"join: {len(room.members)} members, page of {len(page)}")

    @rule(data=st.data(), name=st.sampled_from(ROOMS))
    def part(self, data: st.DataObject, name: str) -> None:
        connection = self._pick(data)
        ref = self._next_ref()
        received = self._request(connection, wire.Part(room=name, ref=ref))
        if self._not_logged_in(connection, received, ref):
            return
        refusal = self._room_refusal(connection, name)
        if refusal is not None:
            self._check(received, {connection: [("error", refusal, ref)]})
            return
        room = self.rooms[fold(name)]
        room.members.remove(connection)
        expected = self._others(connection, ("presence", connection.nick, "part", None, None), [room])
        expected[connection] = [("parted", fold(name), ref)]
        if not room.members:
            del self.rooms[fold(name)]
        self._check(received, expected)
        event(f"part: {len(room.members)} left")

    def _room_refusal(self, connection: Connection, name: str) -> str | None:
        """docs/protocol.md 3.12, for part and say."""
        if name not in GOOD_ROOMS:
            return "bad_room"
        room = self.rooms.get(fold(name))
        if room is None:
            return "no_such_room"
        return None if connection in room.members else "not_in_room"

    @rule(data=st.data(), name=st.sampled_from(ROOMS), text=st.sampled_from(TEXTS))
    def say_in_room(self, data: st.DataObject, name: str, text: str) -> None:
        connection = self._pick(data)
        ref = self._next_ref()
        received = self._request(connection, wire.Say(room=name, text=text, ref=ref))
        if self._not_logged_in(connection, received, ref):
            return
        # docs/protocol.md 3.4: the text is checked first, then the room (test_say_checks_the_text_before_the_target)
        refusal = ("bad_text" if text not in GOOD_TEXTS else None) or self._room_refusal(connection, name)
        if refusal is not None:
            self._check(received, {connection: [("error", refusal, ref)]})
            return
        room = self.rooms[fold(name)]
        message = ("message", fold(name), None, connection.nick, text)
        self._check(received, {member: [message] for member in room.members})
        self._stored(fold(name))
        event(f"say in a room of {len(room.members)}")

    @rule(data=st.data(), to=st.sampled_from(NICKS), text=st.sampled_from(TEXTS))
    def say_to_nick(self, data: st.DataObject, to: str, text: str) -> None:
        connection = self._pick(data)
        ref = self._next_ref()
        received = self._request(connection, wire.Say(to=to, text=text, ref=ref))
        if self._not_logged_in(connection, received, ref):
            return
        if text not in GOOD_TEXTS:  # docs/protocol.md 3.4: the text before the nick (see say_in_room)
            refusal: str | None = "bad_text"
        elif to not in GOOD_NICKS:
            refusal = "bad_nick"
        elif fold(to) not in self.holders:
            refusal = "no_such_nick"
        else:
            refusal = None
        if refusal is not None:
            self._check(received, {connection: [("error", refusal, ref)]})
            return
        message = ("message", None, fold(to), connection.nick, text)
        online = next((c for c in self.connections if c.logged_in and c.key == fold(to)), None)
        identity = online.identity if online is not None else self.holders[fold(to)]
        recipient = next((c for c in self.connections if c.logged_in and c.identity == identity), None)
        expected = {connection: [message]}
        if recipient is not None:
            expected[recipient] = [message]  # once only when it is the sender (3.5)
        self._check(received, expected)
        self._stored(None)
        event("say to a nick: " + ("offline" if recipient is None else "self" if recipient is connection else "live"))

    def _stored(self, room_key: str | None) -> None:
        """The say's echo: one message id, above every id before (docs/protocol.md 3.5)."""
        assert len(self.step_ids) == 1, f"one message, one id: {self.step_ids}"
        [number] = self.step_ids
        assert number > self.highest_id, f"message id {number} after {self.highest_id}"
        self.highest_id = number
        if room_key is not None:
            self.history.setdefault(room_key, []).append(number)

    @rule(data=st.data(), nick=st.sampled_from(NICKS))
    def change_nick(self, data: st.DataObject, nick: str) -> None:
        connection = self._pick(data)
        ref = self._next_ref()
        received = self._request(connection, wire.ChangeNick(nick=nick, ref=ref))
        if self._not_logged_in(connection, received, ref):
            return
        if nick not in GOOD_NICKS:
            self._check(received, {connection: [("error", "bad_nick", ref)]})
            return
        if any(c.logged_in and c.key == fold(nick) for c in self.connections if c is not connection):
            self._check(received, {connection: [("error", "nick_taken", ref)]})
            return
        old = connection.nick
        expected: dict[Connection, Expected] = {}
        if nick != old:  # 3.10: no presence unless the spelling changed
            expected = self._others(connection, ("presence", nick, "nick", old, None), self._rooms_of(connection))
        expected[connection] = [("nick", nick, old, ref)]
        self.holders[connection.key] = connection.identity
        connection.nick = nick
        self.holders[connection.key] = connection.identity
        self._check(received, expected)
        event(f"nick change seen by {len(expected) - 1}")

    @rule(data=st.data(), text=st.sampled_from(AWAY_TEXTS))
    def away(self, data: st.DataObject, text: str | None) -> None:
        connection = self._pick(data)
        ref = self._next_ref()
        received = self._request(connection, wire.SetAway(text=text, ref=ref))
        if self._not_logged_in(connection, received, ref):
            return
        if text is not None and text not in GOOD_TEXTS | {"lunch"}:
            self._check(received, {connection: [("error", "bad_text", ref)]})
            return
        connection.away = text
        expected = self._others(
            connection, ("presence", connection.nick, "away", None, text), self._rooms_of(connection)
        )
        expected[connection] = [("away", text, ref)]
        self._check(received, expected)

    @rule(data=st.data(), name=st.sampled_from(ROOMS))
    def who(self, data: st.DataObject, name: str) -> None:
        connection = self._pick(data)
        ref = self._next_ref()
        received = self._request(connection, wire.Who(room=name, ref=ref))
        if self._not_logged_in(connection, received, ref):
            return
        room = self.rooms.get(fold(name))
        if name not in GOOD_ROOMS or room is None:  # 3.7: the asker need not be a member
            self._check(
                received, {connection: [("error", "bad_room" if name not in GOOD_ROOMS else "no_such_room", ref)]}
            )
            return
        members = tuple((m.nick, m.away) for m in room.members)
        self._check(received, {connection: [("members", fold(name), members, ref)]})

    @rule(data=st.data())
    def ping(self, data: st.DataObject) -> None:
        connection = self._pick(data)
        ref = self._next_ref()
        self._check(self._request(connection, wire.Ping(ref=ref)), {connection: [("pong", ref)]})

    @rule(data=st.data())
    def quit(self, data: st.DataObject) -> None:
        connection = self._pick(data)
        ref = self._next_ref()
        received = self._request(connection, wire.Quit(ref=ref))
        if self._not_logged_in(connection, received, ref):
            return
        expected = self._leave_everything(connection)
        expected[connection] = [("closed", None)]
        self._check(received, expected)

    @rule(data=st.data())
    def connection_drops(self, data: st.DataObject) -> None:
        """The peer goes away without a word: the listener closes and tells the service."""
        connection = self._pick(data)
        connection.session.close()
        self.service.connection_lost(connection.session)
        expected = self._leave_everything(connection)
        expected[connection] = [("closed", None)]
        self.engine.flush()
        self._check(self._received(), expected)

    @rule(data=st.data(), malformed=st.sampled_from(MALFORMED))
    def malformed_frame(
        self, data: st.DataObject, malformed: tuple[bytes, bytes, tuple[Any, ...], tuple[Any, ...]]
    ) -> None:
        connection = self._pick(data)
        header, payload, when_logged_in, before_login = malformed
        received = self._frame(connection, header, payload)
        self._check(received, {connection: [when_logged_in if connection.logged_in else before_login]})

    # --- invariants --------------------------------------------------------------------------------------------

    @invariant()
    def rooms_hold_the_predicted_members_in_order(self) -> None:
        actual = {room.key: (room.name, [m for m in room]) for room in self.service.rooms}
        predicted = {key: (room.name, [c.session for c in room.members]) for key, room in self.rooms.items()}
        assert actual == predicted

    @invariant()
    def the_registry_holds_the_logged_in_connections(self) -> None:
        logged_in = [c for c in self.connections if c.logged_in]
        assert sorted(s.identity for s in self.engine.sessions()) == sorted(c.identity for c in logged_in)
        for connection in logged_in:
            assert self.engine.by_nick(connection.key) is connection.session


@pytest.mark.parametrize(
    ("target", "target_code"),
    [({"room": "den"}, "no_such_room"), ({"to": "nobody"}, "no_such_nick"), ({"to": "bad nick"}, "bad_nick")],
)
def test_say_checks_the_text_before_the_target(target: dict[str, str], target_code: str) -> None:
    """docs/protocol.md 3.4: a say with a bad text and a bad target gets `bad_text`, whatever the target's fault."""
    machine = SessionMachine()
    try:
        machine.connect()  # the machine's rules record hypothesis events: only its plain helpers here
        alice = machine.connections[0]
        assert [e[0] for e in machine._request(alice, wire.Login(nick="alice", protocol=1))[alice]] == ["welcome"]
        machine._request(alice, wire.Join(room="lobby"))
        received = machine._request(alice, wire.Say(text="\x1b[31mred", ref=99, **target))
        assert received == {alice: [("error", "bad_text", 99)]}, f"not {target_code}"
    finally:
        machine.teardown()


async def _wait(waiting: Any) -> None:
    await waiting


SessionMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)
test_session_state_machine = SessionMachine.TestCase
