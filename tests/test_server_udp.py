"""The server's UDP quick channel over real loopback sockets, driven datagram by datagram."""

from __future__ import annotations

import asyncio
import struct

import pytest
from conftest import ConnectFactory
from rawwire import RawConnection, RawUdp

from chat.protocol import datagrams as dg
from chat.server.app import ChatServer

pytestmark = pytest.mark.asyncio
HELLO, QUICK, ACK, PING, PONG, TYPING = 1, 2, 3, 4, 5, 6


async def udp_for(server: ChatServer, conn: RawConnection, *, bind: bool = True) -> RawUdp:
    assert conn.welcome is not None
    endpoint = await RawUdp.open(server.udp_port, conn.welcome)
    if bind:
        await endpoint.bind()
    return endpoint


async def barrier(endpoint: RawUdp) -> None:
    """A PING answered: every datagram sent before it has been handled (and any reply to it sent)."""
    endpoint.send(PING, {"t": "barrier"})
    _, body = await endpoint.expect(PONG)
    assert body is not None and body["t"] == "barrier"


async def test_nothing_is_answered_before_a_hello_binds_an_address(server: ChatServer, connect: ConnectFactory) -> None:
    conn = await connect("alice")
    udp = await udp_for(server, conn, bind=False)
    udp.send(PING, {"t": 1})
    with pytest.raises(TimeoutError):
        await udp.recv(timeout=0.3)
    await udp.bind()
    udp.send(PING, {"t": 2})
    _, body = await udp.expect(PONG)
    assert body is not None and body["t"] == 2 and isinstance(body["server_ts"], int)
    udp.close()


async def test_quick_to_a_bound_recipient_goes_by_udp_and_is_acked(server: ChatServer, connect: ConnectFactory) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    a_udp, b_udp = await udp_for(server, alice), await udp_for(server, bob)
    seq = a_udp.send(QUICK, {"to": "bob", "text": "快 quick", "nudge": True, "cid": "q1"})
    _, ack = await a_udp.expect(ACK)
    assert ack == {"seq": seq}
    delivery_seq, delivery = await b_udp.expect(QUICK)
    assert delivery is not None
    assert (delivery["from"], delivery["to"], delivery["text"], delivery["nudge"]) == ("alice", "bob", "快 quick", True)
    b_udp.send(ACK, {"seq": delivery_seq})
    await barrier(b_udp)
    assert not [h for h in bob.inbox if h["type"] == "quick"], "an acknowledged quick message does not go over TCP"
    for endpoint in (a_udp, b_udp):
        endpoint.close()


async def test_quick_to_a_recipient_without_udp_goes_over_tcp(server: ChatServer, connect: ConnectFactory) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    a_udp = await udp_for(server, alice)
    a_udp.send(QUICK, {"to": "bob", "text": "no udp here"})
    await a_udp.expect(ACK)
    frame = await bob.expect("quick")
    assert frame["from"] == "alice" and frame["text"] == "no udp here" and isinstance(frame["qid"], int)
    a_udp.close()


async def test_unacked_quick_is_retransmitted_then_falls_back_to_tcp(
    server: ChatServer, connect: ConnectFactory
) -> None:
    """The wiring: the server's timer drives the router's schedule (tests/test_quick_router.py tests the schedule
    itself at exact instants); here the schedule is a tenth of the real one, so the test waits 0.5 s, not 5."""
    server.service.quick.schedule = dg.PROTOCOL_SCHEDULE.scaled(0.1)
    alice, bob = await connect("alice"), await connect("bob")
    a_udp, b_udp = await udp_for(server, alice), await udp_for(server, bob)
    loop = asyncio.get_running_loop()
    a_udp.send(QUICK, {"to": "bob", "text": "are you there"})
    first_seq, first = await b_udp.expect(QUICK)
    first_at = loop.time()
    copies = []
    for _ in range(4):  # retransmitted 0.025, 0.075, 0.175, 0.375 s after the first send: the same datagram
        seq, body = await b_udp.expect(QUICK, timeout=3)
        copies.append((seq, round(loop.time() - first_at, 1)))
        assert body == first
    assert [seq for seq, _ in copies] == [first_seq] * 4
    frame = await bob.expect("quick", timeout=4)
    fallback_after = loop.time() - first_at
    assert 0.49 <= fallback_after <= 2.0, f"TCP fallback {fallback_after:.2f}s after the first send"
    assert first is not None and frame["qid"] == first["qid"]
    # nothing is left to send: no fifth copy, no second fallback can come (no need to wait and see)
    assert not server.service.quick.peers[b_udp.sid].pending, "the fallback ended the retransmissions"
    await barrier(b_udp)
    assert b_udp.queue.empty(), "no datagram after the fallback"
    assert [h for h in bob.inbox if h["type"] == "quick"] == [], "one TCP fallback only"
    for endpoint in (a_udp, b_udp):
        endpoint.close()


