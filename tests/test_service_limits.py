"""The limits of chat/core/service.py that keep one host from filling the disk or the frame limit, on the real core:
a real `ChatService`, `LocalEngine` and `AsyncStore` (a SQLite file), connections as `MemoryPeer`s (tests/corefakes.py)
whose replies are encoded with the TCP listener's real codec, and an injected clock: no sockets, no sleeps.

- Stored bytes per identity (docs/security.md): a `say` over the identity's budget is `storage_rate_limited` and not
  stored; the budget refills with the clock, follows the identity across connections, and counts UTF-8 bytes.
- Replies under the frame limit: `rooms` of 20,000 rooms comes in pages under 1 MiB that hold every room once;
  `who` of members with long away texts is cut and marked; a history page is cut with each message encoded once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from corefakes import MemoryPeer

from chat.config import Config, config_with
from chat.core.limits import TokenBucket
from chat.core.service import STORED_MESSAGE_BYTES, ChatService, fit_page, json_size
from chat.core.session import Session
from chat.engine.local import LocalEngine
from chat.protocol import caps
from chat.protocol import messages as wire
from chat.protocol.frames import MAX_SERVER_HEADER, PREFIX_SIZE
from chat.protocol.names import fold
from chat.server.tcp import FrameCodec
from chat.store.records import Page, Scope, StoredMessage
from chat.store.sqlite import AsyncStore

pytestmark = pytest.mark.asyncio
CODEC = FrameCodec()


class Core:
    """One service on its own database, with a clock the test moves (`now`, seconds)."""

    def __init__(self, folder: Path, **limits: Any) -> None:
        self.config = config_with(
            Config(),
            server={"nick_hold": 0},
            limits={"messages_per_second": 1e6, "burst": 1_000_000, "identities_per_hour_per_address": 0, **limits},
            history={"database": str(folder / "chat.db")},
            files={"directory": str(folder / "files")},
        )
        self.now = 0.0
        self.store = AsyncStore(self.config.history.database)
        self.engine = LocalEngine(lambda: None)  # flushed after every request, as at the end of a loop turn
        self.service = ChatService(self.config, self.store, self.engine, lambda: self.now)
        self._opened = 0

    async def start(self) -> None:
        await self.store.start()
        await self.service.start()

    async def request(self, session: Session, request: wire.Request) -> list[wire.ServerFrame]:
        """One request, its commits and the end of the turn; the events the session got from it."""
        peer = session.peer
        assert isinstance(peer, MemoryPeer)
        before = len(peer.events)
        waiting = self.service.handle_frame(session, msgspec.json.encode(request), b"")
        if waiting is not None:
            await waiting
        await self.store.flush()
        self.engine.flush()
        return peer.events[before:]

    async def login(self, nick: str, token: str | None = None, caps: list[str] | None = None) -> Session:
        self._opened += 1
        session = Session(MemoryPeer(address=("10.0.0.1", self._opened)), TokenBucket(1e6, 1e6, self.now), self.now)
        self.service.greet(session)
        [welcome] = await self.request(session, wire.Login(nick=nick, protocol=1, session=token, caps=caps))
        assert isinstance(welcome, wire.Welcome), welcome
        return session

    async def say(self, session: Session, text: str, **target: str) -> wire.ServerFrame:
        """The say's answer: its stored message (the echo) or the error refusing it."""
        events = await self.request(session, wire.Say(text=text, ref=1, **target))
        answers = [
            e for e in events if isinstance(e, wire.Error) or (isinstance(e, wire.Message) and e.sender == session.nick)
        ]
        assert len(answers) == 1, events
        return answers[0]


CoreFactory = Callable[..., Awaitable[Core]]


@pytest_asyncio.fixture
async def chat_core(tmp_path: Path) -> AsyncIterator[CoreFactory]:
    """Started cores, each on a database of its own; their stores are closed at the end, newest first."""
    cores: list[Core] = []

    async def start(**limits: Any) -> Core:
        core = Core(tmp_path / str(len(cores)), **limits)
        await core.start()
        cores.append(core)
        return core

    yield start
    for core in reversed(cores):
        await core.store.close()


def header_size(event: wire.ServerFrame) -> int:
    """The header length of the frame the TCP listener writes for an event."""
    return len(CODEC.encode(event)) - PREFIX_SIZE


def code(answer: wire.ServerFrame) -> str:
    return answer.code if isinstance(answer, wire.Error) else answer.type


# --- stored bytes per identity -------------------------------------------------------------------------------------


