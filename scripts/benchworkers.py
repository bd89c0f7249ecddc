"""The load-generator processes of scripts/bench: each runs one role on its own event loop, pinned to the generator's
CPUs, and talks to the main process over a pipe.

Every role goes the same way: set up its connections, send `ready`, wait for `go` (which carries the run's start
time, on the system-wide monotonic clock), run, send `done` with its figures and its own CPU time over the run, then
wait for `exit`. The main process stops the server before it sends `exit`, so thousands of clients never leave a live
server at once.

Roles:
- `relay`: flood or latency receivers (raw wire, see benchwire), and in process 0 of a flood the one sender, whose
  window is the receivers' low-water mark (shared between processes through `lows`).
- `paced`: the latency senders, in a plain loop without asyncio (asyncio's timers have millisecond steps; a sleep
  of the remaining time has tens of microseconds), each message sent when it is due.
- `idle`: connections that only connect (accept) or log in and join (memory), then stay idle.
- `storm`: clients of the client library (benchstorm).
"""

from __future__ import annotations

import asyncio
import math
import os
import select
import socket
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import benchwire as wire
from benchlib import raise_open_files_limit

Body = dict[str, Any]
SETUP_CONCURRENCY = 200  # handshakes in flight per process


@dataclass
class Shared:
    """Memory shared by the generator processes of one run (multiprocessing RawArray and RawValue)."""

    lows: Any = None  # per process and sender: the lowest next-expected seq of its receivers
    final: Any = None  # the number of messages the flood sender sent, -1 until it has finished


@dataclass
class RelaySpec:
    """Receivers of a flood or latency run, and (flood, process 0) its sender."""

    port: int
    secret: str | None
    room: str
    receivers: list[int]  # connection numbers: nick r<n>, source address from n
    senders: int  # senders in the whole run
    latency: bool
    window: int
    timeout_s: float  # hard bound on the run phase, from the start time
    slot: int = 0  # this process's index among the receiver processes
    processes: int = 1
    flood_sender: int | None = None  # connection number of the flood sender, when this process runs it
    duration_s: float | None = None  # flood: send for this long, or
    messages: int | None = None  # flood: send exactly this many; latency: per sender


@dataclass
class PacedSpec:
    """Latency senders: `numbers` of `senders`, each sending `messages` at `rate` per second."""

    port: int
    secret: str | None
    room: str
    connections: list[int]
    numbers: list[int]
    senders: int
    rate: float
    messages: int
    window: int
    receiver_processes: int
    timeout_s: float


@dataclass
class IdleSpec:
    """Connections that connect and read `hello` (accept), or also log in and join (memory)."""

    port: int
    secret: str | None
    connections: list[int]
    log_in: bool
    room_size: int
    timeout_s: float
    warm_up: bool = False
    concurrency: int = SETUP_CONCURRENCY


def worker_entry(role: str, pipe: Connection, spec: Any, shared: Shared, cpus: Sequence[int]) -> None:
    """The body of a generator process: pin, raise the open-files limit, run the role, report a crash."""
    try:
        if cpus:
            os.sched_setaffinity(0, set(cpus))
        raise_open_files_limit()
        if role == "paced":
            paced_senders(pipe, spec, shared)
            return
        import uvloop

        uvloop.run(_run_role(role, pipe, spec, shared))
    except Exception:
        pipe.send(("error", {"traceback": traceback.format_exc()}))


async def _run_role(role: str, pipe: Connection, spec: Any, shared: Shared) -> None:
    channel = Channel(pipe)
    if role == "relay":
        await relay(channel, spec, shared)
    elif role == "idle":
        await idle(channel, spec)
    elif role == "storm":
        from benchstorm import storm

        await storm(channel, spec)
    else:
        raise ValueError(f"unknown role {role!r}")


