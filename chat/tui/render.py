"""Safe, aligned text for the terminal: what a peer sent, made harmless, measured and wrapped in screen cells.

Safety: every string that came over the network (texts, nicks, room names, error messages) goes through
`safe_fragments` or `visible` before it reaches the screen. Control characters (C0, DEL, C1), bidi overrides and
isolates and other invisible format characters, and line or paragraph separators are shown as visible stand-ins
(`^[`, `^?`, `\\x9b`, `<U+202E>`), styled `class:control`. So nothing a peer sends can move the cursor, change the
title, reach the clipboard (OSC 52), ring the bell or reorder what is shown; the only bell is the client's own,
for a mention. The server already refuses control characters other than newline and tab in texts
(docs/protocol.md 8); this is the client's own line of defence, and it also covers names and error messages.

Lookalikes: a nick or room name with letters of a script the viewer does not usually read (`usual_scripts`: Latin,
the scripts of the own nick, and `[client] scripts`) is drawn with `FOREIGN_MARK` after it and `class:foreign-name`,
so a Cyrillic nick drawn like a Latin one cannot pass for it (docs/security.md, Names). The server already
refuses mixed scripts and lookalikes of names it knows (docs/protocol.md 8); this is the client's own line of defence
against names that are valid but new to the viewer.


Width: a column is a terminal cell, and text is measured and cut by extended grapheme clusters (UAX #29), with
wcwidth (`iter_graphemes`, `width`): a ZWJ family, a flag, a skin-toned thumb or `e` + U+0301 is one cluster of one
width, never cut in the middle, so the nick column, the text column and the sidebar line up whatever script or emoji
a text holds. prompt_toolkit would lay such a cluster out code point by code point (a family as four wide
characters), so every row goes to the screen through `screen_text` (see `ClusterText`). Every row `render_line`
makes fits its width exactly or less.

Invisible characters are shown one way: `<U+XXXX>`, styled `class:control`. That covers every format character
(zero width space, BOM, word joiner, soft hyphen, bidi controls, tags) and the default-ignorable letters that show
as nothing (Hangul fillers, Khmer inherent vowels, Mongolian selectors), except where they do a visible job: a zero
width joiner or non-joiner between two letters, marks or symbols outside ASCII (emoji ZWJ sequences, Indic and
Persian scripts), and tag characters after a black flag (subdivision flags). A joiner anywhere else (`a` U+200D `b`,
or alone) is shown like U+200B.
"""

from __future__ import annotations

import re
import time
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache

import wcwidth
from prompt_toolkit import utils as prompt_toolkit_utils
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.utils import get_cwidth

from chat.protocol.names import scripts_of
from chat.tui.model import Delivery, Line, LineKind, find_highlights

TIME_WIDTH = 5  # "12:34"
NICK_WIDTH = 10
SEPARATOR = " │ "
PREFIX_WIDTH = TIME_WIDTH + 1 + NICK_WIDTH + len(SEPARATOR)
MIN_TEXT_WIDTH = 8
NARROW_WIDTH = PREFIX_WIDTH + 20  # narrower panes drop the time and give the nick column a quarter of the row
MIN_NICK_WIDTH = 3  # "-->" fits
TAB = "    "
TRUNCATED = "+"  # marks a nick cut to fit its column (ASCII: an ellipsis is ambiguous-width in CJK terminals)
NICK_COLOURS = 12  # style classes nick.0 .. nick.11
FID_SHOWN = 8  # hex digits of a fid a file message shows: /get takes any unique start of a fid
FILE_ICON = "📎"
_UNITS = ("KiB", "MiB", "GiB", "TiB")
FOREIGN_MARK = "?"  # after a name with letters of a script the viewer does not usually read (ASCII: one cell)
FOREIGN_STYLE = "class:foreign-name"
DEFAULT_SCRIPTS = frozenset({"Latin"})

# Joiners that carry meaning between two letters, marks or symbols outside ASCII (emoji sequences, Indic and Persian
# scripts); anywhere else they are shown like any other invisible character.
_JOINERS = frozenset("\u200c\u200d")
_JOINABLE_CATEGORIES = frozenset("LMS")  # first letter of the Unicode category of a joiner's neighbours
_BLACK_FLAG = "\U0001f3f4"  # tag sequences after it are subdivision flags
_TAGS = range(0xE0020, 0xE0080)
_SHOWN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
# Default-ignorable code points that are not format characters yet draw nothing (Unicode DerivedCoreProperties):
# Hangul fillers (letters), Khmer inherent vowels, Mongolian free variation selectors and vowel separator.
_IGNORABLE = frozenset("\u115f\u1160\u3164\uffa0\u17b4\u17b5\u180b\u180c\u180d\u180e\u180f")
_NEEDS_CONTEXT = re.compile("[\u115f\u1160\u3164\uffa0\u17b4\u17b5\u180b-\u180f]")

