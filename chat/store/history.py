"""The history store: messages, identities and nick holds in SQLite (WAL), synchronous and loop-free.

Invariants:
- Message ids come from SQLite's AUTOINCREMENT, so they are strictly increasing and never reused, across restarts
  and after retention deletes old rows.
- A `cid` is unique per sending identity (a unique index), so a repeated `say` finds its original message even
  after a restart, for as long as that message is kept.
- Tokens are stored as their SHA-256 only.
- `append_batch` runs one transaction for many messages: the caller groups the sends of one loop turn and
  acknowledges none of them before the commit returns.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chat.protocol.auth import token_digest

_SCHEMA = """
CREATE TABLE IF NOT EXISTS identities (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash BLOB NOT NULL UNIQUE,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS nicks (
    key TEXT PRIMARY KEY,
    nick TEXT NOT NULL,
    identity INTEGER NOT NULL REFERENCES identities(id),
    last_used INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts INTEGER NOT NULL,
    sender_identity INTEGER NOT NULL,
    sender TEXT NOT NULL,
    sender_key TEXT NOT NULL,
    room TEXT,
    room_key TEXT,
    recipient TEXT,
    recipient_key TEXT,
    recipient_identity INTEGER,
    text TEXT NOT NULL,
    cid TEXT,
    file_fid TEXT
);
CREATE TABLE IF NOT EXISTS files (
    fid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    owner INTEGER NOT NULL,
    room_key TEXT,
    recipient_identity INTEGER,
    created INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_cid ON messages(sender_identity, cid) WHERE cid IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_by_room ON messages(room_key, id) WHERE room_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS private_sent ON messages(sender_identity, id) WHERE recipient_identity IS NOT NULL;
CREATE INDEX IF NOT EXISTS private_received ON messages(recipient_identity, id) WHERE recipient_identity IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_by_ts ON messages(ts);
"""

_SELECT = (
    "SELECT m.id, m.ts, m.sender, m.room, m.recipient, m.text, m.cid, f.fid, f.name, f.size, f.sha256 "
    "FROM messages AS m LEFT JOIN files AS f ON f.fid = m.file_fid"
)


@dataclass(frozen=True, slots=True)
class FileRecord:
    """A stored file: its id (also its name on disk), display name, size, checksum, and who may fetch it (anyone
    for a room file; the owner and the recipient identity for a private one)."""

    fid: str
    name: str
    size: int
    sha256: str
    owner: int = 0
    room_key: str | None = None
    recipient_identity: int | None = None
    created: int = 0


@dataclass(slots=True)  # not frozen: a frozen dataclass costs a setattr call per field, per message
class StoredMessage:
    """A message as kept: `room` for a room message, `recipient` (the recipient's nick, spelled as its holder
    spells it) for a private one; `file` when it announces a file."""

    id: int
    ts: int
    sender: str
    room: str | None
    recipient: str | None
    text: str
    cid: str | None
    file: FileRecord | None = None


@dataclass(slots=True)  # not frozen: a frozen dataclass costs a setattr call per field, per message
class Draft:
    """A message to store: who sent it (identity and nick), where, what, and its client id."""

    ts: int
    sender_identity: int
    sender: str
    sender_key: str
    text: str
    cid: str | None
    room: str | None = None
    room_key: str | None = None
    recipient: str | None = None
    recipient_key: str | None = None
    recipient_identity: int | None = None
    file: FileRecord | None = None
    id: int | None = None  # allocated by the engine; None: the store's AUTOINCREMENT picks it


@dataclass(slots=True)  # not frozen: a frozen dataclass costs a setattr call per field, per message
class Appended:
    """The outcome of one draft: the stored message, and whether it was already stored under the same cid."""

    message: StoredMessage
    duplicate: bool


@dataclass(frozen=True, slots=True)
class NickHolder:
    """The identity that last held a nick, the spelling it used, and when it last used it (ms)."""

    identity: int
    nick: str
    last_used: int


@dataclass(frozen=True, slots=True)
class Page:
    """Messages in ascending id order, and whether more lie beyond the page in its direction."""

    messages: list[StoredMessage]
    truncated: bool


@dataclass(frozen=True, slots=True)
class Scope:
    """Which messages a query ranges over: one room, the private messages of one identity, or one conversation."""

    where: str
    params: tuple[object, ...]

    @staticmethod
    def room(room_key: str) -> Scope:
        return Scope("m.room_key = ?", (room_key,))

    @staticmethod
    def private(identity: int) -> Scope:
        return Scope(
            "((m.sender_identity = ? AND m.recipient_identity IS NOT NULL) OR m.recipient_identity = ?)",
            (identity, identity),
        )

    @staticmethod
    def conversation(identity: int, other_key: str) -> Scope:
        """Between `identity` and whoever held the nick `other_key` when each message was sent."""
        return Scope(
            "((m.sender_identity = ? AND m.recipient_key = ?) OR (m.recipient_identity = ? AND m.sender_key = ?))",
            (identity, other_key, identity, other_key),
        )


def _row(row: tuple[Any, ...]) -> StoredMessage:
    """A StoredMessage from a row of `_SELECT`."""
    file = None if row[7] is None else FileRecord(row[7], row[8], row[9], row[10])
    return StoredMessage(row[0], row[1], row[2], row[3], row[4], row[5], row[6], file)


class HistoryStore:
    """SQLite-backed history. Use from one thread; every method is short and synchronous."""

    def __init__(self, path: str | Path, *, synchronous: str = "normal") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()
        self._db.executescript(_SCHEMA)

    def _migrate(self) -> None:
        """Bring a database made by an earlier version up to this schema."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(messages)")}
        if columns and "file_fid" not in columns:
            self._db.execute("ALTER TABLE messages ADD COLUMN file_fid TEXT")

    def close(self) -> None:
        """Checkpoint the WAL and close the database."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._db.close()

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
        again, and its original message is returned instead."""
        results: list[Appended] = []
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for draft in drafts:
                if draft.cid is not None:
                    row = db.execute(
                        f"{_SELECT} WHERE m.sender_identity = ? AND m.cid = ?", (draft.sender_identity, draft.cid)
                    ).fetchone()
                    if row is not None:
                        results.append(Appended(_row(row), duplicate=True))
                        continue
                cursor = db.execute(
                    "INSERT INTO messages (id, ts, sender_identity, sender, sender_key, room, room_key, recipient, "
                    "recipient_key, recipient_identity, text, cid, file_fid) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        draft.id,
                        draft.ts,
                        draft.sender_identity,
                        draft.sender,
                        draft.sender_key,
                        draft.room,
                        draft.room_key,
                        draft.recipient,
                        draft.recipient_key,
                        draft.recipient_identity,
                        draft.text,
                        draft.cid,
                        None if draft.file is None else draft.file.fid,
                    ),
                )
                stored = StoredMessage(
                    int(cursor.lastrowid or 0),
                    draft.ts,
                    draft.sender,
                    draft.room,
                    draft.recipient,
                    draft.text,
                    draft.cid,
                    draft.file,
                )
                results.append(Appended(stored, duplicate=False))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return results

    def page(self, scope: Scope, *, after: int | None = None, before: int | None = None, limit: int = 50) -> Page:
        """A page of `scope`, ascending. With `after` (alone or with `before`): the oldest `limit` above it; with
        only `before`: the newest `limit` below it; with neither: the newest `limit`. `truncated` says more
        messages lie beyond the page in its direction (PROTOCOL.md 8, "Paging")."""
        conditions = [scope.where]
        params: list[object] = list(scope.params)
        if after is not None:
            conditions.append("m.id > ?")
            params.append(after)
        if before is not None:
            conditions.append("m.id < ?")
            params.append(before)
        oldest_first = after is not None
        order = "ASC" if oldest_first else "DESC"
        rows = self._db.execute(
            f"{_SELECT} WHERE {' AND '.join(conditions)} ORDER BY m.id {order} LIMIT ?",
            (*params, limit + 1),
        ).fetchall()
        truncated = len(rows) > limit
        messages = [_row(row) for row in rows[:limit]]
        if not oldest_first:
            messages.reverse()
        return Page(messages, truncated)

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

    def files_size(self) -> int:
        """Bytes of every stored file."""
        return int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM files").fetchone()[0])

    def last_id(self) -> int:
        """The highest id ever assigned (0 if none), also after retention removed it."""
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        return 0 if row is None else int(row[0])

    def delete_older_than(self, cutoff_ms: int) -> int:
        """Drop messages (and so their cids) sent before `cutoff_ms`; return how many."""
        cursor = self._db.execute("DELETE FROM messages WHERE ts < ?", (cutoff_ms,))
        return cursor.rowcount


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch, the unit of every stored time."""
    return time.time_ns() // 1_000_000


def ids(messages: Iterable[StoredMessage]) -> list[int]:
    """The ids of some messages, for logs and tests."""
    return [message.id for message in messages]
