"""What the terminal client shows, as plain data: conversations, their lines, unread counts, members, input history.

Pure: no prompt_toolkit, no asyncio, and time only through the `clock` it is given. The controller feeds it the
client's events and the user's actions; the layout reads it; the tests drive it directly.

Invariants, in plain words:

- A conversation is a room, a private conversation with one nick, or the status conversation (notices while no room
  is open). Rooms and private conversations are keyed by kind and folded name, so `Lobby` and `lobby` are one room,
  and a room `bob` is not the private conversation with `bob`. Rooms are listed first, then private conversations,
  each in the order they were opened; that order is the numbering the user switches with.
- A message id appears at most once in a conversation (`ids`): a join replay, a history page and a live copy of the
  same message show it once.
- Lines with an id are kept in ascending id order. A line without one (a notice, or an own message not yet
  acknowledged) stays where it was added.
- An own message is one line from the moment it is typed: `PENDING`, then `ACKED` when its echo (same `cid`) comes
  back, taking the echo's id and time, or `FAILED` with the server's reason. The echo never adds a second line.
  Quick messages (UDP, not stored) are lines without an id: an own one goes from `PENDING` to `ACKED` with `via`
  ("udp" or "tcp", how the server acknowledged it) or to `FAILED`.
- `unread` and `mentioned` count live messages from others in conversations other than the current one; switching to
  a conversation clears them. `read_marker` is the highest id the user had seen when they last left the
  conversation (or when the app last ran): the unread marker line goes above the first message after it.
- A message that announces a file (`message.file`) is a `FILE` line, and its file is remembered in `files` (by fid,
  kept after its line is cleared or trimmed, at most `MAX_FILES`) so /get can name it by a unique start of its fid
  and complete it, the most recent (highest message id) first. `transfers` are the /send and /get running now.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

import wcwidth

from chat.protocol.messages import FileInfo, Message, QuickMessage
from chat.protocol.names import fold, nfc
from chat.tui.transfers import Transfer

ACTION_PREFIX = "/me "  # a message whose text starts with this is shown as an action: `* alice waves`
MAX_LINES = 5000  # scrollback kept per conversation; older lines can be loaded again from the server
INPUT_HISTORY = 200  # entries of input history kept per conversation
STATUS_NAME = "status"
MAX_FILES = 1000  # files remembered for /get and its completion

_line_numbers = itertools.count(1)


class Kind(StrEnum):
    """What a conversation is."""

    ROOM = "room"
    PRIVATE = "private"
    STATUS = "status"


class LineKind(StrEnum):
    """What a line in the message pane is."""

    MESSAGE = "message"
    ACTION = "action"  # /me
    NOTICE = "notice"  # the client talking to the user
    ERROR = "error"
    JOIN = "join"
    PART = "part"  # part or quit
    NICK = "nick"
    AWAY = "away"
    QUICK = "quick"
    FILE = "file"  # a message announcing a file: `text` is its display name, `file` says what it is


class Delivery(StrEnum):
    """Where an own message is on its way to the server."""

    PENDING = "pending"
    ACKED = "acked"
    FAILED = "failed"


class LinkState(StrEnum):
    """The connection as the status bar shows it."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    RECONNECTING = "reconnecting"
    REFUSED = "refused"  # the server refused the login; the user may pick another nick
    CLOSED = "closed"


@dataclass(eq=False, slots=True)
class Line:
    """One entry in a conversation: a message, an own message on its way, a notice or a presence change."""

    kind: LineKind
    text: str
    ts: float  # seconds since the epoch
    sender: str = ""
    id: int | None = None
    cid: str | None = None
    own: bool = False
    delivery: Delivery | None = None  # own messages only
    reason: str | None = None  # why a FAILED message was refused
    mention: bool = False
    nudge: bool = False  # a quick message that is a nudge
    via: str | None = None  # how an own quick message was acknowledged: "udp" or "tcp"
    file: FileInfo | None = None  # FILE lines: the file the message announces
    uid: int = field(default_factory=lambda: next(_line_numbers))
    version: int = 0  # bumped on every change, so a view can cache what it drew

    def changed(self) -> None:
        self.version += 1


