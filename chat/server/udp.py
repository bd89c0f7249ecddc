"""The UDP endpoint of the quick-message channel.

The foundation opens it on `[server] udp_port` and hands each session its sid and key in `welcome`; the quick-message
behaviour (PROTOCOL.md 6) is built on it separately. Until then every datagram is dropped without reply, as the
protocol requires for anything it cannot verify, and counted.
"""

from __future__ import annotations

import asyncio
import logging

logger = logging.getLogger("chat.server.udp")


class QuickChannel(asyncio.DatagramProtocol):
    """Receives datagrams on the server's UDP port."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.dropped += 1  # no reply: no amplification, no oracle (PROTOCOL.md 6)

    def error_received(self, exc: Exception) -> None:
        logger.debug("udp error: %s", exc)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
