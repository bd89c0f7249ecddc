"""`QuickRouter` driven directly: datagrams in with the time as an argument, `poll(now)` for the timer, no sockets.

The sessions' connections are `MemoryPeer`s (tests/corefakes.py) that record the TCP events the router sends; the
datagrams it sends are captured from `send_datagram`. So the retransmission schedule and the 5 s TCP fallback are
tested at exact instants, including the instants just before each deadline.
"""

from __future__ import annotations

from typing import Any

import pytest
from corefakes import logged_in, peer_of

from chat.config import Config, config_with
from chat.core.quick import AMPLIFICATION_FACTOR, CID_MEMORY_SECONDS, QuickRouter, UdpPeer
from chat.core.session import Session
from chat.engine.local import LocalEngine
from chat.protocol import datagrams as dg
from chat.protocol import messages as wire

ALICE, BOB = ("10.0.0.1", 4001), ("10.0.0.2", 4002)


class Wire:
    """The router with everything it sends over UDP captured, and a client end per session to sign datagrams."""

    def __init__(self, config: Config | None = None) -> None:
        self.engine = LocalEngine(lambda: None)
        self.router = QuickRouter(self.engine, config or Config())
        self.sent: list[tuple[dg.Datagram, Any]] = []
        self.wakes: list[float] = []
        self.router.send_datagram = lambda data, address: self.sent.append((dg.parse_datagram(data), address))
        self.router.wake_at = self.wakes.append
        self.seqs: dict[int, int] = {}

    def session(
        self, nick: str, identity: int, address: Any = None, now: float = 0.0, *, validate: bool = True
    ) -> Session:
        """A logged-in session; with `address`, bound there by a HELLO whose answer it ACKs (docs/protocol.md 6.5)
        unless `validate` is False (an older client)."""
        session = logged_in(self.engine, nick, identity, now)
        session.udp = self.router.attach(session, now)
        if address is not None:
            self.send(session, dg.Kind.HELLO, None, address, now)
            [answer] = self.take(address, dg.Kind.HELLO)
            if validate:
                self.send(session, dg.Kind.ACK, dg.AckBody(seq=answer.seq), address, now)
                assert udp(session).is_validated
        return session

    def send(
        self, session: Session, kind: dg.Kind, body: dg.Body | None, address: Any, now: float, seq: int | None = None
    ) -> int:
        peer = session.udp
        assert peer is not None
        if seq is None:
            seq = self.seqs.get(peer.sid, 0) + 1
            self.seqs[peer.sid] = seq
        raw = b"" if body is None else dg.encode_body(body)
        self.router.datagram_received(dg.encode_datagram(kind, peer.sid, seq, raw, peer.key), address, now)
        return seq

    def take(self, address: Any, kind: dg.Kind) -> list[dg.Datagram]:
        """The datagrams of this kind sent to `address` since the last take (others stay)."""
        taken = [d for d, a in self.sent if a == address and d.kind is kind]
        self.sent = [(d, a) for d, a in self.sent if not (a == address and d.kind is kind)]
        return taken


def udp(session: Session) -> UdpPeer:
    assert session.udp is not None
    return session.udp


def tcp_quicks(session: Session) -> list[wire.QuickMessage]:
    return peer_of(session).of_type(wire.QuickMessage)


# --- the gate ------------------------------------------------------------------------------------------------------


def test_nothing_is_sent_to_an_address_no_hello_bound() -> None:
    net = Wire()
    alice = net.session("alice", 1)
    net.send(alice, dg.Kind.PING, dg.PingBody(t=1), ALICE, 0.0)
    net.send(alice, dg.Kind.QUICK, dg.QuickRequest(to="alice", text="x"), ALICE, 0.0)
    assert net.sent == []
    assert net.router.stats["dropped_unbound"] == 2


def test_the_address_rate_is_checked_before_the_layout_and_any_hmac() -> None:
    limits = {"udp_per_second": 1.0, "udp_burst": 2}
    net = Wire(config_with(Config(), limits=limits))
    for _ in range(2):
        net.router.datagram_received(b"garbage", ALICE, 0.0)
    assert net.router.stats["dropped_layout"] == 2
    net.router.datagram_received(b"garbage", ALICE, 0.0)
    assert net.router.stats["dropped_rate_address"] == 1 and net.router.stats["dropped_layout"] == 2
    net.router.datagram_received(b"garbage", BOB, 0.0)  # per address
    assert net.router.stats["dropped_layout"] == 3
    net.router.datagram_received(b"garbage", ALICE, 1.0)  # a token back after a second
    assert net.router.stats["dropped_layout"] == 4


