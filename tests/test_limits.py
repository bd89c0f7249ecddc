"""The token bucket of chat/core/limits.py, driven by explicit times."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from chat.core.limits import TokenBucket


def test_burst_is_spent_then_refused() -> None:
    bucket = TokenBucket(rate=1.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]


def test_tokens_come_back_at_the_rate_and_never_above_the_burst() -> None:
    bucket = TokenBucket(rate=2.0, burst=2, now=0.0)
    assert bucket.take(0.0) and bucket.take(0.0) and not bucket.take(0.0)
    assert bucket.take(0.5) and not bucket.take(0.5)  # half a second at 2/s: one token
    assert bucket.take(100.0) and bucket.take(100.0) and not bucket.take(100.0)  # capped at the burst


def test_a_clock_stepping_back_refills_nothing() -> None:
    bucket = TokenBucket(rate=10.0, burst=1, now=5.0)
    assert bucket.take(5.0)
    assert not bucket.take(1.0)  # earlier than before: no tokens for negative time
    assert not bucket.take(1.05)  # measured from the step back: 0.5 token
    assert bucket.take(1.1)


@settings(deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=10.0), max_size=60))
def test_never_more_granted_than_burst_plus_rate_times_elapsed(steps: list[float]) -> None:
    bucket = TokenBucket(rate=3.0, burst=4, now=0.0)
    now = granted = 0.0
    for step in steps:
        now += step
        granted += bucket.take(now)
    assert granted <= 4 + 3.0 * now + 1e-9


def test_spend_takes_a_whole_amount_or_nothing() -> None:
    bucket = TokenBucket(rate=10.0, burst=1000, now=0.0)
    assert bucket.spend(600, 0.0) and not bucket.spend(600, 0.0), "400 left: 600 is refused whole"
    assert bucket.spend(400, 0.0), "a refused spend took nothing"
    assert not bucket.spend(10, 0.5) and bucket.spend(10, 1.0)  # 10 bytes a second come back


@given(st.lists(st.tuples(st.floats(0.0, 10.0), st.integers(0, 500)), max_size=40))
@settings(deadline=None)
def test_spend_never_grants_more_than_burst_plus_rate_times_elapsed(steps: list[tuple[float, int]]) -> None:
    bucket = TokenBucket(rate=50.0, burst=1000, now=0.0)
    now = granted = 0.0
    for elapsed, amount in steps:
        now += elapsed
        if bucket.spend(amount, now):
            granted += amount
        assert granted <= 1000 + 50.0 * now + 1e-6
