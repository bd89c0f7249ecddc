"""Fault injection for tests, the object behind `chat_faults`: cut or stall a client's TCP link, put a lossy UDP relay
in front of a server."""

from __future__ import annotations

from typing import Any

from chat.client import Client
from chat.testing.relay import LinkFaults, UdpRelay


class ChatFaults:
    """Faults a test can cause: `cut`, `stall`/`resume` for a client's TCP link, `udp_relay` for UDP.

    At the end of the test every stalled link is resumed (so its client can quit cleanly) and every relay closed.
    """

    def __init__(self) -> None:
        self.relays: list[UdpRelay] = []
        self._stalled: set[Client] = set()

    def cut(self, client: Client) -> None:
        """Cut the client's TCP connection now, as a network failure would; the client reconnects and resumes."""
        client.drop_connection()

    def stall(self, client: Client) -> None:
        """Stop reading the client's TCP connection (the server's data piles up in the socket buffers, then in the
        server's send queue) until `resume(client)`. Holds for the current connection only: a reconnection reads."""
        if not client.pause_reading():
            raise RuntimeError(f"{client!r} has no open connection to stall")
        self._stalled.add(client)

    def resume(self, client: Client) -> None:
        """Read the client's connection again after `stall(client)`."""
        if client not in self._stalled:
            raise RuntimeError(f"{client!r} is not stalled")
        self._stalled.discard(client)
        client.resume_reading()

    async def udp_relay(
        self,
        target: Any,
        *,
        seed: int | str = 0,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay: float = 0.0,
        delay_range: tuple[float, float] = (0.01, 0.1),
        up: LinkFaults | None = None,
        down: LinkFaults | None = None,
        **relay_options: Any,
    ) -> UdpRelay:
        """A started `UdpRelay` on 127.0.0.1 in front of `target`'s UDP port: a server (its `.host` and
        `.udp_port`) or a `(host, port)` pair. Clients send to `relay.port` instead of the server's UDP port.

        `loss`, `duplicate`, `reorder`, `delay` and `delay_range` apply to both directions unless `up` (client to
        server) or `down` (server to client) give a direction its own `LinkFaults`. The same `seed` makes the same
        choices for the same traffic. `relay_options`: `max_queue`, `max_peers`, `hold_timeout`.
        """
        address = (str(target[0]), int(target[1])) if isinstance(target, tuple) else (target.host, target.udp_port)
        both = LinkFaults(loss=loss, duplicate=duplicate, reorder=reorder, delay=delay, delay_range=delay_range)
        relay = UdpRelay(address, seed=seed, up=up or both, down=down or both, **relay_options)
        await relay.start()
        self.relays.append(relay)
        return relay

    async def aclose(self) -> None:
        for client in list(self._stalled):
            self.resume(client)
        for relay in reversed(self.relays):
            await relay.aclose()
