"""The client library against a real server on 127.0.0.1 (chat/client): chat, errors, events and resume.

Every wait is on an event with a timeout, never a sleep. Where a test needs the client to stay disconnected for a
while, `ReconnectGate` holds its reconnection attempts until the test releases them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from chat.client import (
    Client,
    ClientClosed,
    ConnectionEvent,
    ConnectionState,
    Event,
    LoginRefused,
    Message,
    Presence,
    ReplayedMessage,
    ServerError,
    connect,
)
from chat.client.connection import Connection
from chat.protocol.errors import ChatError
from chat.protocol.frames import MAX_SERVER_HEADER, PREFIX_SIZE, FrameLimits, parse_prefix
from chat.protocol.messages import (
    Hello,
    Say,
    ServerFrame,
    ServerPing,
    UdpInfo,
    Welcome,
    decode_request,
    encode,
)
from chat.server.app import ChatServer

WAIT = 10.0  # the longest any single wait may take before the test fails

ServerFactory = Callable[..., Awaitable[ChatServer]]
ClientFactory = Callable[..., Awaitable[Client]]


class ReconnectGate:
    """Holds a client's reconnection attempts until `release()`; `attempted` is set when one is waiting."""

    def __init__(self, client: Client) -> None:
        self.attempted = asyncio.Event()
        self._released = asyncio.Event()
        original = client._open

        async def gated_open(*, since: int | None) -> Connection:
            self.attempted.set()
            await self._released.wait()
            return await original(since=since)

        client._open = gated_open  # type: ignore[method-assign]

    def release(self) -> None:
        self._released.set()


async def next_event(client: Client, match: Callable[[Event], bool], timeout: float = WAIT) -> Event:
    """The first event that matches, skipping the others."""
    async with asyncio.timeout(timeout):
        while True:
            event = await client.recv()
            if match(event):
                return event


async def next_message(client: Client) -> Message:
    event = await next_event(client, lambda e: isinstance(e, Message))
    assert isinstance(event, Message)
    return event


async def messages(client: Client, count: int) -> list[Message]:
    return (await messages_and_others(client, count))[0]


async def messages_and_others(client: Client, count: int) -> tuple[list[Message], list[Event]]:
    """The next `count` message events, and the other events that came meanwhile."""
    received: list[Message] = []
    others: list[Event] = []
    async with asyncio.timeout(WAIT):
        while len(received) < count:
            event = await client.recv()
            (received if isinstance(event, Message) else others).append(event)  # type: ignore[arg-type]
    return received, others


async def connection_event(client: Client, state: ConnectionState) -> ConnectionEvent:
    event = await next_event(client, lambda e: isinstance(e, ConnectionEvent) and e.state == state)
    assert isinstance(event, ConnectionEvent)
    return event


async def assert_marker_is_next(sender: Client, *clients: Client, room: str | None = None) -> None:
    """No message is waiting for any of `clients` (a duplicate, say): a fresh message from `sender`, to the room or
    privately to the first client, is the next message each of them gets (the sender too, if listed)."""
    if room is None:
        marker = await sender.say("marker", to=clients[0].nick)
    else:
        marker = await sender.say("marker", room=room)
    for client in clients:
        assert await next_message(client) == marker


def texts(batch: list[Message]) -> list[str]:
    return [m.text for m in batch]


# --- chatting ----------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_two_clients_chat_and_say_returns_the_acknowledged_message(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice")
    bob = await chat_client(server, "bob")
    joined = await alice.join("lobby")
    assert joined.members == ["alice"]
    await bob.join("lobby")

    sent = await alice.say("hello bob", room="lobby")
    assert sent.id > 0 and sent.sender == "alice" and sent.room == "lobby" and sent.cid
    assert await next_message(bob) == sent
    presence = await next_event(alice, lambda e: isinstance(e, Presence))
    assert presence == Presence(room="lobby", nick="bob", event="join")
    assert await next_message(alice) == sent  # the client's own messages are events too, once
    await assert_marker_is_next(bob, alice, room="lobby")
    assert alice.unacknowledged == []


