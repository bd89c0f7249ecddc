"""chat/timer.py: DeadlineTimer keeps only its earliest deadline; ManualClock runs what falls due, in time order."""

from __future__ import annotations

from chat.timer import DeadlineTimer, ManualClock


def test_a_manual_clock_runs_callbacks_in_time_order_at_their_own_time_and_skips_cancelled_ones() -> None:
    clock = ManualClock(10.0)
    ran: list[tuple[str, float]] = []
    clock.call_at(12.0, lambda: ran.append(("late", clock.time())))
    clock.call_at(11.0, lambda: ran.append(("early", clock.time())))
    clock.call_at(11.5, lambda: ran.append(("cancelled", clock.time()))).cancel()
    clock.advance(11.9)
    assert ran == [("early", 11.0)] and clock.time() == 11.9
    clock.advance(20.0)
    assert ran == [("early", 11.0), ("late", 12.0)] and clock.next_deadline() is None


def test_a_callback_may_schedule_another_that_falls_due_within_the_same_advance() -> None:
    clock = ManualClock()
    ran: list[float] = []

    def again() -> None:
        ran.append(clock.time())
        if len(ran) < 3:
            clock.call_at(clock.time() + 1.0, again)

    clock.call_at(1.0, again)
    clock.advance(10.0)
    assert ran == [1.0, 2.0, 3.0]


def test_a_deadline_timer_fires_once_at_the_earliest_deadline_armed() -> None:
    clock = ManualClock()
    fired: list[float] = []
    timer = DeadlineTimer(clock, lambda: fired.append(clock.time()))
    timer.arm(5.0)
    timer.arm(3.0)
    timer.arm(4.0)  # later than the armed 3.0: ignored
    clock.advance(10.0)
    assert fired == [3.0]
    timer.arm(12.0)
    timer.cancel()
    clock.advance(20.0)
    assert fired == [3.0]
