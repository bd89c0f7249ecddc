"""The history store: messages, identities, nick holds and file records in SQLite (WAL), synchronous and loop-free.

`HistoryStore` is one connection and every statement the store runs; `chat.store.sqlite.AsyncStore` drives two of
them (a writer and a reader) from their own threads and runs no SQL of its own.

Invariants:
- Message ids are strictly increasing and never reused, across restarts and after retention deletes old rows: the
  table is AUTOINCREMENT, so `sqlite_sequence` keeps the highest id ever stored, and the next id is one above it
  (or the caller's own, which must be above it).
- A `cid` is unique per sending identity (a unique index), so a repeated `say` finds its original message even
  after a restart, for as long as that message is kept; a repeat within one batch finds the first.
- Tokens are stored as their SHA-256 only.
- Every query is answered from an index (tests/test_store_plans.py runs EXPLAIN QUERY PLAN on every statement).
- `append_batch` runs one transaction for many messages; `insert_drafts` runs inside the caller's transaction, so
  the caller decides when the commit happens and acknowledges nothing before it returns.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from chat.protocol.auth import token_digest
from chat.store.records import (
    Appended,
    Draft,
    FileRecord,
    NickHolder,
    Page,
    Scope,
    StoredMessage,
)
from chat.store.schema import connect

__all__ = [
    "Appended",
    "Draft",
    "FileRecord",
    "HistoryStore",
    "NickHolder",
    "Page",
    "Scope",
    "StoredMessage",
    "ids",
    "now_ms",
]

logger = logging.getLogger(__name__)

_COLUMNS = "m.id, m.ts, m.sender, m.room, m.recipient, m.text, m.cid, f.fid, f.name, f.size, f.sha256"
_FILES = "LEFT JOIN files AS f ON f.fid = m.file_fid"
_SELECT = f"SELECT {_COLUMNS} FROM messages AS m {_FILES}"

_INSERT = (
    "INSERT INTO messages (id, ts, sender_identity, sender, sender_key, room, room_key, recipient, recipient_key, "
    "recipient_identity, text, cid, file_fid) VALUES "
)
_ROW = "(?,?,?,?,?,?,?,?,?,?,?,?,?)"
_FIELDS = 13
# Rows per INSERT statement (13 parameters each, under SQLite's limit of 32,766). Many rows per statement instead of
# one (executemany) is a third cheaper in SQLite, and above all it takes the GIL back once per statement rather than
# once per row: each time the writer thread wants the GIL back from a busy event loop it may wait for the loop's
# next pause, so the writer's round trips per transaction bound the group-commit rate (scripts/bench_store.py
# --loop-work). A batch is one statement of `_CHUNK` rows per full chunk, and the rest one statement per set bit of
# its size (a power of two rows each): SQLite compiles a statement of a new size afresh (a batch of 175 rows spends
# more on compiling than on inserting), so only the 12 sizes 1, 2, 4, ... 2048 are ever compiled, each once, and then
# come from the connection's statement cache (measured: 1.5-2 us per row less than one statement of the exact size).
_CHUNK = 2048


def _row(row: tuple[Any, ...]) -> StoredMessage:
    """A StoredMessage from a row of `_SELECT`."""
    file = None if row[7] is None else FileRecord(row[7], row[8], row[9], row[10])
    return StoredMessage(row[0], row[1], row[2], row[3], row[4], row[5], row[6], file)


def _page_sql(scope: Scope, after: int | None, before: int | None, limit: int) -> tuple[str, list[object]]:
    """The statement for one page of `scope` and its parameters: the newest (or, with `after`, the oldest)
    `limit` messages in range, read from one index per branch."""
    order = "ASC" if after is not None else "DESC"
    bounds = ""
    bound_params: list[object] = []
    if after is not None:
        bounds += " AND m.id > ?"
        bound_params.append(after)
    if before is not None:
        bounds += " AND m.id < ?"
        bound_params.append(before)
    if len(scope.branches) == 1:
        ((where, params),) = scope.branches
        sql = f"{_SELECT} WHERE {where}{bounds} ORDER BY m.id {order} LIMIT ?"
        return sql, [*params, *bound_params, limit]
    # Each branch walks its own index for its nearest `limit` ids; the union (UNION, not UNION ALL: a message to
    # oneself is in both) holds the nearest `limit` of the scope, and only those rows are read from the table.
    parts: list[str] = []
    all_params: list[object] = []
    for where, params in scope.branches:
        parts.append(
            f"SELECT id FROM (SELECT m.id FROM messages AS m WHERE {where}{bounds} ORDER BY m.id {order} LIMIT ?)"
        )
        all_params.extend((*params, *bound_params, limit))
    sql = (
        f"SELECT {_COLUMNS} FROM ({' UNION '.join(parts)}) AS c CROSS JOIN messages AS m ON m.id = c.id {_FILES} "
        f"ORDER BY m.id {order} LIMIT ?"
    )
    return sql, [*all_params, limit]


@functools.lru_cache(maxsize=16)
def _insert_sql(size: int) -> str:
    """An INSERT of `size` rows (a power of two)."""
    return _INSERT + ",".join([_ROW] * size)


class _Plan:
    """The ids and rows of one batch of drafts, given the originals of cids already stored and the last id.

    `rows` holds (draft index, id) of each row to insert and `params` their values in one flat list; a repeat of a
    cid earlier in the batch gets the earlier draft's message; an explicit id not above the last one, None."""

    __slots__ = ("drafts", "last", "originals", "params", "repeats", "rows")

    def __init__(self, drafts: Sequence[Draft], originals: dict[int, Appended], last: int) -> None:
        self.drafts = drafts
        self.originals = originals
        self.rows: list[tuple[int, int]] = []
        self.repeats: list[tuple[int, int]] = []
        self.params: list[object] = []
        firsts: dict[tuple[int, str], int] = {}
        rows, params = self.rows, self.params
        for index, draft in enumerate(drafts):
            cid = draft.cid
            if cid is not None:
                first = firsts.setdefault((draft.sender_identity, cid), index)
                if first != index:
                    self.repeats.append((index, first))
                    continue
                if index in originals:
                    continue
            if draft.id is None:
                last += 1
            elif draft.id > last:
                last = draft.id
            else:
                logger.error("refused a message with id %d: not above the last id %d", draft.id, last)
                continue
            file = draft.file
            params += (
                last, draft.ts, draft.sender_identity, draft.sender, draft.sender_key, draft.room, draft.room_key,
                draft.recipient, draft.recipient_key, draft.recipient_identity, draft.text, cid,
                None if file is None else file.fid,
            )  # fmt: skip
            rows.append((index, last))
        self.last = last

    def results(self) -> list[Appended | None]:
        """One result per draft, once the rows are in."""
        results: list[Appended | None] = [None] * len(self.drafts)
        for index, original in self.originals.items():
            results[index] = original
        drafts = self.drafts
        for index, row_id in self.rows:
            d = drafts[index]
            results[index] = Appended(
                StoredMessage(row_id, d.ts, d.sender, d.room, d.recipient, d.text, d.cid, d.file), False
            )
        for index, first in self.repeats:
            earlier = results[first]
            results[index] = None if earlier is None else Appended(earlier.message, True)
        return results


