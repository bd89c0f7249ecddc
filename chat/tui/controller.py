"""What the user's input and the server's events do: the one part of the terminal client that calls `chat.client`.

The controller owns the connection's life as the user sees it:

    connecting --welcome--> connected --link lost--> reconnecting ... connected      (the library resumes)
    connecting --unreachable--> reconnecting in N s --> connecting ...               (only before the first login)
    connecting --login refused--> refused --/nick or /reconnect--> connecting
    connected --session taken over elsewhere--> closed --/reconnect--> connecting

and translates: a line typed into the input becomes a pending line in the model and a `say` with the line's `cid`,
whose acknowledgement marks the line; each event of the client becomes a change of the model; a slash command goes
to `chat.tui.actions`; a running /send or /get belongs to `chat.tui.files`. It also keeps the state file current
(`chat.tui.state`). It reaches the
terminal only through `UserInterface` (redraw, background tasks, the bell, exit), so it knows nothing of
prompt_toolkit. Every background task it starts is guarded: an exception is logged and shown as a notice, never
raised into the event loop, so nothing the server does can crash the app.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from chat.client import (
    Client,
    ClientClosed,
    ConnectionEvent,
    ConnectionState,
    Error,
    Event,
    LoginRefused,
    Message,
    Presence,
    ProtocolError,
    ServerError,
    TlsTrustError,
    connect,
)
from chat.client.cids import new_cid
from chat.client.events import TYPING_SHOWN_SECONDS, Typing
from chat.client.resume import Backoff
from chat.protocol.errors import ErrorCode
from chat.protocol.messages import QuickMessage
from chat.protocol.names import DEFAULT_MAX_TEXT_CHARS, fold
from chat.tui.actions import HISTORY_PAGE, CommandActions
from chat.tui.commands import CommandTable, Text, UnknownCommand, parse
from chat.tui.files import FileTransfers
from chat.tui.logs import ConversationLogs
from chat.tui.model import (
    ACTION_PREFIX,
    ChatModel,
    Conversation,
    Delivery,
    Kind,
    Line,
    LineKind,
    LinkState,
    split_long,
)
from chat.tui.state import SessionState, StateStore, UnsentSay

logger = logging.getLogger("chat.tui")

CONTEXT_MESSAGES = 30  # older messages fetched for context when a conversation is opened again after a restart
BELL_INTERVAL = 2.0  # at most one bell in this many seconds, however many mentions arrive
SAVE_DELAY = 1.0  # state is written this long after the first change, so a burst of messages is one write
QUIT_TIMEOUT = 0.7  # /quit waits this long for the server to close, so the app exits within a second
TICK = 0.5  # redraw interval while a countdown ("reconnecting in N s") is shown
TYPING_EVERY = 3.0  # a typing notice at most this often per conversation (the others show one for 5 s)
UDP_WATCH = 1.0  # how often the status bar's UDP state and round-trip time are read from the client


class UserInterface(Protocol):
    """What the controller needs from the terminal application."""

    def refresh(self) -> None:
        """Redraw soon."""

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a background task that ends with the application."""
        ...

    def bell(self) -> None:
        """Ring the terminal bell."""

    def exit(self) -> None:
        """Leave the application (exit code 0)."""

    def show(self, conversation: Conversation) -> None:
        """Show a conversation (also when the model has already made it current): the input line keeps a draft
        per conversation."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Where to connect and as whom (the `[client]` section and the flags), and the rooms joined at start."""

    host: str
    port: int
    nick: str
    secret: str = ""
    rooms: tuple[str, ...] = ("lobby",)
    scripts: tuple[str, ...] = ()  # read as usual besides Latin and the nick's: names of others are marked
    connect_timeout: float = 10.0
    backoff_initial: float = 0.5
    backoff_max: float = 10.0
    # docs/protocol.md 8: the server's default text limit; the welcome does not say the server's own, so longer lines
    # are split at this one
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
    highlight: tuple[str, ...] = ()  # words that count as a mention besides the nick ([client] highlight)
    logs: bool = False  # conversation logs on disk ([client] logs; chat.tui.logs)
    tls: bool = False  # over TLS ([client] tls, --tls; `port` is then the TLS port)
    cafile: str = ""  # verify the certificate against these CAs ([client] cafile)
    fingerprint: str = ""  # trust only this certificate ([client] fingerprint); neither: trust on first use


