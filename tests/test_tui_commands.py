"""Slash commands (chat/tui/commands.py): parsing an input line and tab completion."""

from __future__ import annotations

from chat.tui.commands import COMMANDS, Command, CommandTable, Text, UnknownCommand, complete, parse

TABLE = CommandTable(COMMANDS)


class Names:
    def nicks(self) -> list[str]:
        return ["bob", "Bella", "carol"]

    def rooms(self) -> list[str]:
        return ["lobby", "dev", "Design"]


def test_text_is_text_and_a_double_slash_sends_a_slash() -> None:
    assert parse("hello", TABLE) == Text("hello")
    assert parse("//etc/passwd is a path", TABLE) == Text("/etc/passwd is a path")
    assert parse(" /join x", TABLE) == Text(" /join x")


def test_commands_keep_their_arguments_verbatim() -> None:
    assert parse("/join dev", TABLE) == Command("join", "dev")
    assert parse("/JOIN dev", TABLE) == Command("join", "dev")
    assert parse("/msg bob two  spaces\nand a line", TABLE) == Command("msg", "bob two  spaces\nand a line")
    assert parse("/quit", TABLE) == Command("quit", "")
    assert parse("/query bob", TABLE) == Command("msg", "bob")


def test_an_unknown_command_is_named() -> None:
    assert parse("/frobnicate now", TABLE) == UnknownCommand("frobnicate")


def test_split_takes_the_first_word() -> None:
    assert Command("msg", "bob hello there").split() == ("bob", "hello there")
    assert Command("msg", "  bob").split() == ("bob", "")
    assert Command("msg", "").split() == ("", "")


def test_commands_complete_after_a_slash() -> None:
    assert complete("/jo", Names(), TABLE) == ("/jo", ["/join "])
    _, candidates = complete("/", Names(), TABLE)
    assert "/quit " in candidates and "/help " in candidates


def test_arguments_complete_to_what_the_command_takes() -> None:
    assert complete("/join d", Names(), TABLE) == ("d", ["dev ", "Design "])
    assert complete("/msg b", Names(), TABLE) == ("b", ["bob ", "Bella "])
    assert complete("/help jo", Names(), TABLE) == ("jo", ["join "])


def test_a_nick_at_the_start_of_a_line_is_addressed() -> None:
    assert complete("ca", Names(), TABLE) == ("ca", ["carol: "])
    assert complete("ask ca", Names(), TABLE) == ("ca", ["carol "])
    assert complete("ask ", Names(), TABLE) == ("", [])


def test_every_command_of_the_issue_is_there() -> None:
    names = {spec.name for spec in COMMANDS}
    wanted = {"join", "part", "list", "msg", "me", "nick", "away", "who", "quick", "nudge", "history", "clear", "help"}
    assert names >= wanted | {"quit"}
    assert complete("/qu", Names(), TABLE) == ("/qu", ["/query ", "/quick ", "/quit "])
