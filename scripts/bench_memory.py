#!/usr/bin/env python3
"""Benchmark: server memory per idle joined connection, and where it goes.

The server runs in this process (so its allocations can be traced); N raw-wire clients (scripts/benchwire.py) log in
and join rooms of `--room-size` from a child process, from their own loopback addresses. Printed: the growth of this
process's resident memory divided by N; with `--breakdown`, also the Python objects gained per connection by type
(gc) and the bytes per connection by allocation site (a tracemalloc snapshot diff; tracing slows the joins and
inflates RSS, so read the RSS figure from a run without it). `scripts/bench --case memory` is the reference figure.

    .venv/bin/python scripts/bench_memory.py --clients 5000 --loop uvloop
    .venv/bin/python scripts/bench_memory.py --clients 2000 --breakdown --frames 8
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import subprocess
import sys
import tempfile
import tracemalloc
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchwire as wire

from chat.cli import run_event_loop
from chat.config import config_with, load_config
from chat.server.app import ChatServer

HERE = Path(__file__).resolve().parent
TIMEOUT_S = 300.0


def rss_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024


def object_counts() -> Counter[str]:
    return Counter(type(o).__qualname__ for o in gc.get_objects())


async def clients_child(port: int, count: int, room_size: int, first: int) -> int:
    """The child: `count` members joined, then 'ready' on stdout; they stay until stdin closes."""

    async def one(index: int) -> wire.WireConnection:
        number = first + index
        connection = await wire.open_connection(port, wire.source_address(number))
        await wire.log_in(connection, f"m{number}", None, TIMEOUT_S)
        await wire.join_room(connection, f"room{number // room_size}", TIMEOUT_S)
        connection.discard()
        return connection

    async with asyncio.timeout(TIMEOUT_S):
        outcomes = await wire.bounded(count, one, 200)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    print(f"ready {count - len(failures)} {failures[0]!r}" if failures else f"ready {count}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    return 0


async def start_clients(port: int, count: int, room_size: int, first: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child", str(port), str(count), str(room_size), str(first),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT_S + 10)).decode().split()
    if line[:2] != ["ready", str(count)]:
        raise RuntimeError(f"the clients did not all join: {' '.join(line) or 'no answer'}")
    return proc


def print_breakdown(args: argparse.Namespace, before: Counter[str], snapshot: tracemalloc.Snapshot | None) -> None:
    n = args.clients
    after = object_counts()
    print("objects gained per connection (gc-tracked):")
    for kind, gained in sorted(((k, after[k] - before[k]) for k in after), key=lambda kv: -kv[1]):
        if gained >= n // 2:
            print(f"  {gained / n:6.2f} {kind}")
    if snapshot is None:
        return
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    stats = tracemalloc.take_snapshot().filter_traces(ignore).compare_to(snapshot.filter_traces(ignore), "traceback")
    print(f"Python allocations gained: {sum(s.size_diff for s in stats) / n:.0f} B per connection; by site:")
    for stat in stats[: args.top]:
        if stat.size_diff < 16 * n:
            break
        frames = [f"{Path(f.filename).name}:{f.lineno}" for f in reversed(stat.traceback)][: args.show]
        print(f"  {stat.size_diff / n:6.0f} B {stat.count_diff / n:5.2f} blocks  {' < '.join(frames)}")


async def run(args: argparse.Namespace) -> int:
    workdir = tempfile.TemporaryDirectory(prefix="chat-bench-memory-")
    config = config_with(
        load_config(HERE / "bench.toml", environ={}),
        server={"host": "127.0.0.1", "port": 0, "udp_port": 0, "max_clients": args.clients + 10},
        history={"database": str(Path(workdir.name) / "bench.db")},
    )
    server = ChatServer(config)
    await server.start()
    procs: list[asyncio.subprocess.Process] = []
    try:
        procs.append(await start_clients(server.port, 1, 1, 60_000))  # first-use allocations are not counted
        await asyncio.sleep(1.0)
        gc.collect()
        if args.breakdown:
            tracemalloc.start(args.frames)
        before = object_counts() if args.breakdown else Counter()
        snapshot = tracemalloc.take_snapshot() if args.breakdown else None
        baseline = rss_bytes()
        procs.append(await start_clients(server.port, args.clients, args.room_size, 0))
        await asyncio.sleep(2.0)  # let the join phase's presence frames drain
        gc.collect()
        grown = rss_bytes() - baseline
        loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
        print(f"{args.clients} connections joined in rooms of {args.room_size}, server on {loop}")
        print(f"server RSS: {baseline / 2**20:.1f} MiB before, {(baseline + grown) / 2**20:.1f} MiB after")
        print(f"memory per connection: {grown / args.clients / 1024:.2f} KiB" + (" (traced)" if args.breakdown else ""))
        if args.breakdown:
            print_breakdown(args, before, snapshot)
        return 0
    finally:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()  # only the children this run started, by their handle
        await server.close()
        workdir.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--room-size", type=int, default=100)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--breakdown", action="store_true", help="objects by type and bytes by allocation site")
    parser.add_argument("--frames", type=int, default=6, help="traceback depth of --breakdown's allocation sites")
    parser.add_argument("--show", type=int, default=3, help="frames printed per allocation site")
    parser.add_argument("--top", type=int, default=40, help="allocation sites printed")
    parser.add_argument("--child", nargs=4, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.clients + 200)), hard))
    if args.child:
        return run_event_loop(clients_child(*args.child), "uvloop")
    return run_event_loop(run(args), args.loop)


if __name__ == "__main__":
    sys.exit(main())
