"""The local engine: what a cluster of servers would share, kept in this process's memory.

Three things live here (DESIGN.md, Scale): fan-out to a room's members (the `RoomDirectory` and its end-of-turn
flush), id allocation (message ids and quick ids), and the session registry (which session holds which identity and
nick, and the nick table with its holds). A Redis engine replaces this object; the core talks to it through the
same methods.

Why these methods are plain calls, not coroutines: each is on a path that must not await (a room's fan-out, a
`say`, the UDP gate) or must check and set in one loop turn (`claim_nick`). A Redis engine keeps the same shape:
`publish` queues to a pipeline without waiting, ids come in blocks reserved ahead, and the registry answers from the
node's own view of who is connected where, which the cluster keeps current; only login's takeover of an identity
held on another node needs a round trip, and login already awaits the store.

Invariants:
- One session per identity, one session per folded nick.
- Lookalikes (protocol.md 8, "Lookalikes"): every nick in the nick table is indexed under its confusable keys (TS #39
  skeletons, chat/protocol/names.py); a nick is free for an identity only if every nick sharing a key with it is
  free for that identity too. The keys depend on the folded nick only, so the index follows the table's keys:
  built in `load`, added to in `hold_nick`, never moved by a new spelling.
- Rooms are indexed the same way while they exist (`_LookalikeRooms`), so a new room cannot look like a live one.
- `claim_nick` is check-and-set in one step: no await between the check and the claim, so two logins racing for
  one nick cannot both win.
- Message ids increase strictly and are never reused: the counter starts above the store's highest id, and an id
  handed out is never handed out again even if its message turns out to be a duplicate or fails to store.
- `committed_through` is the highest message id whose commit has been delivered; a new room's watermark.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from chat.core.rooms import Room, RoomDirectory
from chat.protocol.names import confusable_keys
from chat.store.records import NickHolder

if TYPE_CHECKING:
    from chat.core.session import Session

MAX_REMEMBERED_QUICK_CIDS = 100_000


class _LookalikeRooms(RoomDirectory):
    """The room directory, with every live room also indexed by its confusable keys."""

    def __init__(self, schedule: Callable[[], None], watermark: Callable[[], int]) -> None:
        super().__init__(schedule, watermark)
        self._by_confusable: dict[str, Room] = {}

    def lookalike(self, name: str, key: str) -> Room | None:
        """A live room whose name looks like `name` but is not the same name (another fold), if any."""
        for confusable in confusable_keys(name):
            room = self._by_confusable.get(confusable)
            if room is not None and room.key != key:
                return room
        return None

    def add_member(self, name: str, key: str, session: Session, *, hold: bool = False) -> Room:
        new = self.get(key) is None
        room = super().add_member(name, key, session, hold=hold)
        if new:
            for confusable in confusable_keys(room.name):
                self._by_confusable.setdefault(confusable, room)
        return room

    def remove_member(self, room: Room, session: Session) -> None:
        super().remove_member(room, session)
        if self.get(room.key) is not room:
            for confusable in confusable_keys(room.name):
                if self._by_confusable.get(confusable) is room:
                    del self._by_confusable[confusable]


class LocalEngine:
    """Rooms, ids, the registry and the nick table of a single server process."""

    def __init__(self, schedule_flush: Callable[[], None]) -> None:
        self.rooms = _LookalikeRooms(schedule_flush, lambda: self.committed_through)
        self._by_identity: dict[int, Session] = {}
        self._by_nick: dict[str, Session] = {}
        self._nicks: dict[str, NickHolder] = {}
        self._by_confusable: dict[str, set[str]] = {}  # confusable key -> folded keys of the nick table
        self._last_id = 0
        self.committed_through = 0
        self._last_qid = 0
        self._quick_cids: OrderedDict[tuple[int, str], tuple[int, float]] = OrderedDict()

    def load(self, last_id: int, nicks: dict[str, NickHolder]) -> None:
        """Start from the store's state: its highest message id and every nick hold."""
        self._last_id = max(self._last_id, last_id)
        self.committed_through = max(self.committed_through, last_id)
        self._nicks = dict(nicks)
        self._by_confusable = {}
        for key, holder in self._nicks.items():
            self._index_nick(key, holder.nick)

    # --- fan-out -------------------------------------------------------------------------------------------------

    def flush(self) -> None:
        """End of a loop turn: every room hands its batch to its members."""
        self.rooms.flush()

    # --- ids -----------------------------------------------------------------------------------------------------

    def next_message_id(self) -> int:
        self._last_id += 1
        return self._last_id

    def committed(self, message_id: int) -> None:
        """A commit up to `message_id` has been delivered."""
        if message_id > self.committed_through:
            self.committed_through = message_id

    def next_qid(self) -> int:
        """Increasing and unique across restarts: milliseconds since the epoch times 1024, plus a counter."""
        self._last_qid = max(self._last_qid + 1, (time.time_ns() // 1_000_000) * 1024)
        return self._last_qid

    def quick_cid(self, identity: int, cid: str, now: float) -> int | None:
        """The qid an identity's quick message with this cid got in the last 10 minutes, if any."""
        known = self._quick_cids.get((identity, cid))
        return known[0] if known is not None and known[1] > now else None

    def remember_quick_cid(self, identity: int, cid: str, qid: int, expires: float, now: float) -> None:
        self._quick_cids[(identity, cid)] = (qid, expires)
        while self._quick_cids:
            key, (_, until) = next(iter(self._quick_cids.items()))
            if until > now and len(self._quick_cids) <= MAX_REMEMBERED_QUICK_CIDS:
                break
            del self._quick_cids[key]

    # --- the registry --------------------------------------------------------------------------------------------

    def by_identity(self, identity: int) -> Session | None:
        return self._by_identity.get(identity)

    def by_nick(self, nick_key: str) -> Session | None:
        return self._by_nick.get(nick_key)

    def register(self, session: Session) -> None:
        self._by_identity[session.identity] = session
        self._by_nick[session.nick_key] = session

    def unregister(self, session: Session) -> bool:
        """Forget `session`; False if it was not (or no longer) registered, e.g. after a takeover."""
        if self._by_identity.get(session.identity) is not session:
            return False
        del self._by_identity[session.identity]
        if self._by_nick.get(session.nick_key) is session:
            del self._by_nick[session.nick_key]
        return True

    def sessions(self) -> list[Session]:
        return list(self._by_identity.values())

    def __len__(self) -> int:
        return len(self._by_identity)

    # --- nicks ---------------------------------------------------------------------------------------------------

    def nick_holder(self, key: str) -> NickHolder | None:
        """Who last held the nick with this folded key, or None if nobody ever did."""
        return self._nicks.get(key)

    def nick_free_for(self, key: str, identity: int | None, now_ms: int, hold_ms: int, nick: str | None = None) -> bool:
        """May `identity` (None: a new one) take the nick `nick` (folded: `key`)? Not if another identity is on it or
        holds it, or on or holding a nick that looks like it (the same confusable key, docs/protocol.md 8)."""
        if not self._fold_free_for(key, identity, now_ms, hold_ms):
            return False
        return all(
            self._fold_free_for(other, identity, now_ms, hold_ms)
            for other in self.lookalike_nicks(key if nick is None else nick)
            if other != key
        )

    def lookalike_nicks(self, nick: str) -> set[str]:
        """The folded keys of every nick in the table that shares a confusable key with `nick` (its own included)."""
        found: set[str] = set()
        for confusable in confusable_keys(nick):
            found |= self._by_confusable.get(confusable, set())
        return found

    def taken_lookalike(self, key: str, identity: int | None, now_ms: int, hold_ms: int, nick: str) -> str | None:
        """The spelling of a nick that looks like `nick` and is not free for `identity`, if that is why it is not
        free: the nick itself is (for the error message, docs/protocol.md 2.8)."""
        if not self._fold_free_for(key, identity, now_ms, hold_ms):
            return None
        for other in sorted(self.lookalike_nicks(nick) - {key}):
            holder = self._nicks.get(other)
            if holder is not None and not self._fold_free_for(other, identity, now_ms, hold_ms):
                return holder.nick
        return None

    def _fold_free_for(self, key: str, identity: int | None, now_ms: int, hold_ms: int) -> bool:
        online = self._by_nick.get(key)
        if online is not None and online.identity != identity:
            return False
        holder = self._nicks.get(key)
        if holder is None or holder.identity == identity:
            return True
        return not (hold_ms > 0 and now_ms - holder.last_used < hold_ms)

    def hold_nick(self, key: str, nick: str, identity: int, now_ms: int) -> None:
        """Record that `identity` holds (or has just used) the nick."""
        self._nicks[key] = NickHolder(identity, nick, now_ms)
        self._index_nick(key, nick)

    def _index_nick(self, key: str, nick: str) -> None:
        for confusable in confusable_keys(nick):
            self._by_confusable.setdefault(confusable, set()).add(key)

    def claim_nick(self, session: Session, key: str, nick: str, now_ms: int, hold_ms: int) -> bool:
        """Check and take a nick for a logged-in session in one step; moves it in the registry. False if taken."""
        if not self.nick_free_for(key, session.identity, now_ms, hold_ms, nick):
            return False
        if self._by_nick.get(session.nick_key) is session:
            del self._by_nick[session.nick_key]
        self._by_nick[key] = session
        self.hold_nick(key, nick, session.identity, now_ms)
        return True
