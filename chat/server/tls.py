"""The TLS port: its context, the protocol that holds a connection until its handshake, and the TLS connection.

A connection to the TLS port is admitted exactly as a plain one (`max_clients` and the per-address limits count it
from its first moment, docs/security.md), then upgraded with `loop.start_tls` under `[limits] tls_handshake_timeout`;
only a completed handshake is greeted with `hello`. From there on it is the same `TcpConnection` read loop, session
and frames as on the plain port: only the transport differs (docs/protocol.md, TLS).

Why not `create_server(ssl=...)`: there the handshake runs before the application sees the connection, so a host
that opens sockets and never sends a ClientHello would hold descriptors that no per-address limit counts.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import cast

from chat.protocol.errors import ChatError
from chat.server.tcp import TcpConnection

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


class TlsUnavailable(ChatError):
    """The TLS port cannot be opened: its certificate or key cannot be read or used, or its port is taken."""


def server_context(cert: str, key: str = "") -> ssl.SSLContext:
    """The TLS context of the TLS port: TLS 1.2 or later, the certificate chain of `cert`, the key of `key` (or of
    `cert` when empty). TlsUnavailable names the file at fault and why, in one line."""
    for what, path in (("certificate", cert), ("private key", key or cert)):
        try:
            with Path(path).open("rb"):
                pass
        except OSError as exc:
            raise TlsUnavailable(f"cannot read the TLS {what} {path}: {(exc.strerror or str(exc)).lower()}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    try:
        context.load_cert_chain(cert, key or None)
    except ssl.SSLError as exc:
        files = cert if not key else f"{cert} with the key {key}"
        raise TlsUnavailable(f"cannot use the TLS certificate {files}: {exc.reason or exc}") from None
    return context


class TlsAcceptor(asyncio.Protocol):
    """The first protocol of a connection to the TLS port: stops reading (the ClientHello waits in the kernel) and
    hands the transport on, to be admitted and upgraded."""

    __slots__ = ("_accepted", "upgrade")

    def __init__(self, accepted: Callable[[asyncio.Transport, TlsAcceptor], None]) -> None:
        self._accepted = accepted
        self.upgrade: asyncio.Task[None] | None = None  # the handshake, once the connection is admitted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's subclasses
        stream.pause_reading()
        self._accepted(stream, self)

    def connection_lost(self, exc: Exception | None) -> None:
        """Gone before `start_tls` took the transport over: nothing to upgrade."""
        if self.upgrade is not None:
            self.upgrade.cancel()


class TlsConnection(TcpConnection):
    """A `TcpConnection` over TLS: what differs is only how the end of the stream reads."""

    __slots__ = ()

    def eof_received(self) -> bool:
        self.reader.feed_eof()
        return False  # a TLS transport closes itself after close_notify; asyncio warns when asked to keep it

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, ssl.SSLError):  # a broken record is a lost connection, as a reset is
            exc = ConnectionResetError(f"TLS error: {exc.reason or exc}")
        super().connection_lost(exc)
