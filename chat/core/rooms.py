"""Rooms: who is in which room, batched fan-out, and the watermark that makes a join exactly-once.

A room exists while it has members; it keeps the spelling of the join that created it (docs/protocol.md 8).

Fan-out is batched per loop turn: `publish` appends an event to the room's pending list and asks, once per turn,
to be flushed; `flush` encodes the pending events once per codec, joins them, and hands the same encoded batch to
every member of that codec. No per-recipient encoding, no per-recipient await, and per member one call per turn
however many messages the turn carried. Order is kept: every member sees the room's events in publish order; a member
added during a turn gets the turn's events from where it came in (the joins of one turn share one batch), and one
leaving gets everything published before it leaves (`remove` flushes first).

The join watermark (docs/protocol.md 8, "a message is either in `joined.messages` or sent live, never both and never
neither"): a joiner is added first, as *joining*: the room's events from then on are held for it, not sent. The
room's `watermark` is the highest message id published to it before that moment (or the engine's committed id when
the room is new), so every message up to it is stored and was fanned out before the joiner was added. The service
reads the history page up to the watermark (however long the read takes), sends `joined`, then `release`s the
held events. A message is in the page if its id is at most the watermark, held otherwise.

An event about a member that the member itself must not get (its own `presence join`, `away`, `nick`) goes through
the batch too, with `publish(..., skip=member)`: the other members get it with the turn's other events, so a codec
that merges presence events (presence-batch, docs/protocol.md 10.2) makes one frame of the joins of one turn. A skipped
member still joining simply does not have it held; a skipped live member gets the turn's batch without it, encoded
for it alone (rare: one member per away or nick change, never a message).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from chat.core.ports import Codec, Peer
from chat.protocol.messages import Message, ServerFrame

if TYPE_CHECKING:
    from chat.core.session import Session


class Room:
    """One room: display name, folded key, members in join order, events pending for this turn, the watermark."""

    __slots__ = (
        "_added_at",
        "_by_codec",
        "_joining",
        "_pending",
        "_schedule",
        "_skips",
        "key",
        "members",
        "name",
        "watermark",
    )

    def __init__(self, name: str, key: str, watermark: int, schedule: Callable[[Room], None]) -> None:
        self.name = name
        self.key = key
        self.members: dict[Session, None] = {}
        self.watermark = watermark
        self._by_codec: dict[Codec, dict[Peer, None]] = {}
        self._joining: dict[Session, list[ServerFrame]] = {}
        self._pending: list[ServerFrame] = []
        self._skips: dict[int, Session] = {}  # index in _pending -> the member it is about, which must not get it
        self._added_at: dict[Session, int] = {}  # a member added this turn -> the index in _pending it came in at
        self._schedule = schedule

    def __contains__(self, member: object) -> bool:
        return member in self.members

    def __iter__(self) -> Iterator[Session]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    # --- membership ----------------------------------------------------------------------------------------------

    def add(self, session: Session, *, hold: bool) -> None:
        """Add a member; with `hold`, its events are held until `release` (a join in progress).

        The turn's pending events are not flushed: the member is marked as coming in at their current end, and gets
        only what is published after it, so the joins of one turn share one batch (docs/protocol.md 10.2)."""
        if self._pending:
            self._added_at[session] = len(self._pending)
        self.members[session] = None
        if hold:
            self._joining[session] = []
        else:
            self._by_codec.setdefault(session.peer.codec, {})[session.peer] = None

    def release(self, session: Session) -> list[ServerFrame]:
        """End a join: the member gets the room's events from now on; returns those held meanwhile."""
        self.flush()
        held = self._joining.pop(session, None)
        if held is None:
            return []
        if session in self.members:
            self._by_codec.setdefault(session.peer.codec, {})[session.peer] = None
        return held

    def remove(self, session: Session) -> None:
        """Take a member out, after it got every event published before."""
        self.flush()
        self.members.pop(session, None)
        self._joining.pop(session, None)
        peers = self._by_codec.get(session.peer.codec)
        if peers is not None:
            peers.pop(session.peer, None)
            if not peers:
                del self._by_codec[session.peer.codec]

    # --- fan-out -------------------------------------------------------------------------------------------------

    def publish(self, event: ServerFrame, *, skip: Session | None = None) -> None:
        """Send an event to every member at the end of this loop turn, in order with the room's other events;
        `skip` is the member it is about, which must not get it (its own presence)."""
        if not self._pending:
            self._schedule(self)
        if skip is not None:
            assert skip in self.members, "only a member can be skipped"
            self._skips[len(self._pending)] = skip
        self._pending.append(event)
        if type(event) is Message:
            self.watermark = event.id

    def flush(self) -> None:
        """Hand this turn's events to the members: encoded once per codec, one batch per member."""
        events = self._pending
        if not events:
            return
        self._pending = []
        skips, self._skips = self._skips, {}
        added, self._added_at = self._added_at, {}
        # The members whose share of the batch is not all of it: skipped by an event, or added during the turn
        special: dict[Peer, Session] = {}
        if skips or added:
            special = {session.peer: session for session in skips.values()}
            special.update((session.peer, session) for session in added)
        for codec, peers in self._by_codec.items():
            encoded = None
            for peer in peers:
                session = special.get(peer) if special else None
                if session is None:
                    if encoded is None:
                        encoded = codec.encode_batch(events)
                    peer.send_batch(encoded, events)
                else:
                    own = _share(events, skips, added, session)
                    if own:
                        peer.send_batch(codec.encode_batch(own), own)
        for session, held in self._joining.items():
            held.extend(_share(events, skips, added, session) if session.peer in special else events)


def _share(
    events: list[ServerFrame], skips: dict[int, Session], added: dict[Session, int], session: Session
) -> list[ServerFrame]:
    """The events of a turn that `session` gets: from where it was added on, less those published with its skip."""
    start = added.get(session, 0)
    return [event for index, event in enumerate(events) if index >= start and skips.get(index) is not session]


class RoomDirectory:
    """Every room with at least one member, by folded name; rooms ask it to be flushed at the end of the turn."""

    def __init__(self, schedule: Callable[[], None], watermark: Callable[[], int]) -> None:
        self._rooms: dict[str, Room] = {}
        self._dirty: list[Room] = []
        self._schedule_turn = schedule
        self._watermark = watermark
        self.changes = 0  # rooms created or removed so far: a cached ordering of the rooms is current while unchanged

    def get(self, key: str) -> Room | None:
        return self._rooms.get(key)

    def add_member(self, name: str, key: str, session: Session, *, hold: bool = False) -> Room:
        """Put `session` in the room, creating it with this spelling if it does not exist."""
        room = self._rooms.get(key)
        if room is None:
            room = self._rooms[key] = Room(name, key, self._watermark(), self._mark_dirty)
            self.changes += 1
        room.add(session, hold=hold)
        return room

    def remove_member(self, room: Room, session: Session) -> None:
        """Take `session` out; a room left empty ceases to exist."""
        room.remove(session)
        if not room.members and self._rooms.get(room.key) is room:
            del self._rooms[room.key]
            self.changes += 1

    def _mark_dirty(self, room: Room) -> None:
        if not self._dirty:
            self._schedule_turn()
        self._dirty.append(room)

    def flush(self) -> None:
        """Flush every room that published this turn."""
        while self._dirty:
            dirty, self._dirty = self._dirty, []
            for room in dirty:
                room.flush()

    def __iter__(self) -> Iterator[Room]:
        return iter(self._rooms.values())

    def __len__(self) -> int:
        return len(self._rooms)
