"""The slash commands: their table (names, usage, help), parsing an input line, and tab completion.

An input line is a command when it starts with `/` (`//` sends a text that starts with `/`). What each command
does is the controller's business; this module only knows their shape, so parsing and completion are tested
without a server or a terminal (path completion reads the file system, nothing else).

The arguments of /send and /get are split like a shell's words, so a path may hold blanks: `/send My\\ File.pdf`
or `/send "My File.pdf" bob`; completing a path writes it with backslashes before blanks and quotes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from chat.protocol.messages import FileInfo
from chat.protocol.names import fold
from chat.tui.paths import complete_path
from chat.tui.render import human_size, short_fid, visible


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command: `completes` says what each positional argument completes to ("room", "nick", "command",
    "path", "fid"); `shell_words`: its arguments are split like a shell's words (quotes and backslashes)."""

    name: str
    usage: str
    help: str
    completes: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    shell_words: bool = False


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("join", "ROOM", "join a room (it is created if new) and show it; #ROOM too", ("room",)),
    CommandSpec(
        "part", "[ROOM]", "leave the room shown, or ROOM; closes a private conversation", ("room",), ("close",)
    ),
    CommandSpec("list", "", "the rooms on the server and how many are in each"),
    CommandSpec(
        "topic", "[ROOM]", "the topic of the room shown, or ROOM (read-only: rooms have no topics yet)", ("room",)
    ),
    CommandSpec("msg", "NICK [TEXT]", "open a private conversation with NICK and send TEXT", ("nick",), ("query",)),
    CommandSpec("me", "TEXT", "an action: shows as `* yournick TEXT`"),
    CommandSpec("nick", "NICK", "change your nick"),
    CommandSpec("away", "[TEXT]", "mark yourself away with TEXT; without TEXT, back"),
    CommandSpec("who", "[ROOM]", "the members of the room shown, or of ROOM, and who is away", ("room",), ("names",)),
    CommandSpec(
        "whois", "NICK", "what the server shares about NICK: rooms, away, idle time, connected since", ("nick",)
    ),
    CommandSpec("quick", "NICK TEXT", "a quick message over UDP (not stored), with its delivery shown", ("nick",)),
    CommandSpec("nudge", "NICK", "nudge NICK over UDP: their terminal rings", ("nick",)),
    CommandSpec(
        "send",
        "PATH [NICK]",
        "send a file to the conversation shown, or to NICK privately",
        ("path", "nick"),
        shell_words=True,
    ),
    CommandSpec(
        "get",
        "FID [DEST]",
        "download a file shown in chat (its id, or a unique start of it) to DEST or Downloads",
        ("fid", "path"),
        shell_words=True,
    ),
    CommandSpec(
        "ignore", "[NICK]", "hide NICK's messages (kept for the next run); without NICK, who is ignored", ("nick",)
    ),
    CommandSpec("unignore", "NICK", "show NICK's messages again", ("nick",)),
    CommandSpec("find", "TEXT", "the lines of this conversation (as loaded) that contain TEXT, ignoring case"),
    CommandSpec("history", "[N]", "load N older messages of this conversation (default 50)"),
    CommandSpec("clear", "", "clear the message pane of this conversation"),
    CommandSpec("reconnect", "", "connect again after the login was refused or the session taken over"),
    CommandSpec("help", "[COMMAND]", "the commands and keys, or one command", ("command",)),
    CommandSpec("quit", "[REASON]", "leave the server and exit (Ctrl-D on an empty line too)"),
)


class CommandTable:
    """The commands this client offers, by name and alias."""

    def __init__(self, specs: Iterable[CommandSpec]) -> None:
        self.specs = tuple(specs)
        self._by_name: dict[str, CommandSpec] = {}
        for spec in self.specs:
            for name in (spec.name, *spec.aliases):
                self._by_name[name] = spec

    def get(self, name: str) -> CommandSpec | None:
        return self._by_name.get(name.lower())

    def names(self) -> list[str]:
        """Every name and alias, sorted."""
        return sorted(self._by_name)


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed command: its canonical name and the rest of the line after it (newlines kept)."""

    name: str
    args: str

    def split(self) -> tuple[str, str]:
        """The first word of the arguments and the rest after it."""
        return split_word(self.args)

    def words(self) -> list[str]:
        """The arguments split like a shell's words (`shell_words` commands)."""
        return [word.value for word in shell_words(self.args)]


@dataclass(frozen=True, slots=True)
class Text:
    """A line to send as a message."""

    text: str


@dataclass(frozen=True, slots=True)
class UnknownCommand:
    name: str


_COMMAND = re.compile(r"/(\S*)(?:[ \t]|(?=\n)|$)(.*)", re.DOTALL)


def parse(line: str, table: CommandTable) -> Command | Text | UnknownCommand:
    """What an input line asks for: a command, a text to send, or a command nobody knows."""
    if line.startswith("//"):
        return Text(line[1:])
    match = _COMMAND.fullmatch(line)
    if not line.startswith("/") or match is None:
        return Text(line)
    spec = table.get(match[1])
    if spec is None:
        return UnknownCommand(match[1])
    return Command(spec.name, match[2])


def room_name(typed: str) -> str:
    """A room as typed, IRC's way too: `#ops` is the room `ops` (the `#` is not part of a room name here)."""
    return typed[1:] if typed.startswith("#") and len(typed) > 1 else typed


def split_word(text: str) -> tuple[str, str]:
    """`"bob hello there"` -> `("bob", "hello there")`; surrounding blanks of the first word are dropped."""
    parts = text.lstrip().split(maxsplit=1)
    if not parts:
        return "", ""
    rest = text.lstrip()[len(parts[0]) :]
    return parts[0], rest[1:] if rest[:1] in (" ", "\t") else rest.lstrip("\n")


