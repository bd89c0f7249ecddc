"""UDP quick-message datagrams (docs/protocol.md 6): layout, HMAC tag, bodies.

    +--------+---------+------------+----------+-------------------+-----------+
    | ver u8 | kind u8 | sid u64    | seq u32  | body: JSON or none| tag 16 B  |
    +--------+---------+------------+----------+-------------------+-----------+

The tag is the first 16 bytes of HMAC-SHA256, keyed by the session's 32-byte key, over every byte before it. A
datagram is at most 1,200 bytes. Parsing never raises on hostile input except `DatagramError`, so a receiver can drop
and count whatever does not parse, with no reply.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeVar

import msgspec

from chat.protocol.messages import QuickMessage

VERSION = 1
PREFIX = struct.Struct("!BBQI")
TAG_BYTES = 16
MAX_DATAGRAM = 1200
MAX_BODY = MAX_DATAGRAM - PREFIX.size - TAG_BYTES
MAX_SEQ = 2**32 - 1
MAX_QUICK_CHARS = 500


class Kind(IntEnum):
    """Datagram kinds."""

    HELLO = 1
    QUICK = 2
    ACK = 3
    PING = 4
    PONG = 5
    TYPING = 6


class DatagramError(Exception):
    """A datagram that cannot be accepted: bad size, layout, version, kind or tag."""


@dataclass(frozen=True, slots=True)
class Datagram:
    """A parsed datagram; `verified` is False until `verify` checked its tag with the session key."""

    kind: Kind
    sid: int
    seq: int
    body: bytes
    signed: bytes
    tag: bytes


def sign(key: bytes, data: bytes) -> bytes:
    """The 16-byte tag of `data`."""
    return hmac.new(key, data, hashlib.sha256).digest()[:TAG_BYTES]


def encode_datagram(kind: Kind, sid: int, seq: int, body: bytes, key: bytes) -> bytes:
    """A signed datagram; DatagramError if it would exceed 1,200 bytes."""
    if len(body) > MAX_BODY:
        raise DatagramError(f"body of {len(body)} bytes does not fit in a datagram (at most {MAX_BODY})")
    signed = PREFIX.pack(VERSION, kind, sid, seq) + body
    return signed + sign(key, signed)


def parse_datagram(data: bytes) -> Datagram:
    """The fields of a datagram whose layout is right; the tag is not checked here (see `verify`)."""
    if not PREFIX.size + TAG_BYTES <= len(data) <= MAX_DATAGRAM:
        raise DatagramError(f"datagram of {len(data)} bytes")
    version, kind, sid, seq = PREFIX.unpack_from(data)
    if version != VERSION:
        raise DatagramError(f"version {version}")
    try:
        kind = Kind(kind)
    except ValueError:
        raise DatagramError(f"kind {kind}") from None
    signed, tag = data[:-TAG_BYTES], data[-TAG_BYTES:]
    return Datagram(kind, sid, seq, signed[PREFIX.size :], signed, tag)


def verify(datagram: Datagram, key: bytes) -> bool:
    """True if the tag is right for `key` (constant-time comparison)."""
    return hmac.compare_digest(datagram.tag, sign(key, datagram.signed))


# --- bodies ----------------------------------------------------------------------------------------------------


class Body(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Base of datagram bodies: JSON objects, UTF-8, non-ASCII written as is."""


class QuickRequest(Body, kw_only=True):
    """A client's quick message: to one nick or to a room."""

    to: str | None = None
    room: str | None = None
    text: str
    nudge: bool = False
    cid: str | None = None


class QuickDelivery(Body, kw_only=True, rename={"sender": "from"}):
    """A quick message delivered to a recipient."""

    qid: int
    sender: str
    to: str | None = None
    room: str | None = None
    text: str
    nudge: bool = False
    ts: int


def quick_frame(delivery: QuickDelivery) -> QuickMessage:
    """The TCP `quick` frame of the same quick message (the fallback path carries the same fields)."""
    return QuickMessage(
        qid=delivery.qid,
        sender=delivery.sender,
        to=delivery.to,
        room=delivery.room,
        text=delivery.text,
        nudge=delivery.nudge,
        ts=delivery.ts,
    )


class AckBody(Body, kw_only=True):
    """Acknowledges the datagram `seq`; `code` says why a QUICK was refused."""

    seq: int
    code: str | None = None


class PingBody(Body, kw_only=True):
    t: Any = None


class PongBody(Body, kw_only=True):
    t: Any = None
    server_ts: int


class TypingRequest(Body, kw_only=True):
    to: str | None = None
    room: str | None = None


class TypingNotice(Body, kw_only=True, rename={"sender": "from"}):
    sender: str
    to: str | None = None
    room: str | None = None


class HelloBody(Body, kw_only=True):
    """The server's answer to a HELLO names the HELLO's `seq`."""

    seq: int


BodyT = TypeVar("BodyT", bound=Body)
_encoder = msgspec.json.Encoder()
_decoders: dict[type[Body], msgspec.json.Decoder[Any]] = {}


def encode_body(body: Body) -> bytes:
    return _encoder.encode(body)


