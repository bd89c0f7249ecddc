"""Typed messages: the requests a client sends and the frames a server sends, as msgspec tagged unions.

Both directions tag on the JSON field `type`. Every struct also carries `type` as a class attribute, so a decoded
frame answers `frame.type == "message"` like the wire does. `from` is a Python keyword, so `Message.sender` is
renamed to `from` on the wire.

`decode_request` turns header bytes into a request or raises ProtocolViolation with `bad_request` or `unknown_type`
and a message that says which field was wrong (docs/protocol.md 1 and 8, "Request errors").
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec

from chat.protocol.errors import ErrorCode, ProtocolViolation
from chat.protocol.frames import encode_frame

INT64_MAX = 2**63 - 1
MAX_NESTING = 32  # docs/protocol.md 8: deeper headers are bad_request

Ref = str | Annotated[int, msgspec.Meta(ge=-INT64_MAX, le=INT64_MAX)]
MessageId = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
PageLimit = Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)]
ClientId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


# --- requests: client to server ------------------------------------------------------------------------------


class Request(msgspec.Struct, tag_field="type", kw_only=True):
    """Base of every client request; `ref` comes back in the reply."""

    type: ClassVar[str]
    ref: Ref | None = None


class Login(Request, tag="login", kw_only=True):
    type: ClassVar[str] = "login"
    nick: str
    protocol: Annotated[int, msgspec.Meta(ge=-INT64_MAX, le=INT64_MAX)]
    proof: str | None = None
    session: str | None = None
    since: MessageId | None = None
    caps: list[str] | None = None  # docs/protocol.md 10: extensions asked for; absent asks for none


class Ping(Request, tag="ping", kw_only=True):
    """Either side may ping; the answer is a `pong` with the same `t` (any JSON value, absent stays absent)."""

    type: ClassVar[str] = "ping"
    t: Any = msgspec.UNSET


class Pong(Request, tag="pong", kw_only=True):
    type: ClassVar[str] = "pong"
    t: Any = msgspec.UNSET


class Quit(Request, tag="quit", kw_only=True):
    type: ClassVar[str] = "quit"
    reason: str | None = None


class Join(Request, tag="join", kw_only=True):
    type: ClassVar[str] = "join"
    room: str
    since: MessageId | None = None
    resumed: bool = False  # docs/protocol.md 10.3: a rejoin after a lost connection


class Part(Request, tag="part", kw_only=True):
    type: ClassVar[str] = "part"
    room: str


class Say(Request, tag="say", kw_only=True):
    """A chat message to a room or (with `to`) to one nick; exactly one of the two."""

    type: ClassVar[str] = "say"
    room: str | None = None
    to: str | None = None
    text: str
    cid: ClientId | None = None


class HistoryQuery(Request, tag="history", kw_only=True):
    """A page of stored messages of a room, of a private conversation (`to`), or of all private ones."""

    type: ClassVar[str] = "history"
    room: str | None = None
    to: str | None = None
    private: bool = False
    before: MessageId | None = None
    after: MessageId | None = None
    limit: PageLimit | None = None


class Who(Request, tag="who", kw_only=True):
    """The members of a room; `after` and `limit` ask for one page of them (docs/protocol.md 10.4, lazy-members)."""

    type: ClassVar[str] = "who"
    room: str
    after: str | None = None
    limit: PageLimit | None = None


class Whois(Request, tag="whois", kw_only=True):
    """What may be shared about a nick: online or when last seen, its rooms, away text, idle time (protocol.md 3.13)."""

    type: ClassVar[str] = "whois"
    nick: str


class SetAway(Request, tag="away", kw_only=True):
    type: ClassVar[str] = "away"
    text: str | None = None


class ChangeNick(Request, tag="nick", kw_only=True):
    type: ClassVar[str] = "nick"
    nick: str


class ListRooms(Request, tag="rooms", kw_only=True):
    """The rooms that exist; `after` (a room name, exclusive, in folded order) asks for the page after it, as the
    `next` of the previous reply names it (docs/protocol.md 3.8: a list over the frame limit comes in pages)."""

    type: ClassVar[str] = "rooms"
    after: str | None = None


class QuickSend(Request, tag="quick", kw_only=True):
    """A quick message over TCP: one too big for a datagram, one whose datagram got no ACK (with its `seq`), or one
    from a client whose UDP is blocked (docs/protocol.md 6)."""

    type: ClassVar[str] = "quick"
    to: str | None = None
    room: str | None = None
    text: str
    nudge: bool = False
    seq: Annotated[int, msgspec.Meta(ge=1, le=2**32 - 1)] | None = None
    cid: ClientId | None = None


Sha256Hex = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
FileId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Offset = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
MAX_CHUNK = 64 * 1024  # docs/protocol.md 5: at most 64 KiB of data per file_chunk


class FileOffer(Request, tag="file_offer", kw_only=True):
    """Offer a file to a room or a nick; `name` is a display name only, never a path."""

    type: ClassVar[str] = "file_offer"
    room: str | None = None
    to: str | None = None
    name: str
    size: Offset
    sha256: Sha256Hex


class FileChunk(Request, tag="file_chunk", kw_only=True):
    """File data in the frame's payload, at `offset` (both directions use this type)."""

    type: ClassVar[str] = "file_chunk"
    fid: FileId
    offset: Offset