Row = StyleAndTextTuples
LocalTime = Callable[[float], time.struct_time]


@lru_cache(maxsize=4096)
def _stand_in(char: str) -> str | None:
    """The visible stand-in for a character that must not reach the terminal as itself, or None."""
    code = ord(char)
    if code < 0x20:
        return "^" + chr(code + 0x40)  # ESC -> ^[, BEL -> ^G
    if code == 0x7F:
        return "^?"
    if 0x80 <= code < 0xA0:
        return f"\\x{code:02x}"  # C1: CSI (0x9b) and OSC (0x9d) on some terminals
    if unicodedata.category(char) in _SHOWN_CATEGORIES or char in _IGNORABLE:
        return f"<U+{code:04X}>"  # bidi overrides and isolates, zero width space, BOM, tags, separators, fillers
    return None


def _joinable(char: str) -> bool:
    return not char.isascii() and unicodedata.category(char)[0] in _JOINABLE_CATEGORIES


def _does_a_job(text: str, index: int) -> bool:
    """Whether the invisible character at `index` takes part in what is drawn (see the module doc)."""
    char = text[index]
    if char in _JOINERS:
        return 0 < index < len(text) - 1 and _joinable(text[index - 1]) and _joinable(text[index + 1])
    if ord(char) in _TAGS:
        before = text[:index].rstrip("".join(chr(code) for code in _TAGS))
        return before.endswith(_BLACK_FLAG)
    return False


def safe_fragments(text: str, style: str = "", *, newlines: bool = False) -> StyleAndTextTuples:
    """`text` as styled fragments with every dangerous character replaced by a visible stand-in.

    Tabs become spaces; newlines are kept when `newlines` (a message body, wrapped later), else shown as `^J`.
    """
    if text.isprintable() and not _NEEDS_CONTEXT.search(text):
        return [(style, text)] if text else []
    fragments: StyleAndTextTuples = []
    plain: list[str] = []
    control_style = f"{style} class:control" if style else "class:control"
    for index, char in enumerate(text):
        if char == "\t":
            plain.append(TAB)
            continue
        if char == "\n" and newlines:
            plain.append(char)
            continue
        stand_in = _stand_in(char)
        if stand_in is None or _does_a_job(text, index):
            plain.append(char)
            continue
        if plain:
            fragments.append((style, "".join(plain)))
            plain = []
        fragments.append((control_style, stand_in))
    if plain:
        fragments.append((style, "".join(plain)))
    return fragments


def visible(text: str, *, newlines: bool = False) -> str:
    """`text` with every dangerous character replaced by its visible stand-in, as a plain string."""
    return "".join(fragment[1] for fragment in safe_fragments(text, newlines=newlines))


def graphemes(text: str) -> Iterator[str]:
    """The extended grapheme clusters of `text` (UAX #29): what a terminal draws as one character."""
    if text.isascii():
        return iter(text)
    return wcwidth.iter_graphemes(text)


@lru_cache(maxsize=8192)
def cluster_width(cluster: str) -> int:
    """Cells one grapheme cluster takes: 2 for wide characters and emoji sequences, 0 for a lone mark."""
    if len(cluster) == 1:
        return max(0, get_cwidth(cluster))
    return max(0, wcwidth.width(cluster))


def cell_width(text: str) -> int:
    """Screen cells `text` takes (already made visible), cluster by cluster."""
    if text.isascii():
        return len(text)
    return sum(cluster_width(cluster) for cluster in graphemes(text))


def fit(text: str, width: int, *, right: bool = False) -> str:
    """`text` cut (marked with `+`) between grapheme clusters, or padded with spaces, to exactly `width` cells."""
    if width <= 0:
        return ""
    used = cell_width(text)
    if used > width:
        kept: list[str] = []
        used = 0
        for cluster in graphemes(text):
            cells = cluster_width(cluster)
            if used + cells > width - 1:
                break
            kept.append(cluster)
            used += cells
        text = "".join(kept) + TRUNCATED
        used += 1
    padding = " " * (width - used)
    return padding + text if right else text + padding


