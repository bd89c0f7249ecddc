"""Conversation logs on disk, opt-in (`[client] logs = true`): plain text, one file per conversation.

    $XDG_STATE_HOME/chat/logs/HOST-PORT-NICK/room-lobby.log
                                            private-bob.log

A line per message as it arrived while the client ran (live messages, what a login or a join with `since` caught up
on, and our own once the server acknowledged them), never a join replay or a history page, so a restart writes
nothing twice:

    2026-12-07 21:12:03 <bob> the build is green
    2026-12-07 21:12:09 * alice waves
    2026-12-07 21:12:30 <bob> [quick] at your desk?
    2026-12-07 21:13:01 <bob> [file] notes.pdf (1.2 MiB) /get 6c1f0d5e...

Texts are made safe as on screen (`chat.tui.render.visible`), so `cat` of a log cannot drive the terminal; the lines
after the first of a multi-line message are indented with a tab. Folders are private to the user (0700), files 0600.
A log that cannot be written is logged once and given up, never an error in the app.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TextIO
from urllib.parse import quote

from chat.protocol.names import fold
from chat.tui.model import Conversation, Kind, Line, LineKind
from chat.tui.render import human_size, visible
from chat.tui.state import make_private_directory

logger = logging.getLogger(__name__)

LOGGED_KINDS = frozenset({LineKind.MESSAGE, LineKind.ACTION, LineKind.QUICK, LineKind.FILE})


def log_line(line: Line, local: time.struct_time) -> str:
    """One message as a log line (see the module doc), ending in a newline."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", local)
    sender = visible(line.sender)
    text = visible(line.text, newlines=True).replace("\n", "\n\t")
    if line.kind is LineKind.ACTION:
        return f"{when} * {sender} {text}\n"
    if line.kind is LineKind.QUICK:
        return f"{when} <{sender}> [{'nudge' if line.nudge else 'quick'}] {text}\n"
    if line.kind is LineKind.FILE and line.file is not None:
        size = human_size(line.file.size)
        return f"{when} <{sender}> [file] {text} ({size}) /get {visible(line.file.fid)}\n"
    return f"{when} <{sender}> {text}\n"


class ConversationLogs:
    """The open log files of one server and nick, appended to as messages arrive."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._files: dict[tuple[Kind, str], TextIO] = {}
        self._broken = False

    def path_for(self, conversation: Conversation) -> Path:
        """`room-NAME.log` or `private-NICK.log`, the name folded and percent-encoded (no name leaves the folder)."""
        return self.directory / f"{conversation.kind.value}-{quote(fold(conversation.name), safe='')}.log"

    def write(self, conversation: Conversation, line: Line) -> None:
        """Append one message to its conversation's log; anything but a message is not logged."""
        if self._broken or line.kind not in LOGGED_KINDS or conversation.kind is Kind.STATUS:
            return
        try:
            file = self._files.get(conversation.key)
            if file is None:
                make_private_directory(self.directory)
                path = self.path_for(conversation)
                descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                file = self._files[conversation.key] = os.fdopen(descriptor, "a", encoding="utf-8")
            file.write(log_line(line, time.localtime(line.ts)))
            file.flush()
        except OSError as exc:
            self._broken = True
            logger.warning("cannot write the conversation logs in %s: %s; logging stops", self.directory, exc)

    def close(self) -> None:
        for file in self._files.values():
            try:
                file.close()
            except OSError as exc:
                logger.warning("closing a conversation log: %s", exc)
        self._files.clear()
