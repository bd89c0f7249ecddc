"""The history database's schema, its version (`PRAGMA user_version`) and the migrations between versions.

Version 0 is every database made before the schema had a version: what the releases up to 2026-12 create (with
`messages.file_fid` and `files`, or, before file transfer, without them), and also a new, empty file. Each entry of
`MIGRATIONS` takes a database from its index to the next version in one transaction (a crash half-way leaves the
older version, and the next start runs the step again). So a new database and an upgraded old one get the same
schema by the same statements, and tests/test_store_schema.py checks it. A database whose version is above
`SCHEMA_VERSION` was made by newer code: it is refused with `SchemaTooNew` and left as it is.

Only the writer migrates; a reader connection checks the version and never writes (`PRAGMA query_only`).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from chat.store.errors import SchemaTooNew, StoreError

logger = logging.getLogger(__name__)

# The schema of the releases without a version, as they created it (IF NOT EXISTS: a new file starts here too).
_RELEASED = (
    """CREATE TABLE IF NOT EXISTS identities (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash BLOB NOT NULL UNIQUE,
    created INTEGER NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS nicks (
    key TEXT PRIMARY KEY,
    nick TEXT NOT NULL,
    identity INTEGER NOT NULL REFERENCES identities(id),
    last_used INTEGER NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS messages (
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
)""",
    """CREATE TABLE IF NOT EXISTS files (
    fid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    owner INTEGER NOT NULL,
    room_key TEXT,
    recipient_identity INTEGER,
    created INTEGER NOT NULL
)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS messages_by_cid ON messages(sender_identity, cid) WHERE cid IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS messages_by_room ON messages(room_key, id) WHERE room_key IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS private_sent ON messages(sender_identity, id) WHERE recipient_identity IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS private_received ON messages(recipient_identity, id) "
    "WHERE recipient_identity IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS messages_by_ts ON messages(ts)",
)


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")}


def _version_1(db: sqlite3.Connection) -> None:
    """From any unversioned database (or none): the released schema, `file_fid` where a release before file
    transfer made the database, an index for each history query the released schema answered by a scan, and the
    cid index keyed cid first."""
    for statement in _RELEASED:
        db.execute(statement)
    if "file_fid" not in _columns(db, "messages"):
        db.execute("ALTER TABLE messages ADD COLUMN file_fid TEXT")
    # history {"to": NICK}: both directions of one conversation, each in id order (records.Scope.conversation).
    db.execute(
        "CREATE INDEX IF NOT EXISTS conversation_sent ON messages(sender_identity, recipient_key, id) "
        "WHERE recipient_key IS NOT NULL"
    )
    db.execute(
        "CREATE INDEX IF NOT EXISTS conversation_received ON messages(recipient_identity, sender_key, id) "
        "WHERE recipient_identity IS NOT NULL"
    )
    db.execute("CREATE INDEX IF NOT EXISTS files_by_created ON files(created)")  # file retention
    # The cid index with the cid first: for random cids it costs the same, and cids that grow with time (a
    # timestamp first) then land next to each other, so a batch dirties a few pages of the index instead of about
    # one page per message (scripts/bench_store.py --cids time).
    db.execute("DROP INDEX IF EXISTS messages_by_cid")
    db.execute("CREATE UNIQUE INDEX messages_by_cid ON messages(cid, sender_identity) WHERE cid IS NOT NULL")


Migration = Callable[[sqlite3.Connection], None]

# MIGRATIONS[n] takes a database at version n to version n + 1.
MIGRATIONS: Sequence[Migration] = (_version_1,)
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(db: sqlite3.Connection) -> int:
    """The database's `PRAGMA user_version` (0 for one made before versions)."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, path: str, *, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the database up to `len(migrations)`, one transaction per step; return the version it had.

    `db` must be in autocommit mode (isolation_level=None). Raises SchemaTooNew for a database above the newest
    version, before any change."""
    found = schema_version(db)
    newest = len(migrations)
    if found > newest:
        raise SchemaTooNew(path, found, newest)
    version = found
    while version < newest:
        db.execute("BEGIN IMMEDIATE")
        try:
            current = schema_version(db)  # another process may have migrated since we looked
            if current != version:
                db.execute("ROLLBACK")
                version = current
                continue
            migrations[version](db)
            db.execute(f"PRAGMA user_version = {version + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        version += 1
        if found:
            logger.info("%s: schema migrated to version %d", path, version)
    return found


def connect(
    path: str,
    *,
    synchronous: str = "normal",
    read_only: bool = False,
    cache_kib: int | None = None,
    checkpoint_pages: int | None = None,
) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, foreign keys on.

    The writer (`read_only=False`) creates the file and migrates it; a reader expects the current version and is
    made unable to write (`PRAGMA query_only`). `cache_kib` sets the page cache (SQLite's default: 2 MiB) and
    `checkpoint_pages` the WAL size that triggers a checkpoint in the committing connection (default 1000); None
    keeps SQLite's default."""
    if path != ":memory:" and not read_only:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=256)
    try:
        if read_only:
            found = schema_version(db)
            if found != SCHEMA_VERSION:
                if found > SCHEMA_VERSION:
                    raise SchemaTooNew(path, found, SCHEMA_VERSION)
                raise StoreError(f"{path}: schema version {found}, expected {SCHEMA_VERSION}: not migrated yet")
            db.execute("PRAGMA query_only = ON")
        else:
            found = schema_version(db)
            if found > SCHEMA_VERSION:  # before anything is written, even the journal mode
                raise SchemaTooNew(path, found, SCHEMA_VERSION)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute(f"PRAGMA synchronous = {'FULL' if synchronous == 'full' else 'NORMAL'}")
            migrate(db, path)
        if cache_kib is not None:
            db.execute(f"PRAGMA cache_size = {-int(cache_kib)}")
        if checkpoint_pages is not None:
            db.execute(f"PRAGMA wal_autocheckpoint = {int(checkpoint_pages)}")
        db.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        db.close()
        raise
    return db