def wrap(fragments: StyleAndTextTuples, width: int) -> list[Row]:
    """Styled text in rows of at most `width` cells: broken after the last space that fits, or between grapheme
    clusters in a word longer than a row; `\\n` always breaks. A cluster is never cut, and a zero-width one (a
    mark at the start of a fragment) stays with the one before it."""
    width = max(1, width)
    rows: list[Row] = []
    cells: list[tuple[str, str, int]] = []  # (style, text, cells) of the row being filled
    used = 0
    last_space = -1  # index in `cells` of the last space: where the row may break

    def finish(row: list[tuple[str, str, int]]) -> None:
        while row and row[-1][1] == " ":
            row = row[:-1]
        rows.append(_merge(row))

    for fragment in fragments:
        style, text = fragment[0], fragment[1]
        for char in graphemes(text):
            if char == "\n":
                finish(cells)
                cells, used, last_space = [], 0, -1
                continue
            char_width = cluster_width(char)
            if char_width == 0 and cells:
                last_style, last_text, last_width = cells[-1]
                cells[-1] = (last_style, last_text + char, last_width)
                continue
            broke = False
            while used + char_width > width and cells:
                if last_space >= 0:
                    rest = cells[last_space + 1 :]
                    finish(cells[: last_space + 1])
                    cells = rest
                else:
                    finish(cells)
                    cells = []
                used = sum(cell[2] for cell in cells)
                last_space = -1
                broke = True
            if broke and char == " " and not cells:
                continue  # a space where the row breaks is dropped
            cells.append((style, char, char_width))
            used += char_width
            if char == " ":
                last_space = len(cells) - 1
    finish(cells)
    return rows


class ClusterText(str):
    """A string that yields grapheme clusters, not code points, when iterated.

    prompt_toolkit's `Window` copies a fragment to the screen `for c in text`, one cell per `c`, as wide as
    `get_cwidth(c)`; a ZWJ family would take four wide cells there while the terminal draws one, and every cell
    after it on the row would be drawn in the wrong place. Iterated by cluster, each cluster is one screen cell of
    its real width (`screen_text` tells prompt_toolkit's width cache that width, as it would otherwise add up the
    code points').
    """

    __slots__ = ()

    def __iter__(self) -> Iterator[str]:
        return graphemes(str(self))


def screen_text(text: str) -> str:
    """`text` as prompt_toolkit must get it to lay it out cluster by cluster: a `ClusterText` when it holds a
    cluster of more than one code point, else `text` itself."""
    if text.isascii():
        return text
    clustered = False
    for cluster in graphemes(text):
        if len(cluster) > 1:
            # prompt_toolkit.utils.get_cwidth sums the code points of a longer string; a cluster has one width.
            prompt_toolkit_utils._CHAR_SIZES_CACHE[cluster] = cluster_width(cluster)
            clustered = True
    return ClusterText(text) if clustered else text


def screen_row(row: StyleAndTextTuples) -> StyleAndTextTuples:
    """A row ready for prompt_toolkit's screen: each fragment's text through `screen_text`."""
    if all(fragment[1].isascii() for fragment in row):
        return row
    return [(fragment[0], screen_text(fragment[1]), *fragment[2:]) for fragment in row]


def _merge(cells: list[tuple[str, str, int]]) -> Row:
    row: Row = []
    for style, text, _ in cells:
        if row and row[-1][0] == style:
            row[-1] = (style, row[-1][1] + text)
        else:
            row.append((style, text))
    return row


def row_width(row: Row) -> int:
    return sum(cell_width(fragment[1]) for fragment in row)


