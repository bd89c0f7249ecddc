"""`QuickRouter` as a state machine (hypothesis.stateful): quick messages by UDP and TCP, ACKs, duplicates, the
retransmission timer and its TCP fallback, sessions leaving and coming back, in any order, on an injected clock.

The router is the real one on a real `LocalEngine`; sessions are `MemoryPeer`s (tests/corefakes.py) and the
datagrams it sends are captured. The model holds what docs/protocol.md 6 promises, checked after every step:
- every quick message the router accepts (a fresh `qid`) reaches its recipient exactly once while the recipient stays
  connected: by a UDP copy the recipient ACKed, or else by one TCP copy once 5 s passed without an ACK; never a copy
  (UDP or TCP) after the recipient's ACK, never a UDP copy after the TCP one, at most 5 UDP copies, each resend at or
  after its step of the 0.25 / 0.75 / 1.75 / 3.75 s schedule, all the same datagram;
- a duplicate (the same QUICK datagram again, the TCP `quick` with the seq of one that came by UDP, a late UDP copy
  of one that came by TCP, a `cid` used within 10 minutes) delivers nothing new and is answered as the original was;
- every QUICK datagram a client sends gets exactly one ACK, to the session's bound address only; a refused one also
  an `error` over TCP with its seq; nothing is ever sent to an address no HELLO bound, or to a session that left;
- state stays bounded: what awaits an ACK is exactly the copies in flight, the timer is armed while anything does,
  and the router forgets a session that left.

The timer is modelled as `chat/timer.py` runs it: `poll` at the earliest deadline asked for (by `wake_at` or by the
previous `poll`), never late, so "5 s without an ACK" means exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from corefakes import logged_in, peer_of
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from chat.config import Config, config_with
from chat.core.quick import CID_MEMORY_SECONDS, QuickRouter
from chat.core.session import Session
from chat.engine.local import LocalEngine
from chat.protocol import datagrams as dg
from chat.protocol import messages as wire

NICKS = ("alice", "bob", "carol")
IDENTITIES = {nick: number for number, nick in enumerate(NICKS, 1)}
CIDS = (None, None, "c1", "c2")
TICKS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, CID_MEMORY_SECONDS)
SPOOFER = ("10.66.6.6", 6666)
EPSILON = 1e-9


@dataclass
class Copy:
    """What a recipient got of one quick message, in order: ("udp", seq, t), ("ack", seq, t), ("tcp", 0, t)."""

    recipient: Client
    sent_at: float
    steps: list[tuple[str, int, float]] = field(default_factory=list)

    def of(self, what: str) -> list[tuple[str, int, float]]:
        return [step for step in self.steps if step[0] == what]

    @property
    def delivered(self) -> bool:
        return bool(self.of("ack") or self.of("tcp"))

    @property
    def in_flight(self) -> bool:
        return bool(self.of("udp")) and not self.delivered


@dataclass(eq=False)
class Client:
    """One logged-in session's client end: its address, its seq counter, what the router sent it."""

    nick: str
    session: Session
    address: tuple[str, int]
    bound: bool = False
    next_seq: int = 1
    gone: bool = False
    read: int = 0  # TCP events of the session already looked at
    acks: list[dg.AckBody] = field(default_factory=list)
    hellos: list[int] = field(default_factory=list)
    hello_answers: list[int] = field(default_factory=list)  # seqs of the router's HELLO answers
    errors: list[wire.Error] = field(default_factory=list)
    oks: list[wire.QuickOk] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"<{self.nick} at {self.address}{' (gone)' if self.gone else ''}>"

    def seq(self) -> int:
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        return seq


@dataclass(frozen=True)
class SentQuick:
    """A QUICK datagram a client sent (or, for a TCP `quick` with a seq, would have sent), to send again."""

    sender: Client
    seq: int
    data: bytes
    code: str | None
    qid: int | None


class QuickRouterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = LocalEngine(lambda: None)
        limits = {  # rates and the retransmission budget are tested elsewhere (tests/test_quick_router.py)
            "udp_per_second": 100_000.0,
            "udp_burst": 100_000,
            "udp_retransmits_per_second": 100_000.0,
            "udp_retransmit_burst": 100_000,
        }
        self.router = QuickRouter(self.engine, config_with(Config(), limits=limits))
        self.router.send_datagram = lambda data, address: self.wire.append((data, address))
        self.router.wake_at = self._arm
        self.wire: list[tuple[bytes, Any]] = []
        self.now = 0.0
        self.timer: float | None = None
        self.clients: dict[str, Client] = {}
        self.everyone: list[Client] = []
        self.logins = 0
        self.copies: dict[int, Copy] = {}  # qid -> what its recipient got
        self.fresh: list[int] = []  # qids first seen in the current step
        self.sent: list[SentQuick] = []
        self.cids: dict[tuple[str, str], tuple[int, float]] = {}  # (nick, cid) -> (qid, until)
        self.ever_logged_in: set[str] = set()
        self.texts = 0

    # --- the router's outputs, read after every step -------------------------------------------------------------

    def _arm(self, deadline: float) -> None:
        if self.timer is None or deadline < self.timer:
            self.timer = deadline

    def _client_at(self, address: Any) -> Client:
        matches = [c for c in self.clients.values() if c.address == address and c.bound]
        assert matches, f"a datagram went to {address}, which no HELLO of a connected session bound"
        return matches[0]

    def _collect(self) -> None:
        wire_out, self.wire = self.wire, []
        for data, address in wire_out:
            client = self._client_at(address)
            datagram = dg.parse_datagram(data)
            udp = client.session.udp
            assert udp is not None and datagram.sid == udp.sid and dg.verify(datagram, udp.key), "the recipient's sid"
            if datagram.kind is dg.Kind.QUICK:
                delivery = dg.decode_body(datagram.body, dg.QuickDelivery)
                self._got(client, delivery.qid, "udp", datagram.seq)
            elif datagram.kind is dg.Kind.ACK:
                client.acks.append(dg.decode_body(datagram.body, dg.AckBody))
            elif datagram.kind is dg.Kind.HELLO:
                client.hellos.append(dg.decode_body(datagram.body, dg.HelloBody).seq)
                client.hello_answers.append(datagram.seq)
        for client in self.everyone:
            events = peer_of(client.session).events
            new, client.read = events[client.read :], len(events)
            assert not (new and client.gone), f"{client.nick} got {new} after it left"
            for event in new:
                if isinstance(event, wire.QuickMessage):
                    self._got(client, event.qid, "tcp", 0)
                elif isinstance(event, wire.Error):
                    client.errors.append(event)
                elif isinstance(event, wire.QuickOk):
                    client.oks.append(event)

    def _got(self, client: Client, qid: int, path: str, seq: int) -> None:
        copy = self.copies.get(qid)
        if copy is None:
            assert not self.copies or qid > max(self.copies), "qids increase"
            copy = self.copies[qid] = Copy(client, self.now)
            self.fresh.append(qid)
        assert copy.recipient is client, f"qid {qid} for {copy.recipient.nick} went to {client.nick}"
        assert not copy.of("ack"), f"a {path} copy of {qid} after the recipient's ACK"
        assert not copy.of("tcp"), f"a {path} copy of {qid} after its TCP copy"
        udp = copy.of("udp")
        if path == "udp" and udp:
            assert seq == udp[0][1], "a resend is the same datagram"
            step = dg.RETRANSMIT_AFTER[len(udp) - 1] if len(udp) <= len(dg.RETRANSMIT_AFTER) else None
            assert step is not None, f"more than {len(dg.RETRANSMIT_AFTER) + 1} UDP copies of {qid}"
            assert self.now >= copy.sent_at + step - EPSILON, f"resend {len(udp)} of {qid} before its step"
        if path == "tcp" and udp:
            assert self.now >= copy.sent_at + dg.GIVE_UP_AFTER - EPSILON, "the TCP fallback before 5 s"
        copy.steps.append((path, seq, self.now))

    def _step_done(self) -> list[int]:
        self._collect()
        fresh, self.fresh = self.fresh, []
        return fresh

    # --- the expected outcome of a quick message --------------------------------------------------------------

    def _expect(self, sender: Client, to: str, cid: str | None) -> tuple[str | None, int | None]:
        """(refusal code or None, the qid a duplicate cid maps to) as `QuickRouter.deliver` decides them."""
        if cid is not None:
            known = self.cids.get((sender.nick, cid))
            if known is not None and known[1] > self.now:
                return None, known[0]
        if to in self.clients:
            return None, None
        return ("nick_offline" if to in self.ever_logged_in else "no_such_nick"), None

    def _check_delivery(
        self, sender: Client, to: str, cid: str | None, code: str | None, known: int | None
    ) -> int | None:
        fresh = self._step_done()
        if code is not None or known is not None:
            assert fresh == [], f"a refused or duplicate quick message delivered {fresh}"
            return known
        assert len(fresh) == 1, f"an accepted quick message gave the qids {fresh}"
        [qid] = fresh
        recipient = self.clients[to]
        [(path, _, _)] = self.copies[qid].steps
        assert path == ("udp" if recipient.bound else "tcp"), f"first copy by {path}, bound={recipient.bound}"
        if cid is not None:
            self.cids[(sender.nick, cid)] = (qid, self.now + CID_MEMORY_SECONDS)
        return qid

    def _text(self) -> str:
        self.texts += 1
        return f"m{self.texts}"

    # --- rules -------------------------------------------------------------------------------------------------

    @initialize()
    def two_sessions(self) -> None:
        self._login("alice")
        self._login("bob")

    def _login(self, nick: str) -> None:
        self.logins += 1
        session = logged_in(self.engine, nick, IDENTITIES[nick], self.now)
        session.udp = self.router.attach(session, self.now)
        client = Client(nick, session, (f"10.0.0.{IDENTITIES[nick]}", 4000 + self.logins))
        self.clients[nick] = client
        self.everyone.append(client)
        self.ever_logged_in.add(nick)

    @rule(nick=st.sampled_from(NICKS))
    def login(self, nick: str) -> None:
        if nick in self.clients:
            return
        self._login(nick)
        assert self._step_done() == []

    @rule(nick=st.sampled_from(NICKS), move=st.booleans())
    def hello(self, nick: str, move: bool) -> None:
        """Bind (or, moving, re-bind from a new port) the session's address."""
        client = self.clients.get(nick)
        if client is None:
            return
        if move:
            self.logins += 1
            client.address = (client.address[0], 4000 + self.logins)
        udp = client.session.udp
        assert udp is not None
        seq = client.seq()
        client.bound = True
        self.router.datagram_received(
            dg.encode_datagram(dg.Kind.HELLO, udp.sid, seq, b"", udp.key), client.address, self.now
        )
        assert self._step_done() == []
        assert client.hellos[-1:] == [seq] and udp.address == client.address
        # docs/protocol.md 6.5: the client acknowledges the answer, which validates its address
        ack = dg.encode_body(dg.AckBody(seq=client.hello_answers[-1]))
        self.router.datagram_received(
            dg.encode_datagram(dg.Kind.ACK, udp.sid, client.seq(), ack, udp.key), client.address, self.now
        )
        assert self._step_done() == [] and udp.is_validated

    @precondition(lambda self: any(c.bound for c in self.clients.values()))
    @rule(data=st.data(), to=st.sampled_from(NICKS), cid=st.sampled_from(CIDS))
    def quick_by_udp(self, data: st.DataObject, to: str, cid: str | None) -> None:
        sender = data.draw(st.sampled_from([c for c in self.clients.values() if c.bound]))
        udp = sender.session.udp
        assert udp is not None
        code, known = self._expect(sender, to, cid)
        seq = sender.seq()
        raw = dg.encode_body(dg.QuickRequest(to=to, text=self._text(), cid=cid))
        datagram = dg.encode_datagram(dg.Kind.QUICK, udp.sid, seq, raw, udp.key)
        acks, errors = len(sender.acks), len(sender.errors)
        self.router.datagram_received(datagram, sender.address, self.now)
        qid = self._check_delivery(sender, to, cid, code, known)
        assert sender.acks[acks:] == [dg.AckBody(seq=seq, code=code)], "one ACK per QUICK, with the refusal's code"
        assert [(e.code, e.seq) for e in sender.errors[errors:]] == ([(code, seq)] if code else [])
        self.sent.append(SentQuick(sender, seq, datagram, code, qid))

    @precondition(lambda self: bool(self.clients))
    @rule(data=st.data(), to=st.sampled_from(NICKS), cid=st.sampled_from(CIDS), lost=st.booleans())
    def quick_by_tcp(self, data: st.DataObject, to: str, cid: str | None, lost: bool) -> None:
        """A TCP `quick`: plain, or (`lost`) the fallback of a QUICK datagram that never arrived, with its seq."""
        sender = data.draw(st.sampled_from(list(self.clients.values())))
        udp = sender.session.udp
        assert udp is not None
        code, known = self._expect(sender, to, cid)
        text = self._text()
        seq = sender.seq() if lost else None
        oks, errors = len(sender.oks), len(sender.errors)
        request = wire.QuickSend(to=to, text=text, cid=cid, seq=seq, ref=self.texts)
        self.router.quick_request(sender.session, request, self.now)
        qid = self._check_delivery(sender, to, cid, code, known)
        if code is None:
            assert [(ok.qid, ok.ref) for ok in sender.oks[oks:]] == [(qid, self.texts)]
        else:
            assert [(e.code, e.seq, e.ref) for e in sender.errors[errors:]] == [(code, seq, self.texts)]
        if seq is not None and code is None:  # its late UDP copy, for `duplicate`
            raw = dg.encode_body(dg.QuickRequest(to=to, text=text, cid=cid))
            self.sent.append(
                SentQuick(sender, seq, dg.encode_datagram(dg.Kind.QUICK, udp.sid, seq, raw, udp.key), None, qid)
            )

    def _sent_by_connected(self) -> list[SentQuick]:
        return [s for s in self.sent if not s.sender.gone and s.sender.bound]

    @precondition(lambda self: bool(self._sent_by_connected()))
    @rule(data=st.data(), spoofed=st.booleans())
    def duplicate(self, data: st.DataObject, spoofed: bool) -> None:
        """A QUICK datagram again (its ACK was lost, or a late copy of a TCP `quick`), maybe from a forged source."""
        sent = data.draw(st.sampled_from(self._sent_by_connected()))
        acks = len(sent.sender.acks)
        self.router.datagram_received(sent.data, SPOOFER if spoofed else sent.sender.address, self.now)
        assert self._step_done() == [], "a duplicate delivered again"
        assert sent.sender.acks[acks:] == [dg.AckBody(seq=sent.seq, code=sent.code)], "acked again, as the original"

    @precondition(lambda self: any(c.in_flight and not c.recipient.gone for c in self.copies.values()))
    @rule(data=st.data())
    def recipient_acks(self, data: st.DataObject) -> None:
        qid = data.draw(st.sampled_from([q for q, c in self.copies.items() if c.in_flight and not c.recipient.gone]))
        copy = self.copies[qid]
        client = copy.recipient
        udp = client.session.udp
        assert udp is not None
        seq = copy.of("udp")[0][1]
        body = dg.encode_body(dg.AckBody(seq=seq))
        self.router.datagram_received(
            dg.encode_datagram(dg.Kind.ACK, udp.sid, client.seq(), body, udp.key), client.address, self.now
        )
        copy.steps.append(("ack", seq, self.now))
        assert self._step_done() == []

    def _delivered_by_udp(self) -> list[Copy]:
        return [c for c in self.copies.values() if c.of("udp") and c.delivered and not c.recipient.gone]

    @precondition(lambda self: bool(self._delivered_by_udp()))
    @rule(data=st.data())
    def late_ack(self, data: st.DataObject) -> None:
        """An ACK repeated, or one that comes after the TCP fallback: changes nothing."""
        copy = data.draw(st.sampled_from(self._delivered_by_udp()))
        client = copy.recipient
        udp = client.session.udp
        assert udp is not None
        body = dg.encode_body(dg.AckBody(seq=copy.of("udp")[0][1]))
        self.router.datagram_received(
            dg.encode_datagram(dg.Kind.ACK, udp.sid, client.seq(), body, udp.key), client.address, self.now
        )
        assert self._step_done() == []

    @rule(seconds=st.sampled_from(TICKS))
    def tick(self, seconds: float) -> None:
        """Time passes; the timer fires at each deadline on the way, as `DeadlineTimer` does."""
        until = self.now + seconds
        fired = 0
        while self.timer is not None and self.timer <= until:
            self.now, self.timer = max(self.now, self.timer), None
            next_deadline = self.router.poll(self.now)
            if next_deadline is not None:
                self._arm(next_deadline)
            assert self._step_done() == [], "the timer delivered a new quick message"
            fired += 1
            assert fired < 1000
        self.now = until

    @precondition(lambda self: bool(self.clients))
    @rule(nick=st.sampled_from(NICKS))
    def leave(self, nick: str) -> None:
        """The connection ends: what the service's `connection_lost` does to the engine and the router."""
        client = self.clients.pop(nick, None)
        if client is None:
            return
        assert self.engine.unregister(client.session)
        assert client.session.udp is not None
        self.router.detach(client.session.udp)
        client.gone = True
        assert self._step_done() == []

    # --- invariants --------------------------------------------------------------------------------------------

    @invariant()
    def delivered_exactly_once_within_5_seconds(self) -> None:
        for qid, copy in self.copies.items():
            assert len(copy.of("tcp")) <= 1 and len(copy.of("ack")) <= 1
            if not copy.recipient.gone and self.now >= copy.sent_at + dg.GIVE_UP_AFTER:
                assert copy.delivered, f"qid {qid} sent at {copy.sent_at} is neither acked nor over TCP at {self.now}"

    @invariant()
    def state_is_bounded(self) -> None:
        assert set(self.router.peers) == {c.session.udp.sid for c in self.clients.values() if c.session.udp}
        for client in self.clients.values():
            udp = client.session.udp
            assert udp is not None
            in_flight = [c for c in self.copies.values() if c.recipient is client and c.in_flight]
            assert len(udp.pending) == len(in_flight), "the retransmitter holds exactly what is in flight"
            assert len(udp.qids) <= dg.WINDOW and len(udp.window.ack_codes) <= dg.WINDOW
        if any(client.session.udp and client.session.udp.pending for client in self.clients.values()):
            assert self.timer is not None, "something awaits an ACK and no timer is armed"


QuickRouterMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_quick_router_state_machine = QuickRouterMachine.TestCase
