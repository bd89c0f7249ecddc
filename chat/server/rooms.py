"""Rooms and fan-out: who is in which room, and one encoded frame written to every member.

A room exists while it has members; it keeps the spelling of the join that created it (PROTOCOL.md 8). Fan-out
calls each member's non-blocking `send`: no per-recipient encoding and no per-recipient await, so a stalled member
costs the others nothing (its own send queue cap cuts it off).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class Member(Protocol):
    """What a room needs of a session."""

    nick: str

    def send(self, frame: bytes) -> None: ...


class Room:
    """One room: its display name, its folded key and its members in join order."""

    __slots__ = ("key", "members", "name")

    def __init__(self, name: str, key: str) -> None:
        self.name = name
        self.key = key
        self.members: dict[Member, None] = {}

    def __contains__(self, member: object) -> bool:
        return member in self.members

    def __iter__(self) -> Iterator[Member]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    def fan_out(self, frame: bytes, *, skip: Member | None = None) -> None:
        """Write the same bytes to every member (but `skip`)."""
        for member in list(self.members):
            if member is not skip:
                member.send(frame)


class RoomDirectory:
    """Every room with at least one member, by folded name."""

    def __init__(self) -> None:
        self._rooms: dict[str, Room] = {}

    def get(self, key: str) -> Room | None:
        return self._rooms.get(key)

    def add_member(self, name: str, key: str, member: Member) -> Room:
        """Put `member` in the room, creating it with this spelling if it does not exist."""
        room = self._rooms.get(key)
        if room is None:
            room = self._rooms[key] = Room(name, key)
        room.members[member] = None
        return room

    def remove_member(self, room: Room, member: Member) -> None:
        """Take `member` out; a room left empty ceases to exist."""
        room.members.pop(member, None)
        if not room.members and self._rooms.get(room.key) is room:
            del self._rooms[room.key]

    def __iter__(self) -> Iterator[Room]:
        return iter(self._rooms.values())

    def __len__(self) -> int:
        return len(self._rooms)
