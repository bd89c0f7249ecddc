"""Timers behind an injectable clock: `DeadlineTimer` (retransmission queues) and `ManualClock` (tests).

Code that keeps time asks a `Clock` for the time and for a callback at a time; an asyncio loop is one, and a
`ManualClock` is one whose time moves only when a test says so, so a 5 s schedule is tested in no time at all.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Protocol


class TimerHandleLike(Protocol):
    """What `call_at` returns: an `asyncio.TimerHandle`, or a `ManualClock` timer."""

    def when(self) -> float: ...

    def cancel(self) -> None: ...


class Clock(Protocol):
    """The time, and callbacks at a time: `asyncio.AbstractEventLoop` has both."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], object], /) -> TimerHandleLike: ...


class DeadlineTimer:
    """Calls `callback` at the earliest of the deadlines given to `arm` (clock time); re-arm from the callback."""

    def __init__(self, clock: Clock, callback: Callable[[], None]) -> None:
        self._clock = clock
        self._callback = callback
        self._handle: TimerHandleLike | None = None

    def arm(self, deadline: float) -> None:
        """Fire at `deadline` unless already set to fire earlier."""
        if self._handle is not None and self._handle.when() <= deadline:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._clock.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._callback()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class ManualTimer:
    """One callback of a `ManualClock`."""

    __slots__ = ("_when", "callback", "cancelled")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self._when = when
        self.callback = callback
        self.cancelled = False

    def when(self) -> float:
        return self._when

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A `Clock` whose time stands still until `advance` moves it, running what fell due, in time order."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, ManualTimer]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object], /) -> ManualTimer:
        timer = ManualTimer(when, callback)
        heapq.heappush(self._timers, (when, next(self._order), timer))
        return timer

    def next_deadline(self) -> float | None:
        """When the earliest live callback is due, or None."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def advance(self, to: float) -> None:
        """Move the time to `to`, running each callback due by then at its own time (callbacks may add more)."""
        while (due := self.next_deadline()) is not None and due <= to:
            _, _, timer = heapq.heappop(self._timers)
            self.now = max(self.now, due)
            timer.callback()
        self.now = max(self.now, to)
