"""End to end in a real pseudo-terminal: `chat-server` and `chat-client` as processes, the client driven by pexpect.

prompt_toolkit redraws only the cells that changed, so a text is not always written in one piece; the test asks for
a full redraw (Ctrl-L, the client's redraw key) before looking for a text, and lets style escapes sit between its
characters. The texts looked for have no spaces, which a redraw may skip over instead of writing.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pexpect
import pytest
import wcwidth

from chat.client import Client, Message, connect

pytestmark = pytest.mark.asyncio

WAIT = 15.0
REDRAW = "\x0c"  # Ctrl-L
LEAVE_ALTERNATE_SCREEN = b"\x1b[?1049l"


def on_screen(text: str) -> re.Pattern[bytes]:
    """`text` as the terminal receives it: any escape sequences (styles, cursor moves) between its characters."""
    gap = rb"(?:\x1b\[[0-9;?]*[A-Za-z])*"
    return re.compile(gap.join(re.escape(char.encode()) for char in text))


def wait_for_text(child: pexpect.spawn, text: str, timeout: float = WAIT) -> None:
    """Until `text` is drawn: ask for a full redraw, look for it, again, until `timeout`."""
    pattern = on_screen(text)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child.send(REDRAW)
        try:
            child.expect(pattern, timeout=0.5)
            return
        except pexpect.TIMEOUT:
            continue
    raise AssertionError(f"{text!r} never appeared on the screen; last output: {child.before[-2000:]!r}")


def wait_for_screen(child: pexpect.spawn, pattern: re.Pattern[bytes], what: str, timeout: float = WAIT) -> None:
    """Until `pattern` (built from `on_screen` pieces) is drawn, redrawing as `wait_for_text` does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child.send(REDRAW)
        try:
            child.expect(pattern, timeout=0.5)
            return
        except pexpect.TIMEOUT:
            continue
    raise AssertionError(f"{what} never appeared on the screen; last output: {child.before[-2000:]!r}")