class Channel:
    """A worker's end of its pipe, read from the event loop."""

    def __init__(self, pipe: Connection) -> None:
        self.pipe = pipe
        self._queue: asyncio.Queue[tuple[str, Body]] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(pipe.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            while self.pipe.poll():
                self._queue.put_nowait(self.pipe.recv())
        except (EOFError, OSError):
            self._loop.remove_reader(self.pipe.fileno())
            self._queue.put_nowait(("exit", {}))

    def send(self, kind: str, body: Body | None = None) -> None:
        self.pipe.send((kind, body or {}))

    async def get(self, kind: str) -> Body:
        """The next message, which must be of `kind` (an early `exit` ends the worker)."""
        got, body = await self._queue.get()
        if got != kind:
            raise (
                SystemExit(0)
                if got == "exit"
                else RuntimeError(f"expected {kind!r} from the main process, got {got!r}")
            )
        return body


async def sleep_until(deadline_ns: int) -> None:
    await asyncio.sleep(max(0.0, (deadline_ns - time.monotonic_ns()) / 1e9))


# --- relay: receivers, and the flood's sender ---------------------------------------------------------------------


async def relay(channel: Channel, spec: RelaySpec, shared: Shared) -> None:
    """Join the receivers (and the flood sender), run, report what each receiver got."""
    digits = None if spec.latency else wire.SeqDigits()
    receivers = [wire.Deliveries(spec.senders, digits=digits, latency=spec.latency) for _ in spec.receivers]

    async def join(index: int) -> wire.WireConnection:
        number = spec.receivers[index]
        connection = await wire.open_member(
            spec.port, wire.source_address(number), f"r{number}", spec.room, spec.secret
        )
        connection.hand_over(receivers[index].feed)
        return connection

    connections = await wire.bounded(len(receivers), join, SETUP_CONCURRENCY)
    failed = [c for c in connections if isinstance(c, BaseException)]
    if failed:
        channel.send("error", {"traceback": f"{len(failed)} receivers could not join: {failed[0]!r}"})
        return
    sender = None
    if spec.flood_sender is not None:
        number = spec.flood_sender
        sender = await wire.open_member(spec.port, wire.source_address(number), "s0", spec.room, spec.secret)
        sender.discard()
    slots = shared.lows if spec.processes > 1 else None
    watermark = None if spec.latency else wire.Watermark(receivers, slots, spec.slot)
    joined = [c for c in connections if isinstance(c, wire.WireConnection)]
    if not spec.latency:
        for connection in joined:
            connection.read_at_least(wire.flood_low_water(spec.window))
    channel.send("ready")
    t0_ns = (await channel.get("go"))["t0_ns"]
    for receiver in receivers:
        receiver.t0_ns = t0_ns
        receiver.reads = 0  # the set-up's reads (presence of later joiners) are not the run's
    cpu_before = time.process_time()
    deadline_ns = t0_ns + int(spec.timeout_s * 1e9)
    sending = None
    if sender is not None and watermark is not None:
        sending = asyncio.create_task(flood_sender(sender, watermark, spec, t0_ns, deadline_ns, shared))
    publishing = asyncio.create_task(publish_lows(receivers, spec, shared)) if spec.latency else None
    expected, timed_out = await _wait_complete(receivers, joined, spec, shared, deadline_ns)
    cpu = time.process_time() - cpu_before
    sent = await sending if sending is not None else None
    if publishing is not None:
        publishing.cancel()
    lost_connections = [c.lost for c in connections if isinstance(c, wire.WireConnection) and c.lost]
    body: Body = {
        "receivers": len(receivers),
        "expected_per_receiver": sum(expected),
        "delivered": sum(r.delivered for r in receivers),
        "reads": sum(r.reads for r in receivers),
        "lost": sum(r.lost(expected) for r in receivers),
        "dup": sum(r.dup for r in receivers),
        "reordered": sum(r.reordered for r in receivers),
        "error_frames": sum(r.errors for r in receivers),
        "foreign_frames": sum(r.foreign for r in receivers),
        "last_error": next((r.last_error.decode(errors="replace") for r in receivers if r.errors), None),
        "lost_connections": len(lost_connections),
        "first_lost_connection": lost_connections[0] if lost_connections else None,
        "first_delivery_ns": min((r.first_ns for r in receivers if r.first_ns), default=0),
        "last_delivery_ns": max((r.last_ns for r in receivers), default=0),
        "timed_out": timed_out,
        "cpu_s": cpu,
        "sender": sent,
    }
    if spec.latency:
        samples = [value for receiver in receivers if receiver.latencies is not None for value in receiver.latencies]
        body["latency_histogram"] = wire.latency_histogram(samples)
    channel.send("done", body)
    await channel.get("exit")


async def _wait_complete(
    receivers: Sequence[wire.Deliveries],
    connections: Sequence[wire.WireConnection],
    spec: RelaySpec,
    shared: Shared,
    deadline_ns: int,
) -> tuple[list[int], bool]:
    """Until every receiver has every message (the expected count per sender), or the deadline."""
    tail_read = spec.latency
    while True:
        await asyncio.sleep(0.005)
        if spec.latency:
            assert spec.messages is not None
            expected = [spec.messages] * spec.senders
        else:
            expected = [int(shared.final.value)]
            if expected[0] >= 0 and not tail_read:  # the sender is done: read the last bytes, however few
                tail_read = True
                for connection in connections:
                    connection.read_at_least(1)
        if expected[0] >= 0 and all(r.delivered >= sum(expected) for r in receivers):
            return expected, False
        if time.monotonic_ns() > deadline_ns:
            return [max(0, e) for e in expected], True


async def flood_sender(
    connection: wire.WireConnection,
    watermark: wire.Watermark,
    spec: RelaySpec,
    t0_ns: int,
    deadline_ns: int,
    shared: Shared,
) -> Body:
    """Send as fast as the window lets: at most `window` messages not yet received by every receiver."""
    encoder = wire.SayEncoder(spec.room, 0)
    await sleep_until(t0_ns)
    started = time.monotonic_ns()
    stop_ns = started + int(spec.duration_s * 1e9) if spec.duration_s is not None else deadline_ns
    limit = spec.messages if spec.messages is not None else 1 << 62
    poll = 0.001 if watermark.slots is not None else 0.05  # other processes' marks are polled
    sent = waits = 0
    while sent < limit:
        now = time.monotonic_ns()
        if now >= stop_ns:
            break
        room = watermark.low() + spec.window - sent
        if room <= 0:
            waits += 1
            await watermark.wait(poll)
            continue
        count = min(room, limit - sent)
        connection.write(encoder.batch(sent, count, (now - t0_ns) // 1000))
        sent += count
        await asyncio.sleep(0)
    shared.final.value = sent
    return {"sent": sent, "first_send_ns": started, "last_send_ns": time.monotonic_ns(), "window_waits": waits}


async def publish_lows(receivers: Sequence[wire.Deliveries], spec: RelaySpec, shared: Shared) -> None:
    """Latency runs: every 10 ms, each sender's lowest next-expected seq here, for the paced senders' window (a
    window of 128 is 128 ms of sending at 1,000 msg/s per sender: plenty of slack for that step)."""
    base = spec.slot * spec.senders
    while True:
        if receivers:
            for sender, low in enumerate(map(min, zip(*(r.next_seq for r in receivers), strict=True))):
                shared.lows[base + sender] = low
        await asyncio.sleep(0.01)


# --- paced: the latency senders -----------------------------------------------------------------------------------


def paced_senders(pipe: Connection, spec: PacedSpec, shared: Shared) -> None:
    """Send each message when it is due, from a plain loop; latency is counted from the due time, so a late send
    (the generator's own lag, or a full window) shows in the figures instead of hiding."""
    sockets = [
        blocking_member(spec.port, wire.source_address(number), f"s{sender}", spec.room, spec.secret)
        for number, sender in zip(spec.connections, spec.numbers, strict=True)
    ]
    for sock in sockets:
        sock.setblocking(False)
    pipe.send(("ready", {}))
    kind, go = pipe.recv()
    if kind != "go":
        return
    t0_ns = go["t0_ns"]
    cpu_before = time.process_time()
    period_ns = 1e9 / spec.rate
    offsets_ns = [sender / spec.senders * period_ns for sender in spec.numbers]  # staggered evenly
    encoders = [wire.SayEncoder(spec.room, sender) for sender in spec.numbers]
    sent = [0] * len(sockets)
    unsent = [b""] * len(sockets)
    blocked = [False] * len(sockets)
    stalls = 0
    lag_max_ns = 0
    lag_total_ns = 0
    deadline_ns = t0_ns + int(spec.timeout_s * 1e9)

    def due_ns(index: int, seq: int) -> int:
        return int(t0_ns + offsets_ns[index] + seq * period_ns)

    while time.monotonic_ns() < deadline_ns and (any(n < spec.messages for n in sent) or any(unsent)):
        now = time.monotonic_ns()
        for index, sender in enumerate(spec.numbers):
            if sent[index] >= spec.messages:
                continue
            due = min(spec.messages, math.floor((now - t0_ns - offsets_ns[index]) / period_ns) + 1)
            count = due - sent[index]
            if count <= 0:
                continue
            low = min(shared.lows[p * spec.senders + sender] for p in range(spec.receiver_processes))
            room = low + spec.window - sent[index]
            if room < count:
                if not blocked[index]:
                    stalls += 1
                blocked[index] = True
                count = room
            else:
                blocked[index] = False
            if count <= 0:
                continue
            first = sent[index]
            lag = now - due_ns(index, first)
            lag_max_ns = max(lag_max_ns, lag)
            lag_total_ns += lag * count
            batch = b"".join(
                encoders[index].one(seq, (due_ns(index, seq) - t0_ns) // 1000) for seq in range(first, first + count)
            )
            unsent[index] += batch
            sent[index] += count
        for index, sock in enumerate(sockets):
            _drain(sock)
            if unsent[index]:
                unsent[index] = _flush(sock, unsent[index])
        waiting = [due_ns(i, sent[i]) for i in range(len(sockets)) if sent[i] < spec.messages and not blocked[i]]
        pause_ns = (min(waiting) if waiting else now + 1_000_000) - time.monotonic_ns()
        if pause_ns > 0:
            time.sleep(min(pause_ns, 2_000_000) / 1e9)  # at least every 2 ms: read the echoes
    body = {
        "sent": sum(sent),
        "stalls": stalls,
        "lag_max_us": lag_max_ns / 1000,
        "lag_mean_us": lag_total_ns / max(1, sum(sent)) / 1000,
        "cpu_s": time.process_time() - cpu_before,
    }
    pipe.send(("done", body))
    while True:  # keep reading the echoes until the main process is done
        watched: list[int] = [pipe.fileno(), *(sock.fileno() for sock in sockets)]
        readable, _, _ = select.select(watched, [], [], 1.0)
        if pipe.fileno() in readable:
            return
        for sock in sockets:
            _drain(sock)


def blocking_member(port: int, source: str, nick: str, room: str, secret: str | None) -> socket.socket:
    """A blocking socket logged in as `nick` and joined to `room` (the paced sender's handshake)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = _BlockingFrames(sock)
    hello = reader.expect("hello")
    login: Body = {"type": "login", "nick": nick, "protocol": 1}
    if hello.get("auth") == "hmac-sha256":
        login["proof"] = wire.login_proof(secret or "", hello["nonce"], nick)
    sock.sendall(wire.frame(login))
    reader.expect("welcome")
    sock.sendall(wire.frame({"type": "join", "room": room}))
    reader.expect("joined")
    return sock


class _BlockingFrames:
    """Frames from a blocking socket, for a handshake."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def expect(self, kind: str) -> Body:
        import json

        while True:
            while len(self.buffer) < wire.PREFIX_SIZE or len(self.buffer) < self._end():
                data = self.sock.recv(65536)
                if not data:
                    raise wire.WireError(f"closed by the server while waiting for {kind}")
                self.buffer += data
            header_len, _ = wire.PREFIX.unpack_from(self.buffer)
            header = json.loads(self.buffer[wire.PREFIX_SIZE : wire.PREFIX_SIZE + header_len])
            self.buffer = self.buffer[self._end() :]
            if header.get("type") == kind:
                return dict(header)
            if header.get("type") == "error":
                raise wire.WireError(f"{header.get('code')}: {header.get('message')}")

    def _end(self) -> int:
        header_len, payload_len = wire.PREFIX.unpack_from(self.buffer)
        return int(wire.PREFIX_SIZE + header_len + payload_len)


def _drain(sock: socket.socket) -> None:
    """Read and drop whatever the server has sent (each sender gets every message of the room)."""
    try:
        while sock.recv(1 << 20):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def _flush(sock: socket.socket, data: bytes) -> bytes:
    """Write what the socket takes now; return the rest."""
    try:
        written = sock.send(data)
    except (BlockingIOError, InterruptedError):
        return data
    return data[written:]


# --- idle: accept and memory --------------------------------------------------------------------------------------


async def idle(channel: Channel, spec: IdleSpec) -> None:
    """Open the connections from the start time on, as fast as `concurrency` handshakes in flight allow."""
    warm = None
    if spec.warm_up:  # first-use allocations of the server (a room, a login) are not counted per connection
        warm = await wire.open_member(spec.port, "127.0.0.1", "warmup", "warmup", spec.secret)
        warm.discard()
    channel.send("ready")
    t0_ns = (await channel.get("go"))["t0_ns"]
    await sleep_until(t0_ns)
    cpu_before = time.process_time()

    async def one(index: int) -> tuple[wire.WireConnection, int]:
        number = spec.connections[index]
        connection = await wire.open_connection(spec.port, wire.source_address(number))
        try:
            if spec.log_in:
                await wire.log_in(connection, f"m{number}", spec.secret)
                if spec.room_size:
                    await wire.join_room(connection, f"room{number // spec.room_size}")
            else:
                await connection.expect("hello", 60)
        except BaseException:
            connection.close()
            raise
        connection.discard()
        return connection, time.monotonic_ns()

    try:
        async with asyncio.timeout(spec.timeout_s):
            outcomes = await wire.bounded(len(spec.connections), one, spec.concurrency)
    except TimeoutError:
        outcomes = []
    opened = [o for o in outcomes if not isinstance(o, BaseException)]
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    channel.send(
        "done",
        {
            "opened": len(opened),
            "failed": len(spec.connections) - len(opened),
            "first_failure": repr(failures[0]) if failures else None,
            "last_ns": max((at for _, at in opened), default=0),
            "cpu_s": time.process_time() - cpu_before,
        },
    )
    await channel.get("exit")
