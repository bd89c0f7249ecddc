#!/usr/bin/env python3
"""Benchmark: latency of a quick message on loopback, by UDP and by the TCP path, next to a `say` in a room of two.

For each path, one client sends `--count` messages one after another to a second client, and the time from the
send to the recipient's event is recorded. A real chat-server process runs on 127.0.0.1.

    .venv/bin/python scripts/bench_quick.py --count 2000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import BenchServer, report_latencies

from chat.cli import run_event_loop
from chat.client import Client, Message, connect
from chat.protocol.messages import QuickMessage


async def measure(
    sender: Client, recipient: Client, count: int, send: Callable[[int], Awaitable[object]], kind: type
) -> list[float]:
    """Milliseconds from each send to its arrival as an event at the recipient (the sender's acknowledgement is
    awaited before the next send, outside the measured time)."""
    latencies = []
    for index in range(count):
        started = time.perf_counter()
        sending = asyncio.ensure_future(send(index))
        while True:
            event = await recipient.recv(timeout=30)
            if isinstance(event, kind) and event.text == f"m{index}":
                break
        latencies.append((time.perf_counter() - started) * 1000)
        await sending
    return latencies


async def run(args: argparse.Namespace) -> int:
    server = await BenchServer.start()
    try:
        port = server.port
        async with connect("127.0.0.1", port, nick="u1") as a, connect("127.0.0.1", port, nick="u2") as b:
            if not (await a.wait_udp(5) and await b.wait_udp(5)):
                print("UDP is not usable here", file=sys.stderr)
                return 1
            rtt = await a.udp_ping()
            report_latencies(
                "quick, UDP path", await measure(a, b, args.count, lambda i: a.quick(f"m{i}", to="u2"), QuickMessage)
            )
            await a.join("duo")
            await b.join("duo")
            report_latencies(
                "say, room of 2", await measure(a, b, args.count, lambda i: a.say(f"m{i}", room="duo"), Message)
            )
            print(f"UDP PING round trip: {rtt * 1000 if rtt else float('nan'):.3f} ms")
        async with (
            connect("127.0.0.1", port, nick="t1", udp=False) as a,
            connect("127.0.0.1", port, nick="t2", udp=False) as b,
        ):
            report_latencies("quick, TCP path (UDP blocked)", await measure(
                a, b, args.count, lambda i: a.quick(f"m{i}", to="t2"), QuickMessage
            ))  # fmt: skip
        return 0
    finally:
        await server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    return run_event_loop(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
