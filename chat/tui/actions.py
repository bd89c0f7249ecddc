"""What each slash command does: checks its arguments, then asks the controller or the client library.

Commands that talk to the server run as guarded background tasks of the controller, so the input line never waits
for the network; their answers and errors arrive in the conversation as notices.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING

from chat.client import ServerError
from chat.protocol.errors import ErrorCode
from chat.protocol.messages import FileInfo, WhoisInfo
from chat.protocol.names import fold, name_problem, nfc
from chat.tui.commands import Command, room_name, usage
from chat.tui.model import ACTION_PREFIX, Conversation, Kind, LineKind
from chat.tui.paths import default_download_dir, expand, sendable
from chat.tui.render import LocalTime, cell_width, day_of, fit, short_fid, visible

if TYPE_CHECKING:
    from chat.tui.controller import Controller

logger = logging.getLogger("chat.tui")

HISTORY_PAGE = 50
FIND_SHOWN = 20  # /find lists at most this many lines, the newest
FIND_TEXT_CHARS = 100  # of each line's text
HISTORY_LIMIT = 100  # docs/protocol.md 2.5: history_limit
NUDGE_TEXT = "nudge"
FULL_FID = re.compile(r"[0-9a-f]{32}")  # docs/protocol.md 5.1: a fid is 32 hex digits chosen by the server
MAX_AMBIGUOUS_SHOWN = 5
HELP_KEYS = (
    "Enter send · Alt-Enter or Ctrl-J new line · Tab complete · Up/Down input history",
    "PageUp/PageDown or the mouse wheel scroll, Ctrl-End (or End on an empty line) to the newest line",
    "Ctrl-N/Ctrl-P or Alt-1..9 switch conversation · Alt-A the next with activity (mentions first)",
    "Ctrl-C clears the input line; on an empty line it cancels the newest /send or /get",
    "Ctrl-D on an empty line or /quit leave · a line starting with // sends a text starting with /",
)


class CommandActions:
    """The handlers of the commands in `chat.tui.commands.COMMANDS`, one method `_NAME` each."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.model = controller.model
        self.ui = controller.ui
        self.table = controller.table

    def run(self, conversation: Conversation, command: Command) -> None:
        """Do what `command` asks, typed while `conversation` was shown."""
        getattr(self, f"_{command.name}")(conversation, command)

    # --- helpers -------------------------------------------------------------------------------------------------

    def _name_problem(self, value: str, what: str, command: str) -> bool:
        """Say what is wrong with a nick or room argument (or show the usage when it is missing); True if wrong."""
        if not value:
            self._usage(command)
            return True
        problem = name_problem(nfc(value))
        if problem is not None:
            self.model.notice(f"{what} {value!r} {problem}", kind=LineKind.ERROR)
            return True
        return False

    def _usage(self, name: str) -> None:
        spec = self.table.get(name)
        assert spec is not None
        self.model.notice(f"usage: {usage(spec)}", kind=LineKind.ERROR)

    # --- the commands --------------------------------------------------------------------------------------------

    def _join(self, conversation: Conversation, command: Command) -> None:
        typed, _ = command.split()
        room = room_name(typed)
        if self._name_problem(room, "room name", "join"):
            return
        existing = self.model.find(Kind.ROOM, room)
        if existing is not None and existing.joined:
            self.ui.show(existing)
            return
        self.ui.show(self.model.open_room(room))
        controller = self.controller

        async def join() -> None:
            await controller.join_room(await controller.client_ready(), room, since=None)

        controller.spawn(join())

    def _part(self, conversation: Conversation, command: Command) -> None:
        typed, _ = command.split()
        name = room_name(typed)
        target = self.model.find(Kind.ROOM, name) if name else conversation
        if target is None:
            self.model.notice(f"you are not in {name}", kind=LineKind.ERROR)
            return
        if target.kind is Kind.STATUS:
            return
        self.model.close(target)
        self.ui.show(self.model.current)
        self.controller.schedule_save()
        if target.kind is not Kind.ROOM or not target.joined:
            return
        controller = self.controller

        async def part() -> None:
            client = await controller.client_ready()
            try:
                await client.part(target.name)
            except ServerError as exc:
                logger.info("part %s: %s", target.name, exc)

        controller.spawn(part())

    def _list(self, conversation: Conversation, command: Command) -> None:
        model, controller = self.model, self.controller

        async def list_rooms() -> None:
            answer = await (await controller.client_ready()).rooms()
            if not answer.rooms:
                model.notice("no rooms on the server", conversation)
                return
            model.notice(f"{len(answer.rooms)} room(s) on the server:", conversation)
            names = [visible(info.room) for info in answer.rooms]
            name_width = max(cell_width(name) for name in names)
            count_width = max(len(str(info.members)) for info in answer.rooms)
            for info, name in zip(answer.rooms, names, strict=True):
                model.known_rooms[fold(info.room)] = info.room
                members = "member" if info.members == 1 else "members"
                model.notice(f"  {fit(name, name_width)}  {info.members:>{count_width}} {members}", conversation)

        controller.spawn(list_rooms())

    def _topic(self, conversation: Conversation, command: Command) -> None:
        typed, text = command.split()
        room = room_name(typed) or (conversation.name if conversation.kind is Kind.ROOM else "")
        if not room:
            self._usage("topic")
            return
        # docs/protocol.md has no topic yet: say so rather than pretend one was set
        change = " (and cannot be set)" if text.strip() else ""
        self.model.notice(f"{room} has no topic: rooms on this server have none yet{change}", conversation)

    def _msg(self, conversation: Conversation, command: Command) -> None:
        nick, text = command.split()
        if self._name_problem(nick, "nick", "msg"):
            return
        target = self.model.private_for(nick)
        self.ui.show(target)
        if text.strip():
            self.controller.say(target, text, origin=conversation)

    def _me(self, conversation: Conversation, command: Command) -> None:
        if not command.args.strip():
            self._usage("me")
            return
        self.controller.send(conversation, ACTION_PREFIX + command.args)

    def _nick(self, conversation: Conversation, command: Command) -> None:
        nick, _ = command.split()
        if self._name_problem(nick, "nick", "nick"):
            return
        controller, model = self.controller, self.model
        if controller.client is None:  # logged out (refused, taken over): log in with this nick
            controller.log_in_as(nick)
            return

        async def change() -> None:
            client = await controller.client_ready()
            try:
                answer = await client.change_nick(nick)
            except ServerError as exc:
                model.notice(f"cannot take the nick {nick}: {exc.message}", kind=LineKind.ERROR)
                return
            controller.nick = answer.nick
            model.set_own_nick(answer.nick)
            model.notice_everywhere(f"you are now known as {answer.nick}", kind=LineKind.NICK)
            controller.save_now()

        controller.spawn(change())

    def _away(self, conversation: Conversation, command: Command) -> None:
        text = command.args.strip() or None
        controller, model = self.controller, self.model

        async def away() -> None:
            client = await controller.client_ready()
            try:
                answer = await client.away(text)
            except ServerError as exc:
                model.notice(f"away: {exc.message}", kind=LineKind.ERROR)
                return
            model.set_own_away(answer.text)
            model.notice(f"you are away: {answer.text}" if answer.text else "you are back", kind=LineKind.AWAY)

        controller.spawn(away())

    def _who(self, conversation: Conversation, command: Command) -> None:
        typed, _ = command.split()
        room = room_name(typed)
        if not room:
            if conversation.kind is not Kind.ROOM:
                self._usage("who")
                return
            room = conversation.name
        controller, model = self.controller, self.model

        async def who() -> None:
            client = await controller.client_ready()
            try:
                answer = await client.who(room)
            except ServerError as exc:
                model.notice(f"who {room}: {exc.message}", conversation, kind=LineKind.ERROR)
                return
            model.set_members(answer.room, [(m.nick, m.away) for m in answer.members])
            names = ", ".join(m.nick if m.away is None else f"{m.nick} (away: {m.away})" for m in answer.members)
            model.notice(f"{answer.room}: {len(answer.members)} member(s): {names}", conversation)

        controller.spawn(who())

    def _whois(self, conversation: Conversation, command: Command) -> None:
        nick, _ = command.split()
        if self._name_problem(nick, "nick", "whois"):
            return
        controller, model = self.controller, self.model

        async def whois() -> None:
            client = await controller.client_ready()
            try:
                info = await client.whois(nick)
            except ServerError as exc:
                model.notice(f"whois {nick}: {whois_refusal(exc)}", conversation, kind=LineKind.ERROR)
                return
            for text in whois_lines(info, controller.clock()):
                model.notice(text, conversation)

        controller.spawn(whois())

    def _quick(self, conversation: Conversation, command: Command) -> None:
        nick, text = command.split()
        if not text.strip():
            self._usage("quick")
        elif not self._name_problem(nick, "nick", "quick"):
            self.controller.send_quick(nick, text, nudge=False, origin=conversation)

    def _nudge(self, conversation: Conversation, command: Command) -> None:
        nick, _ = command.split()
        if not self._name_problem(nick, "nick", "nudge"):
            self.controller.send_quick(nick, NUDGE_TEXT, nudge=True, origin=conversation)

    def _send(self, conversation: Conversation, command: Command) -> None:
        words = command.words()
        if not 1 <= len(words) <= 2 or not words[0]:
            self._usage("send")
            return
        path = expand(words[0])
        room: str | None = None
        to: str | None = None
        if len(words) == 2:
            if self._name_problem(words[1], "nick", "send"):
                return
            to = words[1]
        elif conversation.kind is Kind.ROOM:
            room = conversation.name
        elif conversation.kind is Kind.PRIVATE:
            to = conversation.name
        else:
            self.model.notice("this is not a room: /send PATH NICK, or /join a room first", kind=LineKind.ERROR)
            return
        size = sendable(path)
        if isinstance(size, str):
            self.model.notice(f"cannot send {path}: {size}", kind=LineKind.ERROR)
            return
        if to is not None:
            conversation = self.model.open_private(to)
            self.ui.show(conversation)
        self.controller.files.send(path, size, conversation, room=room, to=to)

    def _get(self, conversation: Conversation, command: Command) -> None:
        words = command.words()
        if not 1 <= len(words) <= 2 or not words[0]:
            self._usage("get")
            return
        file = self._file_named(words[0])
        if file is None:
            return
        dest = expand(words[1]) if len(words) == 2 else default_download_dir()
        if not dest.is_dir() and not dest.parent.is_dir():
            self.model.notice(f"cannot save to {dest}: no such folder", kind=LineKind.ERROR)
            return
        self.controller.files.get(file, dest, conversation)

    def _file_named(self, typed: str) -> FileInfo | str | None:
        """The seen file whose fid starts with `typed`, or a full fid not seen here; None (and why) if neither."""
        matches = self.model.files_matching(typed)
        if len(matches) == 1:
            return matches[0]
        exact = [info for info in matches if info.fid == typed.lower()]
        if exact:
            return exact[0]
        if matches:
            shown = ", ".join(f"{short_fid(info.fid)} {info.name}" for info in matches[:MAX_AMBIGUOUS_SHOWN])
            self.model.notice(f"{typed} could be any of: {shown}; type more of its id", kind=LineKind.ERROR)
            return None
        if FULL_FID.fullmatch(typed.lower()):
            return typed.lower()
        self.model.notice(
            f"no file {typed} in the conversations here; Tab after /get lists the files seen", kind=LineKind.ERROR
        )
        return None

    def _ignore(self, conversation: Conversation, command: Command) -> None:
        nick, _ = command.split()
        if not nick:
            ignored = sorted(self.model.ignored.values(), key=fold)
            self.model.notice(f"ignored: {', '.join(ignored)}" if ignored else "nobody is ignored")
            return
        if self._name_problem(nick, "nick", "ignore"):
            return
        if self.model.is_own(nick):
            self.model.notice("you cannot ignore yourself", kind=LineKind.ERROR)
            return
        self.model.ignored[fold(nick)] = nick
        self.model.notice(f"ignoring {nick}: their messages are not shown (/unignore {nick} to undo)")
        self.controller.save_now()

    def _unignore(self, conversation: Conversation, command: Command) -> None:
        nick, _ = command.split()
        if self._name_problem(nick, "nick", "unignore"):
            return
        if self.model.ignored.pop(fold(nick), None) is None:
            self.model.notice(f"{nick} is not ignored", kind=LineKind.ERROR)
            return
        self.model.notice(f"{nick} is no longer ignored")
        self.controller.save_now()

    def _find(self, conversation: Conversation, command: Command) -> None:
        text = command.args.strip()
        if not text:
            self._usage("find")
            return
        found = self.model.find_lines(conversation, text)
        if not found:
            self.model.notice(f"no line here contains {text!r} (/history loads older ones)", conversation)
            return
        shown = found[-FIND_SHOWN:]
        more = f", the last {len(shown)}" if len(found) > len(shown) else ""
        self.model.notice(f"{len(found)} line(s) contain {text!r}{more}:", conversation)
        for line in shown:
            when = time.strftime("%d %b %H:%M", time.localtime(line.ts))
            body = line.text.replace("\n", " ")
            if len(body) > FIND_TEXT_CHARS:
                body = body[: FIND_TEXT_CHARS - 1] + "+"
            self.model.notice(f"  {when} {line.sender}: {body}", conversation)

    def _history(self, conversation: Conversation, command: Command) -> None:
        count, _ = command.split()
        if count and not count.isdigit():
            self._usage("history")
            return
        limit = min(HISTORY_LIMIT, max(1, int(count))) if count else HISTORY_PAGE
        self.controller.spawn(self.controller.load_older(conversation, limit, quiet=False))

    def _clear(self, conversation: Conversation, command: Command) -> None:
        self.model.clear(conversation)

    def _reconnect(self, conversation: Conversation, command: Command) -> None:
        client = self.controller.client
        if client is not None and not client.closed:
            self.model.notice("already connected (the client reconnects by itself when the link drops)")
            return
        self.controller.reconnect()

    def _help(self, conversation: Conversation, command: Command) -> None:
        name, _ = command.split()
        if name:
            spec = self.table.get(name.lstrip("/"))
            if spec is None:
                self.model.notice(f"no command /{name.lstrip('/')}", kind=LineKind.ERROR)
            else:
                self.model.notice(f"{usage(spec)}: {spec.help}")
            return
        self.model.notice("commands:")
        for spec in self.table.specs:
            self.model.notice(f"  {usage(spec):<22} {spec.help}")
        for line in HELP_KEYS:
            self.model.notice(line)

    def _quit(self, conversation: Conversation, command: Command) -> None:
        self.controller.spawn(self.controller.quit(command.args.strip() or None))