def test_a_new_source_port_does_not_bring_a_fresh_address_bucket() -> None:
    net = Wire(config_with(Config(), limits={"udp_per_second": 1.0, "udp_burst": 2}))
    for port in range(5000, 5010):  # rotating ports of one host
        net.router.datagram_received(b"garbage", ("10.0.0.1", port), 0.0)
    assert net.router.stats["dropped_layout"] == 2 and net.router.stats["dropped_rate_address"] == 8
    for host in ("2001:db8:0:1::1", "2001:db8:0:1::2", "2001:db8:0:1:ffff::3"):  # one IPv6 /64
        net.router.datagram_received(b"garbage", (host, 1, 0, 0), 0.0)
    assert net.router.stats["dropped_layout"] == 4, "an IPv6 /64 shares one bucket"


@pytest.mark.parametrize(
    "body",
    [dg.TypingRequest(), dg.TypingRequest(to="bob", room="lobby"), dg.TypingRequest(room="elsewhere")],
    ids=["neither", "both", "not-a-member"],
)
def test_a_signed_typing_with_a_bad_target_is_dropped_without_an_exception(body: dg.TypingRequest) -> None:
    net = Wire()
    alice = net.session("alice", 1, ALICE)
    bob = net.session("bob", 2, BOB)
    net.engine.rooms.add_member("lobby", "lobby", bob)
    net.send(alice, dg.Kind.TYPING, body, ALICE, 0.0)
    assert net.router.stats["dropped_body"] == 1 and net.router.stats["handler_failed"] == 0
    assert not net.take(BOB, dg.Kind.TYPING)


def test_a_handler_that_fails_is_counted_and_logged_and_the_router_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    net = Wire()
    alice = net.session("alice", 1, ALICE)

    def broken(router: QuickRouter, peer: UdpPeer, datagram: dg.Datagram, now: float) -> None:
        raise KeyError("a bug in a handler")

    net.router._handlers = {**QuickRouter._handlers, dg.Kind.PING: broken}
    for _ in range(3):
        net.send(alice, dg.Kind.PING, dg.PingBody(t=1), ALICE, 0.0)
    assert net.router.stats["handler_failed"] == 3
    assert len([r for r in caplog.records if "could not be handled" in r.getMessage()]) == 1, "logged once, not 3x"
    net.router._handlers = QuickRouter._handlers
    net.send(alice, dg.Kind.PING, dg.PingBody(t=1), ALICE, 0.0)
    assert net.take(ALICE, dg.Kind.PONG)


def test_a_bad_tag_is_dropped_before_the_session_rate_is_spent() -> None:
    net = Wire(config_with(Config(), limits={"udp_per_second": 1.0, "udp_burst": 1}))
    alice = net.session("alice", 1)
    peer = udp(alice)
    forged = dg.encode_datagram(dg.Kind.HELLO, peer.sid, 1, b"", b"\0" * 32)
    net.router.datagram_received(forged, ("10.9.9.9", 1), 0.0)
    unknown = dg.encode_datagram(dg.Kind.HELLO, peer.sid + 1, 1, b"", peer.key)
    net.router.datagram_received(unknown, ("10.9.9.8", 1), 0.0)
    assert net.router.stats["dropped_bad_tag"] == 1 and net.router.stats["dropped_unknown_sid"] == 1
    net.send(alice, dg.Kind.HELLO, None, ALICE, 0.0)  # the session's one token is still there
    assert net.take(ALICE, dg.Kind.HELLO) and peer.address == ALICE
    net.send(alice, dg.Kind.PING, None, ("10.9.9.7", 1), 0.0)  # a fresh address: only the session rate stops it
    assert net.router.stats["dropped_rate_session"] == 1 and not net.take(ALICE, dg.Kind.PONG)


def test_a_signed_ping_nested_too_deep_is_dropped_as_a_bad_body() -> None:
    net = Wire()
    alice = net.session("alice", 1, ALICE)
    peer = udp(alice)
    deep = dg.encode_datagram(dg.Kind.PING, peer.sid, 3, b'{"t":' + b"[" * 1100, peer.key)
    net.router.datagram_received(deep, ALICE, 0.0)  # raised RecursionError into the loop's datagram_received
    assert net.router.stats["dropped_body"] == 1 and net.take(ALICE, dg.Kind.PONG) == []


