"""A seeded UDP relay for fault-injection tests: it loses, doubles, reorders and delays datagrams, per direction.

    client --up-->   [front socket, relay.port] --> one upstream socket per client address --> target
    client <--down-- [front socket]             <-- that upstream socket                   <-- target

A client sends to the relay's port instead of the target's; the target sees each client as the address of its own
upstream socket (like a NAT), and whatever the target sends there comes back to that client.

Invariants:
- Each direction draws the same five numbers from its own `random.Random` for every datagram, seeded from the seed
  and the direction's name. So which datagram is lost, doubled, held back or delayed depends only on the seed and
  the datagram's position in its direction: not on timing, not on the other direction, not on the other fault
  settings (raising `duplicate` never changes which datagrams are lost).
- Everything is bounded: at most `max_peers` client addresses, at most `max_queue` datagrams waiting per direction
  (delayed, or queued for a new peer's upstream socket), at most one datagram held back for reordering per peer and
  direction. Past a bound a datagram is dropped and counted in `overflowed`.
- Nothing waits on a sleep: a held-back datagram leaves after the next datagram of its peer and direction, or after
  `hold_timeout` if none comes; a delayed one leaves after its delay. `close()` cancels what is still waiting.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

logger = logging.getLogger("chat.testing.relay")

Address = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class LinkFaults:
    """What happens to the datagrams of one direction; each is a probability per datagram, 0 to 1.

    `loss`: dropped. `duplicate`: sent twice. `reorder`: held back and sent after the next datagram of the same peer
    and direction (or after the relay's `hold_timeout` when none follows). `delay`: sent after a delay drawn
    uniformly from `delay_range` seconds (which reorders it behind later datagrams too).
    """

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0
    delay_range: tuple[float, float] = (0.01, 0.1)

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder", "delay"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability from 0 to 1, not {value!r}")
        low, high = self.delay_range
        if not 0.0 <= low <= high:
            raise ValueError(f"delay_range must be (low, high) seconds with 0 <= low <= high, not {self.delay_range!r}")


NO_FAULTS = LinkFaults()


@dataclass(slots=True)
class LinkStats:
    """Counters of one direction; `received == dropped + overflowed + (delivered - duplicated)` once all has left."""

    received: int = 0  # datagrams that came in
    delivered: int = 0  # datagrams sent on, a duplicate counting as one more
    dropped: int = 0  # lost on purpose (`loss`)
    duplicated: int = 0  # extra copies sent (`duplicate`)
    reordered: int = 0  # held back and sent after a later datagram (`reorder`)
    delayed: int = 0  # sent after a delay (`delay`)
    overflowed: int = 0  # dropped because a bound was reached (`max_queue`, `max_peers`)

    def __str__(self) -> str:
        return ", ".join(f"{item.name} {getattr(self, item.name)}" for item in fields(self))


@dataclass(slots=True)
class RelayStats:
    """The counters of both directions: `up` is client to target, `down` target to client."""

    up: LinkStats = field(default_factory=LinkStats)
    down: LinkStats = field(default_factory=LinkStats)

    def __str__(self) -> str:
        return f"up: {self.up}; down: {self.down}"


class _Outlet:
    """Where one peer's datagrams of one direction leave, with the datagram held back for reordering, if any."""

    def __init__(self, send: Callable[[bytes], None]) -> None:
        self.send = send
        self.held: bytes | None = None
        self.held_copies = 0
        self.release_timer: asyncio.TimerHandle | None = None


class _Link:
    """One direction: draws the fault decisions and sends, holds or schedules each datagram."""

    def __init__(self, relay: UdpRelay, name: str, seed: int | str, stats: LinkStats) -> None:
        self.relay = relay
        self.name = name
        self.rng = random.Random(f"{seed}:{name}")
        self.stats = stats
        self.waiting = 0  # datagrams scheduled for later (delayed), against max_queue

    @property
    def faults(self) -> LinkFaults:
        return self.relay.up if self.name == "up" else self.relay.down

    def push(self, data: bytes, outlet: _Outlet) -> None:
        stats, faults = self.stats, self.faults
        stats.received += 1
        lost, doubled, held, delayed, amount = (self.rng.random() for _ in range(5))  # always five draws
        if lost < faults.loss:
            stats.dropped += 1
            return
        copies = 2 if doubled < faults.duplicate else 1
        if delayed < faults.delay:
            if self.waiting >= self.relay.max_queue:
                stats.overflowed += 1
                return
            low, high = faults.delay_range
            self.waiting += 1
            stats.delayed += 1
            self.relay._call_later(low + amount * (high - low), self._deliver_delayed, data, copies, outlet)
            return
        if held < faults.reorder and outlet.held is None:
            outlet.held, outlet.held_copies = data, copies
            outlet.release_timer = self.relay._call_later(self.relay.hold_timeout, self._release, outlet, False)
            return
        self._deliver(data, copies, outlet)
        self._release(outlet, True)

    def _deliver(self, data: bytes, copies: int, outlet: _Outlet) -> None:
        for _ in range(copies):
            outlet.send(data)
        self.stats.delivered += copies
        self.stats.duplicated += copies - 1

    def _deliver_delayed(self, data: bytes, copies: int, outlet: _Outlet) -> None:
        self.waiting -= 1
        self._deliver(data, copies, outlet)

    def _release(self, outlet: _Outlet, behind_a_later_one: bool) -> None:
        if outlet.held is None:
            return
        data, copies = outlet.held, outlet.held_copies
        outlet.held = None
        if outlet.release_timer is not None:
            outlet.release_timer.cancel()
            outlet.release_timer = None
        if behind_a_later_one:
            self.stats.reordered += 1
        self._deliver(data, copies, outlet)


class _Front(asyncio.DatagramProtocol):
    """The relay's socket that clients send to."""

    def __init__(self, relay: UdpRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.relay._from_client(data, addr)

    def error_received(self, exc: Exception) -> None:
        logger.debug("relay front: %s", exc)


class _Upstream(asyncio.DatagramProtocol):
    """One client's socket towards the target: what the target sends to it goes back to that client."""

    def __init__(self, relay: UdpRelay, peer: _Peer) -> None:
        self.relay = relay
        self.peer = peer

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.relay._from_target(data, self.peer)

    def error_received(self, exc: Exception) -> None:
        logger.debug("relay upstream for %r: %s", self.peer.client, exc)  # e.g. the target is down: like a loss


class _Peer:
    """A client address, its upstream socket (once open) and its two outlets."""

    def __init__(self, relay: UdpRelay, client: Address) -> None:
        self.relay = relay
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] = []  # sent up before the upstream socket was open
        self.up = _Outlet(self._send_up)
        self.down = _Outlet(self._send_down)

    def _send_up(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.sendto(data)
        elif len(self.pending) < self.relay.max_queue:
            self.pending.append(data)
        else:
            self.relay.stats.up.overflowed += 1
            self.relay.stats.up.delivered -= 1

    def _send_down(self, data: bytes) -> None:
        front = self.relay._front_transport
        if front is not None:
            front.sendto(data, self.client)

    def opened(self, transport: asyncio.DatagramTransport) -> None:
        self.transport = transport
        pending, self.pending = self.pending, []
        for data in pending:
            transport.sendto(data)


class UdpRelay:
    """A UDP relay on `host:port` in front of `target`, with seeded faults per direction (see the module doc).

    `up` (client to target) and `down` (target to client) are `LinkFaults` and may be replaced at any time;
    `heal()` sets both to no faults, `partition()` to losing everything. `stats` counts what happened, and
    `wait_until(predicate)` waits for the counters to get somewhere, with a timeout.
    """

    def __init__(
        self,
        target: tuple[str, int],
        *,
        seed: int | str = 0,
        up: LinkFaults = NO_FAULTS,
        down: LinkFaults = NO_FAULTS,
        host: str = "127.0.0.1",
        max_queue: int = 1024,
        max_peers: int = 64,
        hold_timeout: float = 0.05,
    ) -> None:
        if max_queue < 1 or max_peers < 1 or hold_timeout <= 0:
            raise ValueError("max_queue and max_peers must be at least 1, hold_timeout above 0")
        self.target = target
        self.seed = seed
        self.up = up
        self.down = down
        self.host = host
        self.port = 0
        self.max_queue = max_queue
        self.max_peers = max_peers
        self.hold_timeout = hold_timeout
        self.stats = RelayStats()
        self._up = _Link(self, "up", seed, self.stats.up)
        self._down = _Link(self, "down", seed, self.stats.down)
        self._front_transport: asyncio.DatagramTransport | None = None
        self._peers: dict[Address, _Peer] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._openers: set[asyncio.Task[None]] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"<UdpRelay {self.host}:{self.port} -> {self.target[0]}:{self.target[1]} seed={self.seed!r}>"

    @property
    def address(self) -> tuple[str, int]:
        """Where clients send: the relay's host and port."""
        return (self.host, self.port)

    @property
    def peers(self) -> list[Address]:
        """The client addresses seen so far."""
        return list(self._peers)

    async def start(self) -> UdpRelay:
        """Bind the front socket (port 0: any free port, in `.port`)."""
        self._loop = asyncio.get_running_loop()
        transport, _ = await self._loop.create_datagram_endpoint(lambda: _Front(self), local_addr=(self.host, 0))
        self._front_transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    async def __aenter__(self) -> UdpRelay:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def heal(self) -> None:
        """No more faults in either direction (datagrams already delayed or held still leave as planned)."""
        self.up = self.down = NO_FAULTS

    def partition(self) -> None:
        """Lose every datagram in both directions until `heal()` or new faults."""
        self.up = self.down = LinkFaults(loss=1.0)

    async def wait_until(self, predicate: Callable[[RelayStats], bool], timeout: float = 5.0) -> RelayStats:
        """Wait until `predicate(stats)` holds; AssertionError showing the counters after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                while not predicate(self.stats):
                    waiter = loop.create_future()
                    self._waiters.append(waiter)
                    await waiter
        except TimeoutError:
            raise AssertionError(f"{self!r}: not there after {timeout:g} s; {self.stats}") from None
        return self.stats

    async def aclose(self) -> None:
        """Close every socket and cancel what still waits (delayed and held datagrams are lost)."""
        self.close()
        if self._openers:
            await asyncio.gather(*self._openers, return_exceptions=True)

    def close(self) -> None:
        """Close at once (from synchronous code); `aclose()` also waits for upstream sockets still opening."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for task in self._openers:
            task.cancel()
        for peer in self._peers.values():
            if peer.transport is not None:
                peer.transport.close()
        if self._front_transport is not None:
            self._front_transport.close()
            self._front_transport = None
        self._notify()

    # --- the plumbing ---------------------------------------------------------------------------------------------

    def _call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
        assert self._loop is not None

        def fire() -> None:
            self._timers.discard(handle)
            if self._front_transport is not None:
                callback(*args)
                self._notify()

        handle = self._loop.call_later(delay, fire)
        self._timers.add(handle)
        return handle

    def _from_client(self, data: bytes, addr: Address) -> None:
        peer = self._peers.get(addr)
        if peer is None:
            if len(self._peers) >= self.max_peers:
                self.stats.up.received += 1
                self.stats.up.overflowed += 1
                self._notify()
                return
            peer = self._peers[addr] = _Peer(self, addr)
            task = asyncio.ensure_future(self._open_upstream(peer))
            self._openers.add(task)
            task.add_done_callback(self._openers.discard)
        self._up.push(data, peer.up)
        self._notify()

    def _from_target(self, data: bytes, peer: _Peer) -> None:
        if self._front_transport is None:
            return
        self._down.push(data, peer.down)
        self._notify()

    async def _open_upstream(self, peer: _Peer) -> None:
        assert self._loop is not None
        try:
            transport, _ = await self._loop.create_datagram_endpoint(
                lambda: _Upstream(self, peer), remote_addr=self.target
            )
        except OSError as exc:
            logger.warning("relay: cannot open a socket towards %r: %s", self.target, exc)
            return
        if self._front_transport is None:  # closed meanwhile
            transport.close()
            return
        peer.opened(transport)

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
