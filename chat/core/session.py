"""What the core knows of one connection: its state, what it is logged in as, its rooms, and its `Peer`.

The listener that accepted the connection owns the `Peer` (reading, writing, closing); the core owns this record.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any

from chat.core.limits import TokenBucket
from chat.core.ports import Peer
from chat.protocol.errors import ErrorCode
from chat.protocol.messages import Ref, ServerFrame

if TYPE_CHECKING:
    from chat.core.quick import UdpPeer
    from chat.core.rooms import Room


# One shared empty set for every session that negotiated no caps: `frozenset()` is a new 216-byte object each time,
# and most connections never negotiate any (docs/performance.md, memory).
NO_CAPS: frozenset[str] = frozenset()


class State(Enum):
    """Where a connection is in its life."""

    GREETED = "greeted"  # hello sent, waiting for login
    ACTIVE = "active"  # welcome sent
    CLOSING = "closing"  # an error or quit closes it; nothing more is read


class Session:
    """A client connection as the core sees it, whatever listener it came through."""

    __slots__ = (
        "away",
        "bucket",
        "caps",
        "connected_at",
        "identity",
        "last_heard",
        "nick",
        "nick_key",
        "nonce",
        "peer",
        "pinged",
        "rooms",
        "state",
        "storage",
        "token",
        "udp",
    )

    def __init__(self, peer: Peer, bucket: TokenBucket, now: float) -> None:
        self.peer = peer
        self.bucket = bucket
        self.state = State.GREETED
        self.connected_at = now
        self.last_heard = now
        self.pinged = False
        self.nonce: bytes | None = None
        # set at login
        self.identity = 0
        self.token = ""
        self.nick = ""
        self.nick_key = ""
        self.away: str | None = None
        self.udp: UdpPeer | None = None
        self.rooms: dict[str, Room] = {}
        self.caps: frozenset[str] = NO_CAPS
        # The identity's bytes-stored-per-hour budget (shared by its connections over time; None: no limit)
        self.storage: TokenBucket | None = None

    def __repr__(self) -> str:
        return f"<Session {self.nick or '-'} {self.peer.address}>"

    @property
    def address(self) -> Any:
        return self.peer.address

    @property
    def logged_in(self) -> bool:
        return self.state is State.ACTIVE

    @property
    def open(self) -> bool:
        return self.state is not State.CLOSING and self.peer.is_open

    def heard(self, now: float) -> None:
        """The peer sent something: it is alive, and no keepalive ping is outstanding."""
        self.last_heard = now
        self.pinged = False

    def send(self, event: ServerFrame) -> None:
        """Queue an event for this connection (written when the loop turn ends)."""
        self.peer.send_event(event)

    def close_with(self, code: ErrorCode, message: str, ref: Ref | None = None) -> None:
        """Send a closing error, then close once it is written (docs/protocol.md 8, errors that close)."""
        if self.state is not State.CLOSING:
            self.state = State.CLOSING
            self.peer.close_with(code, message, ref)

    def close(self) -> None:
        self.state = State.CLOSING
        self.peer.close()

    def abort(self) -> None:
        self.state = State.CLOSING
        self.peer.abort()