@dataclass(frozen=True, slots=True)
class SeenFile:
    """A file announced in a conversation: what /get fetches, with the id of the message that announced it."""

    info: FileInfo
    message_id: int
    sender: str


@dataclass(slots=True)
class Member:
    nick: str
    away: str | None = None


@dataclass(slots=True)
class InputHistory:
    """What the user sent in one conversation, browsed with Up and Down; the line being typed is kept aside."""

    entries: list[str] = field(default_factory=list)
    index: int | None = None  # position while browsing; None: not browsing
    draft: str = ""

    def add(self, text: str) -> None:
        if text and (not self.entries or self.entries[-1] != text):
            self.entries.append(text)
            del self.entries[:-INPUT_HISTORY]
        self.index = None

    def previous(self, current: str) -> str | None:
        """The entry before the one shown (the newest when not browsing), or None at the oldest."""
        if not self.entries:
            return None
        if self.index is None:
            self.draft = current
            self.index = len(self.entries)
        if self.index == 0:
            return None
        self.index -= 1
        return self.entries[self.index]

    def next(self) -> str | None:
        """The entry after the one shown, the kept draft after the newest, or None when not browsing."""
        if self.index is None:
            return None
        self.index += 1
        if self.index >= len(self.entries):
            self.index = None
            return self.draft
        return self.entries[self.index]


@dataclass(eq=False)
class Conversation:
    """A room, a private conversation or the status conversation, with everything shown in it."""

    kind: Kind
    name: str  # the spelling shown; the server's when known
    lines: list[Line] = field(default_factory=list)
    ids: set[int] = field(default_factory=set)
    members: dict[str, Member] = field(default_factory=dict)  # folded nick -> member, in join order
    joined: bool = False
    unread: int = 0
    mentioned: bool = False
    read_marker: int | None = None
    highest: int | None = None  # largest message id ever added
    oldest: int | None = None  # smallest message id ever added: where older history continues
    has_older: bool | None = None  # None: not known yet
    loading_older: bool = False
    scroll: int = 0  # rows scrolled up from the bottom of the message pane
    new_below: int = 0  # live messages that arrived while scrolled up
    draft: str = ""  # the input line, kept while another conversation is shown
    history: InputHistory = field(default_factory=InputHistory)
    version: int = 0

    @property
    def key(self) -> tuple[Kind, str]:
        return (self.kind, fold(self.name))

    def changed(self) -> None:
        self.version += 1

    def first_unread_index(self) -> int | None:
        """Index of the first message above `read_marker` (where the unread marker goes), or None."""
        if self.read_marker is None:
            return None
        first = None
        for index in range(len(self.lines) - 1, -1, -1):
            line = self.lines[index]
            if line.id is None:
                continue
            if line.id <= self.read_marker:
                break
            if not line.own:
                first = index
        return first

    def pending(self, cid: str) -> Line | None:
        """The own line with this `cid` still waiting for its acknowledgement."""
        for line in reversed(self.lines):
            if line.cid == cid and line.own and line.delivery is Delivery.PENDING:
                return line
        return None


@dataclass(slots=True)
class ConnectionStatus:
    state: LinkState = LinkState.CONNECTING
    reason: str | None = None
    retry_at: float | None = None  # clock time of the next reconnection attempt
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class Added:
    """What `add_message` did: the line it added or updated, where, and whether it deserves the bell."""

    conversation: Conversation
    line: Line
    new: bool  # a new line (False: an own pending line was acknowledged)
    bell: bool


def find_mentions(text: str, nick: str) -> list[tuple[int, int]]:
    """Where `nick` occurs in `text` as a word of its own, ignoring case: (start, end) spans."""
    if not nick:
        return []
    pattern = rf"(?<![\w.-])({re.escape(nick)})(?![\w-])"
    return [match.span(1) for match in re.finditer(pattern, text, re.IGNORECASE)]


def find_highlights(text: str, words: Iterable[str]) -> list[tuple[int, int]]:
    """Where any of `words` (the own nick, the configured highlight words) occurs in `text` as a word of its own,
    ignoring case: (start, end) spans in order, none overlapping."""
    spans = sorted(span for word in words for span in find_mentions(text, word))
    kept: list[tuple[int, int]] = []
    for start, end in spans:
        if not kept or start >= kept[-1][1]:
            kept.append((start, end))
    return kept