def usual_scripts(own_nick: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The scripts a viewer reads without a second look: Latin, those of the own nick, and `extra`."""
    return DEFAULT_SCRIPTS | scripts_of(own_nick) | frozenset(extra)


def is_foreign(name: str, usual: frozenset[str]) -> bool:
    """Has `name` letters of a script outside `usual` (Common and Inherited characters never count)?"""
    return not scripts_of(name) <= usual


def marked_name(name: str, usual: frozenset[str], style: str, width: int | None = None) -> StyleAndTextTuples:
    """`name` made visible, fit to `width` cells when given, and marked when foreign: the mark is never cut off."""
    shown = visible(name)
    if not is_foreign(name, usual):
        return [(style, shown if width is None else fit(shown, width))]
    padding = ""
    if width is not None:
        room = width - len(FOREIGN_MARK)
        shown = fit(shown, room) if cell_width(shown) > room else shown
        padding = " " * (room - cell_width(shown))
    marked: StyleAndTextTuples = [(f"{style} {FOREIGN_STYLE}".strip(), shown), (FOREIGN_STYLE, FOREIGN_MARK)]
    return [*marked, (style, padding)] if padding else marked


def nick_class(nick: str) -> str:
    """A stable colour class for a nick: the same nick has the same colour in every run and on every machine."""
    return f"class:nick.{zlib.crc32(nick.casefold().encode()) % NICK_COLOURS}"


_NICK_COLUMN = {
    LineKind.ACTION: ("*", "class:action"),
    LineKind.NOTICE: ("--", "class:notice"),
    LineKind.ERROR: ("!!", "class:error"),
    LineKind.JOIN: ("-->", "class:join"),
    LineKind.PART: ("<--", "class:part"),
    LineKind.NICK: ("--", "class:presence"),
    LineKind.AWAY: ("--", "class:presence"),
}
_BODY_STYLE = {
    LineKind.NOTICE: "class:notice",
    LineKind.ERROR: "class:error",
    LineKind.JOIN: "class:presence",
    LineKind.PART: "class:presence",
    LineKind.NICK: "class:presence",
    LineKind.AWAY: "class:presence",
    LineKind.QUICK: "class:quick",
}


def prefix_widths(width: int) -> tuple[int, int]:
    """(time, nick) cells of the prefix at a pane `width`: the full prefix from `NARROW_WIDTH` on; below it no time
    and a nick column of a quarter of the row, so a narrow terminal still gives the text most of each row instead
    of a few cells."""
    if width >= NARROW_WIDTH:
        return TIME_WIDTH, NICK_WIDTH
    return 0, max(MIN_NICK_WIDTH, min(NICK_WIDTH, (width - len(SEPARATOR)) // 4))


def render_line(
    line: Line,
    width: int,
    nick: str,
    *,
    local: LocalTime = time.localtime,
    words: tuple[str, ...] = (),
    usual: frozenset[str] | None = None,
) -> list[Row]:
    """The rows of one line: time, nick column, separator, then the text wrapped under its own column.

    `nick` is the own nick, whose mentions are highlighted, and so are `words` (the configured highlight words); a
    sender with letters outside `usual` (default: `usual_scripts(nick)`) is marked. Every row is at most `width`
    cells (narrow panes get a shorter prefix, `prefix_widths`; below a dozen cells the rows are cut).
    """
    usual = usual_scripts(nick) if usual is None else usual
    time_width, nick_width = prefix_widths(width)
    time_style = "class:time class:pending" if line.delivery is Delivery.PENDING else "class:time"
    prefix: Row = []
    if time_width:
        prefix = [(time_style, time.strftime("%H:%M", local(line.ts))), ("", " ")]
    prefix += [*_nick_column(line, usual, nick_width), ("class:separator", SEPARATOR)]
    indent_width = (time_width + 1 if time_width else 0) + nick_width
    if width >= NARROW_WIDTH:
        text_width = max(MIN_TEXT_WIDTH, width - PREFIX_WIDTH)
    else:
        text_width = max(1, width - indent_width - len(SEPARATOR))
    rows = wrap(_body(line, (nick, *words), usual), text_width)
    indent: Row = [("", " " * indent_width), ("class:separator", SEPARATOR)]
    return [[*(prefix if index == 0 else indent), *row] for index, row in enumerate(rows)]


def _nick_column(line: Line, usual: frozenset[str], width: int = NICK_WIDTH) -> Row:
    if line.kind in (LineKind.MESSAGE, LineKind.QUICK, LineKind.FILE):
        if line.own:
            style = "class:own-nick"
        elif line.mention:
            style = f"{nick_class(line.sender)} class:mention-nick"
        else:
            style = nick_class(line.sender)
        sender = visible(line.sender)
        if line.kind is LineKind.QUICK:
            sender = "»" + sender
        if line.own or not is_foreign(line.sender, usual):
            return [(style, fit(sender, width, right=True))]
        shown = fit(sender, width - len(FOREIGN_MARK), right=True)
        return [(f"{style} {FOREIGN_STYLE}", shown), (FOREIGN_STYLE, FOREIGN_MARK)]
    marker, style = _NICK_COLUMN[line.kind]
    return [(style, fit(marker, width, right=True))]


def _body(line: Line, highlighted: tuple[str, ...], usual: frozenset[str]) -> StyleAndTextTuples:
    style = _BODY_STYLE.get(line.kind, "")
    if line.delivery is Delivery.PENDING or line.delivery is Delivery.FAILED:
        style = "class:pending"
    body: StyleAndTextTuples = []
    if line.kind is LineKind.ACTION:
        sender_usual = usual | scripts_of(line.sender) if line.own else usual
        body.extend(marked_name(line.sender, sender_usual, nick_class(line.sender)))
        body.append(("", " "))
    elif line.kind is LineKind.QUICK:
        body.append(("class:quick-tag", "[nudge]" if line.nudge else "[quick]"))
        body.append(("", " "))
    elif line.kind is LineKind.FILE and line.file is not None:
        return _file_body(line)
    text = safe_fragments(line.text, style, newlines=True)
    if line.mention:
        text = _highlight(text, highlighted)
    body.extend(text)
    if line.delivery is Delivery.PENDING:
        body.append(("class:pending", " (sending)"))
    elif line.delivery is Delivery.ACKED:
        body.append(("class:acked", f" ✓ {line.via.upper()}" if line.via else " ✓"))
    elif line.delivery is Delivery.FAILED:
        verb = "not delivered" if line.kind is LineKind.QUICK else "not sent"
        body.append(("class:failed", f" ✗ {verb}: {visible(line.reason or 'refused')}"))
    return body


def _file_body(line: Line) -> StyleAndTextTuples:
    """`📎 name (1.2 MiB) — /get 6c1f0d5e`: the name and the fid came from the network, so both are made safe."""
    assert line.file is not None
    return [
        ("class:file-icon", f"{FILE_ICON} "),
        *safe_fragments(line.file.name, "class:file-name"),
        ("class:file-size", f" ({human_size(line.file.size)})"),
        ("class:file-hint", " — /get "),
        *safe_fragments(short_fid(line.file.fid), "class:file-hint"),
    ]


def short_fid(fid: str) -> str:
    """The start of a fid that file messages show (the server's fids are 32 hex digits)."""
    return fid[:FID_SHOWN]


def human_size(size: float) -> str:
    """Bytes for people: `512 B`, `1.2 KiB`, `3.4 MiB`, `1.0 GiB` (powers of 1024, as the limits are)."""
    if size < 1024:
        return f"{max(0, int(size))} B"
    value = float(size)
    for unit in _UNITS:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def human_rate(rate: float) -> str:
    """Bytes per second for people: `850.0 KiB/s`, `12.3 MiB/s`."""
    if rate < 1024:
        return f"{rate / 1024:.1f} KiB/s"
    return f"{human_size(rate)}/s"


def human_duration(seconds: float) -> str:
    """`0:07`, `12:34`, `1:02:03`: minutes and seconds, hours when there are any."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _highlight(fragments: StyleAndTextTuples, words: tuple[str, ...]) -> StyleAndTextTuples:
    """Mark every mention of `words` (the own nick, highlight words) inside plain fragments with `class:mention`."""
    result: StyleAndTextTuples = []
    for fragment in fragments:
        style, text = fragment[0], fragment[1]
        if "class:control" in style:
            result.append((style, text))
            continue
        position = 0
        for start, end in find_highlights(text, words):
            if start > position:
                result.append((style, text[position:start]))
            result.append((f"{style} class:mention", text[start:end]))
            position = end
        if position < len(text):
            result.append((style, text[position:]))
    return result


def rule(label: str, width: int, style: str) -> Row:
    """A full-width row with `label` in the middle of a horizontal line: day separators and markers."""
    label = f" {label} "
    free = max(0, width - cell_width(label))
    left = min(4, free // 2) if free > 8 else free // 2
    return [(style, "─" * left + label + "─" * (free - left))]


def day_of(ts: float, local: LocalTime = time.localtime) -> tuple[int, int]:
    moment = local(ts)
    return (moment.tm_year, moment.tm_yday)


def day_label(ts: float, local: LocalTime = time.localtime) -> str:
    moment = local(ts)
    return f"{time.strftime('%A', moment)} {moment.tm_mday} {time.strftime('%B %Y', moment)}"
