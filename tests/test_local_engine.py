"""`LocalEngine` directly: the registry, `claim_nick` as one check-and-set, ids, and the quick cid memory with `now`."""

from __future__ import annotations

import pytest
from corefakes import logged_in

from chat.engine import local
from chat.engine.local import LocalEngine
from chat.protocol.names import fold
from chat.store.records import NickHolder


def test_a_takeover_keeps_the_new_session_when_the_old_one_unregisters() -> None:
    engine = LocalEngine(lambda: None)
    old = logged_in(engine, "alice", 1)
    new = logged_in(engine, "alice", 1)
    assert engine.by_identity(1) is new and engine.by_nick("alice") is new
    assert engine.unregister(old) is False, "the replaced session no longer owns the entries"
    assert engine.by_identity(1) is new and len(engine) == 1
    assert engine.unregister(new) is True and engine.by_nick("alice") is None and len(engine) == 0


def test_claim_nick_checks_and_takes_in_one_step_so_only_one_of_two_claims_wins() -> None:
    engine = LocalEngine(lambda: None)
    alice, bob = logged_in(engine, "alice", 1), logged_in(engine, "bob", 2)
    assert engine.claim_nick(alice, "carol", "Carol", 1_000, 60_000) is True
    assert engine.claim_nick(bob, "carol", "carol", 1_000, 60_000) is False
    assert engine.by_nick("carol") is alice and engine.by_nick("alice") is None and engine.by_nick("bob") is bob
    assert engine.nick_holder("carol") == NickHolder(1, "Carol", 1_000)


def test_a_held_nick_is_free_for_others_only_after_the_hold() -> None:
    engine = LocalEngine(lambda: None)
    engine.load(0, {"dave": NickHolder(4, "dave", 0)})
    bob = logged_in(engine, "bob", 2)
    assert engine.nick_free_for("dave", 4, 10, 1_000) is True
    assert engine.claim_nick(bob, "dave", "dave", 999, 1_000) is False
    assert engine.claim_nick(bob, "dave", "dave", 1_000, 1_000) is True
    assert engine.nick_free_for("dave", None, 1_000, 0) is False, "online under another identity"


def test_message_ids_start_above_the_store_and_are_never_reused_and_qids_increase() -> None:
    engine = LocalEngine(lambda: None)
    engine.load(41, {})
    assert [engine.next_message_id() for _ in range(3)] == [42, 43, 44]
    assert engine.committed_through == 41
    engine.committed(43)
    engine.committed(42)
    assert engine.committed_through == 43
    qids = [engine.next_qid() for _ in range(1000)]
    assert qids == sorted(set(qids))


def test_a_quick_cid_is_remembered_until_it_expires() -> None:
    engine = LocalEngine(lambda: None)
    engine.remember_quick_cid(1, "c", 7, expires=600.0, now=0.0)
    assert engine.quick_cid(1, "c", 599.999) == 7
    assert engine.quick_cid(2, "c", 1.0) is None, "per identity"
    assert engine.quick_cid(1, "c", 600.0) is None
    engine.remember_quick_cid(1, "d", 8, expires=1200.0, now=600.0)  # an expired entry is dropped on the next write
    assert list(engine._quick_cids) == [(1, "d")]


def test_the_quick_cid_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "MAX_REMEMBERED_QUICK_CIDS", 3)
    engine = LocalEngine(lambda: None)
    for n in range(5):
        engine.remember_quick_cid(1, f"c{n}", n, expires=600.0, now=0.0)
    assert [engine.quick_cid(1, f"c{n}", 1.0) for n in range(5)] == [None, None, 2, 3, 4]


# --- lookalikes (docs/protocol.md 8, Lookalikes) ----------------------------------------------------------------------

CYRILLIC_POPE = "\u0440\u043e\u0440\u0435"  # drawn like the Latin "pope"


def test_a_lookalike_of_a_held_nick_is_not_free_for_another_identity_until_the_hold_ends() -> None:
    engine = LocalEngine(lambda: None)
    engine.hold_nick("pope", "pope", 1, 0)
    key = fold(CYRILLIC_POPE)
    assert engine.lookalike_nicks(CYRILLIC_POPE) == {"pope"}
    assert engine.nick_free_for(key, 2, 999, 1_000, CYRILLIC_POPE) is False
    assert engine.nick_free_for(key, 1, 999, 1_000, CYRILLIC_POPE) is True, "the holder may take its lookalike"
    assert engine.nick_free_for(key, 2, 1_000, 1_000, CYRILLIC_POPE) is True, "the hold is over"
    assert engine.taken_lookalike(key, 2, 999, 1_000, CYRILLIC_POPE) == "pope"
    assert engine.taken_lookalike("pope", 2, 999, 1_000, "pope") is None, "the nick itself is the reason"


def test_claim_nick_refuses_a_lookalike_of_an_online_nick_even_without_holds() -> None:
    engine = LocalEngine(lambda: None)
    logged_in(engine, "pope", 1)
    bob = logged_in(engine, "bob", 2)
    assert engine.claim_nick(bob, fold(CYRILLIC_POPE), CYRILLIC_POPE, 5_000, 0) is False
    assert engine.by_nick("bob") is bob


def test_loaded_nicks_are_indexed_by_their_lookalikes() -> None:
    engine = LocalEngine(lambda: None)
    engine.load(0, {"pope": NickHolder(4, "Pope", 0)})
    assert engine.nick_free_for(fold(CYRILLIC_POPE), None, 10, 1_000, CYRILLIC_POPE) is False


def test_a_nick_that_looks_like_a_held_one_in_capitals_is_not_free() -> None:
    """`aiice` is free of `alice` in lower case, not in capitals: its holder could respell it `AIICE`."""
    engine = LocalEngine(lambda: None)
    engine.hold_nick("alice", "alice", 1, 0)
    assert engine.nick_free_for("aiice", 2, 10, 1_000, "aiice") is False
    assert engine.nick_free_for("alice_", 2, 10, 1_000, "alice_") is True


def test_a_room_that_looks_like_a_live_room_is_found_until_the_room_is_gone() -> None:
    engine = LocalEngine(lambda: None)
    session = logged_in(engine, "alice", 1)
    room = engine.rooms.add_member("LOBBY", "lobby", session)
    assert engine.rooms.lookalike("L0BBY", "l0bby") is room
    assert engine.rooms.lookalike("Lobby", "lobby") is None, "the same room is no lookalike"
    engine.rooms.remove_member(room, session)
    assert engine.rooms.lookalike("L0BBY", "l0bby") is None
