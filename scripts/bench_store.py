#!/usr/bin/env python3
"""Benchmark: group-commit throughput of AsyncStore from one event loop, and where the time goes.

One uvloop loop submits `--messages` room drafts (random 16-hex cids, as the client library makes them) in bursts
of `--burst` per loop turn, like a server reading many connections, and waits until every callback has run.
Prints messages/s, wall time per message, and the CPU time per message of the loop thread (submit, delivery,
callbacks) and of the writer thread (building rows and results, and SQLite); then the same drafts through the
synchronous HistoryStore.append_batch on the loop thread (what the server's CommitQueue does today) for comparison.

    .venv/bin/python scripts/bench_store.py                           # 200,000 messages into a new database
    .venv/bin/python scripts/bench_store.py --prefill 1000000         # into a database holding 1,000,000 already
    .venv/bin/python scripts/bench_store.py --cids time               # cids that start with a timestamp
    .venv/bin/python scripts/bench_store.py --cids none               # without cids: the cost of the cid index
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_history import fill

from chat.cli import run_event_loop
from chat.store.history import HistoryStore
from chat.store.records import Appended, Draft
from chat.store.sqlite import AsyncStore


def make_cid(kind: str, index: int, rng: random.Random) -> str | None:
    """random: 16 hex digits, as chat.client makes them today; time: a millisecond timestamp first (12 hex digits,
    five messages per millisecond) and 8 random ones; none: no cid."""
    if kind == "none":
        return None
    if kind == "time":
        return f"{1_765_000_000_000 + index // 5:012x}{rng.randbytes(4).hex()}"
    return rng.randbytes(8).hex()


def make_drafts(count: int, cids: str, seed: int) -> list[Draft]:
    """Room drafts from 200 senders into 20 rooms."""
    rng = random.Random(seed)
    drafts = []
    for i in range(count):
        user, room = i % 200, i % 20
        text = f"message number {i} of the benchmark"
        cid = make_cid(cids, i, rng)
        draft = Draft(10**12 + i, 1 + user, f"User{user}", f"user{user}", text, cid, f"Room{room}", f"room{room}")
        drafts.append(draft)
    return drafts


def thread_cpu(thread: threading.Thread) -> float:
    """CPU seconds a thread has used so far (Linux)."""
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def busy(microseconds: float) -> None:
    """Python work holding the GIL, as a server's decoding and fan-out of one message would."""
    deadline = time.perf_counter() + microseconds / 1e6
    while time.perf_counter() < deadline:
        pass


async def async_store(path: Path, drafts: list[Draft], burst: int, work: float, max_batch: int = 4096) -> None:
    store = AsyncStore(path, max_batch=max_batch)
    await store.start()
    writer = next(t for t in threading.enumerate() if t.name == "chat-store-writer")
    stored = 0
    done = asyncio.Event()
    total = len(drafts)

    def on_stored(result: Appended | None) -> None:
        nonlocal stored
        stored += 1
        if stored == total:
            done.set()

    loop_cpu, writer_cpu = time.thread_time(), thread_cpu(writer)
    started = time.perf_counter()
    submit = store.submit
    for start in range(0, total, burst):
        for draft in drafts[start : start + burst]:
            submit(draft, on_stored)
            if work:
                busy(work)
        await asyncio.sleep(0)  # one loop turn, as between reads of a server's connections
    await done.wait()
    elapsed = time.perf_counter() - started
    loop_cpu, writer_cpu = time.thread_time() - loop_cpu, thread_cpu(writer) - writer_cpu
    batches, messages = store.batches, store.messages
    await store.close()
    print(f"AsyncStore: {total:,} messages in {elapsed:.2f} s: {total / elapsed:,.0f} messages/s, "
          f"{elapsed / total * 1e6:.2f} us each")  # fmt: skip
    print(f"  {batches:,} transactions, {messages / max(batches, 1):,.0f} messages each on average")
    if work:
        print(f"  with {work:g} us of Python work per message on the loop: at best {1e6 / work:,.0f} messages/s")
    print(f"  CPU per message: loop thread {loop_cpu / total * 1e6:.2f} us (submit, delivery, callback), "
          f"writer thread {writer_cpu / total * 1e6:.2f} us (rows, results, SQLite)")  # fmt: skip


def sync_store(path: Path, drafts: list[Draft], burst: int) -> None:
    store = HistoryStore(path)
    started = time.perf_counter()
    for start in range(0, len(drafts), burst):
        store.append_batch(drafts[start : start + burst])
    elapsed = time.perf_counter() - started
    store.close()
    print(f"HistoryStore.append_batch on the loop thread, {burst} per transaction: {len(drafts) / elapsed:,.0f} "
          f"messages/s, {elapsed / len(drafts) * 1e6:.2f} us each, all of it on the loop")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--burst", type=int, default=1000, help="submits per loop turn")
    parser.add_argument("--prefill", type=int, default=0, help="messages in the database before the run")
    parser.add_argument("--cids", choices=["random", "time", "none"], default="random", help="see make_cid")
    parser.add_argument("--no-sync", action="store_true", help="skip the HistoryStore comparison")
    parser.add_argument("--max-batch", type=int, default=4096, help="AsyncStore's max_batch")
    parser.add_argument(
        "--loop-work", type=float, default=0.0, metavar="US", help="Python work per message on the loop thread (us)"
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="chat-bench-store-"))
    try:
        base = folder / "base.db"
        if args.prefill:
            started = time.perf_counter()
            fill(base, args.prefill, seed=1)
            HistoryStore(base).close()  # migrated once, outside the timing
            print(f"prefilled {args.prefill:,} messages in {time.perf_counter() - started:.1f} s")
        drafts = make_drafts(args.messages, args.cids, seed=2)
        for name in ["async", "sync"] if not args.no_sync else ["async"]:
            path = folder / f"{name}.db"
            if args.prefill:
                shutil.copy(base, path)
            if name == "async":
                run_event_loop(async_store(path, drafts, args.burst, args.loop_work, args.max_batch))  # type: ignore[arg-type]
            else:
                sync_store(path, drafts, args.burst)
    finally:
        shutil.rmtree(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
