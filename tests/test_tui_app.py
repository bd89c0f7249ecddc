"""The real terminal Application, headless (pipe input, dummy output), against a real server on 127.0.0.1.

Keys go in through `create_pipe_input` exactly as a terminal sends them; what the app shows is read from its model
and from the rows its message pane renders. Every wait is for a condition, woken by each redraw of the app (the
app redraws after every change), with a timeout; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.input.base import PipeInput
from prompt_toolkit.output import DummyOutput
from rawwire import RawConnection

from chat.client import Client, Message, connect
from chat.client.events import Typing
from chat.config import config_with
from chat.protocol.messages import QuickMessage
from chat.server.app import ChatServer
from chat.tui.app import ChatApp
from chat.tui.controller import Settings
from chat.tui.layout import member_list, typing_text
from chat.tui.model import Conversation, Delivery, Kind, LineKind, LinkState
from chat.tui.render import FOREIGN_MARK, FOREIGN_STYLE, cell_width
from chat.tui.state import StateStore

pytestmark = pytest.mark.asyncio

WAIT = 10.0
ENTER, TAB, CTRL_D, CTRL_J, CTRL_N, CTRL_P = "\r", "\t", "\x04", "\n", "\x0e", "\x10"
UP, DOWN, PAGE_UP, PAGE_DOWN = "\x1b[A", "\x1b[B", "\x1b[5~", "\x1b[6~"

ServerFactory = Callable[..., Awaitable[ChatServer]]


class RecordingOutput(DummyOutput):
    """A dummy terminal that counts its bells."""

    def __init__(self) -> None:
        self.bells = 0

    def bell(self) -> None:
        self.bells += 1


class Tui:
    """One running app: type into it, wait for what it shows, read its message pane."""

    def __init__(self, app: ChatApp, pipe: PipeInput, output: RecordingOutput) -> None:
        self.app = app
        self.pipe = pipe
        self.output = output
        self.model = app.model
        self._redrawn = asyncio.Event()
        app.application.after_render += lambda _: self._redrawn.set()
        self.task: asyncio.Task[int] = asyncio.create_task(app.run())

    def type(self, keys: str) -> None:
        self.pipe.send_text(keys)

    async def wait_for(self, condition: Callable[[], Any], what: str, timeout: float = WAIT) -> None:
        """Until `condition()` is true, re-checked after every redraw."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            if self.task.done():
                raise AssertionError(f"the app ended while waiting for {what}: {self.task.result()!r}")
            self._redrawn.clear()
            try:
                await asyncio.wait_for(self._redrawn.wait(), deadline - loop.time())
            except TimeoutError:
                raise AssertionError(f"timed out waiting for {what}") from None

    def conversation(self, name: str, kind: Kind = Kind.ROOM) -> Conversation:
        conversation = self.model.find(kind, name)
        assert conversation is not None, f"no conversation {name}"
        return conversation

    def texts(self, name: str = "lobby", kind: Kind = Kind.ROOM) -> list[str]:
        conversation = self.model.find(kind, name)
        return [] if conversation is None else [line.text for line in conversation.lines]

    def screen(self) -> list[str]:
        """The rows of the message pane as last drawn (the real size of the pane in the dummy 80x40 terminal)."""
        pane = self.app.pane
        content = pane.create_content(self.pane_width, pane.height)
        return ["".join(fragment[1] for fragment in content.get_line(i)) for i in range(content.line_count)]

    @property
    def pane_width(self) -> int:
        """The width the message pane was last drawn with."""
        for window in self.app.application.layout.find_all_windows():
            if window.content is self.app.pane and window.render_info is not None:
                return window.render_info.window_width
        raise AssertionError("the message pane was not drawn yet")

    async def quit(self) -> int:
        if not self.task.done():
            self.app.controller.request_quit()
        return await asyncio.wait_for(self.task, WAIT)


TuiFactory = Callable[..., Awaitable[Tui]]


@pytest_asyncio.fixture
async def start_tui(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Tui]]]:
    """Start apps with `await start_tui(server, "alice")`; each quits at the end of the test, newest first."""
    started: list[Tui] = []
    with contextlib.ExitStack() as stack:

        async def start(
            server: ChatServer,
            nick: str = "alice",
            *,
            state: Path | None = None,
            wait_joined: bool = True,
            highlight: tuple[str, ...] = (),
            logs: bool = False,
            monotonic: Callable[[], float] | None = None,
        ) -> Tui:
            settings = Settings(
                host="127.0.0.1",
                port=server.port,
                nick=nick,
                backoff_initial=0.05,
                backoff_max=0.2,
                highlight=highlight,
                logs=logs,
            )
            store = StateStore(state or tmp_path / f"state-{nick}")
            pipe = stack.enter_context(create_pipe_input())
            output = RecordingOutput()
            clocks = {} if monotonic is None else {"monotonic": monotonic}
            tui = Tui(ChatApp(settings, store, input=pipe, output=output, **clocks), pipe, output)
            started.append(tui)
            if not wait_joined:
                return tui
            await tui.wait_for(
                lambda: tui.model.current.name == "lobby" and tui.model.current.joined and tui.model.current.members,
                "the app to join lobby",
            )
            return tui

        yield start
        for tui in reversed(started):
            with contextlib.suppress(Exception):
                await tui.quit()


@pytest_asyncio.fixture
async def bob(server: ChatServer) -> AsyncIterator[Client]:
    """Another user, on the client library, in lobby."""
    async with connect("127.0.0.1", server.port, nick="bob") as client:
        await client.join("lobby")
        yield client


async def next_message(client: Client, text: str | None = None) -> Message:
    """The next message event of a library client (with `text`, if given)."""
    async with asyncio.timeout(WAIT):
        while True:
            event = await client.recv()
            if isinstance(event, Message) and (text is None or event.text == text):
                return event


