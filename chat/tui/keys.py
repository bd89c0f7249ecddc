"""The key bindings of the terminal client, made by one `create_key_bindings`.

Emacs editing keys (Ctrl-A, Ctrl-E, Ctrl-K, Ctrl-W, Alt-B, Alt-F, ...) come from prompt_toolkit's defaults; these
bindings take precedence over them. Enter sends (most terminals send the same byte for Enter and Shift-Enter, so a
new line is Alt-Enter or Ctrl-J); a paste arrives as one bracketed paste and is sent as one message, after a
question when it has many lines.

Ctrl-C does the least it can: with text in the input line it clears the line (as it always did), so a reflex Ctrl-C
while typing never stops a transfer; on an empty line it cancels the newest running /send or /get (it can be resumed:
see `chat.tui.files`); on an empty line with no transfer it says how to leave. It never quits: the app runs in raw
mode, so Ctrl-C is a key here, not SIGINT (Ctrl-D on an empty line and /quit leave).
"""

from __future__ import annotations

from typing import Protocol

from prompt_toolkit.buffer import Buffer
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

from chat.tui.controller import Controller
from chat.tui.layout import MessagePane
from chat.tui.model import ChatModel, Conversation

CONFIRM_LINES = 5  # a message of more lines than this is sent only after Enter is pressed a second time


class ChatView(Protocol):
    """What the key bindings act on."""

    model: ChatModel
    controller: Controller
    pane: MessagePane
    buffer: Buffer

    def show(self, conversation: Conversation) -> None: ...


def create_key_bindings(view: ChatView) -> KeyBindings:
    """Every binding of the app (see the README's table)."""
    bindings = KeyBindings()
    model, buffer, pane = view.model, view.buffer, view.pane
    confirming = Condition(lambda: model.confirm is not None)
    completing = Condition(lambda: buffer.complete_state is not None)

    def replace_input(text: str) -> None:
        buffer.document = Document(text, len(text))

    @bindings.add("enter")
    def _send(event: KeyPressEvent) -> None:
        buffer.complete_state = None
        text = buffer.text.rstrip()
        if not text.strip():
            replace_input("")
            return
        lines = text.count("\n") + 1
        if lines > CONFIRM_LINES and model.confirm is None and not text.startswith("/"):
            model.confirm = f"Send these {lines} lines as one message? Enter: send · Esc: keep editing"
            return
        model.confirm = None
        replace_input("")
        view.controller.submit(text)

    @bindings.add("escape", filter=confirming | completing)
    def _cancel(event: KeyPressEvent) -> None:
        model.confirm = None
        buffer.cancel_completion()

    @bindings.add("escape", "enter")
    @bindings.add("c-j")
    def _newline(event: KeyPressEvent) -> None:
        buffer.insert_text("\n")

    @bindings.add("tab")
    def _complete(event: KeyPressEvent) -> None:
        state = buffer.complete_state
        if state is not None and len(state.completions) > 1:
            buffer.complete_next()
        else:
            # A single candidate is taken as it is, and Tab goes on from there: into a folder just completed.
            buffer.complete_state = None
            buffer.start_completion(select_first=True)

    @bindings.add("s-tab")
    def _complete_back(event: KeyPressEvent) -> None:
        if buffer.complete_state is not None:
            buffer.complete_previous()

    @bindings.add("up")
    def _up(event: KeyPressEvent) -> None:
        if buffer.complete_state is not None:
            buffer.complete_previous()
        elif buffer.document.cursor_position_row > 0:
            buffer.cursor_up()
        else:
            entry = model.current.history.previous(buffer.text)
            if entry is not None:
                replace_input(entry)

    @bindings.add("down")
    def _down(event: KeyPressEvent) -> None:
        if buffer.complete_state is not None:
            buffer.complete_next()
        elif buffer.document.cursor_position_row < buffer.document.line_count - 1:
            buffer.cursor_down()
        else:
            entry = model.current.history.next()
            if entry is not None:
                replace_input(entry)

    @bindings.add("pageup")
    def _page_up(event: KeyPressEvent) -> None:
        pane.page_up()

    @bindings.add("pagedown")
    def _page_down(event: KeyPressEvent) -> None:
        pane.page_down()

    @bindings.add("c-end")
    def _newest(event: KeyPressEvent) -> None:
        pane.scroll_down(model.current.scroll)

    @bindings.add("end")
    def _end(event: KeyPressEvent) -> None:
        """End of the input line; on an empty line, or at its end already, the newest line of the conversation."""
        if buffer.document.is_cursor_at_the_end:
            pane.scroll_down(model.current.scroll)
        else:
            buffer.cursor_position += buffer.document.get_end_of_line_position()

    @bindings.add("c-n")
    def _next(event: KeyPressEvent) -> None:
        _switch_relative(view, 1)

    @bindings.add("c-p")
    def _previous(event: KeyPressEvent) -> None:
        _switch_relative(view, -1)

    for digit in "1234567890":

        @bindings.add("escape", digit)
        def _number(event: KeyPressEvent, number: int = int(digit) or 10) -> None:
            if 1 <= number <= len(model.conversations):
                view.show(model.conversations[number - 1])

    @bindings.add("escape", "a")
    def _next_active(event: KeyPressEvent) -> None:
        """Alt-A: the next conversation with activity, mentions and private messages first (weechat's hotlist)."""
        target = model.next_active()
        if target is not None:
            view.show(target)

    @bindings.add("c-d")
    def _quit_or_delete(event: KeyPressEvent) -> None:
        if buffer.text:
            buffer.delete()
        else:
            view.controller.request_quit()

    @bindings.add("c-c")
    def _clear_or_cancel(event: KeyPressEvent) -> None:
        if buffer.text:
            replace_input("")
        elif view.controller.files.cancel_latest() is None:
            model.notice("Ctrl-D on an empty line, or /quit, leaves")

    @bindings.add("c-l")
    def _redraw(event: KeyPressEvent) -> None:
        event.app.renderer.clear()

    return bindings


def _switch_relative(view: ChatView, step: int) -> None:
    conversations = view.model.conversations
    if not conversations:
        return
    current = view.model.current
    index = conversations.index(current) if current in conversations else -1
    view.show(conversations[(index + step) % len(conversations)])
