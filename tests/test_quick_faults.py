"""Quick messages under injected UDP faults (the plugin's seeded relay): loss, total loss, a blocked sender.

Real sockets, but client and server run protocol.md 6.4's schedule at a tenth of its times (TCP fallback after 0.5 s,
not 5 s), so a fallback is seen in well under a second; tests/test_client_udp.py and tests/test_quick_router.py check
the schedule itself, at its exact instants, on a manual clock.
"""

from __future__ import annotations

import asyncio

import pytest

from chat.client import Client, UdpTimings
from chat.protocol import datagrams as dg
from chat.protocol.messages import QuickMessage
from chat.testing import ChatTestClient

pytestmark = pytest.mark.asyncio
SCALE = 0.1
SCHEDULE = dg.PROTOCOL_SCHEDULE.scaled(SCALE)
FAST_UDP = UdpTimings().scaled(SCALE)


async def collect_quick(
    client: Client, count: int, timeout: float, arrivals: dict[str, float] | None = None
) -> list[QuickMessage]:
    """The next `count` quick messages the client delivers (other events are skipped); `arrivals` gets the loop
    time at which each text arrived."""
    got: list[QuickMessage] = []
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        while len(got) < count:
            event = await client.recv()
            if isinstance(event, QuickMessage):
                got.append(event)
                if arrivals is not None:
                    arrivals[event.text] = loop.time()
    return got


async def send_all(client: Client, texts: list[str], to: str, window: int) -> list[str]:
    """Send every text as a quick message with at most `window` unacknowledged; return each receipt's path."""
    slots = asyncio.Semaphore(window)
    paths: list[str] = []

    async def one(text: str) -> None:
        async with slots:
            paths.append((await client.quick(text, to=to)).via)

    async with asyncio.TaskGroup() as group:
        for text in texts:
            group.create_task(one(text))
    return paths


async def test_2000_quick_messages_through_30_percent_loss_each_way_arrive_exactly_once(
    chat_server, chat_client, chat_faults
) -> None:
    # A third of the protocol's times, not a tenth: a retransmission sooner than a busy loop answers 400 in flight
    # would send most over TCP. About 3% of the messages lose all five copies and wait the whole 1.7 s.
    schedule, timings = dg.PROTOCOL_SCHEDULE.scaled(1 / 3), UdpTimings().scaled(1 / 3)
    server = await chat_server()
    server.service.quick.schedule = schedule
    relay = await chat_faults.udp_relay(server, seed=2026)  # healed while both bind, then lossy
    alice: ChatTestClient = await chat_client(server, "alice", udp_port=relay.port, udp_timings=timings)
    bob: ChatTestClient = await chat_client(server, "bob", udp_port=relay.port, udp_timings=timings)
    assert await alice.wait_udp(5) and await bob.wait_udp(5)
    relay.up = relay.down = type(relay.up)(loss=0.3)
    texts = [f"q{i}" for i in range(2000)]
    receiving = asyncio.create_task(collect_quick(bob, len(texts), timeout=120))
    paths = await send_all(alice, texts, "bob", window=400)
    got = await receiving
    assert sorted(m.text for m in got) == sorted(texts), "every quick message arrived, none twice"
    assert len({m.qid for m in got}) == len(texts)
    assert relay.stats.up.dropped > 0 and relay.stats.down.dropped > 0
    assert paths.count("udp") > len(texts) // 2, "most went by UDP despite the loss"
    await bob.expect_no(QuickMessage, within=schedule.give_up_after)  # no late TCP copy of one already delivered


async def test_with_all_udp_to_the_recipient_lost_each_quick_arrives_by_tcp_once_the_server_gives_up_on_udp(
    chat_server, chat_client, chat_faults
) -> None:
    server = await chat_server()
    server.service.quick.schedule = SCHEDULE
    relay = await chat_faults.udp_relay(server, seed=1)
    alice: ChatTestClient = await chat_client(server, "alice")
    bob: ChatTestClient = await chat_client(server, "bob", udp_port=relay.port)
    assert await alice.wait_udp(5) and await bob.wait_udp(5)
    relay.down = type(relay.down)(loss=1.0)  # nothing reaches bob by UDP any more
    loop = asyncio.get_running_loop()
    sent_at = {}
    for i in range(5):
        sent_at[f"late {i}"] = loop.time()
        assert (await alice.quick(f"late {i}", to="bob")).via == "udp"  # the server ACKed alice's datagram
    arrivals: dict[str, float] = {}
    got = await collect_quick(bob, 5, timeout=15, arrivals=arrivals)
    assert sorted(m.text for m in got) == sorted(sent_at)
    delays = {text: round(arrivals[text] - sent_at[text], 2) for text in sent_at}
    give_up = SCHEDULE.give_up_after  # 0.5 s; the protocol's 5 to 7 s, scaled
    assert all(give_up - 0.01 <= delay <= give_up + 2.0 * SCALE for delay in delays.values()), (
        f"TCP fallback after {delays}"
    )
    await bob.expect_no(QuickMessage, within=give_up)  # a second fallback would come within one more give-up time


async def test_a_sender_whose_udp_goes_dark_falls_back_to_tcp_and_each_arrives_once(
    chat_server, chat_client, chat_faults
) -> None:
    server = await chat_server()
    relay = await chat_faults.udp_relay(server, seed=3)
    alice: ChatTestClient = await chat_client(server, "alice", udp_port=relay.port, udp_timings=FAST_UDP)
    bob: ChatTestClient = await chat_client(server, "bob")
    assert await alice.wait_udp(5)
    relay.partition()  # bound a moment ago, now every datagram of alice's is lost, both ways
    texts = [f"dark {i}" for i in range(20)]
    paths = await send_all(alice, texts, "bob", window=20)
    assert paths == ["tcp"] * 20
    got = await collect_quick(bob, 20, timeout=15)
    assert sorted(m.text for m in got) == sorted(texts)
    await bob.expect_no(QuickMessage, within=FAST_UDP.retransmit.give_up_after)


async def test_a_sender_with_no_udp_at_all_reaches_everyone(chat_server, chat_client, chat_faults) -> None:
    server = await chat_server()
    relay = await chat_faults.udp_relay(server, seed=4)
    relay.partition()
    alice: ChatTestClient = await chat_client(server, "alice", udp_port=relay.port)
    bob: ChatTestClient = await chat_client(server, "bob")
    texts = [f"never udp {i}" for i in range(10)]
    paths = await send_all(alice, texts, "bob", window=10)
    assert paths == ["tcp"] * 10
    got = await collect_quick(bob, 10, timeout=15)
    assert sorted(m.text for m in got) == sorted(texts)