async def test_typed_text_is_sent_shown_at_once_and_marked_when_acknowledged(
    server: ChatServer, start_tui: TuiFactory, bob: Client
) -> None:
    alice = await start_tui(server)
    alice.type("hello, room" + ENTER)
    received = await next_message(bob, "hello, room")
    assert (received.sender, received.room) == ("alice", "lobby")
    lobby = alice.conversation("lobby")
    await alice.wait_for(lambda: lobby.lines[-1].delivery is Delivery.ACKED, "the acknowledgement")
    assert lobby.lines[-1].id == received.id
    assert [line.text for line in lobby.lines].count("hello, room") == 1
    assert any(row.endswith("hello, room ✓") for row in alice.screen())
    assert alice.app.buffer.text == ""


async def test_a_message_from_another_client_appears_with_wide_characters_aligned(
    server: ChatServer, start_tui: TuiFactory, bob: Client
) -> None:
    alice = await start_tui(server)
    text = "你好，世界！🌏 这是一条很长的中文消息，用来检查换行以后每一行的文字仍然对齐在同一列。"  # noqa: RUF001
    await bob.say(text, room="lobby")
    await alice.wait_for(lambda: text in alice.texts(), "bob's message")
    rows = [row for row in alice.screen() if "│" in row]
    message_rows = rows[rows.index(next(r for r in rows if "bob │ 你好" in r)) :]
    assert len(message_rows) >= 2, "the message wraps"
    columns = {cell_width(row[: row.index("│")]) for row in message_rows}
    assert len(columns) == 1, f"text column moves: {message_rows}"
    assert all(cell_width(row) <= alice.pane_width for row in message_rows)


async def test_a_peers_bidi_override_is_shown_as_text(server: ChatServer, start_tui: TuiFactory, bob: Client) -> None:
    alice = await start_tui(server)
    await bob.say("invoice_\u202egnp.exe", room="lobby")
    await alice.wait_for(lambda: any("<U+202E>" in row for row in alice.screen()), "the override made visible")
    assert not any("\u202e" in row for row in alice.screen())


async def test_a_mention_is_highlighted_and_rings_the_bell_once(
    server: ChatServer, start_tui: TuiFactory, bob: Client
) -> None:
    alice = await start_tui(server)
    await bob.say("alice: are you there?", room="lobby")
    await bob.say("ALICE!! (and again)", room="lobby")
    await bob.say("no mention of anyone", room="lobby")
    await alice.wait_for(lambda: "no mention of anyone" in alice.texts(), "bob's messages")
    lobby = alice.conversation("lobby")
    assert [line.mention for line in lobby.lines if line.sender == "bob"] == [True, True, False]
    assert alice.output.bells == 1, "two mentions in a row ring one bell"


async def test_commands_join_list_who_away_me_nick_and_part(
    server: ChatServer, start_tui: TuiFactory, bob: Client
) -> None:
    alice = await start_tui(server)
    alice.type("/join dev" + ENTER)
    await alice.wait_for(lambda: alice.model.current.name == "dev" and alice.model.current.joined, "joining dev")
    alice.type("/list" + ENTER)
    await alice.wait_for(lambda: any("lobby  2 members" in t for t in alice.texts("dev")), "the room list")
    assert any("dev    1 member" in t for t in alice.texts("dev"))
    alice.type("/away lunch" + ENTER)
    await alice.wait_for(lambda: "you are away: lunch" in alice.texts("dev"), "away")
    members = await bob.who("lobby")
    assert [(m.nick, m.away) for m in members.members] == [("bob", None), ("alice", "lunch")]
    await bob.join("dev")
    alice.type("/me waves" + ENTER)
    await next_message(bob, "/me waves")
    await alice.wait_for(lambda: any("* │ alice waves" in row for row in alice.screen()), "the action")
    alice.type("/nick alicia" + ENTER)
    await alice.wait_for(lambda: alice.model.nick == "alicia", "the new nick")
    alice.type("/who lobby" + ENTER)
    await alice.wait_for(lambda: any("bob, alicia (away: lunch)" in t for t in alice.texts("dev")), "who")
    alice.type("/part" + ENTER)
    await alice.wait_for(lambda: alice.model.find(Kind.ROOM, "dev") is None, "parting dev")
    assert alice.model.current.name == "lobby"
    alice.type("/frobnicate" + ENTER)
    await alice.wait_for(lambda: any("unknown command /frobnicate" in t for t in alice.texts()), "the error")
    alice.type("/help" + ENTER)
    await alice.wait_for(lambda: any(t.strip().startswith("/join ROOM") for t in alice.texts()), "the help")
    alice.type("/clear" + ENTER)
    await alice.wait_for(lambda: alice.texts() == [], "a clear pane")


async def test_msg_opens_a_private_conversation_and_replies_land_in_it(
    server: ChatServer, start_tui: TuiFactory, bob: Client
) -> None:
    alice = await start_tui(server)
    alice.type("/msg bob psst" + ENTER)
    received = await next_message(bob, "psst")
    assert received.to == "bob"
    await bob.say("what?", to="alice")
    await alice.wait_for(lambda: alice.texts("bob", Kind.PRIVATE) == ["psst", "what?"], "the reply")
    assert alice.model.current.kind is Kind.PRIVATE
    assert alice.output.bells == 0, "a private message in the conversation shown rings no bell"
    alice.type(CTRL_P)
    await alice.wait_for(lambda: alice.model.current.name == "lobby", "lobby shown")
    await bob.say("still there?", to="alice")
    await alice.wait_for(lambda: alice.conversation("bob", Kind.PRIVATE).unread == 1, "the unread private message")
    assert alice.output.bells == 1


