"""Resume without loss, as bookkeeping that does no I/O (docs/protocol.md 4 and 8), and the reconnection backoff.

`ResumeState` is fed every `message` the client reads and answers which ones to deliver as events and which `say`
each acknowledges; the client asks it what `since` to send when it logs in and joins again, and which says to send
again. Nothing here touches a socket or a clock, so the tests drive it directly.

Invariants, in plain words:

- A *conversation* is one room (keyed by its folded name, docs/protocol.md 8 "Spelling") or the private conversations
  together: the server sends the messages of a room, and the private ones, in ascending id on one connection, and the
  login `since` covers all private conversations with one number. `highest` is the largest id delivered as an event.
- A message at or below `highest` has been delivered and is dropped. With the ascending order above this is exact
  without remembering every id: the only message that comes back out of order is the answer to a repeated `cid`,
  the original message, whose id is already held (it still acknowledges the say).
- A conversation whose replay was cut short (`truncated` on a `joined` or login page asked with `since`) is *caught
  up*: the client pages on with `history after=<highest>`. Until the last page has arrived its live messages are held
  back, because delivering live id 900 while 100..899 are still to be paged would make those look like duplicates.
  Pages are contiguous, so each one advances `highest`; after the last one the held-back messages above `highest`
  are delivered in id order.
- Losing the connection ends every catch-up and forgets what was held back: those messages are above `highest`, so
  the next resume replays them.
- Every `say` not yet acknowledged is kept, in the order it was made, under its `cid`. A `message` acknowledges it
  when the cid, the target (room or nick) and the sender (one of our own nicks) all match, so another member who
  copies our cid into a message of theirs cannot pass it off as our acknowledgement.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from chat.protocol.messages import Message, Say
from chat.protocol.names import fold

_FOLD_CACHE_SIZE = 4096


@dataclass(slots=True)
class Conversation:
    """One room, or (`room` None) the private conversations: what has been delivered and what is held back."""

    room: str | None
    highest: int | None = None  # largest id delivered; None: nothing yet (or, for private, not known yet)
    joined: bool = False  # a room the client is in, to join again on resume
    catching_up: bool = False
    held_back: dict[int, Message] = field(default_factory=dict)

    @property
    def since(self) -> int:
        """The `since` to ask for on resume: everything above what was delivered."""
        return self.highest or 0

    def accept(self, message: Message) -> bool:
        """True (and `highest` advances) if the message is new; False if its id was already delivered."""
        if self.highest is not None and message.id <= self.highest:
            return False
        self.highest = message.id
        return True

    def note_seen(self, message_id: int) -> None:
        """Count an id as delivered without delivering it (a baseline, or a caller's own `since`)."""
        if self.highest is None or message_id > self.highest:
            self.highest = message_id


class ResumeState:
    """Per-conversation highest ids, held-back messages and unacknowledged says of one client (see module doc)."""

    def __init__(self, *, private_since: int | None = None) -> None:
        self.rooms: dict[str, Conversation] = {}
        self.private = Conversation(None, highest=private_since)
        self._unacked: dict[str, Say] = {}
        self._own_nicks: set[str] = set()
        self._folded: dict[str, str] = {}

    # --- names ---------------------------------------------------------------------------------------------------

    def fold(self, name: str) -> str:
        """The comparison key of a name, cached: every message carries a room or nick to compare."""
        key = self._folded.get(name)
        if key is None:
            if len(self._folded) >= _FOLD_CACHE_SIZE:
                self._folded.clear()
            key = self._folded[name] = fold(name)
        return key

    def add_own_nick(self, nick: str) -> None:
        """Remember a nick this identity has had, to recognise its own acknowledgements."""
        self._own_nicks.add(self.fold(nick))

    # --- conversations -------------------------------------------------------------------------------------------

    def room(self, name: str) -> Conversation:
        """The conversation of a room, created on first use; keeps the latest spelling the server used."""
        key = self.fold(name)
        conversation = self.rooms.get(key)
        if conversation is None:
            conversation = self.rooms[key] = Conversation(name)
        else:
            conversation.room = name
        return conversation

    def conversation_of(self, message: Message) -> Conversation:
        """The room the message belongs to, or the private conversations."""
        if message.room is None:
            return self.private
        conversation = self.rooms.get(self.fold(message.room))
        return conversation if conversation is not None else self.room(message.room)

    def joined_rooms(self) -> list[Conversation]:
        """Rooms to join again on resume, in the order they were first joined."""
        return [conversation for conversation in self.rooms.values() if conversation.joined]

    # --- deliveries ----------------------------------------------------------------------------------------------

    def live(self, message: Message) -> list[Message]:
        """A message that arrived on its own: the messages to deliver now (it, or nothing)."""
        conversation = self.conversation_of(message)
        if conversation.catching_up:
            if conversation.highest is None or message.id > conversation.highest:
                conversation.held_back[message.id] = message
            return []
        return [message] if conversation.accept(message) else []

    def replay(self, conversation: Conversation, messages: Iterable[Message], *, more: bool) -> list[Message]:
        """The messages of a `joined` or of the login `history`: those to deliver, in id order.

        `more` is True when the page was asked with `since` and came back `truncated`: the conversation is caught
        up with `page()` from here on.
        """
        delivered = [m for m in sorted(messages, key=_message_id) if conversation.accept(m)]
        conversation.catching_up = more
        return delivered

    def page(self, conversation: Conversation, messages: Iterable[Message], *, truncated: bool) -> list[Message]:
        """A catch-up page (`history after=<highest>`): the messages to deliver, in id order.

        When it is the last page, the messages held back meanwhile follow and the catch-up ends. A truncated page
        that brings nothing new also ends it, so a misbehaving server cannot keep the client paging forever.
        """
        before = conversation.highest
        delivered = [m for m in sorted(messages, key=_message_id) if conversation.accept(m)]
        if truncated and conversation.highest != before:
            return delivered
        held = sorted(conversation.held_back.values(), key=_message_id)
        conversation.held_back.clear()
        conversation.catching_up = False
        delivered.extend(m for m in held if conversation.accept(m))
        return delivered

    def needs_catch_up(self) -> list[Conversation]:
        """Conversations whose replay was cut short, the private ones first."""
        rooms = [c for c in self.rooms.values() if c.catching_up]
        return [self.private, *rooms] if self.private.catching_up else rooms

    def connection_lost(self) -> None:
        """End every catch-up; what was held back is above `highest` and comes again with the next resume."""
        for conversation in (self.private, *self.rooms.values()):
            conversation.catching_up = False
            conversation.held_back.clear()

    # --- unacknowledged says -------------------------------------------------------------------------------------

    def track(self, say: Say) -> None:
        """Keep a say until its echo comes back; it must carry a cid."""
        if say.cid is None:
            raise ValueError("a tracked say needs a cid")
        self._unacked[say.cid] = say

    def acknowledge(self, message: Message) -> Say | None:
        """The say this message acknowledges (now forgotten), or None."""
        if message.cid is None:
            return None
        say = self._unacked.get(message.cid)
        if say is None or self.fold(message.sender) not in self._own_nicks:
            return None
        if say.room is not None:
            matches = message.room is not None and self.fold(message.room) == self.fold(say.room)
        else:
            matches = message.to is not None and say.to is not None and self.fold(message.to) == self.fold(say.to)
        if not matches:
            return None
        del self._unacked[message.cid]
        return say

    def forget(self, cid: str) -> Say | None:
        """Stop tracking a say (the server refused it); returns it if it was tracked."""
        return self._unacked.pop(cid, None)

    def is_tracked(self, cid: str) -> bool:
        return cid in self._unacked

    @property
    def unacked(self) -> list[Say]:
        """Says not yet acknowledged, oldest first: what a resume sends again."""
        return list(self._unacked.values())


def _message_id(message: Message) -> int:
    return message.id


class Backoff:
    """Delays between reconnection attempts: exponential from `initial`, capped at `maximum`, with jitter.

    Each delay is the current base scaled by a random factor in [1 - jitter, 1], so a server restart does not see
    every client come back in the same instant, and no delay ever exceeds the cap. `rng` makes it deterministic in
    tests.
    """

    def __init__(
        self,
        initial: float = 0.2,
        maximum: float = 5.0,
        *,
        factor: float = 2.0,
        jitter: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"backoff needs 0 < initial <= maximum, got {initial} and {maximum}")
        if factor < 1 or not 0 <= jitter <= 1:
            raise ValueError(f"backoff needs factor >= 1 and 0 <= jitter <= 1, got {factor} and {jitter}")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._base = initial
        self.attempts = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one attempt."""
        delay = self._base * (1.0 - self.jitter * self._rng.random())
        self._base = min(self.maximum, self._base * self.factor)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        """Start again from `initial`, after a connection succeeded."""
        self._base = self.initial
        self.attempts = 0
