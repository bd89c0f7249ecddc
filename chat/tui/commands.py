"""The slash commands: their table (names, usage, help), parsing an input line, and tab completion.

An input line is a command when it starts with `/` (`//` sends a text that starts with `/`). What each command
does is the controller's business; this module only knows their shape, so parsing and completion are tested
without a server or a terminal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from chat.protocol.names import fold
from chat.tui.render import visible


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command: `completes` says what each positional argument completes to ("room", "nick", "command")."""

    name: str
    usage: str
    help: str
    completes: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("join", "ROOM", "join a room (it is created if new) and show it", ("room",)),
    CommandSpec("part", "[ROOM]", "leave the room shown, or ROOM; closes a private conversation", ("room",)),
    CommandSpec("list", "", "the rooms on the server and how many are in each"),
    CommandSpec("msg", "NICK [TEXT]", "open a private conversation with NICK and send TEXT", ("nick",), ("query",)),
    CommandSpec("me", "TEXT", "an action: shows as `* yournick TEXT`"),
    CommandSpec("nick", "NICK", "change your nick"),
    CommandSpec("away", "[TEXT]", "mark yourself away with TEXT; without TEXT, back"),
    CommandSpec("who", "[ROOM]", "the members of the room shown, or of ROOM, and who is away", ("room",), ("names",)),
    CommandSpec("quick", "NICK TEXT", "a quick message over UDP (not stored), with its delivery shown", ("nick",)),
    CommandSpec("nudge", "NICK", "nudge NICK over UDP: their terminal rings", ("nick",)),
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


def split_word(text: str) -> tuple[str, str]:
    """`"bob hello there"` -> `("bob", "hello there")`; surrounding blanks of the first word are dropped."""
    parts = text.lstrip().split(maxsplit=1)
    if not parts:
        return "", ""
    rest = text.lstrip()[len(parts[0]) :]
    return parts[0], rest[1:] if rest[:1] in (" ", "\t") else rest.lstrip("\n")


def usage(spec: CommandSpec) -> str:
    return f"/{spec.name} {spec.usage}".rstrip()


class CompletionSource(Protocol):
    """What names completion offers (the model)."""

    def nicks(self) -> list[str]: ...

    def rooms(self) -> list[str]: ...


def complete(before_cursor: str, source: CompletionSource, table: CommandTable) -> tuple[str, list[str]]:
    """The word being completed and its candidates (each with what follows it: a space, or `: ` after a nick that
    starts the line). Commands complete after `/`, their arguments by what they take, any other word to a nick."""
    word = re.split(r"\s", before_cursor)[-1]
    if before_cursor.startswith("/") and word == before_cursor:
        return word, [f"/{name} " for name in table.names() if name.startswith(word[1:].lower())]
    kind = "nick"
    if before_cursor.startswith("/"):
        name, *arguments = re.split(r"[ \t]+", before_cursor)
        spec = table.get(name[1:])
        position = len(arguments) - 1
        if spec is not None and 0 <= position < len(spec.completes):
            kind = spec.completes[position]
    if kind == "command":
        return word, [f"{name} " for name in table.names() if name.startswith(word.lower())]
    if kind == "room":
        return word, _matching(source.rooms(), word, " ")
    if not word:
        return word, []  # a Tab on a blank in the middle of a message completes nothing
    suffix = ": " if before_cursor == word else " "
    return word, _matching(source.nicks(), word, suffix)


def _matching(names: Sequence[str], word: str, suffix: str) -> list[str]:
    key = fold(word)
    return [name + suffix for name in names if fold(name).startswith(key)]


class ChatCompleter(Completer):
    """Tab completion of commands, nicks and rooms in the input line (see `complete`)."""

    def __init__(self, source: CompletionSource, table: CommandTable) -> None:
        self.source = source
        self.table = table

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        word, candidates = complete(document.text_before_cursor, self.source, self.table)
        for candidate in candidates:
            yield Completion(candidate, start_position=-len(word), display=visible(candidate.rstrip(": ")))