async def test_an_identity_over_its_stored_bytes_is_refused_until_the_budget_refills(chat_core: CoreFactory) -> None:
    core = await chat_core(stored_bytes_per_hour_per_identity=1000)
    alice = await core.login("alice")
    await core.request(alice, wire.Join(room="lobby"))
    text = "x" * (200 - STORED_MESSAGE_BYTES)  # 200 bytes a message
    answers = [code(await core.say(alice, text, room="lobby")) for _ in range(6)]
    assert answers == ["message"] * 5 + ["storage_rate_limited"]
    page = await core.store.page(Scope.room("lobby"), limit=100)
    assert len(page.messages) == 5, "the refused say was not stored"
    core.now += 3600 * 200 / 1000  # an hour's budget of 1000 bytes: 200 come back in 720 s
    assert code(await core.say(alice, text, room="lobby")) == "message"
    assert code(await core.say(alice, text, room="lobby")) == "storage_rate_limited"
    bob = await core.login("bob")
    assert code(await core.say(bob, text, to="alice")) == "message", "another identity has its own budget"


async def test_private_messages_count_and_a_new_connection_of_the_identity_keeps_its_budget(
    chat_core: CoreFactory,
) -> None:
    core = await chat_core(stored_bytes_per_hour_per_identity=1000)
    alice = await core.login("alice")
    await core.login("bob")
    text = "x" * (500 - STORED_MESSAGE_BYTES)
    assert [code(await core.say(alice, text, to="bob")) for _ in range(2)] == ["message", "message"]
    token = alice.token
    await core.request(alice, wire.Quit())
    again = await core.login("alice", token=token)
    assert again.identity == alice.identity
    assert code(await core.say(again, "hi", to="bob")) == "storage_rate_limited", "reconnecting refills nothing"


async def test_stored_bytes_are_utf8_bytes_not_characters(chat_core: CoreFactory) -> None:
    core = await chat_core(stored_bytes_per_hour_per_identity=1000)
    alice = await core.login("alice")
    await core.login("bob")
    assert code(await core.say(alice, "é" * 400, to="bob")) == "message"  # 800 bytes + 100
    assert code(await core.say(alice, "x", to="bob")) == "storage_rate_limited"  # 101 more: over 1000


async def test_budgets_of_offline_identities_are_forgotten_once_full_and_kept_while_refilling(
    chat_core: CoreFactory,
) -> None:
    core = await chat_core(stored_bytes_per_hour_per_identity=3600)
    alice = await core.login("alice")
    await core.login("bob")
    await core.say(alice, "x" * 900, to="bob")  # 1000 of 3600: full again after 1000 s
    await core.request(alice, wire.Quit())
    core.service.sweep(500.0)
    assert alice.identity in core.service._storage_budgets
    core.service.sweep(1000.0)
    assert alice.identity not in core.service._storage_budgets


async def test_no_budget_is_kept_when_the_limit_is_off(chat_core: CoreFactory) -> None:
    core = await chat_core(stored_bytes_per_hour_per_identity=0)
    alice = await core.login("alice")
    assert alice.storage is None
    await core.request(alice, wire.Join(room="lobby"))
    assert code(await core.say(alice, "x" * 4000, room="lobby")) == "message"


# --- replies under the frame limit -------------------------------------------------------------------------------


async def test_twenty_thousand_rooms_come_in_pages_under_the_frame_limit_holding_every_room_once(
    chat_core: CoreFactory,
) -> None:
    core = await chat_core()
    owner = await core.login("owner")
    names = [f"{number:05d}" + "r" * 27 for number in range(20_000)]  # 32 characters: over 1 MiB in all
    for name in names:
        owner.rooms[fold(name)] = core.service.rooms.add_member(name, fold(name), owner)
    asker = await core.login("asker")
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        [reply] = await core.request(asker, wire.ListRooms(after=after, ref=pages))
        assert isinstance(reply, wire.RoomList)
        assert header_size(reply) <= MAX_SERVER_HEADER
        pages += 1
        seen += [info.room for info in reply.rooms]
        if reply.next is None:
            break
        assert reply.next == reply.rooms[-1].room
        after = reply.next
    assert pages >= 2 and seen == sorted(names, key=fold)


async def test_a_room_list_that_fits_has_no_next_and_after_starts_past_a_room_that_is_gone(
    chat_core: CoreFactory,
) -> None:
    core = await chat_core()
    owner = await core.login("owner")
    for name in ("Beta", "alpha", "gamma"):
        await core.request(owner, wire.Join(room=name))
    [reply] = await core.request(owner, wire.ListRooms())
    assert isinstance(reply, wire.RoomList)
    assert [r.room for r in reply.rooms] == ["alpha", "Beta", "gamma"] and reply.next is None
    assert b'"next"' not in CODEC.encode(reply), "an old client sees the reply it always did"
    await core.request(owner, wire.Part(room="Beta"))
    [reply] = await core.request(owner, wire.ListRooms(after="BETA"))
    assert isinstance(reply, wire.RoomList) and [r.room for r in reply.rooms] == ["gamma"]