@dataclass(frozen=True, slots=True)
class Word:
    """A shell-like word: as typed (`raw`, quotes and backslashes included) and what it means (`value`)."""

    raw: str
    value: str


_BLANKS = " \t\n"
_QUOTED = frozenset(" \t\n'\"\\")


def _scan(text: str) -> tuple[list[Word], bool]:
    """The words of `text` and whether it ends inside one (no blank after the last word)."""
    words: list[Word] = []
    raw: list[str] = []
    value: list[str] = []
    quote: str | None = None
    in_word = False
    index = 0
    while index < len(text):
        char = text[index]
        index += 1
        if quote is None and char in _BLANKS:
            if in_word:
                words.append(Word("".join(raw), "".join(value)))
                raw, value, in_word = [], [], False
            continue
        in_word = True
        raw.append(char)
        if char == "\\" and quote != "'" and index < len(text):
            raw.append(text[index])
            value.append(text[index])
            index += 1
        elif quote is None and char in "'\"":
            quote = char
        elif char == quote:
            quote = None
        else:
            value.append(char)
    if in_word:
        words.append(Word("".join(raw), "".join(value)))
    return words, in_word


def shell_words(text: str) -> list[Word]:
    """`text` split like a shell does: blanks separate words, `\\` takes the next character as it is, and '...' or
    "..." quote; an unclosed quote runs to the end (the user may still be typing)."""
    return _scan(text)[0]


def quote_word(value: str) -> str:
    """`value` written as one shell-like word: a backslash before every blank, quote and backslash."""
    return "".join("\\" + char if char in _QUOTED else char for char in value)


def usage(spec: CommandSpec) -> str:
    return f"/{spec.name} {spec.usage}".rstrip()


class CompletionSource(Protocol):
    """What names completion offers (the model)."""

    def nicks(self) -> list[str]: ...

    def rooms(self) -> list[str]: ...

    def recent_files(self) -> list[FileInfo]: ...


@dataclass(frozen=True, slots=True)
class Candidate:
    """One completion: the text that replaces the word, and what the menu shows (made visible, if not plain)."""

    text: str
    display: str = ""
    meta: str = ""


def candidates(before_cursor: str, source: CompletionSource, table: CommandTable) -> tuple[str, list[Candidate]]:
    """The word being completed (as typed) and its candidates, each with what follows it: a space, `: ` after a nick
    that starts the line, nothing after a folder (Tab again goes into it). Commands complete after `/`, their
    arguments by what they take (a room, a nick, a local path, the fid of a file seen), any other word to a nick."""
    word = re.split(r"\s", before_cursor)[-1]
    if before_cursor.startswith("/") and word == before_cursor:
        return word, [Candidate(f"/{name} ") for name in table.names() if name.startswith(word[1:].lower())]
    kind, value = "nick", word
    if before_cursor.startswith("/"):
        name, *arguments = re.split(r"[ \t]+", before_cursor)
        spec = table.get(name[1:])
        position = len(arguments) - 1
        if spec is not None and spec.shell_words:
            words, inside = _scan(before_cursor[len(name) :])
            word, value = (words[-1].raw, words[-1].value) if inside else ("", "")
            position = len(words) - 1 if inside else len(words)
        if spec is not None and 0 <= position < len(spec.completes):
            kind = spec.completes[position]
        elif spec is not None and spec.shell_words:
            return word, []
    if kind == "command":
        return word, [Candidate(f"{name} ") for name in table.names() if name.startswith(word.lower())]
    if kind == "room":
        return word, _matching(source.rooms(), word, " ")
    if kind == "path":
        return word, _paths(value)
    if kind == "fid":
        return word, _files(source.recent_files(), value)
    if not value:
        return word, []  # a Tab on a blank in the middle of a message completes nothing
    suffix = ": " if before_cursor == word else " "
    return word, _matching(source.nicks(), value, suffix)


def complete(before_cursor: str, source: CompletionSource, table: CommandTable) -> tuple[str, list[str]]:
    """The word being completed and the texts that may replace it (see `candidates`)."""
    word, found = candidates(before_cursor, source, table)
    return word, [candidate.text for candidate in found]


def _matching(names: Sequence[str], word: str, suffix: str) -> list[Candidate]:
    key = fold(word)
    return [Candidate(name + suffix, visible(name)) for name in names if fold(name).startswith(key)]


def _paths(typed: str) -> list[Candidate]:
    return [
        Candidate(
            quote_word(found.path) + ("" if found.folder else " "),
            visible(found.name),
            "" if found.size is None else human_size(found.size),
        )
        for found in complete_path(typed)
    ]


def _files(files: Sequence[FileInfo], typed: str) -> list[Candidate]:
    """Seen files whose fid, or whose name, starts with what was typed; the fid is what goes in."""
    fid_start, name_start = typed.lower(), fold(typed)
    return [
        Candidate(info.fid + " ", visible(info.name), f"{human_size(info.size)} · {visible(short_fid(info.fid))}")
        for info in files
        if info.fid.lower().startswith(fid_start) or fold(info.name).startswith(name_start)
    ]


class ChatCompleter(Completer):
    """Tab completion of commands, nicks, rooms, local paths and file ids in the input line (see `candidates`)."""

    def __init__(self, source: CompletionSource, table: CommandTable) -> None:
        self.source = source
        self.table = table

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        word, found = candidates(document.text_before_cursor, self.source, self.table)
        for candidate in found:
            display = candidate.display or visible(candidate.text.rstrip(": "))
            yield Completion(
                candidate.text, start_position=-len(word), display=display, display_meta=candidate.meta or None
            )
