#!/usr/bin/env python3
"""Benchmark: the time of each kind of history query on a database of 1,000,000 messages, before and after.

Fills a database with the schema of the releases without a version (chat.store.schema, version 0) and times each
query as that release ran it; then opens it with this code's HistoryStore, which migrates it (its time is shown),
and times each query again. Messages: 80% in 20 rooms, 20% private among 2,000 identities (half of them within 50
busy conversations), 90% with a cid. Each figure is the median of `--repeat` runs with varying arguments. "busy":
the conversation with the most messages and one of its two identities; "rare": two identities that have
exchanged next to nothing (the released query scanned the whole table for them).

    .venv/bin/python scripts/bench_history.py                      # 1,000,000 messages in a temporary folder
    .venv/bin/python scripts/bench_history.py --messages 200000 --repeat 50 --database /tmp/h.db --keep
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chat.store.history import HistoryStore, Scope
from chat.store.schema import _RELEASED

ROOMS = 20
IDENTITIES = 2000
BUSY_PAIRS = 50

# The release's paging, literally: one WHERE per scope, an OR for the private ones.
RELEASED_SELECT = (
    "SELECT m.id, m.ts, m.sender, m.room, m.recipient, m.text, m.cid, f.fid, f.name, f.size, f.sha256 "
    "FROM messages AS m LEFT JOIN files AS f ON f.fid = m.file_fid"
)
RELEASED_SCOPES = {
    "room": "m.room_key = ?",
    "private": "((m.sender_identity = ? AND m.recipient_identity IS NOT NULL) OR m.recipient_identity = ?)",
    "conversation": (
        "((m.sender_identity = ? AND m.recipient_key = ?) OR (m.recipient_identity = ? AND m.sender_key = ?))"
    ),
}


def released_page(
    db: sqlite3.Connection, where: str, params: tuple[object, ...], after: int | None, before: int | None
) -> int:
    conditions, values = [where], list(params)
    if after is not None:
        conditions.append("m.id > ?")
        values.append(after)
    if before is not None:
        conditions.append("m.id < ?")
        values.append(before)
    order = "ASC" if after is not None else "DESC"
    sql = f"{RELEASED_SELECT} WHERE {' AND '.join(conditions)} ORDER BY m.id {order} LIMIT ?"
    return len(db.execute(sql, (*values, 51)).fetchall())


def fill(path: Path, messages: int, seed: int) -> None:
    """The released schema with `messages` rows, indexes built after the rows (faster than row by row)."""
    rng = random.Random(seed)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    tables = [statement for statement in _RELEASED if statement.startswith("CREATE TABLE")]
    indexes = [statement for statement in _RELEASED if not statement.startswith("CREATE TABLE")]
    db.execute("BEGIN")
    for statement in tables:
        db.execute(statement)
    db.executemany(
        "INSERT INTO identities (id, token_hash, created) VALUES (?, ?, 0)",
        ((i, rng.randbytes(32)) for i in range(1, IDENTITIES + 1)),
    )
    db.executemany(
        "INSERT INTO nicks (key, nick, identity, last_used) VALUES (?, ?, ?, 0)",
        ((f"user{i}", f"User{i}", i) for i in range(1, IDENTITIES + 1)),
    )
    db.executemany(
        "INSERT INTO files (fid, name, size, sha256, owner, room_key, recipient_identity, created) "
        "VALUES (?, ?, 1000, '', 1, 'room0', NULL, ?)",
        ((f"{i:032x}", f"file{i}", i) for i in range(1000)),
    )
    pairs = [(rng.randint(1, IDENTITIES), rng.randint(1, IDENTITIES)) for _ in range(BUSY_PAIRS)]

    def rows() -> object:
        for i in range(1, messages + 1):
            cid = rng.randbytes(8).hex() if rng.random() < 0.9 else None
            if rng.random() < 0.8:
                sender = rng.randint(1, IDENTITIES)
                room = f"room{rng.randrange(ROOMS)}"
                yield (i, i, sender, f"User{sender}", f"user{sender}", room, room, None, None, None, f"text {i}", cid)
            else:
                a, b = rng.choice(pairs) if rng.random() < 0.5 else (rng.randint(1, IDENTITIES), 0)
                if b == 0:
                    b = rng.randint(1, IDENTITIES)
                if rng.random() < 0.5:
                    a, b = b, a
                yield (i, i, a, f"User{a}", f"user{a}", None, None, f"User{b}", f"user{b}", b, f"text {i}", cid)

    db.executemany(
        "INSERT OR IGNORE INTO messages (id, ts, sender_identity, sender, sender_key, room, room_key, recipient, "
        "recipient_key, recipient_identity, text, cid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows(),  # type: ignore[arg-type]
    )
    db.execute("COMMIT")
    for statement in indexes:
        db.execute(statement)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def median_ms(run: Callable[[int], object], repeat: int) -> float:
    times = []
    for index in range(repeat):
        started = time.perf_counter()
        run(index)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def busiest_pair(db: sqlite3.Connection) -> tuple[int, str, int, int]:
    """The conversation with the most messages: an identity, the other's nick key, its lowest and highest id."""
    identity, other, _count = db.execute(
        "SELECT sender_identity, recipient_key, count(*) AS n FROM messages WHERE recipient_key IS NOT NULL "
        "GROUP BY 1, 2 ORDER BY n DESC LIMIT 1"
    ).fetchone()
    low, high = db.execute(
        "SELECT min(id), max(id) FROM messages WHERE sender_identity = ? AND recipient_key = ?", (identity, other)
    ).fetchone()
    return int(identity), str(other), int(low), int(high)