class Controller:
    """Connects, keeps the model in step with the client's events, and runs what the user types (module doc)."""

    def __init__(
        self,
        settings: Settings,
        model: ChatModel,
        store: StateStore,
        ui: UserInterface,
        table: CommandTable,
        *,
        clock: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.monotonic = monotonic  # transfer rates (chat.tui.transfers); a test injects its own
        self.model = model
        model.highlights = settings.highlight
        self.store = store
        self.ui = ui
        self.table = table
        self.actions = CommandActions(self)
        self.files = FileTransfers(self)
        self.logs: ConversationLogs | None = None
        if settings.logs:
            name = f"{quote(settings.host, safe='')}-{settings.port}-{quote(fold(settings.nick), safe='')}"
            self.logs = ConversationLogs(store.directory / "logs" / name)
        self.clock = clock
        self.nick = settings.nick  # the nick to log in with; /nick changes it while logged out
        self.client: Client | None = None
        self.quitting = False
        self._saved = SessionState()
        self._login_nick = settings.nick
        self._ready = asyncio.Event()
        self._retry = asyncio.Event()
        self._replaying: set[str] = set()  # rooms joined without `since` whose replay is still arriving
        self._replayed: dict[str, int] = {}  # room -> highest id of its last join replay (history, not live)
        self._last_bell = float("-inf")
        self._typing_redraw: asyncio.TimerHandle | None = None
        self._typing_sent: dict[tuple[Kind, str], float] = {}  # conversation -> when we last said we type there
        self._save_pending = False
        self._ticking = False

    # --- background tasks ----------------------------------------------------------------------------------------

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Start a guarded background task."""
        return self.ui.spawn(self._guarded(coroutine))

    async def _guarded(self, coroutine: Coroutine[Any, Any, None]) -> None:
        try:
            await coroutine
        except asyncio.CancelledError:
            raise
        except ClientClosed as exc:
            logger.info("a request ended with the client: %s", exc)
        except Exception as exc:
            logger.exception("a background task of the terminal client failed")
            self.model.notice(f"internal error: {exc!r} (details in the log)", kind=LineKind.ERROR)
        self.ui.refresh()

    async def client_ready(self) -> Client:
        """The logged-in client, once there is one."""
        while self.client is None:
            self._ready.clear()
            await self._ready.wait()
        return self.client

    # --- the connection ------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """The connection's whole life (module doc): started once with the app, ends with it."""
        try:
            while not self.quitting:
                client = await self._connect()
                if client is None:
                    return
                self.client = client
                self._ready.set()
                self.spawn(self._start_session(client))
                await self._deliver_events(client)
                self.client = None
                if self.quitting:
                    return
                await self._wait_for_retry()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("the connection task of the terminal client failed")
            self.model.set_connection(LinkState.CLOSED, f"internal error: {exc!r}")
            self.model.notice_everywhere("internal error in the client (details in the log); /quit to leave")
            self.ui.refresh()

    async def _connect(self) -> Client | None:
        """Log in, retrying an unreachable server with backoff and a refused login when the user asks."""
        backoff = Backoff(self.settings.backoff_initial, self.settings.backoff_max)
        host, port = self.settings.host, self.settings.port
        told_unreachable = False
        while not self.quitting:
            self._saved = self.store.load(host, port, self.nick)
            self._login_nick = self.nick
            session = self._saved.session
            # With a token, `since` is always sent: without it the library counts every private message already
            # stored as seen (docs/protocol.md 3), so one sent to us while we were away would never be shown. An
            # identity that never showed a private message has seen none of them: 0.
            since = (self._saved.private or 0) if session else None
            self.model.set_connection(LinkState.CONNECTING, f"connecting to {host}:{port}")
            self.ui.refresh()
            try:
                client = await connect(
                    host,
                    port,
                    nick=self.nick,
                    secret=self.settings.secret or None,
                    session=session,
                    since=since,
                    connect_timeout=self.settings.connect_timeout,
                    tls=self.settings.tls,
                    cafile=self.settings.cafile or None,
                    fingerprint=self.settings.fingerprint or None,
                    known_hosts=self.store.directory / "known_hosts",
                )
            except LoginRefused as exc:
                self._refused(exc)
                await self._wait_for_retry()
                continue
            except TlsTrustError as exc:  # never retried by itself: the user decides (chat.client.trust)
                self.model.set_connection(LinkState.REFUSED, "untrusted TLS certificate")
                self.model.notice_everywhere(f"{exc}; /reconnect to try again", kind=LineKind.ERROR)
                self.ui.refresh()
                await self._wait_for_retry()
                continue
            except (OSError, TimeoutError, ServerError, ProtocolError) as exc:
                reason = f"cannot reach {host}:{port}: {_describe(exc)}"
                logger.info("%s", reason)
                delay = backoff.next_delay()
                self.model.set_connection(
                    LinkState.RECONNECTING, reason, retry_at=self.clock() + delay, attempt=backoff.attempts
                )
                if not told_unreachable:
                    told_unreachable = True
                    self.model.notice_everywhere(f"{reason}; trying again until it answers (/quit to leave)")
                self._start_ticker()
                self.ui.refresh()
                await self._wait_for_retry(timeout=delay)
                continue
            # Before the first event is read: the login's private page opens conversations with this marker.
            self.model.private_read_marker = since
            self.model.ignored.update((fold(nick), nick) for nick in self._saved.ignored)
            self.model.set_own_nick(client.nick)
            self.model.set_connection(LinkState.CONNECTED)
            if client.certificate is not None and client.certificate.first_use:
                self.model.notice_everywhere(
                    f"first TLS connection to {host}:{port}: its certificate {client.certificate.fingerprint} is "
                    "trusted from now on; compare it with the one the server's admin has"
                )
            self.ui.refresh()
            return client
        return None

    def _refused(self, exc: LoginRefused) -> None:
        self.model.set_connection(LinkState.REFUSED, f"{exc.code}: {exc.message}")
        hints: dict[str, str] = {
            ErrorCode.NICK_TAKEN: "pick another nick with /nick NEWNICK",
            ErrorCode.BAD_NICK: "pick another nick with /nick NEWNICK",
            ErrorCode.AUTH_FAILED: "the server wants its shared secret: start again with --secret",
        }
        hint = hints.get(exc.code, "/reconnect to try again")
        self.model.notice_everywhere(f"the server refused the login: {exc.message}; {hint}", kind=LineKind.ERROR)
        self.ui.refresh()

    async def _wait_for_retry(self, timeout: float | None = None) -> None:
        """Wait for /nick, /reconnect or /quit (or `timeout` seconds)."""
        self._retry.clear()
        try:
            async with asyncio.timeout(timeout):
                await self._retry.wait()
        except TimeoutError:
            pass

    def _start_ticker(self) -> None:
        if not self._ticking:
            self._ticking = True
            self.spawn(self._tick())

    async def _tick(self) -> None:
        """Redraw while a countdown is shown."""
        try:
            while self.model.connection.retry_at is not None and not self.quitting:
                self.ui.refresh()
                await asyncio.sleep(TICK)
        finally:
            self._ticking = False

    async def _start_session(self, client: Client) -> None:
        """After a login: join lobby and the rooms open last time, reopen private conversations, say again what
        was not acknowledged when the app last exited."""
        saved = self._saved
        self.save_now()  # the session token, at once: without it the nick is held away from us
        rooms: dict[str, str] = {}
        for name in (*self.settings.rooms, *(c.name for c in self._rooms()), *saved.open_rooms):
            rooms.setdefault(fold(name), name)
        for name in rooms.values():
            conversation = self.model.find(Kind.ROOM, name)
            since = saved.room_since(name)
            if conversation is not None and conversation.highest is not None:
                since = max(since or 0, conversation.highest)
            await self.join_room(client, name, since=since)
        for peer in saved.private_peers:
            conversation = self.model.open_private(peer)
            if conversation.read_marker is None:
                conversation.read_marker = saved.private or 0
            await self.load_older(conversation, CONTEXT_MESSAGES, quiet=True)
        self.spawn(self._watch_udp(client))
        unsent, saved.unsent = saved.unsent, []
        for say in unsent:
            target = self.model.find(Kind.ROOM, say.room) if say.room else self.model.private_for(say.to or "")
            if target is not None and target.pending(say.cid) is None:
                self.say(target, say.text, cid=say.cid)
        self.ui.refresh()

    async def join_room(self, client: Client, room: str, *, since: int | None) -> None:
        conversation = self.model.open_room(room)
        if self.model.current.kind is Kind.STATUS:
            self.ui.show(conversation)
        key = fold(room)
        if since is None:
            self._replaying.add(key)
        try:
            joined = await client.join(room, since=since)
        except ServerError as exc:
            self.model.notice(f"cannot join {room}: {exc.message}", conversation, kind=LineKind.ERROR)
            return
        finally:
            self._replaying.discard(key)
        self._replayed[key] = max((m.id for m in joined.messages), default=0) if since is None else 0
        conversation.joined = True
        self.model.set_members(joined.room, [(nick, None) for nick in joined.members])
        # docs/protocol.md 10.4: with lazy-members, `members` is only the first page; the count is the whole room
        others = (joined.member_count if joined.member_count is not None else len(joined.members)) - 1
        company = "nobody else is here" if others == 0 else f"{others} other{'s' if others > 1 else ''} here"
        self.model.notice(f"you joined {joined.room}; {company}", conversation, kind=LineKind.JOIN)
        if since is None:
            conversation.has_older = joined.truncated
        else:
            if conversation.read_marker is None:
                conversation.read_marker = since
            if conversation.oldest is None or conversation.oldest > since:  # context above the unread marker
                page = await client.history(room=joined.room, before=since + 1, limit=CONTEXT_MESSAGES)
                self.model.add_history(conversation, page.messages, older=True)
                conversation.has_older = page.truncated
        self.ui.refresh()
        await self._refresh_members(client, joined.room)

    async def _refresh_members(self, client: Client, room: str) -> None:
        try:
            members = await client.who(room)
        except ServerError as exc:
            logger.info("who %s: %s", room, exc)
            return
        self.model.set_members(members.room, [(m.nick, m.away) for m in members.members])
        self.ui.refresh()

    def _rooms(self) -> list[Conversation]:
        return [c for c in self.model.conversations if c.kind is Kind.ROOM]

    async def _watch_udp(self, client: Client) -> None:
        """Keep the status bar's UDP part current: round-trip time, or that quick messages go over TCP."""
        while self.client is client and not client.closed:
            status = udp_status(client.udp_state, client.udp_rtt)
            if status != self.model.udp_status:
                self.model.udp_status = status
                self.ui.refresh()
            if client.udp_state == "binding":
                await client.wait_udp(timeout=UDP_WATCH)  # back as soon as the channel is bound
            elif client.udp_state == "ok" and client.udp_rtt is None:
                await client.udp_ping(timeout=UDP_WATCH)
            else:
                await asyncio.sleep(UDP_WATCH)

    # --- events --------------------------------------------------------------------------------------------------

    async def _deliver_events(self, client: Client) -> None:
        """Every event of the client into the model, until the client ends."""
        while True:
            try:
                event = await client.recv()
            except ClientClosed:
                return
            try:
                self.handle(event)
            except Exception:
                logger.exception("could not show a %s event", event.type)
            self.ui.refresh()

    def handle(self, event: Event) -> None:
        """One event of the client library: a message, a presence change, an error or a connection change."""
        if isinstance(event, Message):
            self._on_message(event)
        elif isinstance(event, Presence):
            # docs/protocol.md 10.3: a resumed join is someone who only reconnected: a member again, but not news
            quiet = bool(event.resumed) and event.event == "join"
            self.model.presence(event.room, event.nick, event.event, old=event.old, text=event.text, quiet=quiet)
        elif isinstance(event, Error):
            self.model.notice(f"the server says: {event.code}: {event.message}", kind=LineKind.ERROR)
        elif isinstance(event, ConnectionEvent):
            self._on_connection(event)
        elif isinstance(event, Typing):
            self.model.note_typing(event.sender, event.room, self.clock() + TYPING_SHOWN_SECONDS)
            if self._typing_redraw is not None:
                self._typing_redraw.cancel()
            # the line goes when the notice expires: one redraw then (a later notice moves it)
            loop = asyncio.get_running_loop()
            self._typing_redraw = loop.call_later(TYPING_SHOWN_SECONDS + 0.1, self.ui.refresh)
        elif isinstance(event, QuickMessage):
            added = self.model.add_quick(event)
            if added is not None:
                self._log(added.conversation, added.line)
            if added is not None and added.bell:
                self._ring()
        else:
            logger.debug("not shown: %s event", event.type)

    def _on_message(self, message: Message) -> None:
        live = True
        if message.room is not None:
            key = fold(message.room)
            live = key not in self._replaying and message.id > self._replayed.get(key, 0)
        added = self.model.add_message(message, live=live)
        if added is not None and (live or not added.new):
            self._log(added.conversation, added.line)
        if added is not None and added.bell:
            self._ring()
        self.schedule_save()

    def _log(self, conversation: Conversation, line: Line) -> None:
        if self.logs is not None:
            self.logs.write(conversation, line)

    def _ring(self) -> None:
        now = self.clock()
        if now - self._last_bell >= BELL_INTERVAL:
            self._last_bell = now
            self.ui.bell()

    def _on_connection(self, event: ConnectionEvent) -> None:
        model = self.model
        if event.state is ConnectionState.CONNECTED:
            model.set_connection(LinkState.CONNECTED)
            if event.attempt > 0:
                model.notice_everywhere("reconnected; nothing was lost")
                client = self.client
                if client is not None:
                    for conversation in self._rooms():
                        self.spawn(self._refresh_members(client, conversation.name))
        elif event.state is ConnectionState.DISCONNECTED:
            model.set_connection(LinkState.DISCONNECTED, event.reason)
            model.notice_everywhere(f"connection lost: {event.reason or 'no reason given'}")
        elif event.state is ConnectionState.RECONNECTING:
            retry_at = self.clock() + (event.delay or 0.0)
            model.set_connection(LinkState.RECONNECTING, event.reason, retry_at=retry_at, attempt=event.attempt)
            self._start_ticker()
        elif event.state is ConnectionState.CLOSED and not self.quitting:
            reason = event.reason or "the connection ended"
            model.set_connection(LinkState.CLOSED, reason)
            if event.code == ErrorCode.SESSION_TAKEN:
                model.notice_everywhere(
                    "another client logged in as you and took this session over; "
                    "/reconnect takes it back, /quit leaves",
                    kind=LineKind.ERROR,
                )
            else:
                model.notice_everywhere(f"disconnected: {reason}; /reconnect to try again", kind=LineKind.ERROR)

    # --- what the user types -------------------------------------------------------------------------------------

    def submit(self, line: str) -> None:
        """An input line: a text for the conversation shown, or a command."""
        conversation = self.model.current
        conversation.history.add(line)
        # What the user types answers at the bottom (a message, a notice, an error): show the bottom.
        conversation.scroll = 0
        parsed = parse(line, self.table)
        if isinstance(parsed, Text):
            self.send(conversation, parsed.text)
        elif isinstance(parsed, UnknownCommand):
            self.model.notice(f"unknown command /{parsed.name}; /help lists the commands", kind=LineKind.ERROR)
        else:
            self.actions.run(conversation, parsed)
        self.model.current.scroll = 0
        self.ui.refresh()

    def send(self, conversation: Conversation, text: str) -> None:
        """Show `text` at once as pending in `conversation` and say it; the line is marked when acknowledged.
        A text over the server's limit goes as several messages, cut at blanks (`split_long`)."""
        if conversation.kind is Kind.STATUS:
            self.model.notice("this is not a room: /join a room or /msg someone first", kind=LineKind.ERROR)
            return
        action = text.startswith(ACTION_PREFIX)
        body = text[len(ACTION_PREFIX) :] if action else text
        prefix = ACTION_PREFIX if action else ""
        pieces = split_long(body, self.settings.max_text_chars - len(prefix))
        if len(pieces) > 1:
            self.model.notice(
                f"a long line: sent as {len(pieces)} messages of at most {self.settings.max_text_chars} characters",
                conversation,
            )
        for piece in pieces:
            self.say(conversation, prefix + piece)

    def say(
        self, conversation: Conversation, text: str, *, cid: str | None = None, origin: Conversation | None = None
    ) -> None:
        """Say `text` in a room or private conversation, shown at once as pending (see `send`). `origin`: where
        the command that opened a private conversation was typed, shown again if the nick does not exist."""
        cid = cid or new_cid()
        self.model.add_pending(conversation, text, cid)
        self.spawn(self._say(conversation, text, cid, origin))

    async def _say(self, conversation: Conversation, text: str, cid: str, origin: Conversation | None) -> None:
        client = await self.client_ready()
        target = {"room": conversation.name} if conversation.kind is Kind.ROOM else {"to": conversation.name}
        try:
            message = await client.say(text, cid=cid, **target)
        except ServerError as exc:
            self.model.fail(conversation, cid, exc.message)
            self._drop_if_nobody(conversation, exc, origin, "message")
            return
        except ClientClosed as exc:
            if not self.quitting:  # when quitting it is kept as unsent and said again on the next run
                self.model.fail(conversation, cid, f"the connection ended ({exc.reason})")
            return
        added = self.model.add_message(message)
        if added is not None:
            self._log(added.conversation, added.line)
        self.schedule_save()

    def _drop_if_nobody(
        self, conversation: Conversation, exc: ServerError, origin: Conversation | None, what: str
    ) -> None:
        """A private conversation opened for a nick nobody ever had, holding nothing but what was refused, is
        closed (no junk entry in the list); the refusal is told where the command was typed."""
        if conversation.kind is not Kind.PRIVATE or exc.code != ErrorCode.NO_SUCH_NICK:
            return
        if any(not line.own or line.delivery is not Delivery.FAILED for line in conversation.lines if line.sender):
            return
        self.model.close(conversation)
        if origin is not None and origin in (*self.model.conversations, self.model.status_conversation()):
            self.ui.show(origin)
        else:
            self.ui.show(self.model.current)
        self.model.notice(f"{what} to {conversation.name} not sent: {refusal(exc)}", kind=LineKind.ERROR)
        self.ui.refresh()

    def send_quick(self, nick: str, text: str, *, nudge: bool, origin: Conversation | None = None) -> None:
        """A quick message over the UDP channel, shown in the private conversation with `nick` with its delivery."""
        target = self.model.private_for(nick)
        self.ui.show(target)
        cid = new_cid()
        self.model.add_pending_quick(target, text, cid, nudge=nudge)

        async def send() -> None:
            client = await self.client_ready()
            try:
                receipt = await client.quick(text, to=target.name, nudge=nudge, cid=cid)
            except ServerError as exc:
                self.model.fail(target, cid, refusal(exc))
                self._drop_if_nobody(target, exc, origin, "nudge" if nudge else "quick message")
                return
            except ClientClosed as exc:
                self.model.fail(target, cid, f"the connection ended ({exc.reason})")
                return
            line = target.pending(cid)
            self.model.quick_acknowledged(target, cid, receipt.via)
            if line is not None:
                self._log(target, line)

        self.spawn(send())

    def typing(self, conversation: Conversation) -> None:
        """The user is typing a message in `conversation`: tell the others, at most every TYPING_EVERY seconds
        (best effort, over UDP; nothing when there is no UDP channel)."""
        client = self.client
        if client is None or conversation.kind is Kind.STATUS:
            return
        now = self.clock()
        if now - self._typing_sent.get(conversation.key, float("-inf")) < TYPING_EVERY:
            return
        self._typing_sent[conversation.key] = now
        if conversation.kind is Kind.ROOM:
            client.typing(room=conversation.name)
        else:
            client.typing(to=conversation.name)

    def log_in_as(self, nick: str) -> None:
        """While logged out (refused, taken over): log in again with this nick."""
        self.nick = nick
        self.model.set_own_nick(nick)
        self._retry.set()

    def reconnect(self) -> None:
        """While logged out: try to log in again now."""
        self._retry.set()

    # --- switching and older history -----------------------------------------------------------------------------

    def request_older(self, conversation: Conversation) -> None:
        """The user scrolled to the top: fetch the page before the oldest message shown, if there is one."""
        if conversation.kind is Kind.STATUS or conversation.loading_older or conversation.has_older is False:
            return
        self.spawn(self.load_older(conversation, HISTORY_PAGE, quiet=True))

    async def load_older(self, conversation: Conversation, limit: int, *, quiet: bool) -> None:
        if conversation.loading_older:
            return
        if conversation.has_older is False:
            if not quiet:
                self.model.notice("no older messages", conversation)
            return
        conversation.loading_older = True
        self.ui.refresh()
        try:
            client = await self.client_ready()
            before = conversation.oldest
            if conversation.kind is Kind.ROOM:
                page = await client.history(room=conversation.name, before=before, limit=limit)
            else:
                page = await client.history(to=conversation.name, before=before, limit=limit)
        except ServerError as exc:
            self.model.notice(f"could not load older messages: {exc.message}", conversation, kind=LineKind.ERROR)
            return
        finally:
            conversation.loading_older = False
        added = self.model.add_history(conversation, page.messages, older=True)
        conversation.has_older = page.truncated
        if not quiet and not added:
            self.model.notice("no older messages", conversation)
        self.ui.refresh()

    # --- state ---------------------------------------------------------------------------------------------------

    def snapshot(self) -> SessionState:
        """What to remember for the next run (see `chat.tui.state`)."""
        saved = self._saved
        rooms = dict(saved.rooms)
        for conversation in self._rooms():
            if conversation.highest is not None:
                key = fold(conversation.name)
                rooms[key] = max(rooms.get(key, 0), conversation.highest)
        # Only what a conversation shows: the library's own highest id may count messages never drawn (a baseline,
        # or events still queued), and this number is both the next login's `since` and the read marker.
        private = [saved.private or 0]
        private.extend(c.highest or 0 for c in self.model.conversations if c.kind is Kind.PRIVATE)
        client = self.client
        unsent = []
        for conversation in self.model.conversations:
            for line in conversation.lines:
                if line.delivery is Delivery.PENDING and line.cid is not None and line.kind is not LineKind.QUICK:
                    text = ACTION_PREFIX + line.text if line.kind is LineKind.ACTION else line.text
                    room = conversation.name if conversation.kind is Kind.ROOM else None
                    to = conversation.name if conversation.kind is Kind.PRIVATE else None
                    unsent.append(UnsentSay(room=room, to=to, text=text, cid=line.cid))
        return SessionState(
            session=(client.session if client is not None else None) or saved.session,
            private=max(private) or None,
            rooms=rooms,
            open_rooms=[c.name for c in self._rooms()],
            private_peers=[c.name for c in self.model.conversations if c.kind is Kind.PRIVATE],
            unsent=unsent,
            ignored=sorted(self.model.ignored.values(), key=fold),
        )

    def save_now(self) -> None:
        state = self.snapshot()
        if state.session is None:
            return  # never logged in: nothing worth keeping
        self._saved = state
        host, port = self.settings.host, self.settings.port
        try:
            for nick in {fold(self._login_nick): self._login_nick, fold(self.model.nick): self.model.nick}.values():
                self.store.save(host, port, nick, state)
        except OSError as exc:
            logger.warning("cannot save the client state: %s", exc)

    def schedule_save(self) -> None:
        if not self._save_pending and not self.quitting:
            self._save_pending = True
            self.spawn(self._save_later())

    async def _save_later(self) -> None:
        try:
            await asyncio.sleep(SAVE_DELAY)
        finally:
            self._save_pending = False
        self.save_now()

    # --- leaving -------------------------------------------------------------------------------------------------

    def request_quit(self) -> None:
        """Quit from a signal handler or a key binding."""
        self.spawn(self.quit(None))

    async def quit(self, reason: str | None) -> None:
        """Save the state, send `quit` (waiting at most QUIT_TIMEOUT for the server), and leave the app."""
        if self.quitting:
            return
        self.quitting = True
        self._retry.set()
        self.save_now()
        if self.logs is not None:
            self.logs.close()
        client = self.client
        if client is not None:
            try:
                async with asyncio.timeout(QUIT_TIMEOUT):
                    await client.quit(reason)
            except TimeoutError:
                logger.info("the server did not close within %.1f s of quit; leaving anyway", QUIT_TIMEOUT)
            except Exception:
                logger.exception("quit failed; leaving anyway")
        self.ui.exit()


def udp_status(state: str, rtt: float | None) -> str:
    """The status bar's words for the UDP quick channel."""
    if state == "ok":
        return f"UDP {rtt * 1000:.1f} ms" if rtt is not None else "UDP ok"
    if state == "blocked":
        return "UDP blocked, using TCP"
    if state == "binding":
        return "UDP connecting"
    return "UDP off"


_REFUSALS: dict[str, str] = {
    ErrorCode.NO_SUCH_NICK: "nobody has that nick",
    ErrorCode.NICK_OFFLINE: "not connected now",
}


def refusal(exc: ServerError) -> str:
    """`code: why`, saying the code once: a refusal that came over UDP names only its code (its message is
    `quick message refused: CODE`), so the words come from here."""
    if exc.code and exc.code in exc.message:
        return f"{exc.code}: {_REFUSALS.get(exc.code, 'refused')}"
    return f"{exc.code}: {exc.message}" if exc.code else exc.message


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, TimeoutError):
        return "no answer"
    return str(exc) or type(exc).__name__