async def test_who_of_members_with_long_away_texts_is_cut_under_the_frame_limit_and_marked(
    chat_core: CoreFactory,
) -> None:
    core = await chat_core()
    away = "😀" * 4000  # 16,000 bytes each: 70 of them are over 1 MiB
    members = []
    for number in range(70):
        member = await core.login(f"m{number:02d}", caps=[caps.LAZY_MEMBERS])
        await core.request(member, wire.Join(room="lobby"))
        await core.request(member, wire.SetAway(text=away))
        members.append(member)
    asker = members[0]
    [whole] = await core.request(asker, wire.Who(room="lobby"))
    assert isinstance(whole, wire.Members) and whole.truncated
    assert header_size(whole) <= MAX_SERVER_HEADER
    assert [m.nick for m in whole.members] == [s.nick for s in members[: len(whole.members)]], "join order"
    assert 60 <= len(whole.members) < 70
    paged: list[str] = []
    after: str | None = None
    while True:  # docs/protocol.md 10.4: pages of at most 100, cut under the limit, continued with `next`
        [page] = await core.request(asker, wire.Who(room="lobby", after=after, limit=100))
        assert isinstance(page, wire.Members) and not page.truncated
        assert header_size(page) <= MAX_SERVER_HEADER
        paged += [m.nick for m in page.members]
        if page.next is None:
            break
        after = page.next
    assert paged == sorted(s.nick for s in members)


async def test_a_short_member_list_has_no_truncated_field(chat_core: CoreFactory) -> None:
    core = await chat_core()
    alice = await core.login("alice")
    await core.request(alice, wire.Join(room="lobby"))
    [reply] = await core.request(alice, wire.Who(room="lobby"))
    assert isinstance(reply, wire.Members) and not reply.truncated
    assert b'"truncated"' not in CODEC.encode(reply)


def _emoji_page(count: int) -> Page:
    text = "😀" * 4000
    messages = [
        StoredMessage(n, 1_764_607_200_000 + n, "alice", "lobby", None, text, f"c-{n}") for n in range(1, count + 1)
    ]
    return Page(messages, truncated=False)


@pytest.mark.parametrize("keep_oldest", [True, False])
async def test_a_page_of_long_messages_is_cut_under_the_limit_measuring_each_message_once(keep_oldest: bool) -> None:
    page = _emoji_page(100)  # 100 x 16 KB: 1.6 MB
    measured: list[Any] = []

    def counting(item: msgspec.Struct) -> int:
        measured.append(item)
        return json_size(item)

    def build(messages: list[wire.Message], truncated: bool) -> wire.ServerFrame:
        return wire.HistoryPage(room="lobby", messages=messages, truncated=truncated, ref=7)

    frame = fit_page(build, page, keep_oldest, size=counting)
    assert isinstance(frame, wire.HistoryPage) and frame.truncated
    assert header_size(frame) <= MAX_SERVER_HEADER
    kept = [m.id for m in frame.messages]
    assert kept == (list(range(1, len(kept) + 1)) if keep_oldest else list(range(101 - len(kept), 101)))
    assert 55 <= len(kept) < 100
    envelopes = [item for item in measured if not isinstance(item, wire.Message)]
    assert len(envelopes) == 1 and not envelopes[0].messages, "the page itself is never encoded to be measured"
    ids = [item.id for item in measured if isinstance(item, wire.Message)]
    assert len(ids) == len(set(ids)) == len(kept) + 1, "each message once, and one past the cut"


async def test_a_history_request_of_long_messages_is_answered_under_the_limit(chat_core: CoreFactory) -> None:
    core = await chat_core()
    alice = await core.login("alice")
    await core.request(alice, wire.Join(room="lobby"))
    for _ in range(70):
        await core.say(alice, "😀" * 4000, room="lobby")
    [reply] = await core.request(alice, wire.HistoryQuery(room="lobby", limit=100, ref=3))
    assert isinstance(reply, wire.HistoryPage) and reply.truncated
    assert header_size(reply) <= MAX_SERVER_HEADER
    assert [m.id for m in reply.messages] == sorted(m.id for m in reply.messages)
    assert 55 <= len(reply.messages) < 70, "the newest that fit"
