"""The SQLite history store on a real file: ids, cid dedupe, paging scopes, identities, nick holds, retention."""

from __future__ import annotations

from pathlib import Path

import pytest

from chat.store.history import Draft, HistoryStore, Scope, ids


def room_draft(identity: int, text: str, *, cid: str | None = None, ts: int = 1000, room: str = "lobby") -> Draft:
    return Draft(
        ts=ts, sender_identity=identity, sender="alice", sender_key="alice", text=text, cid=cid,
        room=room, room_key=room.lower(),
    )  # fmt: skip


def private_draft(sender: int, recipient: int, recipient_key: str, text: str, sender_key: str = "alice") -> Draft:
    return Draft(
        ts=1000, sender_identity=sender, sender=sender_key, sender_key=sender_key, text=text, cid=None,
        recipient=recipient_key, recipient_key=recipient_key, recipient_identity=recipient,
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> HistoryStore:
    return HistoryStore(tmp_path / "chat.db")


def test_the_database_is_in_wal_mode(store: HistoryStore) -> None:
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_ids_keep_increasing_after_retention_and_reopening(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "chat.db")
    first = ids(a.message for a in store.append_batch([room_draft(1, f"m{i}", ts=i) for i in range(5)]))
    assert first == sorted(first)
    assert store.delete_older_than(10) == 5
    store.close()
    reopened = HistoryStore(tmp_path / "chat.db")
    later = reopened.append_batch([room_draft(1, "after")])[0].message.id
    assert later > max(first), "an id is never reused, even after its message was deleted"
    assert reopened.last_id() == later


def test_a_repeated_cid_returns_the_original_even_after_reopening(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "chat.db")
    original = store.append_batch([room_draft(1, "hi", cid="c1")])[0]
    assert not original.duplicate
    in_same_batch = store.append_batch([room_draft(1, "x", cid="c2"), room_draft(1, "x", cid="c2")])
    assert [a.duplicate for a in in_same_batch] == [False, True]
    assert in_same_batch[0].message == in_same_batch[1].message
    store.close()
    store = HistoryStore(tmp_path / "chat.db")
    again = store.append_batch([room_draft(1, "hi", cid="c1"), room_draft(2, "hi", cid="c1")])
    assert again[0].duplicate and again[0].message == original.message
    assert not again[1].duplicate, "cids are unique per identity, not across identities"


def test_pages_in_each_direction(store: HistoryStore) -> None:
    all_ids = ids(a.message for a in store.append_batch([room_draft(1, f"m{i}") for i in range(10)]))
    room = Scope.room("lobby")
    newest = store.page(room, limit=4)
    assert ids(newest.messages) == all_ids[-4:] and newest.truncated
    older = store.page(room, before=all_ids[2], limit=4)
    assert ids(older.messages) == all_ids[:2] and not older.truncated
    oldest = store.page(room, after=0, limit=4)
    assert ids(oldest.messages) == all_ids[:4] and oldest.truncated
    between = store.page(room, after=all_ids[0], before=all_ids[5], limit=10)
    assert ids(between.messages) == all_ids[1:5] and not between.truncated
    assert store.page(Scope.room("elsewhere"), limit=5).messages == []


def test_private_scopes_belong_to_their_two_identities(store: HistoryStore) -> None:
    to_bob = store.append_batch([private_draft(1, 2, "bob", "hi bob")])[0].message
    to_carol = store.append_batch([private_draft(1, 3, "carol", "hi carol")])[0].message
    from_bob = store.append_batch([private_draft(2, 1, "alice", "hi alice", sender_key="bob")])[0].message
    store.append_batch([room_draft(1, "public")])
    assert ids(store.page(Scope.private(1), after=0).messages) == [to_bob.id, to_carol.id, from_bob.id]
    assert ids(store.page(Scope.private(2), after=0).messages) == [to_bob.id, from_bob.id]
    assert ids(store.page(Scope.private(4), after=0).messages) == []
    assert ids(store.page(Scope.conversation(1, "bob"), after=0).messages) == [to_bob.id, from_bob.id]


def test_identities_are_found_by_token_and_tokens_are_not_stored(store: HistoryStore) -> None:
    identity = store.create_identity("secret-token", 5)
    assert store.identity_for_token("secret-token") == identity
    assert store.identity_for_token("other") is None
    dump = "\n".join(store._db.iterdump())
    assert "secret-token" not in dump


def test_nick_holds_record_the_last_holder(store: HistoryStore) -> None:
    first, second = store.create_identity("t1", 0), store.create_identity("t2", 0)
    assert store.nick_holder("bob") is None
    store.hold_nick("bob", "Bob", first, 100)
    store.hold_nick("bob", "BOB", second, 200)
    holder = store.nick_holder("bob")
    assert holder is not None and (holder.identity, holder.nick, holder.last_used) == (second, "BOB", 200)


@pytest.mark.parametrize("count", [1, 2, 3, 175, 2047, 2048, 2049, 4100])
def test_a_batch_of_any_size_is_stored_whole_in_order(tmp_path: Path, count: int) -> None:
    """Batches are cut into statements of power-of-two sizes: every row must land once, in order."""
    store = HistoryStore(tmp_path / "chat.db")
    texts = [f"m{i}" for i in range(count)]
    stored = store.append_batch([room_draft(1, text, cid=f"c{i}") for i, text in enumerate(texts)])
    assert [a.message.text for a in stored] == texts
    page = store.page(Scope.room("lobby"), after=0, limit=50)
    assert [m.text for m in page.messages] == texts[:50]
    assert store._db.execute("SELECT count(*) FROM messages").fetchone()[0] == count
    assert ids(a.message for a in stored) == list(range(1, count + 1))