class FileDone(Request, tag="file_done", kw_only=True):
    type: ClassVar[str] = "file_done"
    fid: FileId


class FileGet(Request, tag="file_get", kw_only=True):
    type: ClassVar[str] = "file_get"
    fid: FileId
    offset: Offset = 0


class FileCancel(Request, tag="file_cancel", kw_only=True):
    """Stop this connection's download of `fid`, or set its upload aside (kept for a resume)."""

    type: ClassVar[str] = "file_cancel"
    fid: FileId


ClientRequest = (
    Login
    | Ping
    | Pong
    | Quit
    | Join
    | Part
    | Say
    | HistoryQuery
    | Who
    | Whois
    | SetAway
    | ChangeNick
    | ListRooms
    | QuickSend
    | FileOffer
    | FileChunk
    | FileDone
    | FileGet
    | FileCancel
)
REQUEST_TYPES = frozenset(cls.type for cls in ClientRequest.__args__)
_json_decoder = msgspec.json.Decoder()


class _StrictSay(msgspec.Struct, tag_field="type", tag="say", kw_only=True, forbid_unknown_fields=True):
    """`say` with no field beyond its own: every field typed, so decoding it checks everything `decode_request` does."""

    ref: Ref | None = None
    room: str | None = None
    to: str | None = None
    text: str
    cid: ClientId | None = None


class _NotSay(msgspec.Struct, tag_field="type", tag="", kw_only=True):
    """Never a request: in a union with `_StrictSay` it makes the `type` field required, which msgspec does not ask
    of a lone tagged struct (fuzz/fuzz_requests.py found `{"to":"o","text":"pk"}` taken for a say)."""


_strict_say_decoder = msgspec.json.Decoder(_StrictSay | _NotSay)


def decode_request(raw: bytes) -> Request:
    """Header bytes to a typed request; ProtocolViolation(bad_request | unknown_type) otherwise.

    The common `say` with only its own fields is decoded straight into its struct (typed decoding checks syntax,
    UTF-8 and every field's type and range); anything else, or anything that fails that way, takes the general path
    below, which finds the precise error.
    """
    try:
        say = _strict_say_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return _decode_request(raw)
    if not isinstance(say, _StrictSay):
        return _decode_request(raw)
    return Say(ref=say.ref, room=say.room, to=say.to, text=say.text, cid=say.cid)


