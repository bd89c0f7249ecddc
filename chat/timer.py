"""`DeadlineTimer`: one loop timer that always fires at the earliest deadline asked for (retransmission queues)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class DeadlineTimer:
    """Calls `callback` at the earliest of the deadlines given to `arm` (loop time); re-arm from the callback."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, deadline: float) -> None:
        """Fire at `deadline` unless already set to fire earlier."""
        if self._handle is not None and self._handle.when() <= deadline:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._callback()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