async def test_tab_completes_commands_nicks_and_rooms(server: ChatServer, start_tui: TuiFactory, bob: Client) -> None:
    alice = await start_tui(server)
    buffer = alice.app.buffer
    alice.type("/jo" + TAB)
    await alice.wait_for(lambda: buffer.text == "/join ", "the command completed")
    alice.type("lo" + TAB)
    await alice.wait_for(lambda: buffer.text == "/join lobby ", "the room completed")
    alice.type("\x15")  # Ctrl-U: clear the line (Emacs)
    await alice.wait_for(lambda: buffer.text == "", "the line cleared")
    alice.type("bo" + TAB)
    await alice.wait_for(lambda: buffer.text == "bob: ", "the nick completed")


async def test_rooms_switch_with_ctrl_n_ctrl_p_and_alt_number_keeping_drafts_and_counting_unread(
    server: ChatServer, start_tui: TuiFactory, bob: Client
) -> None:
    alice = await start_tui(server)
    alice.type("/join dev" + ENTER)
    await alice.wait_for(lambda: alice.model.current.name == "dev" and alice.model.current.joined, "dev")
    alice.type("half typed")
    alice.type(CTRL_P)
    await alice.wait_for(lambda: alice.model.current.name == "lobby", "Ctrl-P")
    assert alice.app.buffer.text == ""
    await bob.join("dev")
    await bob.say("news in dev", room="dev")
    dev = alice.conversation("dev")
    await alice.wait_for(lambda: dev.unread == 1, "the unread count")
    alice.type("\x1b2")  # Alt-2
    await alice.wait_for(lambda: alice.model.current is dev, "Alt-2")
    assert dev.unread == 0 and alice.app.buffer.text == "half typed"
    alice.type(CTRL_N)
    await alice.wait_for(lambda: alice.model.current.name == "lobby", "Ctrl-N wraps around")


def sgr_mouse(button: int, column: int, row: int, *, release: bool = False) -> str:
    """An xterm SGR mouse report (1-based cell): button 0 is a left press, 64 and 65 the wheel up and down."""
    return f"\x1b[<{button};{column};{row}{'m' if release else 'M'}"


async def test_the_mouse_wheel_scrolls_and_a_click_on_the_list_switches(
    server: ChatServer, start_tui: TuiFactory, bob: Client
) -> None:
    for n in range(60):
        await bob.say(f"line {n}", room="lobby")
    alice = await start_tui(server)
    lobby = alice.conversation("lobby")
    await alice.wait_for(lambda: "line 59" in alice.texts() and not alice.app.pane.at_top, "the replay drawn")
    alice.type(sgr_mouse(64, 5, 5))
    await alice.wait_for(lambda: lobby.scroll == 3, "three rows up")
    alice.type(sgr_mouse(65, 5, 5))
    await alice.wait_for(lambda: lobby.scroll == 0, "back down")
    alice.type("/join dev" + ENTER)
    await alice.wait_for(lambda: alice.model.current.name == "dev" and alice.model.current.joined, "dev")
    sidebar = alice.pane_width + 2  # the 1-based column just right of the separator
    alice.type(sgr_mouse(0, sidebar + 2, 2) + sgr_mouse(0, sidebar + 2, 2, release=True))  # row 2: "1 lobby"
    await alice.wait_for(lambda: alice.model.current is lobby, "lobby clicked")


async def test_input_history_is_per_room(server: ChatServer, start_tui: TuiFactory) -> None:
    alice = await start_tui(server)
    alice.type("first" + ENTER + "second" + ENTER)
    await alice.wait_for(lambda: alice.texts()[-2:] == ["first", "second"], "two messages")
    alice.type(UP + UP)
    await alice.wait_for(lambda: alice.app.buffer.text == "first", "Up twice")
    alice.type(DOWN + DOWN)
    await alice.wait_for(lambda: alice.app.buffer.text == "", "back to the empty draft")
    alice.type("/join dev" + ENTER)
    await alice.wait_for(lambda: alice.model.current.name == "dev" and alice.model.current.joined, "dev")
    alice.type("in dev" + ENTER + UP + UP)
    await alice.wait_for(lambda: alice.app.buffer.text == "in dev", "dev's own history")
    assert alice.conversation("dev").history.entries == ["in dev"]
    assert alice.conversation("lobby").history.entries == ["first", "second", "/join dev"]


async def test_multi_line_messages_and_a_long_paste_asks_first(
    server: ChatServer, start_tui: TuiFactory, bob: Client
) -> None:
    alice = await start_tui(server)
    alice.type("line one" + CTRL_J + "line two" + "\x1b\r" + "line three" + ENTER)
    assert (await next_message(bob)).text == "line one\nline two\nline three"
    pasted = "\n".join(f"pasted {n}" for n in range(8))
    alice.type(f"\x1b[200~{pasted}\x1b[201~")
    await alice.wait_for(lambda: alice.app.buffer.text == pasted, "the paste in the input line")
    alice.type(ENTER)
    await alice.wait_for(lambda: alice.model.confirm is not None, "the question")
    assert alice.app.buffer.text == pasted, "nothing sent yet"
    alice.type(ENTER)
    assert (await next_message(bob)).text == pasted
    await alice.wait_for(lambda: alice.model.confirm is None and alice.app.buffer.text == "", "sent")


