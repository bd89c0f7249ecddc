"""Every statement the store runs is answered from an index: each statement traced while every HistoryStore method
runs (AsyncStore runs none of its own) is put through EXPLAIN QUERY PLAN, and a SCAN of `messages` fails the test."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from chat.store.history import HistoryStore
from chat.store.records import Draft, FileRecord, Scope
from chat.store.schema import _RELEASED

QUERY = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", re.IGNORECASE)
# A full pass over messages (or its alias m), through the table or through an index: what must never happen.
MESSAGES_SCAN = re.compile(r"\bSCAN (m|messages)\b")


def plan(db: sqlite3.Connection, statement: str) -> list[str]:
    return [str(row[3]) for row in db.execute(f"EXPLAIN QUERY PLAN {statement}")]


def scans_of_messages(db: sqlite3.Connection, statements: list[str]) -> dict[str, list[str]]:
    found = {}
    for statement in statements:
        if QUERY.match(statement):
            details = plan(db, statement)
            if any(MESSAGES_SCAN.search(detail) for detail in details):
                found[statement] = details
    return found


def exercise(store: HistoryStore) -> None:
    """Every method of the store, every page shape of every scope, the cid slow path, both deletes."""
    alice = store.create_identity("tok-a", 1)
    bob = store.create_identity("tok-b", 1)
    store.identity_for_token("tok-a")
    store.hold_nick("alice", "Alice", alice, 1)
    store.nick_holder("alice")
    store.load_nicks()
    record = FileRecord("f" * 32, "a.txt", 1, "00", owner=alice, room_key="lobby", created=1)
    store.add_file(record)
    store.file(record.fid)
    store.files_size()
    store.files_size(alice)
    room = Draft(1, alice, "Alice", "alice", "hi", "c1", room="Lobby", room_key="lobby", file=record)
    private = Draft(2, alice, "Alice", "alice", "psst", "c2", recipient="Bob", recipient_key="bob",
                    recipient_identity=bob)  # fmt: skip
    store.append_batch([room, private, Draft(3, bob, "Bob", "bob", "x", None, room="L", room_key="lobby", id=50)])
    store.append_batch([room, Draft(4, alice, "Alice", "alice", "new", "c3", room="L", room_key="lobby")])  # slow path
    for scope in (Scope.room("lobby"), Scope.private(alice), Scope.conversation(alice, "bob")):
        for after, before in ((None, None), (1, None), (None, 40), (1, 40)):
            store.page(scope, after=after, before=before, limit=10)
    store.last_id()
    store.delete_older_than(2)
    store.delete_older_than(3, limit=10)
    store.delete_files_older_than(2)


def test_no_statement_the_store_runs_scans_messages(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "chat.db")
    statements: list[str] = []
    store.connection.set_trace_callback(statements.append)
    exercise(store)
    store.connection.set_trace_callback(None)
    ran = "\n".join(statements)
    kinds = ["room_key = 'lobby'", "recipient_identity = ", "recipient_key = 'bob'", "m.cid = 'c1'", "ts < 2"]
    kinds += ["ts < 3", "FROM nicks", "FROM identities", "FROM files WHERE fid", "created < 2"]
    for expected in kinds:
        assert expected in ran, f"the exercise did not run a statement with {expected!r}"
    assert scans_of_messages(store.connection, statements) == {}
    store.close()


def test_the_check_catches_the_conversation_query_of_the_release() -> None:
    db = sqlite3.connect(":memory:")
    for statement in _RELEASED:  # the schema of version 0, without the conversation indexes
        db.execute(statement)
    released = (
        "SELECT m.id FROM messages AS m WHERE ((m.sender_identity = 1 AND m.recipient_key = 'bob') OR "
        "(m.recipient_identity = 1 AND m.sender_key = 'bob')) ORDER BY m.id DESC LIMIT 51"
    )
    assert list(scans_of_messages(db, [released])) == [released]
    db.close()
