"""What `Client.recv()` returns: server frames as they came, plus connection-state changes.

Every event has a `type` that is its wire type and attributes named as on the wire (except `from`, which is
`sender`), because the events ARE the typed frames of `chat.protocol.messages`:

- `Message` (`"message"`): every chat message this client should show, exactly once, in ascending id per room and for
  the private conversations: live ones, the client's own (the acknowledged echo of its `say`), the replay of a
  `join`, the private messages replayed at login, and everything recovered by a resume. `event.replayed` is True
  only for the context a `join` without `since` replays (the room's latest messages from before the join, a
  `ReplayedMessage`): a bot skips those so it does not answer old requests at every start. Messages missed while
  the client was away (a resume's `since` replay, the private replay of `connect(..., since=)`) are not marked:
  they are new to the reader.
- `Presence` (`"presence"`): someone joined, parted, quit, changed nick or went away.
- `Error` (`"error"`): an error the server sent without answering one of our requests (one that does not close the
  connection; the closing ones become a `ConnectionEvent`).
- `QuickMessage` (`"quick"`): a quick message (not stored), whichever path (UDP or TCP) carried it, exactly once.
- `Typing` (`"typing"`): defined here; someone is typing (best effort, UDP only).
- `ConnectionEvent` (`"connection"`): defined here; the link went down, is being re-established, is back, or the
  client has ended.

Replies to the client's own requests go to the call that made them and are not events; the one exception is
`Message`, see above.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, TypeAlias

import msgspec

from chat.protocol.messages import Message, ServerFrame


class ReplayedMessage(Message, kw_only=True):
    """A message of the context a `join` without `since` replays: from before the join, so not news to act on."""

    replayed: ClassVar[bool] = True

    @classmethod
    def of(cls, message: Message) -> ReplayedMessage:
        """The same message, marked replayed."""
        return cls(**msgspec.structs.asdict(message))


class ConnectionState(StrEnum):
    """The states a `ConnectionEvent` reports."""

    CONNECTED = "connected"  # logged in (attempt 0: the first connection; above 0: a resume)
    DISCONNECTED = "disconnected"  # the link was lost; the client will reconnect
    RECONNECTING = "reconnecting"  # trying again after `delay` seconds (attempt 1, 2, ...)
    CLOSED = "closed"  # the client has ended; this is the last event


class ConnectionEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A change in the state of the client's link to the server, for a UI to show.

    `reason` says what happened in words, `code` is the server's error code when one caused it (`server_shutdown`,
    `timeout`, `session_taken`, ...), `attempt` counts reconnection attempts since the link was lost, and `delay` is
    the backoff before a reconnection attempt.
    """

    type: ClassVar[str] = "connection"
    state: ConnectionState
    reason: str | None = None
    code: str | None = None
    attempt: int = 0
    delay: float | None = None


class Typing(msgspec.Struct, frozen=True, kw_only=True):
    """Someone is typing to this client (`to` is our nick) or in a room; best effort, by UDP only. A UI shows it for
    a few seconds (`TYPING_SHOWN_SECONDS`) unless another one comes."""

    type: ClassVar[str] = "typing"
    sender: str
    to: str | None = None
    room: str | None = None


TYPING_SHOWN_SECONDS = 5.0

Event: TypeAlias = ServerFrame | ConnectionEvent | Typing
"""Anything `Client.recv()` returns; switch on `event.type` or `isinstance`."""
