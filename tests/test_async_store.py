"""AsyncStore on a real SQLite file: group commit off the loop, acknowledgement after commit, order, reads that never
wait for the writer, flush and close, explicit ids, cid dedupe, read-your-acknowledged-writes.

Interleavings are forced with the store's `before_commit` hook (`WriterGate`): it holds the writer thread inside its
transaction until the test lets it go, so "while the writer is busy" is a fact of the test, not a hope about timing.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from chat.store.errors import StoreClosed
from chat.store.history import HistoryStore
from chat.store.records import Appended, Draft, FileRecord, Scope, StoredMessage
from chat.store.sqlite import AsyncStore

pytestmark = pytest.mark.asyncio

GUARD = 10.0  # seconds: only against a hang; no test waits for time to pass


def room_draft(text: str, *, identity: int = 1, cid: str | None = None, room: str = "lobby", **extra: object) -> Draft:
    return Draft(
        ts=1000, sender_identity=identity, sender=f"n{identity}", sender_key=f"n{identity}", text=text, cid=cid,
        room=room, room_key=room, **extra,  # type: ignore[arg-type]
    )  # fmt: skip


class WriterGate:
    """A `before_commit` hook: records each transaction's draft count; when closed, holds the writer inside the
    transaction (after its statements, before COMMIT) until opened; when told to fail, raises there."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.entered = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._open = threading.Event()
        self._open.set()
        self.fail_next = False

    def __call__(self, drafts: int) -> None:
        self.sizes.append(drafts)
        if not self._open.is_set():
            self._loop.call_soon_threadsafe(self.entered.set)
            self._open.wait(GUARD)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("injected failure before COMMIT")

    def close(self) -> None:
        self.entered.clear()
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    async def held(self) -> None:
        """Wait until the writer is held inside a transaction."""
        await asyncio.wait_for(self.entered.wait(), GUARD)


class Results:
    """Callbacks that record what they got, in the order they ran, and can be awaited by count."""

    def __init__(self) -> None:
        self.got: list[Appended | None] = []
        self._changed = asyncio.Event()

    def callback(self) -> Callable[[Appended | None], None]:
        def on_stored(result: Appended | None) -> None:
            self.got.append(result)
            self._changed.set()

        return on_stored

    async def wait_for(self, count: int) -> list[Appended | None]:
        async with asyncio.timeout(GUARD):
            while len(self.got) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.got

    def ids(self) -> list[int]:
        return [result.message.id for result in self.got if result is not None]


@pytest_asyncio.fixture
async def gate() -> WriterGate:
    return WriterGate()


@pytest_asyncio.fixture
async def store(tmp_path: Path, gate: WriterGate) -> AsyncIterator[AsyncStore]:
    store = AsyncStore(tmp_path / "chat.db", before_commit=gate)
    await store.start()
    yield store
    gate.open()
    await store.close()


def committed_ids(path: Path) -> list[int]:
    """The ids on disk, read through a connection of the test's own: what a crash would keep."""
    db = sqlite3.connect(path)
    try:
        return [row[0] for row in db.execute("SELECT id FROM messages ORDER BY id")]
    finally:
        db.close()


