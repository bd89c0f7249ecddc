"""The records the history store takes and gives: drafts, stored messages, files, nick holds, pages, scopes.

They are frozen msgspec Structs rather than dataclasses because the group commit makes one `StoredMessage` and one
`Appended` per message: a frozen dataclass of eight fields costs about 1.9 us to build on the development machine,
a Struct 0.2 us (timeit). `gc=False` where a record cannot hold a reference cycle, so a busy server does not
trigger collections by allocating them.
"""

from __future__ import annotations

from msgspec import Struct


class FileRecord(Struct, frozen=True, gc=False):
    """A stored file: its id (also its name on disk), display name, size, checksum, and who may fetch it (anyone
    for a room file; the owner and the recipient identity for a private one)."""

    fid: str
    name: str
    size: int
    sha256: str
    owner: int = 0
    room_key: str | None = None
    recipient_identity: int | None = None
    created: int = 0


class StoredMessage(Struct, frozen=True, gc=False):
    """A message as kept: `room` for a room message, `recipient` (the recipient's nick, spelled as its holder
    spells it) for a private one; `file` when it announces a file."""

    id: int
    ts: int
    sender: str
    room: str | None
    recipient: str | None
    text: str
    cid: str | None
    file: FileRecord | None = None


class Draft(Struct, frozen=True, gc=False):
    """A message to store: who sent it (identity and nick), where, what, and its client id.

    `id` is None for the store to assign the next id; a caller that allocates ids itself (the engine seam) sets
    it, in increasing order: the row is stored under that id, and an id not above every id stored before is
    refused (the draft gets None)."""

    ts: int
    sender_identity: int
    sender: str
    sender_key: str
    text: str
    cid: str | None
    room: str | None = None
    room_key: str | None = None
    recipient: str | None = None
    recipient_key: str | None = None
    recipient_identity: int | None = None
    file: FileRecord | None = None
    id: int | None = None


class Appended(Struct, frozen=True, gc=False):
    """The outcome of one draft: the stored message, and whether it was already stored under the same cid."""

    message: StoredMessage
    duplicate: bool


class NickHolder(Struct, frozen=True, gc=False):
    """The identity that last held a nick, the spelling it used, and when it last used it (ms)."""

    identity: int
    nick: str
    last_used: int


class Page(Struct, frozen=True):
    """Messages in ascending id order, and whether more lie beyond the page in its direction."""

    messages: list[StoredMessage]
    truncated: bool


Branch = tuple[str, tuple[object, ...]]  # a WHERE clause over `messages AS m` that one index serves, its parameters


class Scope(Struct, frozen=True, gc=False):
    """Which messages a query ranges over: one room, the private messages of one identity, or one conversation.

    A scope is the union of one or two branches, each a condition that one index answers in id order, so a page
    reads at most `limit + 1` index entries per branch however long the history is (no OR over two indexes, which
    SQLite can only answer by collecting every match and sorting it)."""

    branches: tuple[Branch, ...]

    @staticmethod
    def room(room_key: str) -> Scope:
        """The messages of one room (index messages_by_room)."""
        return Scope((("m.room_key = ?", (room_key,)),))

    @staticmethod
    def private(identity: int) -> Scope:
        """Every private message `identity` sent or received (indexes private_sent and private_received)."""
        return Scope(
            (
                ("m.sender_identity = ? AND m.recipient_identity IS NOT NULL", (identity,)),
                ("m.recipient_identity = ?", (identity,)),
            )
        )

    @staticmethod
    def conversation(identity: int, other_key: str) -> Scope:
        """Between `identity` and whoever held the nick `other_key` when each message was sent (indexes
        conversation_sent and conversation_received)."""
        return Scope(
            (
                ("m.sender_identity = ? AND m.recipient_key = ?", (identity, other_key)),
                ("m.recipient_identity = ? AND m.sender_key = ?", (identity, other_key)),
            )
        )
