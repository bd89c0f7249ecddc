"""Rate limiting: a token bucket (requests, or bytes with `spend`) that takes the time as an argument, so tests need
no clock."""

from __future__ import annotations


class TokenBucket:
    """Allows `rate` requests per second on average and bursts of up to `burst`."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; False means the request is over the limit."""
        tokens = self._tokens
        if now > self._last:  # a clock that steps back refills nothing
            tokens += (now - self._last) * self.rate
            if tokens > self.burst:
                tokens = self.burst
        self._last = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        return False

    def spend(self, count: float, now: float) -> bool:
        """Spend `count` tokens if there are that many (a byte budget; a large header costs one per KiB,
        docs/protocol.md 1.8); False, spending none, if not. O(1): it runs once per stored message (`say`)."""
        tokens = self._tokens
        if now > self._last:
            tokens += (now - self._last) * self.rate
            if tokens > self.burst:
                tokens = self.burst
            self._last = now
        if tokens >= count:
            self._tokens = tokens - count
            return True
        self._tokens = tokens
        return False

    def peek(self, now: float) -> float:
        """The tokens there would be at `now`, taking none."""
        if now <= self._last:
            return self._tokens
        return min(self.burst, self._tokens + (now - self._last) * self.rate)


class ByteBudget:
    """A byte rate for file transfers: spending may overdraw, and the answer is how long to wait it off.

    Capacity is one second of the rate, so a burst never exceeds a second's worth. A rate of 0 means unlimited.
    """

    __slots__ = ("_balance", "_last", "rate")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self._balance = float(rate)
        self._last = now

    def spend(self, count: int, now: float) -> float:
        """Account for `count` bytes; return the seconds to pause before moving more (0 when within the rate)."""
        if self.rate <= 0:
            return 0.0
        self._balance = min(self.rate, self._balance + max(0.0, now - self._last) * self.rate) - count
        self._last = now
        return 0.0 if self._balance >= 0 else -self._balance / self.rate


class SharedBytes:
    """Bytes reserved out of one total shared by every connection (`[limits] max_buffered_bytes`): what the server
    may hold at once for frames bigger than a connection's own allowance, while they arrive. 0 means no limit.

    `in_use`, `peak` and `refused` are the server's own accounting of that memory (tests and logs read them).
    """

    __slots__ = ("in_use", "limit", "peak", "refused")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self.peak = 0
        self.refused = 0

    def reserve(self, count: int) -> bool:
        """Take `count` bytes if they fit; False (and counted) if they do not."""
        if self.limit and self.in_use + count > self.limit:
            self.refused += 1
            return False
        self.in_use += count
        if self.in_use > self.peak:
            self.peak = self.in_use
        return True

    def release(self, count: int) -> None:
        """Give back what `reserve` took."""
        self.in_use -= count