def wal_bytes(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


async def test_group_commit_batches_grow_while_the_writer_is_busy(store: AsyncStore, gate: WriterGate) -> None:
    results = Results()
    gate.close()
    store.submit(room_draft("first"), results.callback())
    await gate.held()
    for i in range(100):
        store.submit(room_draft(f"queued {i}"), results.callback())
    gate.open()
    await results.wait_for(101)
    assert gate.sizes == [1, 100], "everything submitted while the writer was busy went into its next transaction"
    assert store.batches == 2


async def test_callbacks_run_in_submit_order_only_after_the_commit(
    store: AsyncStore, gate: WriterGate, tmp_path: Path
) -> None:
    seen_on_disk: list[bool] = []
    order: list[str] = []

    def callback(text: str) -> Callable[[Appended | None], None]:
        def on_stored(result: Appended | None) -> None:
            assert result is not None
            order.append(result.message.text)
            seen_on_disk.append(result.message.id in committed_ids(tmp_path / "chat.db"))

        return on_stored

    gate.close()
    texts = [f"m{i}" for i in range(20)]
    for text in texts:
        store.submit(room_draft(text), callback(text))
    await gate.held()
    assert order == [], "no callback runs while its transaction is open"
    assert committed_ids(tmp_path / "chat.db") == []
    gate.open()
    await store.flush()
    assert order == texts
    assert seen_on_disk == [True] * 20, "each callback ran after its message was committed"


async def test_a_failed_transaction_gives_none_to_each_callback_and_logs_it(
    store: AsyncStore, gate: WriterGate, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    results = Results()
    gate.fail_next = True
    with caplog.at_level(logging.ERROR, logger="chat.store"):
        for i in range(3):
            store.submit(room_draft(f"lost {i}", cid=f"c{i}"), results.callback())
        assert await results.wait_for(3) == [None, None, None]
    assert any(r.name == "chat.store" and "transaction" in r.getMessage() for r in caplog.records)
    assert committed_ids(tmp_path / "chat.db") == []
    store.submit(room_draft("after", cid="c0"), results.callback())
    (*_, after) = await results.wait_for(4)
    assert after is not None and not after.duplicate, "the failed batch left nothing behind, not even its cids"
    assert after.message.id == 1, "nor used up any id"


async def test_a_failing_write_raises_to_its_caller_and_the_batch_still_commits(store: AsyncStore) -> None:
    results = Results()
    record = FileRecord("f1", "a.txt", 3, "00")
    await store.add_file(record)
    store.submit(room_draft("before"), results.callback())
    adding_again = store.add_file(record)  # the same fid: refused by its primary key
    store.submit(room_draft("after"), results.callback())
    with pytest.raises(sqlite3.IntegrityError):
        await adding_again
    await results.wait_for(2)
    assert [r.message.text for r in results.got if r is not None] == ["before", "after"]


async def test_a_failing_group_of_drafts_fails_alone(
    store: AsyncStore, gate: WriterGate, caplog: pytest.LogCaptureFixture
) -> None:
    results = Results()
    gate.close()
    store.submit(room_draft("held"), results.callback())
    await gate.held()
    store.submit(room_draft("good"), results.callback())
    identity = store.create_identity("between the groups", 1)
    store.submit(room_draft(None, cid="bad"), results.callback())  # type: ignore[arg-type]  # NOT NULL text
    with caplog.at_level(logging.ERROR, logger="chat.store"):
        gate.open()
        held, good, bad = await results.wait_for(3)
    assert held is not None and good is not None and bad is None
    assert await identity > 0, "the write between the groups committed with them"
    assert any("storing 1 message(s) failed" in r.getMessage() for r in caplog.records)
    assert [m.text for m in (await store.page(Scope.room("lobby"))).messages] == ["held", "good"]


async def test_reads_do_not_wait_for_a_held_writer_transaction(store: AsyncStore, gate: WriterGate) -> None:
    results = Results()
    store.submit(room_draft("committed"), results.callback())
    await results.wait_for(1)
    identity = await store.create_identity("token", 1)
    gate.close()
    store.submit(room_draft("held"), results.callback())
    await gate.held()
    page = await asyncio.wait_for(store.page(Scope.room("lobby")), GUARD)
    assert [m.text for m in page.messages] == ["committed"], "a read sees the last commit, not the open transaction"
    assert await asyncio.wait_for(store.identity_for_token("token"), GUARD) == identity
    assert await asyncio.wait_for(store.last_id(), GUARD) == 1
    gate.open()
    await results.wait_for(2)


async def test_a_read_issued_after_a_callback_sees_that_message(store: AsyncStore) -> None:
    pages: list[asyncio.Future[object]] = []

    def on_stored(result: Appended | None) -> None:
        assert result is not None
        pages.append(asyncio.ensure_future(store.page(Scope.room("lobby"), after=result.message.id - 1, limit=1)))

    for i in range(50):
        store.submit(room_draft(f"m{i}"), on_stored)
    await store.flush()
    for index, page in enumerate(await asyncio.gather(*pages)):
        assert [m.text for m in page.messages] == [f"m{index}"]  # type: ignore[attr-defined]


async def test_flush_returns_once_every_earlier_callback_has_run(store: AsyncStore, gate: WriterGate) -> None:
    results = Results()
    gate.close()
    for i in range(10):
        store.submit(room_draft(f"m{i}"), results.callback())
    flushed = store.flush()
    await gate.held()
    assert not flushed.done()
    gate.open()
    await asyncio.wait_for(flushed, GUARD)
    assert len(results.got) == 10


async def test_close_commits_everything_submitted_and_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    store = AsyncStore(path)
    await store.start()
    results: list[Appended | None] = []
    for i in range(1000):
        store.submit(room_draft(f"m{i}"), results.append)
    await asyncio.gather(store.close(), store.close())
    await store.close()
    assert [r.message.id for r in results if r is not None] == list(range(1, 1001))
    assert committed_ids(path) == list(range(1, 1001))
    assert wal_bytes(path) == 0, "the WAL was checkpointed"
    with pytest.raises(StoreClosed):
        store.submit(room_draft("late"), results.append)
    with pytest.raises(StoreClosed):
        await store.page(Scope.room("lobby"))


async def test_explicit_ids_are_kept_and_an_id_not_above_the_last_is_refused(
    store: AsyncStore, caplog: pytest.LogCaptureFixture
) -> None:
    results = Results()
    store.submit(room_draft("ten", id=10), results.callback())
    store.submit(room_draft("twenty", id=20), results.callback())
    store.submit(room_draft("assigned"), results.callback())
    store.submit(room_draft("stale", id=15), results.callback())
    with caplog.at_level(logging.ERROR, logger="chat.store"):
        got = await results.wait_for(4)
    assert [r.message.id if r else None for r in got] == [10, 20, 21, None]
    assert any("not above the last id" in r.getMessage() for r in caplog.records)
    assert await store.last_id() == 21
    assert [m.id for m in (await store.page(Scope.room("lobby"), after=0)).messages] == [10, 20, 21]


async def test_a_repeated_cid_in_one_batch_returns_the_first(store: AsyncStore, gate: WriterGate) -> None:
    results = Results()
    gate.close()
    store.submit(room_draft("hold the writer"), results.callback())
    await gate.held()
    store.submit(room_draft("x", cid="same"), results.callback())
    store.submit(room_draft("x again", cid="same"), results.callback())
    store.submit(room_draft("x", cid="same", identity=2), results.callback())
    gate.open()
    _, first, repeat, other = await results.wait_for(4)
    assert gate.sizes[:2] == [1, 3], "the three drafts shared a transaction"
    assert first is not None and repeat is not None and other is not None
    assert (first.duplicate, repeat.duplicate, other.duplicate) == (False, True, False)
    assert repeat.message == first.message
    assert other.message.id == first.message.id + 1, "cids are per identity"


async def test_a_cid_stored_in_an_earlier_batch_returns_the_original_and_new_ids_stay_consecutive(
    store: AsyncStore, gate: WriterGate
) -> None:
    results = Results()
    store.submit(room_draft("original", cid="c1"), results.callback())
    (original,) = await results.wait_for(1)
    assert original is not None
    gate.close()
    store.submit(room_draft("hold"), results.callback())
    await gate.held()
    store.submit(room_draft("new a", cid="a"), results.callback())
    store.submit(room_draft("resent", cid="c1"), results.callback())  # the slow path: found in the database
    store.submit(room_draft("new b", cid="b"), results.callback())
    gate.open()
    got = await results.wait_for(5)
    hold, new_a, resent, new_b = got[1:]
    assert resent is not None and resent.duplicate and resent.message == original.message
    assert [r.message.id for r in (hold, new_a, new_b) if r is not None] == [2, 3, 4]
    assert [m.text for m in (await store.page(Scope.room("lobby"), after=0)).messages] == [
        "original", "hold", "new a", "new b",
    ]  # fmt: skip


async def test_other_writes_are_ordered_with_the_messages(store: AsyncStore) -> None:
    record = FileRecord("f" * 32, "notes.txt", 5, "ab" * 32, owner=1, room_key="lobby", created=100)
    results = Results()
    identity = await store.create_identity("t1", 0)
    adding = store.add_file(record)  # queued at the call: not awaited before the submit
    store.submit(room_draft("notes.txt", file=record), results.callback())
    store.hold_nick("n1", "N1", identity, 50)
    (announced,) = await results.wait_for(1)
    assert adding.done(), "the file record was committed with or before the message announcing it"
    assert announced is not None and announced.message.file is not None
    assert announced.message.file.fid == record.fid
    assert await store.file(record.fid) == record
    assert await store.files_size() == 5
    assert (await store.files_size(1), await store.files_size(2)) == (5, 0)
    holders = await store.load_nicks()
    assert holders["n1"].nick == "N1" and holders["n1"].identity == identity
    assert await store.nick_holder("n1") == holders["n1"]
    page = await store.page(Scope.room("lobby"))
    assert page.messages[0].file is not None and page.messages[0].file.name == "notes.txt"
    assert await store.delete_files_older_than(101) == [record.fid]
    assert await store.file(record.fid) is None


async def test_retention_deletes_in_chunks_with_commits_between(tmp_path: Path) -> None:
    store = AsyncStore(tmp_path / "chat.db", delete_chunk=10)
    await store.start()
    try:
        for i in range(35):
            store.submit(Draft(ts=i, sender_identity=1, sender="a", sender_key="a", text="t", cid=None,
                               room="r", room_key="r"), lambda _: None)  # fmt: skip
        await store.flush()
        batches = store.batches
        assert await store.delete_older_than(30) == 30
        assert store.batches - batches == 4, "30 rows in transactions of at most 10 (the last finds none left)"
        assert [m.ts for m in (await store.page(Scope.room("r"), after=0)).messages] == [30, 31, 32, 33, 34]
    finally:
        await store.close()


async def test_a_callback_that_raises_is_logged_and_the_next_still_runs(
    store: AsyncStore, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(result: Appended | None) -> None:
        raise ValueError("a broken callback")

    results = Results()
    with caplog.at_level(logging.ERROR, logger="chat.store"):
        store.submit(room_draft("one"), broken)
        store.submit(room_draft("two"), results.callback())
        await results.wait_for(1)
    assert any("callback failed" in r.getMessage() for r in caplog.records)


async def test_a_cancelled_write_still_happens(store: AsyncStore) -> None:
    creating = store.create_identity("cancelled", 1)
    creating.cancel()
    await store.flush()
    assert await store.identity_for_token("cancelled") is not None


async def test_a_memory_database_works_with_reads_through_the_writer() -> None:
    store = AsyncStore(":memory:")
    await store.start()
    try:
        results: list[Appended | None] = []
        store.submit(room_draft("hi"), results.append)
        page = await store.page(Scope.room("lobby"))  # queued behind the submit: it sees it
        assert [m.text for m in page.messages] == ["hi"]
        assert results and results[0] is not None
    finally:
        await store.close()


async def test_the_sync_store_reads_what_the_async_store_wrote(tmp_path: Path) -> None:
    async with AsyncStore(tmp_path / "chat.db") as store:
        results: list[Appended | None] = []
        store.submit(room_draft("kept", cid="k"), results.append)
    sync = HistoryStore(tmp_path / "chat.db")
    try:
        (message,) = sync.page(Scope.room("lobby")).messages
        assert message == StoredMessage(1, 1000, "n1", "lobby", None, "kept", "k")
        assert sync.append_batch([room_draft("again", cid="k")])[0].duplicate
    finally:
        sync.close()
