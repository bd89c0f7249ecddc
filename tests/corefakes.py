"""Test doubles of the core's seams: an in-memory `Peer` that records what the core sent, and logged-in sessions.

These stand in for a connection (the listener's side of `chat.core.ports.Peer`), not for the code under test: the
router, engine and rooms are the real objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chat.core.limits import TokenBucket
from chat.core.session import Session, State
from chat.engine.local import LocalEngine
from chat.protocol.errors import ErrorCode
from chat.protocol.messages import Ref, ServerFrame
from chat.protocol.names import fold


class FakeCodec:
    def encode(self, event: ServerFrame) -> Any:
        return event

    def join(self, parts: list[Any]) -> Any:
        return list(parts)

    def encode_batch(self, events: Sequence[ServerFrame]) -> Any:
        return list(events)


CODEC = FakeCodec()


@dataclass(eq=False)
class MemoryPeer:
    """A connection in memory: every event sent to it is kept in `events`, in order; closing is recorded."""

    address: Any = ("memory", 0)
    events: list[ServerFrame] = field(default_factory=list)
    closed_with: tuple[ErrorCode, str] | None = None
    closed: bool = False
    aborted: bool = False

    @property
    def codec(self) -> FakeCodec:
        return CODEC

    def send_event(self, event: ServerFrame) -> None:
        self.events.append(event)

    def send_batch(self, encoded: Any, events: Sequence[ServerFrame]) -> None:
        self.events.extend(events)

    def close_with(self, code: ErrorCode, message: str, ref: Ref | None = None) -> None:
        self.closed_with = (code, message)
        self.closed = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def throttle(self, seconds: float) -> None:
        pass

    def negotiated(self, caps: frozenset[str]) -> None:
        """The core switched caps on for this connection (lazy-members changes no codec: nothing to do)."""

    @property
    def is_open(self) -> bool:
        return not self.closed

    @property
    def pending_bytes(self) -> int:
        return 0

    async def drain(self) -> None:
        pass

    def of_type(self, kind: type[ServerFrame]) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]


def logged_in(engine: LocalEngine, nick: str, identity: int, now: float = 0.0) -> Session:
    """A session as the service leaves it after login: registered by identity and nick."""
    session = Session(MemoryPeer(address=(nick, identity)), TokenBucket(1000.0, 1000, now), now)
    session.state = State.ACTIVE
    session.identity = identity
    session.nick = nick
    session.nick_key = fold(nick)
    engine.register(session)
    engine.hold_nick(session.nick_key, nick, identity, 0)
    return session


def peer_of(session: Session) -> MemoryPeer:
    assert isinstance(session.peer, MemoryPeer)
    return session.peer
