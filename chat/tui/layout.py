"""The panes of the terminal client, each made by a small factory, and the one style dict they refer to.

    +--------------------------------------------+---------------+
    | message pane (MessagePane)                 | conversations |
    |   scrollback, day separators, unread line, |  1 lobby    3 |
    |   "new messages below" when scrolled up    |  2 @bob    !1 |
    |                                            |---------------|
    |                                            | members       |
    +--------------------------------------------+---------------+
    | transfers (while any run): send report.pdf  42% [====>   ] |
    | status bar: server | nick | room | connection | UDP        |
    | [lobby] input line                                         |
    +------------------------------------------------------------+

The message pane is a UIControl of its own rather than a scrolled Window: it wraps the lines itself (so wrapped rows
stay under the text column, wide characters included), keeps the view anchored to the bottom (`scroll` counts rows
up from it, so new lines or older history loaded above never move what is being read), and renders only the rows it
shows. Everything that came from the network goes through `chat.tui.render` first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from prompt_toolkit.buffer import Buffer
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import AnyFormattedText, StyleAndTextTuples
from prompt_toolkit.layout import (
    ConditionalContainer,
    Container,
    Dimension,
    Float,
    FloatContainer,
    FormattedTextControl,
    HSplit,
    Layout,
    VSplit,
    Window,
)
from prompt_toolkit.layout.controls import BufferControl, UIContent, UIControl
from prompt_toolkit.layout.menus import CompletionsMenu
from prompt_toolkit.mouse_events import MouseEvent, MouseEventType
from prompt_toolkit.styles import Style

from chat.protocol.names import fold, scripts_of
from chat.tui.model import ChatModel, Conversation, Kind, Line, LinkState
from chat.tui.render import (
    LocalTime,
    Row,
    cell_width,
    day_label,
    day_of,
    fit,
    human_duration,
    human_rate,
    human_size,
    marked_name,
    nick_class,
    render_line,
    rule,
    screen_row,
    usual_scripts,
    visible,
)
from chat.tui.transfers import Direction, Transfer, summary

SIDEBAR_WIDTH = 22
SIDEBAR_MIN_COLUMNS = 64  # narrower terminals get the message pane alone
MOUSE_WHEEL_ROWS = 3
ROW_CACHE_SIZE = 20_000
MAX_TRANSFER_ROWS = 3  # more transfers than this: the newest ones, then one summary row for the rest
BAR_WIDTH = 20
BAR_MIN_COLUMNS = 64  # narrower terminals get no progress bar, only the figures
ACTIVITY_NAME_WIDTH = 10  # cells of a conversation's name in the status bar's activity list

STYLE: dict[str, str] = {
    "time": "ansibrightblack",
    "separator": "ansibrightblack",
    "notice": "ansibrightblack",
    "error": "ansired",
    "presence": "ansibrightblack",
    "join": "ansigreen",
    "part": "ansibrightblack",
    "action": "ansimagenta bold",
    "own-nick": "bold",
    "pending": "ansibrightblack",
    "acked": "ansigreen",
    "failed": "ansired",
    "mention": "bold ansiyellow",
    "mention-nick": "reverse",
    "quick": "ansicyan",
    "quick-tag": "ansicyan bold",
    "control": "reverse",
    "foreign-name": "underline",
    "day": "ansicyan",
    "unread-marker": "ansired",
    "more-below": "reverse ansiyellow",
    "loading": "ansibrightblack",
    "sidebar": "",
    "sidebar.title": "bold",
    "sidebar.current": "reverse",
    "sidebar.unread": "bold",
    "sidebar.mention": "bold ansired",
    "sidebar.line": "ansibrightblack",
    "member.own": "bold",
    "member.away": "ansibrightblack",
    "status": "reverse",
    "status.connected": "reverse ansigreen",
    "status.trouble": "reverse ansiyellow",
    "status.down": "reverse ansired",
    "status.question": "reverse ansiyellow bold",
    "status.activity": "reverse",
    "typing": "ansibrightblack italic",
    "status.unread": "reverse bold",
    "status.mention": "reverse bold ansired",
    "prompt": "bold",
    "file-name": "bold",
    "file-size": "ansibrightblack",
    "file-hint": "ansicyan",
    "transfer": "",
    "transfer.label": "bold",
    "transfer.bar": "ansigreen",
    "transfer.stalled": "ansiyellow",
    **{f"nick.{index}": colour for index, colour in enumerate(
        (
            "ansired", "ansigreen", "ansiyellow", "ansiblue", "ansimagenta", "ansicyan",
            "ansibrightred", "ansibrightgreen", "ansibrightyellow", "ansibrightblue", "ansibrightmagenta",
            "ansibrightcyan",
        )
    )},
}  # fmt: skip


def create_style() -> Style:
    return Style.from_dict(STYLE)


class MessagePane(UIControl):
    """The lines of the conversation shown, bottom-anchored, with scrollback (see the module doc)."""

    def __init__(
        self, model: ChatModel, on_top: Callable[[Conversation], None], *, local: LocalTime = time.localtime
    ) -> None:
        self.model = model
        self.on_top = on_top
        self.local = local
        self.height = 1
        self.at_top = False  # the first line of the conversation is on screen
        self._cache: dict[tuple[int, int, int, tuple[str, ...], frozenset[str]], list[Row]] = {}

    def create_content(self, width: int, height: int) -> UIContent:
        self.height = height
        conversation = self.model.current
        rows, complete = self._rows_upwards(conversation, width, conversation.scroll + height)
        if complete:
            conversation.scroll = min(conversation.scroll, max(0, len(rows) - height))
        self.at_top = complete and conversation.scroll + height >= len(rows)
        if conversation.scroll == 0:
            conversation.new_below = 0
        shown = rows[conversation.scroll : conversation.scroll + height][::-1]
        if conversation.scroll > 0 and shown:
            waiting = conversation.new_below
            label = f"{waiting} new message{'s' if waiting != 1 else ''} below" if waiting else "more below"
            shown[-1] = rule(f"{label} · PageDown", width, "class:more-below")
        if conversation.loading_older:
            loading = rule("loading older messages", width, "class:loading")
            shown = [loading, *shown[1:]] if len(shown) >= height else [loading, *shown]
        screen: list[Row] = [[] for _ in range(height - len(shown))]
        screen.extend(shown)
        return UIContent(get_line=lambda index: screen_row(screen[index]), line_count=len(screen), show_cursor=False)

    def _rows_upwards(self, conversation: Conversation, width: int, needed: int) -> tuple[list[Row], bool]:
        """Rows from the bottom up until `needed` are there; True when every line of the conversation is in."""
        rows: list[Row] = []
        lines = conversation.lines
        first_unread = conversation.first_unread_index()
        for index in range(len(lines) - 1, -1, -1):
            line = lines[index]
            rows.extend(reversed(self._line_rows(line, width)))
            if index == first_unread:
                rows.append(rule("unread", width, "class:unread-marker"))
            if index == 0 or day_of(lines[index - 1].ts, self.local) != day_of(line.ts, self.local):
                rows.append(rule(day_label(line.ts, self.local), width, "class:day"))
            if len(rows) >= needed:
                return rows, index == 0
        return rows, True

    def _line_rows(self, line: Line, width: int) -> list[Row]:
        words = self.model.highlight_words() if line.mention else ()
        usual = usual_scripts(self.model.nick, self.model.scripts)
        key = (line.uid, line.version, width, words, usual)
        rows = self._cache.get(key)
        if rows is None:
            if len(self._cache) >= ROW_CACHE_SIZE:
                self._cache.clear()
            model = self.model
            rows = self._cache[key] = render_line(
                line, width, model.nick, local=self.local, words=model.highlights, usual=usual
            )
        return rows

    # --- scrolling -----------------------------------------------------------------------------------------------

    def scroll_up(self, rows: int) -> None:
        """Scroll towards older lines; at the top, ask for older history."""
        conversation = self.model.current
        if self.at_top:
            self.on_top(conversation)
        else:
            conversation.scroll += rows

    def scroll_down(self, rows: int) -> None:
        conversation = self.model.current
        conversation.scroll = max(0, conversation.scroll - rows)
        if conversation.scroll == 0:
            conversation.new_below = 0

    def page_up(self) -> None:
        self.scroll_up(max(1, self.height - 2))

    def page_down(self) -> None:
        self.scroll_down(max(1, self.height - 2))

    def mouse_handler(self, mouse_event: MouseEvent) -> None:
        if mouse_event.event_type is MouseEventType.SCROLL_UP:
            self.scroll_up(MOUSE_WHEEL_ROWS)
        elif mouse_event.event_type is MouseEventType.SCROLL_DOWN:
            self.scroll_down(MOUSE_WHEEL_ROWS)


class ClusterTextControl(FormattedTextControl):
    """A FormattedTextControl whose rows reach the screen cluster by cluster (`chat.tui.render.ClusterText`), so an
    emoji sequence in a room name or a status takes the cells the terminal gives it."""

    def create_content(self, width: int, height: int | None) -> UIContent:
        content = super().create_content(width, height)
        get_line = content.get_line
        return UIContent(
            get_line=lambda index: screen_row(get_line(index)),
            line_count=content.line_count,
            cursor_position=content.cursor_position,
            menu_position=content.menu_position,
            show_cursor=content.show_cursor,
        )


def create_message_window(pane: MessagePane) -> Window:
    return Window(pane, wrap_lines=False, always_hide_cursor=True)


# --- sidebar ---------------------------------------------------------------------------------------------------


def conversation_list(model: ChatModel, show: Callable[[Conversation], None]) -> StyleAndTextTuples:
    """The numbered conversations with unread counts and mention markers; a click shows one."""
    fragments: StyleAndTextTuples = []
    section: Kind | None = None
    inner = SIDEBAR_WIDTH - 1
    usual = usual_scripts(model.nick, model.scripts)
    for number, conversation in enumerate(model.conversations, 1):
        if conversation.kind is not section:
            section = conversation.kind
            title = "rooms" if section is Kind.ROOM else "private"
            fragments.append(("class:sidebar.title", fit(f" {title}", inner) + "\n"))
        current = conversation is model.current
        count = ""
        if conversation.unread:
            count = ("!" if conversation.mentioned else "") + str(min(conversation.unread, 999))
        style = "class:sidebar.current" if current else ""
        count_style = "class:sidebar.mention" if conversation.mentioned else "class:sidebar.unread"
        if current:
            count_style = style
        elif conversation.unread:
            style = "class:sidebar.unread"

        def clicked(event: MouseEvent, target: Conversation = conversation) -> None:
            if event.event_type is MouseEventType.MOUSE_UP:
                show(target)

        fragments.append((style, f"{number:>3} ", clicked))
        name = marked_name(conversation.name, usual, style, inner - 4 - len(count) - 1)
        fragments.extend((fragment[0], fragment[1], clicked) for fragment in name)
        fragments.append((count_style, f"{count} " if count else " ", clicked))
        fragments.append(("", "\n"))
    if fragments:
        fragments.pop()
    return fragments


def member_list(model: ChatModel) -> StyleAndTextTuples:
    """The members of the room shown, away ones dimmed, or who a private conversation is with."""
    conversation = model.current
    inner = SIDEBAR_WIDTH - 1
    if conversation.kind is Kind.PRIVATE:
        name = visible(conversation.name)
        return [("class:sidebar.title", fit(" private with", inner) + "\n"), ("", fit(f"  {name}", inner))]
    if conversation.kind is not Kind.ROOM:
        return []
    members = sorted(conversation.members.values(), key=lambda member: fold(member.nick))
    fragments: StyleAndTextTuples = [("class:sidebar.title", fit(f" members {len(members)}", inner))]
    usual = usual_scripts(model.nick, model.scripts)
    for member in members:
        own = model.is_own(member.nick)
        style = "class:member.own" if own else nick_class(member.nick)
        name = member.nick
        if member.away is not None:
            style, name = "class:member.away", f"{member.nick} (away)"
        fragments.append(("", "\n  "))
        fragments.extend(marked_name(name, usual | scripts_of(member.nick) if own else usual, style, inner - 2))
    return fragments


def create_sidebar(model: ChatModel, show: Callable[[Conversation], None]) -> HSplit:
    conversations = Window(
        ClusterTextControl(lambda: conversation_list(model, show)),
        dont_extend_height=True,
        height=Dimension(max=16),
    )
    members = Window(ClusterTextControl(lambda: member_list(model)))
    return HSplit(
        [conversations, Window(height=1, char="─", style="class:sidebar.line"), members],
        width=SIDEBAR_WIDTH - 1,
        style="class:sidebar",
    )


# --- status bar and input line ---------------------------------------------------------------------------------


def connection_text(model: ChatModel, now: float) -> tuple[str, str]:
    """The connection as words, and its style: connected, reconnecting in N s, ..."""
    status = model.connection
    state = status.state
    if state is LinkState.CONNECTED:
        return "connected", "class:status.connected"
    if state is LinkState.RECONNECTING and status.retry_at is not None:
        seconds = math.ceil(status.retry_at - now)
        return (f"reconnecting in {seconds} s" if seconds > 0 else "reconnecting"), "class:status.trouble"
    if state is LinkState.CONNECTING:
        return "connecting", "class:status.trouble"
    if state is LinkState.DISCONNECTED:
        return "disconnected", "class:status.trouble"
    if state is LinkState.REFUSED:
        return f"login refused: {visible(status.reason or '')}", "class:status.down"
    return f"closed: {visible(status.reason or '')}", "class:status.down"


def activity_fragments(model: ChatModel) -> StyleAndTextTuples:
    """`act 2:bob! 3:dev`: the conversations with unread messages by number, `!` (and red) where we are mentioned
    or written to privately; empty when there is nothing unread."""
    active = model.activity()
    if not active:
        return []
    fragments: StyleAndTextTuples = [("class:status.activity", "act")]
    for number, conversation in active:
        mark = "!" if conversation.mentioned else ""
        style = "class:status.mention" if conversation.mentioned else "class:status.unread"
        fragments.append(("", " "))
        fragments.append((style, f"{number}:{fit(visible(conversation.name), ACTIVITY_NAME_WIDTH).rstrip()}{mark}"))
    return fragments


def status_fragments(model: ChatModel, now: float, *, narrow: bool = False) -> StyleAndTextTuples:
    """Server, nick, conversation, activity, connection state and the UDP channel; or the question the input waits
    on. `narrow` (no sidebar): the activity comes first and the server is left out, so it is seen at 60 columns."""
    if model.confirm is not None:
        return [("class:status.question", f" {model.confirm} ")]
    conversation = model.current
    where = visible(conversation.name)
    if conversation.kind is Kind.ROOM:
        where += f" ({len(conversation.members)})"
    elif conversation.kind is Kind.PRIVATE:
        where = f"private: {where}"
    nick = visible(model.nick) + (" (away)" if model.away else "")
    text, style = connection_text(model, now)
    activity = activity_fragments(model)
    fragments: StyleAndTextTuples = []
    if narrow:
        if activity:
            fragments += [("", " "), *activity, ("", " │")]
        fragments += [("", f" {nick} │ {where} │ "), (style, text)]
    else:
        fragments += [("", f" {visible(model.server)} │ {nick} │ {where} │ ")]
        if activity:
            fragments += [*activity, ("", " │ ")]
        fragments.append((style, text))
    if model.udp_status is not None:
        fragments.append(("", f" │ {visible(model.udp_status)}"))
    fragments.append(("", " │ Ctrl-C: cancel transfer" if model.transfers else " │ /help"))
    return fragments


def typing_text(model: ChatModel) -> str:
    """`bob is typing…`, `bob and carol are typing…`, `4 people are typing…`; empty when nobody is."""
    typists = [visible(nick) for nick in model.typing_in(model.current)]
    if not typists:
        return ""
    if len(typists) == 1:
        return f"{typists[0]} is typing…"
    if len(typists) == 2:
        return f"{typists[0]} and {typists[1]} are typing…"
    return f"{len(typists)} people are typing…"


def create_typing_line(model: ChatModel) -> Container:
    """One row above the status bar while someone is typing in the conversation shown."""
    window = Window(
        ClusterTextControl(lambda: [("class:typing", f" {typing_text(model)}")]), height=1, style="class:typing"
    )
    return ConditionalContainer(window, filter=Condition(lambda: bool(typing_text(model))))


def create_status_bar(model: ChatModel, clock: Callable[[], float], columns: Callable[[], int]) -> Window:
    def text() -> StyleAndTextTuples:
        return status_fragments(model, clock(), narrow=columns() < SIDEBAR_MIN_COLUMNS)

    return Window(ClusterTextControl(text), height=1, style="class:status")


# --- transfers -------------------------------------------------------------------------------------------------


def transfer_rows(transfers: list[Transfer], now: float, width: int) -> list[Row]:
    """One row per transfer, newest last: `send name  42% [=====>    ] 1.2 MiB/s 0:07 left`; beyond
    MAX_TRANSFER_ROWS, the newest ones and a summary row of the others. `now` is the transfers' monotonic clock."""
    if len(transfers) <= MAX_TRANSFER_ROWS:
        return [transfer_row(transfer, now, width) for transfer in transfers]
    shown = transfers[-(MAX_TRANSFER_ROWS - 1) :]
    others = transfers[: -(MAX_TRANSFER_ROWS - 1)]
    done, total, rate = summary(others, now)
    figures = _figures(done / total if total else 0.0, rate, (total - done) / rate if rate else None, width)
    label = f" {len(others)} more "
    room = max(0, width - cell_width(label) - _row_width(figures))
    row: Row = [("class:transfer.label", label), ("", fit(f"of {human_size(total)}", room)), *figures]
    return [row, *(transfer_row(transfer, now, width) for transfer in shown)]