def _decode_request(raw: bytes) -> Request:
    """The general path of `decode_request`.

    The header is first decoded as plain JSON, which checks syntax and UTF-8 everywhere, unknown fields included;
    then its nesting and integers are checked (docs/protocol.md 8, "Request errors"); then it is converted to the
    typed request, which names the field that is wrong.
    """
    try:
        value = _json_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise ProtocolViolation(ErrorCode.BAD_REQUEST, f"header is not valid JSON: {exc}") from None
    except RecursionError:  # msgspec gives up on nesting far deeper than MAX_NESTING
        raise _too_deep() from None
    if not isinstance(value, dict):
        raise ProtocolViolation(ErrorCode.BAD_REQUEST, f"header is a JSON {type(value).__name__}, not an object")
    ref = value.get("ref")
    if isinstance(ref, bool) or not (isinstance(ref, str) or (isinstance(ref, int) and abs(ref) <= INT64_MAX)):
        ref = None
    kind = value.get("type")
    if not isinstance(kind, str):
        raise ProtocolViolation(ErrorCode.BAD_REQUEST, "header has no string field `type`", ref)
    problem = json_value_problem(value)
    if problem is not None:
        raise ProtocolViolation(ErrorCode.BAD_REQUEST, problem, ref, kind)
    if kind not in REQUEST_TYPES:
        raise ProtocolViolation(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind!r}", ref, kind)
    try:
        request: Request = msgspec.convert(value, ClientRequest)
    except msgspec.ValidationError as exc:
        raise ProtocolViolation(ErrorCode.BAD_REQUEST, f"{kind}: {exc}", ref, kind) from None
    return request


def _too_deep() -> ProtocolViolation:
    return ProtocolViolation(ErrorCode.BAD_REQUEST, f"header nests deeper than {MAX_NESTING} levels")


