"""What the server does with each request: login, rooms, messages, presence, history. Listener-agnostic.

The service sees connections only as `Session`s with a `Peer` (chat/core/ports.py) and sends them typed events;
shared state (rooms, ids, who is connected, nick holds) is the engine's, history is the store's.

Invariants (docs/protocol.md 8):
- One connection per identity; a login with an identity's token takes over (the old one gets `session_taken`).
- A `message` goes out only after its commit (the store's group commit), to the members of its room at that
  moment, or to the sender and the recipient of a private message; it is encoded once per codec.
- A joiner gets each message exactly once: the room's watermark splits the history page from the live messages
  held while the page is read (chat/core/rooms.py).
- Errors answer one request and keep the connection, except at login and the codes in CLOSING_CODES.
- Requests of one connection are handled in order: a handler that awaits (login, join, history) holds that
  connection's reading, never anyone else's.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import msgspec

from chat import __version__
from chat.config import Config
from chat.core.admission import AddressBook, address_key, address_limits
from chat.core.files import FileService
from chat.core.limits import TokenBucket
from chat.core.ports import Store
from chat.core.quick import QuickRouter
from chat.core.rooms import Room
from chat.core.session import Session, State
from chat.engine.local import LocalEngine
from chat.protocol import caps as extensions
from chat.protocol import messages as wire
from chat.protocol import pages
from chat.protocol.auth import new_nonce, new_session_token, verify_proof
from chat.protocol.errors import ErrorCode, ProtocolViolation
from chat.protocol.frames import MAX_SERVER_HEADER
from chat.protocol.names import checked_nick, checked_room, checked_text, fold
from chat.store.history import Appended, Draft, FileRecord, Page, Scope, StoredMessage, now_ms

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
HISTORY_LIMIT_DEFAULT = 50
HISTORY_LIMIT_MAX = 100
# docs/protocol.md 1.8: a header of this many bytes or more spends one token per such part before it is decoded, so the
# work of decoding it (about 12 ms for 64 KiB of small integers) is paid for first, and over the rate it is not done
HEADER_TOKEN_BYTES = 1024
ROOM_KEY_CACHE = 4096
# docs/security.md, Stored bytes: what one stored message costs besides its text (its row, ids, nicks, cid and
# index entries, roughly), so that many short messages count too
STORED_MESSAGE_BYTES = 100
_size_encoder = msgspec.json.Encoder()


def json_size(item: msgspec.Struct) -> int:
    """The length of an item's JSON encoding, as the TCP codec writes it (chat/protocol/pages.py)."""
    return len(_size_encoder.encode(item))


Handler = Callable[[Session, Any], Awaitable[None] | None]


class Target(msgspec.Struct, frozen=True, gc=False):
    """Where a message goes: a room (display name and folded key) or a recipient nick and the identity behind it."""

    room_name: str | None = None
    room_key: str | None = None
    recipient: str | None = None
    recipient_key: str | None = None
    recipient_identity: int | None = None


def to_wire(message: StoredMessage) -> wire.Message:
    """The `message` event of a stored message."""
    file = message.file
    return wire.Message(
        id=message.id,
        room=message.room,
        to=message.recipient,
        sender=message.sender,
        text=message.text,
        ts=message.ts,
        cid=message.cid,
        file=None if file is None else wire.FileInfo(fid=file.fid, name=file.name, size=file.size, sha256=file.sha256),
    )


def fit_page(
    build: Callable[[list[wire.Message], bool], wire.ServerFrame],
    page: Page,
    keep_oldest: bool,
    *,
    limit: int = MAX_SERVER_HEADER,
    size: Callable[[msgspec.Struct], int] = json_size,
) -> wire.ServerFrame:
    """A `joined` or `history` event whose header fits in `limit` (docs/protocol.md 3.11, "the 1 MiB cut").

    Messages are taken from the near end of the page (the oldest with `keep_oldest`, else the newest), each encoded
    once to add up its size (chat/protocol/pages.py), and the first that would pass the limit ends the page, which
    is then `truncated`: the event is never encoded here, only once when it is written."""
    stored = page.messages
    nearest_first: Iterable[StoredMessage] = stored if keep_oldest else reversed(stored)
    budget = pages.list_budget(size(build([], False)), limit)  # `false` is the longer of the two
    messages, cut = pages.fit(map(to_wire, nearest_first), size, budget)
    if not keep_oldest:
        messages.reverse()
    return build(messages, page.truncated or cut)