class HistoryStore:
    """SQLite-backed history on one connection. Use it from one thread at a time; every method is synchronous.

    `read_only=True` opens a reader: it never migrates or writes, and refuses a database not at this code's
    schema version (the writer opens the file first and migrates it). `cache_kib` and `checkpoint_pages` tune the
    connection (see chat.store.schema.connect)."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "normal",
        read_only: bool = False,
        cache_kib: int | None = None,
        checkpoint_pages: int | None = None,
    ) -> None:
        self.path = str(path)
        self.read_only = read_only
        self._db = connect(
            self.path,
            synchronous=synchronous,
            read_only=read_only,
            cache_kib=cache_kib,
            checkpoint_pages=checkpoint_pages,
        )
        self._last: int | None = None  # the last id, known while only this connection writes messages

    @property
    def connection(self) -> sqlite3.Connection:
        """The SQLite connection, for tests and tools (tracing, query plans); do not use it from another thread."""
        return self._db

    def close(self) -> None:
        """Checkpoint the WAL (a writer) and close the connection."""
        try:
            if not self.read_only:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            self.rolled_back()
            raise
        self._db.execute("COMMIT")

    # --- identities and nicks ----------------------------------------------------------------------------------

    def identity_for_token(self, token: str) -> int | None:
        """The identity a session token stands for, or None if the token is unknown."""
        row = self._db.execute("SELECT id FROM identities WHERE token_hash = ?", (token_digest(token),)).fetchone()
        return None if row is None else int(row[0])

    def create_identity(self, token: str, now_ms: int) -> int:
        """A new identity for a freshly issued token."""
        cursor = self._db.execute(
            "INSERT INTO identities (token_hash, created) VALUES (?, ?)", (token_digest(token), now_ms)
        )
        return int(cursor.lastrowid or 0)

    def nick_holder(self, key: str) -> NickHolder | None:
        """Who last held the nick with this folded key, or None if nobody ever did."""
        row = self._db.execute("SELECT identity, nick, last_used FROM nicks WHERE key = ?", (key,)).fetchone()
        return None if row is None else NickHolder(int(row[0]), str(row[1]), int(row[2]))

    def load_nicks(self) -> dict[str, NickHolder]:
        """Every nick hold by folded key (for a server's in-memory nick table)."""
        rows = self._db.execute("SELECT key, identity, nick, last_used FROM nicks").fetchall()
        return {str(key): NickHolder(int(identity), str(nick), int(used)) for key, identity, nick, used in rows}

    def hold_nick(self, key: str, nick: str, identity: int, now_ms: int) -> None:
        """Record that `identity` holds (or has just used) the nick."""
        self._db.execute(
            "INSERT INTO nicks (key, nick, identity, last_used) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET nick = excluded.nick, identity = excluded.identity, "
            "last_used = excluded.last_used",
            (key, nick, identity, now_ms),
        )

    # --- messages ----------------------------------------------------------------------------------------------

    def append_batch(self, drafts: Sequence[Draft]) -> list[Appended]:
        """Store drafts in one transaction; a draft whose (sender identity, cid) is already stored is not stored
        again, and its original message is returned instead. ValueError for a refused explicit id."""
        with self.transaction():
            results = self.insert_drafts(drafts)
        stored = [result for result in results if result is not None]
        if len(stored) != len(results):
            raise ValueError("a draft's explicit id is not above the last id stored")
        return stored

    def insert_drafts(self, drafts: Sequence[Draft]) -> list[Appended | None]:
        """Store drafts inside the caller's transaction (all or none: a savepoint); one result per draft, None for
        a draft whose explicit id is not above every id before it.

        The fast path assumes no cid is stored yet and inserts every row: the unique cid index refuses a repeat
        with an IntegrityError, and then what it did is undone and done again after looking up each cid (so the
        ids of new messages stay consecutive). A plain INSERT is cheaper than `ON CONFLICT DO NOTHING`, which
        searches the cid index once more per row (2 us of 11 on the development machine)."""
        if not drafts:
            return []
        db = self._db
        last = self._last if self._last is not None else self.last_id()
        db.execute("SAVEPOINT drafts")
        try:
            plan = self._insert_new(drafts, last)
            if plan is None:  # some cid was stored already: the slow path
                db.execute("ROLLBACK TO drafts")
                plan = self._insert_known(drafts, last)
        except BaseException:
            self._last = None
            db.execute("ROLLBACK TO drafts")
            db.execute("RELEASE drafts")
            raise
        db.execute("RELEASE drafts")
        self._last = plan.last
        return plan.results()

    def rolled_back(self) -> None:
        """Forget what this connection remembers of its transaction (the last id), after a ROLLBACK of it."""
        self._last = None

    def _insert_new(self, drafts: Sequence[Draft], last: int) -> _Plan | None:
        """The fast path; None if a cid turned out to be stored already (the caller undoes what it did)."""
        plan = _Plan(drafts, {}, last)
        try:
            self._insert_rows(plan.params, len(plan.rows))
        except sqlite3.IntegrityError:  # most likely a cid stored before; the slow path tells
            return None
        return plan

    def _insert_known(self, drafts: Sequence[Draft], last: int) -> _Plan:
        """The slow path: find each cid's original first, then store only the drafts that are new."""
        originals: dict[int, Appended] = {}
        looked_up: set[tuple[int, str]] = set()
        for index, draft in enumerate(drafts):
            if draft.cid is None or (draft.sender_identity, draft.cid) in looked_up:
                continue
            looked_up.add((draft.sender_identity, draft.cid))
            row = self._db.execute(
                f"{_SELECT} WHERE m.sender_identity = ? AND m.cid = ?", (draft.sender_identity, draft.cid)
            ).fetchone()
            if row is not None:
                originals[index] = Appended(_row(row), duplicate=True)
        plan = _Plan(drafts, originals, last)
        self._insert_rows(plan.params, len(plan.rows))
        return plan

    def _insert_rows(self, params: list[object], count: int) -> None:
        """Insert `count` rows of flat `params`, `_CHUNK` rows per statement."""
        execute = self._db.execute
        start = 0
        size = _CHUNK
        while count:
            while size > count:
                size >>= 1
            end = start + size * _FIELDS
            execute(_insert_sql(size), params[start:end])
            start = end
            count -= size

    def page(self, scope: Scope, *, after: int | None = None, before: int | None = None, limit: int = 50) -> Page:
        """A page of `scope`, ascending. With `after` (alone or with `before`): the oldest `limit` above it; with
        only `before`: the newest `limit` below it; with neither: the newest `limit`. `truncated` says more
        messages lie beyond the page in its direction (docs/protocol.md 8, "Paging")."""
        sql, params = _page_sql(scope, after, before, limit + 1)
        rows = self._db.execute(sql, params).fetchall()
        truncated = len(rows) > limit
        messages = [_row(row) for row in rows[:limit]]
        if after is None:
            messages.reverse()
        return Page(messages, truncated)

    def last_id(self) -> int:
        """The highest id ever assigned (0 if none), also after retention removed it."""
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        return 0 if row is None else int(row[0])

    def delete_older_than(self, cutoff_ms: int, *, limit: int | None = None) -> int:
        """Drop messages (and so their cids) sent before `cutoff_ms`, at most `limit` of them; return how many."""
        if limit is None:
            return self._db.execute("DELETE FROM messages WHERE ts < ?", (cutoff_ms,)).rowcount
        return self._db.execute(
            "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE ts < ? LIMIT ?)", (cutoff_ms, limit)
        ).rowcount

    # --- files --------------------------------------------------------------------------------------------------

    def add_file(self, record: FileRecord) -> None:
        """Record a stored file (before the message that announces it)."""
        self._db.execute(
            "INSERT INTO files (fid, name, size, sha256, owner, room_key, recipient_identity, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.fid,
                record.name,
                record.size,
                record.sha256,
                record.owner,
                record.room_key,
                record.recipient_identity,
                record.created,
            ),
        )

    def file(self, fid: str) -> FileRecord | None:
        """The stored file with this id, or None."""
        row = self._db.execute(
            "SELECT fid, name, size, sha256, owner, room_key, recipient_identity, created FROM files WHERE fid = ?",
            (fid,),
        ).fetchone()
        return None if row is None else FileRecord(*row)

    def delete_files_older_than(self, cutoff_ms: int) -> list[str]:
        """Forget files stored before `cutoff_ms` (retention); return their ids so their data can be removed."""
        fids = [row[0] for row in self._db.execute("SELECT fid FROM files WHERE created < ?", (cutoff_ms,))]
        self._db.execute("DELETE FROM files WHERE created < ?", (cutoff_ms,))
        return fids

    def files_size(self, owner: int | None = None) -> int:
        """Bytes of every stored file, or of those sent by one identity (the file quotas)."""
        if owner is None:
            return int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM files").fetchone()[0])
        query = "SELECT COALESCE(SUM(size), 0) FROM files WHERE owner = ?"
        return int(self._db.execute(query, (owner,)).fetchone()[0])


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch, the unit of every stored time."""
    return time.time_ns() // 1_000_000


def ids(messages: Iterable[StoredMessage]) -> list[int]:
    """The ids of some messages, for logs and tests."""
    return [message.id for message in messages]
