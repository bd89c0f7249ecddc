"""File transfers as the terminal client shows them: what moves, how far it got, how fast, and when it will be done.

Pure, like the model: no asyncio, no prompt_toolkit, and time only as numbers handed in (the controller's monotonic
clock), so rate and ETA are tested with made-up times. The controller creates a `Transfer` when /send or /get starts,
feeds it the library's progress callbacks (`advance`), and removes it when the transfer ends, fails or is cancelled;
the status area (`chat.tui.layout`) draws the active ones.

Rate: bytes moved over the last `RATE_WINDOW` seconds, measured from the newest progress sample at or before the start
of the window up to `now`, so a transfer that stalls (a lost connection, a throttled server) shows its rate falling
towards zero instead of the last good figure. The first sample is the first callback, not the start: the time spent
hashing a file before it is sent, and the bytes a resumed transfer already had, do not count as speed.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

RATE_WINDOW = 3.0  # seconds of progress the rate is measured over
MIN_RATE_SPAN = 0.2  # seconds of samples needed before a rate is shown at all
MAX_SAMPLES = 256  # progress samples kept per transfer (callbacks come every 64 KiB)

_transfer_numbers = itertools.count(1)


class Direction(StrEnum):
    """Which way a transfer goes."""

    UP = "send"  # /send: a local file to the server
    DOWN = "get"  # /get: a file from the server into a local folder


@dataclass(eq=False)
class Transfer:
    """One running /send or /get.

    `name` is what the user sees: the local file's name for an upload, the peer's display name for a download (not
    trusted: it goes through `chat.tui.render` before it is drawn). `where` is the room or nick an upload goes to,
    or the local path a download is written to.
    """

    direction: Direction
    name: str
    where: str
    total: int
    fid: str | None = None
    done: int = 0
    size_known: bool = True  # False for a /get by a bare fid: the size comes only with the file's end
    resumed_from: int = 0  # bytes a download already had in its `.part` file when it started
    cancelled: bool = False  # the user asked to cancel it (Ctrl-C)
    number: int = field(default_factory=lambda: next(_transfer_numbers))
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))

    def advance(self, done: int, total: int, now: float) -> None:
        """A progress callback: `done` of `total` bytes at monotonic time `now`."""
        self.done = done
        if total > 0:
            self.total = total
        # Keep one sample at or before the window's start as the anchor the rate is measured from.
        while len(self.samples) >= 2 and self.samples[1][0] <= now - RATE_WINDOW:
            self.samples.popleft()
        self.samples.append((now, done))

    @property
    def fraction(self) -> float | None:
        """How much is done, 0.0 to 1.0 (an empty file is done with its first callback); None if the size is not
        known."""
        if not self.size_known:
            return None
        if self.total <= 0:
            return 1.0 if self.samples else 0.0
        return min(1.0, max(0.0, self.done / self.total))

    def rate(self, now: float) -> float | None:
        """Bytes per second over the last `RATE_WINDOW` seconds, or None while there is too little to tell."""
        if not self.samples:
            return None
        anchor_time, anchor_done = self.samples[0]
        for sample_time, sample_done in self.samples:
            if sample_time > now - RATE_WINDOW:
                break
            anchor_time, anchor_done = sample_time, sample_done
        span = now - anchor_time
        if span < MIN_RATE_SPAN:
            return None
        return max(0.0, (self.done - anchor_done) / span)

    def eta(self, now: float) -> float | None:
        """Seconds until done at the current rate; None when the rate is unknown or zero."""
        rate = self.rate(now)
        if not rate or not self.size_known:
            return None
        return max(0.0, (self.total - self.done) / rate)


def summary(transfers: list[Transfer], now: float) -> tuple[int, int, float | None]:
    """(bytes done, bytes in all, combined rate or None) of several transfers, for the compact status line."""
    done = sum(transfer.done for transfer in transfers)
    total = sum(max(transfer.total, transfer.done) for transfer in transfers)
    rates = [rate for transfer in transfers if (rate := transfer.rate(now)) is not None]
    return done, total, sum(rates) if rates else None
