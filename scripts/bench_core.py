#!/usr/bin/env python3
"""Benchmark: the server's CPU per room message without sockets, split between the loop thread and the others.

One sender and `--receivers` members in one room of a real ChatService, LocalEngine and AsyncStore (a SQLite file in
a temporary folder, WAL, the server's settings); each member's connection is an in-memory peer with the TCP
listener's real codec, so decoding, validation, the group commit, the room's batch and the encoding all run as in
the server, and only the kernel's reads and writes are left out. The sender's `say` frames (100-character texts,
client ids as the C load generator sends them) are handled 64 per loop turn, like the read loop does. Prints the
CPU time per message of the loop thread (`time.thread_time`) and of every other thread (the writer and the
checkpointer: process time minus the loop's), so a change to the per-message path can be measured in a second
without the noise of a network benchmark.

    .venv/bin/python scripts/bench_core.py                      # 100,000 messages, 10 receivers
    .venv/bin/python scripts/bench_core.py --receivers 100 --messages 50000 --reps 5
    taskset -c 0 .venv/bin/python scripts/bench_core.py         # on one core, as the yardsticks pin the server
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chat.config import Config
from chat.core.limits import TokenBucket
from chat.core.service import ChatService
from chat.core.session import Session, State
from chat.engine.local import LocalEngine
from chat.protocol.errors import ErrorCode
from chat.protocol.messages import Ref, ServerFrame
from chat.protocol.names import fold
from chat.server.tcp import FrameCodec, TurnWriter
from chat.store.sqlite import AsyncStore

FRAMES_PER_TURN = 64  # as chat.server.tcp reads them


class CountingPeer:
    """A member's connection that encodes like the TCP listener and only counts what it is handed."""

    codec = FrameCodec()
    address = ("memory", 0)
    is_open = True
    pending_bytes = 0

    def __init__(self) -> None:
        self.bytes = 0
        self.events = 0

    def send_event(self, event: ServerFrame) -> None:
        self.bytes += len(self.codec.encode(event))
        self.events += 1

    def send_batch(self, encoded: bytes, events: Sequence[ServerFrame]) -> None:
        self.bytes += len(encoded)
        self.events += len(events) or 1

    def close_with(self, code: ErrorCode, message: str, ref: Ref | None = None) -> None:
        raise AssertionError(f"the benchmark's sender was refused: {code} {message}")

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def throttle(self, seconds: float) -> None:
        pass

    def negotiated(self, caps: Any) -> None:
        pass

    async def drain(self) -> None:
        pass


async def one_run(receivers: int, messages: int, folder: Path) -> tuple[float, float, int]:
    """Handle `messages` says into a room of `receivers` + 1; the loop's and the others' CPU us per message."""
    store = AsyncStore(str(folder / "chat.db"), synchronous="normal")
    await store.start()
    loop = asyncio.get_running_loop()
    engine = LocalEngine(lambda: turn.schedule())
    turn = TurnWriter(loop, engine.flush)
    service = ChatService(Config(), store, engine, loop.time)
    await service.start()
    members = []
    for index in range(receivers + 1):
        session = Session(CountingPeer(), TokenBucket(1e12, 1e12, 0.0), 0.0)
        session.state = State.ACTIVE
        session.identity = index + 1
        session.nick = f"user{index}"
        session.nick_key = fold(session.nick)
        session.storage = TokenBucket(1e12, 1e12, 0.0)  # the per-identity storage check runs, and never refuses
        engine.register(session)
        session.rooms["bench"] = service.rooms.add_member("bench", "bench", session)
        members.append(session)
    sender, receiver = members[0], members[-1]
    text = "x" * 100
    headers = [
        msgspec.json.encode({"type": "say", "room": "bench", "text": text, "cid": f"0123456789abcdef-{n:x}"})
        for n in range(messages)
    ]
    loop_cpu, process_cpu = time.thread_time(), time.process_time()
    for number, header in enumerate(headers):
        service.handle_frame(sender, header, b"")
        if number % FRAMES_PER_TURN == FRAMES_PER_TURN - 1:
            await asyncio.sleep(0)
    await store.flush()
    peer = receiver.peer
    assert isinstance(peer, CountingPeer)
    for _ in range(1000):  # the last commit's callbacks, then the turn's flush
        if peer.events >= messages:
            break
        await asyncio.sleep(0)
    loop_cpu, process_cpu = time.thread_time() - loop_cpu, time.process_time() - process_cpu
    await store.close()
    if peer.events != messages:
        raise SystemExit(f"a receiver got {peer.events} of {messages} messages")
    return loop_cpu / messages * 1e6, (process_cpu - loop_cpu) / messages * 1e6, store.batches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receivers", type=int, default=10)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args(argv)
    results = []
    for rep in range(args.reps):
        folder = Path(tempfile.mkdtemp(prefix="chat-bench-core-"))
        try:
            run = one_run(args.receivers, args.messages, folder)
            if args.loop == "uvloop":
                import uvloop

                figures = uvloop.run(run)
            else:
                figures = asyncio.run(run)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        loop_us, other_us, batches = figures
        results.append(figures)
        print(
            f"rep {rep}: {args.messages:,} messages to {args.receivers} receivers ({args.loop}): "
            f"loop thread {loop_us:.2f} us/message, other threads {other_us:.2f}, total {loop_us + other_us:.2f}; "
            f"{batches} commits"
        )
    totals = [loop_us + other_us for loop_us, other_us, _ in results]
    print(
        f"median of {args.reps}: loop {statistics.median(r[0] for r in results):.2f} us, "
        f"others {statistics.median(r[1] for r in results):.2f} us, total {statistics.median(totals):.2f} us "
        f"per message (min {min(totals):.2f}, max {max(totals):.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