def whois_refusal(exc: ServerError) -> str:
    """Why /whois shows nothing: for a nick nobody has (or had lately), one plain sentence."""
    if exc.code == ErrorCode.NO_SUCH_NICK:
        return "nobody has that nick (nobody ever had it, or not for a long time)"
    return f"{exc.code}: {exc.message}" if exc.code else exc.message


def whois_lines(info: WhoisInfo, now: float, local: LocalTime = time.localtime) -> list[str]:
    """What /whois shows of the server's answer (docs/protocol.md 3.13): connected or when last seen; then its rooms,
    away text, idle time and since when it is connected, a line each so a narrow pane reads them too."""
    if not info.online:
        if isinstance(info.seen, int):
            return [f"{info.nick} is not connected; last seen {moment(info.seen / 1000, now, local)}"]
        return [f"{info.nick} is not connected"]
    lines = [f"{info.nick} is connected"]
    rooms = info.rooms if isinstance(info.rooms, list) else []
    lines.append(f"  rooms: {', '.join(rooms)}" if rooms else "  rooms: none")
    away = info.away if isinstance(info.away, str) else None
    lines.append(f"  away: {away}" if away else "  away: no")
    if isinstance(info.idle, int | float):
        lines.append(f"  idle: {span(info.idle)}")
    if isinstance(info.connected, int):
        since = info.connected / 1000
        lines.append(f"  connected since: {moment(since, now, local)} ({span(now - since)})")
    return lines


def span(seconds: float) -> str:
    """A duration in the two largest units that matter: `42 s`, `5 min`, `2 h 5 min`, `3 d 4 h`."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes = whole // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def moment(ts: float, now: float, local: LocalTime = time.localtime) -> str:
    """A past time as people say it: `today 17:03`, else `Tue 1 Dec 2026 17:03` (local time)."""
    clock = time.strftime("%H:%M", local(ts))
    if day_of(ts, local) == day_of(now, local):
        return f"today {clock}"
    when = local(ts)
    return f"{time.strftime('%a', when)} {when.tm_mday} {time.strftime('%b %Y', when)} {clock}"
