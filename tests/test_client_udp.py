"""The client's UDP link (chat/client/udp.py) as a state machine on a manual clock: HELLO cycle, BLOCKED, PINGs,
re-binding, QUICK retransmission and TCP fallback at the exact instants of docs/protocol.md 6.4, without waiting.

The link is driven directly: a fake transport records what it sends, datagrams "from the server" are signed with the
session key and handed to `datagram_received`, and only `ManualClock.advance` moves time.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from chat.client.udp import QuickJob, QuickReceipt, UdpLink, UdpState, UdpTimings
from chat.protocol import datagrams as dg
from chat.timer import ManualClock

pytestmark = pytest.mark.asyncio
SID = 7
KEY = bytes(range(32))
SERVER = ("127.0.0.1", 7777)


class RecordingTransport:
    """Stands in for the link's connected UDP socket: keeps (clock time, parsed datagram) of every send."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, dg.Datagram]] = []

    def sendto(self, data: bytes, addr: object = None) -> None:
        self.sent.append((self.clock.time(), dg.parse_datagram(data)))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def times_of(self, kind: dg.Kind) -> list[float]:
        return [round(at, 6) for at, datagram in self.sent if datagram.kind is kind]

    def of_kind(self, kind: dg.Kind) -> list[dg.Datagram]:
        return [datagram for _, datagram in self.sent if datagram.kind is kind]


@dataclass
class Harness:
    """One link on a manual clock, with what its callbacks got."""

    clock: ManualClock
    transport: RecordingTransport
    link: UdpLink
    acked: list[tuple[str, str | None]] = field(default_factory=list)
    expired: list[tuple[float, str]] = field(default_factory=list)
    delivered: list[dg.QuickDelivery] = field(default_factory=list)
    server_seq: int = 0

    def from_server(self, kind: dg.Kind, body: dg.Body | None, seq: int | None = None) -> int:
        """A datagram signed as the server would, handed to the link; returns its seq."""
        if seq is None:
            self.server_seq += 1
            seq = self.server_seq
        raw = b"" if body is None else dg.encode_body(body)
        self.link.datagram_received(dg.encode_datagram(kind, SID, seq, raw, KEY), SERVER)
        return seq

    def answer_hello(self) -> None:
        """Answer the latest HELLO the link sent."""
        hello = self.transport.of_kind(dg.Kind.HELLO)[-1]
        self.from_server(dg.Kind.HELLO, dg.HelloBody(seq=hello.seq))

    def job(self, cid: str) -> QuickJob:
        future: asyncio.Future[QuickReceipt] = asyncio.get_running_loop().create_future()
        return QuickJob(cid, "bob", None, f"text of {cid}", False, future)


def harness(timings: UdpTimings | None = None, start: float = 1000.0) -> Harness:
    clock = ManualClock(start)
    transport = RecordingTransport(clock)
    acked: list[tuple[str, str | None]] = []
    expired: list[tuple[float, str]] = []
    delivered: list[dg.QuickDelivery] = []
    link = UdpLink(
        SID,
        KEY.hex(),
        on_quick=delivered.append,
        on_typing=lambda notice: None,
        on_ack=lambda job, code: acked.append((job.cid, code)),
        on_expired=lambda job: expired.append((clock.time(), job.cid)),
        timings=timings,
        clock=clock,
    )
    link.connection_made(transport)  # type: ignore[arg-type]
    link.start()
    return Harness(clock, transport, link, acked, expired, delivered)


def since(h: Harness, times: list[float], origin: float) -> list[float]:
    return [round(t - origin, 6) for t in times]


async def test_unanswered_hellos_go_at_0_025_075_175_375_s_and_the_link_is_blocked_at_5_s() -> None:
    h = harness()
    h.clock.advance(1004.999)
    assert h.link.state is UdpState.BINDING
    assert since(h, h.transport.times_of(dg.Kind.HELLO), 1000.0) == [0.0, 0.25, 0.75, 1.75, 3.75]
    hello_seqs = [d.seq for d in h.transport.of_kind(dg.Kind.HELLO)]
    assert hello_seqs == sorted(set(hello_seqs)), "a new seq for every HELLO"
    h.clock.advance(1005.0)
    assert h.link.state is UdpState.BLOCKED
    await asyncio.wait_for(h.link.wait_settled(), 1)  # wait_udp returns False at once from here


async def test_a_blocked_link_tries_a_new_hello_cycle_15_s_after_giving_up_and_binds_when_answered() -> None:
    h = harness()
    h.clock.advance(1019.999)
    assert len(h.transport.of_kind(dg.Kind.HELLO)) == 5 and h.link.state is UdpState.BLOCKED
    h.clock.advance(1020.0)  # 5 s of the first cycle, then REBIND_SECONDS
    assert since(h, h.transport.times_of(dg.Kind.HELLO)[5:], 1020.0) == [0.0]
    h.answer_hello()
    assert h.link.state is UdpState.OK
    h.clock.advance(1030.0)
    assert len(h.transport.of_kind(dg.Kind.HELLO)) == 6, "no more HELLOs once bound"


async def test_an_answered_hello_binds_then_pings_every_5_s_and_rebinds_after_15_s() -> None:
    h = harness()
    h.clock.advance(1000.3)  # HELLOs at 0 and 0.25
    h.answer_hello()
    assert h.link.state is UdpState.OK
    await asyncio.wait_for(h.link.wait_bound(), 1)
    h.clock.advance(1016.0)
    assert since(h, h.transport.times_of(dg.Kind.PING), 1000.3) == [0.0, 5.0, 10.0]
    assert since(h, h.transport.times_of(dg.Kind.HELLO), 1000.0) == [0.0, 0.25, 15.3, 15.55]
    assert h.link.state is UdpState.OK, "re-binding keeps quick messages on UDP meanwhile"


