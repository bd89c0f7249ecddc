#!/usr/bin/env python3
"""Benchmark: upload and download throughput of one file on loopback, and chat latency in the same room meanwhile.

A real chat-server process runs on 127.0.0.1. Alice sends a `--size` MiB file to the room and fetches it back,
while Carol and Dave, in the same room, say messages one after another; the figures are the transfer rates and the
say round-trip percentiles during the transfers (and, for comparison, with no transfer going on).

    .venv/bin/python scripts/bench_files.py --size 100
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import BenchServer, report_latencies

from chat.cli import run_event_loop
from chat.client import Client, connect


async def chat_latencies(sender: Client, stop: asyncio.Event, limit: int = 100_000) -> list[float]:
    """Say round trips (ms) in the room until `stop` is set."""
    latencies = []
    for index in range(limit):
        if stop.is_set():
            break
        started = time.perf_counter()
        await sender.say(f"chat {index}", room="bench")
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def write_random_file(path: Path, mebibytes: int) -> None:
    with open(path, "wb") as out:
        for _ in range(mebibytes):
            out.write(os.urandom(2**20))


async def run(args: argparse.Namespace) -> int:
    server = await BenchServer.start(f"[files]\nmax_bytes = {args.size * 2**20 + 1}\nquota_bytes = {4 * 2**30}\n")
    with tempfile.TemporaryDirectory(prefix="chat-bench-files-") as folder:
        source = Path(folder) / "big.bin"
        await asyncio.to_thread(write_random_file, source, args.size)
        try:
            port = server.port
            async with (
                connect("127.0.0.1", port, nick="alice") as alice,
                connect("127.0.0.1", port, nick="carol") as carol,
                connect("127.0.0.1", port, nick="dave") as dave,
            ):
                for client in (alice, carol, dave):
                    await client.join("bench")
                idle = await chat_latencies(carol, asyncio.Event(), limit=2000)

                stop = asyncio.Event()
                chatting = asyncio.create_task(chat_latencies(carol, stop))
                started = time.perf_counter()
                message = await alice.send_file(source, room="bench")
                upload_s = time.perf_counter() - started
                stop.set()
                during_upload = await chatting
                assert message.file is not None

                stop = asyncio.Event()
                chatting = asyncio.create_task(chat_latencies(carol, stop))
                started = time.perf_counter()
                copy = await alice.get_file(message.file, Path(folder) / "copy.bin")
                download_s = time.perf_counter() - started
                stop.set()
                during_download = await chatting
                await dave.recv(timeout=5)  # the room's third member got the traffic too
            print(f"file: {args.size} MiB")
            print(f"upload:   {args.size / upload_s:7.1f} MiB/s ({upload_s:.2f} s)")
            print(f"download: {args.size / download_s:7.1f} MiB/s ({download_s:.2f} s)")
            report_latencies("say round trip, no transfer", idle, "says")
            report_latencies("say round trip during the upload", during_upload, "says")
            report_latencies("say round trip during the download", during_download, "says")
            identical = copy.read_bytes() == source.read_bytes()
            print(f"download byte-identical: {identical}; server RSS after: {server.rss_bytes() / 2**20:.1f} MiB")
            return 0
        finally:
            await server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100, help="file size in MiB")
    return run_event_loop(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