async def test_older_history_loads_on_scrolling_to_the_top_and_new_messages_below_are_announced(
    server: ChatServer, start_tui: TuiFactory, bob: Client
) -> None:
    for n in range(80):
        await bob.say(f"old {n}", room="lobby")
    alice = await start_tui(server)
    lobby = alice.conversation("lobby")
    await alice.wait_for(lambda: "old 79" in alice.texts() and not alice.app.pane.at_top, "the replay drawn")
    assert "old 0" not in alice.texts() and lobby.has_older
    for _ in range(20):
        if "old 0" in alice.texts():
            break
        alice.type(PAGE_UP)
        await alice.wait_for(lambda: lobby.scroll > 0 or lobby.loading_older or "old 0" in alice.texts(), "scroll")
    await alice.wait_for(lambda: "old 0" in alice.texts(), "the oldest message loaded")
    assert [t for t in alice.texts() if t.startswith("old ")] == [f"old {n}" for n in range(80)]
    assert lobby.scroll > 0
    await bob.say("while you read old things", room="lobby")
    await alice.wait_for(lambda: lobby.new_below == 1, "the count below")
    assert "1 new message below" in alice.screen()[-1]
    for _ in range(40):
        alice.type(PAGE_DOWN)
    await alice.wait_for(lambda: lobby.scroll == 0 and "while you read old things" in alice.screen()[-1], "bottom")


async def test_history_loads_older_messages_on_request(server: ChatServer, start_tui: TuiFactory, bob: Client) -> None:
    for n in range(60):
        await bob.say(f"old {n}", room="lobby")
    alice = await start_tui(server)
    await alice.wait_for(lambda: "old 59" in alice.texts(), "the replay")
    assert "old 9" not in alice.texts()
    alice.type("/history 5" + ENTER)
    await alice.wait_for(lambda: "old 5" in alice.texts(), "five older messages")
    assert "old 4" not in alice.texts()


async def test_it_starts_without_a_server_and_connects_when_one_comes_up(
    make_server: ServerFactory, start_tui: TuiFactory
) -> None:
    server = await make_server()
    server.config = config_with(server.config, server={"port": server.port, "udp_port": server.udp_port})
    await server.close()
    alice = await start_tui(server, wait_joined=False)
    await alice.wait_for(lambda: alice.model.connection.state is LinkState.RECONNECTING, "retrying")
    assert any("cannot reach" in line.text for line in alice.model.current.lines)
    await server.start()
    await alice.wait_for(lambda: alice.model.current.name == "lobby" and alice.model.current.joined, "lobby")


async def test_the_app_rides_out_a_server_restart_and_sends_what_was_typed_meanwhile(
    make_server: ServerFactory, start_tui: TuiFactory
) -> None:
    server = await make_server()
    alice = await start_tui(server)
    # Stop the server, keeping its ports, as `ChatServer.restart` does, to type while it is down.
    server.config = config_with(server.config, server={"port": server.port, "udp_port": server.udp_port})
    await server.close()
    await alice.wait_for(lambda: alice.model.connection.state is LinkState.RECONNECTING, "reconnecting")
    alice.type("typed while the server was down" + ENTER)
    lobby = alice.conversation("lobby")
    await alice.wait_for(lambda: lobby.lines[-1].text == "typed while the server was down", "the pending line")
    typed = lobby.lines[-1]
    assert typed.delivery is Delivery.PENDING
    assert any("connection lost" in t for t in alice.texts())
    await server.start()
    await alice.wait_for(lambda: typed.delivery is Delivery.ACKED, "the acknowledgement after the restart")
    assert alice.model.connection.state is LinkState.CONNECTED
    async with connect("127.0.0.1", server.port, nick="bob") as bob:
        joined = await bob.join("lobby")
        assert [m.text for m in joined.messages].count("typed while the server was down") == 1
        await bob.say("welcome back", room="lobby")
        await alice.wait_for(lambda: "welcome back" in alice.texts(), "a message after the restart")


async def test_quit_exits_zero_and_a_restart_shows_what_came_meanwhile_once(
    server: ChatServer, start_tui: TuiFactory, bob: Client, tmp_path: Path
) -> None:
    state = tmp_path / "alice-state"
    alice = await start_tui(server, state=state)
    await bob.say("before", to="alice")
    await bob.say("room before", room="lobby")
    await alice.wait_for(lambda: "room before" in alice.texts() and alice.texts("bob", Kind.PRIVATE), "messages")
    alice.type("/quit" + ENTER)
    assert await asyncio.wait_for(alice.task, 1.0) == 0
    await bob.say("while you were away", to="alice")
    await bob.say("room while away", room="lobby")
    again = await start_tui(server, state=state)
    await again.wait_for(lambda: "while you were away" in again.texts("bob", Kind.PRIVATE), "the missed message")
    await again.wait_for(lambda: "room while away" in again.texts(), "the missed room message")
    # the conversation's older messages are fetched after the login's page: wait for them, then check each once
    await again.wait_for(lambda: "before" in again.texts("bob", Kind.PRIVATE), "the older private message")
    assert again.texts("bob", Kind.PRIVATE) == ["before", "while you were away"]
    assert [t for t in again.texts() if "before" in t or "away" in t] == ["room before", "room while away"]
    lobby = again.conversation("lobby")
    unread = lobby.first_unread_index()
    assert unread is not None and lobby.lines[unread].text == "room while away"


async def test_ctrl_d_on_an_empty_line_quits(server: ChatServer, start_tui: TuiFactory) -> None:
    alice = await start_tui(server)
    alice.type("x" + CTRL_D)  # deletes (nothing under the cursor): the line is not empty, so no quit
    await alice.wait_for(lambda: alice.app.buffer.text == "x", "x typed")
    assert not alice.task.done()
    alice.type("\x08" + CTRL_D)  # Backspace, then Ctrl-D on the empty line
    assert await asyncio.wait_for(alice.task, 1.0) == 0


async def test_a_refused_nick_can_be_replaced_without_restarting(server: ChatServer, start_tui: TuiFactory) -> None:
    async with connect("127.0.0.1", server.port, nick="alice") as holder:
        alice = await start_tui(server, wait_joined=False)
        await alice.wait_for(lambda: alice.model.connection.state is LinkState.REFUSED, "the refusal")
        assert "nick_taken" in (alice.model.connection.reason or "")
        alice.type("/nick alice2" + ENTER)
        await alice.wait_for(lambda: alice.model.current.name == "lobby" and alice.model.current.joined, "lobby")
        assert alice.model.nick == "alice2"
        assert [m.nick for m in (await holder.who("lobby")).members] == ["alice2"]