def kinds(
    page: Callable[[str, tuple[object, ...], int | None, int | None], object],
    single: Callable[[str, tuple[object, ...]], object],
    db: sqlite3.Connection,
    messages: int,
) -> dict[str, Callable[[int], object]]:
    """Each query kind as a function of the run's index."""
    identity, other, _, _ = busiest_pair(db)
    middle = messages // 2
    cids = [row[0:2] for row in db.execute("SELECT sender_identity, cid FROM messages WHERE cid IS NOT NULL LIMIT 100")]
    table: dict[str, Callable[[int], object]] = {}
    for direction, after, before in (("newest", None, None), ("after", middle, None), ("before", None, middle)):
        table[f"room, {direction}"] = lambda i, a=after, b=before: page("room", (f"room{i % ROOMS}",), a, b)
        table[f"private, {direction}"] = lambda i, a=after, b=before: page("private", (1 + i % IDENTITIES,), a, b)
        table[f"private busy, {direction}"] = lambda i, a=after, b=before: page("private", (identity,), a, b)
        table[f"conversation busy, {direction}"] = lambda i, a=after, b=before: page(
            "conversation", (identity, other), a, b
        )
        table[f"conversation rare, {direction}"] = lambda i, a=after, b=before: page(
            "conversation", (1 + i % IDENTITIES, f"user{1 + (i + 7) % IDENTITIES}"), a, b
        )
    table["cid lookup"] = lambda i: single("cid", cids[i % len(cids)])
    table["retention delete (1,000 rows)"] = lambda i: single("delete", (1000,))
    table["identity by token"] = lambda i: single("identity", (f"token{i}",))
    table["nick holder"] = lambda i: single("nick", (f"user{i % IDENTITIES}",))
    table["file by id"] = lambda i: single("file", (f"{i:032x}",))
    return table


def before_figures(path: Path, messages: int, repeat: int) -> dict[str, float]:
    db = sqlite3.connect(path, isolation_level=None)

    def page(kind: str, args: tuple[object, ...], after: int | None, before: int | None) -> object:
        params = args if kind == "room" else (args[0], args[0]) if kind == "private" else (*args, *args)
        return released_page(db, RELEASED_SCOPES[kind], params, after, before)

    def single(kind: str, args: tuple[object, ...]) -> object:
        if kind == "cid":
            return db.execute(f"{RELEASED_SELECT} WHERE m.sender_identity = ? AND m.cid = ?", args).fetchone()
        if kind == "delete":
            db.execute("SAVEPOINT bench")
            db.execute("DELETE FROM messages WHERE ts < ?", args)
            db.execute("ROLLBACK TO bench")
            return db.execute("RELEASE bench")
        if kind == "identity":
            return db.execute("SELECT id FROM identities WHERE token_hash = ?", (str(args[0]).encode(),)).fetchone()
        if kind == "nick":
            return db.execute("SELECT identity, nick, last_used FROM nicks WHERE key = ?", args).fetchone()
        return db.execute("SELECT * FROM files WHERE fid = ?", args).fetchone()

    try:
        return {name: median_ms(run, repeat) for name, run in kinds(page, single, db, messages).items()}
    finally:
        db.close()


def after_figures(store: HistoryStore, messages: int, repeat: int) -> dict[str, float]:
    def page(kind: str, args: tuple[object, ...], after: int | None, before: int | None) -> object:
        if kind == "room":
            scope = Scope.room(str(args[0]))
        elif kind == "private":
            scope = Scope.private(int(str(args[0])))
        else:
            scope = Scope.conversation(int(str(args[0])), str(args[1]))
        return store.page(scope, after=after, before=before, limit=50)

    def single(kind: str, args: tuple[object, ...]) -> object:
        if kind == "cid":
            sql = f"{RELEASED_SELECT} WHERE m.sender_identity = ? AND m.cid = ?"  # as HistoryStore._insert_known
            return store.connection.execute(sql, args).fetchone()
        if kind == "delete":
            store.connection.execute("SAVEPOINT bench")
            store.delete_older_than(int(str(args[0])))
            store.connection.execute("ROLLBACK TO bench")
            return store.connection.execute("RELEASE bench")
        if kind == "identity":
            return store.identity_for_token(str(args[0]))
        if kind == "nick":
            return store.nick_holder(str(args[0]))
        return store.file(str(args[0]))

    return {name: median_ms(run, repeat) for name, run in kinds(page, single, store.connection, messages).items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20, help="runs of each query kind (the median is shown)")
    parser.add_argument("--database", type=Path, help="where to build it (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="chat-bench-history-"))
    path = args.database or folder / "history.db"
    if path.exists():
        parser.error(f"{path} exists; give a new path")
    started = time.perf_counter()
    fill(path, args.messages, args.seed)
    print(f"filled {args.messages:,} messages (released schema) in {time.perf_counter() - started:.1f} s")
    before = before_figures(path, args.messages, args.repeat)
    started = time.perf_counter()
    store = HistoryStore(path)
    print(f"opened with this code: migrated to the current schema in {time.perf_counter() - started:.1f} s")
    after = after_figures(store, args.messages, args.repeat)
    store.close()
    print(f"\n{'query (page of 50)':34} {'released ms':>12} {'now ms':>10}")
    for name, figure in sorted(before.items()):
        print(f"{name:34} {figure:12.3f} {after[name]:10.3f}")
    if args.keep and args.database is None:
        print(f"\nkept {path}")
    else:
        shutil.rmtree(folder)
        if not args.keep and args.database is not None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