def transfer_row(transfer: Transfer, now: float, width: int) -> Row:
    if not transfer.samples:
        note: str | None = "starting"  # hashing the file, or waiting for the connection
    elif transfer.size_known and transfer.total and transfer.done >= transfer.total:
        note = "finishing"  # all bytes moved: the server checks an upload, or the end of a download comes
    else:
        note = None
    figures = _figures(transfer.fraction, transfer.rate(now), transfer.eta(now), width, note)
    label = " send " if transfer.direction is Direction.UP else " get  "
    room = max(0, width - cell_width(label) - _row_width(figures))
    name = visible(transfer.name)  # a download's name is the peer's
    if transfer.resumed_from and room > cell_width(name) + 10:
        name += f" (from {human_size(transfer.resumed_from)})"
    return [("class:transfer.label", label), ("", fit(name, room)), *figures]


def _figures(fraction: float | None, rate: float | None, eta: float | None, width: int, note: str | None = None) -> Row:
    """` 42% [=====>     ] 1.2 MiB/s 0:07 left `, the bar only when there is room for it; `note` in place of the
    rate and the time left when they mean nothing (before the first bytes, after the last)."""
    percent = "  ?%" if fraction is None else f"{int(fraction * 100):>3}%"
    row: Row = [("", f" {percent} ")]
    if width >= BAR_MIN_COLUMNS:
        filled = round((fraction or 0.0) * BAR_WIDTH)
        head = ">" if 0 < filled < BAR_WIDTH else ""
        bar = "=" * (filled - len(head)) + head
        row.append(("class:transfer.bar", f"[{bar:<{BAR_WIDTH}}] "))
    if note is not None:
        row.append(("", f"{note:>22} "))
        return row
    speed = "" if rate is None else human_rate(rate)
    if rate == 0:
        left, style = "stalled", "class:transfer.stalled"
    else:
        left, style = ("" if eta is None else f"{human_duration(eta)} left"), ""
    row.append(("", f"{speed:>11} "))
    row.append((style, f"{left:>10} "))
    return row