async def test_an_answer_to_an_older_cycles_hello_does_not_bind() -> None:
    h = harness()
    first = h.transport.of_kind(dg.Kind.HELLO)[0]
    h.clock.advance(1020.0)  # blocked, then a new cycle: the first cycle's HELLOs are forgotten
    h.from_server(dg.Kind.HELLO, dg.HelloBody(seq=first.seq))
    assert h.link.state is UdpState.BLOCKED


async def test_an_unacked_quick_is_resent_as_the_same_datagram_then_handed_back_for_tcp_exactly_at_5_s() -> None:
    h = harness()
    h.answer_hello()
    h.clock.advance(1001.0)
    job = h.job("q1")
    assert h.link.try_send_quick(job)
    h.clock.advance(1005.999)
    quicks = h.transport.of_kind(dg.Kind.QUICK)
    assert since(h, h.transport.times_of(dg.Kind.QUICK), 1001.0) == [0.0, 0.25, 0.75, 1.75, 3.75]
    assert {(d.seq, d.body) for d in quicks} == {(job.seq, quicks[0].body)}, "the same datagram, same seq"
    assert h.expired == []
    h.clock.advance(1006.0)
    assert h.expired == [(1006.0, "q1")]
    h.clock.advance(1020.0)
    assert len(h.transport.of_kind(dg.Kind.QUICK)) == 5 and len(h.expired) == 1, "nothing after the fallback"


async def test_an_ack_stops_the_retransmissions_and_a_refusal_code_reaches_the_client() -> None:
    h = harness()
    h.answer_hello()
    accepted, refused = h.job("ok"), h.job("no")
    assert h.link.try_send_quick(accepted) and h.link.try_send_quick(refused)
    h.clock.advance(1000.3)  # one retransmission each
    h.from_server(dg.Kind.ACK, dg.AckBody(seq=accepted.seq or 0))
    h.from_server(dg.Kind.ACK, dg.AckBody(seq=refused.seq or 0, code="nick_offline"))
    h.clock.advance(1010.0)
    assert h.acked == [("ok", None), ("no", "nick_offline")]
    assert len(h.transport.of_kind(dg.Kind.QUICK)) == 4 and h.expired == []


async def test_a_quick_from_the_server_is_acked_every_time_and_delivered_once() -> None:
    h = harness()
    h.answer_hello()
    h.transport.sent.clear()  # the ACK of the HELLO answer (tested below)
    delivery = dg.QuickDelivery(qid=5, sender="bob", to="alice", text="hi", ts=0)
    seq = h.from_server(dg.Kind.QUICK, delivery)
    h.from_server(dg.Kind.QUICK, delivery, seq=seq)  # our ACK was lost: the server sent it again
    assert [d.qid for d in h.delivered] == [5]
    acks = [dg.decode_body(d.body, dg.AckBody).seq for d in h.transport.of_kind(dg.Kind.ACK)]
    assert acks == [seq, seq]


async def test_the_answer_to_a_hello_is_acknowledged_by_its_seq_which_validates_the_address() -> None:
    """docs/protocol.md 6.5: the answer's seq is one the server sent only to this address after a secret jump."""
    h = harness()
    answer_seq = h.from_server(
        dg.Kind.HELLO, dg.HelloBody(seq=h.transport.of_kind(dg.Kind.HELLO)[-1].seq), seq=7_654_321
    )
    assert h.link.state is UdpState.OK
    [ack] = h.transport.of_kind(dg.Kind.ACK)
    assert dg.decode_body(ack.body, dg.AckBody) == dg.AckBody(seq=answer_seq) and answer_seq == 7_654_321
    h.from_server(dg.Kind.HELLO, dg.HelloBody(seq=999))  # an answer to no HELLO of ours: not acknowledged
    assert len(h.transport.of_kind(dg.Kind.ACK)) == 1


async def test_nothing_goes_by_udp_before_the_link_is_bound() -> None:
    h = harness()
    assert not h.link.try_send_quick(h.job("early"))
    assert not h.link.send_typing("bob", None)


async def test_scaled_timings_scale_every_step_of_the_schedule() -> None:
    h = harness(UdpTimings().scaled(0.1))
    h.clock.advance(1000.499)
    assert since(h, h.transport.times_of(dg.Kind.HELLO), 1000.0) == [0.0, 0.025, 0.075, 0.175, 0.375]
    assert h.link.state is UdpState.BINDING
    h.clock.advance(1000.5)
    assert h.link.state is UdpState.BLOCKED
    h.clock.advance(1002.0)  # 0.5 + 1.5: the next cycle
    assert since(h, h.transport.times_of(dg.Kind.HELLO)[5:], 1000.0) == [2.0]


async def test_a_closed_link_sends_nothing_more() -> None:
    h = harness()
    h.answer_hello()
    assert h.link.try_send_quick(h.job("q"))
    h.link.close()
    sent = len(h.transport.sent)
    h.clock.advance(1100.0)
    assert len(h.transport.sent) == sent and h.expired == []
    assert h.link.state is UdpState.OFF


async def test_a_schedule_must_be_positive_and_increasing() -> None:
    assert dg.RetransmitSchedule((0.1, 0.2), 0.3).due(10.0, 3) == 10.3
    for resend, give_up in (((0.5, 0.25), 5.0), ((0.25,), 0.25), ((0.0,), 1.0), ((), -1.0)):
        with pytest.raises(ValueError, match="positive and increasing"):
            dg.RetransmitSchedule(resend, give_up)
