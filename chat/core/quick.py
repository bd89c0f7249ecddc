"""Quick messages (docs/protocol.md 6 and 8, UDP): the datagram core of the server, free of sockets and of the clock.

Every datagram goes through the same gate, in this order, and anything that fails is dropped with no reply and
counted in `stats`: size and layout, the source address's token bucket (before any HMAC work), a known `sid`, the
tag, the session's token bucket, the replay window (a repeated QUICK is acknowledged again, to the bound address
only), and a bound address (only a HELLO newer than every seq seen binds one). Nothing is ever sent to an address
that no valid HELLO bound.

Address validation (docs/protocol.md 6.5, after RFC 9000 section 8): a HELLO is signed with the session key, which the
session's own holder knows, so its source address proves nothing; a holder could bind a victim's address and aim
every quick message of a room at it. So a newly bound address is unvalidated: the server sends it at most
`AMPLIFICATION_FACTOR` times the bytes it received from it since the binding (a QUICK that does not fit goes over
TCP, anything else is not sent). It becomes validated by an ACK from it naming a seq that only it could have seen:
binding it moves the server's send counter forward by a secret random step, so the first seq sent there is
unguessable, and an ACK of any seq sent there since proves the datagram arrived. The client library ACKs the HELLO
answer at once; an older client proves its address with its first ACK of a QUICK. An ACK from the bound address
of a seq never sent (a guess) turns UDP off for the session: only forgery does that. Invariants: `sent` never
exceeds three times `received` while `address` is not `validated`; the send counter only grows.

Retransmissions also spend a per-session token bucket (`[limits] udp_retransmits_per_second`, `udp_retransmit_burst`):
over it, a retransmission is skipped (the TCP fallback 5 s after the first send still comes).

A quick message accepted from either path (UDP QUICK or TCP `quick`) gets a `qid` and goes to each recipient: as a
QUICK datagram retransmitted 0.25, 0.75, 1.75 and 3.75 s after the first send until ACKed, or over TCP when the
recipient has no bound address, the datagram would not fit, or 5 s passed without an ACK. Quick messages are not
stored; a `cid` is remembered for 10 minutes per identity, and a `seq` per session, so neither path delivers one
twice.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import msgspec

from chat.config import Config
from chat.core.admission import address_key
from chat.core.limits import TokenBucket
from chat.protocol import datagrams as dg
from chat.protocol import messages as wire
from chat.protocol.auth import new_udp_credentials
from chat.protocol.errors import ErrorCode, ProtocolViolation
from chat.protocol.names import checked_nick, checked_room, checked_text, fold

if TYPE_CHECKING:
    from chat.core.session import Session
    from chat.engine.local import LocalEngine

logger = logging.getLogger(__name__)

Address = tuple[str | int, ...]
T = TypeVar("T")
CID_MEMORY_SECONDS = 600.0  # docs/protocol.md 6: a cid is delivered at most once in 10 minutes
MAX_ADDRESS_BUCKETS = 4096
TYPING_PER_SECOND = 1.0
TYPING_BURST = 3
AMPLIFICATION_FACTOR = 3  # docs/protocol.md 6.5: bytes sent to an unvalidated address per byte received from it
SEQ_JUMP = 2**24  # the send counter moves forward by 1..SEQ_JUMP when an unvalidated address is bound


def _remember(table: OrderedDict[int, T], key: int, value: T) -> None:
    """Keep `value` under `key` in a table of the last `WINDOW` seqs."""
    table[key] = value
    while len(table) > dg.WINDOW:
        table.popitem(last=False)


class UdpPeer:
    """One session's UDP channel: credentials, bound address, both seq counters, replay window, what awaits an ACK,
    and the address validation state (docs/protocol.md 6.5)."""

    __slots__ = (
        "address",
        "bucket",
        "key",
        "next_seq",
        "off",
        "pending",
        "proof_from",
        "qids",
        "received",
        "retransmits",
        "sent",
        "session",
        "sid",
        "skip_from",
        "typing",
        "validated",
        "window",
    )

    def __init__(
        self,
        session: Session,
        sid: int,
        key_hex: str,
        bucket: TokenBucket,
        typing: TokenBucket,
        schedule: dg.RetransmitSchedule = dg.PROTOCOL_SCHEDULE,
        retransmits: TokenBucket | None = None,
    ) -> None:
        self.session = session
        self.sid = sid
        self.key = bytes.fromhex(key_hex)
        self.address: Address | None = None
        self.window = ReplayWindowWithAcks()
        self.next_seq = 1
        self.pending = dg.Retransmitter(schedule)
        self.qids: OrderedDict[int, int] = OrderedDict()  # seq of a delivered QUICK -> its qid
        self.bucket = bucket
        self.typing = typing
        self.retransmits = retransmits
        # address validation: the last address that proved it receives; bytes received from and sent to the bound
        # address since it was bound (counted while it is not the validated one); the seqs sent only to it start at
        # `proof_from`, those in [skip_from, proof_from) were never sent at all
        self.validated: Address | None = None
        self.received = 0
        self.sent = 0
        self.proof_from = 1
        self.skip_from = 1
        self.off = False  # a forged ACK was seen: no more UDP for this session

    @property
    def key_hex(self) -> str:
        """The key as `welcome` carries it (kept as bytes only: one connection's memory counts)."""
        return self.key.hex()

    @property
    def is_validated(self) -> bool:
        """The bound address has shown that it receives what is sent to it."""
        return self.address is not None and self.address == self.validated

    def bind(self, address: Address) -> bool:
        """A HELLO newer than every seq seen came from `address`: bind it; False if the session cannot (its UDP
        is off, or its send counter has no room left for the secret step)."""
        if self.off:
            return False
        if address == self.address:
            return True  # the client's periodic re-HELLO: same address, same validation state
        self.address = address
        if address == self.validated:
            return True
        step = secrets.randbelow(SEQ_JUMP) + 1
        if self.next_seq + step + dg.WINDOW > dg.MAX_SEQ:
            self.address = None
            self.off = True
            return False
        self.skip_from, self.next_seq = self.next_seq, self.next_seq + step
        self.proof_from = self.next_seq
        self.received = self.sent = 0
        return True

    def acked(self, seq: int) -> bool | None:
        """An ACK of `seq` came from the bound address: True if it validates it, False if it names a seq never
        sent (a guess: UDP goes off), None if it proves nothing."""
        if self.is_validated:
            return None
        if self.proof_from <= seq < self.next_seq:
            self.validated = self.address
            return True
        if seq >= self.next_seq or self.skip_from <= seq < self.proof_from:
            self.address = None  # what waits for an ACK still falls back over TCP at 5 s
            self.off = True
            return False
        return None

    def affords(self, size: int) -> bool:
        """Whether `size` more bytes may go to the bound address now (always, once it is validated)."""
        return self.is_validated or self.sent + size <= AMPLIFICATION_FACTOR * self.received


class ReplayWindowWithAcks(dg.ReplayWindow):
    """A replay window that also remembers how each recent QUICK was acknowledged, to acknowledge a repeat alike."""

    __slots__ = ("ack_codes",)

    def __init__(self) -> None:
        super().__init__()
        self.ack_codes: OrderedDict[int, str | None] = OrderedDict()


@dataclass(frozen=True, slots=True)
class InFlight:
    """A quick message on its way to one recipient over UDP, kept for the TCP fallback."""

    recipient: Session
    delivery: dg.QuickDelivery


class QuickRouter:
    """Admits datagrams, answers HELLO/PING/ACK/TYPING, and delivers quick messages over UDP or TCP."""

    def __init__(
        self, engine: LocalEngine, config: Config, *, schedule: dg.RetransmitSchedule = dg.PROTOCOL_SCHEDULE
    ) -> None:
        self.engine = engine
        self.config = config
        # docs/protocol.md 6.4's retransmission and TCP fallback times; a test may set a shorter one (it applies to the
        # sessions attached after it is set)
        self.schedule = schedule
        self.peers: dict[int, UdpPeer] = {}
        self.stats: Counter[str] = Counter()
        self._address_buckets: OrderedDict[str, TokenBucket] = OrderedDict()  # by address_key of the source
        self.send_datagram: Callable[[bytes, Address], None] = lambda data, address: None
        self.wake_at: Callable[[float], None] = lambda deadline: None

    # --- sessions ----------------------------------------------------------------------------------------------

    def attach(self, session: Session, now: float) -> UdpPeer:
        """A new UDP channel for a session that just logged in (new sid and key every welcome)."""
        sid, key = new_udp_credentials()
        while sid in self.peers:
            sid, key = new_udp_credentials()
        limits = self.config.limits
        peer = UdpPeer(
            session,
            sid,
            key,
            TokenBucket(limits.udp_per_second, limits.udp_burst, now),
            TokenBucket(TYPING_PER_SECOND, TYPING_BURST, now),
            self.schedule,
            TokenBucket(limits.udp_retransmits_per_second, limits.udp_retransmit_burst, now)
            if limits.udp_retransmit_burst
            else None,
        )
        self.peers[sid] = peer
        return peer

    def detach(self, peer: UdpPeer) -> None:
        """Forget a session's channel; what was on its way to it is dropped with it."""
        if self.peers.get(peer.sid) is peer:
            del self.peers[peer.sid]
        peer.pending.clear()

    # --- the gate ----------------------------------------------------------------------------------------------

    def datagram_received(self, data: bytes, address: Address, now: float) -> None:
        """Admit one datagram (see the module doc) and act on it."""
        self.stats["received"] += 1
        if not self._address_bucket(address, now).take(now):
            self.stats["dropped_rate_address"] += 1
            return
        try:
            datagram = dg.parse_datagram(data)
        except dg.DatagramError:
            self.stats["dropped_layout"] += 1
            return
        peer = self.peers.get(datagram.sid)
        if peer is None:
            self.stats["dropped_unknown_sid"] += 1
            return
        if not dg.verify(datagram, peer.key):
            self.stats["dropped_bad_tag"] += 1
            return
        if not peer.bucket.take(now):
            self.stats["dropped_rate_session"] += 1
            return
        seen = peer.window.check(datagram.seq)
        if datagram.kind is dg.Kind.HELLO:
            if datagram.seq <= peer.window.highest:  # only a HELLO newer than every seq seen binds
                self.stats["dropped_stale_hello"] += 1
                return
            peer.window.mark(datagram.seq)
            if not peer.bind(address):
                self.stats["dropped_udp_off"] += 1
                return
            peer.received += len(data)
            self._send(peer, dg.Kind.HELLO, dg.HelloBody(seq=datagram.seq))
            return
        if peer.address is None:
            self.stats["dropped_unbound"] += 1
            return
        from_bound = address == peer.address
        if from_bound:
            peer.received += len(data)
        if seen is not dg.Seen.NEW:
            if seen is dg.Seen.DUPLICATE and datagram.kind is dg.Kind.QUICK and datagram.seq in peer.window.ack_codes:
                self.stats["quick_reacked"] += 1  # the sender's ACK was lost: acknowledge again, deliver nothing
                self._ack(peer, datagram.seq, peer.window.ack_codes[datagram.seq])
            else:
                self.stats["dropped_replay"] += 1
            return
        peer.window.mark(datagram.seq)
        handler = self._handlers.get(datagram.kind)
        if handler is None:
            self.stats["dropped_kind"] += 1
            return
        try:
            handler(self, peer, datagram, from_bound, now)
        except Exception:  # total: no datagram, however signed, gets an exception into the loop
            self.stats["handler_failed"] += 1
            if self.stats["handler_failed"] == 1 or self.stats["handler_failed"] % 1000 == 0:
                logger.exception("a %s datagram could not be handled (%d so far)", datagram.kind.name,
                                 self.stats["handler_failed"])  # fmt: skip

    def _address_bucket(self, address: Address, now: float) -> TokenBucket:
        """The rate bucket of the datagram's source host: by address (an IPv6 /64), not port, so changing ports
        does not start a fresh bucket."""
        key = address_key(str(address[0])) if isinstance(address, tuple) else str(address)
        bucket = self._address_buckets.get(key)
        if bucket is None:
            limits = self.config.limits
            bucket = self._address_buckets[key] = TokenBucket(limits.udp_per_second, limits.udp_burst, now)
            if len(self._address_buckets) > MAX_ADDRESS_BUCKETS:
                self._address_buckets.popitem(last=False)
        else:
            self._address_buckets.move_to_end(key)
        return bucket

    # --- kinds -------------------------------------------------------------------------------------------------

    def _on_quick(self, peer: UdpPeer, datagram: dg.Datagram, from_bound: bool, now: float) -> None:
        try:
            body = dg.decode_body(datagram.body, dg.QuickRequest)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._refuse(peer, datagram.seq, ProtocolViolation(ErrorCode.BAD_REQUEST, f"QUICK body: {exc}"))
            return
        try:
            qid = self.deliver(peer.session, body, now)
        except ProtocolViolation as exc:
            self._refuse(peer, datagram.seq, exc)
            return
        _remember(peer.qids, datagram.seq, qid)
        _remember(peer.window.ack_codes, datagram.seq, None)
        self._ack(peer, datagram.seq, None)

    def _refuse(self, peer: UdpPeer, seq: int, exc: ProtocolViolation) -> None:
        """ACK with the code, and the same error over TCP with the datagram's seq (docs/protocol.md 8, UDP)."""
        self.stats["quick_refused"] += 1
        _remember(peer.window.ack_codes, seq, exc.code.value)
        self._ack(peer, seq, exc.code.value)
        peer.session.send(wire.Error(code=exc.code.value, message=exc.message, seq=seq))

    def _on_ack(self, peer: UdpPeer, datagram: dg.Datagram, from_bound: bool, now: float) -> None:
        try:
            body = dg.decode_body(datagram.body, dg.AckBody)
        except (msgspec.ValidationError, msgspec.DecodeError):
            self.stats["dropped_body"] += 1
            return
        if from_bound:
            proof = peer.acked(body.seq)
            if proof is True:
                self.stats["address_validated"] += 1
            elif proof is False:
                self.stats["forged_ack"] += 1
                logger.info("%r: an ACK of a seq never sent, from %r: UDP is off for this session", peer.session,
                            peer.session.address)  # fmt: skip
                return
        if peer.pending.ack(body.seq) is not None:
            self.stats["quick_acked_by_recipient"] += 1

    def _on_ping(self, peer: UdpPeer, datagram: dg.Datagram, from_bound: bool, now: float) -> None:
        try:
            body = dg.decode_body(datagram.body, dg.PingBody) if datagram.body else dg.PingBody()
        except (msgspec.ValidationError, msgspec.DecodeError):
            self.stats["dropped_body"] += 1
            return
        self._send(peer, dg.Kind.PONG, dg.PongBody(t=body.t, server_ts=time.time_ns() // 1_000_000))

    def _on_typing(self, peer: UdpPeer, datagram: dg.Datagram, from_bound: bool, now: float) -> None:
        """Best effort, never acknowledged, never over TCP: forwarded to recipients with a bound address only."""
        if not peer.typing.take(now):
            self.stats["dropped_typing_rate"] += 1
            return
        try:
            body = dg.decode_body(datagram.body, dg.TypingRequest)
            recipients = self._recipients(peer.session, body.to, body.room)
        except (msgspec.ValidationError, msgspec.DecodeError, ProtocolViolation):
            self.stats["dropped_body"] += 1
            return
        session = peer.session
        if body.room is not None:  # _recipients checked it is a room the sender is in
            room: str | None = session.rooms[fold(checked_room(body.room))].name
            to = None
        else:
            room, to = None, recipients[0].nick
        notice = dg.TypingNotice(sender=session.nick, to=to, room=room)
        for recipient in recipients:
            if recipient.udp is not None and recipient.udp.address is not None:
                self._send(recipient.udp, dg.Kind.TYPING, notice)

    _handlers: dict[dg.Kind, Callable[[QuickRouter, UdpPeer, dg.Datagram, bool, float], None]] = {
        dg.Kind.QUICK: _on_quick,
        dg.Kind.ACK: _on_ack,
        dg.Kind.PING: _on_ping,
        dg.Kind.TYPING: _on_typing,
    }

    # --- delivery ----------------------------------------------------------------------------------------------

    def quick_request(self, session: Session, request: wire.QuickSend, now: float) -> None:
        """The TCP `quick` request: deliver (or find the earlier delivery of its seq) and answer `quick_ok`."""
        peer = session.udp
        if request.seq is not None and peer is not None:
            earlier = peer.qids.get(request.seq)
            if earlier is not None:  # it did arrive by UDP: docs/protocol.md 8, not delivered again
                session.send(wire.QuickOk(qid=earlier, ref=request.ref))
                return
        body = dg.QuickRequest(
            to=request.to, room=request.room, text=request.text, nudge=request.nudge, cid=request.cid
        )
        try:
            qid = self.deliver(session, body, now)
        except ProtocolViolation as exc:
            session.send(wire.Error(code=exc.code.value, message=exc.message, ref=request.ref, seq=request.seq))
            return
        if request.seq is not None and peer is not None:
            _remember(peer.qids, request.seq, qid)
            if peer.window.check(request.seq) is dg.Seen.NEW:
                peer.window.mark(request.seq)  # a late UDP copy of it is a duplicate now
                _remember(peer.window.ack_codes, request.seq, None)
        session.send(wire.QuickOk(qid=qid, ref=request.ref))

    def deliver(self, sender: Session, body: dg.QuickRequest, now: float) -> int:
        """Validate a quick message, send it to its recipients, return its qid (ProtocolViolation if refused)."""
        if (body.to is None) == (body.room is None):
            raise ProtocolViolation(ErrorCode.BAD_REQUEST, "a quick message takes exactly one of `to` and `room`")
        if body.cid is not None and not 1 <= len(body.cid) <= 64:
            raise ProtocolViolation(ErrorCode.BAD_REQUEST, "cid must be 1 to 64 characters")
        text = checked_text(body.text, dg.MAX_QUICK_CHARS)
        if body.cid is not None:
            known = self.engine.quick_cid(sender.identity, body.cid, now)
            if known is not None:
                self.stats["quick_duplicate_cid"] += 1
                return known
        recipients = self._recipients(sender, body.to, body.room)
        qid = self.engine.next_qid()
        room = sender.rooms[fold(body.room)].name if body.room is not None else None
        delivery = dg.QuickDelivery(
            qid=qid,
            sender=sender.nick,
            to=None if room else recipients[0].nick,
            room=room,
            text=text,
            nudge=body.nudge,
            ts=time.time_ns() // 1_000_000,
        )
        for recipient in recipients:
            self._deliver_to(recipient, delivery, now)
        if body.cid is not None:
            self.engine.remember_quick_cid(sender.identity, body.cid, qid, now + CID_MEMORY_SECONDS, now)
        self.stats["quick_delivered"] += 1
        return qid

    def _recipients(self, sender: Session, to: str | None, room_name: str | None) -> list[Session]:
        if (to is None) == (room_name is None):
            raise ProtocolViolation(ErrorCode.BAD_REQUEST, "exactly one of `to` and `room`")
        if to is not None:
            key = fold(checked_nick(to))
            online = self.engine.by_nick(key)
            if online is not None:
                return [online]
            if self.engine.nick_holder(key) is None:
                raise ProtocolViolation(ErrorCode.NO_SUCH_NICK, f"nobody ever had the nick {to!r}")
            raise ProtocolViolation(ErrorCode.NICK_OFFLINE, f"{to!r} is not connected; quick messages are not stored")
        assert room_name is not None  # by the check above
        name = checked_room(room_name)
        room = sender.rooms.get(fold(name))
        if room is None:
            if self.engine.rooms.get(fold(name)) is None:
                raise ProtocolViolation(ErrorCode.NO_SUCH_ROOM, f"no room {name!r}")
            raise ProtocolViolation(ErrorCode.NOT_IN_ROOM, f"not in room {name!r}")
        return [member for member in room if member is not sender]

    def _deliver_to(self, recipient: Session, delivery: dg.QuickDelivery, now: float) -> None:
        peer = recipient.udp
        if peer is not None and peer.address is not None:
            try:
                seq, data = self._datagram_within_budget(peer, dg.Kind.QUICK, delivery)
            except dg.DatagramError:
                pass  # too big for a datagram (long CJK text), or over an unvalidated address's budget: TCP
            else:
                self._transmit(peer, data)
                peer.pending.add(seq, data, now, InFlight(recipient, delivery))
                self.wake_at(peer.pending.schedule.due(now, 1))
                return
        self._over_tcp(recipient, delivery)

    def _over_tcp(self, recipient: Session, delivery: dg.QuickDelivery) -> None:
        self.stats["quick_over_tcp"] += 1
        recipient.send(dg.quick_frame(delivery))

    def poll(self, now: float) -> float | None:
        """Retransmit what is due, fall back to TCP for what waited 5 s; return when to poll next."""
        deadline: float | None = None
        for peer in list(self.peers.values()):
            if not peer.pending:
                continue
            resend, expired = peer.pending.poll(now)
            for pending in resend:
                if peer.address is None:
                    continue
                if peer.retransmits is not None and not peer.retransmits.take(now):
                    self.stats["dropped_retransmit_budget"] += 1
                    continue
                if not peer.affords(len(pending.data)):
                    self.stats["dropped_amplification"] += 1
                    continue
                self.stats["quick_retransmitted"] += 1
                self._transmit(peer, pending.data)
            for pending in expired:
                in_flight: InFlight = pending.context
                self._over_tcp(in_flight.recipient, in_flight.delivery)
            next_due = peer.pending.next_deadline()
            if next_due is not None and (deadline is None or next_due < deadline):
                deadline = next_due
        return deadline

    # --- helpers -----------------------------------------------------------------------------------------------

    def _send(self, peer: UdpPeer, kind: dg.Kind, body: dg.Body | None) -> None:
        """Send one datagram to the bound address, unless it is over an unvalidated address's budget."""
        try:
            _, data = self._datagram_within_budget(peer, kind, body)
        except dg.DatagramError:
            return
        self._transmit(peer, data)

    def _datagram_within_budget(self, peer: UdpPeer, kind: dg.Kind, body: dg.Body | None) -> tuple[int, bytes]:
        """The next datagram to `peer`, or DatagramError if it would not fit the amplification budget (checked
        before a seq is spent) or a datagram."""
        raw = b"" if body is None else dg.encode_body(body)
        if not peer.affords(dg.PREFIX.size + len(raw) + dg.TAG_BYTES):
            self.stats["dropped_amplification"] += 1
            raise dg.DatagramError("over the amplification budget of an unvalidated address")
        if peer.next_seq > dg.MAX_SEQ:
            raise dg.DatagramError("no seq left in this session")
        data = dg.encode_datagram(kind, peer.sid, peer.next_seq, raw, peer.key)
        seq, peer.next_seq = peer.next_seq, peer.next_seq + 1
        return seq, data

    def _transmit(self, peer: UdpPeer, data: bytes) -> None:
        """Hand a datagram for the bound address to the socket, counting it against the budget."""
        assert peer.address is not None
        peer.sent += len(data)
        self.send_datagram(data, peer.address)

    def _ack(self, peer: UdpPeer, seq: int, code: str | None) -> None:
        self._send(peer, dg.Kind.ACK, dg.AckBody(seq=seq, code=code))
