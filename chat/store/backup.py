"""Online backup: copy a live history database, while a server writes to it, into a consistent new file.

SQLite's backup API copies `pages` pages per step. On its own it restarts from the first page whenever another
connection commits between two steps, so under a busy server it might never finish. Here the source connection
opens one read transaction before the first step and holds it to the last: every step reads the same WAL
snapshot (the database as it was committed when the backup began), so it never restarts, and WAL lets the server
go on committing meanwhile (its checkpoints only stop short of the frames the snapshot still needs). There is no
sleep between steps; SQLite's own retry on SQLITE_BUSY is the only wait.

The copy is written to `DEST.part`, checked (`PRAGMA quick_check`), switched to a rollback journal (one
self-contained file; the store turns WAL back on when it opens it), flushed to disk, and only then renamed to
`DEST`: a `DEST` that exists is complete.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chat.store.errors import BackupRefused, StoreError

Progress = Callable[[int, int], None]  # (pages copied so far, pages in all), after each step


@dataclass(frozen=True, slots=True)
class BackupResult:
    """What a backup copied: pages, steps, seconds, and the highest message id in the copy."""

    dest: Path
    pages: int
    steps: int
    seconds: float
    last_id: int


def backup(
    source: str | Path, dest: str | Path, *, pages: int = 1024, progress: Progress | None = None
) -> BackupResult:
    """Copy the database at `source` into the new file `dest`, `pages` pages per step (a snapshot as of the
    start); BackupRefused if there is nothing to copy or `dest` exists; StoreError if the copy fails its check."""
    source_path, dest_path = _paths(source, dest)
    part = dest_path.with_name(dest_path.name + ".part")
    part.unlink(missing_ok=True)  # left by a backup that died: never a valid copy
    started = time.perf_counter()
    steps = 0

    def step(status: int, remaining: int, total: int) -> None:
        nonlocal steps
        steps += 1
        if progress is not None:
            progress(total - remaining, total)

    src = sqlite3.connect(source_path, isolation_level=None)
    try:
        src.execute("PRAGMA query_only = ON")
        src.execute("BEGIN")  # one snapshot for every step (see the module docstring)
        src.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        total = int(src.execute("PRAGMA page_count").fetchone()[0])
        dst = sqlite3.connect(part, isolation_level=None)
        try:
            src.backup(dst, pages=max(1, pages), progress=step)
            src.execute("COMMIT")
            _check(dst, part)
            last_id = _last_id(dst)
        finally:
            dst.close()
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        src.close()
    _durable_rename(part, dest_path)
    return BackupResult(dest_path, total, steps, time.perf_counter() - started, last_id)


def _paths(source: str | Path, dest: str | Path) -> tuple[Path, Path]:
    if str(source) == ":memory:":
        raise BackupRefused("the database is :memory:, nothing on disk to back up")
    source_path, dest_path = Path(source), Path(dest)
    if not source_path.is_file():
        raise BackupRefused(f"no database at {source_path}")
    if dest_path.exists():
        raise BackupRefused(f"{dest_path} exists; a backup never replaces a file")
    if source_path.resolve() == dest_path.resolve():
        raise BackupRefused("the destination is the database itself")
    if not dest_path.parent.is_dir():
        raise BackupRefused(f"no folder {dest_path.parent} for the backup")
    return source_path, dest_path


def _check(db: sqlite3.Connection, path: Path) -> None:
    """The copy passes quick_check and is one file (rollback journal), else StoreError."""
    result = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
    if result != ["ok"]:
        raise StoreError(f"the copy {path} fails its check: {'; '.join(map(str, result[:5]))}")
    db.execute("PRAGMA journal_mode = DELETE")


def _last_id(db: sqlite3.Connection) -> int:
    try:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
    except sqlite3.OperationalError:  # not a chat database (no sqlite_sequence yet): still a faithful copy
        return 0
    return 0 if row is None else int(row[0])


def _durable_rename(part: Path, dest: Path) -> None:
    """Flush the copy, rename it into place, flush the folder: after a crash, DEST is complete or absent."""
    with open(part, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(part, dest)
    folder = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