def terminal_environment(tmp_path: Path) -> tuple[dict[str, str], Path, Path]:
    """An environment with its own HOME and XDG state folder (no CHAT_ or XDG_ setting of the caller), and a cwd."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(exist_ok=True)
    cwd.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CHAT_", "XDG_"))}
    env.update(HOME=str(home), XDG_STATE_HOME=str(home / "state"), TERM="xterm-256color", LANG="C.UTF-8")
    return env, home, cwd


def spawn_client(port: int, nick: str, tmp_path: Path, *, rows: int = 30, columns: int = 100) -> pexpect.spawn:
    """`chat-client` as `nick` in a real pseudo-terminal of `rows` x `columns`."""
    env, _, cwd = terminal_environment(tmp_path)
    executable = str(Path(sys.executable).parent / "chat-client")
    arguments = ["--host", "127.0.0.1", "--port", str(port), "--nick", nick]
    return pexpect.spawn(executable, arguments, env=env, cwd=str(cwd), dimensions=(rows, columns), timeout=WAIT)


async def quit_client(child: pexpect.spawn) -> None:
    child.send("/quit\r")
    await asyncio.to_thread(child.expect, pexpect.EOF, WAIT)
    child.close()
    assert child.exitstatus == 0


async def next_message(client: Client, text: str) -> Message:
    async with asyncio.timeout(WAIT):
        while True:
            event = await client.recv()
            if isinstance(event, Message) and event.text == text:
                return event


async def test_chat_client_in_a_real_terminal(chat_server_process: Any, tmp_path: Path) -> None:
    server_process = await chat_server_process()
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CHAT_", "XDG_"))}
    env.update(HOME=str(home), XDG_STATE_HOME=str(home / "state"), TERM="xterm-256color", LANG="C.UTF-8")
    executable = str(Path(sys.executable).parent / "chat-client")
    arguments = ["--host", "127.0.0.1", "--port", str(server_process.port), "--nick", "alice"]
    child = pexpect.spawn(executable, arguments, env=env, cwd=str(cwd), dimensions=(30, 100), timeout=WAIT)
    try:
        await asyncio.to_thread(wait_for_text, child, "connected")
        async with connect("127.0.0.1", server_process.port, nick="bob") as bob:
            await bob.join("lobby")
            await asyncio.to_thread(wait_for_text, child, "bob")  # bob's arrival, in the pane and the member list

            child.send("hello-from-alice\r")
            received = await next_message(bob, "hello-from-alice")
            assert (received.sender, received.room) == ("alice", "lobby")

            await bob.say("ZQXJ-7305-WKVB", room="lobby")
            await asyncio.to_thread(wait_for_text, child, "ZQXJ-7305-WKVB")

        child.send("/quit\r")
        await asyncio.to_thread(child.expect, pexpect.EOF, WAIT)
        assert LEAVE_ALTERNATE_SCREEN in child.before, "the terminal is given back"
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert list(cwd.iterdir()) == [], "nothing is written to the working folder"
    assert (home / "state" / "chat" / "client.log").is_file()


async def test_a_private_message_sent_while_away_is_shown_under_an_unread_line_after_a_restart(
    chat_server_process: Any, tmp_path: Path
) -> None:
    server_process = await chat_server_process()
    port = server_process.port
    child = spawn_client(port, "erin", tmp_path)
    try:
        await asyncio.to_thread(wait_for_text, child, "connected")
        await quit_client(child)
        async with connect("127.0.0.1", port, nick="alice") as alice:
            await alice.say("hello-erin-7305", to="erin")  # acknowledged: stored for erin
        child = spawn_client(port, "erin", tmp_path)
        await asyncio.to_thread(wait_for_text, child, "connected")
        child.send("\x1b2")  # Alt-2: the second conversation, after lobby
        unread_then_message = re.compile(
            on_screen("unread").pattern + rb".*?" + on_screen("hello-erin-7305").pattern, re.S
        )
        await asyncio.to_thread(wait_for_screen, child, unread_then_message, "the unread line above the message")
        await quit_client(child)
    finally:
        child.close(force=True)
    sessions = list((tmp_path / "home" / "state" / "chat" / "sessions").glob("*erin.json"))
    assert len(sessions) == 1
    state = json.loads(sessions[0].read_text())
    assert state["private_peers"] == ["alice"]


CSI = re.compile(rb"\x1b\[([0-9;?]*)([A-Za-z])")


def drawn_width(written: bytes) -> int:
    """The cells a terminal that draws grapheme clusters (a ZWJ family as one wide character) advances over
    `written`: the text, plus the cells a cursor-forward sequence skips; style escapes take none."""
    cells = 0
    position = 0
    for match in CSI.finditer(written):
        cells += wcwidth.width(written[position : match.start()].decode())
        if match.group(2) == b"C":
            cells += int(match.group(1) or b"1")
        position = match.end()
    return cells + wcwidth.width(written[position:].decode())


async def test_emoji_sequences_and_combining_marks_keep_the_sidebar_border_in_its_column(
    chat_server_process: Any, tmp_path: Path
) -> None:
    server_process = await chat_server_process()
    child = spawn_client(server_process.port, "alice", tmp_path)
    try:
        await asyncio.to_thread(wait_for_text, child, "connected")
        async with connect("127.0.0.1", server_process.port, nick="bob") as bob:
            await bob.join("lobby")
            family, thumb, flag, acute = "👨\u200d👩\u200d👧\u200d👦", "👍🏽", "🇩🇪", "x\u0301"
            await bob.say("PLAIN-ROW-abcdefghij", room="lobby")
            await bob.say(f"EMOJI-ROW-{family}{thumb}{flag}{acute}{family}", room="lobby")
            await asyncio.to_thread(wait_for_text, child, "EMOJI-ROW-")
            border = "│".encode()
            # from each marker to the sidebar's border, in one full redraw: the same number of cells
            rows = re.compile(
                rb"PLAIN-ROW-(?P<plain>(?:(?!" + border + rb").)*)" + border + rb".*?"
                rb"EMOJI-ROW-(?P<emoji>(?:(?!" + border + rb").)*)" + border,
                re.S,
            )
            await asyncio.to_thread(wait_for_screen, child, rows, "both rows up to the border")
            match = child.match
            plain, emoji = drawn_width(match.group("plain")), drawn_width(match.group("emoji"))
            assert emoji == plain, f"the border moved by {plain - emoji} cells: {match.group('emoji')!r}"
        await quit_client(child)
    finally:
        child.close(force=True)


async def test_a_narrow_terminal_shows_activity_in_the_status_bar_and_keeps_words_whole(
    chat_server_process: Any, tmp_path: Path
) -> None:
    server_process = await chat_server_process()
    child = spawn_client(server_process.port, "alice", tmp_path, rows=15, columns=60)
    try:
        await asyncio.to_thread(wait_for_text, child, "connected")
        async with connect("127.0.0.1", server_process.port, nick="bob") as bob:
            await bob.join("lobby")
            await bob.say("psst", to="alice")  # no sidebar at 60 columns: the status bar says so
            await asyncio.to_thread(wait_for_text, child, "2:bob!")
            child.send("\x1b2")  # Alt-2: read it; then a mention in lobby, now in the background
            await bob.say("alice: look here", room="lobby")
            await asyncio.to_thread(wait_for_text, child, "1:lobby!")
            child.send("\x1b1")
            child.setwinsize(15, 26)  # below 40 columns: a short prefix, the text keeps most of each row
            await bob.say("ABCDEFGHIJKLMNOP", room="lobby")
            await asyncio.to_thread(wait_for_text, child, "ABCDEFGHIJKLMNOP")
        await quit_client(child)
    finally:
        child.close(force=True)
