"""chat/client/cids.py: time-first cids sort by creation time, never repeat, and fit the protocol (protocol.md 3.4)."""

from __future__ import annotations

import string
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat.client.cids import CID_LENGTH, CidGenerator, new_cid

MS = 1_000_000  # nanoseconds


class SteppedClock:
    """A nanosecond wall clock that returns the given readings in turn."""

    def __init__(self, readings: list[int]) -> None:
        self.readings = iter(readings)

    def __call__(self) -> int:
        return next(self.readings)


def test_a_cid_starts_with_the_millisecond_time_in_fixed_width_hex() -> None:
    make = CidGenerator(clock=lambda: 1_764_607_200_000 * MS + 123, random_bits=lambda bits: 5)
    cid = make()
    assert cid == f"{1_764_607_200_000:012x}" + f"{5:016x}"
    assert len(cid) == CID_LENGTH == 28 and 1 <= len(cid) <= 64
    assert set(cid) <= set(string.hexdigits.lower())


def test_cids_of_later_milliseconds_sort_after_earlier_ones_whatever_their_random_part() -> None:
    randoms = iter([2**63 - 1, 0, 2**62])
    make = CidGenerator(clock=SteppedClock([1 * MS, 2 * MS, 10_000 * MS]), random_bits=lambda bits: next(randoms))
    cids = [make(), make(), make()]
    assert sorted(cids) == cids


def test_within_one_millisecond_and_when_the_clock_steps_back_cids_still_increase() -> None:
    readings = [5 * MS, 5 * MS + 1, 5 * MS + 999_999, 4 * MS, 6 * MS]
    make = CidGenerator(clock=SteppedClock(readings), random_bits=lambda bits: 2**63 - 2)
    cids = [make() for _ in readings]
    assert sorted(cids) == cids and len(set(cids)) == len(cids)
    assert [cid[:12] for cid in cids[:4]] == [f"{5:012x}"] * 4, "the time part never goes back"


def test_a_counter_that_runs_out_within_a_millisecond_moves_on_to_the_next() -> None:
    make = CidGenerator(clock=lambda: 7 * MS, random_bits=lambda bits: 2**64 - 2 if bits == 63 else 0)
    first, second, third = make(), make(), make()
    assert first < second < third
    assert third[:12] == f"{8:012x}"


@settings(deadline=None)
@given(steps=st.lists(st.integers(-5 * MS, 5 * MS), min_size=1, max_size=200))
def test_cids_sort_in_creation_order_and_never_repeat_whatever_the_clock_does(steps: list[int]) -> None:
    now = 1_764_607_200_000 * MS
    readings = []
    for step in steps:
        now += step
        readings.append(now)
    make = CidGenerator(clock=SteppedClock(readings))
    cids = [make() for _ in readings]
    assert sorted(cids) == cids
    assert len(set(cids)) == len(cids)


def test_the_process_generator_makes_increasing_unique_cids_on_the_real_clock() -> None:
    cids = [new_cid() for _ in range(10_000)]
    assert sorted(cids) == cids and len(set(cids)) == len(cids)
    assert all(len(cid) == CID_LENGTH for cid in cids)


@pytest.mark.asyncio
async def test_the_client_library_says_with_time_first_cids(chat_server, chat_client) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice", join="r")
    await chat_client(server, "bob", join="r")
    before = time.time_ns() // MS
    first = await alice.say("one", room="r")
    second = await alice.say("two", to="bob")
    after = time.time_ns() // MS
    assert first.cid is not None and second.cid is not None
    assert before <= int(first.cid[:12], 16) <= int(second.cid[:12], 16) <= after
    assert first.cid < second.cid and len(first.cid) == CID_LENGTH