def json_value_problem(value: Any, depth: int = 1) -> str | None:
    """Why a free-form JSON value breaks the header rules (nesting over 32, integers beyond int64), or None."""
    stack: list[tuple[Any, int]] = [(value, depth)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            if isinstance(item, int) and not isinstance(item, bool) and abs(item) > INT64_MAX:
                return "integer beyond the signed 64-bit range"
            continue
        if level > MAX_NESTING:
            return f"nesting deeper than {MAX_NESTING} levels"
        stack.extend((child, level + 1) for child in children)
    return None


# --- frames: server to client --------------------------------------------------------------------------------


class ServerFrame(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True):
    """Base of every frame the server sends; fields left at their default are not written."""

    type: ClassVar[str]


class Hello(ServerFrame, tag="hello", kw_only=True):
    type: ClassVar[str] = "hello"
    server: str
    protocol: int
    auth: str
    nonce: str


class UdpInfo(msgspec.Struct, kw_only=True):
    """This session's quick-message channel: the server's UDP port, the session id and its HMAC key (hex)."""

    port: int
    sid: int
    key: str


class Welcome(ServerFrame, tag="welcome", kw_only=True):
    type: ClassVar[str] = "welcome"
    nick: str
    session: str
    udp: UdpInfo
    limits: dict[str, float | int]
    caps: list[str] | None = None  # docs/protocol.md 10: present only when the login asked
    ref: Ref | None = None


class FileInfo(msgspec.Struct, kw_only=True):
    """A stored file, as a `message` announces it."""

    fid: str
    name: str
    size: int
    sha256: str


class Message(ServerFrame, tag="message", kw_only=True, rename={"sender": "from"}):
    """A stored chat message: `room` for a room, `to` for a private one; `cid` acknowledges the sender's say;
    `file` when it announces a file (its `text` is then the file's display name)."""

    type: ClassVar[str] = "message"
    # Not on the wire: True only on the client library's `ReplayedMessage` (chat.client.events), the context a
    # `join` without `since` replays; every frame read from the wire is a plain Message.
    replayed: ClassVar[bool] = False
    id: int
    room: str | None = None
    to: str | None = None
    sender: str
    text: str
    ts: int
    cid: str | None = None
    file: FileInfo | None = None


class Joined(ServerFrame, tag="joined", kw_only=True):
    type: ClassVar[str] = "joined"
    room: str
    members: list[str]
    messages: list[Message]
    truncated: bool
    member_count: int | None = None  # docs/protocol.md 10.4, lazy-members: `members` is then the first page
    ref: Ref | None = None


class Parted(ServerFrame, tag="parted", kw_only=True):
    type: ClassVar[str] = "parted"
    room: str
    ref: Ref | None = None


class Presence(ServerFrame, tag="presence", kw_only=True):
    """Someone joined, parted, quit, changed nick (`old`) or went away/back (`text`, absent when back)."""

    type: ClassVar[str] = "presence"
    room: str
    nick: str
    event: str
    old: str | None = None
    text: str | None = None
    # A join that is a rejoin after a lost connection. Written only inside `presences` (docs/protocol.md 10.2): the
    # plain `presence` frame never carries it (chat/server/tcp.py drops it).
    resumed: bool | None = None


class PresenceEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One presence event of a `presences` batch: `presence` without its room."""

    nick: str
    event: str
    old: str | None = None
    text: str | None = None
    resumed: bool | None = None


class Presences(ServerFrame, tag="presences", kw_only=True):
    """Presence events of one room, in order, as one frame (docs/protocol.md 10.2, presence-batch)."""

    type: ClassVar[str] = "presences"
    room: str
    events: list[PresenceEvent]


class HistoryPage(ServerFrame, tag="history", kw_only=True):
    type: ClassVar[str] = "history"
    room: str | None = None
    to: str | None = None
    private: bool = False
    messages: list[Message]
    truncated: bool
    ref: Ref | None = None


class Member(msgspec.Struct, kw_only=True):
    nick: str
    away: str | None


class Members(ServerFrame, tag="members", kw_only=True):
    type: ClassVar[str] = "members"
    room: str
    members: list[Member]
    # docs/protocol.md 3.7: the whole list (in join order) cut at the frame limit; written only when true
    truncated: bool = False
    # docs/protocol.md 10.4: a page (`who` with `after` or `limit`, lazy-members) has the room's member count and the
    # nick to pass as `after` for the next page, null after the last one; a whole list has neither.
    count: int | msgspec.UnsetType = msgspec.UNSET
    next: str | msgspec.UnsetType | None = msgspec.UNSET
    ref: Ref | None = None


class WhoisInfo(ServerFrame, tag="whois", kw_only=True):
    """The answer to `whois` (docs/protocol.md 3.13): for a nick in use, its rooms, away text, idle seconds and login
    time; for a nick held by an identity that is offline, when it last used it."""

    type: ClassVar[str] = "whois"
    nick: str
    online: bool
    rooms: list[str] | msgspec.UnsetType = msgspec.UNSET
    away: str | msgspec.UnsetType | None = msgspec.UNSET
    idle: float | msgspec.UnsetType = msgspec.UNSET
    connected: int | msgspec.UnsetType = msgspec.UNSET
    seen: int | msgspec.UnsetType = msgspec.UNSET
    ref: Ref | None = None


class AwayChanged(ServerFrame, tag="away", kw_only=True):
    """The answer to `away`; `text` is always written, null meaning back."""

    type: ClassVar[str] = "away"
    text: str | None
    ref: Ref | None = None


class NickChanged(ServerFrame, tag="nick", kw_only=True):
    type: ClassVar[str] = "nick"
    nick: str
    old: str
    ref: Ref | None = None


class RoomInfo(msgspec.Struct, kw_only=True):
    room: str
    members: int


class RoomList(ServerFrame, tag="rooms", kw_only=True):
    """Rooms in folded-name order; `next`, written only when the list was cut at the frame limit, is the `after` of
    the request for the rest (docs/protocol.md 3.8)."""

    type: ClassVar[str] = "rooms"
    rooms: list[RoomInfo]
    next: str | None = None
    ref: Ref | None = None


class ServerPing(ServerFrame, tag="ping", kw_only=True):
    type: ClassVar[str] = "ping"
    t: Any = msgspec.UNSET
    ref: Ref | None = None


class ServerPong(ServerFrame, tag="pong", kw_only=True):
    type: ClassVar[str] = "pong"
    t: Any = msgspec.UNSET
    ref: Ref | None = None


class Error(ServerFrame, tag="error", kw_only=True):
    """An error; `seq` names the quick-message datagram it refuses, when it refuses one (docs/protocol.md 8, UDP)."""

    type: ClassVar[str] = "error"
    code: str
    message: str
    ref: Ref | None = None
    seq: int | None = None


class QuickMessage(ServerFrame, tag="quick", kw_only=True, rename={"sender": "from"}):
    """A quick message (not stored), over whichever path carried it; clients drop a `qid` they already hold."""

    type: ClassVar[str] = "quick"
    qid: int
    sender: str
    to: str | None = None
    room: str | None = None
    text: str
    nudge: bool = False
    ts: int


class FileReady(ServerFrame, tag="file_ready", kw_only=True):
    """The answer to `file_offer`: send chunks from `offset` (0, or where a resumed upload goes on)."""

    type: ClassVar[str] = "file_ready"
    fid: str
    offset: int
    ref: Ref | None = None


class FileStored(ServerFrame, tag="file_stored", kw_only=True):
    """The answer to `file_done`: the file is stored and announced as message `id`."""

    type: ClassVar[str] = "file_stored"
    fid: str
    id: int
    ref: Ref | None = None


class FileData(ServerFrame, tag="file_chunk", kw_only=True):
    """A chunk of a download; the data is the frame's payload (`data` is filled in by the reader, never sent)."""

    type: ClassVar[str] = "file_chunk"
    fid: str
    offset: int
    data: bytes = b""


class FileCancelled(ServerFrame, tag="file_cancelled", kw_only=True):
    """The answer to `file_cancel` (also when nothing of that fid was running)."""

    type: ClassVar[str] = "file_cancelled"
    fid: str
    ref: Ref | None = None


class FileEnd(ServerFrame, tag="file_end", kw_only=True):
    """The end of a download: every chunk was sent; `sha256` covers the whole file."""

    type: ClassVar[str] = "file_end"
    fid: str
    sha256: str
    size: int
    ref: Ref | None = None


class QuickOk(ServerFrame, tag="quick_ok", kw_only=True):
    """The answer to a TCP `quick`: the message was accepted and delivered as `qid`."""

    type: ClassVar[str] = "quick_ok"
    qid: int
    ref: Ref | None = None


ServerMessage = (
    Hello
    | Welcome
    | Message
    | Joined
    | Parted
    | Presence
    | Presences
    | HistoryPage
    | Members
    | WhoisInfo
    | AwayChanged
    | NickChanged
    | RoomList
    | ServerPing
    | ServerPong
    | Error
    | QuickMessage
    | QuickOk
    | FileReady
    | FileStored
    | FileData
    | FileEnd
    | FileCancelled
)
SERVER_TYPES = frozenset(cls.type for cls in ServerMessage.__args__)
_server_decoder = msgspec.json.Decoder(ServerMessage)
_encoder = msgspec.json.Encoder()


def decode_server_frame(raw: bytes) -> ServerFrame:
    """Header bytes from a server to a typed frame; raises msgspec errors on anything else."""
    frame: ServerFrame = _server_decoder.decode(raw)
    return frame


def encode_header(message: msgspec.Struct) -> bytes:
    """The JSON header of a message (UTF-8, no escapes for non-ASCII)."""
    return _encoder.encode(message)


def encode(message: msgspec.Struct, payload: bytes = b"") -> bytes:
    """A whole frame for a message: encode once, then the same bytes can go to every recipient."""
    return encode_frame(_encoder.encode(message), payload)


def encode_error(code: ErrorCode, message: str, ref: Ref | None = None, seq: int | None = None) -> bytes:
    """An `error` frame."""
    return encode(Error(code=code.value, message=message, ref=ref, seq=seq))