def _row_width(row: Row) -> int:
    return sum(cell_width(fragment[1]) for fragment in row)


def create_transfer_area(model: ChatModel, monotonic: Callable[[], float], columns: Callable[[], int]) -> Container:
    """The transfers' rows above the status bar, shown while any transfer runs."""

    def text() -> StyleAndTextTuples:
        fragments: StyleAndTextTuples = []
        for row in transfer_rows(model.transfers, monotonic(), columns()):
            if fragments:
                fragments.append(("", "\n"))
            fragments.extend(row)
        return fragments

    window = Window(
        ClusterTextControl(text),
        height=lambda: Dimension.exact(min(len(model.transfers), MAX_TRANSFER_ROWS)),
        style="class:transfer",
    )
    return ConditionalContainer(window, filter=Condition(lambda: bool(model.transfers)))


def create_input_window(buffer: Buffer, model: ChatModel) -> Window:
    """The input line, growing with a multi-line message, prompted with the conversation's name."""

    def prompt() -> str:
        return f"[{visible(model.current.name)}] "

    def prefix(line_number: int, wrap_count: int) -> AnyFormattedText:
        text = prompt()
        if line_number == 0 and wrap_count == 0:
            return [("class:prompt", text)]
        return [("", " " * cell_width(text))]

    return Window(
        BufferControl(buffer),
        height=Dimension(min=1, max=8),
        dont_extend_height=True,
        wrap_lines=True,
        get_line_prefix=prefix,
    )


def create_layout(
    model: ChatModel,
    pane: MessagePane,
    buffer: Buffer,
    show: Callable[[Conversation], None],
    clock: Callable[[], float],
    columns: Callable[[], int],
    *,
    monotonic: Callable[[], float] = time.monotonic,
) -> tuple[Layout, Window]:
    """The whole screen; returns the layout and the input window (focused)."""
    input_window = create_input_window(buffer, model)
    wide = Condition(lambda: columns() >= SIDEBAR_MIN_COLUMNS)
    body = VSplit(
        [
            create_message_window(pane),
            ConditionalContainer(
                VSplit([Window(width=1, char="│", style="class:sidebar.line"), create_sidebar(model, show)]),
                filter=wide,
            ),
        ]
    )
    root = FloatContainer(
        HSplit(
            [
                body,
                create_typing_line(model),
                create_transfer_area(model, monotonic, columns),
                create_status_bar(model, clock, columns),
                input_window,
            ]
        ),
        floats=[Float(xcursor=True, ycursor=True, content=CompletionsMenu(max_height=8, scroll_offset=1))],
    )
    return Layout(root, focused_element=input_window), input_window