async def next_quick(client: Client) -> QuickMessage:
    async with asyncio.timeout(WAIT):
        while True:
            event = await client.recv()
            if isinstance(event, QuickMessage):
                return event


async def test_quick_messages_and_nudges_show_how_they_were_delivered(
    server: ChatServer, start_tui: TuiFactory, bob: Client
) -> None:
    alice = await start_tui(server)
    await alice.wait_for(lambda: (alice.model.udp_status or "").endswith(" ms"), "the UDP round trip")
    await bob.wait_udp(timeout=WAIT)
    alice.type("/quick bob at your desk?" + ENTER)
    quick = await next_quick(bob)
    assert (quick.sender, quick.to, quick.text, quick.nudge) == ("alice", "bob", "at your desk?", False)
    private = alice.conversation("bob", Kind.PRIVATE)
    assert alice.model.current is private
    sent = private.lines[-1]
    await alice.wait_for(lambda: sent.delivery is Delivery.ACKED, "the UDP acknowledgement")
    assert (sent.kind, sent.via) == (LineKind.QUICK, "udp")
    assert any(row.endswith("[quick] at your desk? ✓ UDP") for row in alice.screen())

    alice.type(CTRL_P)
    await alice.wait_for(lambda: alice.model.current.name == "lobby", "lobby shown")
    await bob.quick("nudge", to="alice", nudge=True)
    await alice.wait_for(lambda: private.unread == 1, "bob's nudge")
    assert private.lines[-1].nudge and alice.output.bells == 1

    alice.type("/nudge nobody" + ENTER)
    await alice.wait_for(lambda: any("nudge to nobody not sent" in row for row in alice.screen()), "the refusal")
    assert alice.model.current.name == "lobby" and alice.model.find(Kind.PRIVATE, "nobody") is None
    # the words are the library's (chat/client/client.py) when the refusal came over UDP; the code is said once
    [refused_nudge] = [t for t in alice.texts() if t.startswith("nudge to nobody not sent: ")]
    assert refused_nudge.count("no_such_nick") == 1 and "nobody" in refused_nudge.split("no_such_nick: ")[1]

    bob_is_gone = alice.conversation("bob", Kind.PRIVATE)
    await bob.quit()
    alice.type("/quick bob still there?" + ENTER)
    await alice.wait_for(lambda: bob_is_gone.lines[-1].text == "still there?", "the quick message")
    refused = bob_is_gone.lines[-1]
    await alice.wait_for(lambda: refused.delivery is Delivery.FAILED, "the refusal of an offline nick")
    assert refused.reason is not None and refused.reason.startswith("nick_offline")
    assert refused.reason.count("nick_offline") == 1, refused.reason
    assert any("[quick] still there? ✗ not delivered:" in row for row in alice.screen())


async def test_a_private_message_from_someone_new_while_away_opens_a_conversation_marked_unread(
    server: ChatServer, start_tui: TuiFactory, bob: Client, tmp_path: Path
) -> None:
    state = tmp_path / "erin-state"
    erin = await start_tui(server, "erin", state=state)
    assert await erin.quit() == 0
    sent = await bob.say("hello", to="erin")  # nobody ever wrote to erin: no private conversation was open
    again = await start_tui(server, "erin", state=state)
    await again.wait_for(lambda: "hello" in again.texts("bob", Kind.PRIVATE), "the message sent while away")
    private = again.conversation("bob", Kind.PRIVATE)
    unread = private.first_unread_index()
    assert unread is not None and private.lines[unread].text == "hello", "the unread marker is above it"
    assert private.unread == 1
    assert await again.quit() == 0
    saved = StateStore(state).load("127.0.0.1", server.port, "erin")
    assert saved.private == sent.id and saved.private_peers == ["bob"]


async def test_irc_room_names_with_a_hash_are_taken_as_the_room(
    server: ChatServer, start_tui: TuiFactory, bob: Client
) -> None:
    alice = await start_tui(server)
    alice.type("/join #ops" + ENTER)
    await alice.wait_for(lambda: alice.model.current.name == "ops" and alice.model.current.joined, "joining ops")
    assert sorted((await bob.join("ops")).members) == ["alice", "bob"]
    alice.type("/who #lobby" + ENTER)
    await alice.wait_for(lambda: any(t.startswith("lobby: 2 member(s)") for t in alice.texts("ops")), "who #lobby")
    alice.type("/topic" + ENTER)
    await alice.wait_for(lambda: any(t.startswith("ops has no topic") for t in alice.texts("ops")), "the topic")
    alice.type("/part #ops" + ENTER)
    await alice.wait_for(lambda: alice.model.find(Kind.ROOM, "ops") is None, "parting ops")


async def test_a_line_over_the_text_limit_is_sent_as_several_messages_cut_at_blanks(
    server: ChatServer, start_tui: TuiFactory, bob: Client
) -> None:
    alice = await start_tui(server)
    words = [f"word{n:04d}" for n in range(460)]  # 9 characters each: 4,139 with the blanks
    alice.type(" ".join(words) + ENTER)
    first, second = await next_message(bob), await next_message(bob)
    assert len(first.text) <= 4000 and len(second.text) <= 4000
    assert first.text.split(" ") + second.text.split(" ") == words, "cut between words, nothing lost"
    lobby = alice.conversation("lobby")
    await alice.wait_for(lambda: [line.delivery for line in lobby.lines[-2:]] == [Delivery.ACKED] * 2, "both acked")
    assert any("sent as 2 messages" in t for t in alice.texts())


