"""Raw-wire clients for scripts/bench: fast enough that the load generator is not what a benchmark measures.

A client of the library decodes every frame into a typed event, which tops out far below the server's fan-out rate,
so the generator speaks the wire itself (docs/protocol.md 1, 2): a handshake decodes frames one at a time (hello,
login, welcome, join, joined); after it, a receiver only counts.

The text of every benchmark message carries, at fixed places, the sender's number, the message's sequence number
and the time it was due to be sent, in microseconds after the run's start (100 characters in all):

    SSS:QQQQQQQQQ:TTTTTTTTTTTTT:........

Counting (`Deliveries.feed`), with the invariants that make it exact:

- A read that holds whole frames of one length L (a flood: one sender, texts of one length) is checked as columns:
  `data[c:end:L]` is byte c of every frame, cut out in C. If the 8 prefix bytes and the text key (with the sender's
  number) are the same in every frame, every frame starts where the previous one said it ends: the framing is
  proven. If the seq digits are the ones expected next, the frames are exactly seqs n, n+1, ... n+k-1: nothing
  lost, duplicated or reordered among them. Forty-odd slices check a few hundred frames.
- Anything else (other lengths, other senders, a gap, a duplicate, a non-message frame) is walked frame by frame
  through the `!II` prefixes, and each seq is accounted one by one: `next_seq` is the contiguous prefix received
  per sender, `ahead` the seqs received above a gap. The column check runs only while `ahead` is empty, so it can
  never take a duplicate for a new message.
- A text key can only be a key: inside a JSON string every `"` is escaped, so `"text":"` never occurs in a value.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import struct
import time
from array import array
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

PREFIX = struct.Struct("!II")
PREFIX_SIZE = PREFIX.size
TEXT_CHARS = 100
TEXT_KEY = b'"text":"'
ERROR_TYPE = b'"type":"error"'
SEQ_DIGITS = 9
# below this many frames in one read, walking them is cheaper than the column check's fixed cost
COLUMN_CHECK_MIN_FRAMES = 12
COLUMN_CHECK_MIN_BYTES = COLUMN_CHECK_MIN_FRAMES * 150
SOURCE_ADDRESS_SHARE = 50  # connections per loopback source address

# offsets in the text: SSS:QQQQQQQQQ:TTTTTTTTTTTTT:
SENDER_AT, SEQ_AT, DUE_AT, FIELDS_END = 0, 4, 14, 28

T = TypeVar("T")
Header = dict[str, Any]


class WireError(Exception):
    """The server refused a step of the handshake (an `error` frame) or closed the connection."""


def frame(header: Header) -> bytes:
    """One frame with a JSON header and no payload."""
    raw = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode()
    return PREFIX.pack(len(raw), 0) + raw


def source_address(index: int, share: int = SOURCE_ADDRESS_SHARE) -> str:
    """The loopback address connection `index` binds to: `share` connections per address, 127.1.0.1 upwards."""
    slot = index // share
    return f"127.1.{slot // 250}.{slot % 250 + 1}"


def flood_low_water(window: int) -> int:
    """The bytes a flood receiver waits for before it reads: a quarter of its window, at most 16 KiB.

    A read costs a Python receiver a few microseconds whatever it holds, and a server that writes every frame on its
    own would make it read every frame on its own: the generator, not the server, would be measured. The kernel
    still takes every segment at once (the server's writes do not wait), and a quarter of the window always comes,
    since the sender keeps a whole window in flight. Latency runs never use it.
    """
    return min(16384, window * 190 // 4)


def login_proof(secret: str, nonce_hex: str, nick: str) -> str:
    """docs/protocol.md 2.2: HMAC-SHA256 keyed by the secret over the nonce bytes and the nick as sent."""
    return hmac.new(secret.encode(), bytes.fromhex(nonce_hex) + nick.encode(), hashlib.sha256).hexdigest()


class WireConnection(asyncio.Protocol):
    """One connection: frames decoded one at a time for the handshake, then every byte handed to `sink`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.sink: Callable[[bytes], None] | None = None
        self.lost: str | None = None  # why the connection ended, once it has
        self._buffer = bytearray()
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses

    def data_received(self, data: bytes) -> None:
        if self.sink is not None:
            self.sink(data)
            return
        self._buffer += data
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = f"connection error: {exc!r}" if exc else "closed by the server"
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def send(self, header: Header) -> None:
        assert self.transport is not None
        self.transport.write(frame(header))

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def next_frame(self) -> Header:
        """The next frame's header, decoded (payloads are skipped)."""
        while True:
            if len(self._buffer) >= PREFIX_SIZE:
                header_len, payload_len = PREFIX.unpack_from(self._buffer)
                end = PREFIX_SIZE + header_len + payload_len
                if len(self._buffer) >= end:
                    header = bytes(self._buffer[PREFIX_SIZE : PREFIX_SIZE + header_len])
                    del self._buffer[:end]
                    decoded: Header = json.loads(header)
                    return decoded
            if self.lost is not None:
                raise WireError(self.lost)
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    async def expect(self, kind: str, timeout: float) -> Header:
        """Read frames until one of type `kind` (others are skipped); WireError for an `error` frame."""
        async with asyncio.timeout(timeout):
            while True:
                header = await self.next_frame()
                if header.get("type") == kind:
                    return header
                if header.get("type") == "error":
                    raise WireError(f"{header.get('code')}: {header.get('message')}")

    def hand_over(self, sink: Callable[[bytes], None]) -> None:
        """From now on every byte goes to `sink`, starting with what is buffered and not yet decoded."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        self.sink = sink
        if rest:
            sink(rest)

    def discard(self) -> None:
        """Read and drop everything from now on (a sender's echoes, an idle client's presence frames)."""
        self.hand_over(_drop)

    def read_at_least(self, size: int) -> None:
        """Wake for a read only once `size` bytes wait (SO_RCVLOWAT): fewer, larger reads (see `flood_low_water`)."""
        assert self.transport is not None
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, max(1, size))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _drop(data: bytes) -> None:
    """A sink that keeps nothing."""


async def open_connection(port: int, source: str) -> WireConnection:
    """A TCP connection to the server on 127.0.0.1:port from the loopback address `source`."""
    loop = asyncio.get_running_loop()
    _, connection = await loop.create_connection(WireConnection, "127.0.0.1", port, local_addr=(source, 0))
    return connection


async def log_in(connection: WireConnection, nick: str, secret: str | None, timeout: float = 60.0) -> Header:
    """Read `hello`, send `login` (with the proof if the server asks for one), return `welcome`."""
    hello = await connection.expect("hello", timeout)
    login: Header = {"type": "login", "nick": nick, "protocol": 1}
    if hello.get("auth") == "hmac-sha256":
        login["proof"] = login_proof(secret or "", hello["nonce"], nick)
    connection.send(login)
    return await connection.expect("welcome", timeout)


async def join_room(connection: WireConnection, room: str, timeout: float = 60.0) -> Header:
    connection.send({"type": "join", "room": room})
    return await connection.expect("joined", timeout)


async def open_member(port: int, source: str, nick: str, room: str, secret: str | None) -> WireConnection:
    """A connection logged in as `nick` and joined to `room`."""
    connection = await open_connection(port, source)
    try:
        await log_in(connection, nick, secret)
        await join_room(connection, room)
    except BaseException:
        connection.close()
        raise
    return connection


async def bounded(count: int, make: Callable[[int], Awaitable[T]], concurrency: int) -> list[T | BaseException]:
    """`make(0)` ... `make(count - 1)` with at most `concurrency` running at once; failures are returned."""
    slots = asyncio.Semaphore(concurrency)

    async def one(index: int) -> T | BaseException:
        async with slots:
            try:
                return await make(index)
            except Exception as exc:
                return exc

    return list(await asyncio.gather(*(one(index) for index in range(count))))


class SayEncoder:
    """`say` frames of one sender into one room, from a template in which only the digits change."""

    def __init__(self, room: str, sender: int) -> None:
        head = json.dumps({"type": "say", "room": room}, separators=(",", ":")).encode()[:-1]
        header_len = len(head) + len(',"text":"') + TEXT_CHARS + len('"}')
        self._lead = PREFIX.pack(header_len, 0) + head + b',"text":"' + b"%03d:" % sender
        self._tail = b":" + b"." * (TEXT_CHARS - FIELDS_END) + b'"}'

    def batch(self, first_seq: int, count: int, due_us: int) -> bytes:
        """`count` frames from seq `first_seq` on, all due at `due_us`."""
        lead, middle = self._lead, b":%013d" % due_us + self._tail
        return b"".join([lead + b"%09d" % seq + middle for seq in range(first_seq, first_seq + count)])

    def one(self, seq: int, due_us: int) -> bytes:
        return self._lead + b"%09d:%013d" % (seq, due_us) + self._tail


class SeqDigits:
    """The 9-digit seqs 0, 1, 2, ... as one string, grown on demand: the expected columns of a flood's frames."""

    def __init__(self, initial: int = 1 << 16) -> None:
        self.count = 0
        self.text = b""
        self.grow(initial)

    def grow(self, count: int) -> None:
        if count > self.count:
            upto = max(count, 2 * self.count)
            self.text += b"".join(b"%09d" % seq for seq in range(self.count, upto))
            self.count = upto


class Deliveries:
    """What one receiver got: per sender the contiguous prefix of seqs, the seqs above a gap, duplicates, reorders,
    and (for the latency case) the delay of each delivery after its due time. See the module doc."""

    __slots__ = (
        "ahead",
        "delivered",
        "digits",
        "dup",
        "errors",
        "first_ns",
        "foreign",
        "last_error",
        "last_ns",
        "latencies",
        "mark",
        "max_seen",
        "next_seq",
        "reads",
        "reordered",
        "rest",
        "t0_ns",
        "watermark",
    )

    def __init__(self, senders: int, *, digits: SeqDigits | None = None, latency: bool = False) -> None:
        self.next_seq = [0] * senders
        self.max_seen = [-1] * senders
        self.ahead: list[set[int]] = [set() for _ in range(senders)]
        self.delivered = 0
        self.reads = 0
        self.dup = 0
        self.reordered = 0
        self.errors = 0
        self.foreign = 0  # frames with a text this benchmark did not write
        self.last_error = b""
        self.first_ns = 0
        self.last_ns = 0
        self.t0_ns = 0
        self.rest = b""
        self.digits = digits  # the column check, for a flood from sender 0
        self.mark = TEXT_KEY + b"000:"
        self.latencies: array[int] | None = array("q") if latency else None
        self.watermark: Watermark | None = None

    def feed(self, data: bytes) -> None:
        """Account for the bytes of one read."""
        now = time.monotonic_ns()
        self.reads += 1
        buffer = self.rest + data if self.rest else data
        size = len(buffer)
        delivered, first_before = self.delivered, self.next_seq[0]
        position = 0
        if self.digits is not None and size >= COLUMN_CHECK_MIN_BYTES and not self.ahead[0]:
            position = self._columns(buffer, size)
        if size - position >= PREFIX_SIZE:
            position = self._walk(buffer, position, size, now)
        self.rest = buffer[position:] if position < size else b""
        if self.delivered != delivered:
            if not self.first_ns:
                self.first_ns = now
            self.last_ns = now
            if self.watermark is not None and self.next_seq[0] != first_before:
                self.watermark.advanced(first_before)

    def _columns(self, buffer: bytes, size: int) -> int:
        """Whole frames of the first frame's length, checked as columns; the bytes accounted for (0: not a run).

        Equal prefixes at every multiple of the first frame's length prove the framing (each frame starts where the
        one before ends, and says it has that length); the text key at the first frame's offset in every frame, and
        the seq digits expected next right after it, prove the seqs.
        """
        header_len, payload_len = PREFIX.unpack_from(buffer)
        length: int = PREFIX_SIZE + header_len + payload_len
        count = size // length
        if count < COLUMN_CHECK_MIN_FRAMES:
            return 0
        at = buffer.find(self.mark, PREFIX_SIZE, length)
        if at < 0:
            return 0
        end = count * length
        for column in (*range(PREFIX_SIZE), *range(at, at + len(self.mark))):
            if buffer[column:end:length] != buffer[column : column + 1] * count:
                return 0
        first = self.next_seq[0]
        digits = self.digits
        assert digits is not None
        digits.grow(first + count)
        seq_at = at + len(self.mark)
        expected_from, expected_to = first * SEQ_DIGITS, (first + count) * SEQ_DIGITS
        for column in range(SEQ_DIGITS):
            if buffer[seq_at + column : end : length] != digits.text[expected_from + column : expected_to : SEQ_DIGITS]:
                return 0
        self.next_seq[0] = first + count
        self.max_seen[0] = first + count - 1
        self.delivered += count
        return end

    def _walk(self, buffer: bytes, position: int, size: int, now: int) -> int:
        """Frame by frame from `position`; returns where the first incomplete frame starts."""
        unpack_from, find = PREFIX.unpack_from, buffer.find
        latencies = self.latencies
        now_us = (now - self.t0_ns) // 1000
        key = len(TEXT_KEY)
        while size - position >= PREFIX_SIZE:
            header_len, payload_len = unpack_from(buffer, position)
            end = position + PREFIX_SIZE + header_len + payload_len
            if end > size:
                break
            at = find(TEXT_KEY, position + PREFIX_SIZE, end)
            if at >= 0:
                text = at + key
                try:
                    sender = int(buffer[text + SENDER_AT : text + SENDER_AT + 3])
                    seq = int(buffer[text + SEQ_AT : text + SEQ_AT + SEQ_DIGITS])
                    if self._record(sender, seq) and latencies is not None:
                        latencies.append(now_us - int(buffer[text + DUE_AT : text + DUE_AT + 13]))
                except (ValueError, IndexError):
                    self.foreign += 1
            elif find(ERROR_TYPE, position + PREFIX_SIZE, end) >= 0:
                self.errors += 1
                self.last_error = buffer[position + PREFIX_SIZE : end][:300]
            position = end
        return position

    def _record(self, sender: int, seq: int) -> bool:
        """Account for one message; True if it is new."""
        expected = self.next_seq[sender]
        ahead = self.ahead[sender]
        if seq == expected:
            expected += 1
            while ahead and expected in ahead:
                ahead.remove(expected)
                expected += 1
            self.next_seq[sender] = expected
        elif seq < expected or seq in ahead:
            self.dup += 1
            return False
        else:
            ahead.add(seq)
        if seq < self.max_seen[sender]:
            self.reordered += 1
        else:
            self.max_seen[sender] = seq
        self.delivered += 1
        return True

    def lost(self, expected_per_sender: Sequence[int]) -> int:
        """Messages expected and never received."""
        got = sum(
            min(nxt, want) + sum(1 for seq in ahead if seq < want)
            for nxt, ahead, want in zip(self.next_seq, self.ahead, expected_per_sender, strict=True)
        )
        return sum(expected_per_sender) - got


class Watermark:
    """The flood window: the lowest next-expected seq of sender 0 over every receiver, in this process and (through
    shared slots, one per process) in the others.

    Only a receiver at the low mark can move it: each one that leaves the mark says so, and when the last one has,
    the mark is found again (one pass over the receivers per step of the mark, not per read).
    """

    def __init__(self, receivers: Sequence[Deliveries], slots: Any, slot: int) -> None:
        self.receivers = receivers
        self.slots = slots  # a shared array of int64, one per generator process, or None
        self.slot = slot
        self.local_low = 0
        self.at_low = 0
        self._waiter: asyncio.Future[None] | None = None
        for receiver in receivers:
            receiver.watermark = self
        self._find_low()

    def advanced(self, previous: int) -> None:
        """A receiver's next-expected seq moved on from `previous`."""
        if previous == self.local_low:
            self.at_low -= 1
            if self.at_low <= 0:
                self._find_low()

    def _find_low(self) -> None:
        if not self.receivers:
            self.local_low, self.at_low = 1 << 62, 1
        else:
            lows = [receiver.next_seq[0] for receiver in self.receivers]
            self.local_low = min(lows)
            self.at_low = lows.count(self.local_low)
        if self.slots is not None:
            self.slots[self.slot] = self.local_low
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def low(self) -> int:
        """The lowest next-expected seq over every receiver of every process."""
        if self.slots is None:
            return self.local_low
        others = (int(self.slots[i]) for i in range(len(self.slots)) if i != self.slot)
        return min(self.local_low, *others)

    async def wait(self, timeout: float) -> None:
        """Until the local low mark moves, or `timeout` (other processes' marks are only polled)."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self._waiter, timeout)
        except TimeoutError:
            pass
        finally:
            self._waiter = None


def latency_histogram(values: Sequence[int]) -> dict[int, int]:
    """Counts of latencies in microseconds; above 1 ms rounded to three significant digits (0.1 % steps)."""
    exact: dict[int, int] = {}
    for value, count in _counts(values).items():
        key = value if value < 1000 else _round3(value)
        exact[key] = exact.get(key, 0) + count
    return exact


def _counts(values: Sequence[int]) -> dict[int, int]:
    from collections import Counter

    return dict(Counter(values))


def _round3(value: int) -> int:
    scale: int = 10 ** (len(str(value)) - 3)
    return (value // scale) * scale


def histogram_percentiles(histogram: dict[int, int], fractions: Sequence[float]) -> list[int | None]:
    """The value below which each fraction of the counted values lies (nearest rank)."""
    total = sum(histogram.values())
    if not total:
        return [None for _ in fractions]
    ordered = sorted(histogram.items())
    results: list[int | None] = []
    for fraction in fractions:
        rank = max(1, round(fraction * total))
        seen = 0
        for value, count in ordered:
            seen += count
            if seen >= rank:
                results.append(value)
                break
    return results
