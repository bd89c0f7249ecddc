#!/usr/bin/env python3
"""Benchmark: N raw-protocol clients log in and join one room of a real chat-server on 127.0.0.1.

Timed until every client has its `joined` and the first client has heard every other join (as `presence`
frames, or as `presences` batches with the presence-batch cap, docs/protocol.md 10). Prints the time, and the frames
and bytes the clients received, without caps and with `presence-batch` + `lazy-members`.

    .venv/bin/python scripts/bench_presence.py              # 2,000 clients
    .venv/bin/python scripts/bench_presence.py --clients 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import BenchServer

PREFIX = struct.Struct("!II")
ROOM = "bench"


class RawClient:
    """A client of the raw protocol that counts what it receives."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.frames = 0
        self.bytes = 0

    async def read(self) -> dict[str, object]:
        header_len, payload_len = PREFIX.unpack(await self.reader.readexactly(8))
        body = await self.reader.readexactly(header_len + payload_len)
        self.frames += 1
        self.bytes += 8 + len(body)
        frame: dict[str, object] = json.loads(body[:header_len])
        return frame

    def send(self, header: dict[str, object]) -> None:
        data = json.dumps(header).encode()
        self.writer.write(PREFIX.pack(len(data), 0) + data)


async def one_client(port: int, index: int, caps: list[str] | None, started: asyncio.Event) -> RawClient:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**22)
    client = RawClient(reader, writer)
    await client.read()  # hello
    login: dict[str, object] = {"type": "login", "nick": f"u{index}", "protocol": 1}
    if caps is not None:
        login["caps"] = caps
    client.send(login)
    while (await client.read())["type"] != "welcome":
        pass
    await started.wait()
    client.send({"type": "join", "room": ROOM})
    while (await client.read())["type"] != "joined":
        pass
    return client


async def heard_joins(client: RawClient, expected: int) -> None:
    heard = 0
    while heard < expected:
        frame = await client.read()
        if frame["type"] == "presence":
            heard += 1
        elif frame["type"] == "presences":
            heard += len(frame["events"])  # type: ignore[arg-type]


async def run(count: int, caps: list[str] | None) -> tuple[float, int, int]:
    server = await BenchServer.start(f"[server]\nmax_clients = {count + 10}\n")
    try:
        first = await one_client(server.port, 0, caps, _set())
        started = asyncio.Event()
        tasks = [asyncio.create_task(one_client(server.port, i, caps, started)) for i in range(1, count)]
        await asyncio.sleep(0.5)
        begin = time.perf_counter()
        started.set()
        listener = asyncio.create_task(heard_joins(first, count - 1))
        clients = await asyncio.wait_for(asyncio.gather(*tasks), 300)
        await asyncio.wait_for(listener, 300)
        elapsed = time.perf_counter() - begin
        everyone = [first, *clients]
        frames, received = sum(c.frames for c in everyone), sum(c.bytes for c in everyone)
        for c in everyone:
            c.writer.close()
        return elapsed, frames, received
    finally:
        await server.stop()


def _set() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2000)
    args = parser.parse_args()
    for label, caps in (("no caps", None), ("presence-batch + lazy-members", ["presence-batch", "lazy-members"])):
        elapsed, frames, received = await run(args.clients, caps)
        print(
            f"{args.clients} clients, {label}: {elapsed:.2f} s, {frames:,} frames, {received / 2**20:.1f} MiB received"
        )


if __name__ == "__main__":
    asyncio.run(main())
