"""The storm role of scripts/bench: clients of the client library, rooms of them, through a server restart.

Each process owns whole rooms, so it can check them alone: a room's first client is its speaker. Before the restart
the speaker says `before` messages and every member receives them; the main process then restarts the server
(SIGTERM, start again on the same database and port). Every client resumes by itself, with the library's backoff and
jitter (token login, rejoin with `since`); a client counts as resumed when a `ping` it sent after the disconnect is
answered, which the library sends only once the client is READY (rooms joined again, pages caught up). Each speaker
says `after` messages as soon as it has resumed, while others may still be reconnecting, so those must reach them
through the rejoin's `since` replay. In the end every member must hold exactly the ids its speaker got back.

The library's `connect()` has no source-address option, so this module swaps the connection class it opens for one
that binds to the address in a context variable (each client's task sets it; the client's supervisor task inherits
it). The option the library should grow: `connect(..., local_addr=(host, port))`, passed to
`asyncio.open_connection` in `Connection.open`.
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl as ssl_module
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from benchwire import bounded, source_address

import chat.client.client as client_module
from chat.client import Client, ClientClosed, ConnectionEvent, ConnectionState, Message, connect
from chat.client.connection import CLIENT_LIMITS, Connection
from chat.protocol.frames import FrameLimits

if TYPE_CHECKING:
    from benchworkers import Channel

SOURCE_ADDRESS: contextvars.ContextVar[str | None] = contextvars.ContextVar("chat_bench_source", default=None)
SETUP_CONCURRENCY = 100


class SourceBoundConnection(Connection):
    """A client-library connection opened from the loopback address in SOURCE_ADDRESS (see the module doc)."""

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        ssl: ssl_module.SSLContext | bool | None = None,
        limits: FrameLimits = CLIENT_LIMITS,
        local_addr: tuple[str, int] | None = None,
    ) -> Connection:
        source = SOURCE_ADDRESS.get()
        if source is not None:
            local_addr = (source, 0)
        return await super().open(host, port, ssl=ssl, limits=limits, local_addr=local_addr)


def bind_clients_to_source_addresses() -> None:
    """Make every `Client` of this process open its connections through SourceBoundConnection."""
    client_module.Connection = SourceBoundConnection  # type: ignore[attr-defined]


@dataclass
class StormSpec:
    """Rooms `rooms` of `room_size` clients each (client n is in room n // room_size, nick c<n>)."""

    port: int
    secret: str | None
    rooms: list[int]
    room_size: int
    before: int
    after: int
    timeout_s: float


@dataclass
class Member:
    """One client and what it saw."""

    number: int
    room: str
    client: Client
    speaker: bool
    ids: list[int] = field(default_factory=list)
    said: list[int] = field(default_factory=list)  # a speaker's own ids, as acknowledged
    disconnects: int = 0
    attempts: int = 0  # reconnection attempts of the last resume
    resumed_ns: int = 0
    said_after: bool = False
    closed: str | None = None
    probe: asyncio.Task[None] | None = None
    after: int = 0

    async def watch(self) -> None:
        """Consume the client's events: message ids, and on a disconnect start the resume probe."""
        async for event in self.client:
            if isinstance(event, Message):
                self.ids.append(event.id)
            elif isinstance(event, ConnectionEvent):
                if event.state is ConnectionState.DISCONNECTED:
                    self.disconnects += 1
                    if self.probe is None:
                        self.probe = asyncio.create_task(self._probe())
                elif event.state is ConnectionState.CONNECTED:
                    self.attempts = event.attempt
                elif event.state is ConnectionState.CLOSED:
                    self.closed = event.reason

    async def _probe(self) -> None:
        """Resumed once a ping sent now is answered (the library sends it when READY); a speaker then talks."""
        try:
            await self.client.ping()
            self.resumed_ns = time.monotonic_ns()
            if self.speaker:
                await self.say(self.after, "after")
                self.said_after = True
        except ClientClosed:
            pass

    async def say(self, count: int, when: str) -> None:
        for index in range(count):
            message = await self.client.say(f"{when} {index} from c{self.number}", room=self.room)
            self.said.append(message.id)


async def storm(channel: Channel, spec: StormSpec) -> None:
    """Connect and join every client, talk, wait for the restart and every resume, report."""
    bind_clients_to_source_addresses()
    numbers = [room * spec.room_size + k for room in spec.rooms for k in range(spec.room_size)]
    members: list[Member] = []
    watchers: list[asyncio.Task[None]] = []
    started = time.monotonic()

    async def open_member(index: int) -> Member:
        number = numbers[index]
        SOURCE_ADDRESS.set(source_address(number))  # this task's context, inherited by the client's supervisor
        client = await connect(
            "127.0.0.1", spec.port, nick=f"c{number}", secret=spec.secret, udp=False, connect_timeout=60
        )
        room = f"storm{number // spec.room_size}"
        await client.join(room)
        member = Member(number, room, client, speaker=number % spec.room_size == 0, after=spec.after)
        members.append(member)
        watchers.append(asyncio.create_task(member.watch()))
        return member

    outcomes = await bounded(len(numbers), open_member, SETUP_CONCURRENCY)
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    if failed:
        channel.send("error", {"traceback": f"{len(failed)} storm clients could not join: {failed[0]!r}"})
        return
    setup_s = time.monotonic() - started
    speakers = [m for m in members if m.speaker]
    await asyncio.gather(*(m.say(spec.before, "before") for m in speakers))
    by_room = {m.room: m for m in speakers}
    await _until(lambda: all(len(m.ids) >= len(by_room[m.room].said) for m in members), 60)
    channel.send("ready", {"setup_s": setup_s})
    await channel.get("go")
    cpu_before = time.process_time()

    def complete() -> bool:
        return (
            all(m.resumed_ns for m in members)
            and all(m.said_after for m in speakers)
            and all(len(m.ids) >= len(by_room[m.room].said) for m in members)
        )

    timed_out = not await _until(complete, spec.timeout_s)
    cpu = time.process_time() - cpu_before
    lost = dup = unexpected = 0
    for member in members:
        expected, got = set(by_room[member.room].said), set(member.ids)
        lost += len(expected - got)
        unexpected += len(got - expected)
        dup += len(member.ids) - len(got)
    channel.send(
        "done",
        {
            "clients": len(members),
            "resumed": sum(1 for m in members if m.resumed_ns),
            "resumed_ns": [m.resumed_ns for m in members if m.resumed_ns],
            "disconnected": sum(1 for m in members if m.disconnects),
            "closed": sum(1 for m in members if m.closed),
            "first_closed_reason": next((m.closed for m in members if m.closed), None),
            "max_attempts": max((m.attempts for m in members), default=0),
            "messages_expected": sum(len(by_room[m.room].said) for m in members),
            "lost": lost,
            "dup": dup,
            "unexpected": unexpected,
            "timed_out": timed_out,
            "cpu_s": cpu,
        },
    )
    await channel.get("exit")
    for watcher in watchers:
        watcher.cancel()


async def _until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll `condition()` every 20 ms; False if it still fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True
