#!/usr/bin/env python3
"""A stand-in for chat-server that only relays, for `scripts/bench --ceiling`: the generator's ceiling.

It speaks just enough of the protocol for a flood (hello, login -> welcome, join -> joined, say -> message), stores
nothing, checks nothing, and writes each connection's frames of one loop turn in one write. What scripts/bench
measures against it is how fast the load generator can go, so a figure for the real server far below it is the
server's, not the generator's. Loopback only; it runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import struct
import sys
import time
from typing import Any, cast

PREFIX = struct.Struct("!II")


def frame(header: dict[str, Any]) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    return PREFIX.pack(len(raw), 0) + raw


class Relay:
    """Every member of every room gets every message; writes are gathered per connection until the loop turns."""

    def __init__(self) -> None:
        self.members: list[RelayConnection] = []
        self.next_id = 1
        self._pending: dict[RelayConnection, list[bytes]] = {}
        self._flush_scheduled = False

    def queue(self, connection: RelayConnection, data: bytes) -> None:
        self._pending.setdefault(connection, []).append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        for connection, parts in pending.items():
            connection.transport.write(b"".join(parts))


class RelayConnection(asyncio.Protocol):
    """One client of the relay."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.buffer = b""
        self.nick = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        hello = {"type": "hello", "server": "bench-relay", "protocol": 1, "auth": "none", "nonce": "00" * 32}
        self.transport.write(frame(hello))

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.relay.members:
            self.relay.members.remove(self)

    def data_received(self, data: bytes) -> None:
        buffer, position = self.buffer + data, 0
        while len(buffer) - position >= PREFIX.size:
            header_len, payload_len = PREFIX.unpack_from(buffer, position)
            end = position + PREFIX.size + header_len + payload_len
            if end > len(buffer):
                break
            self.handle(json.loads(buffer[position + PREFIX.size : position + PREFIX.size + header_len]))
            position = end
        self.buffer = buffer[position:]

    def handle(self, request: dict[str, Any]) -> None:
        kind = request.get("type")
        if kind == "login":
            self.nick = request["nick"]
            udp = {"port": 0, "sid": 1, "key": "00" * 32}
            self.relay.queue(
                self, frame({"type": "welcome", "nick": self.nick, "session": "-", "udp": udp, "limits": {}})
            )
        elif kind == "join":
            self.relay.members.append(self)
            joined = {"type": "joined", "room": request["room"], "members": [], "messages": [], "truncated": False}
            self.relay.queue(self, frame(joined))
        elif kind == "say":
            message = {
                "type": "message", "id": self.relay.next_id, "room": request["room"], "from": self.nick,
                "text": request["text"], "ts": int(time.time() * 1000),
            }  # fmt: skip
            self.relay.next_id += 1
            data = frame(message)
            for member in self.relay.members:
                self.relay.queue(member, data)


async def serve(port: int) -> int:
    loop = asyncio.get_running_loop()
    relay = Relay()
    server = await loop.create_server(lambda: RelayConnection(relay), "127.0.0.1", port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    print(f"chat-server listening on tcp://127.0.0.1:{bound} udp://127.0.0.1:0", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    import uvloop

    return uvloop.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    sys.exit(main())