@pytest.mark.asyncio
async def test_the_first_event_says_connected(chat_server: ServerFactory, chat_client: ClientFactory) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice")
    assert await alice.recv(timeout=WAIT) == ConnectionEvent(state=ConnectionState.CONNECTED, reason="logged in")
    assert alice.nick == "alice" and alice.session


@pytest.mark.asyncio
async def test_private_messages_reach_the_recipient_and_both_histories(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice")
    bob = await chat_client(server, "bob")
    sent = await alice.say("psst", to="bob")
    assert (sent.to, sent.room, sent.sender) == ("bob", None, "alice")
    assert await next_message(bob) == sent
    assert await next_message(alice) == sent
    assert [m.id for m in (await bob.history(to="alice")).messages] == [sent.id]
    assert [m.id for m in (await alice.history(private=True)).messages] == [sent.id]


@pytest.mark.asyncio
async def test_requests_return_their_replies(chat_server: ServerFactory, chat_client: ClientFactory) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice")
    bob = await chat_client(server, "bob")
    await alice.join("lobby")
    await bob.join("lobby")
    assert (await alice.away("lunch")).text == "lunch"
    members = await bob.who("lobby")
    assert {(m.nick, m.away) for m in members.members} == {("alice", "lunch"), ("bob", None)}
    assert [(r.room, r.members) for r in (await alice.rooms()).rooms] == [("lobby", 2)]
    changed = await alice.change_nick("alice2")
    assert (changed.nick, changed.old, alice.nick) == ("alice2", "alice", "alice2")
    assert await next_event(bob, lambda e: isinstance(e, Presence) and e.event == "nick") == Presence(
        room="lobby", nick="alice2", event="nick", old="alice"
    )
    assert (await alice.part("lobby")).room == "lobby"
    assert alice.joined_rooms == []
    assert await alice.ping() >= 0


@pytest.mark.asyncio
async def test_the_join_replay_is_returned_and_delivered_once_history_is_only_returned(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice")
    bob = await chat_client(server, "bob")
    await alice.join("lobby")
    said = [await alice.say(f"before {i}", room="lobby") for i in range(3)]
    joined = await bob.join("lobby")
    assert joined.messages == said
    replayed = await messages(bob, 3)
    assert replayed == [ReplayedMessage.of(m) for m in said]
    assert all(m.replayed for m in replayed), "the context of a join without since is marked replayed"
    assert not any(m.replayed for m in said), "an acknowledged echo is not"
    page = await bob.history(room="lobby", limit=2)
    assert page.messages == said[1:]
    await assert_marker_is_next(alice, bob, room="lobby")  # neither the page nor a second copy of the replay


@pytest.mark.asyncio
async def test_join_with_since_pages_a_truncated_replay_to_the_end(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server(history={"replay": 5})
    alice = await chat_client(server, "alice")
    bob = await chat_client(server, "bob")
    await alice.join("lobby")
    said = [await alice.say(f"m{i}", room="lobby") for i in range(12)]
    joined = await bob.join("lobby", since=said[2].id)
    assert joined.truncated and len(joined.messages) == 5
    assert await messages(bob, 9) == said[3:]
    await assert_marker_is_next(alice, bob, room="lobby")


# --- errors ------------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "request_, code",
    [
        (lambda c: c.say("\x1b[31mred", room="lobby"), "bad_text"),
        (lambda c: c.say("hi", room="nowhere"), "no_such_room"),
        (lambda c: c.say("hi", to="nobody"), "no_such_nick"),
        (lambda c: c.join("two words"), "bad_room"),
        (lambda c: c.part("nowhere"), "no_such_room"),
        (lambda c: c.change_nick("bob"), "nick_taken"),
        (lambda c: c.history(room="lobby", limit=0), "bad_request"),
    ],
)
async def test_a_refused_request_raises_server_error_and_the_client_goes_on(
    chat_server: ServerFactory,
    chat_client: ClientFactory,
    request_: Callable[[Client], Awaitable[object]],
    code: str,
) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice")
    await chat_client(server, "bob")
    await alice.join("lobby")
    with pytest.raises(ServerError) as refused:
        await request_(alice)
    assert refused.value.code == code
    assert isinstance(refused.value, ChatError)
    assert alice.unacknowledged == []
    assert (await alice.say("still here", room="lobby")).text == "still here"


@pytest.mark.asyncio
async def test_say_needs_exactly_one_target(chat_server: ServerFactory, chat_client: ClientFactory) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice")
    with pytest.raises(ValueError, match="exactly one"):
        await alice.say("hi")
    with pytest.raises(ValueError, match="exactly one"):
        await alice.say("hi", room="lobby", to="bob")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "nick, secret, code",
    [("two words", "s3cret", "bad_nick"), ("alice", None, "auth_failed"), ("alice", "wrong", "auth_failed")],
)
async def test_a_refused_login_is_raised_by_connect(
    chat_server: ServerFactory, nick: str, secret: str | None, code: str
) -> None:
    server = await chat_server(server={"secret": "s3cret"})
    with pytest.raises(LoginRefused) as refused:
        await connect(server.host, server.port, nick=nick, secret=secret)
    assert refused.value.code == code


@pytest.mark.asyncio
async def test_the_right_secret_logs_in(chat_server: ServerFactory, chat_client: ClientFactory) -> None:
    server = await chat_server(server={"secret": "s3cret"})
    alice = await chat_client(server, "alice", secret="s3cret")
    assert alice.nick == "alice"


@pytest.mark.asyncio
async def test_a_taken_nick_is_refused_at_connect(chat_server: ServerFactory, chat_client: ClientFactory) -> None:
    server = await chat_server()
    await chat_client(server, "alice")
    with pytest.raises(LoginRefused) as refused:
        await connect(server.host, server.port, nick="ALICE")
    assert refused.value.code == "nick_taken"


# --- ending ------------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_quit_tells_the_room_and_ends_recv_and_iteration(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice")
    bob = await chat_client(server, "bob")
    await alice.join("lobby")
    await bob.join("lobby")
    await alice.quit("bye")
    assert await next_event(bob, lambda e: isinstance(e, Presence) and e.event == "quit") == Presence(
        room="lobby", nick="alice", event="quit"
    )
    seen = [event async for event in alice]
    assert seen[-1] == ConnectionEvent(state=ConnectionState.CLOSED, reason="quit: bye")
    with pytest.raises(ClientClosed) as closed:
        await alice.recv()
    assert closed.value.code is None
    with pytest.raises(ClientClosed):
        await alice.say("too late", room="lobby")


@pytest.mark.asyncio
async def test_a_second_login_with_the_token_ends_the_first_client_with_session_taken(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice")
    successor = await chat_client(server, "alice", session=alice.session)
    assert (successor.nick, successor.session) == ("alice", alice.session)
    seen = [event async for event in alice]  # iteration ends by itself
    closed = seen[-1]
    assert isinstance(closed, ConnectionEvent) and closed.state == ConnectionState.CLOSED
    assert closed.code == "session_taken"
    assert not any(isinstance(e, ConnectionEvent) and e.state == ConnectionState.RECONNECTING for e in seen)
    with pytest.raises(ClientClosed) as ended:
        await alice.recv()
    assert ended.value.code == "session_taken"
    assert alice.closed


@pytest.mark.asyncio
async def test_with_reconnect_off_a_server_shutdown_ends_the_client(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice", reconnect=False)
    pending = asyncio.create_task(alice.who("lobby"))
    await server.close()
    closed = await connection_event(alice, ConnectionState.CLOSED)
    assert closed.code == "server_shutdown"
    with pytest.raises(ClientClosed):
        await pending


@pytest.mark.asyncio
async def test_a_nick_lost_while_away_ends_the_client_on_the_re_login(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server(server={"nick_hold": 0})
    alice = await chat_client(server, "alice")
    bob = await chat_client(server, "bob")
    await alice.join("lobby")
    await bob.join("lobby")
    gate = ReconnectGate(alice)
    alice.drop_connection()
    await next_event(bob, lambda e: isinstance(e, Presence) and e.event == "quit")
    await chat_client(server, "alice")  # a new identity takes the free nick
    gate.release()
    closed = await connection_event(alice, ConnectionState.CLOSED)
    assert closed.code == "nick_taken"
    with pytest.raises(ClientClosed) as ended:
        await alice.recv()
    assert ended.value.code == "nick_taken"


@pytest.mark.asyncio
async def test_a_client_that_cannot_reconnect_gives_up_after_its_attempts(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice", max_reconnect_attempts=2, backoff_initial=0.01, backoff_max=0.02)
    await server.close()
    disconnected = await connection_event(alice, ConnectionState.DISCONNECTED)
    assert disconnected.code == "server_shutdown"
    attempts = [(await connection_event(alice, ConnectionState.RECONNECTING)).attempt for _ in range(2)]
    assert attempts == [1, 2]
    closed = await connection_event(alice, ConnectionState.CLOSED)
    assert "gave up after 2" in (closed.reason or "")


# --- resume without loss -----------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_after_a_cut_connection_every_message_arrives_once_in_id_order(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server(history={"replay": 5})
    alice = await chat_client(server, "alice")
    bob = await chat_client(server, "bob")
    await alice.join("lobby")
    await bob.join("lobby")
    gate = ReconnectGate(bob)
    bob.drop_connection()
    await gate.attempted.wait()
    missed = [await alice.say(f"missed {i}", room="lobby") for i in range(230)]  # a replay and 3 pages
    missed_private = [await alice.say(f"private {i}", to="bob") for i in range(12)]
    gate.release()
    live = [await alice.say(f"live {i}", room="lobby") for i in range(20)]  # some arrive during the catch-up
    received, others = await messages_and_others(bob, len(missed) + len(missed_private) + len(live))
    assert [m for m in received if m.room] == missed + live
    assert [m for m in received if m.room is None] == missed_private
    states = [(e.state, e.attempt) for e in others if isinstance(e, ConnectionEvent)]
    assert states == [
        (ConnectionState.CONNECTED, 0),
        (ConnectionState.DISCONNECTED, 0),
        (ConnectionState.RECONNECTING, 1),
        (ConnectionState.CONNECTED, 1),
    ]
    await assert_marker_is_next(alice, bob, room="lobby")
    await assert_marker_is_next(alice, bob)


@pytest.mark.asyncio
async def test_cuts_in_the_middle_of_traffic_lose_and_repeat_nothing(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server(history={"replay": 3})
    alice = await chat_client(server, "alice")
    bob = await chat_client(server, "bob")
    await alice.join("lobby")
    await bob.join("lobby")
    sent: list[Message] = []

    async def talk() -> None:
        for i in range(300):
            sent.append(await alice.say(f"m{i}", room="lobby"))
            if i % 50 == 25:
                alice.drop_connection()  # the sender loses its link too: its says must survive

    talking = asyncio.create_task(talk())
    received: list[Message] = []
    while len(received) < 300:
        received.append(await next_message(bob))
        if len(received) in (40, 120, 200):
            bob.drop_connection()
    await talking
    assert received == sent
    assert [m.id for m in sent] == sorted({m.id for m in sent})
    page = await bob.history(room="lobby", after=sent[0].id - 1, limit=100)
    assert page.truncated and page.messages == sent[:100]  # stored once each


@pytest.mark.asyncio
async def test_a_say_made_while_disconnected_is_sent_after_the_resume(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice")
    bob = await chat_client(server, "bob")
    await alice.join("lobby")
    await bob.join("lobby")
    gate = ReconnectGate(alice)
    alice.drop_connection()
    await gate.attempted.wait()
    saying = asyncio.create_task(alice.say("while away", room="lobby", cid="away-1"))
    asking = asyncio.create_task(alice.who("lobby"))  # other requests wait for the resume
    await asyncio.sleep(0)
    assert [say.cid for say in alice.unacknowledged] == ["away-1"]
    gate.release()
    sent = await saying
    assert sent.cid == "away-1" and sent.text == "while away"
    assert {m.nick for m in (await asking).members} == {"alice", "bob"}
    assert await next_message(bob) == sent


@pytest.mark.asyncio
async def test_an_unwritten_say_is_sent_again_with_the_same_cid_and_stored_once(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice")
    bob = await chat_client(server, "bob")
    await alice.join("lobby")
    await bob.join("lobby")
    connection = alice._connection
    assert connection is not None
    original_send = connection.send

    def cut_before_a_say(request: Any) -> None:
        if isinstance(request, Say):
            connection.abort("cut before the say was written")
        original_send(request)

    connection.send = cut_before_a_say  # type: ignore[method-assign]
    sent = await alice.say("eventually", room="lobby", cid="resent-1")
    assert sent.cid == "resent-1"
    assert await next_message(bob) == sent
    await assert_marker_is_next(alice, bob, room="lobby")
    assert [m.cid for m in (await bob.history(room="lobby")).messages].count("resent-1") == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("private", [False, True])
async def test_a_say_whose_ack_was_lost_is_acknowledged_by_the_replay(
    chat_server: ServerFactory, chat_client: ClientFactory, private: bool
) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice")
    bob = await chat_client(server, "bob")
    await alice.join("lobby")
    await bob.join("lobby")
    connection = alice._connection
    assert connection is not None
    original_dispatch = connection._dispatch

    def lose_the_ack(frame: ServerFrame) -> None:
        if isinstance(frame, Message) and frame.cid == "lost-ack":
            connection.abort("the ack was lost")
            return
        original_dispatch(frame)

    connection._dispatch = lose_the_ack  # type: ignore[method-assign]
    target: dict[str, str] = {"to": "bob"} if private else {"room": "lobby"}
    sent = await alice.say("stored, ack lost", cid="lost-ack", **target)
    assert sent.cid == "lost-ack"
    assert await next_message(bob) == sent
    assert await next_message(alice) == sent  # delivered to its sender by the replay, once
    await assert_marker_is_next(bob, alice, bob, room=None if private else "lobby")


@pytest.mark.asyncio
async def test_a_repeated_cid_is_answered_with_the_original_message_and_stored_once(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice")
    bob = await chat_client(server, "bob")
    await alice.join("lobby")
    await bob.join("lobby")
    first = await alice.say("once", room="lobby", cid="same")
    again = await alice.say("once more", room="lobby", cid="same")
    assert again == first
    assert await next_message(bob) == first
    assert await next_message(alice) == first
    await assert_marker_is_next(bob, alice, bob, room="lobby")


@pytest.mark.asyncio
async def test_resume_across_a_server_restart_keeps_identity_rooms_and_private_messages(
    chat_server: ServerFactory, chat_client: ClientFactory, tmp_path: Path
) -> None:
    server = await chat_server(history={"database": str(tmp_path / "chat.db"), "replay": 2})
    alice = await chat_client(server, "alice")
    bob = await chat_client(server, "bob")
    await alice.join("lobby")
    await bob.join("lobby")
    before = await bob.say("before the restart", to="alice")
    assert await next_message(alice) == before
    identity, port = alice.session, server.port
    gate = ReconnectGate(alice)

    await server.restart()
    assert server.port == port
    disconnected = await connection_event(alice, ConnectionState.DISCONNECTED)
    assert disconnected.code == "server_shutdown"
    await gate.attempted.wait()
    await connection_event(bob, ConnectionState.DISCONNECTED)
    assert (await connection_event(bob, ConnectionState.CONNECTED)).attempt >= 1
    # bob's requests wait until its resume is done, so when `rooms` answers, bob is back in the lobby
    assert [r.room for r in (await bob.rooms()).rooms] == ["lobby"]
    in_room = [await bob.say(f"while alice is away {i}", room="lobby") for i in range(5)]
    in_private = [await bob.say(f"for alice {i}", to="alice") for i in range(5)]
    gate.release()

    received = await messages(alice, 10)
    assert [m for m in received if m.room] == in_room
    assert [m for m in received if m.room is None] == in_private
    assert (alice.session, alice.nick, alice.joined_rooms) == (identity, "alice", ["lobby"])
    await assert_marker_is_next(bob, alice, room="lobby")
    await assert_marker_is_next(bob, alice)


@pytest.mark.asyncio
async def test_an_application_restart_with_session_and_since_gets_the_private_messages_it_missed(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server(history={"replay": 3})
    alice = await chat_client(server, "alice")
    bob = await chat_client(server, "bob")
    seen = await bob.say("seen", to="alice")
    assert await next_message(alice) == seen
    identity, since = alice.session, alice.highest_id()
    assert since == seen.id
    await alice.quit()

    missed = [await bob.say(f"missed {i}", to="alice") for i in range(8)]  # stored for alice's identity
    again = await chat_client(server, "alice", session=identity, since=since)
    assert again.session == identity
    assert await messages(again, 8) == missed
    await assert_marker_is_next(bob, again)


@pytest.mark.asyncio
async def test_a_session_without_since_does_not_replay_old_private_messages_but_resumes_new_ones(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice")
    bob = await chat_client(server, "bob")
    old = await bob.say("old", to="alice")
    await alice.quit()
    again = await chat_client(server, "alice", session=alice.session)
    assert again.highest_id() == old.id  # the baseline
    gate = ReconnectGate(again)
    again.drop_connection()
    await gate.attempted.wait()
    new = await bob.say("new", to="alice")
    gate.release()
    assert await next_message(again) == new
    await assert_marker_is_next(bob, again)


# --- keepalive ---------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_idle_client_stays_connected_through_the_idle_timeout(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server(limits={"idle_timeout": 0.3})
    alice = await chat_client(server, "alice")
    await connection_event(alice, ConnectionState.CONNECTED)
    with pytest.raises(TimeoutError):  # waiting for the absence of an event: 4 idle timeouts
        await alice.recv(timeout=1.2)
    assert not alice.closed


class SilentServer:
    """A fake server that logs a client in, pings it once, then never sends another frame."""

    def __init__(self) -> None:
        self.pongs: list[Any] = []
        self.pings = 0
        self.logins = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        limits = FrameLimits(MAX_SERVER_HEADER, 0)
        writer.write(encode(Hello(server="silent", protocol=1, auth="none", nonce="00" * 32)))
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                header_len, _ = parse_prefix(await reader.readexactly(PREFIX_SIZE), limits)
                request = decode_request(await reader.readexactly(header_len))
                if request.type == "login":
                    self.logins += 1
                    udp = UdpInfo(port=0, sid=1, key="00" * 32)
                    welcome = Welcome(nick="alice", session="t", udp=udp, limits={"idle_timeout": 0.3}, ref=request.ref)
                    writer.write(encode(welcome))
                    writer.write(encode(ServerPing(t={"nested": [1, "x", None]})))
                elif request.type == "pong":
                    self.pongs.append(getattr(request, "t", None))
                elif request.type == "ping":
                    self.pings += 1

    def close(self) -> None:
        for writer in self._writers:
            writer.close()


@pytest.mark.asyncio
async def test_a_server_that_goes_silent_is_given_up_and_pings_are_answered(chat_client: ClientFactory) -> None:
    fake = SilentServer()
    listener = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    try:
        port = listener.sockets[0].getsockname()[1]
        async with connect("127.0.0.1", port, nick="alice", backoff_initial=0.05) as alice:
            disconnected = await connection_event(alice, ConnectionState.DISCONNECTED)
            assert "no frame from the server" in (disconnected.reason or "")
            assert fake.pongs == [{"nested": [1, "x", None]}]  # answered with the same `t`, and not an event
            assert fake.pings >= 1  # the client pinged the silent link before giving it up
            await connection_event(alice, ConnectionState.CONNECTED)
            assert fake.logins == 2
    finally:
        fake.close()
        listener.close()
        await listener.wait_closed()


# --- throughput --------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_ten_clients_push_two_thousand_messages_each_seen_once_by_everyone(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server()
    clients = [await chat_client(server, f"user{i}") for i in range(10)]
    for client in clients:
        await client.join("lobby")

    async def burst(client: Client) -> list[Message]:
        return await asyncio.gather(*(client.say(f"{client.nick} {i}", room="lobby") for i in range(200)))

    sent = [m for batch in await asyncio.gather(*(burst(c) for c in clients)) for m in batch]
    expected = sorted(m.id for m in sent)
    assert len(set(expected)) == 2000
    for client in clients:
        assert [m.id for m in await messages(client, 2000)] == expected


@pytest.mark.asyncio
async def test_history_takes_the_room_as_its_first_argument_like_who(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice")
    await alice.join("lobby")
    said = await alice.say("one", room="lobby")
    assert (await alice.history("lobby")).messages == [said]
    assert [m.nick for m in (await alice.who("lobby")).members] == ["alice"]
