"""Slash commands (chat/tui/commands.py): parsing an input line and tab completion."""

from __future__ import annotations

from pathlib import Path

import pytest

from chat.protocol.messages import FileInfo
from chat.tui.commands import (
    COMMANDS,
    Command,
    CommandTable,
    Text,
    UnknownCommand,
    candidates,
    complete,
    parse,
    quote_word,
    shell_words,
)

TABLE = CommandTable(COMMANDS)
NEWER = FileInfo(fid="6c1f0d5e" + "0" * 24, name="Report.pdf", size=1258291, sha256="0" * 64)
OLDER = FileInfo(fid="6c2a0000" + "1" * 24, name="photo\u202e.jpg", size=2048, sha256="1" * 64)


class Names:
    def nicks(self) -> list[str]:
        return ["bob", "Bella", "carol"]

    def rooms(self) -> list[str]:
        return ["lobby", "dev", "Design"]

    def recent_files(self) -> list[FileInfo]:
        return [NEWER, OLDER]


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
    wanted |= {"send", "get", "whois", "topic", "ignore", "unignore", "find"}
    assert {"query", "close", "names"} <= set(TABLE.names()), "the weechat/irssi aliases"
    assert names >= wanted | {"quit"}
    assert complete("/qu", Names(), TABLE) == ("/qu", ["/query ", "/quick ", "/quit "])


def test_send_and_get_split_their_arguments_like_a_shell() -> None:
    assert parse("/send My\\ File.pdf bob", TABLE) == Command("send", "My\\ File.pdf bob")
    assert Command("send", "My\\ File.pdf bob").words() == ["My File.pdf", "bob"]
    assert Command("send", '"My File.pdf"').words() == ["My File.pdf"]
    assert Command("send", "'it''s' x").words() == ["its", "x"]
    assert Command("get", "  6c1f   ~/Downloads  ").words() == ["6c1f", "~/Downloads"]
    assert [w.raw for w in shell_words("'open quote")] == ["'open quote"], "still being typed"
    assert quote_word("a b'c\"d\\e") == "a\\ b\\'c\\\"d\\\\e"
    assert Command("send", quote_word("a b'c\"d\\e")).words() == ["a b'c\"d\\e"]


def test_send_completes_a_local_path_then_a_nick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "My Documents").mkdir()
    (tmp_path / "My Documents" / "tax return.pdf").write_bytes(b"x" * 2048)
    assert complete("/send ~/My", Names(), TABLE) == ("~/My", ["~/My\\ Documents/"])
    word, found = candidates("/send ~/My\\ Documents/t", Names(), TABLE)
    assert word == "~/My\\ Documents/t"
    assert [(c.text, c.display, c.meta) for c in found] == [
        ("~/My\\ Documents/tax\\ return.pdf ", "tax return.pdf", "2.0 KiB")
    ]
    assert complete("/send '~/My Doc", Names(), TABLE) == ("'~/My Doc", ["~/My\\ Documents/"])
    assert complete("/send ~/My\\ Documents/tax\\ return.pdf b", Names(), TABLE) == ("b", ["bob ", "Bella "])
    assert complete("/send a b c", Names(), TABLE) == ("c", []), "no third argument"


def test_get_completes_the_fids_of_files_seen_most_recent_first_by_fid_or_name() -> None:
    word, found = candidates("/get ", Names(), TABLE)
    assert word == ""
    assert [(c.text, c.display, c.meta) for c in found] == [
        (NEWER.fid + " ", "Report.pdf", "1.2 MiB · 6c1f0d5e"),
        (OLDER.fid + " ", "photo<U+202E>.jpg", "2.0 KiB · 6c2a0000"),
    ]
    assert complete("/get 6C2", Names(), TABLE) == ("6C2", [OLDER.fid + " "])
    assert complete("/get rep", Names(), TABLE) == ("rep", [NEWER.fid + " "])
    assert complete(f"/get {NEWER.fid} /t", Names(), TABLE)[0] == "/t", "then a destination path"
