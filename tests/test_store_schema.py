"""Schema versions: databases made by the releases before versions open, migrate, keep their data and answer every
query; a new database gets the same schema; a newer database is refused untouched; a failed step changes nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from chat.protocol.auth import token_digest
from chat.store.errors import SchemaTooNew, StoreError
from chat.store.history import HistoryStore
from chat.store.records import Draft, FileRecord, Scope
from chat.store.schema import SCHEMA_VERSION, migrate, schema_version
from chat.store.sqlite import AsyncStore

# chat/store/history.py `_SCHEMA` of main at 76f6912 (the release with file transfer), copied literally.
RELEASED_SCHEMA = """
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

# The same file at 66f8365 (the release before file transfer: no messages.file_fid, no files table), literally.
PRE_FILES_SCHEMA = """
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
    cid TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_cid ON messages(sender_identity, cid) WHERE cid IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_by_room ON messages(room_key, id) WHERE room_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS private_sent ON messages(sender_identity, id) WHERE recipient_identity IS NOT NULL;
CREATE INDEX IF NOT EXISTS private_received ON messages(recipient_identity, id) WHERE recipient_identity IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_by_ts ON messages(ts);
"""

MESSAGE_COLUMNS = (
    "ts, sender_identity, sender, sender_key, room, room_key, recipient, recipient_key, recipient_identity"
)


def make_released_database(path: Path, schema: str) -> None:
    """A database as a release made it: its connect and schema script, then rows as its HistoryStore wrote them."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(schema)
    for token in ("tok-alice", "tok-bob"):
        db.execute("INSERT INTO identities (token_hash, created) VALUES (?, 1)", (token_digest(token),))
    db.execute("INSERT INTO nicks VALUES ('alice', 'Alice', 1, 5), ('bob', 'Bob', 2, 6)")
    rows = [
        (10, 1, "Alice", "alice", "Lobby", "lobby", None, None, None, "hello lobby", "c1"),
        (11, 2, "Bob", "bob", None, None, "Alice", "alice", 1, "hi alice", "c2"),
        (12, 1, "Alice", "alice", None, None, "Bob", "bob", 2, "hi bob", None),
        (13, 2, "Bob", "bob", "Lobby", "lobby", None, None, None, "bye", "c3"),
    ]
    db.executemany(f"INSERT INTO messages ({MESSAGE_COLUMNS}, text, cid) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    if "file_fid" in schema:
        db.execute("INSERT INTO files VALUES ('f1', 'notes.txt', 5, 'ab', 1, 'lobby', NULL, 14)")
        db.execute(
            f"INSERT INTO messages ({MESSAGE_COLUMNS}, text, cid, file_fid) "
            "VALUES (14, 1, 'Alice', 'alice', 'Lobby', 'lobby', NULL, NULL, NULL, 'notes.txt', 'c4', 'f1')"
        )
    db.execute("DELETE FROM messages WHERE id = (SELECT max(id) FROM messages)")  # retention took the newest
    db.close()


@pytest.mark.parametrize("schema", [RELEASED_SCHEMA, PRE_FILES_SCHEMA], ids=["released", "before-files"])
@pytest.mark.asyncio
async def test_a_database_of_an_earlier_release_is_migrated_and_keeps_its_data(tmp_path: Path, schema: str) -> None:
    path = tmp_path / "chat.db"
    make_released_database(path, schema)
    highest = 5 if "file_fid" in schema else 4  # the newest row was deleted, its id stays used
    store = AsyncStore(path)
    await store.start()
    try:
        assert await store.identity_for_token("tok-bob") == 2
        assert {key: h.nick for key, h in (await store.load_nicks()).items()} == {"alice": "Alice", "bob": "Bob"}
        assert await store.last_id() == highest
        room = await store.page(Scope.room("lobby"), after=0)
        assert [m.text for m in room.messages] == ["hello lobby"] + (["bye"] if highest == 5 else [])
        conversation = await store.page(Scope.conversation(1, "bob"), after=0)
        assert [m.text for m in conversation.messages] == ["hi alice", "hi bob"]
        assert [m.id for m in (await store.page(Scope.private(2))).messages] == [2, 3]
        results: list[object] = []
        store.submit(Draft(20, 1, "Alice", "alice", "again", "c1", room="Lobby", room_key="lobby"), results.append)
        store.submit(Draft(21, 1, "Alice", "alice", "new", "c9", room="Lobby", room_key="lobby"), results.append)
        record = FileRecord("f2", "new.txt", 1, "cd", owner=1, room_key="lobby", created=22)
        store.add_file(record)
        store.submit(Draft(22, 1, "Alice", "alice", "new.txt", None, room="Lobby", room_key="lobby", file=record),
                     results.append)  # fmt: skip
        await store.flush()
        again, new, announced = results
        assert again.duplicate and again.message.text == "hello lobby", "a cid of the old release is still known"  # type: ignore[attr-defined]
        assert new.message.id == highest + 1, "ids go on above the highest ever used"  # type: ignore[attr-defined]
        assert announced.message.file == record  # type: ignore[attr-defined]
    finally:
        await store.close()
    db = sqlite3.connect(path)
    assert schema_version(db) == SCHEMA_VERSION
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()


def schema_of(path: Path) -> tuple[object, ...]:
    """Tables' columns (name, type, not null, default, primary key), every index's definition, the version."""
    db = sqlite3.connect(path)
    try:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")]
        columns = {table: [row[1:] for row in db.execute(f"PRAGMA table_info({table})")] for table in tables}
        indexes = sorted(db.execute("SELECT name, tbl_name, sql FROM sqlite_schema WHERE type = 'index'"))
        return columns, indexes, schema_version(db)
    finally:
        db.close()


@pytest.mark.parametrize("schema", [RELEASED_SCHEMA, PRE_FILES_SCHEMA], ids=["released", "before-files"])
def test_a_migrated_database_has_the_schema_of_a_new_one(tmp_path: Path, schema: str) -> None:
    HistoryStore(tmp_path / "new.db").close()
    make_released_database(tmp_path / "old.db", schema)
    HistoryStore(tmp_path / "old.db").close()
    assert schema_of(tmp_path / "old.db") == schema_of(tmp_path / "new.db")


def test_a_database_newer_than_the_code_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE future (x)")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    before = path.read_bytes()
    with pytest.raises(SchemaTooNew, match=rf"schema version {SCHEMA_VERSION + 1} is newer than this chat-server"):
        HistoryStore(path)
    assert path.read_bytes() == before, "not even the journal mode was changed"


@pytest.mark.asyncio
async def test_the_async_store_refuses_a_newer_database_at_start(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    db.close()
    with pytest.raises(SchemaTooNew):
        await AsyncStore(path).start()


def test_a_failed_migration_step_leaves_the_older_version(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    make_released_database(path, RELEASED_SCHEMA)

    def broken_step(db: sqlite3.Connection) -> None:
        db.execute("CREATE INDEX half_done ON messages(text)")
        raise RuntimeError("the step fails half-way")

    db = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(RuntimeError):
        migrate(db, str(path), migrations=[broken_step])
    assert schema_version(db) == 0
    assert db.execute("SELECT count(*) FROM sqlite_schema WHERE name = 'half_done'").fetchone()[0] == 0
    db.close()
    HistoryStore(path).close()  # the real steps still apply afterwards
    assert schema_of(path)[2] == SCHEMA_VERSION


def test_a_reader_refuses_a_database_that_is_not_migrated(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    make_released_database(path, RELEASED_SCHEMA)
    with pytest.raises(StoreError, match="not migrated"):
        HistoryStore(path, read_only=True)
