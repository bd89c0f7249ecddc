"""`AsyncStore`: the history store for the event loop, with SQLite kept off the loop thread.

Threads and what each owns:

    loop thread           submit(), hold_nick() and the async methods only put work on a queue or an executor;
                          callbacks and results come back to it. It never calls into SQLite.
    writer thread         owns the write connection (a HistoryStore). It takes everything queued (at most
    "chat-store-writer"   `max_batch` items), runs it in ONE transaction, commits, and hands the outcomes back
                          with ONE `loop.call_soon_threadsafe` per batch. While it commits, new work queues up and
                          becomes the next batch: batches grow with the load, and nothing waits on a timer.
    reader thread         owns a second connection (read-only, `PRAGMA query_only`), in a ThreadPoolExecutor with
    "chat-store-reader"   one worker: reads run one at a time, in the order they were issued, each in its own
                          read transaction. WAL gives each read the last committed snapshot, so a read never waits
                          for the writer's transaction, and never sees a write before its commit.

Why the two threads differ: a read is one request, one answer, and an executor already gives each call its own
future, carries exceptions, and serves its queue in order. The writer must instead drain its queue into one
transaction per turn and answer the whole batch at once, which an executor cannot do, so it is a plain thread on a
`queue.SimpleQueue`.

Invariants:
- Ack after commit: no callback runs and no write's result is delivered before the COMMIT that made it durable
  has returned.
- Order: the writer runs items in the order they were queued, message drafts and other writes alike (so a file
  record is committed no later than the message announcing it); callbacks run in submit order. Writes are queued
  when called, not when awaited: each returns a future, so `store.add_file(record); store.submit(draft, cb)`
  keeps that order without an await between them.
- Read your acknowledged writes: the reader starts a new read transaction for each read, after the read was
  issued; a read issued after a callback ran (or after a write's result arrived, or after `flush()`) starts after
  that commit, so it sees that message.
- Ids: as in HistoryStore, increasing and never reused; a draft's own `id` is kept if it is above the last one.

Errors: a batch whose transaction fails (BEGIN, the `before_commit` hook, COMMIT) is rolled back; each of its
drafts' callbacks gets None, each of its writes' futures raises StoreError, and the exception is logged on
`chat.store`. A write whose own statement fails (say a file id already recorded) raises that error
(sqlite3.IntegrityError) to its caller, and the rest of the batch commits. A failure inside one group of drafts
(say a draft without text, refused by NOT NULL) fails that group only: its savepoint is rolled back, its
callbacks get None (logged), and the rest of the batch commits. An exception in a callback is logged and the
next callback still runs. Cancelling a task awaiting a write does not cancel the write.

Close: `close()` refuses new work, waits until everything queued is committed and its callbacks have run, closes
the reader, then the writer checkpoints the WAL (TRUNCATE) and closes; calling it again waits for the same close.

`:memory:` has no second connection to read from (each connection would be its own database): reads then queue
behind the writes on the writer thread, and keep every invariant above except that they wait for the writer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from chat.store.errors import StoreClosed, StoreError, StoreUnavailable
from chat.store.history import HistoryStore
from chat.store.records import Appended, Draft, FileRecord, NickHolder, Page, Scope

logger = logging.getLogger("chat.store")

T = TypeVar("T")
StoredCallback = Callable[[Appended | None], None]  # None: the message could not be stored
BeforeCommit = Callable[[int], None]  # on the writer thread, inside the transaction, with the batch's draft count


class _Call:
    """A write other than a message draft (or a flush marker: `run` None); `future` None for fire and forget."""

    __slots__ = ("future", "run", "stop")

    def __init__(
        self, run: Callable[[HistoryStore], Any] | None, future: asyncio.Future[Any] | None, *, stop: bool = False
    ) -> None:
        self.run = run
        self.future = future
        self.stop = stop


class _Failed:
    """The outcome of a write that raised."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class AsyncStore:
    """The history store the server uses from its event loop: group commit on a writer thread, reads on a reader
    thread (see the module docstring for the threads and the invariants).

    `max_batch` caps the items in one transaction (and so the callbacks in one loop callback); `delete_chunk` the
    rows one retention transaction deletes. `cache_kib` (the writer's page cache) and `checkpoint_pages` (the WAL
    size that makes a commit checkpoint) are set well above SQLite's defaults (2 MiB, 1000 pages) because each
    message with a random cid lands at a random place of the cid index: on 1,000,000 messages they took a stored
    message from about 27 us to 17 us of writer time (batches of 4,000 through HistoryStore.append_batch).

    `before_commit`, a test hook, runs on the writer thread inside each transaction just before COMMIT with the
    number of drafts in it: a test holds the writer there to make the next batch grow, or raises to make the
    transaction fail."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "normal",
        max_batch: int = 4096,
        delete_chunk: int = 10_000,
        cache_kib: int = 65536,
        checkpoint_pages: int = 10_000,
        checkpoint_seconds: float = 0.25,
        before_commit: BeforeCommit | None = None,
    ) -> None:
        self.path = str(path)
        self.synchronous = synchronous
        self.cache_kib = cache_kib
        self.checkpoint_pages = checkpoint_pages
        self.checkpoint_seconds = checkpoint_seconds
        self._checkpointer: threading.Thread | None = None
        self._checkpoints_stop = threading.Event()
        self.max_batch = max_batch
        self.delete_chunk = delete_chunk
        self.before_commit = before_commit
        self.batches = 0  # transactions committed, for benchmarks and tests
        self.messages = 0  # drafts in them
        self._queue: queue.SimpleQueue[tuple[Draft, StoredCallback] | _Call] = queue.SimpleQueue()
        self._put = self._queue.put
        self._open = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: threading.Thread | None = None
        self._reader: concurrent.futures.ThreadPoolExecutor | None = None
        self._reader_store: HistoryStore | None = None
        self._closing: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<AsyncStore {self.path} {state} batches={self.batches} messages={self.messages}>"

    # --- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the write connection (creating and migrating the schema) and the read connection, each on its
        thread; raises what opening raised (SchemaTooNew, sqlite3.Error, OSError)."""
        if self._writer is not None:
            raise StoreError(f"{self!r} was started already")
        self._loop = loop = asyncio.get_running_loop()
        opened: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._writer = threading.Thread(target=self._writer_main, args=(opened,), name="chat-store-writer", daemon=True)
        self._writer.start()
        try:
            await asyncio.wrap_future(opened)
        except (sqlite3.Error, OSError) as exc:
            self._writer.join()
            self._writer = None
            raise unavailable(self.path, exc) from exc
        if self.path != ":memory:":
            self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="chat-store-reader")
            try:
                self._reader_store = await loop.run_in_executor(
                    self._reader, lambda: HistoryStore(self.path, read_only=True)
                )
            except BaseException as exc:
                self._reader.shutdown(wait=False)
                self._reader = None
                await self._stop_writer()
                if isinstance(exc, sqlite3.Error | OSError):
                    raise unavailable(self.path, exc) from exc
                raise
            if self.checkpoint_seconds > 0:
                self._checkpointer = threading.Thread(
                    target=self._checkpoint_main, name="chat-store-checkpointer", daemon=True
                )
                self._checkpointer.start()
        self._open = True

    def _checkpoint_main(self) -> None:
        """Copy the WAL into the database every `checkpoint_seconds` on a connection of its own (PASSIVE: it
        never blocks the writer). The checkpoint's fsyncs then happen here, not inside a commit that the loop
        waits on; the WAL is reused from its start once checkpointed, instead of growing (each extension of the
        file is a filesystem allocation in the commit path). The writer's autocheckpoint stays as a backstop."""
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            logger.exception("the checkpointer could not open %s", self.path)
            return
        try:
            while not self._checkpoints_stop.wait(self.checkpoint_seconds):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    logger.debug("checkpoint of %s: %s", self.path, exc)
        finally:
            db.close()

    async def close(self) -> None:
        """Commit everything submitted, run its callbacks, checkpoint the WAL and stop both threads. Idempotent."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        if not self._open:
            return
        self._open = False
        await self._queued(None)  # everything before it committed and delivered
        if self._checkpointer is not None:
            self._checkpoints_stop.set()
            await asyncio.to_thread(self._checkpointer.join)
            self._checkpointer = None
        if self._reader is not None:
            reader, store = self._reader, self._reader_store
            assert store is not None
            try:
                await asyncio.get_running_loop().run_in_executor(reader, store.close)
            finally:
                reader.shutdown(wait=False)
        await self._stop_writer()
        logger.info("%s closed: %d message(s) stored in %d transaction(s)", self.path, self.messages, self.batches)

    async def _stop_writer(self) -> None:
        loop = asyncio.get_running_loop()
        stopped: asyncio.Future[None] = loop.create_future()
        self._put(_Call(None, stopped, stop=True))
        await stopped
        assert self._writer is not None
        self._writer.join()  # it has returned from its last call already

    async def __aenter__(self) -> AsyncStore:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- writes: through the writer queue, in order -------------------------------------------------------------

    def submit(self, draft: Draft, on_stored: StoredCallback) -> None:
        """Store `draft` in the writer's next transaction; after its COMMIT, `on_stored` runs on the loop thread
        with the stored message (or the original one, `duplicate=True`, for a repeated cid), or None if it could
        not be stored. Non-blocking; call it on the loop thread."""
        if not self._open:
            raise StoreClosed(f"{self!r}: submit() needs a started, open store")
        self._put((draft, on_stored))

    def hold_nick(self, key: str, nick: str, identity: int, now_ms: int) -> None:
        """Record that `identity` holds the nick, in queue order; fire and forget (a failure is logged)."""
        self._check_open()
        self._put(_Call(lambda store: store.hold_nick(key, nick, identity, now_ms), None))

    # Writes are queued when called, not when first awaited: each returns a future, so call order is commit order
    # even for a call whose result is awaited later (or never).

    def create_identity(self, token: str, now_ms: int) -> asyncio.Future[int]:
        """A new identity for a freshly issued token, once committed."""
        return self._write(lambda store: store.create_identity(token, now_ms))

    def add_file(self, record: FileRecord) -> asyncio.Future[None]:
        """Record a stored file. A message announcing it may be submitted right after the call, without awaiting
        it first: the queue keeps the order, so the record is committed no later than the message."""
        return self._write(lambda store: store.add_file(record))

    async def delete_older_than(self, cutoff_ms: int) -> int:
        """Drop messages sent before `cutoff_ms`; return how many. Runs as transactions of at most `delete_chunk`
        rows, so group commits go on between them."""
        chunk = self.delete_chunk
        total = 0
        while True:
            removed = await self._write(lambda store: store.delete_older_than(cutoff_ms, limit=chunk))
            total += removed
            if removed < chunk:
                return total

    def delete_files_older_than(self, cutoff_ms: int) -> asyncio.Future[list[str]]:
        """Forget files stored before `cutoff_ms`; the result is their ids, so their data can be removed."""
        return self._write(lambda store: store.delete_files_older_than(cutoff_ms))

    def flush(self) -> asyncio.Future[None]:
        """Done once everything submitted before the call is committed and its callbacks have run."""
        self._check_open()
        return self._queued(None)

    def _write(self, run: Callable[[HistoryStore], T]) -> asyncio.Future[T]:
        self._check_open()
        return self._queued(run)

    def _queued(self, run: Callable[[HistoryStore], Any] | None) -> asyncio.Future[Any]:
        assert self._loop is not None
        future = self._loop.create_future()
        self._put(_Call(run, future))
        return future

    def _check_open(self) -> None:
        if not self._open:
            raise StoreClosed(f"{self!r} is not open")

    # --- reads: on the reader thread --------------------------------------------------------------------------

    async def page(self, scope: Scope, *, after: int | None = None, before: int | None = None, limit: int = 50) -> Page:
        """A page of `scope`, as HistoryStore.page."""
        return await self._read(lambda store: store.page(scope, after=after, before=before, limit=limit))

    async def identity_for_token(self, token: str) -> int | None:
        """The identity a session token stands for, or None."""
        return await self._read(lambda store: store.identity_for_token(token))

    async def nick_holder(self, key: str) -> NickHolder | None:
        """Who last held the nick with this folded key, or None."""
        return await self._read(lambda store: store.nick_holder(key))

    async def load_nicks(self) -> dict[str, NickHolder]:
        """Every nick hold by folded key, for the server's in-memory nick table (loaded once at start)."""
        return await self._read(lambda store: store.load_nicks())

    async def file(self, fid: str) -> FileRecord | None:
        """The stored file with this id, or None."""
        return await self._read(lambda store: store.file(fid))

    async def files_size(self, owner: int | None = None) -> int:
        """Bytes of every stored file, or of those sent by one identity."""
        return await self._read(lambda store: store.files_size(owner))

    async def last_id(self) -> int:
        """The highest id ever assigned (0 if none)."""
        return await self._read(lambda store: store.last_id())

    async def _read(self, run: Callable[[HistoryStore], T]) -> T:
        self._check_open()
        if self._reader is None:  # :memory:
            return await self._write(run)
        assert self._loop is not None and self._reader_store is not None
        return await self._loop.run_in_executor(self._reader, run, self._reader_store)

    # --- the writer thread --------------------------------------------------------------------------------------

    def _writer_main(self, opened: concurrent.futures.Future[None]) -> None:
        try:
            store = HistoryStore(
                self.path,
                synchronous=self.synchronous,
                cache_kib=self.cache_kib,
                checkpoint_pages=self.checkpoint_pages,
            )
        except BaseException as exc:
            opened.set_exception(exc)
            return
        opened.set_result(None)
        get, get_nowait = self._queue.get, self._queue.get_nowait
        stop: _Call | None = None
        while stop is None:
            items = [get()]
            try:
                while len(items) < self.max_batch:
                    items.append(get_nowait())
            except queue.Empty:
                pass
            last = items[-1]
            if type(last) is _Call and last.stop:  # close() queues it after everything else
                stop = last
                items.pop()
            if items:
                self._commit(store, items)
        try:
            store.close()
        except Exception:
            logger.exception("closing %s failed", self.path)
        self._hand_back(_set_result, stop.future, None)

    def _commit(self, store: HistoryStore, items: list[tuple[Draft, StoredCallback] | _Call]) -> None:
        """Run `items` in one transaction and hand their outcomes back to the loop in one call."""
        outcomes: list[Any] = [None] * len(items)
        drafts = 0
        db = store.connection
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                drafts = self._run_items(store, items, outcomes)
                if self.before_commit is not None:
                    self.before_commit(drafts)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                store.rolled_back()
                raise
        except Exception as exc:
            logger.exception("a transaction of %d item(s) failed; nothing of it was stored", len(items))
            failure = StoreError(f"the transaction failed: {exc!r}")
            failure.__cause__ = exc
            outcomes = [None if type(item) is tuple else _Failed(failure) for item in items]
        else:
            self.batches += 1
            self.messages += drafts
        self._hand_back(self._deliver, items, outcomes)

    @staticmethod
    def _run_items(store: HistoryStore, items: list[tuple[Draft, StoredCallback] | _Call], outcomes: list[Any]) -> int:
        """Run each item inside the open transaction, consecutive drafts as one group; return the draft count."""
        count = len(items)
        drafts = 0
        index = 0
        while index < count:
            item = items[index]
            if type(item) is tuple:
                end = index + 1
                while end < count and type(items[end]) is tuple:
                    end += 1
                group = [entry[0] for entry in items[index:end] if type(entry) is tuple]
                try:
                    outcomes[index:end] = store.insert_drafts(group)
                except Exception:
                    logger.exception("storing %d message(s) failed", len(group))
                drafts += end - index
                index = end
                continue
            assert isinstance(item, _Call)
            if item.run is not None:
                try:
                    outcomes[index] = item.run(store)
                except Exception as exc:
                    if item.future is None:
                        logger.exception("a store write failed")
                    outcomes[index] = _Failed(exc)
            index += 1
        return drafts

    def _hand_back(self, callback: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is left to tell
            logger.warning("the event loop closed before %s could deliver", self.path)

    # --- back on the loop thread --------------------------------------------------------------------------------

    @staticmethod
    def _deliver(items: list[tuple[Draft, StoredCallback] | _Call], outcomes: list[Any]) -> None:
        """Run the callbacks and settle the futures of one committed (or failed) batch, in queue order."""
        for item, outcome in zip(items, outcomes, strict=True):
            if type(item) is tuple:
                try:
                    item[1](outcome)
                except Exception:
                    logger.exception("a stored-message callback failed")
                continue
            assert isinstance(item, _Call)
            future = item.future
            if future is None or future.done():
                continue
            if type(outcome) is _Failed:
                future.set_exception(outcome.error)
            else:
                future.set_result(outcome)


def unavailable(path: str, exc: sqlite3.Error | OSError) -> StoreUnavailable:
    """The one-line reason a database cannot be opened, naming the file."""
    if isinstance(exc, OSError):
        if isinstance(exc, NotADirectoryError | FileExistsError):
            why = f"a part of its folder is not a folder ({exc.filename or exc.strerror})"
        else:
            why = exc.strerror or str(exc)
    elif isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
        why = "the file is not an SQLite database (corrupt, or another kind of file)"
    elif "readonly" in str(exc) or "read-only" in str(exc):
        why = "the file or its folder is read-only"
    elif "unable to open" in str(exc):
        why = "the file cannot be opened or created (check the folder exists and is writable)"
    else:
        why = str(exc)
    return StoreUnavailable(f"{path}: cannot open the history database: {why}")


def _set_result(future: asyncio.Future[None] | None, value: None) -> None:
    if future is not None and not future.done():
        future.set_result(value)
