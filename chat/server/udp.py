"""The UDP endpoint of the quick-message channel: an asyncio DatagramProtocol over the sans-I/O `QuickRouter`.

It only moves bytes and time: datagrams in (with the loop's clock), datagrams out, and one timer set to the router's
next retransmission deadline.
"""

from __future__ import annotations

import asyncio
import logging

from chat.core.quick import Address, QuickRouter
from chat.timer import DeadlineTimer

logger = logging.getLogger("chat.server.udp")


class QuickChannel(asyncio.DatagramProtocol):
    """Receives datagrams on the server's UDP port and runs the router's retransmission timer."""

    def __init__(self, router: QuickRouter) -> None:
        self.router = router
        self.transport: asyncio.DatagramTransport | None = None
        self._loop = asyncio.get_running_loop()
        self._timer = DeadlineTimer(self._loop, self._tick)
        router.send_datagram = self._send
        router.wake_at = self._timer.arm

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.router.datagram_received(data, addr, self._loop.time())

    def error_received(self, exc: Exception) -> None:
        """ICMP errors (port unreachable: a client went away) say nothing useful; count them, keep serving."""
        self.router.stats["icmp_errors"] += 1
        logger.debug("udp error: %s", exc)

    def _send(self, data: bytes, address: Address) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.router.stats["sent"] += 1
            self.transport.sendto(data, address)

    def _tick(self) -> None:
        next_deadline = self.router.poll(self._loop.time())
        if next_deadline is not None:
            self._timer.arm(next_deadline)

    def close(self) -> None:
        self._timer.cancel()
        if self.transport is not None:
            self.transport.close()