async def test_forged_replayed_and_oversize_datagrams_get_no_reply(server: ChatServer, connect: ConnectFactory) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    a_udp = await udp_for(server, alice)
    attacker = await RawUdp.open(server.udp_port, alice.welcome, source="127.0.0.2")
    seq = a_udp.send(QUICK, {"to": "bob", "text": "once"})
    await a_udp.expect(ACK)
    # a replay of that exact QUICK from another address: re-ACKed to the bound address only, not delivered again
    quick = dg.encode_datagram(dg.Kind.QUICK, a_udp.sid, seq, b'{"to":"bob","text":"once"}', a_udp.key)
    attacker.send_raw(quick)
    _, ack = await a_udp.expect(ACK)
    assert ack == {"seq": seq}
    attacker.send_raw(quick[:-1] + bytes([quick[-1] ^ 1]))  # bad tag
    attacker.send_raw(dg.encode_datagram(dg.Kind.PING, a_udp.sid + 1, 99, b"{}", a_udp.key))  # unknown sid
    attacker.send_raw(b"\x01\x04" + b"\0" * 1300)  # oversize
    attacker.send_raw(struct.pack("!BBQI", 1, 4, a_udp.sid, 100))  # no tag
    attacker.send(PING, {"t": 1}, seq=seq)  # signed but a replayed seq
    attacker.send(HELLO, seq=1)  # a stale HELLO cannot steal the binding
    await barrier(a_udp)
    assert attacker.bytes_received == 0
    await bob.expect("quick")
    await barrier(a_udp)
    assert [h["text"] for h in bob.inbox if h["type"] == "quick"] == [], "delivered once only"
    assert server.service.quick.stats["dropped_bad_tag"] >= 1
    for endpoint in (a_udp, attacker):
        endpoint.close()


async def test_hello_from_a_new_address_rebinds(server: ChatServer, connect: ConnectFactory) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    old = await udp_for(server, alice)
    moved = await RawUdp.open(server.udp_port, alice.welcome, source="127.0.0.3")
    moved.next_seq = old.next_seq + 10
    await moved.bind()
    b_udp = await udp_for(server, bob)
    b_udp.send(QUICK, {"to": "alice", "text": "where are you"})
    _, body = await moved.expect(QUICK)
    assert body is not None and body["text"] == "where are you"
    assert old.queue.empty()
    for endpoint in (old, moved, b_udp):
        endpoint.close()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"to": "ghost", "text": "x"}, "no_such_nick"),
        ({"to": "offline", "text": "x"}, "nick_offline"),
        ({"room": "nowhere", "text": "x"}, "no_such_room"),
        ({"to": "bob", "text": "x" * 501}, "bad_text"),
        ({"to": "bob", "text": "\x1b[2J"}, "bad_text"),
        ({"text": "x"}, "bad_request"),
        ({"to": 5, "text": "x"}, "bad_request"),
    ],
)
async def test_refused_quick_is_acked_with_a_code_and_the_error_goes_over_tcp(
    server: ChatServer, connect: ConnectFactory, body: dict[str, object], code: str
) -> None:
    gone = await connect("offline")
    await gone.send({"type": "quit"})
    await gone.wait_closed()
    alice = await connect("alice")
    await connect("bob")
    udp = await udp_for(server, alice)
    seq = udp.send(QUICK, body)
    _, ack = await udp.expect(ACK)
    assert ack == {"seq": seq, "code": code}
    error = await alice.expect("error")
    assert error["code"] == code and error["seq"] == seq
    udp.close()


async def test_tcp_quick_with_a_seq_already_delivered_by_udp_is_not_delivered_again(
    server: ChatServer, connect: ConnectFactory
) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    udp = await udp_for(server, alice)
    seq = udp.send(QUICK, {"to": "bob", "text": "both ways"})
    await udp.expect(ACK)
    first = await bob.expect("quick")
    ok = await alice.request({"type": "quick", "to": "bob", "text": "both ways", "seq": seq}, "quick_ok")
    assert ok["qid"] == first["qid"]
    await alice.request({"type": "ping", "t": 0}, "pong")
    await bob.request({"type": "ping", "t": 0}, "pong")
    assert not [h for h in bob.inbox if h["type"] == "quick"]
    udp.close()


async def test_tcp_quick_first_makes_a_late_udp_copy_a_duplicate(server: ChatServer, connect: ConnectFactory) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    udp = await udp_for(server, alice)
    ok = await alice.request({"type": "quick", "to": "bob", "text": "tcp first", "seq": 50}, "quick_ok")
    udp.send(QUICK, {"to": "bob", "text": "tcp first"}, seq=50)
    _, ack = await udp.expect(ACK)
    assert ack == {"seq": 50}
    frame = await bob.expect("quick")
    assert frame["qid"] == ok["qid"]
    await barrier(udp)
    assert not [h for h in bob.inbox if h["type"] == "quick"]
    udp.close()


