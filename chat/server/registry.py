"""The session registry: which logged-in session holds which identity and which nick.

This is the seam a multi-process engine would replace (DESIGN.md, Scale): takeover, private delivery and UDP
fallback all ask it who is connected.
"""

from __future__ import annotations

from typing import Protocol


class Registered(Protocol):
    """What the registry needs of a session."""

    identity: int
    nick_key: str


class SessionRegistry:
    """Logged-in sessions by identity and by folded nick; one session per identity."""

    def __init__(self) -> None:
        self._by_identity: dict[int, Registered] = {}
        self._by_nick: dict[str, Registered] = {}

    def by_identity(self, identity: int) -> Registered | None:
        return self._by_identity.get(identity)

    def by_nick(self, nick_key: str) -> Registered | None:
        return self._by_nick.get(nick_key)

    def add(self, session: Registered) -> None:
        self._by_identity[session.identity] = session
        self._by_nick[session.nick_key] = session

    def remove(self, session: Registered) -> bool:
        """Forget `session`; False if it was not (or no longer) registered, e.g. after a takeover."""
        if self._by_identity.get(session.identity) is not session:
            return False
        del self._by_identity[session.identity]
        if self._by_nick.get(session.nick_key) is session:
            del self._by_nick[session.nick_key]
        return True

    def rename(self, session: Registered, new_key: str) -> None:
        """Move `session` from its current nick to `new_key` (the caller then updates `session.nick_key`)."""
        if self._by_nick.get(session.nick_key) is session:
            del self._by_nick[session.nick_key]
        self._by_nick[new_key] = session

    def __len__(self) -> int:
        return len(self._by_identity)
