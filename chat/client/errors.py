"""Exceptions of the client library.

    ChatError                      chat.protocol.errors: base of everything this project raises on purpose
     +-- ClientError               base of everything chat.client raises on purpose
          +-- ServerError          the server answered a request with `error`; carries `code` and `message`
          |    +-- LoginRefused    the server refused the login (auth_failed, bad_nick, nick_taken, ...)
          +-- ConnectionLost       the connection dropped before the request was answered (also a ConnectionError)
          +-- ClientClosed         the client has ended (quit, close, session_taken, a refused re-login)
          +-- ProtocolError        the server sent something this client cannot read
          +-- TlsTrustError        the server's TLS certificate cannot be trusted: never retried by itself
               +-- UntrustedCertificate  another certificate than the trusted one (changed since first use, not
               |                         the pinned one, or failing the CA file's verification)
               +-- KnownHostsError       the known-hosts file cannot be read

`FATAL_LOGIN_CODES` are the login refusals that no retry can fix: a client that meets one of them while resuming
ends instead of trying again (docs/protocol.md 8, "Which errors close the connection", and "Takeover").
"""

from __future__ import annotations

from chat.protocol.errors import ChatError, ErrorCode

FATAL_LOGIN_CODES = frozenset(
    {
        ErrorCode.AUTH_FAILED,
        ErrorCode.BAD_NICK,
        ErrorCode.NICK_TAKEN,
        ErrorCode.PROTOCOL_MISMATCH,
        ErrorCode.BAD_REQUEST,
    }
)


class ClientError(ChatError):
    """Base of every exception the client library raises on purpose."""


class ServerError(ClientError):
    """The server answered a request with an `error` frame.

    `code` is the stable identifier (compare with `chat.protocol.errors.ErrorCode`), `message` is for humans.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class LoginRefused(ServerError):
    """The server refused the login; raised by `connect()`, or the reason a resuming client ended."""


class ConnectionLost(ClientError, ConnectionError):
    """The connection dropped before a request was answered.

    A client with `reconnect=True` retries its requests after the resume, so callers only meet this while
    `connect()` is still setting up the first connection.
    """


class ClientClosed(ClientError):
    """The client has ended and takes no more requests; `recv()` raises it once every event has been read.

    `code` is the server's error code when the server ended it (`session_taken`, `nick_taken` on a re-login, ...)
    and None when the caller quit or closed it, or the link was lost with reconnecting turned off.
    """

    def __init__(self, reason: str, code: str | None = None) -> None:
        super().__init__(reason if code is None else f"{code}: {reason}")
        self.reason = reason
        self.code = code


class ProtocolError(ClientError):
    """The server sent a frame this client cannot decode, or broke the order the protocol promises."""


class TlsTrustError(ClientError):
    """The server's TLS certificate cannot be trusted; a resuming client ends rather than retry (someone may be in
    the middle), and nothing was sent to the server over that connection."""


class UntrustedCertificate(TlsTrustError):
    """The server's certificate is not the one trusted for it; the message says which was expected and which was
    seen, and how to accept the new one if it is genuine.

    `expected` and `found` are `sha256:...` fingerprints (`expected` None when a CA file's verification failed).
    """

    def __init__(self, message: str, *, address: str, expected: str | None, found: str | None) -> None:
        super().__init__(message)
        self.address = address
        self.expected = expected
        self.found = found


class KnownHostsError(TlsTrustError):
    """The known-hosts file has a line that is not `HOST:PORT sha256:HEX`, or cannot be read: the message names the
    file and the line. Not ignored, since ignoring a line would trust a changed certificate on first use again."""