async def test_long_chinese_quick_goes_over_tcp_and_arrives_once(server: ChatServer, connect: ConnectFactory) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    await udp_for(server, bob)
    text = "长" * 500
    ok = await alice.request({"type": "quick", "to": "bob", "text": text, "cid": "long"}, "quick_ok")
    frame = await bob.expect("quick")
    assert frame["text"] == text and frame["qid"] == ok["qid"]
    again = await alice.request({"type": "quick", "to": "bob", "text": text, "cid": "long"}, "quick_ok")
    assert again["qid"] == ok["qid"], "a cid is delivered at most once"
    await bob.request({"type": "ping", "t": 0}, "pong")
    assert not [h for h in bob.inbox if h["type"] == "quick"]


async def test_room_quick_goes_to_every_other_member(server: ChatServer, connect: ConnectFactory) -> None:
    alice, bob, carol = [await connect(n) for n in ("alice", "bob", "carol")]
    for conn in (alice, bob, carol):
        await conn.join("lobby")
    ok = await alice.request({"type": "quick", "room": "lobby", "text": "hi all"}, "quick_ok")
    for member in (bob, carol):
        frame = await member.expect("quick")
        assert frame["room"] == "lobby" and frame["qid"] == ok["qid"]
    await alice.request({"type": "ping", "t": 0}, "pong")
    assert not [h for h in alice.inbox if h["type"] == "quick"], "not to the sender"


async def test_typing_is_forwarded_by_udp_only(server: ChatServer, connect: ConnectFactory) -> None:
    alice, bob, carol = [await connect(n) for n in ("alice", "bob", "carol")]
    for conn in (alice, bob, carol):
        await conn.join("lobby")
    a_udp, b_udp = await udp_for(server, alice), await udp_for(server, bob)
    a_udp.send(TYPING, {"room": "lobby"})
    _, body = await b_udp.expect(TYPING)
    assert body == {"from": "alice", "room": "lobby"}
    await carol.request({"type": "ping", "t": 0}, "pong")
    assert not [h for h in carol.inbox if h["type"] not in ("presence",)], "never over TCP"
    for endpoint in (a_udp, b_udp):
        endpoint.close()


async def test_a_forged_hello_gets_at_most_three_times_its_bytes_sent_to_the_victim(
    server: ChatServer, connect: ConnectFactory
) -> None:
    """docs/protocol.md 6.5 over real sockets: mallory signs HELLOs for its own session from the victim's address
    (127.0.0.2) and bob sends the room quick messages; the victim gets at most 3x what came from it, and mallory
    still gets every quick message (over TCP)."""
    server.service.quick.schedule = dg.PROTOCOL_SCHEDULE.scaled(0.1)  # fallbacks in 0.5 s, not 5
    mallory, bob = await connect("mallory"), await connect("bob")
    for conn in (mallory, bob):
        await conn.join("lobby")
    victim = await RawUdp.open(server.udp_port, mallory.welcome, source="127.0.0.2")
    qids = []
    for n in range(10):
        victim.send(HELLO)  # "from" the victim: in a real attack its source address is forged
        ok = await bob.request({"type": "quick", "room": "lobby", "text": f"quick message {n}"}, "quick_ok")
        qids.append(ok["qid"])
    got = [(await mallory.expect("quick", timeout=5))["qid"] for _ in qids]
    assert sorted(got) == sorted(qids)
    peer = server.service.quick.peers[victim.sid]
    from_victim = 10 * (dg.PREFIX.size + dg.TAG_BYTES)
    assert peer.received == from_victim and not peer.is_validated
    while victim.bytes_received < peer.sent:  # the server's own count of what it sent there
        await asyncio.wait_for(victim.queue.get(), 5)
    assert 0 < victim.bytes_received <= 3 * from_victim
    victim.close()


async def test_a_client_that_acks_the_hello_answer_gets_long_quick_messages_by_udp(
    server: ChatServer, connect: ConnectFactory
) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    a_udp, b_udp = await udp_for(server, alice), await udp_for(server, bob)  # bind() ACKs the answer
    await barrier(b_udp)
    assert server.service.quick.peers[b_udp.sid].is_validated
    text = "a long quick message " * 20
    a_udp.send(QUICK, {"to": "bob", "text": text})
    seq, body = await b_udp.expect(QUICK)
    assert body is not None and body["text"] == text
    b_udp.send(ACK, {"seq": seq})
    await barrier(b_udp)
    assert not [h for h in bob.inbox if h["type"] == "quick"]
    for endpoint in (a_udp, b_udp):
        endpoint.close()