async def test_end_and_ctrl_end_jump_to_the_newest_line(server: ChatServer, start_tui: TuiFactory, bob: Client) -> None:
    for n in range(60):
        await bob.say(f"line {n}", room="lobby")
    alice = await start_tui(server)
    lobby = alice.conversation("lobby")
    await alice.wait_for(lambda: "line 59" in alice.texts() and not alice.app.pane.at_top, "the replay drawn")
    alice.type(PAGE_UP + PAGE_UP)
    await alice.wait_for(lambda: lobby.scroll > 0, "scrolled up")
    alice.type("\x1b[1;5F")  # Ctrl-End
    await alice.wait_for(lambda: lobby.scroll == 0, "Ctrl-End: the newest line")
    alice.type(PAGE_UP)
    await alice.wait_for(lambda: lobby.scroll > 0, "scrolled up again")
    alice.type("draft" + "\x1b[H")  # Home: the cursor leaves the end of the line
    alice.type("\x1b[F")  # End: the end of the input line first
    await alice.wait_for(lambda: alice.app.buffer.cursor_position == 5, "End in the input line")
    assert lobby.scroll > 0
    alice.type("\x1b[F")  # End again, at the end already: the newest line
    await alice.wait_for(lambda: lobby.scroll == 0, "End: the newest line")


async def test_a_command_typed_while_scrolled_up_answers_in_view(
    server: ChatServer, start_tui: TuiFactory, bob: Client
) -> None:
    for n in range(60):
        await bob.say(f"line {n}", room="lobby")
    alice = await start_tui(server)
    lobby = alice.conversation("lobby")
    await alice.wait_for(lambda: "line 59" in alice.texts() and not alice.app.pane.at_top, "the replay drawn")
    alice.type(PAGE_UP)
    await alice.wait_for(lambda: lobby.scroll > 0, "scrolled up")
    alice.type("/frobnicate" + ENTER)
    await alice.wait_for(lambda: any("unknown command /frobnicate" in row for row in alice.screen()), "the answer")
    assert lobby.scroll == 0


async def test_a_private_conversation_follows_its_peers_nick_and_finds_them_back_under_the_old_one(
    server: ChatServer, start_tui: TuiFactory, bob: Client
) -> None:
    alice = await start_tui(server)
    await bob.say("hi", to="alice")
    await alice.wait_for(lambda: alice.texts("bob", Kind.PRIVATE) == ["hi"], "bob's message")
    await bob.change_nick("robert")
    await alice.wait_for(lambda: alice.model.find(Kind.PRIVATE, "robert") is not None, "the conversation renamed")
    assert alice.model.find(Kind.PRIVATE, "bob") is None
    assert "bob is now known as robert" in alice.texts("robert", Kind.PRIVATE)
    alice.type("\x1b2" + "still there?" + ENTER)  # Alt-2: the private conversation, now with robert
    received = await next_message(bob, "still there?")
    assert received.to == "robert"
    await bob.quit()
    async with connect("127.0.0.1", server.port, nick="bob") as back:  # back under the older nick
        await back.say("it's me again", to="alice")
        await alice.wait_for(lambda: "it's me again" in alice.texts("bob", Kind.PRIVATE), "the same conversation")
    assert [c.name for c in alice.model.conversations if c.kind is Kind.PRIVATE] == ["bob"]


async def test_messages_to_a_nick_nobody_has_leave_no_conversation_and_say_why_once(
    server: ChatServer, start_tui: TuiFactory
) -> None:
    alice = await start_tui(server)
    alice.type("/msg nosuchnick hi" + ENTER)
    await alice.wait_for(lambda: any("to nosuchnick not sent" in t for t in alice.texts()), "the refusal in lobby")
    alice.type("/quick nobody hi" + ENTER)
    await alice.wait_for(lambda: any("to nobody not sent" in t for t in alice.texts()), "the quick refusal")
    assert [c.name for c in alice.model.conversations] == ["lobby"]
    assert alice.model.current.name == "lobby"
    refusal = next(t for t in alice.texts() if "to nobody not sent" in t)
    assert refusal.count("no_such_nick") == 1, refusal


async def test_the_room_list_is_in_aligned_columns(server: ChatServer, start_tui: TuiFactory, bob: Client) -> None:
    for room in ("a", "a-much-longer-room"):
        await bob.join(room)
    others = [await connect("127.0.0.1", server.port, nick=f"user{n}") for n in range(10)]
    try:
        for other in others:
            await other.join("a")
        alice = await start_tui(server)
        alice.type("/list" + ENTER)
        await alice.wait_for(lambda: any("a-much-longer-room" in t for t in alice.texts()), "the room list")
        rows = [t for t in alice.texts() if t.endswith(("member", "members"))]
        assert len(rows) == 3
        counts = {cell_width(row[: row.index(" member")]) for row in rows}
        assert len(counts) == 1, f"the counts do not end in one column: {rows}"
        assert any(row.startswith("  a   ") and row.endswith(" 11 members") for row in rows), rows
    finally:
        for other in others:
            await other.close()


