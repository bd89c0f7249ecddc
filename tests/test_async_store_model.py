"""A model of AsyncStore: random interleavings of submits (rooms, private messages, messages to oneself, repeated
cids), reads of every scope with every kind of bound, yields and flushes. Every callback gets the outcome the model
computes, and every page equals the model's page of some committed prefix that holds every message acknowledged
before the read was issued (commits happen in submit order, so what a read sees is always such a prefix)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import uvloop
from hypothesis import given
from hypothesis import strategies as st

from chat.store.records import Appended, Draft, Scope
from chat.store.sqlite import AsyncStore

IDENTITIES = (1, 2, 3)


def model_draft(kind: str, sender: int, target: int, cid: str | None) -> Draft:
    """A room message (target: room number) or a private one (target: recipient identity, maybe the sender)."""
    if kind == "room":
        return Draft(ts=1, sender_identity=sender, sender=f"n{sender}", sender_key=f"n{sender}", text=f"{kind}",
                     cid=cid, room=f"r{target}", room_key=f"r{target}")  # fmt: skip
    return Draft(ts=1, sender_identity=sender, sender=f"n{sender}", sender_key=f"n{sender}", text=f"{kind}", cid=cid,
                 recipient=f"n{target}", recipient_key=f"n{target}", recipient_identity=target)  # fmt: skip


def in_scope(scope: tuple[str, int, int], draft: Draft) -> bool:
    kind, a, b = scope
    if kind == "room":
        return draft.room_key == f"r{a}"
    if kind == "private":
        return draft.recipient_identity is not None and a in (draft.sender_identity, draft.recipient_identity)
    return (draft.sender_identity == a and draft.recipient_key == f"n{b}") or (
        draft.recipient_identity == a and draft.sender_key == f"n{b}"
    )


def as_scope(scope: tuple[str, int, int]) -> Scope:
    kind, a, b = scope
    if kind == "room":
        return Scope.room(f"r{a}")
    return Scope.private(a) if kind == "private" else Scope.conversation(a, f"n{b}")


def model_page(stored: list[tuple[int, Draft]], scope: tuple[str, int, int], after: int | None,
               before: int | None, limit: int) -> tuple[list[int], bool]:  # fmt: skip
    """What HistoryStore.page promises, computed from the list of stored (id, draft)."""
    matching = [i for i, draft in stored if in_scope(scope, draft)]
    matching = [i for i in matching if (after is None or i > after) and (before is None or i < before)]
    if after is not None:
        return matching[:limit], len(matching) > limit
    return matching[-limit:] if limit else [], len(matching) > limit


submits = st.tuples(
    st.just("submit"), st.sampled_from(["room", "private"]), st.sampled_from(IDENTITIES), st.sampled_from(IDENTITIES),
    st.one_of(st.none(), st.sampled_from(["a", "b", "c", "d"])),
)  # fmt: skip
reads = st.tuples(
    st.just("read"), st.sampled_from(["room", "private", "conversation"]), st.sampled_from(IDENTITIES),
    st.sampled_from(IDENTITIES), st.one_of(st.none(), st.integers(0, 30)), st.one_of(st.none(), st.integers(0, 30)),
    st.integers(1, 6),
)  # fmt: skip
operations = st.lists(st.one_of(submits, submits, reads, st.just(("yield",)), st.just(("flush",))), max_size=60)


@given(operations)
def test_every_page_is_a_page_of_a_committed_prefix_that_holds_every_acknowledged_message(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    uvloop.run(run_model(ops))  # the server's loop


async def run_model(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as folder:
        store = AsyncStore(Path(folder) / "chat.db")
        await store.start()
        submitted: list[Draft] = []
        acknowledged: list[Appended | None] = []
        pending: list[tuple[tuple, asyncio.Future[object], int]] = []  # type: ignore[type-arg]
        for op in ops:
            if op[0] == "submit":
                _, kind, sender, target, cid = op
                submitted.append(model_draft(kind, sender, 1 + target % 2 if kind == "room" else target, cid))
                store.submit(submitted[-1], acknowledged.append)
            elif op[0] == "read":
                _, kind, a, b, after, before, limit = op
                read = store.page(as_scope((kind, a, b)), after=after, before=before, limit=limit)
                pending.append((op, asyncio.ensure_future(read), len(acknowledged)))
            elif op[0] == "yield":
                await asyncio.sleep(0)
            else:
                await store.flush()
        await store.flush()
        await store.close()
        # The outcome of every submit, computed: new (id) or a repeat of the first with the same sender and cid.
        expected: list[tuple[int, bool]] = []
        firsts: dict[tuple[int, str], int] = {}
        stored_prefixes: list[list[tuple[int, Draft]]] = [[]]
        for draft in submitted:
            key = None if draft.cid is None else (draft.sender_identity, draft.cid)
            if key is not None and key in firsts:
                expected.append((firsts[key], True))
                stored_prefixes.append(stored_prefixes[-1])
                continue
            new_id = len(stored_prefixes[-1]) + 1
            if key is not None:
                firsts[key] = new_id
            expected.append((new_id, False))
            stored_prefixes.append([*stored_prefixes[-1], (new_id, draft)])
        assert [(r.message.id, r.duplicate) for r in acknowledged if r is not None] == expected
        for op, read, acked in pending:
            _, kind, a, b, after, before, limit = op
            page = read.result()
            got = ([m.id for m in page.messages], page.truncated)  # type: ignore[attr-defined]
            # Commits happen in submit order, so what a read sees is the state after some number k of submits:
            # at least every acknowledged one when the read was issued, at most all of them.
            candidates = [
                model_page(stored_prefixes[k], (kind, a, b), after, before, limit)
                for k in range(acked, len(submitted) + 1)
            ]
            assert got in candidates, f"{op}: {got} is no page of a committed prefix from {acked} on"
