"""The TLS port: its context and the connection that speaks the chat protocol inside TLS.

The TLS listener is `create_server(ssl=..., ssl_handshake_timeout=[limits] tls_handshake_timeout)`: asyncio runs the
handshake (TLS 1.2 or later) and cuts one that takes longer; a completed handshake makes the same `TcpConnection`
read loop, session and frames as on the plain port, admitted by the same limits: only the transport differs
(docs/protocol.md 1.11). Known gap: a connection still in its handshake is not yet counted by the per-address
limits (the handshake timeout bounds how long it holds a descriptor).
"""

from __future__ import annotations

import ssl
from pathlib import Path

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
