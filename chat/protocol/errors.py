"""Error codes of the wire protocol and the exceptions that carry them.

    ChatError
     +-- ProtocolViolation        the peer broke a rule; answered with an `error` frame carrying `code`
     |    +-- FrameTooLarge       a declared length is over its limit (closes the connection)
     +-- ServerError              an `error` frame received by a client (see chat.client)
     +-- StoreError               the history store cannot do what was asked (see chat.store.errors)
     +-- TlsUnavailable           the TLS port cannot be opened: certificate, key or port (see chat.server.tls)

`CLOSING_CODES` lists the codes after which the server closes the connection (docs/protocol.md 8).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Every `error.code` the server sends; docs/protocol.md section 7 describes each."""

    BAD_REQUEST = "bad_request"
    UNKNOWN_TYPE = "unknown_type"
    FRAME_TOO_LARGE = "frame_too_large"
    SERVER_BUSY = "server_busy"
    NOT_LOGGED_IN = "not_logged_in"
    ALREADY_LOGGED_IN = "already_logged_in"
    BAD_NICK = "bad_nick"
    NICK_TAKEN = "nick_taken"
    AUTH_FAILED = "auth_failed"
    PROTOCOL_MISMATCH = "protocol_mismatch"
    SESSION_TAKEN = "session_taken"
    BAD_ROOM = "bad_room"
    BAD_TEXT = "bad_text"
    NO_SUCH_ROOM = "no_such_room"
    NOT_IN_ROOM = "not_in_room"
    NO_SUCH_NICK = "no_such_nick"
    NICK_OFFLINE = "nick_offline"
    FILE_TOO_LARGE = "file_too_large"
    FILE_CHECKSUM = "file_checksum"
    FILE_OFFSET = "file_offset"
    NO_SUCH_FILE = "no_such_file"
    QUOTA_EXCEEDED = "quota_exceeded"
    TOO_MANY_UPLOADS = "too_many_uploads"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_CLIENTS = "too_many_clients"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    CONNECTING_TOO_FAST = "connecting_too_fast"
    TOO_MANY_LOGINS = "too_many_logins"
    TOO_MANY_IDENTITIES = "too_many_identities"
    STORAGE_RATE_LIMITED = "storage_rate_limited"
    TIMEOUT = "timeout"
    SERVER_SHUTDOWN = "server_shutdown"
    INTERNAL_ERROR = "internal_error"


# docs/protocol.md 8, "Which errors close the connection". A refused login always closes, whatever its code.
CLOSING_CODES = frozenset(
    {
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.SERVER_BUSY,
        ErrorCode.SESSION_TAKEN,
        ErrorCode.TOO_MANY_CLIENTS,
        ErrorCode.TOO_MANY_CONNECTIONS,
        ErrorCode.CONNECTING_TOO_FAST,
        ErrorCode.SERVER_SHUTDOWN,
        ErrorCode.TIMEOUT,
    }
)


class ChatError(Exception):
    """Base of every exception this package raises on purpose."""


class ProtocolViolation(ChatError):
    """The peer sent something the protocol refuses; `code` is the error code to answer with."""

    def __init__(
        self, code: ErrorCode, message: str, ref: str | int | None = None, request_type: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref  # the request's `ref`, when it could be read, so the error frame can echo it
        self.request_type = request_type  # the request's `type`, when it could be read


class FrameTooLarge(ProtocolViolation):
    """A frame declared a header or payload length outside the configured limits."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.FRAME_TOO_LARGE, message)
