"""The core's seams: what it needs of a connection (`Peer`, with its `Codec`) and of the history store (`Store`).

The core (service, rooms, quick router, files) never sees a socket, a frame or a line of IRC: it sends domain events
(the typed server frames of `chat.protocol.messages`) to peers. Each listener (TCP today; IRC and WebSocket next)
brings a `Codec` that turns an event into what its connections write, and a `Peer` per connection that queues it.

A room fans out in batches: the events of one loop turn are encoded once per codec (`Codec.encode`, then
`Codec.join` of the turn's parts) and the same encoded batch goes to every member with that codec
(`Peer.send_encoded`). So the cost of a message is per codec, and the cost of a member is per turn, not per message.
A codec that must differ per recipient (IRC does not echo a message to its sender) gets the events with the
batch (`Peer.send_batch`) and may re-encode for that one peer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Protocol

from chat.protocol.errors import ErrorCode
from chat.protocol.messages import Ref, ServerFrame
from chat.store.records import Appended, Draft, FileRecord, NickHolder, Page, Scope

StoredCallback = Callable[[Appended | None], None]  # None: the store failed


class Codec(Hashable, Protocol):
    """How one listener writes events; peers that share a codec object share each encoded batch."""

    def encode(self, event: ServerFrame) -> Any:
        """One event as this listener writes it (bytes for TCP)."""
        ...

    def join(self, parts: list[Any]) -> Any:
        """Several encoded events as one unit, to be written in order."""
        ...

    def encode_batch(self, events: Sequence[ServerFrame]) -> Any:
        """A room's events of one turn as one unit, in order (a codec may merge events, as presence-batch does)."""
        ...


class Peer(Protocol):
    """One connection as the core sees it: non-blocking sends, closing, and how much is waiting to be written."""

    @property
    def codec(self) -> Codec:
        """The listener's codec; the same object for every connection that encodes alike."""
        ...

    @property
    def address(self) -> Any:
        """Where the connection comes from, for logs."""
        ...

    def negotiated(self, caps: frozenset[str]) -> None:
        """The session negotiated these caps at login (docs/protocol.md 10); the peer may switch to another codec."""
        ...

    def send_event(self, event: ServerFrame) -> None:
        """Queue one event; it is written when the loop turn ends."""
        ...

    def send_batch(self, encoded: Any, events: Sequence[ServerFrame]) -> None:
        """Queue a room's encoded batch (`codec.join` of the events' encodings)."""
        ...

    def close_with(self, code: ErrorCode, message: str, ref: Ref | None = None) -> None:
        """Send a closing `error`, then close once it is written."""
        ...

    def close(self) -> None:
        """Close after what is queued is written."""
        ...

    def abort(self) -> None:
        """Drop the connection now, discarding what is queued."""
        ...

    def throttle(self, seconds: float) -> None:
        """Read nothing more from this connection for `seconds` (a file upload over its byte rate)."""
        ...

    @property
    def is_open(self) -> bool:
        """False once closing or closed."""
        ...

    @property
    def pending_bytes(self) -> int:
        """Bytes queued or buffered for this connection and not yet sent."""
        ...

    async def drain(self) -> None:
        """Wait until the connection's queue is below its high-water mark (a file download's backpressure)."""
        ...


class Store(Protocol):
    """The history store as the core uses it: group-committed appends, ordered writes, reads off the loop."""

    def submit(self, draft: Draft, on_stored: StoredCallback) -> None:
        """Store `draft` in the next group commit; `on_stored` runs on the loop after the commit, in submit order."""
        ...

    def hold_nick(self, key: str, nick: str, identity: int, now_ms: int) -> None:
        """Record (ordered with the appends) that `identity` holds the nick."""
        ...

    def create_identity(self, token: str, now_ms: int) -> Awaitable[int]:
        """A new identity, queued in order with the appends."""
        ...

    async def identity_for_token(self, token: str) -> int | None: ...

    async def page(
        self, scope: Scope, *, after: int | None = None, before: int | None = None, limit: int = 50
    ) -> Page: ...

    def add_file(self, record: FileRecord) -> Awaitable[None]:
        """Record a stored file, queued before any message submitted after this call."""
        ...

    async def file(self, fid: str) -> FileRecord | None: ...

    async def files_size(self, owner: int | None = None) -> int: ...

    async def last_id(self) -> int: ...

    async def load_nicks(self) -> dict[str, NickHolder]: ...

    async def delete_older_than(self, cutoff_ms: int) -> int: ...

    def delete_files_older_than(self, cutoff_ms: int) -> Awaitable[list[str]]: ...

    def flush(self) -> Awaitable[None]:
        """Done when everything submitted so far is committed and its callbacks have run."""
        ...
