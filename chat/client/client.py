"""`connect()` and `Client`: log in, chat, deliver events, and resume without loss after a lost connection.

Life of a client, as a state machine (`ClientState`):

    CONNECTING --welcome--> RESUMING --rooms joined again, pages caught up, says sent again--> READY
    READY --link lost--> RECONNECTING --(backoff) welcome--> RESUMING --> READY ...
    any --quit/close, session_taken, a refused re-login, the link lost with reconnect=False--> CLOSED

Requests and resume (docs/protocol.md 4):

- `say` is tracked by its `cid` until its echo comes back, whatever happens to the connection: it is written at once
  when the client is READY, and every resume sends each unacknowledged say again with the same cid, after the
  replays (a say whose echo is among the replayed messages is acknowledged by it and not sent again). The server's
  cid dedupe answers a repeat with the original message, which is taken as the acknowledgement. So a pending
  `await client.say(...)` survives any number of reconnects and its message is stored exactly once.
- Every other request waits while the client is not READY, and one in flight when the link drops is sent again on
  the next connection: join, part, who, history, rooms, away and nick either move the server to the same state
  again or only read it, so repeating them is safe. None of them raises because of a lost connection; they raise
  `ClientClosed` if the client ends first.
- Events: see `chat.client.events`. The messages of a `join` replay are queued as events too (and the `Joined`
  frame returned), the client's own acknowledged messages are events, and each message is delivered exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import ssl as ssl_module
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast

import msgspec

from chat.client.cids import CidGenerator
from chat.client.connection import DEFAULT_IDLE_TIMEOUT, Connection, FrameHook, RefValue
from chat.client.errors import ClientClosed, ConnectionLost, LoginRefused, ProtocolError, ServerError, TlsTrustError
from chat.client.events import (
    TYPING_SHOWN_SECONDS,
    ConnectionEvent,
    ConnectionState,
    Event,
    ReplayedMessage,
    Typing,
)
from chat.client.files import FileTransfers, Progress
from chat.client.identity import SavedIdentity, load_identity, save_identity
from chat.client.resume import Backoff, Conversation, ResumeState
from chat.client.trust import TlsTrust, Verified
from chat.client.udp import PROTOCOL_TIMINGS, QuickJob, QuickReceipt, UdpLink, UdpState, UdpTimings
from chat.protocol import datagrams as dg
from chat.protocol.caps import LAZY_MEMBERS, PRESENCE_BATCH
from chat.protocol.errors import ErrorCode
from chat.protocol.messages import (
    AwayChanged,
    ChangeNick,
    Error,
    FileInfo,
    HistoryPage,
    HistoryQuery,
    Join,
    Joined,
    ListRooms,
    Members,
    Message,
    NickChanged,
    Part,
    Parted,
    Ping,
    Presence,
    Presences,
    QuickMessage,
    QuickOk,
    QuickSend,
    Quit,
    Request,
    RoomInfo,
    RoomList,
    Say,
    ServerFrame,
    ServerPong,
    SetAway,
    Welcome,
    Who,
    Whois,
    WhoisInfo,
)

logger = logging.getLogger("chat.client")

CATCH_UP_PAGE = 100  # docs/protocol.md 8: `history` honours a limit of at least 100
RATE_LIMIT_PAUSE = 0.5
RATE_LIMIT_RETRIES = 20

FrameT = TypeVar("FrameT", bound=ServerFrame)


class ClientState(StrEnum):
    """Where the client is in its life (see the module doc)."""

    CONNECTING = "connecting"
    RESUMING = "resuming"
    READY = "ready"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


DEFAULT_CAPS = (PRESENCE_BATCH, LAZY_MEMBERS)  # docs/protocol.md 10: what a client asks for unless told otherwise


# What an ACK's refusal code means (docs/protocol.md 6.3): the ACK carries only the code, the words are ours.
QUICK_REFUSALS = {
    "bad_request": "the quick message was not well formed",
    "bad_text": "the text may not be sent",
    "bad_nick": "that is not a valid nick",
    "bad_room": "that is not a valid room name",
    "no_such_nick": "nobody ever had that nick",
    "nick_offline": "that nick is not connected (quick messages are not stored)",
    "no_such_room": "there is no such room",
    "not_in_room": "you are not in that room",
}


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """How a client connects and reconnects; `connect()` takes each as a keyword argument."""

    secret: str | None = None
    reconnect: bool = True
    backoff_initial: float = 0.2
    backoff_max: float = 5.0
    connect_timeout: float = 10.0
    max_reconnect_attempts: int | None = None  # None: keep trying until closed
    quit_timeout: float = 2.0
    tls: TlsTrust | None = None  # TLS and how the server's certificate is trusted (chat.client.trust); None: plain
    udp: bool = True  # use the UDP quick channel (False: quick messages always go over the TCP or TLS connection)
    udp_host: str | None = None  # where the server's UDP port is, if not at `host` (a test relay, say)
    udp_port: int | None = None  # if not the port `welcome` names
    # protocol.md 6.4: HELLO, retransmission and TCP fallback times (tests shorten them: `UdpTimings().scaled(0.1)`)
    udp_timings: UdpTimings = PROTOCOL_TIMINGS
    # docs/protocol.md 10: extensions asked for at login; None asks for none (the plain protocol of sections 1-9)
    caps: tuple[str, ...] | None = DEFAULT_CAPS


class _EndOfEvents:
    """Queued after the last event of a closed client."""


_END = _EndOfEvents()


class Client:
    """A chat client that stays logged in: see the module doc for what it promises. Made by `connect()`."""

    def __init__(
        self,
        host: str,
        port: int,
        nick: str,
        *,
        session: str | None = None,
        since: int | None = None,
        options: ClientOptions | None = None,
        state_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.options = options or ClientOptions()
        self.welcome: Welcome | None = None
        self.certificate: Verified | None = None  # the server's TLS certificate as last checked, over TLS
        self._nick = nick
        self._session = session
        self._fresh_identity = session is None
        self._state_path = state_path
        self._saved: SavedIdentity | None = None
        self._resume = ResumeState(private_since=since)
        self._backoff = Backoff(self.options.backoff_initial, self.options.backoff_max)
        self._events: asyncio.Queue[Event | _EndOfEvents] = asyncio.Queue()
        self._connection: Connection | None = None
        self._state = ClientState.CONNECTING
        self._closed: ClientClosed | None = None
        self._quitting = False
        self._wakeup: asyncio.Future[None] | None = None
        self._say_waiters: dict[str, asyncio.Future[Message]] = {}
        self._udp: UdpLink | None = None
        self._quick_jobs: dict[str, QuickJob] = {}
        self._seen_qids: dict[int, None] = {}  # insertion-ordered, bounded: quick messages already delivered
        self._refused_seqs: set[int] = set()  # QUICKs refused by an ACK code: their TCP error is not an event
        self._typists: dict[tuple[str, str | None], float] = {}  # (sender, room or None) -> shown until (monotonic)
        self._say_refs: dict[RefValue, str] = {}  # ref of the latest send of a say -> its cid, to match errors
        self._say_ref_of: dict[str, RefValue] = {}
        self._refs = itertools.count(1)
        self._away_text: str | None = None  # sent again after a resume
        self._supervisor: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._files = FileTransfers(self)
        self._new_cid = CidGenerator()  # time-first cids (chat/client/cids.py): cheap for the server's cid index

    def __repr__(self) -> str:
        return f"<Client {self._nick!r} {self.host}:{self.port} {self._state.value}>"

    # --- what an application reads -------------------------------------------------------------------------------

    @property
    def nick(self) -> str:
        """The current nick, as the server spells it."""
        return self._nick

    @property
    def session(self) -> str | None:
        """The session token (the identity); keep it, with `since`, to be the same identity after a restart."""
        return self._session

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def closed(self) -> bool:
        """True once the client has ended; `close_reason` says why."""
        return self._closed is not None

    @property
    def close_reason(self) -> ClientClosed | None:
        """The exception `recv()` raises once the client has ended (its `code` and `reason`), or None."""
        return self._closed

    @property
    def joined_rooms(self) -> list[str]:
        """The rooms the client is in (and joins again on every resume)."""
        return [c.room for c in self._resume.joined_rooms() if c.room is not None]

    @property
    def unacknowledged(self) -> list[Say]:
        """Says not yet acknowledged, oldest first (an application may keep them and say them again, same cid)."""
        return self._resume.unacked

    @property
    def udp_state(self) -> str:
        """The UDP quick channel: "binding", "ok", "blocked" (quick messages go over TCP) or "off"."""
        return self._udp.state.value if self._udp is not None else UdpState.OFF.value

    async def wait_udp(self, timeout: float | None = None) -> bool:
        """Wait until the UDP quick channel is bound (True) or found blocked (False, as soon as the HELLOs of its
        first binding cycle went unanswered); False too if it is off or neither happened within `timeout`."""
        link = self._udp
        if link is None:
            return False
        try:
            async with asyncio.timeout(timeout):
                await link.wait_settled()
                if link.state is UdpState.OK and link.rtt is None:
                    # docs/protocol.md 6.5: a PONG answers a PING sent after the ACK of the HELLO answer, so once it is
                    # here the server has seen that ACK and sends this address everything by UDP (lost: go on)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(link.ping(), 1.0)
        except TimeoutError:
            return False
        return link.state is UdpState.OK

    async def udp_ping(self, timeout: float = 2.0) -> float | None:
        """Measure the UDP round trip now: seconds, or None if the channel is not bound or no PONG came in time."""
        link = self._udp
        if link is None or link.state is not UdpState.OK:
            return None
        try:
            async with asyncio.timeout(timeout):
                return await link.ping()
        except TimeoutError:
            return None

    @property
    def udp_rtt(self) -> float | None:
        """The last UDP round-trip time to the server in seconds, or None before the first PONG."""
        return self._udp.rtt if self._udp is not None else None

    @property
    def clock_offset(self) -> float | None:
        """The server's clock minus ours, in seconds, from the last PONG."""
        return self._udp.clock_offset if self._udp is not None else None

    def highest_id(self, room: str | None = None) -> int | None:
        """The highest message id delivered for a room, or (room None) for the private messages.

        With `session`, the private one is what to pass as `since` to `connect()` after an application restart.
        """
        if room is None:
            return self._resume.private.highest
        conversation = self._resume.rooms.get(self._resume.fold(room))
        return None if conversation is None else conversation.highest

    # --- events --------------------------------------------------------------------------------------------------

    async def recv(self, timeout: float | None = None) -> Event:
        """The next event; TimeoutError after `timeout` seconds without one.

        A lost connection never raises here (it shows as `ConnectionEvent`s). Once the client has ended and every
        event has been read, raises `ClientClosed` (again on every later call).
        """
        if not self._events.empty():
            item = self._events.get_nowait()
        elif timeout is None:
            item = await self._events.get()
        else:
            item = await asyncio.wait_for(self._events.get(), timeout)
        if isinstance(item, _EndOfEvents):
            self._events.put_nowait(item)
            assert self._closed is not None
            raise self._closed
        return item

    def __aiter__(self) -> Client:
        return self

    async def __anext__(self) -> Event:
        """`async for event in client`: every event, ending (without an exception) when the client has ended."""
        try:
            return await self.recv()
        except ClientClosed:
            raise StopAsyncIteration from None

    def _emit(self, event: Event) -> None:
        if self._closed is None:
            self._events.put_nowait(event)
            if self._state_path is not None and type(event) is Message and event.room is None:
                self._save_identity()  # the private `since` of the next start moved

    def _save_identity(self) -> None:
        """Keep the token and the private `since` in the state file, if `connect(..., state=)` named one."""
        if self._state_path is None or self._session is None:
            return
        identity = SavedIdentity(session=self._session, since=self._resume.private.highest, nick=self._nick)
        if identity == self._saved:
            return
        try:
            save_identity(self._state_path, identity)
        except OSError as exc:
            logger.warning("could not save the client state to %s: %s", os.fspath(self._state_path), exc)
            return
        self._saved = identity

    def _emit_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self._emit(event)

    # --- requests ------------------------------------------------------------------------------------------------

    async def say(
        self, text: str, *, room: str | None = None, to: str | None = None, cid: str | None = None
    ) -> Message:
        """Send a message to a room or (with `to`) to one nick; return it once the server has stored it.

        The returned `Message` is the server's echo (with its `id`), which is also delivered as an event. The say
        survives lost connections (see the module doc); cancelling the call does not withdraw it. `cid` defaults
        to a fresh one that starts with the time (chat/client/cids.py). Raises ServerError if the server refuses
        it (`bad_text`, `not_in_room`, `no_such_nick`, `rate_limited`, ...), ClientClosed if the client ends first.
        """
        if (room is None) == (to is None):
            raise ValueError("say takes exactly one of room= and to=")
        self._check_open()
        cid = cid or self._new_cid()
        if self._resume.is_tracked(cid):
            raise ValueError(f"a say with cid {cid!r} is already waiting for its acknowledgement")
        say = Say(room=room, to=to, text=text, cid=cid)
        waiter: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._say_waiters[cid] = waiter
        self._resume.track(say)
        connection = self._connection
        if self._state is ClientState.READY and connection is not None:
            self._send_say(connection, say)  # otherwise the resume sends it
            with contextlib.suppress(ConnectionLost):  # the resume sends it again
                await connection.drain()
        return await waiter

    def _send_say(self, connection: Connection, say: Say) -> None:
        assert say.cid is not None
        ref = self._next_ref()
        previous = self._say_ref_of.pop(say.cid, None)
        if previous is not None:
            self._say_refs.pop(previous, None)
        self._say_refs[ref] = say.cid
        self._say_ref_of[say.cid] = ref
        with contextlib.suppress(ConnectionLost):  # still tracked: the next resume sends it again
            connection.send(msgspec.structs.replace(say, ref=ref))

    async def quick(
        self, text: str, *, to: str | None = None, room: str | None = None, nudge: bool = False, cid: str | None = None
    ) -> QuickReceipt:
        """Send a quick message (not stored) to a nick or (all other members of) a room; return once the server
        acknowledged it, by UDP ACK or TCP `quick_ok`.

        It goes by UDP when the channel is bound and it fits in a datagram, else over TCP; a UDP one with no ACK
        after 5 s goes over TCP too, and one still unacknowledged when the connection drops is sent again after the
        resume with the same `cid`, which the server delivers at most once (docs/protocol.md 6). Raises ServerError with
        the refusal's code (`nick_offline`, `no_such_nick`, `not_in_room`, `bad_text`, ...), ClientClosed if the
        client ends first.
        """
        if (room is None) == (to is None):
            raise ValueError("quick takes exactly one of room= and to=")
        self._check_open()
        cid = cid or self._new_cid()
        if cid in self._quick_jobs:
            raise ValueError(f"a quick message with cid {cid!r} is already waiting for its acknowledgement")
        future: asyncio.Future[QuickReceipt] = asyncio.get_running_loop().create_future()
        job = self._quick_jobs[cid] = QuickJob(cid, to, room, text, nudge, future)
        if self._state is ClientState.READY:
            self._dispatch_quick(job)  # otherwise the resume sends it
        try:
            return await future
        finally:
            self._quick_jobs.pop(cid, None)

    def typing(self, *, to: str | None = None, room: str | None = None) -> bool:
        """Tell a nick or a room that we are typing: best effort, by UDP only; False if it could not be sent."""
        if (room is None) == (to is None):
            raise ValueError("typing takes exactly one of room= and to=")
        return self._udp is not None and self._udp.send_typing(to, room)

    def _dispatch_quick(self, job: QuickJob) -> None:
        """Send a quick message by UDP if possible, else (or again, after a fallback) over TCP."""
        if job.future.done() or job.over_tcp:
            return
        if job.seq is None and self._udp is not None and self._udp.try_send_quick(job):
            return
        job.over_tcp = True
        task = asyncio.create_task(self._quick_over_tcp(job))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _quick_over_tcp(self, job: QuickJob) -> None:
        seq = job.seq
        try:
            frame = await self._request(
                lambda ref: QuickSend(
                    to=job.to, room=job.room, text=job.text, nudge=job.nudge, seq=seq, cid=job.cid, ref=ref
                )
            )
            receipt = QuickReceipt(via="tcp", qid=_expect(frame, QuickOk).qid)
        except (ServerError, ClientClosed, ProtocolError) as exc:
            if not job.future.done():
                job.future.set_exception(exc)
            return
        if not job.future.done():
            job.future.set_result(receipt)

    def _quick_acked(self, job: QuickJob, code: str | None) -> None:
        """A UDP ACK for one of our QUICKs: done, or refused with `code` (its TCP error is then not an event)."""
        if job.future.done():
            return
        if code is None:
            job.future.set_result(QuickReceipt(via="udp"))
            return
        if job.seq is not None:
            self._refused_seqs.add(job.seq)
        job.future.set_exception(ServerError(code, QUICK_REFUSALS.get(code, "the server refused the quick message")))

    def _quick_expired(self, job: QuickJob) -> None:
        """No ACK 5 s after the first send: over TCP with the datagram's seq (the server dedupes on it)."""
        self._dispatch_quick(job)

    def _receive_quick(self, message: QuickMessage) -> None:
        """A quick message from either path; one already delivered (by its qid) is dropped."""
        if message.qid in self._seen_qids:
            return
        self._seen_qids[message.qid] = None
        if len(self._seen_qids) > 4096:
            del self._seen_qids[next(iter(self._seen_qids))]
        self._emit(message)

    def _received_by_udp(self, delivery: dg.QuickDelivery) -> None:
        self._receive_quick(dg.quick_frame(delivery))

    def _typing_received(self, notice: dg.TypingNotice) -> None:
        self._typists[(notice.sender, notice.room)] = time.monotonic() + TYPING_SHOWN_SECONDS
        self._emit(Typing(sender=notice.sender, to=notice.to, room=notice.room))

    def who_is_typing(self, room: str | None = None) -> list[str]:
        """Nicks seen typing in `room` (None: to us privately) within the last few seconds; the notices expire."""
        now = time.monotonic()
        self._typists = {key: until for key, until in self._typists.items() if until > now}
        wanted = None if room is None else self._resume.fold(room)
        return sorted(
            sender
            for sender, where in self._typists
            if (where is None and wanted is None) or (where is not None and self._resume.fold(where) == wanted)
        )

    async def send_file(
        self,
        path: str | os.PathLike[str],
        *,
        room: str | None = None,
        to: str | None = None,
        name: str | None = None,
        progress: Progress | None = None,
    ) -> Message:
        """Send a file to a room or a nick, streamed in 64 KiB chunks; return the message that announces it.

        `name` is the display name (default: the file's own name). `progress(sent, total)` is called after each
        chunk. A lost connection does not fail it: it is offered again and goes on where the server got to.
        Raises ServerError (`file_too_large`, `quota_exceeded`, `too_many_uploads`, `resource_exhausted` (the
        server is out of descriptors or disk: sending the file again later resumes it), `no_such_room`,
        `file_checksum` if the file changed while being sent, ...) or ClientClosed.
        """
        if (room is None) == (to is None):
            raise ValueError("send_file takes exactly one of room= and to=")
        self._check_open()
        return await self._files.send_file(path, room=room, to=to, name=name, progress=progress)

    async def get_file(
        self, file: str | FileInfo, dest: str | os.PathLike[str], *, progress: Progress | None = None
    ) -> Path:
        """Download a file (by `message.file`, or by fid) into `dest`, a folder or a file path; return the path.

        In a folder the file gets a safe local name made from its display name, never overwriting an existing file.
        The bytes go to `<name>.part` first and are checked against the file's SHA-256; a lost connection resumes
        from what was received, and so does a later call for the same destination. `progress(received, total)`.
        Raises ServerError (`no_such_file`, `file_checksum`) or ClientClosed.
        """
        self._check_open()
        return await self._files.get_file(file, dest, progress)

    async def join(self, room: str, *, since: int | None = None) -> Joined:
        """Join a room (created on first join) and remember it, to join it again on every resume.

        Returns the `Joined` frame (members and replayed messages). The replayed messages are also delivered as
        message events, each exactly once: without `since` the server replays the latest few, with `since` every
        message above it (paged on with `history` until complete when the replay is cut short).
        """

        def on_joined(frame: ServerFrame) -> None:
            if isinstance(frame, Joined):
                self._joined(frame, since=since)

        frame = await self._request(lambda ref: Join(room=room, since=since, ref=ref), on_joined)
        joined = _expect(frame, Joined)
        conversation = self._resume.room(joined.room)
        connection = self._connection
        if conversation.catching_up and connection is not None:
            with contextlib.suppress(ConnectionLost):  # the resume joins again with `since` and catches up
                await self._catch_up(connection, conversation)
        return joined

    async def part(self, room: str) -> Parted:
        """Leave a room; it is no longer joined again on resume."""

        def on_parted(frame: ServerFrame) -> None:
            if isinstance(frame, Parted):
                self._resume.room(frame.room).joined = False

        return _expect(await self._request(lambda ref: Part(room=room, ref=ref), on_parted), Parted)

    async def history(
        self,
        room: str | None = None,
        *,
        to: str | None = None,
        private: bool = False,
        after: int | None = None,
        before: int | None = None,
        limit: int | None = None,
    ) -> HistoryPage:
        """A page of stored messages of a room, of the conversation with `to`, or of all private messages.

        A plain query (docs/protocol.md 8): its messages are returned, not delivered as events.
        """
        if (room is not None) + (to is not None) + bool(private) != 1:
            raise ValueError("history takes exactly one of room=, to= and private=True")
        query = HistoryQuery(room=room, to=to, private=private, after=after, before=before, limit=limit)
        return _expect(await self._request(lambda ref: msgspec.structs.replace(query, ref=ref)), HistoryPage)

    async def who(self, room: str, *, after: str | None = None, limit: int | None = None) -> Members:
        """The members of a room, with their away texts; with `after` or `limit`, one page of them in folded nick
        order, with `count` and `next` (docs/protocol.md 10.4, needs the lazy-members cap; otherwise the whole list)."""
        return _expect(await self._request(lambda ref: Who(room=room, after=after, limit=limit, ref=ref)), Members)

    async def whois(self, nick: str) -> WhoisInfo:
        """What the server shares about a nick: online with its rooms, away text, idle seconds and login time, or
        offline with when it was last used (docs/protocol.md 3.13). ServerError `no_such_nick` if nobody ever had it."""
        return _expect(await self._request(lambda ref: Whois(nick=nick, ref=ref)), WhoisInfo)

    async def rooms(self) -> RoomList:
        """Every room with at least one member, in folded-name order.

        A list too long for one frame comes in pages (docs/protocol.md 3.8): each page's `next` is the `after` of the
        request for the rest, followed here until a page has none; the pages are returned as one list. Rooms created
        or removed meanwhile may be missed or, in a later page, seen as they are then."""
        rooms: list[RoomInfo] = []
        after: str | None = None
        while True:

            def ask(ref: RefValue, after: str | None = after) -> Request:
                return ListRooms(after=after, ref=ref)

            page = _expect(await self._request(ask), RoomList)
            rooms.extend(page.rooms)
            if page.next is None or page.next == after or not page.rooms:  # the last page (or a server going round)
                return RoomList(rooms=rooms, ref=page.ref)
            after = page.next

    async def away(self, text: str | None) -> AwayChanged:
        """Set an away text, or (None) come back; it is set again after every resume."""

        def on_away(frame: ServerFrame) -> None:
            if isinstance(frame, AwayChanged):
                self._away_text = frame.text

        return _expect(await self._request(lambda ref: SetAway(text=text, ref=ref), on_away), AwayChanged)

    async def change_nick(self, nick: str) -> NickChanged:
        """Take another nick; the client logs in with it from then on. ServerError `nick_taken` or `bad_nick`."""

        def on_nick(frame: ServerFrame) -> None:
            if isinstance(frame, NickChanged):
                self._nick = frame.nick
                self._resume.add_own_nick(frame.nick)

        return _expect(await self._request(lambda ref: ChangeNick(nick=nick, ref=ref), on_nick), NickChanged)

    async def ping(self) -> float:
        """The round-trip time to the server, in seconds."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        _expect(await self._request(lambda ref: Ping(t=ref, ref=ref)), ServerPong)
        return loop.time() - started

    async def _request(self, build: Callable[[RefValue], Request], on_reply: FrameHook | None = None) -> ServerFrame:
        """Send a request when READY and return its reply; sent again on the next connection if the link drops."""
        while True:
            connection = await self._wait_ready()
            try:
                future = connection.request(build(self._next_ref()), on_reply)
                await connection.drain()
                return await future
            except ConnectionLost:
                if self._closed is not None:
                    raise self._closed from None
                logger.debug("a request met a lost connection; it is sent again after the resume")

    def _next_ref(self) -> int:
        return next(self._refs)

    def _check_open(self) -> None:
        if self._closed is not None:
            raise self._closed

    async def _wait_ready(self) -> Connection:
        while True:
            self._check_open()
            connection = self._connection
            if self._state is ClientState.READY and connection is not None and not connection.closed:
                return connection
            if self._wakeup is None or self._wakeup.done():
                self._wakeup = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._wakeup)

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    # --- frames from the server ----------------------------------------------------------------------------------

    def _on_frame(self, connection: Connection, frame: ServerFrame) -> None:
        """Every frame that answers no request in flight, in read order."""
        if connection is not self._connection:
            return
        if self._files.on_frame(frame):
            return
        if isinstance(frame, Message):
            self._acknowledge(frame)
            self._emit_all(self._resume.live(frame))
        elif isinstance(frame, Presences):  # docs/protocol.md 10.2: the same per-event `Presence` as without the cap
            for event in frame.events:
                self._emit(
                    Presence(
                        room=frame.room,
                        nick=event.nick,
                        event=event.event,
                        old=event.old,
                        text=event.text,
                        resumed=event.resumed,
                    )
                )
        elif isinstance(frame, HistoryPage) and frame.private and frame.ref is None:
            # docs/protocol.md 3: the private messages above the login `since`, right after welcome.
            self._absorb(frame.messages)
            self._emit_all(self._resume.replay(self._resume.private, frame.messages, more=frame.truncated))
        elif isinstance(frame, QuickMessage):
            self._receive_quick(frame)
        elif isinstance(frame, Error) and frame.seq is not None and frame.seq in self._refused_seqs:
            self._refused_seqs.discard(frame.seq)  # the caller of quick() already has this refusal
        elif isinstance(frame, Error) and self._files.chunk_refused(frame.ref, ServerError(frame.code, frame.message)):
            pass  # the upload that sent the chunk raises it
        elif isinstance(frame, Error):
            cid = self._say_refs.pop(frame.ref, None) if frame.ref is not None else None
            if cid is not None:
                self._refuse_say(cid, ServerError(frame.code, frame.message))
            else:
                self._emit(frame)
        elif getattr(frame, "ref", None) is not None:
            logger.debug("dropping a %s reply to a request nobody waits for", frame.type)
        else:
            self._emit(frame)

    def _joined(self, frame: Joined, *, since: int | None) -> None:
        """Bookkeeping for a `joined` (ours or a resume's), in read order: remember the room, deliver its replay."""
        conversation = self._resume.room(frame.room)
        conversation.joined = True
        if since is not None:
            conversation.note_seen(since)
        self._absorb(frame.messages)
        more = frame.truncated and since is not None
        delivered: list[Message] = self._resume.replay(conversation, frame.messages, more=more)
        if since is None:  # the room's latest messages, from before the join: context, marked so
            delivered = [ReplayedMessage.of(message) for message in delivered]
        self._emit_all(delivered)

    def _absorb(self, messages: Iterable[Message]) -> None:
        """Take the acknowledgements out of replayed or paged messages."""
        for message in messages:
            if message.cid is not None:
                self._acknowledge(message)

    def _acknowledge(self, message: Message) -> None:
        say = self._resume.acknowledge(message)
        if say is None or say.cid is None:
            return
        ref = self._say_ref_of.pop(say.cid, None)
        if ref is not None:
            self._say_refs.pop(ref, None)
        waiter = self._say_waiters.pop(say.cid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(message)

    def _refuse_say(self, cid: str, error: ServerError) -> None:
        self._resume.forget(cid)
        self._say_ref_of.pop(cid, None)
        waiter = self._say_waiters.pop(cid, None)
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        else:
            self._emit(Error(code=error.code, message=error.message))

    async def _catch_up(self, connection: Connection, conversation: Conversation) -> None:
        """Page a conversation whose replay was cut short with `history after=<highest>` until complete."""
        retries = 0
        while conversation.catching_up:

            def on_page(frame: ServerFrame) -> None:
                if isinstance(frame, HistoryPage) and conversation.catching_up:
                    self._absorb(frame.messages)
                    self._emit_all(self._resume.page(conversation, frame.messages, truncated=frame.truncated))

            query = HistoryQuery(
                room=conversation.room,
                private=conversation.room is None,
                after=conversation.since,
                limit=CATCH_UP_PAGE,
                ref=self._next_ref(),
            )
            try:
                await connection.request(query, on_page)
            except ServerError as exc:
                if exc.code == ErrorCode.RATE_LIMITED and retries < RATE_LIMIT_RETRIES:
                    retries += 1
                    await asyncio.sleep(RATE_LIMIT_PAUSE)
                    continue
                what = "private messages" if conversation.room is None else f"room {conversation.room!r}"
                logger.warning("catching up on %s failed: %s", what, exc)
                self._emit_all(self._resume.page(conversation, [], truncated=False))
                self._emit(Error(code=exc.code, message=f"could not fetch every missed message of {what}"))
                return

    # --- connecting and resuming ---------------------------------------------------------------------------------

    async def _open(self, *, since: int | None) -> Connection:
        """A new connection, logged in; it becomes the client's connection and starts reading."""
        trust = self.options.tls
        try:
            connection = await Connection.open(self.host, self.port, ssl=None if trust is None else trust.context)
        except ssl_module.SSLCertVerificationError as exc:
            assert trust is not None
            raise trust.verification_failed(self.host, self.port, exc) from None
        try:
            if trust is not None:  # before the first frame: a refused server sees nothing of the login
                self.certificate = trust.check(self.host, self.port, connection.peer_certificate())
            welcome = await connection.handshake(
                nick=self._nick,
                secret=self.options.secret,
                session=self._session,
                since=since,
                ref=self._next_ref(),
                caps=self.options.caps,
            )
        except BaseException:
            connection.abort("the login did not complete")
            raise
        self._connection = connection
        self.welcome = welcome
        if self._session is not None and welcome.session != self._session and self._supervisor is None:
            # The server did not know our token (a new database): this is a new identity, whose private messages
            # start afresh, whatever `since` said about the old one.
            logger.warning("the server gave a new identity for %r: its session token was not known", welcome.nick)
            self._resume = ResumeState(private_since=0)
        self._nick = welcome.nick
        self._session = welcome.session
        self._resume.add_own_nick(welcome.nick)
        self._state = ClientState.RESUMING
        await self._open_udp(welcome)
        idle_timeout = float(welcome.limits.get("idle_timeout", DEFAULT_IDLE_TIMEOUT))
        connection.start(lambda frame: self._on_frame(connection, frame), idle_timeout=idle_timeout)
        logger.info("logged in to %s:%d as %r", self.host, self.port, welcome.nick)
        return connection

    async def _open_udp(self, welcome: Welcome) -> None:
        """A new UDP link for this session (docs/protocol.md 6: a new sid, key and seq counters with every welcome)."""
        self._close_udp()
        if not self.options.udp:
            return
        host = self.options.udp_host or self.host
        port = self.options.udp_port or welcome.udp.port
        try:
            self._udp = await UdpLink.open(
                host,
                port,
                welcome.udp.sid,
                welcome.udp.key,
                on_quick=self._received_by_udp,
                on_typing=self._typing_received,
                on_ack=self._quick_acked,
                on_expired=self._quick_expired,
                timings=self.options.udp_timings,
            )
        except OSError as exc:
            logger.info("no UDP quick channel (%s): quick messages go over TCP", exc)

    def _close_udp(self) -> None:
        """Close the session's UDP link; what waited for an ACK on it is sent again after the resume."""
        link, self._udp = self._udp, None
        if link is not None:
            for job in link.abandon():
                job.seq = None
            link.close()
        self._refused_seqs.clear()

    async def _start(self) -> None:
        """The first connection: any failure is raised to the caller of `connect()`."""
        try:
            async with asyncio.timeout(self.options.connect_timeout):
                connection = await self._open(since=self._resume.private.highest)
                self._emit(ConnectionEvent(state=ConnectionState.CONNECTED, reason="logged in", attempt=0))
                await self._settle_private(connection)
        except BaseException:
            if self._connection is not None:
                self._connection.abort("the first connection failed")
                await self._connection.wait_closed()
            self._state = ClientState.CLOSED
            raise
        self._set_ready(connection)
        self._save_identity()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"chat-client {self._nick!r}")

    async def _settle_private(self, connection: Connection) -> None:
        """Know which private messages are new: from the login `since`, or a baseline for later resumes."""
        private = self._resume.private
        if private.highest is None:
            if self._fresh_identity:
                private.note_seen(0)  # a new identity has no earlier private message
            else:
                # An application back with its token but no `since`: older private messages are not replayed.
                query = HistoryQuery(private=True, limit=1, ref=self._next_ref())
                page = _expect(await connection.request(query), HistoryPage)
                private.note_seen(max((m.id for m in page.messages), default=0))
            return
        # The login page follows welcome; a ping answered after it proves it has been read.
        await connection.request(Ping(ref=self._next_ref()))
        if private.catching_up:
            await self._catch_up(connection, private)

    async def _restore(self, connection: Connection) -> None:
        """After a re-login: join every room again with `since`, catch up, send unacknowledged says again."""
        joins: list[tuple[Conversation, asyncio.Future[ServerFrame]]] = []
        for conversation in self._resume.joined_rooms():
            assert conversation.room is not None
            since = conversation.since

            def on_joined(frame: ServerFrame, since: int = since) -> None:
                if isinstance(frame, Joined):
                    self._joined(frame, since=since)

            # docs/protocol.md 10.3: a rejoin after a lost connection says so
            join = Join(room=conversation.room, since=since, resumed=True, ref=self._next_ref())
            joins.append((conversation, connection.request(join, on_joined)))
        if self._away_text is not None:  # docs/protocol.md 8: away does not survive a server restart; set it again
            connection.send(SetAway(text=self._away_text, ref=self._next_ref()))
        barrier = connection.request(Ping(ref=self._next_ref()))  # after the login page, whether rooms or not
        await connection.drain()
        # Wait for every reply before raising anything, so no failed future is left unread.
        outcomes = await asyncio.gather(*(future for _, future in joins), barrier, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, ServerError):
                raise outcome  # the link dropped again: this attempt fails
        for (conversation, _), outcome in zip(joins, outcomes, strict=False):
            if not isinstance(outcome, ServerError):
                continue
            if outcome.code == ErrorCode.RATE_LIMITED:
                raise outcome  # transient: this attempt fails and the next one, after a backoff, joins again
            conversation.joined = False
            logger.warning("could not join %r again: %s", conversation.room, outcome)
            message = f"could not join {conversation.room!r} again: {outcome.message}"
            self._emit(Error(code=outcome.code, message=message))
        if isinstance(outcomes[-1], ServerError):
            raise outcomes[-1]
        for conversation in self._resume.needs_catch_up():
            await self._catch_up(connection, conversation)
        # protocol.md 4: each say not acknowledged by a replay, again with the same cid. No await from here to READY,
        # so a say made meanwhile is either in this list or sent by `say()` itself.
        for say in self._resume.unacked:
            self._send_say(connection, say)
        self._set_ready(connection)
        # docs/protocol.md 6: quick messages not acknowledged when the connection dropped go again on the new session.
        for job in list(self._quick_jobs.values()):
            self._dispatch_quick(job)

    def _set_ready(self, connection: Connection) -> None:
        if self._closed is None and connection is self._connection:
            self._state = ClientState.READY
            self._backoff.reset()
            self._wake()

    def _lost(self) -> None:
        """Forget what belonged to the dead connection; tracked says and highest ids stay."""
        self._state = ClientState.RECONNECTING
        self._close_udp()
        self._resume.connection_lost()
        self._say_refs.clear()
        self._say_ref_of.clear()

    async def _supervise(self) -> None:
        """Watch the connection; after a loss, reconnect and resume, or end the client."""
        try:
            while True:
                connection = self._connection
                assert connection is not None
                await connection.wait_closed()
                if self._closed is not None or self._quitting:
                    return
                reason = connection.close_reason or "the connection was lost"
                code = connection.close_code
                self._lost()
                if code == ErrorCode.SESSION_TAKEN:  # docs/protocol.md 8: do not reconnect by itself
                    await self._finish(reason, code)
                    return
                if not self.options.reconnect:
                    await self._finish(f"connection lost: {reason}", code)
                    return
                logger.info("connection to %s:%d lost: %s", self.host, self.port, reason)
                self._emit(ConnectionEvent(state=ConnectionState.DISCONNECTED, reason=reason, code=code))
                if not await self._reconnect(reason):
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("the client's connection supervisor failed")
            await self._finish("internal error in the client", None)

    async def _reconnect(self, reason: str) -> bool:
        """Try until a resume succeeds (True) or the client ends (False)."""
        self._backoff.reset()
        attempt = 0
        while self._closed is None and not self._quitting:
            attempt += 1
            limit = self.options.max_reconnect_attempts
            if limit is not None and attempt > limit:
                await self._finish(f"gave up after {limit} reconnection attempts: {reason}", None)
                return False
            delay = self._backoff.next_delay()
            self._emit(ConnectionEvent(state=ConnectionState.RECONNECTING, reason=reason, attempt=attempt, delay=delay))
            await asyncio.sleep(delay)
            try:
                async with asyncio.timeout(self.options.connect_timeout):
                    connection = await self._open(since=self._resume.private.since)
                self._emit(ConnectionEvent(state=ConnectionState.CONNECTED, reason="resumed", attempt=attempt))
                self._save_identity()
                await self._restore(connection)
                logger.info("resumed on %s:%d after %d attempt(s)", self.host, self.port, attempt)
                return True
            except LoginRefused as exc:
                # docs/protocol.md 8: e.g. nick_taken on a re-login: this identity lost its nick; nothing to retry.
                await self._finish(f"the server refused the login again: {exc.message}", exc.code)
                return False
            except TlsTrustError as exc:  # a changed certificate is not retried: someone may be in the middle
                logger.error("%s", exc)
                await self._finish(str(exc), None)
                return False
            except (OSError, TimeoutError, ServerError, ProtocolError) as exc:
                reason = str(exc) or type(exc).__name__
                logger.info("reconnection attempt %d to %s:%d failed: %s", attempt, self.host, self.port, reason)
                if self._connection is not None and not self._connection.closed:
                    self._connection.abort(reason)
                self._lost()
        return False

    # --- ending --------------------------------------------------------------------------------------------------

    async def quit(self, reason: str | None = None) -> None:
        """Leave cleanly (the server tells the rooms) and end the client; says still pending fail with ClientClosed."""
        if self._closed is not None or self._quitting:
            return
        self._quitting = True
        connection = self._connection
        if connection is not None and not connection.closed and self._state is not ClientState.CONNECTING:
            try:
                connection.send(Quit(reason=reason))
            except ConnectionLost:
                pass
            else:
                try:
                    async with asyncio.timeout(self.options.quit_timeout):
                        await connection.wait_closed()
                except TimeoutError:
                    logger.debug("the server did not close after quit; closing anyway")
        await self._finish("quit" if reason is None else f"quit: {reason}", None)

    async def close(self) -> None:
        """End the client: a clean `quit` if connected. Safe to call more than once."""
        await self.quit()

    def pause_reading(self) -> bool:
        """Test hook: stop reading the current TCP connection, as a stuck client would; False if there is none.
        Holds for this connection only (a reconnection reads)."""
        connection = self._connection
        if connection is None or connection.closed:
            return False
        _read_transport(connection).pause_reading()
        return True

    def resume_reading(self) -> None:
        """Read the current connection again after `pause_reading()`."""
        connection = self._connection
        if connection is not None and not connection.closed:
            _read_transport(connection).resume_reading()

    def drop_connection(self) -> None:
        """Test hook: cut the TCP connection under the client, as a network failure would; the client resumes."""
        if self._connection is not None:
            self._connection.abort("dropped by drop_connection()")

    async def _finish(self, reason: str, code: str | None) -> None:
        """End the client: fail what waits, close the connection, queue the `closed` event and the end marker."""
        if self._closed is not None:
            return
        closed = ClientClosed(reason, code)
        self._save_identity()
        self._closed = closed
        self._state = ClientState.CLOSED
        self._wake()
        waiters, self._say_waiters = self._say_waiters, {}
        for waiter in waiters.values():
            if not waiter.done():
                waiter.set_exception(closed)
        for job in list(self._quick_jobs.values()):
            if not job.future.done():
                job.future.set_exception(closed)
        self._close_udp()
        connection = self._connection
        if connection is not None:
            connection.abort(reason)
            await connection.wait_closed()
        supervisor = self._supervisor
        if supervisor is not None and supervisor is not asyncio.current_task():
            supervisor.cancel()
        log = logger.warning if code is not None else logger.info
        log("client %r ended: %s", self._nick, closed)
        self._events.put_nowait(ConnectionEvent(state=ConnectionState.CLOSED, reason=reason, code=code))
        self._events.put_nowait(_END)


def _read_transport(connection: Connection) -> asyncio.ReadTransport:
    """The connection's transport as the reading side it also is (a stream transport reads and writes)."""
    return cast(asyncio.ReadTransport, connection.transport)


def _expect(frame: ServerFrame, kind: type[FrameT]) -> FrameT:
    if not isinstance(frame, kind):
        raise ProtocolError(f"expected {kind.type} in reply, got {frame.type}")
    return frame


class Connect:
    """What `connect()` returns: `await` it for a started `Client`, or `async with` it to close the client after."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def __await__(self) -> Generator[Any, None, Client]:
        return self._start().__await__()

    async def _start(self) -> Client:
        await self.client._start()
        return self.client

    async def __aenter__(self) -> Client:
        return await self._start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.client.close()


def connect(
    host: str,
    port: int,
    *,
    nick: str,
    secret: str | None = None,
    session: str | None = None,
    since: int | None = None,
    reconnect: bool = True,
    backoff_initial: float = 0.2,
    backoff_max: float = 5.0,
    connect_timeout: float = 10.0,
    max_reconnect_attempts: int | None = None,
    tls: bool | ssl_module.SSLContext = False,
    cafile: str | os.PathLike[str] | None = None,
    fingerprint: str | None = None,
    known_hosts: str | os.PathLike[str] | None = None,
    udp: bool | None = None,
    udp_host: str | None = None,
    udp_port: int | None = None,
    udp_timings: UdpTimings = PROTOCOL_TIMINGS,
    caps: tuple[str, ...] | None = DEFAULT_CAPS,
    state: str | os.PathLike[str] | None = None,
) -> Connect:
    """Connect and log in: `async with connect(host, port, nick="alice") as client:` (or `await connect(...)`).

    `secret` is the server's shared secret when it asks for an HMAC proof. `session` is a token from an earlier
    `client.session`, to be the same identity again; `since` the highest private message id already shown
    (`client.highest_id()`), so the private messages received meanwhile are delivered. The first connection's
    failures are raised here (`LoginRefused`, `ServerError`, `OSError`, `TimeoutError` after `connect_timeout`);
    after that the client reconnects by itself with exponential backoff from `backoff_initial` to `backoff_max`
    seconds, unless `reconnect` is False. `udp_timings` is the UDP schedule (HELLO attempts, retransmissions, the
    5 s TCP fallback); keep the protocol's default outside tests.

    `state` names a file that keeps the identity for you (chat.client.identity): its token and private `since` are
    used when `session` and `since` are not given, and it is updated as they change, so a program started again
    with the same `state` is the same identity, gets its nick back and the private messages it missed.

    TLS (`tls=True`, or a CA file or fingerprint, which imply it; `port` is then the server's TLS port): `cafile`
    verifies the certificate against those CAs with the host name checked, `fingerprint="sha256:..."` accepts only
    that certificate, and neither trusts on first use: the fingerprint seen first is recorded in `known_hosts`
    (default `$XDG_STATE_HOME/chat/known_hosts`) and a different one later raises `UntrustedCertificate`, as it
    does on a reconnection, which then ends the client (chat.client.trust). `tls=` an `ssl.SSLContext` uses that
    context as it is. Every reconnection uses the same trust. With TLS, `udp` defaults to False: the UDP quick
    channel is signed but not encrypted, so quick messages and typing notices would travel in clear
    (docs/security.md); `udp=True` asks for it anyway.
    """
    trust = TlsTrust.build(tls, cafile=cafile, fingerprint=fingerprint, known_hosts=known_hosts)
    if state is not None:
        saved = load_identity(state)
        if saved is not None and session is None:
            session = saved.session
            since = saved.since if since is None else since
    options = ClientOptions(
        secret=secret or None,
        reconnect=reconnect,
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        connect_timeout=connect_timeout,
        max_reconnect_attempts=max_reconnect_attempts,
        tls=trust,
        udp=(trust is None) if udp is None else udp,
        udp_host=udp_host,
        udp_port=udp_port,
        udp_timings=udp_timings,
        caps=caps,
    )
    return Connect(Client(host, port, nick, session=session, since=since, options=options, state_path=state))