def test_only_a_hello_newer_than_every_seq_seen_binds() -> None:
    net = Wire()
    alice = net.session("alice", 1, ALICE)
    net.send(alice, dg.Kind.PING, None, ALICE, 0.0, seq=10)
    net.send(alice, dg.Kind.HELLO, None, BOB, 0.0, seq=5)  # a replayed or stale HELLO cannot steal the binding
    assert udp(alice).address == ALICE and net.router.stats["dropped_stale_hello"] == 1
    assert net.take(BOB, dg.Kind.HELLO) == []
    net.send(alice, dg.Kind.HELLO, None, BOB, 0.0, seq=11)
    [answer] = net.take(BOB, dg.Kind.HELLO)
    assert udp(alice).address == BOB and dg.decode_body(answer.body, dg.HelloBody).seq == 11


def test_a_replayed_quick_is_acked_again_to_the_bound_address_and_not_delivered_again() -> None:
    net = Wire()
    alice, bob = net.session("alice", 1, ALICE), net.session("bob", 2)
    seq = net.send(alice, dg.Kind.QUICK, dg.QuickRequest(to="bob", text="once"), ALICE, 0.0)
    net.send(alice, dg.Kind.QUICK, dg.QuickRequest(to="bob", text="once"), ("10.6.6.6", 1), 0.1, seq=seq)
    acks = [dg.decode_body(d.body, dg.AckBody) for d in net.take(ALICE, dg.Kind.ACK)]
    assert acks == [dg.AckBody(seq=seq), dg.AckBody(seq=seq)]
    assert [q.text for q in tcp_quicks(bob)] == ["once"]
    assert net.router.stats["quick_reacked"] == 1 and [a for _, a in net.sent] == []


def test_a_refused_quick_is_acked_with_its_code_and_the_error_goes_over_tcp_with_the_seq() -> None:
    net = Wire()
    alice = net.session("alice", 1, ALICE)
    seq = net.send(alice, dg.Kind.QUICK, dg.QuickRequest(to="nobody", text="hi"), ALICE, 0.0)
    [ack] = [dg.decode_body(d.body, dg.AckBody) for d in net.take(ALICE, dg.Kind.ACK)]
    assert ack == dg.AckBody(seq=seq, code="no_such_nick")
    [error] = peer_of(alice).of_type(wire.Error)
    assert (error.code, error.seq) == ("no_such_nick", seq)
    net.send(alice, dg.Kind.QUICK, dg.QuickRequest(to="nobody", text="hi"), ALICE, 0.5, seq=seq)
    [again] = [dg.decode_body(d.body, dg.AckBody) for d in net.take(ALICE, dg.Kind.ACK)]
    assert again == ack, "a repeat is acknowledged as the original was"


# --- retransmission and the TCP fallback --------------------------------------------------------------------------


def quick_to_bob(net: Wire, now: float = 0.0) -> tuple[Session, Session, dg.Datagram]:
    alice, bob = net.session("alice", 1, ALICE), net.session("bob", 2, BOB)
    net.send(alice, dg.Kind.QUICK, dg.QuickRequest(to="bob", text="are you there"), ALICE, now)
    [first] = net.take(BOB, dg.Kind.QUICK)
    return alice, bob, first


def test_an_unacked_quick_is_sent_again_at_each_step_of_the_schedule_then_once_over_tcp_at_5_s() -> None:
    net = Wire()
    t0 = 100.0
    _, bob, first = quick_to_bob(net, t0)
    assert net.wakes == [t0 + 0.25]
    sends_at: list[float] = []
    deadlines: list[float | None] = []
    fallbacks = 0
    # every 10 ms from the first send to well past the fallback: each resend happens at its step, not before
    for step in range(1, 1001):
        now = t0 + step / 100
        deadlines.append(net.router.poll(now))
        for copy in net.take(BOB, dg.Kind.QUICK):
            assert (copy.seq, copy.body) == (first.seq, first.body), "the same datagram again"
            sends_at.append(round(now - t0, 2))
        if len(tcp_quicks(bob)) > fallbacks:
            fallbacks = len(tcp_quicks(bob))
            sends_at.append(-round(now - t0, 2))  # the fallback, marked negative
    assert sends_at == [0.25, 0.75, 1.75, 3.75, -5.0]
    assert [q.qid for q in tcp_quicks(bob)] == [dg.decode_body(first.body, dg.QuickDelivery).qid], "exactly once"
    assert not udp(bob).pending and deadlines[-1] is None
    assert net.router.stats["quick_retransmitted"] == 4 and net.router.stats["quick_over_tcp"] == 1


