"""The client's end of the UDP quick-message channel (docs/protocol.md 6): one `UdpLink` per logged-in connection.

A link binds its address with HELLO (a new seq per attempt, at 0, 0.25, 0.75, 1.75 and 3.75 s; no answer within 5 s
means UDP is blocked, and it tries again every `rebind_seconds`) and acknowledges the answer, which validates its
address (docs/protocol.md 6.5: until then the server sends it at most three times what it received from it), measures
the round trip and clock offset with PING/PONG, sends QUICKs with retransmission and hands those with no ACK after
5 s back to the client for the TCP fallback, and acknowledges every QUICK the server sends (again for a repeat,
delivering it once).

Every time of that schedule is in `UdpTimings` and every timer runs on one injected `Clock` (the loop by default):
the binding cycle and the retransmissions are one state machine woken by one `DeadlineTimer`, so a test drives it
with a `ManualClock` and sees the whole 5 s schedule at its exact instants without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgspec

from chat.protocol import datagrams as dg
from chat.timer import Clock, DeadlineTimer

logger = logging.getLogger(__name__)

REBIND_SECONDS = 15.0
PING_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class UdpTimings:
    """The client's UDP schedule, in seconds; the defaults are the protocol's (docs/protocol.md 6.4).

    `retransmit` times both the QUICK retransmissions and TCP fallback and the HELLO attempts of a binding cycle
    (one HELLO at once, one more at each `resend_after`, BLOCKED at `give_up_after`).
    """

    retransmit: dg.RetransmitSchedule = dg.PROTOCOL_SCHEDULE
    rebind_seconds: float = REBIND_SECONDS  # a new binding cycle this long after the last one ended
    ping_seconds: float = PING_SECONDS  # a PING this often while bound

    def scaled(self, factor: float) -> UdpTimings:
        """The same schedule with every time multiplied by `factor` (tests: `UdpTimings().scaled(0.05)`)."""
        return UdpTimings(self.retransmit.scaled(factor), self.rebind_seconds * factor, self.ping_seconds * factor)


PROTOCOL_TIMINGS = UdpTimings()


class UdpState(StrEnum):
    """What the link knows about the UDP path."""

    BINDING = "binding"  # HELLO sent, no answer yet
    OK = "ok"  # bound: quick messages go by UDP
    BLOCKED = "blocked"  # no answer: quick messages go over TCP
    OFF = "off"  # not used (the client was told so, or the link is closed)


@dataclass(eq=False)
class QuickJob:
    """One quick message of the client, from `quick()` until the server acknowledged or refused it."""

    cid: str
    to: str | None
    room: str | None
    text: str
    nudge: bool
    future: asyncio.Future[QuickReceipt]
    seq: int | None = None  # of the datagram that carried it on the current session, if any
    over_tcp: bool = False  # a TCP `quick` request for it is in flight (it survives reconnects by itself)


@dataclass(frozen=True, slots=True)
class QuickReceipt:
    """How a quick message was acknowledged: `via` "udp" (an ACK) or "tcp" (`quick_ok`, which names the qid)."""

    via: str
    qid: int | None = None


class UdpLink(asyncio.DatagramProtocol):
    """One session's UDP channel, from the client's side."""

    def __init__(
        self,
        sid: int,
        key_hex: str,
        *,
        on_quick: Callable[[dg.QuickDelivery], None],
        on_typing: Callable[[dg.TypingNotice], None],
        on_ack: Callable[[QuickJob, str | None], None],
        on_expired: Callable[[QuickJob], None],
        timings: UdpTimings | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.sid = sid
        self.key = bytes.fromhex(key_hex)
        self.state = UdpState.BINDING
        self.rtt: float | None = None
        self.clock_offset: float | None = None  # server clock minus ours, seconds
        self.transport: asyncio.DatagramTransport | None = None
        self.timings = timings or PROTOCOL_TIMINGS
        self._on_quick = on_quick
        self._on_typing = on_typing
        self._on_ack = on_ack
        self._on_expired = on_expired
        self._window = dg.ReplayWindow()
        self._next_seq = 1
        self._pending = dg.Retransmitter(self.timings.retransmit)
        self._hellos: set[int] = set()  # seqs of the HELLOs of the current binding cycle
        self._pings: dict[int, tuple[float, asyncio.Future[float]]] = {}
        self._bound = asyncio.Event()  # set while the current binding cycle has been answered
        self._settled = asyncio.Event()  # set once the first binding cycle ended, bound or blocked
        self._clock: Clock = clock or asyncio.get_running_loop()
        self._timer = DeadlineTimer(self._clock, self._tick)
        # the binding schedule: a cycle started at `_cycle_started` has sent `_hellos_sent` HELLOs; `_bind_due` is
        # when it next has something to do (a HELLO, giving up, a PING, a new cycle)
        self._cycle_started = 0.0
        self._hellos_sent = 0
        self._pings_sent = 0
        self._bind_due: float | None = None

    @classmethod
    async def open(cls, host: str, port: int, sid: int, key_hex: str, **options: Any) -> UdpLink:
        """A link connected to the server's UDP port, already trying to bind."""
        loop = asyncio.get_running_loop()
        _, link = await loop.create_datagram_endpoint(lambda: cls(sid, key_hex, **options), remote_addr=(host, port))
        link.start()
        return link

    def start(self) -> None:
        """Start the first binding cycle (its first HELLO goes now)."""
        self._start_cycle(self._clock.time())
        self._tick()

    # --- asyncio callbacks ---------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def error_received(self, exc: Exception) -> None:
        """ICMP port unreachable and the like: the path is broken for now, which the HELLO cycle will notice."""
        logger.debug("udp error: %s", exc)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            datagram = dg.parse_datagram(data)
        except dg.DatagramError:
            return
        if datagram.sid != self.sid or not dg.verify(datagram, self.key):
            return
        seen = self._window.check(datagram.seq)
        if seen is dg.Seen.TOO_OLD:
            return
        if seen is dg.Seen.DUPLICATE:
            if datagram.kind is dg.Kind.QUICK:
                self._send(dg.Kind.ACK, dg.AckBody(seq=datagram.seq))  # our ACK was lost: again, deliver nothing
            return
        self._window.mark(datagram.seq)
        try:
            self._handle(datagram)
        except (msgspec.ValidationError, msgspec.DecodeError):
            logger.debug("undecodable %s body from the server", datagram.kind.name)

    def _handle(self, datagram: dg.Datagram) -> None:
        kind = datagram.kind
        if kind is dg.Kind.QUICK:
            delivery = dg.decode_body(datagram.body, dg.QuickDelivery)
            self._send(dg.Kind.ACK, dg.AckBody(seq=datagram.seq))
            self._on_quick(delivery)
        elif kind is dg.Kind.ACK:
            ack = dg.decode_body(datagram.body, dg.AckBody)
            pending = self._pending.ack(ack.seq)
            if pending is not None:
                self._on_ack(pending.context, ack.code)
        elif kind is dg.Kind.HELLO:
            hello = dg.decode_body(datagram.body, dg.HelloBody)
            if hello.seq in self._hellos:
                # docs/protocol.md 6.5: acknowledging the answer shows the server this address receives what it sends
                self._send(dg.Kind.ACK, dg.AckBody(seq=datagram.seq))
                self._bound_now(self._clock.time())
        elif kind is dg.Kind.PONG:
            pong = dg.decode_body(datagram.body, dg.PongBody)
            ping = self._pings.pop(pong.t, None) if isinstance(pong.t, int) else None
            if ping is not None:
                sent, answered = ping
                self.rtt = self._clock.time() - sent
                self.clock_offset = pong.server_ts / 1000 - (time.time() - self.rtt / 2)
                if not answered.done():
                    answered.set_result(self.rtt)
        elif kind is dg.Kind.TYPING:
            self._on_typing(dg.decode_body(datagram.body, dg.TypingNotice))

    # --- binding and keepalive -----------------------------------------------------------------------------------

    def _start_cycle(self, now: float) -> None:
        self._bound.clear()
        self._hellos.clear()
        self._cycle_started = now
        self._hellos_sent = 0
        self._bind_due = now

    def _bound_now(self, now: float) -> None:
        """A HELLO of this cycle was answered: PING now and every `ping_seconds`, a new cycle `rebind_seconds` on."""
        self._hellos.clear()
        self.state = UdpState.OK
        self._bound.set()
        self._settled.set()
        self._cycle_started = now
        self._hellos_sent = -1  # no cycle under way
        self._pings_sent = 0
        self._bind_due = now
        self._tick()

    def _run_bind_schedule(self, now: float) -> None:
        """Do what the binding schedule has due by `now`, and set `_bind_due` to its next step."""
        retransmit = self.timings.retransmit
        while self._bind_due is not None and self._bind_due <= now:
            started = self._cycle_started
            if self._hellos_sent == -1:  # bound: PING now and then, then a new cycle to re-bind
                if self._pings_sent * self.timings.ping_seconds < self.timings.rebind_seconds:
                    self._pings_sent += 1
                    self._ping()
                    self._bind_due = started + self._pings_sent * self.timings.ping_seconds
                    if self._bind_due >= started + self.timings.rebind_seconds:
                        self._bind_due = started + self.timings.rebind_seconds
                else:
                    self._start_cycle(started + self.timings.rebind_seconds)
            elif self._hellos_sent <= len(retransmit.resend_after):  # HELLO at 0 and at each resend_after
                self._hellos.add(self._send(dg.Kind.HELLO, None))
                self._hellos_sent += 1
                self._bind_due = retransmit.due(started, self._hellos_sent)
            else:  # no answer by give_up_after
                if self.state is not UdpState.BLOCKED:
                    logger.info("no answer to UDP HELLO: quick messages go over TCP")
                self.state = UdpState.BLOCKED
                self._settled.set()
                self._start_cycle(started + retransmit.give_up_after + self.timings.rebind_seconds)

    def _ping(self) -> asyncio.Future[float]:
        """Send a PING; the future gets the round-trip time when its PONG comes (unanswered ones are forgotten)."""
        now = self._clock.time()
        for old_stamp, (sent, unanswered) in list(self._pings.items()):
            if now - sent > 30:
                unanswered.cancel()
                del self._pings[old_stamp]
        answered: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        stamp = time.monotonic_ns()
        self._pings[stamp] = (now, answered)
        self._send(dg.Kind.PING, dg.PingBody(t=stamp))
        return answered

    async def ping(self) -> float:
        """The round-trip time of one PING/PONG now, in seconds (wrap it in a timeout: UDP may lose it)."""
        return await asyncio.shield(self._ping())

    # --- sending -------------------------------------------------------------------------------------------------

    def _send(self, kind: dg.Kind, body: dg.Body | None) -> int:
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        raw = b"" if body is None else dg.encode_body(body)
        data = dg.encode_datagram(kind, self.sid, seq, raw, self.key)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data)
        return seq

    def try_send_quick(self, job: QuickJob) -> bool:
        """Send a quick message by UDP if the link is bound and it fits in a datagram; False: use TCP."""
        if self.state is not UdpState.OK or self.transport is None:
            return False
        body = dg.encode_body(dg.QuickRequest(to=job.to, room=job.room, text=job.text, nudge=job.nudge, cid=job.cid))
        if len(body) > dg.MAX_BODY:
            return False
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        data = dg.encode_datagram(dg.Kind.QUICK, self.sid, seq, body, self.key)
        self.transport.sendto(data)
        job.seq = seq
        self._timer.arm(self._pending.add(seq, data, self._clock.time(), job).next_due)
        return True

    def send_typing(self, to: str | None, room: str | None) -> bool:
        """Best effort: a TYPING datagram if bound."""
        if self.state is not UdpState.OK:
            return False
        self._send(dg.Kind.TYPING, dg.TypingRequest(to=to, room=room))
        return True

    def _tick(self) -> None:
        """Whatever is due now: binding steps, QUICK retransmissions, TCP fallbacks; then wake at the next one."""
        if self.state is UdpState.OFF:
            return
        now = self._clock.time()
        self._run_bind_schedule(now)
        resend, expired = self._pending.poll(now)
        if self.transport is not None and not self.transport.is_closing():
            for pending in resend:
                self.transport.sendto(pending.data)
        for pending in expired:
            self._on_expired(pending.context)
        for deadline in (self._pending.next_deadline(), self._bind_due):
            if deadline is not None:
                self._timer.arm(deadline)

    async def wait_bound(self) -> None:
        """Return once the server has answered a HELLO (the link is OK)."""
        await self._bound.wait()

    async def wait_settled(self) -> None:
        """Return once the first binding cycle has ended: bound (OK) or found BLOCKED."""
        await self._settled.wait()

    def abandon(self) -> list[QuickJob]:
        """Stop waiting for every ACK; return the jobs that were waiting."""
        return [pending.context for pending in self._pending.clear()]

    def close(self) -> None:
        self.state = UdpState.OFF
        self._timer.cancel()
        self._settled.set()
        if self.transport is not None:
            self.transport.close()