def decode_body(raw: bytes, body_type: type[BodyT]) -> BodyT:
    """A typed body; msgspec.ValidationError / DecodeError on anything else."""
    decoder = _decoders.get(body_type)
    if decoder is None:
        decoder = _decoders[body_type] = msgspec.json.Decoder(body_type)
    try:
        body: BodyT = decoder.decode(raw)
    except RecursionError:  # msgspec gives up on nesting near 1,000 levels, which a 1,170-byte body can reach
        raise msgspec.DecodeError("JSON body nests too deep") from None
    return body


# --- replay window ----------------------------------------------------------------------------------------------

WINDOW = 1024  # docs/protocol.md 8: at least the last 1,024 seq values of each session


class Seen(IntEnum):
    """What a replay window says of a `seq`."""

    NEW = 0
    DUPLICATE = 1
    TOO_OLD = 2


class ReplayWindow:
    """Which of the last `WINDOW` sequence numbers of one sender have been seen (a sliding bitmap)."""

    __slots__ = ("_bits", "highest")

    def __init__(self) -> None:
        self.highest = 0
        self._bits = 0  # bit i set: highest - i seen

    def check(self, seq: int) -> Seen:
        if seq > self.highest:
            return Seen.NEW
        offset = self.highest - seq
        if offset >= WINDOW or seq == 0:
            return Seen.TOO_OLD
        return Seen.DUPLICATE if self._bits >> offset & 1 else Seen.NEW

    def mark(self, seq: int) -> None:
        """Record `seq` as seen (call only after `check` said NEW)."""
        if seq > self.highest:
            shift = seq - self.highest
            self._bits = ((self._bits << shift) | 1) & ((1 << WINDOW) - 1) if shift < WINDOW else 1
            self.highest = seq
        else:
            self._bits |= 1 << (self.highest - seq)


# --- retransmission ---------------------------------------------------------------------------------------------

RETRANSMIT_AFTER = (0.25, 0.75, 1.75, 3.75)  # seconds after the first send (docs/protocol.md 6.4)
GIVE_UP_AFTER = 5.0  # then the message goes over TCP


@dataclass(frozen=True, slots=True)
class RetransmitSchedule:
    """When a datagram with no ACK is sent again, and when it is given up on, in seconds after its first send.

    The protocol's schedule is the default (docs/protocol.md 6.4); tests pass a shorter one to see a fallback in a
    fraction of a second over real sockets.
    """

    resend_after: tuple[float, ...] = RETRANSMIT_AFTER
    give_up_after: float = GIVE_UP_AFTER

    def __post_init__(self) -> None:
        times = (*self.resend_after, self.give_up_after)
        if any(later <= earlier for earlier, later in itertools.pairwise(times)) or times[0] <= 0:
            raise ValueError(f"a retransmission schedule must be positive and increasing, not {times}")

    def scaled(self, factor: float) -> RetransmitSchedule:
        """The same schedule with every time multiplied by `factor`."""
        return RetransmitSchedule(tuple(t * factor for t in self.resend_after), self.give_up_after * factor)

    def due(self, first_sent: float, sends: int) -> float:
        """When a datagram first sent at `first_sent` and sent `sends` times is next due (resend or give up)."""
        if sends <= len(self.resend_after):
            return first_sent + self.resend_after[sends - 1]
        return first_sent + self.give_up_after


PROTOCOL_SCHEDULE = RetransmitSchedule()


@dataclass(slots=True)
class Pending:
    """One datagram waiting for its ACK; `next_due` is when it is next sent again or given up on."""

    seq: int
    data: bytes
    first_sent: float
    next_due: float
    sends: int = 1
    context: Any = None


class Retransmitter:
    """Datagrams awaiting an ACK: which to send again now, and which to give up on (to send over TCP)."""

    def __init__(self, schedule: RetransmitSchedule = PROTOCOL_SCHEDULE) -> None:
        self.schedule = schedule
        self._pending: dict[int, Pending] = {}

    def add(self, seq: int, data: bytes, now: float, context: Any = None) -> Pending:
        """Track a datagram just sent for the first time."""
        pending = self._pending[seq] = Pending(seq, data, now, self.schedule.due(now, 1), context=context)
        return pending

    def ack(self, seq: int) -> Pending | None:
        """The datagram `seq` was acknowledged; returns it if it was pending."""
        return self._pending.pop(seq, None)

    def poll(self, now: float) -> tuple[list[Pending], list[Pending]]:
        """(to send again now, given up on now); given-up ones are forgotten."""
        resend: list[Pending] = []
        expired: list[Pending] = []
        for pending in list(self._pending.values()):
            if now < pending.next_due:
                continue
            if pending.sends > len(self.schedule.resend_after):
                expired.append(self._pending.pop(pending.seq))
            else:
                pending.sends += 1
                pending.next_due = self.schedule.due(pending.first_sent, pending.sends)
                resend.append(pending)
        return resend, expired

    def next_deadline(self) -> float | None:
        """When `poll` next has something to do."""
        return min((p.next_due for p in self._pending.values()), default=None)

    def clear(self) -> list[Pending]:
        """Forget everything, returning what was pending."""
        pending, self._pending = list(self._pending.values()), {}
        return pending

    def __len__(self) -> int:
        return len(self._pending)