def test_poll_returns_the_next_deadline_of_the_schedule() -> None:
    net = Wire()
    quick_to_bob(net, 0.0)
    assert net.router.poll(0.1) == 0.25
    assert net.router.poll(0.25) == 0.75
    assert net.router.poll(0.75) == 1.75
    assert net.router.poll(1.75) == 3.75
    assert net.router.poll(3.75) == dg.GIVE_UP_AFTER
    assert net.router.poll(4.999) == dg.GIVE_UP_AFTER
    assert net.router.poll(5.0) is None


@pytest.mark.parametrize("acked_at", [0.0, 0.3, 3.8, 4.999])
def test_an_ack_before_5_s_stops_the_resends_and_nothing_goes_over_tcp(acked_at: float) -> None:
    net = Wire()
    _, bob, first = quick_to_bob(net)
    net.router.poll(acked_at)
    net.take(BOB, dg.Kind.QUICK)
    net.send(bob, dg.Kind.ACK, dg.AckBody(seq=first.seq), BOB, acked_at)
    for step in range(0, 2001):  # every 5 ms up to 10 s: twice the whole window a duplicate could come in
        assert net.router.poll(acked_at + step / 200) is None
    assert net.take(BOB, dg.Kind.QUICK) == [] and tcp_quicks(bob) == []
    assert net.router.stats["quick_acked_by_recipient"] == 1


def test_an_ack_after_the_fallback_changes_nothing() -> None:
    net = Wire()
    _, bob, first = quick_to_bob(net)
    for now in (0.25, 0.75, 1.75, 3.75, 5.0):
        net.router.poll(now)
    net.send(bob, dg.Kind.ACK, dg.AckBody(seq=first.seq), BOB, 5.1)
    assert net.router.poll(60.0) is None
    assert len(tcp_quicks(bob)) == 1 and net.router.stats["quick_acked_by_recipient"] == 0


def test_a_quick_to_a_recipient_that_left_is_not_sent_over_tcp() -> None:
    net = Wire()
    _, bob, _ = quick_to_bob(net)
    net.router.detach(udp(bob))
    assert net.router.poll(10.0) is None
    assert tcp_quicks(bob) == [] and net.take(BOB, dg.Kind.QUICK) == []


def test_late_polls_send_one_copy_each_and_fall_back_over_tcp_exactly_once() -> None:
    net = Wire()
    _, bob, _ = quick_to_bob(net)
    net.router.poll(2.0)  # the loop was busy: 0.25, 0.75 and 1.75 were all missed
    assert len(net.take(BOB, dg.Kind.QUICK)) == 1, "one copy per poll, not one per missed step"
    polls = 0
    while net.router.poll(60.0) is not None:  # each due deadline is in the past: the timer fires again at once
        polls += 1
        assert polls < 10
    assert len(net.take(BOB, dg.Kind.QUICK)) == 3 and len(tcp_quicks(bob)) == 1
    assert net.router.poll(120.0) is None and len(tcp_quicks(bob)) == 1


def test_a_recipient_without_a_bound_address_gets_it_over_tcp_at_once() -> None:
    net = Wire()
    alice, bob = net.session("alice", 1, ALICE), net.session("bob", 2)
    net.send(alice, dg.Kind.QUICK, dg.QuickRequest(to="bob", text="tcp"), ALICE, 0.0)
    assert [q.text for q in tcp_quicks(bob)] == ["tcp"] and net.wakes == []
    assert net.router.poll(10.0) is None


# --- dedupe across paths --------------------------------------------------------------------------------------------


def test_a_cid_is_delivered_once_in_10_minutes_and_again_after() -> None:
    net = Wire()
    alice, bob = net.session("alice", 1), net.session("bob", 2)
    request = wire.QuickSend(to="bob", text="hi", cid="c1", ref="r1")
    net.router.quick_request(alice, request, 0.0)
    net.router.quick_request(alice, request, CID_MEMORY_SECONDS - 0.001)
    oks = peer_of(alice).of_type(wire.QuickOk)
    assert len(tcp_quicks(bob)) == 1 and oks[0].qid == oks[1].qid
    net.router.quick_request(alice, request, CID_MEMORY_SECONDS + 0.001)
    assert len(tcp_quicks(bob)) == 2


