#!/usr/bin/env python3
"""Benchmark: N clients exchange M messages through one room of a real chat-server on 127.0.0.1.

Each client sends its share of the messages with up to `--window` says in flight and reads every message of the room
as events. Prints the time until every client holds every message, throughput, and delivery latency percentiles
(send to receipt, over every recipient), plus the server's memory.

    .venv/bin/python scripts/bench_room.py                       # 10 clients, 10,000 messages
    .venv/bin/python scripts/bench_room.py --clients 50 --messages 50000 --window 16
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import BenchServer, percentile

from chat.cli import run_event_loop
from chat.client import Client, Message, connect

ROOM = "bench"


async def send_share(client: Client, count: int, window: int, sent_at: dict[str, float], tag: str) -> None:
    """Send `count` says with at most `window` unacknowledged at a time."""
    slots = asyncio.Semaphore(window)

    async def one(index: int) -> None:
        cid = f"{tag}-{index}"
        sent_at[cid] = time.perf_counter()
        try:
            await client.say(f"message {index} from {tag}", room=ROOM, cid=cid)
        finally:
            slots.release()

    async with asyncio.TaskGroup() as group:
        for index in range(count):
            await slots.acquire()
            group.create_task(one(index))


async def receive_all(client: Client, total: int, sent_at: dict[str, float], latencies: list[float]) -> None:
    """Read events until this client has seen `total` messages of the room."""
    seen = 0
    while seen < total:
        event = await client.recv(timeout=60)
        if isinstance(event, Message) and event.room == ROOM:
            seen += 1
            if event.cid is not None and event.cid in sent_at:
                latencies.append(time.perf_counter() - sent_at[event.cid])


async def run(args: argparse.Namespace) -> int:
    server = await BenchServer.start()
    try:
        clients = []
        for index in range(args.clients):
            client = await connect("127.0.0.1", server.port, nick=f"bench{index}")
            await client.join(ROOM)
            clients.append(client)
        # drain presence and join events so they do not count
        for client in clients:
            while True:
                try:
                    await client.recv(timeout=0.2)
                except TimeoutError:
                    break
        rss_before = server.rss_bytes()
        share = args.messages // args.clients
        total = share * args.clients
        sent_at: dict[str, float] = {}
        latencies: list[float] = []
        started = time.perf_counter()
        await asyncio.gather(
            *(send_share(c, share, args.window, sent_at, f"c{i}") for i, c in enumerate(clients)),
            *(receive_all(c, total, sent_at, latencies) for c in clients),
        )
        elapsed = time.perf_counter() - started
        latencies.sort()
        ms = [v * 1000 for v in latencies]
        print(f"clients: {args.clients}, messages: {total}, window: {args.window} says in flight per client")
        print(f"time until every client held every message: {elapsed:.2f} s")
        print(f"stored messages per second: {total / elapsed:,.0f}")
        print(f"deliveries per second (messages x recipients): {total * args.clients / elapsed:,.0f}")
        print(
            "delivery latency ms: "
            f"p50 {percentile(ms, 0.50):.1f}  p90 {percentile(ms, 0.90):.1f}  "
            f"p99 {percentile(ms, 0.99):.1f}  max {ms[-1]:.1f}"
        )
        print(f"server RSS: {server.rss_bytes() / 2**20:.1f} MiB (before the run: {rss_before / 2**20:.1f} MiB)")
        for client in clients:
            await client.close()
        return 0
    finally:
        await server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=32, help="says in flight per client")
    return run_event_loop(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