def private_peer(message: Message, own: Callable[[str], bool]) -> str:
    """The other party of a private message: the recipient of one we sent, else the sender."""
    if own(message.sender) and message.to is not None:
        return message.to
    return message.sender


class ChatModel:
    """Every conversation, which one is shown, the connection state, and the own nick (see the module doc)."""

    def __init__(
        self,
        nick: str,
        server: str,
        clock: Callable[[], float],
        *,
        max_lines: int = MAX_LINES,
        scripts: Iterable[str] = (),
    ) -> None:
        self.nick = nick
        self.scripts = frozenset(scripts)  # read as usual besides Latin and the own nick's (chat/tui/render.py)
        self.server = server
        self.clock = clock
        self.max_lines = max_lines
        self.own_nicks = {fold(nick)}
        self.away: str | None = None
        self.conversations: list[Conversation] = []
        self._current: Conversation | None = None
        self._status: Conversation | None = None
        self.connection = ConnectionStatus()
        self.udp_status: str | None = None  # shown in the status bar when the client has a UDP channel
        self.confirm: str | None = None  # a question the input line waits for (Enter: yes, Esc: no)
        self.known_rooms: dict[str, str] = {}  # folded -> spelling, for completion (from /list and joins)
        self.private_read_marker: int | None = None  # highest private id seen in the last run: the unread marker
        self.files: dict[str, SeenFile] = {}  # fid -> the file, from every message with a file shown so far
        self.transfers: list[Transfer] = []  # running /send and /get, oldest first
        # folded nick -> the folded nick it became, from the nick changes seen in shared rooms: a private
        # conversation follows its peer, and a peer back under an older nick finds the same conversation
        self.renamed: dict[str, str] = {}
        self.ignored: dict[str, str] = {}  # folded nick -> spelling: /ignore, their messages are not shown
        self.highlights: tuple[str, ...] = ()  # words that count as a mention, besides the own nick ([client])
        self.typists: dict[tuple[Kind, str, str], float] = {}  # (kind, folded name, sender) -> shown until (clock)
        self.version = 0

    # --- conversations -------------------------------------------------------------------------------------------

    @property
    def current(self) -> Conversation:
        """The conversation shown; the status conversation when no other is open."""
        if self._current is not None:
            return self._current
        return self.status_conversation()

    def status_conversation(self) -> Conversation:
        if self._status is None:
            self._status = Conversation(Kind.STATUS, STATUS_NAME)
        return self._status

    def is_own(self, nick: str) -> bool:
        return fold(nick) in self.own_nicks

    def highlight_words(self) -> tuple[str, ...]:
        """What marks a message as a mention: the own nick and the configured highlight words."""
        return (self.nick, *self.highlights)

    def is_ignored(self, nick: str) -> bool:
        """Messages from this nick are not shown (/ignore); never our own."""
        return bool(self.ignored) and fold(nick) in self.ignored and not self.is_own(nick)

    def find(self, kind: Kind, name: str) -> Conversation | None:
        key = (kind, fold(name))
        return next((c for c in self.conversations if c.key == key), None)

    def open_room(self, name: str) -> Conversation:
        """The room's conversation, created (after the other rooms) if it is not open."""
        conversation = self.find(Kind.ROOM, name)
        if conversation is None:
            conversation = Conversation(Kind.ROOM, name)
            rooms = sum(1 for c in self.conversations if c.kind is Kind.ROOM)
            self.conversations.insert(rooms, conversation)
            self._changed()
        self.known_rooms[fold(name)] = name
        return conversation

    def open_private(self, nick: str) -> Conversation:
        """The private conversation with `nick`, created (after every other) if it is not open."""
        conversation = self.find(Kind.PRIVATE, nick)
        if conversation is None:
            conversation = Conversation(Kind.PRIVATE, nick, joined=True, read_marker=self.private_read_marker)
            self.conversations.append(conversation)
            self._changed()
        return conversation

    def private_for(self, nick: str) -> Conversation:
        """The private conversation with `nick`: the one open under this nick, else one open under a nick it was
        seen to become (or to come from), renamed to `nick`; else a new one. The server shows no identity to
        clients, so nick changes seen are all the client can go by."""
        conversation = self.find(Kind.PRIVATE, nick)
        if conversation is not None:
            return conversation
        for other in self._aliases(nick):
            conversation = self.find(Kind.PRIVATE, other)
            if conversation is not None:
                self.notice(f"{conversation.name} is now known as {nick}", conversation, kind=LineKind.NICK)
                conversation.name = nick
                self.renamed[fold(other)] = fold(nick)
                return conversation
        return self.open_private(nick)

    def _aliases(self, nick: str) -> list[str]:
        """Every nick linked to `nick` by the nick changes seen, nearest first (both directions)."""
        links: dict[str, set[str]] = {}
        for old, new in self.renamed.items():
            links.setdefault(old, set()).add(new)
            links.setdefault(new, set()).add(old)
        start = fold(nick)
        seen, queue = {start}, [start]
        for current in queue:
            for other in sorted(links.get(current, ())):
                if other not in seen:
                    seen.add(other)
                    queue.append(other)
        return queue[1:]

    def peer_renamed(self, old: str, new: str) -> None:
        """A peer changed nick (seen in a room we share): the private conversation with them follows, unless one
        with the new nick is open already."""
        if fold(old) == fold(new):
            return
        self.renamed[fold(old)] = fold(new)
        conversation = self.find(Kind.PRIVATE, old)
        if conversation is None or self.find(Kind.PRIVATE, new) is not None:
            return
        conversation.name = new
        self.notice(f"{old} is now known as {new}", conversation, kind=LineKind.NICK)
        conversation.changed()
        self._changed()

    def close(self, conversation: Conversation) -> None:
        """Remove a conversation from the list; the one after it (or before, at the end) is shown."""
        if conversation not in self.conversations:
            return
        index = self.conversations.index(conversation)
        self.conversations.remove(conversation)
        if self._current is conversation:
            self._current = None
            if self.conversations:
                self.switch(self.conversations[min(index, len(self.conversations) - 1)])
        self._changed()

    def switch(self, conversation: Conversation) -> None:
        """Show another conversation: the one left remembers what was read, the one shown is read."""
        previous = self._current
        if previous is conversation:
            return
        if previous is not None:
            previous.read_marker = previous.highest
            previous.history.index = None
        self._current = conversation
        conversation.unread = 0
        conversation.mentioned = False
        conversation.changed()
        self._changed()

    def activity(self) -> list[tuple[int, Conversation]]:
        """The conversations with unread messages, with their numbers, in number order (irssi's `[Act: 2,5]`)."""
        return [(number, c) for number, c in enumerate(self.conversations, 1) if c.unread and c is not self._current]

    def next_active(self) -> Conversation | None:
        """Where the next-activity key goes: the first conversation that mentions us or is private and unread,
        else the first with unread messages, else None (weechat's hotlist order: highlights before messages)."""
        active = [conversation for _, conversation in self.activity()]
        return next((c for c in active if c.mentioned), None) or next(iter(active), None)

    # --- messages ------------------------------------------------------------------------------------------------

    def conversation_for(self, message: Message) -> Conversation | None:
        """Where a message goes: its room if open (None if not), or the private conversation (opened on demand)."""
        if message.room is not None:
            return self.find(Kind.ROOM, message.room)
        return self.private_for(private_peer(message, self.is_own))

    def add_message(self, message: Message, *, live: bool = True) -> Added | None:
        """Show a message from the server (live, replayed or paged); None if its conversation is closed or it is
        already shown. An own message with the `cid` of a pending line acknowledges that line instead.

        `live` is False for history (join replays, pages): such messages do not count as unread and ring no bell.
        """
        if self.is_ignored(message.sender):
            return None
        conversation = self.conversation_for(message)
        if conversation is None:
            return None
        self._note_file(message)
        if message.room is not None and conversation.name != message.room:
            conversation.name = message.room  # the server's spelling
        elif message.room is None and not self.is_own(message.sender) and conversation.name != message.sender:
            conversation.name = message.sender
        own = self.is_own(message.sender)
        if message.id in conversation.ids:
            # Said again after a restart (same cid) but already shown: the pending copy goes.
            duplicate = conversation.pending(message.cid) if own and message.cid is not None else None
            if duplicate is not None:
                conversation.lines.remove(duplicate)
                conversation.changed()
                self._changed()
            return None
        if own and message.cid is not None:
            line = conversation.pending(message.cid)
            if line is not None:
                self._acknowledge(conversation, line, message)
                return Added(conversation, line, new=False, bell=False)
        line = self._line_of(message, own)
        self._note_id(conversation, message.id)
        self._insert(conversation, line, history=not live)
        if live and self.typists:  # what they were typing has come
            self.typists.pop((conversation.kind, fold(conversation.name), message.sender), None)
        bell = False
        if live and not own:
            shown = conversation is self._current
            if not shown:
                conversation.unread += 1
                conversation.mentioned = conversation.mentioned or line.mention or conversation.kind is Kind.PRIVATE
            elif conversation.scroll > 0:
                conversation.new_below += 1
            # A mention rings; a private message rings unless its conversation is the one being read.
            bell = line.mention or (conversation.kind is Kind.PRIVATE and not shown)
        self._trim(conversation)
        conversation.changed()
        self._changed()
        return Added(conversation, line, new=True, bell=bell)

    def add_history(self, conversation: Conversation, messages: Iterable[Message], *, older: bool) -> int:
        """Show a page of stored messages (not live); with `older`, a page asked with `before`, whose truncation
        the caller reports with `has_older`. Returns how many lines were added."""
        added = 0
        for message in sorted(messages, key=lambda m: m.id):
            if message.id in conversation.ids:
                continue
            if message.room is not None and conversation.kind is not Kind.ROOM:
                continue
            if self.is_ignored(message.sender):
                continue
            self._note_file(message)
            line = self._line_of(message, self.is_own(message.sender))
            self._note_id(conversation, message.id)
            self._insert(conversation, line, history=True)
            added += 1
        if added:
            if not older:
                self._trim(conversation)
            conversation.changed()
            self._changed()
        return added

    def add_quick(self, message: QuickMessage) -> Added | None:
        """Show a quick message from someone (live, never stored); None if it is for a room that is not open."""
        own = self.is_own(message.sender)
        if self.is_ignored(message.sender):
            return None
        if message.room is not None:
            conversation = self.find(Kind.ROOM, message.room)
            if conversation is None:
                return None
        else:
            conversation = self.private_for(message.to if own and message.to else message.sender)
        mention = not own and bool(find_highlights(message.text, self.highlight_words()))
        line = Line(
            LineKind.QUICK, message.text, message.ts / 1000, sender=message.sender, own=own, mention=mention,
            nudge=message.nudge,
        )  # fmt: skip
        conversation.lines.append(line)
        shown = conversation is self._current
        bell = False
        if not own:
            if not shown:
                conversation.unread += 1
                conversation.mentioned = True
            elif conversation.scroll > 0:
                conversation.new_below += 1
            bell = mention or message.nudge or (conversation.kind is Kind.PRIVATE and not shown)
        self._trim(conversation)
        conversation.changed()
        self._changed()
        return Added(conversation, line, new=True, bell=bell)

    def add_pending_quick(self, conversation: Conversation, text: str, cid: str, *, nudge: bool = False) -> Line:
        """An own quick message, shown at once as pending until the server acknowledges it."""
        line = Line(
            LineKind.QUICK, text, self.clock(), sender=self.nick, cid=cid, own=True, delivery=Delivery.PENDING,
            nudge=nudge,
        )  # fmt: skip
        conversation.lines.append(line)
        conversation.scroll = 0
        self._trim(conversation)
        conversation.changed()
        self._changed()
        return line

    def quick_acknowledged(self, conversation: Conversation, cid: str, via: str) -> None:
        """The server acknowledged an own quick message, over UDP or TCP."""
        line = conversation.pending(cid)
        if line is None:
            return
        line.delivery = Delivery.ACKED
        line.via = via
        line.changed()
        conversation.changed()
        self._changed()

    def add_pending(self, conversation: Conversation, text: str, cid: str) -> Line:
        """An own message, shown at once as pending until the server acknowledges its `cid`."""
        kind, shown = _kind_of(text)
        line = Line(kind, shown, self.clock(), sender=self.nick, cid=cid, own=True, delivery=Delivery.PENDING)
        conversation.lines.append(line)
        conversation.scroll = 0
        conversation.new_below = 0
        self._trim(conversation)
        conversation.changed()
        self._changed()
        return line

    def fail(self, conversation: Conversation, cid: str, reason: str) -> None:
        """The server refused an own message (or the client ended before it was acknowledged)."""
        line = conversation.pending(cid)
        if line is None or line.delivery is not Delivery.PENDING:
            return
        line.delivery = Delivery.FAILED
        line.reason = reason
        line.changed()
        conversation.changed()
        self._changed()

    def _acknowledge(self, conversation: Conversation, line: Line, message: Message) -> None:
        line.id = message.id
        line.ts = message.ts / 1000
        line.delivery = Delivery.ACKED
        line.sender = message.sender
        line.changed()
        self._note_id(conversation, message.id)
        # A message with a lower id may have arrived while this one was pending: keep id order.
        position = conversation.lines.index(line)
        later_lower = [
            index
            for index in range(position + 1, len(conversation.lines))
            if (other := conversation.lines[index].id) is not None and other < message.id
        ]
        if later_lower:
            del conversation.lines[position]
            conversation.lines.insert(later_lower[-1], line)
        conversation.changed()
        self._changed()

    def _line_of(self, message: Message, own: bool) -> Line:
        ts = message.ts / 1000
        if message.file is not None:  # a file's name is no mention, and never an action
            return Line(
                LineKind.FILE, message.file.name, ts, sender=message.sender, id=message.id, own=own, file=message.file
            )
        kind, shown = _kind_of(message.text)
        mention = not own and bool(find_highlights(message.text, self.highlight_words()))
        return Line(kind, shown, ts, sender=message.sender, id=message.id, cid=message.cid, own=own, mention=mention)

    def _note_id(self, conversation: Conversation, message_id: int) -> None:
        conversation.ids.add(message_id)
        if conversation.highest is None or message_id > conversation.highest:
            conversation.highest = message_id
        if conversation.oldest is None or message_id < conversation.oldest:
            conversation.oldest = message_id

    @staticmethod
    def _insert(conversation: Conversation, line: Line, *, history: bool = False) -> None:
        """Append a live line; put an older one, or one from history, after the last line with a lower id (so
        history goes above the notices that came with it)."""
        lines = conversation.lines
        assert line.id is not None
        position = len(lines)
        newest = next((other.id for other in reversed(lines) if other.id is not None), None)
        if history or (newest is not None and line.id < newest):
            position = 0
            for index in range(len(lines) - 1, -1, -1):
                other = lines[index].id
                if other is not None and other < line.id:
                    position = index + 1
                    break
        lines.insert(position, line)

    def _trim(self, conversation: Conversation) -> None:
        excess = len(conversation.lines) - self.max_lines
        if excess <= 0 or conversation.scroll > 0:
            return
        for line in conversation.lines[:excess]:
            if line.id is not None:
                conversation.ids.discard(line.id)
        del conversation.lines[:excess]
        first = next((line.id for line in conversation.lines if line.id is not None), None)
        conversation.oldest = first
        conversation.has_older = True

    def note_typing(self, sender: str, room: str | None, until: float) -> None:
        """`sender` is typing in `room` (None: to us privately), to be shown until `until` (clock time)."""
        if self.is_ignored(sender) or self.is_own(sender):
            return
        key = (Kind.ROOM, fold(room), sender) if room is not None else (Kind.PRIVATE, fold(sender), sender)
        self.typists[key] = until
        self._changed()

    def typing_in(self, conversation: Conversation) -> list[str]:
        """Who is typing in `conversation` now (their notices expire), sorted."""
        now = self.clock()
        self.typists = {key: until for key, until in self.typists.items() if until > now}
        kind, name = conversation.key
        return sorted(sender for (k, n, sender) in self.typists if k is kind and n == name)

    def find_lines(self, conversation: Conversation, text: str) -> list[Line]:
        """The messages (not notices) of `conversation` as loaded whose text holds `text`, ignoring case, oldest
        first: what /find lists."""
        wanted = text.casefold()
        searched = {LineKind.MESSAGE, LineKind.ACTION, LineKind.QUICK, LineKind.FILE}
        return [line for line in conversation.lines if line.kind in searched and wanted in line.text.casefold()]

    def clear(self, conversation: Conversation) -> None:
        """Empty the pane of a conversation (/clear); what it cleared is not shown again."""
        conversation.lines.clear()
        conversation.scroll = 0
        conversation.new_below = 0
        conversation.read_marker = conversation.highest
        conversation.changed()
        self._changed()

    # --- notices and presence ------------------------------------------------------------------------------------

    def notice(self, text: str, conversation: Conversation | None = None, *, kind: LineKind = LineKind.NOTICE) -> Line:
        """A line from the client itself, in `conversation` or the one shown."""
        target = conversation or self.current
        line = Line(kind, text, self.clock())
        target.lines.append(line)
        self._trim(target)
        target.changed()
        self._changed()
        return line

    def notice_everywhere(self, text: str, *, kind: LineKind = LineKind.NOTICE) -> None:
        """A notice in every open conversation (connection changes), or in the status one if none is open."""
        targets = [c for c in self.conversations if c.kind is not Kind.STATUS] or [self.status_conversation()]
        for conversation in targets:
            self.notice(text, conversation, kind=kind)

    def set_members(self, room: str, members: Iterable[tuple[str, str | None]]) -> None:
        """The members of a room, from `joined` (no away texts) or `members`."""
        conversation = self.find(Kind.ROOM, room)
        if conversation is None:
            return
        conversation.members = {fold(nick): Member(nick, away) for nick, away in members}
        conversation.changed()
        self._changed()

    def presence(
        self, room: str, nick: str, event: str, *, old: str | None = None, text: str | None = None, quiet: bool = False
    ) -> None:
        """Someone joined, parted, quit, changed nick or went away in a room (docs/protocol.md 3.6); `quiet`: a join
        that is only a rejoin after a lost connection (10.3) updates the members without a line."""
        conversation = self.find(Kind.ROOM, room)
        if conversation is None:
            return
        members = conversation.members
        if event == "join":
            members[fold(nick)] = Member(nick)
            if not quiet:
                self.notice(f"{nick} joined {conversation.name}", conversation, kind=LineKind.JOIN)
        elif event in ("part", "quit"):
            members.pop(fold(nick), None)
            verb = "left" if event == "part" else "quit"
            self.notice(f"{nick} {verb}", conversation, kind=LineKind.PART)
        elif event == "nick" and old is not None:
            conversation.members = _renamed(members, old, nick)
            if old != nick:
                self.notice(f"{old} is now known as {nick}", conversation, kind=LineKind.NICK)
                if not self.is_own(nick):
                    self.peer_renamed(old, nick)
        elif event == "away":
            member = members.get(fold(nick))
            if member is not None:
                member.away = text
            self.notice(f"{nick} is away: {text}" if text else f"{nick} is back", conversation, kind=LineKind.AWAY)
        conversation.changed()
        self._changed()

    def set_own_nick(self, nick: str) -> None:
        """The server accepted a new nick for us: rename us in every member list."""
        old = self.nick
        self.nick = nick
        self.own_nicks.add(fold(nick))
        for conversation in self.conversations:
            if conversation.kind is Kind.ROOM and fold(old) in conversation.members:
                conversation.members = _renamed(conversation.members, old, nick)
                conversation.changed()
        self._changed()

    def set_own_away(self, text: str | None) -> None:
        self.away = text
        for conversation in self.conversations:
            member = conversation.members.get(fold(self.nick))
            if member is not None:
                member.away = text
                conversation.changed()
        self._changed()

    def set_connection(
        self, state: LinkState, reason: str | None = None, *, retry_at: float | None = None, attempt: int = 0
    ) -> None:
        self.connection = ConnectionStatus(state, reason, retry_at, attempt)
        self._changed()

    def _changed(self) -> None:
        self.version += 1

    # --- files and transfers -------------------------------------------------------------------------------------

    def _note_file(self, message: Message) -> None:
        if message.file is None:
            return
        known = self.files.get(message.file.fid)
        if known is None or known.message_id < message.id:
            self.files[message.file.fid] = SeenFile(message.file, message.id, message.sender)
        if len(self.files) > MAX_FILES:
            oldest = min(self.files.values(), key=lambda seen: seen.message_id)
            del self.files[oldest.info.fid]

    def recent_files(self) -> list[FileInfo]:
        """The files seen in the conversations, the most recently announced first (for /get's completion)."""
        ordered = sorted(self.files.values(), key=lambda seen: seen.message_id, reverse=True)
        return [seen.info for seen in ordered]

    def files_matching(self, start: str) -> list[FileInfo]:
        """The seen files whose fid starts with `start` (ignoring case), most recent first: /get takes a unique
        start of a fid, as the file messages show only its first characters."""
        key = start.strip().lower()
        if not key:
            return []
        return [info for info in self.recent_files() if info.fid.lower().startswith(key)]

    def add_transfer(self, transfer: Transfer) -> None:
        self.transfers.append(transfer)
        self._changed()

    def remove_transfer(self, transfer: Transfer) -> None:
        if transfer in self.transfers:
            self.transfers.remove(transfer)
            self._changed()

    # --- what completion and the state file read -----------------------------------------------------------------

    def nicks(self) -> list[str]:
        """Nicks to complete: the current room's members first, then everyone else known, without ourselves."""
        seen: dict[str, str] = {}
        ordered = [self.current, *(c for c in self.conversations if c is not self.current)]
        for conversation in ordered:
            for key, member in conversation.members.items():
                seen.setdefault(key, member.nick)
            if conversation.kind is Kind.PRIVATE:
                seen.setdefault(fold(conversation.name), conversation.name)
        return [nick for key, nick in seen.items() if key not in self.own_nicks]

    def rooms(self) -> list[str]:
        """Room names to complete: the open ones first, then the others seen in /list."""
        names = {c.key[1]: c.name for c in self.conversations if c.kind is Kind.ROOM}
        for key, name in self.known_rooms.items():
            names.setdefault(key, name)
        return list(names.values())