def test_the_tcp_copy_of_a_quick_that_came_by_udp_gets_its_qid_and_is_not_delivered_again() -> None:
    net = Wire()
    alice, bob = net.session("alice", 1, ALICE), net.session("bob", 2)
    seq = net.send(alice, dg.Kind.QUICK, dg.QuickRequest(to="bob", text="both ways"), ALICE, 0.0)
    net.router.quick_request(alice, wire.QuickSend(to="bob", text="both ways", seq=seq, ref="r"), 5.0)
    [delivered] = tcp_quicks(bob)
    [ok] = peer_of(alice).of_type(wire.QuickOk)
    assert ok.qid == delivered.qid


def test_a_late_udp_copy_of_a_quick_that_came_by_tcp_is_acked_and_not_delivered_again() -> None:
    net = Wire()
    alice, bob = net.session("alice", 1, ALICE), net.session("bob", 2)
    seq = 7
    net.router.quick_request(alice, wire.QuickSend(to="bob", text="tcp first", seq=seq, ref="r"), 0.0)
    net.send(alice, dg.Kind.QUICK, dg.QuickRequest(to="bob", text="tcp first"), ALICE, 0.2, seq=seq)
    assert len(tcp_quicks(bob)) == 1
    assert [dg.decode_body(d.body, dg.AckBody) for d in net.take(ALICE, dg.Kind.ACK)] == [dg.AckBody(seq=seq)]


# --- address validation and the retransmission budget (docs/protocol.md 6.5) ------------------------------------------

VICTIM = ("10.0.0.99", 5353)


def size(datagram: dg.Datagram) -> int:
    return len(datagram.signed) + len(datagram.tag)


def sent_to(net: Wire, address: Any) -> list[dg.Datagram]:
    """Every datagram sent to `address` so far, of any kind (taken)."""
    taken = [d for d, a in net.sent if a == address]
    net.sent = [(d, a) for d, a in net.sent if a != address]
    return taken


def test_a_forged_hello_aims_at_most_three_times_its_bytes_at_the_victim() -> None:
    """A session's holder signs a HELLO from the victim's address, then has quick messages sent to that session
    for minutes: whatever goes to the victim stays within 3x what came from it; the rest goes over TCP."""
    net = Wire()
    alice = net.session("alice", 1, ALICE)
    mallory = net.session("mallory", 2)
    from_victim = 0
    to_victim = 0
    peer = udp(mallory)
    for round_ in range(20):  # a forged HELLO now and then, and a forged PING, each signed by the holder
        now = round_ * 10.0
        net.send(mallory, dg.Kind.HELLO, None, VICTIM, now)
        net.send(mallory, dg.Kind.PING, dg.PingBody(t=round_), VICTIM, now)
        for n in range(5):
            net.send(alice, dg.Kind.QUICK, dg.QuickRequest(to="mallory", text=f"quick {round_}.{n}"), ALICE, now)
        for step in range(0, 60):
            net.router.poll(now + step / 10)
        to_victim += sum(size(d) for d in sent_to(net, VICTIM))
    from_victim = peer.received
    assert from_victim == 20 * (30 + 30 + len(b'{"t":00}')) - 10  # counted by the server as the test sent them
    assert 0 < to_victim <= AMPLIFICATION_FACTOR * from_victim
    assert peer.sent == to_victim and not peer.is_validated
    assert len(tcp_quicks(mallory)) == 100, "every quick message still reached its recipient, over TCP"
    assert net.router.stats["dropped_amplification"] > 0


def test_the_first_seq_sent_to_a_new_address_is_a_secret_step_ahead() -> None:
    net = Wire()
    first = net.session("alice", 1)
    second = net.session("bob", 2)
    net.send(first, dg.Kind.HELLO, None, ALICE, 0.0)
    net.send(second, dg.Kind.HELLO, None, BOB, 0.0)
    [a] = net.take(ALICE, dg.Kind.HELLO)
    [b] = net.take(BOB, dg.Kind.HELLO)
    assert a.seq > 1 and b.seq > 1 and a.seq != b.seq, "1 + a random step of up to 2**24 each"
    net.send(first, dg.Kind.HELLO, None, ALICE, 1.0)  # the periodic re-HELLO from the same address: no new step
    [again] = net.take(ALICE, dg.Kind.HELLO)
    assert again.seq == a.seq + 1