class ChatService:
    """The server's behaviour, independent of how connections are accepted."""

    def __init__(
        self,
        config: Config,
        store: Store,
        engine: LocalEngine,
        clock: Callable[[], float],
        *,
        addresses: AddressBook | None = None,
        max_reply_bytes: int = MAX_SERVER_HEADER,
    ) -> None:
        self.config = config
        self.store = store
        self.engine = engine
        self.rooms = engine.rooms
        # Per-address admission (chat.core.admission): failed logins pause an address; None for no such limits
        self.addresses = addresses if addresses is not None else AddressBook(address_limits(config))
        # A room name as sent -> its key: the same few names arrive with every message, and a dict lookup costs a
        # tenth of checking and folding the name again. Only valid names get in; bounded by clearing when full.
        self._room_keys: dict[str, str] = {}
        self._last_spoke: dict[Session, float] = {}  # loop time of each online session's last say or quick (whois)
        self.clock = clock  # loop time, for rate limits and timeouts
        # docs/protocol.md 1.10: no reply header over this; lists are cut to fit (chat/protocol/pages.py)
        self.max_reply_bytes = max_reply_bytes
        # Each identity's stored-bytes budget (docs/security.md): kept while it refills, also offline, so that
        # reconnecting does not reset it; `sweep` forgets the full ones of identities not connected.
        self._storage_budgets: dict[int, TokenBucket] = {}
        self._rooms_order: tuple[int, list[Room], list[str]] = (-1, [], [])  # (directory changes, rooms, keys)
        self.quick = QuickRouter(engine, config)
        self.files = FileService(self, config)
        self.udp_port = 0
        self.secret = config.server.secret or None
        self.hold_ms = int(config.server.nick_hold * 1000)
        limits = config.limits
        self.welcome_limits: dict[str, float | int] = {
            "max_header_bytes": limits.max_header_bytes,
            "max_payload_bytes": limits.max_payload_bytes,
            "max_text_chars": limits.max_text_chars,
            "send_queue_bytes": limits.send_queue_bytes,
            "messages_per_second": limits.messages_per_second,
            "burst": limits.burst,
            "idle_timeout": limits.idle_timeout,
            "login_timeout": limits.login_timeout,
            "replay": config.history.replay,
            "history_limit": HISTORY_LIMIT_MAX,
        }
        self._handlers: dict[type[wire.Request], Handler] = {
            wire.Login: self.login,
            wire.Ping: self.ping,
            wire.Pong: self.pong,
            wire.Quit: self.quit,
            wire.Join: self.join,
            wire.Part: self.part,
            wire.Say: self.say,
            wire.HistoryQuery: self.history,
            wire.Who: self.who,
            wire.Whois: self.whois,
            wire.SetAway: self.set_away,
            wire.ChangeNick: self.change_nick,
            wire.ListRooms: self.list_rooms,
            wire.QuickSend: self.quick_send,
            wire.FileOffer: self.files.offer,
            wire.FileDone: self.files.done,
            wire.FileGet: self.files.get,
            wire.FileCancel: self.files.cancel,
        }

    async def start(self) -> None:
        """Load the engine's state from the store."""
        self.engine.load(await self.store.last_id(), await self.store.load_nicks())

    # --- connection lifecycle ----------------------------------------------------------------------------------

    def greet(self, session: Session) -> None:
        """Send `hello` with a fresh nonce (docs/protocol.md 2.1)."""
        session.nonce = new_nonce()
        hello = wire.Hello(
            server=f"chat/{__version__}",
            protocol=PROTOCOL_VERSION,
            auth="hmac-sha256" if self.secret else "none",
            nonce=session.nonce.hex(),
        )
        session.send(hello)

    def connection_lost(self, session: Session) -> None:
        """Tidy up after a connection ends: rooms hear `quit`, the nick stays held from now on."""
        if not self.engine.unregister(session):
            return
        self._last_spoke.pop(session, None)
        logger.info("%r disconnected", session)
        self.files.connection_lost(session, self.clock())
        self._leave_all_rooms(session, "quit")
        if session.udp is not None:
            self.quick.detach(session.udp)
        now = now_ms()
        self.engine.hold_nick(session.nick_key, session.nick, session.identity, now)
        self.store.hold_nick(session.nick_key, session.nick, session.identity, now)

    def _leave_all_rooms(self, session: Session, event: str) -> None:
        for room in list(session.rooms.values()):
            self.rooms.remove_member(room, session)
            room.publish(wire.Presence(room=room.name, nick=session.nick, event=event))
        session.rooms.clear()

    # --- dispatch ----------------------------------------------------------------------------------------------

    def handle_frame(self, session: Session, header: bytes, payload: bytes) -> Awaitable[None] | None:
        """Decode one frame, check state and rate, and run its handler; an awaitable if the handler must wait.

        Before `welcome` a `login` costs no token: it is the one request that must get through, and a refused one
        closes the connection (docs/protocol.md 8), so it cannot be repeated on the same connection anyway.
        """
        greeted = session.state is State.GREETED
        if len(header) >= HEADER_TOKEN_BYTES and not session.bucket.spend(
            len(header) // HEADER_TOKEN_BYTES, self.clock()
        ):
            message = f"a header of {len(header)} bytes costs {len(header) // HEADER_TOKEN_BYTES} tokens; slow down"
            self._error(session, ErrorCode.RATE_LIMITED, message, None)  # not decoded: no ref to copy
            return None
        try:
            request = wire.decode_request(header)
        except ProtocolViolation as exc:
            if greeted and exc.request_type == "login":
                session.close_with(exc.code, exc.message, exc.ref)  # a refused login always closes
            elif not session.bucket.take(self.clock()):
                self._error(session, ErrorCode.RATE_LIMITED, "too many requests", exc.ref)
            else:
                self._error(session, exc.code, exc.message, exc.ref)
            return None
        kind = type(request)
        # docs/protocol.md 8: file chunks count against [files] bytes_per_second, not against the message rate
        exempt = kind is wire.Pong or kind is wire.FileChunk or (greeted and kind is wire.Login)
        if not exempt and not session.bucket.take(self.clock()):
            self._error(session, ErrorCode.RATE_LIMITED, "too many requests; slow down", request.ref)
            return None
        if payload and kind is not wire.FileChunk:
            message = f"{request.type} takes no payload, got {len(payload)} bytes"
            if greeted and kind is wire.Login:
                session.close_with(ErrorCode.BAD_REQUEST, message, request.ref)
            else:
                self._error(session, ErrorCode.BAD_REQUEST, message, request.ref)
            return None
        if greeted and kind is not wire.Login and kind is not wire.Ping:
            self._error(session, ErrorCode.NOT_LOGGED_IN, f"log in before {request.type}", request.ref)
            return None
        try:
            if kind is wire.FileChunk:
                assert isinstance(request, wire.FileChunk)
                self.files.chunk(session, request, payload, self.clock())
                return None
            waiting = self._handlers[kind](session, request)
        except ProtocolViolation as exc:
            self._error(session, exc.code, exc.message, request.ref)
            return None
        except Exception:
            self._failed(session, request)
            return None
        return None if waiting is None else self._finish(session, request, waiting)

    async def _finish(self, session: Session, request: wire.Request, waiting: Awaitable[None]) -> None:
        """Await a handler that must wait, answering its refusals and failures like a synchronous one."""
        try:
            await waiting
        except ProtocolViolation as exc:
            self._error(session, exc.code, exc.message, request.ref)
        except Exception:
            self._failed(session, request)

    def _failed(self, session: Session, request: wire.Request) -> None:
        logger.exception("%r: handling %s failed", session, request.type)
        self._error(session, ErrorCode.INTERNAL_ERROR, f"the server failed to handle {request.type}", request.ref)

    def _error(self, session: Session, code: ErrorCode, message: str, ref: str | int | None) -> None:
        session.send(wire.Error(code=code.value, message=message, ref=ref))

    # --- session -----------------------------------------------------------------------------------------------

    async def login(self, session: Session, request: wire.Login) -> None:
        """Authenticate, pick the identity, take the nick, and send `welcome` (docs/protocol.md 2 and 8)."""
        if session.state is State.ACTIVE:
            raise ProtocolViolation(ErrorCode.ALREADY_LOGGED_IN, f"already logged in as {session.nick!r}")
        nonce, session.nonce = session.nonce, None  # docs/protocol.md 2.2: a nonce is good for one attempt
        address = address_key(str(session.address[0])) if isinstance(session.address, tuple) else str(session.address)
        now_loop = self.clock()
        refusal = self.addresses.login_refusal(address, now_loop) or self._login_refusal(request, nonce)
        if refusal is not None:
            code, message = refusal
            if code is ErrorCode.AUTH_FAILED:  # docs/security.md: a wrong proof pauses the address
                self.addresses.login_failed(address, now_loop)
            logger.info("%r: login as %r refused: %s", session, request.nick, code.value)
            session.close_with(code, message, request.ref)
            return
        nick = checked_nick(request.nick)
        key = fold(nick)
        identity = await self.store.identity_for_token(request.session) if request.session else None
        if not session.open:
            return
        now = now_ms()
        if identity is not None:
            previous = self.engine.by_identity(identity)
            if previous is not None:
                logger.info("%r takes over identity %d from %r", session, identity, previous)
                self.connection_lost(previous)
                previous.close_with(ErrorCode.SESSION_TAKEN, "this identity logged in on another connection")
        if not self.engine.nick_free_for(key, identity, now, self.hold_ms, nick):
            session.close_with(ErrorCode.NICK_TAKEN, self._taken(nick, key, identity, now), request.ref)
            return
        if identity is None:
            # docs/security.md, Nick squatting: each new identity holds its nick for nick_hold, so they are counted
            # per address; a login with a known token (a resume) never is.
            refusal = self.addresses.new_identity(address, self.clock())
            if refusal is not None:
                code, message = refusal
                logger.info("%r: login as %r refused: %s", session, request.nick, code.value)
                session.close_with(code, message, request.ref)
                return
            token = new_session_token()
            identity = await self.store.create_identity(token, now)
            # Checked again after the store's round trip, and taken in the same loop turn as this check: two
            # logins racing for one nick cannot both win (an identity made for the loser is never used).
            if not session.open:
                return
            now = now_ms()
            if not self.engine.nick_free_for(key, identity, now, self.hold_ms, nick):
                session.close_with(ErrorCode.NICK_TAKEN, self._taken(nick, key, identity, now), request.ref)
                return
        else:
            assert request.session is not None
            token = request.session
        self.engine.hold_nick(key, nick, identity, now)
        self.store.hold_nick(key, nick, identity, now)
        session.identity, session.token, session.nick, session.nick_key = identity, token, nick, key
        session.storage = self._storage_budget(identity, self.clock())
        caps = None if request.caps is None else extensions.negotiate(request.caps)  # docs/protocol.md 10
        if caps:
            session.caps = frozenset(caps)
            session.peer.negotiated(session.caps)
        session.state = State.ACTIVE
        self.addresses.logged_in(address)
        self.engine.register(session)
        udp = session.udp = self.quick.attach(session, self.clock())
        logger.info("%r logged in (identity %d)", session, identity)
        welcome = wire.Welcome(
            nick=nick,
            session=token,
            udp=wire.UdpInfo(port=self.udp_port, sid=udp.sid, key=udp.key_hex),
            limits=self._limits_for(session.caps),
            caps=caps,
            ref=request.ref,
        )
        session.send(welcome)
        if request.since is not None:
            watermark = self.engine.committed_through
            page = await self.store.page(
                Scope.private(identity), after=request.since, before=watermark + 1, limit=self.config.history.replay
            )
            session.send(
                fit_page(
                    lambda m, t: wire.HistoryPage(private=True, messages=m, truncated=t),
                    page,
                    True,
                    limit=self.max_reply_bytes,
                )
            )

    def _storage_budget(self, identity: int, now: float) -> TokenBucket | None:
        """The identity's budget of stored bytes (`[limits] stored_bytes_per_hour_per_identity`), or None for none."""
        per_hour = self.config.limits.stored_bytes_per_hour_per_identity
        if not per_hour:
            return None
        budget = self._storage_budgets.get(identity)
        if budget is None:
            budget = self._storage_budgets[identity] = TokenBucket(per_hour / 3600.0, per_hour, now)
        return budget

    def sweep(self, now: float) -> None:
        """Forget the storage budgets that are full again of identities not connected (bounded memory)."""
        for identity, budget in list(self._storage_budgets.items()):
            if budget.peek(now) >= budget.burst and self.engine.by_identity(identity) is None:
                del self._storage_budgets[identity]

    def _taken(self, nick: str, key: str, identity: int | None, now: int) -> str:
        """The `nick_taken` message, naming the nick it looks like when that one is the reason (protocol.md 2.8)."""
        lookalike = self.engine.taken_lookalike(key, identity, now, self.hold_ms, nick)
        if lookalike is not None:
            return f"nick {nick!r} looks like {lookalike!r}, which is taken"
        return f"nick {nick!r} is taken"

    def _limits_for(self, caps: frozenset[str]) -> dict[str, float | int]:
        """`welcome.limits`: with lazy-members, also the size of a member page (docs/protocol.md 10.4)."""
        if extensions.LAZY_MEMBERS in caps:
            return {**self.welcome_limits, "members_page": extensions.MEMBERS_PAGE}
        return self.welcome_limits

    def _login_refusal(self, request: wire.Login, nonce: bytes | None) -> tuple[ErrorCode, str] | None:
        if request.protocol != PROTOCOL_VERSION:
            return (
                ErrorCode.PROTOCOL_MISMATCH,
                f"this server speaks protocol {PROTOCOL_VERSION}, not {request.protocol}",
            )
        if self.secret is not None and (
            nonce is None or not verify_proof(self.secret, nonce, request.nick, request.proof)
        ):
            return ErrorCode.AUTH_FAILED, "missing or wrong proof"
        try:
            checked_nick(request.nick)
        except ProtocolViolation as exc:
            return exc.code, exc.message
        return None

    def ping(self, session: Session, request: wire.Ping) -> None:
        session.send(wire.ServerPong(t=request.t, ref=request.ref))

    def pong(self, session: Session, request: wire.Pong) -> None:
        """An answer to our keepalive; reading it already counted as activity."""

    def quit(self, session: Session, request: wire.Quit) -> None:
        """Leave cleanly: rooms hear `quit`, then the connection closes (docs/protocol.md 2.5)."""
        self.connection_lost(session)
        session.close()

    # --- rooms -------------------------------------------------------------------------------------------------

    async def join(self, session: Session, request: wire.Join) -> None:
        """Enter a room (creating it), get members and missed messages; others hear `presence join`.

        The member is added first with its live events held; the page is read up to the room's watermark, then
        `joined` and the held events go out (chat/core/rooms.py): every message exactly once, in id order.
        """
        name = checked_room(request.room)
        key = fold(name)
        room = session.rooms.get(key)
        newly = room is None
        if room is None and self.rooms.get(key) is None:
            lookalike = self.rooms.lookalike(name, key)  # docs/protocol.md 3.1: a new room may not look like a live one
            if lookalike is not None:
                raise ProtocolViolation(ErrorCode.BAD_ROOM, f"room {name!r} looks like the room {lookalike.name!r}")
        if room is None:
            room = self.rooms.add_member(name, key, session, hold=True)
            session.rooms[key] = room
            # Batched with the turn's other events (chat/core/rooms.py), so presence-batch members get the joins
            # of one turn as one frame (docs/protocol.md 10.2); `resumed` is written only for them (9.2).
            presence = wire.Presence(room=room.name, nick=session.nick, event="join", resumed=request.resumed or None)
            room.publish(presence, skip=session)
        watermark = room.watermark
        replay = self.config.history.replay
        try:
            page = await self.store.page(Scope.room(key), after=request.since, before=watermark + 1, limit=replay)
        except BaseException:
            if newly:
                room.release(session)
            raise
        held = room.release(session) if newly else []
        if not session.open or session.rooms.get(key) is not room:
            return
        member_count: int | None = None
        if extensions.LAZY_MEMBERS in session.caps:  # docs/protocol.md 10.4: the first page, in folded nick order
            member_count = len(room)
            members = [member.nick for member in self._member_page(room, None, extensions.MEMBERS_PAGE)[0]]
        else:
            members = [member.nick for member in room]
        session.send(
            fit_page(
                lambda m, t: wire.Joined(
                    room=room.name, members=members, messages=m, truncated=t, member_count=member_count, ref=request.ref
                ),
                page,
                keep_oldest=request.since is not None,
                limit=self.max_reply_bytes,
            )
        )
        if held:  # as one batch, so a codec that merges presence events merges these too
            session.peer.send_batch(session.peer.codec.encode_batch(held), held)

    def part(self, session: Session, request: wire.Part) -> None:
        room = self._member_room(session, request.room)
        self.rooms.remove_member(room, session)
        del session.rooms[room.key]
        session.send(wire.Parted(room=room.name, ref=request.ref))
        room.publish(wire.Presence(room=room.name, nick=session.nick, event="part"))

    def _member_room(self, session: Session, raw_name: str) -> Room:
        """The room `session` is in under this name, or no_such_room / not_in_room."""
        key = self._room_keys.get(raw_name)
        if key is None:
            key = fold(checked_room(raw_name))
            if len(self._room_keys) >= ROOM_KEY_CACHE:
                self._room_keys.clear()
            self._room_keys[raw_name] = key
        room = session.rooms.get(key)
        if room is not None:
            return room
        name = checked_room(raw_name)
        if self.rooms.get(key) is None:
            raise ProtocolViolation(ErrorCode.NO_SUCH_ROOM, f"no room {name!r}")
        raise ProtocolViolation(ErrorCode.NOT_IN_ROOM, f"not in room {name!r}")

    def who(self, session: Session, request: wire.Who) -> None:
        name = checked_room(request.room)
        room = self.rooms.get(fold(name))
        if room is None:
            raise ProtocolViolation(ErrorCode.NO_SUCH_ROOM, f"no room {name!r}")
        paged = request.after is not None or request.limit is not None
        if not paged or extensions.LAZY_MEMBERS not in session.caps:  # protocol.md 10.4: else the fields are ignored
            # docs/protocol.md 3.7: the whole list, in join order, cut at the frame limit (long away texts) and marked
            envelope = json_size(wire.Members(room=room.name, members=[], ref=request.ref))
            members, cut = pages.fit(
                (wire.Member(nick=m.nick, away=m.away) for m in room),
                json_size,
                pages.list_budget(envelope, self.max_reply_bytes),
            )
            session.send(wire.Members(room=room.name, members=members, truncated=cut, ref=request.ref))
            return
        limit = min(request.limit or extensions.MEMBERS_PAGE, extensions.MEMBERS_PAGE)
        page, more = self._member_page(room, request.after, limit)
        envelope = json_size(wire.Members(room=room.name, members=[], count=len(room), next=None, ref=request.ref))
        members, cut = pages.fit(
            (wire.Member(nick=m.nick, away=m.away) for m in page),
            json_size,
            pages.list_budget(envelope, self.max_reply_bytes),
        )
        more = (more or cut) and bool(members)  # a page cut at the frame limit goes on after its last member
        session.send(
            wire.Members(
                room=room.name,
                members=members,
                count=len(room),
                next=members[-1].nick if more else None,
                ref=request.ref,
            )
        )

    def whois(self, session: Session, request: wire.Whois) -> None:
        """protocol.md 3.13: rooms, away, idle time and login time of a nick in use; when a held one was last used."""
        nick = checked_nick(request.nick)
        key = fold(nick)
        online = self.engine.by_nick(key)
        if online is not None:
            spoke = self._last_spoke.get(online, online.connected_at)
            session.send(
                wire.WhoisInfo(
                    nick=online.nick,
                    online=True,
                    rooms=[room.name for room in online.rooms.values()],
                    away=online.away,
                    idle=round(max(0.0, self.clock() - spoke), 1),
                    connected=now_ms() - round((self.clock() - online.connected_at) * 1000),
                    ref=request.ref,
                )
            )
            return
        holder = self.engine.nick_holder(key)
        if holder is None:
            raise ProtocolViolation(ErrorCode.NO_SUCH_NICK, f"nobody ever had the nick {nick!r}")
        session.send(wire.WhoisInfo(nick=holder.nick, online=False, seen=holder.last_used, ref=request.ref))

    @staticmethod
    def _member_page(room: Room, after: str | None, limit: int) -> tuple[list[Session], bool]:
        """Up to `limit` members in folded nick order, after the nick `after` (exclusive, folded; it need not be a
        member any more), and whether more follow (docs/protocol.md 10.4)."""
        ordered = sorted(room, key=lambda m: m.nick_key)
        start = 0
        if after is not None:
            start = bisect.bisect_right(ordered, fold(after), key=lambda m: m.nick_key)
        page = ordered[start : start + limit]
        return page, start + limit < len(ordered)

    def list_rooms(self, session: Session, request: wire.ListRooms) -> None:
        """docs/protocol.md 3.8: rooms in folded-name order after `after`, as many as fit under the frame limit; a cut
        list names the last room it holds in `next`."""
        ordered, keys = self._rooms_in_order()
        start = 0 if request.after is None else bisect.bisect_right(keys, fold(request.after))
        rooms, cut = pages.fit(
            (wire.RoomInfo(room=ordered[i].name, members=len(ordered[i])) for i in range(start, len(ordered))),
            json_size,
            pages.list_budget(json_size(wire.RoomList(rooms=[], ref=request.ref)), self.max_reply_bytes),
        )
        after = rooms[-1].room if cut and rooms else None
        session.send(wire.RoomList(rooms=rooms, next=after, ref=request.ref))

    def _rooms_in_order(self) -> tuple[list[Room], list[str]]:
        """Every room and its key in folded-name order, sorted again only after rooms were created or removed."""
        changes, ordered, keys = self._rooms_order
        if changes != self.rooms.changes:
            ordered = sorted(self.rooms, key=lambda room: room.key)
            keys = [room.key for room in ordered]
            self._rooms_order = (self.rooms.changes, ordered, keys)
        return ordered, keys

    def set_away(self, session: Session, request: wire.SetAway) -> None:
        text = None if request.text is None else checked_text(request.text, self.config.limits.max_text_chars)
        session.away = text
        session.send(wire.AwayChanged(text=text, ref=request.ref))
        for room in session.rooms.values():
            room.publish(wire.Presence(room=room.name, nick=session.nick, event="away", text=text), skip=session)

    def change_nick(self, session: Session, request: wire.ChangeNick) -> None:
        nick = checked_nick(request.nick)
        key = fold(nick)
        now = now_ms()
        old_nick, old_key = session.nick, session.nick_key
        if not self.engine.claim_nick(session, key, nick, now, self.hold_ms):
            raise ProtocolViolation(ErrorCode.NICK_TAKEN, self._taken(nick, key, session.identity, now))
        session.nick, session.nick_key = nick, key
        if old_key != key:
            self.engine.hold_nick(old_key, old_nick, session.identity, now)  # still held by us (docs/protocol.md 8)
            self.store.hold_nick(old_key, old_nick, session.identity, now)
        self.store.hold_nick(key, nick, session.identity, now)
        session.send(wire.NickChanged(nick=nick, old=old_nick, ref=request.ref))
        if nick == old_nick:
            return
        for room in session.rooms.values():
            room.publish(wire.Presence(room=room.name, nick=nick, event="nick", old=old_nick), skip=session)

    # --- messages ----------------------------------------------------------------------------------------------

    def say(self, session: Session, request: wire.Say) -> None:
        """Check it in the order of docs/protocol.md 3.4 (one target, the text, the target), charge the identity's
        storage budget, queue it for storage; the commit callback fans the message out (the echo is the ack)."""
        now = self.clock()
        self._last_spoke[session] = now
        if (request.room is None) == (request.to is None):
            raise ProtocolViolation(ErrorCode.BAD_REQUEST, "say takes exactly one of `room` and `to`")
        text = checked_text(request.text, self.config.limits.max_text_chars)
        target = self.resolve_target(session, request.room, request.to, "say")
        budget = session.storage
        # O(1) and no allocation for ASCII text (isascii reads a flag of the str); other text is encoded once
        if budget is not None and not budget.spend(
            STORED_MESSAGE_BYTES + (len(text) if text.isascii() else len(text.encode())), now
        ):
            raise ProtocolViolation(ErrorCode.STORAGE_RATE_LIMITED, self._storage_refusal())
        self.submit_message(session, target, text, request.cid, request.ref)

    def _storage_refusal(self) -> str:
        per_hour = self.config.limits.stored_bytes_per_hour_per_identity
        return f"this identity stored its {per_hour} bytes of messages for the hour; the message was not stored"

    def resolve_target(self, session: Session, room: str | None, to: str | None, what: str) -> Target:
        """Where a message goes: a room `session` is in, or a nick some identity holds or held."""
        if (room is None) == (to is None):
            raise ProtocolViolation(ErrorCode.BAD_REQUEST, f"{what} takes exactly one of `room` and `to`")
        if room is not None:
            member_room = self._member_room(session, room)
            return Target(room_name=member_room.name, room_key=member_room.key)
        assert to is not None
        recipient = checked_nick(to)
        recipient_key = fold(recipient)
        online = self.engine.by_nick(recipient_key)
        if online is not None:
            return Target(recipient=online.nick, recipient_key=recipient_key, recipient_identity=online.identity)
        holder = self.engine.nick_holder(recipient_key)
        if holder is None:
            raise ProtocolViolation(ErrorCode.NO_SUCH_NICK, f"nobody ever had the nick {recipient!r}")
        return Target(recipient=holder.nick, recipient_key=recipient_key, recipient_identity=holder.identity)

    def submit_message(
        self,
        session: Session,
        target: Target,
        text: str,
        cid: str | None,
        ref: str | int | None,
        *,
        file: FileRecord | None = None,
        on_stored: Callable[[StoredMessage], None] | None = None,
    ) -> None:
        """Queue a message for the group commit; after the commit it is fanned out, then `on_stored` runs."""
        draft = Draft(
            ts=now_ms(),
            sender_identity=session.identity,
            sender=session.nick,
            sender_key=session.nick_key,
            text=text,
            cid=cid,
            room=target.room_name,
            room_key=target.room_key,
            recipient=target.recipient,
            recipient_key=target.recipient_key,
            recipient_identity=target.recipient_identity,
            file=file,
            id=self.engine.next_message_id(),
        )
        room_key = target.room_key

        def stored(result: Appended | None) -> None:
            if result is None:
                self._error(session, ErrorCode.INTERNAL_ERROR, "the message could not be stored", ref)
                return
            self.engine.committed(result.message.id)
            if room_key is not None:
                self._deliver_room(session, room_key, result)
            else:
                self._deliver_private(session, draft, result)
            if on_stored is not None:
                on_stored(result.message)

        self.store.submit(draft, stored)

    def _deliver_room(self, sender: Session, room_key: str, result: Appended) -> None:
        event = to_wire(result.message)
        if result.duplicate:  # docs/protocol.md 3: a repeated cid gets the original message, to its sender only
            sender.send(event)
            return
        room = self.rooms.get(room_key)
        if room is not None:
            room.publish(event)
        if room is None or sender not in room:
            sender.send(event)

    def _deliver_private(self, sender: Session, draft: Draft, result: Appended) -> None:
        event = to_wire(result.message)
        sender.send(event)
        if result.duplicate:
            return
        # The recipient is an identity: its connection gets the message live even when it has since moved to
        # another nick, so a resume with `since` never skips a stored message below a live one (docs/protocol.md 8).
        assert draft.recipient_identity is not None
        recipient = self.engine.by_identity(draft.recipient_identity)
        if recipient is not None and recipient is not sender:
            recipient.send(event)

    def _nick_spelling(self, key: str) -> str | None:
        """The nick with this folded key as its owner spells it (connected, else last holder), or None."""
        online = self.engine.by_nick(key)
        if online is not None:
            return online.nick
        holder = self.engine.nick_holder(key)
        return None if holder is None else holder.nick

    async def history(self, session: Session, request: wire.HistoryQuery) -> None:
        """A page of a room, of one private conversation, or of all of this identity's private messages."""
        chosen = (request.room is not None) + (request.to is not None) + bool(request.private)
        if chosen != 1:
            raise ProtocolViolation(ErrorCode.BAD_REQUEST, "history takes exactly one of `room`, `to`, `private`")
        limit = min(request.limit or HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX)
        room_name = to_name = None
        if request.room is not None:
            room_name = checked_room(request.room)
            existing = self.rooms.get(fold(room_name))
            room_name = existing.name if existing is not None else room_name
            scope = Scope.room(fold(room_name))
        elif request.to is not None:
            to_name = checked_nick(request.to)
            to_key = fold(to_name)
            to_name = self._nick_spelling(to_key)
            if to_name is None:
                raise ProtocolViolation(ErrorCode.NO_SUCH_NICK, f"nobody ever had the nick {request.to!r}")
            scope = Scope.conversation(session.identity, to_key)
        else:
            scope = Scope.private(session.identity)
        page = await self.store.page(scope, after=request.after, before=request.before, limit=limit)

        def build(messages: list[wire.Message], truncated: bool) -> wire.ServerFrame:
            return wire.HistoryPage(
                room=room_name,
                to=to_name,
                private=request.private,
                messages=messages,
                truncated=truncated,
                ref=request.ref,
            )

        session.send(fit_page(build, page, keep_oldest=request.after is not None, limit=self.max_reply_bytes))

    def quick_send(self, session: Session, request: wire.QuickSend) -> None:
        """A quick message over TCP (docs/protocol.md 6): answered with `quick_ok` or an error."""
        self.quick.quick_request(session, request, self.clock())

    # --- keepalive -----------------------------------------------------------------------------------------------

    def keepalive(self, session: Session, now: float) -> None:
        """Ping a connection silent for half the idle timeout; close one silent for all of it, or one that has
        not logged in within the login timeout (`timeout`)."""
        limits = self.config.limits
        if session.state is State.GREETED:
            if now - session.connected_at > limits.login_timeout:
                session.close_with(ErrorCode.TIMEOUT, f"no login within {limits.login_timeout:g} s")
            return
        if session.state is not State.ACTIVE:
            return
        silent = now - session.last_heard
        if silent > limits.idle_timeout:
            logger.info("%r: silent for %.1f s, closing", session, silent)
            session.close_with(ErrorCode.TIMEOUT, f"silent for more than {limits.idle_timeout:g} s")
        elif silent > limits.idle_timeout / 2 and not session.pinged:
            session.pinged = True
            session.send(wire.ServerPing(t=now_ms()))