def split_long(text: str, limit: int) -> list[str]:
    """`text` in pieces of at most `limit` characters (NFC, as the server counts them), cut after the last blank
    that fits (the blank dropped), or between grapheme clusters in a word longer than `limit` (IRC clients split a
    long line rather than refuse it)."""
    text = nfc(text)
    pieces: list[str] = []
    while len(text) > limit:
        head = text[: limit + 1]
        cut = max(head.rfind(" "), head.rfind("\n"), head.rfind("\t"))
        if cut > 0:
            pieces.append(text[:cut].rstrip())
            text = text[cut + 1 :].lstrip(" \t")
            continue
        used = 0
        for cluster in wcwidth.iter_graphemes(text):
            if used + len(cluster) > limit:
                break
            used += len(cluster)
        used = used or limit  # a single cluster longer than the limit: cut it anyway
        pieces.append(text[:used])
        text = text[used:]
    if text or not pieces:
        pieces.append(text)
    return [piece for piece in pieces if piece]


def _kind_of(text: str) -> tuple[LineKind, str]:
    if text.startswith(ACTION_PREFIX) and len(text) > len(ACTION_PREFIX):
        return LineKind.ACTION, text[len(ACTION_PREFIX) :]
    return LineKind.MESSAGE, text


def _renamed(members: dict[str, Member], old: str, new: str) -> dict[str, Member]:
    """The members with `old` renamed to `new` in its place (docs/protocol.md 3.7: a rename keeps the place)."""
    old_key, new_key = fold(old), fold(new)
    if old_key not in members:
        return {**members, new_key: Member(new)}
    result: dict[str, Member] = {}
    for key, member in members.items():
        if key == old_key:
            result[new_key] = Member(new, member.away)
        elif key != new_key:
            result[key] = member
    return result