def test_an_older_clients_ack_of_a_quick_validates_its_address() -> None:
    """No ACK of the HELLO answer (an older client): a short quick message fits the budget its HELLO and PING
    earned, and the client's ACK of it proves the address; then long ones go by UDP too."""
    net = Wire()
    alice = net.session("alice", 1, ALICE)
    bob = net.session("bob", 2, BOB, validate=False)
    net.send(bob, dg.Kind.PING, dg.PingBody(t=1_764_607_200_000_000_000), BOB, 0.0)
    assert net.take(BOB, dg.Kind.PONG)
    net.send(alice, dg.Kind.QUICK, dg.QuickRequest(to="bob", text="hi"), ALICE, 0.0)
    [quick] = net.take(BOB, dg.Kind.QUICK)
    assert not udp(bob).is_validated
    net.send(bob, dg.Kind.ACK, dg.AckBody(seq=quick.seq), BOB, 0.1)
    assert udp(bob).is_validated and net.router.stats["address_validated"] == 2  # alice by her HELLO's ACK
    for n in range(10):
        net.send(alice, dg.Kind.QUICK, dg.QuickRequest(to="bob", text="long " * 90 + str(n)), ALICE, 0.2)
    assert len(net.take(BOB, dg.Kind.QUICK)) == 10 and tcp_quicks(bob) == []


def test_a_long_quick_to_an_unvalidated_address_goes_over_tcp_at_once() -> None:
    net = Wire()
    alice = net.session("alice", 1, ALICE)
    bob = net.session("bob", 2, BOB, validate=False)
    net.send(alice, dg.Kind.QUICK, dg.QuickRequest(to="bob", text="long " * 90), ALICE, 0.0)
    assert net.take(BOB, dg.Kind.QUICK) == [] and len(tcp_quicks(bob)) == 1
    assert net.router.poll(10.0) is None, "nothing waits for an ACK"


@pytest.mark.parametrize("guess", ["skipped", "unsent"])
def test_an_ack_guessing_a_seq_never_sent_turns_udp_off_for_the_session(guess: str) -> None:
    net = Wire()
    alice = net.session("alice", 1, ALICE)
    mallory = net.session("mallory", 2, ALICE, validate=False)  # learns the send counter at its own address
    peer = udp(mallory)
    known = peer.next_seq
    net.send(mallory, dg.Kind.HELLO, None, VICTIM, 0.0)  # forged: the answer goes to the victim, a secret step on
    assert peer.next_seq > known + 1
    seq = known if guess == "skipped" else peer.next_seq
    net.send(mallory, dg.Kind.ACK, dg.AckBody(seq=seq), VICTIM, 0.0)
    assert peer.off and peer.address is None and net.router.stats["forged_ack"] == 1
    net.send(mallory, dg.Kind.HELLO, None, ALICE, 0.1)
    assert net.take(ALICE, dg.Kind.HELLO) == [] and net.router.stats["dropped_udp_off"] == 1
    net.send(alice, dg.Kind.QUICK, dg.QuickRequest(to="mallory", text="tcp now"), ALICE, 0.2)
    assert len(tcp_quicks(mallory)) == 1 and sent_to(net, VICTIM)[1:] == []


def test_retransmissions_over_the_session_budget_are_skipped_and_the_tcp_fallback_still_comes() -> None:
    limits = {"udp_retransmits_per_second": 0.01, "udp_retransmit_burst": 3}
    net = Wire(config_with(Config(), limits=limits))
    alice, bob = net.session("alice", 1, ALICE), net.session("bob", 2, BOB)
    for n in range(4):
        net.send(alice, dg.Kind.QUICK, dg.QuickRequest(to="bob", text=f"q{n}"), ALICE, 0.0)
    assert len(net.take(BOB, dg.Kind.QUICK)) == 4
    for step in range(0, 600):
        net.router.poll(step / 100)
    assert len(net.take(BOB, dg.Kind.QUICK)) == 3, "3 of the 16 retransmissions fit the budget"
    assert net.router.stats["dropped_retransmit_budget"] == 13
    assert len(tcp_quicks(bob)) == 4, "each falls back over TCP at 5 s"