async def test_alt_a_jumps_to_the_next_active_conversation_mentions_first_and_close_closes(
    server: ChatServer, start_tui: TuiFactory, bob: Client
) -> None:
    alice = await start_tui(server)
    for room in ("dev", "ops"):
        alice.type(f"/join {room}" + ENTER)
        await alice.wait_for(lambda r=room: alice.model.current.name == r and alice.model.current.joined, room)
        await bob.join(room)
    alice.type("\x1b1")  # Alt-1: lobby
    await alice.wait_for(lambda: alice.model.current.name == "lobby", "lobby")
    await bob.say("just talk", room="dev")
    await bob.say("alice: need you", room="ops")
    ops, dev = alice.conversation("ops"), alice.conversation("dev")
    await alice.wait_for(lambda: ops.mentioned and dev.unread == 1, "activity in dev and ops")
    assert [number for number, _ in alice.model.activity()] == [2, 3]
    alice.type("\x1ba")  # Alt-A: the mention first
    await alice.wait_for(lambda: alice.model.current is ops, "Alt-A to ops")
    alice.type("\x1ba")
    await alice.wait_for(lambda: alice.model.current is dev, "Alt-A to dev")
    alice.type("/close" + ENTER)
    await alice.wait_for(lambda: alice.model.find(Kind.ROOM, "dev") is None, "dev closed")
    assert "dev" not in [r.room for r in (await bob.rooms()).rooms if r.members == 2]


async def test_ignore_hides_a_nicks_messages_and_is_kept_for_the_next_run(
    server: ChatServer, start_tui: TuiFactory, bob: Client, tmp_path: Path
) -> None:
    state = tmp_path / "alice-state"
    alice = await start_tui(server, state=state)
    alice.type("/ignore bob" + ENTER)
    await alice.wait_for(lambda: any(t.startswith("ignoring bob") for t in alice.texts()), "ignoring bob")
    async with connect("127.0.0.1", server.port, nick="carol") as carol:
        await carol.join("lobby")
        await bob.say("spam in the room", room="lobby")
        await bob.say("spam to you", to="alice")
        await carol.say("after the spam", room="lobby")  # the server sends it after bob's
        await alice.wait_for(lambda: "after the spam" in alice.texts(), "carol's message")
    assert "spam in the room" not in alice.texts() and alice.model.find(Kind.PRIVATE, "bob") is None
    assert await alice.quit() == 0
    again = await start_tui(server, state=state)
    assert "bob" in again.model.ignored.values()
    assert "spam in the room" not in again.texts(), "not in the join replay either"
    again.type("/unignore bob" + ENTER)
    await again.wait_for(lambda: "bob is no longer ignored" in again.texts(), "unignored")
    await bob.say("heard again", room="lobby")
    await again.wait_for(lambda: "heard again" in again.texts(), "bob's message shown")


async def test_find_lists_the_loaded_lines_that_contain_a_text(
    server: ChatServer, start_tui: TuiFactory, bob: Client
) -> None:
    alice = await start_tui(server)
    for text in ("deploy at noon", "lunch?", "the DEPLOY failed", "fixed"):
        await bob.say(text, room="lobby")
    await alice.wait_for(lambda: "fixed" in alice.texts(), "bob's messages")
    alice.type("/find deploy" + ENTER)
    await alice.wait_for(lambda: any(t.startswith("2 line(s) contain 'deploy'") for t in alice.texts()), "found")
    found = [t for t in alice.texts() if t.startswith("  ") and "bob:" in t]
    assert [t.split("bob: ")[1] for t in found] == ["deploy at noon", "the DEPLOY failed"]
    alice.type("/find nothing-like-this" + ENTER)
    await alice.wait_for(lambda: any(t.startswith("no line here contains") for t in alice.texts()), "nothing")


async def next_typing(client: Client) -> Typing:
    async with asyncio.timeout(WAIT):
        while True:
            event = await client.recv()
            if isinstance(event, Typing):
                return event


async def test_a_typing_line_shows_who_types_here_and_our_typing_is_told(
    server: ChatServer, start_tui: TuiFactory, bob: Client
) -> None:
    alice = await start_tui(server)
    await alice.wait_for(lambda: (alice.model.udp_status or "").endswith(" ms"), "the UDP round trip")
    await bob.wait_udp(timeout=WAIT)
    assert bob.typing(room="lobby")
    await alice.wait_for(lambda: typing_text(alice.model) == "bob is typing…", "bob typing")
    await bob.say("done typing", room="lobby")
    await alice.wait_for(lambda: "done typing" in alice.texts() and typing_text(alice.model) == "", "the line gone")
    alice.type("hel")
    notice = await next_typing(bob)
    assert (notice.sender, notice.room) == ("alice", "lobby")


async def test_highlight_words_from_the_config_count_as_mentions(
    server: ChatServer, start_tui: TuiFactory, bob: Client
) -> None:
    alice = await start_tui(server, highlight=("deploy", "outage"))
    alice.type("/join dev" + ENTER)
    await alice.wait_for(lambda: alice.model.current.name == "dev" and alice.model.current.joined, "dev")
    await bob.say("the DEPLOY is done", room="lobby")
    await bob.say("redeploy later", room="lobby")  # not the word on its own
    lobby = alice.conversation("lobby")
    await alice.wait_for(lambda: "redeploy later" in alice.texts(), "bob's messages")
    assert [line.mention for line in lobby.lines if line.sender == "bob"] == [True, False]
    assert lobby.mentioned and alice.output.bells == 1
    alice.type("\x1b1")
    await alice.wait_for(lambda: alice.model.current is lobby, "lobby shown")
    rows = alice.app.pane.create_content(alice.pane_width, alice.app.pane.height)
    styled = [f for i in range(rows.line_count) for f in rows.get_line(i) if "class:mention" in f[0].split()]
    assert [f[1] for f in styled] == ["DEPLOY"]


