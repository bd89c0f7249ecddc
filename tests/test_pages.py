"""Lists cut to fit a reply under a byte limit by adding item sizes (chat/protocol/pages.py), against the real JSON
encoding of the replies: the sum is the size of the encoded reply, and the cut is as long as it can be."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from chat.protocol import messages as wire
from chat.protocol.pages import ENVELOPE_SLACK, fit, list_budget

_encode = msgspec.json.Encoder().encode

# Texts that stress the encoded size: multi-byte characters, the two escapes a say text may hold, quotes
texts = st.text(st.sampled_from('aé€😀\n\t"\\'), min_size=1, max_size=60)
messages = st.builds(
    wire.Message,
    id=st.integers(1, 2**53),
    room=st.just("lobby"),
    sender=st.sampled_from(["alice", "Zoë", "名前"]),
    text=texts,
    ts=st.integers(0, 2**41),
    cid=st.none() | st.text(min_size=1, max_size=64),
)


def size(item: msgspec.Struct) -> int:
    return len(_encode(item))


@given(items=st.lists(messages, max_size=12))
def test_a_reply_is_its_envelope_plus_its_items_and_the_commas_between_them(items: list[wire.Message]) -> None:
    envelope = size(wire.HistoryPage(room="lobby", messages=[], truncated=False))
    whole = size(wire.HistoryPage(room="lobby", messages=items, truncated=False))
    assert whole == envelope + sum(size(m) for m in items) + max(0, len(items) - 1)


@given(items=st.lists(messages, max_size=12), limit=st.integers(400, 3000))
def test_the_cut_reply_fits_the_limit_and_one_more_item_would_not(items: list[wire.Message], limit: int) -> None:
    envelope = size(wire.HistoryPage(room="lobby", messages=[], truncated=False))
    taken, cut = fit(items, size, list_budget(envelope, limit))
    assert taken == items[: len(taken)]
    assert size(wire.HistoryPage(room="lobby", messages=taken, truncated=cut)) <= limit - ENVELOPE_SLACK
    assert cut == (len(taken) < len(items))
    if cut:
        longer = wire.HistoryPage(room="lobby", messages=items[: len(taken) + 1], truncated=False)
        assert size(longer) > limit - ENVELOPE_SLACK


@given(items=st.lists(messages, min_size=1, max_size=30), limit=st.integers(400, 3000))
def test_each_item_is_measured_once_and_none_after_the_first_left_out(items: list[wire.Message], limit: int) -> None:
    measured: list[int] = []

    def counting(item: wire.Message) -> int:
        measured.append(id(item))
        return size(item)

    taken, cut = fit(iter(items), counting, list_budget(100, limit))
    assert measured == [id(item) for item in items[: len(taken) + (1 if cut else 0)]]


def test_a_next_cursor_of_the_longest_name_fits_in_the_slack() -> None:
    longest = "😀" * 32  # 32 characters of 4 bytes: the longest nick or room name
    with_cursor = size(wire.RoomList(rooms=[], next=longest, ref=2**63 - 1))
    without = size(wire.RoomList(rooms=[], ref=2**63 - 1))
    assert with_cursor - without <= ENVELOPE_SLACK
    members_cut = size(wire.Members(room=longest, members=[], truncated=True, ref=2**63 - 1))
    assert members_cut - size(wire.Members(room=longest, members=[], ref=2**63 - 1)) <= ENVELOPE_SLACK
