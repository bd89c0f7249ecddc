#!/usr/bin/env python3
"""Benchmark: server memory per connection. Opens N logged-in clients (each in one room) to a real chat-server on
127.0.0.1 and prints the growth of the server's resident memory divided by N.

    .venv/bin/python scripts/bench_memory.py --clients 1000
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import BenchServer

from chat.cli import run_event_loop
from chat.client import Client, connect


async def run(args: argparse.Namespace) -> int:
    server = await BenchServer.start(f"[server]\nmax_clients = {args.clients + 10}\n")
    clients: list[Client] = []
    try:
        warm = await connect("127.0.0.1", server.port, nick="warmup")
        await warm.join("lobby")
        baseline = server.rss_bytes()
        for index in range(args.clients):
            client = await connect("127.0.0.1", server.port, nick=f"idle{index}")
            await client.join(f"room{index % 20}")
            clients.append(client)
        grown = server.rss_bytes() - baseline
        print(f"connections: {args.clients} logged in, each in one of 20 rooms")
        print(f"server RSS: {baseline / 2**20:.1f} MiB before, {(baseline + grown) / 2**20:.1f} MiB after")
        print(f"memory per connection: {grown / args.clients / 1024:.1f} KiB")
        return 0
    finally:
        for client in clients:
            await client.close()
        await server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * args.clients + 100)), hard))
    return run_event_loop(run(args))


if __name__ == "__main__":
    sys.exit(main())
