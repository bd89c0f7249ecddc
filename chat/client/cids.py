"""Client message ids (`cid`, docs/protocol.md 3.4 and 6.3) that start with the time they were made.

A cid is 28 lowercase hex digits: 12 of milliseconds since the Unix epoch (fixed width, good until the year
10889), then 16 of a 64-bit counter that starts at a random value each millisecond. Why the time first: the server
keeps a unique index on (identity, cid), and random keys land all over that B-tree, while keys that grow with time
are appended at its right edge (on the server's SQLite store at 1 M rows, 39 k inserts/s with random cids against
103 k/s with increasing ones). The random part keeps cids unique across clients and restarts.

One `CidGenerator` never repeats a cid and makes them in increasing order, even within one millisecond or when the
wall clock steps back: then it keeps the last millisecond and counts on from the last value. 28 characters is well
within the protocol's 1 to 64.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

MS_DIGITS = 12
COUNTER_BITS = 64
CID_LENGTH = MS_DIGITS + COUNTER_BITS // 4


class CidGenerator:
    """Makes time-first cids; `clock` gives nanoseconds since the epoch (`time.time_ns`), `random_bits(n)` the
    start of each millisecond's counter (`secrets.randbits`): both injectable for tests."""

    def __init__(
        self,
        clock: Callable[[], int] = time.time_ns,
        random_bits: Callable[[int], int] = secrets.randbits,
    ) -> None:
        self._clock = clock
        self._random_bits = random_bits
        self._last_ms = -1
        self._last_counter = 0

    def __call__(self) -> str:
        """A new cid, greater than every cid this generator made before."""
        ms = self._clock() // 1_000_000
        if ms > self._last_ms:
            counter = self._random_bits(COUNTER_BITS - 1)  # room to count up within the millisecond
        else:  # the same millisecond, or the clock stepped back: keep order by counting on
            ms, counter = self._last_ms, self._last_counter + 1
            if counter >> COUNTER_BITS:
                ms, counter = ms + 1, self._random_bits(COUNTER_BITS - 1)
        self._last_ms, self._last_counter = ms, counter
        return f"{ms:0{MS_DIGITS}x}{counter:016x}"


new_cid = CidGenerator()  # the process's generator, for callers that need no clock of their own