async def test_conversation_logs_on_request_hold_each_message_once_made_safe(
    server: ChatServer, start_tui: TuiFactory, bob: Client, tmp_path: Path
) -> None:
    state = tmp_path / "alice-state"
    alice = await start_tui(server, state=state, logs=True)
    await bob.say("logged line", room="lobby")
    await bob.say("private\nand \u202eodd", to="alice")
    alice.type("mine" + ENTER)
    await next_message(bob, "mine")
    lobby = alice.conversation("lobby")
    await alice.wait_for(
        lambda: lobby.lines[-1].delivery is Delivery.ACKED and alice.texts("bob", Kind.PRIVATE), "all shown"
    )
    assert await alice.quit() == 0
    await bob.say("while away", room="lobby")
    again = await start_tui(server, state=state, logs=True)
    await again.wait_for(lambda: "while away" in again.texts(), "the missed message")
    assert await again.quit() == 0
    folder = state / "logs" / f"127.0.0.1-{server.port}-alice"
    room_log = (folder / "room-lobby.log").read_text().splitlines()
    assert [line[20:] for line in room_log] == ["<bob> logged line", "<alice> mine", "<bob> while away"]
    private_log = (folder / "private-bob.log").read_text()
    assert private_log[20:] == "<bob> private\n\tand <U+202E>odd\n"
    assert oct(folder.stat().st_mode & 0o777) == "0o700"


async def test_a_nick_in_a_script_the_viewer_does_not_read_is_marked_on_screen(
    server: ChatServer, start_tui: TuiFactory, bob: Client
) -> None:
    """A Cyrillic nick drawn like a Latin one (valid: the server holds no `pope`) carries the mark in the message
    pane and the member list as the real app draws them; bob's Latin nick does not."""
    alice = await start_tui(server)
    cyrillic_pope = "\u0440\u043e\u0440\u0435"
    async with connect("127.0.0.1", server.port, nick=cyrillic_pope) as impostor:
        await impostor.join("lobby")
        await impostor.say("trust me", room="lobby")
        await bob.say("hello", room="lobby")
        await alice.wait_for(lambda: "hello" in alice.texts() and "trust me" in alice.texts(), "both messages")
        rows = alice.screen()
        assert any(f"{cyrillic_pope}{FOREIGN_MARK} │ trust me" in row for row in rows), rows
        assert any(row.endswith(" bob │ hello") for row in rows), rows
        await alice.wait_for(lambda: len(alice.model.current.members) == 3, "three members")
        members = member_list(alice.model)
        assert (FOREIGN_STYLE, FOREIGN_MARK) in [(fragment[0], fragment[1]) for fragment in members]
        shown = "".join(fragment[1] for fragment in members)
        assert f"{cyrillic_pope}{FOREIGN_MARK}" in shown and f"bob{FOREIGN_MARK}" not in shown


async def test_whois_shows_rooms_away_idle_and_connected_since_and_says_so_for_an_unknown_nick(
    server: ChatServer, start_tui: TuiFactory, bob: Client
) -> None:
    await bob.join("ops")
    await bob.away("lunch")
    alice = await start_tui(server)
    buffer = alice.app.buffer
    alice.type("/whois bo" + TAB)
    await alice.wait_for(lambda: buffer.text == "/whois bob ", "the nick completed")
    alice.type(ENTER)
    await alice.wait_for(lambda: "bob is connected" in alice.texts(), "the answer in the conversation shown")
    texts = alice.texts()
    answer = texts[texts.index("bob is connected") :]
    assert answer[1:3] == ["  rooms: lobby, ops", "  away: lunch"], answer
    assert re.fullmatch(r"  idle: \d+ s", answer[3]), answer
    assert re.fullmatch(r"  connected since: .+ \d\d:\d\d \(\d+ s\)", answer[4]), answer
    alice.type("/whois nosuchnick" + ENTER)
    await alice.wait_for(
        lambda: "whois nosuchnick: nobody has that nick (nobody ever had it, or not for a long time)" in alice.texts(),
        "one clear line for an unknown nick",
    )
    assert alice.model.find(Kind.PRIVATE, "nosuchnick") is None
    alice.type("/help" + ENTER)
    await alice.wait_for(lambda: any(t.strip().startswith("/whois NICK") for t in alice.texts()), "in the help")


async def test_a_resumed_join_makes_a_member_again_without_a_joined_line(
    server: ChatServer, start_tui: TuiFactory
) -> None:
    alice = await start_tui(server)
    lobby = alice.conversation("lobby")
    bob = await RawConnection.open("127.0.0.1", server.port)
    try:
        assert (await bob.login("bob"))["type"] == "welcome"
        await bob.join("lobby", resumed=True)  # docs/protocol.md 10.3: a rejoin after a lost connection
        await alice.wait_for(lambda: "bob" in lobby.members, "bob in the member list")
        await bob.say("back", room="lobby")
        await alice.wait_for(lambda: "back" in alice.texts(), "bob's message")
        assert not any("bob joined" in t for t in alice.texts()), alice.texts()
    finally:
        await bob.close()


async def test_after_a_server_restart_resumed_clients_show_no_joins_and_away_is_seen_by_others(
    make_server: ServerFactory, start_tui: TuiFactory
) -> None:
    server = await make_server()
    alice = await start_tui(server)
    async with connect("127.0.0.1", server.port, nick="carol", backoff_initial=0.05) as carol:
        await carol.join("lobby")
        lobby = alice.conversation("lobby")
        await alice.wait_for(lambda: "carol" in lobby.members, "carol in lobby")
        alice.type("/away lunch" + ENTER)
        await alice.wait_for(lambda: "you are away: lunch" in alice.texts(), "away")
        shown_before = len(lobby.lines)
        await server.restart()
        await alice.wait_for(lambda: "reconnected; nothing was lost" in alice.texts(), "alice resumed")
        await carol.say("after the restart", room="lobby")  # returns once carol has resumed
        await alice.wait_for(lambda: "after the restart" in alice.texts() and "carol" in lobby.members, "carol back")
        members = {m.nick: m.away for m in (await carol.who("lobby")).members}
        assert members == {"alice": "lunch", "carol": None}, "alice's away set again after her resume"
        assert alice.model.away == "lunch"
        after = [line.text for line in lobby.lines[shown_before:]]
        assert not any("joined" in text for text in after), after
