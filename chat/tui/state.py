"""What the terminal client remembers between runs, and where: the XDG state directory, never the working folder.

Per server (host and port) and nick, one small JSON file holds the session token (the identity: it is a secret, so
the file is private to the user), the highest message id shown per room and for the private messages, the
conversations open at exit and the messages not yet acknowledged then. The next run logs in with the token and the
private `since`, joins the rooms with their `since`, and says the unacknowledged messages again with their `cid`:
what came while it was away is shown, and nothing twice (docs/protocol.md 4).

    $XDG_STATE_HOME/chat/            (default ~/.local/state/chat/)
        client.log                   the client's log
        sessions/HOST-PORT-NICK.json one per server and nick

Files are replaced atomically (a temporary file in the same folder, flushed, then renamed), so a crash leaves the
old state or the new one, never half of one. Two clients with different nicks never write the same file.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import msgspec

from chat.client.identity import write_private_file
from chat.client.trust import state_directory as client_state_directory
from chat.protocol.names import fold

logger = logging.getLogger("chat.tui")

STATE_VERSION = 1


class UnsentSay(msgspec.Struct, kw_only=True):
    """A message typed but not acknowledged when the client exited; said again, same `cid`, on the next run."""

    room: str | None = None
    to: str | None = None
    text: str
    cid: str


class SessionState(msgspec.Struct, kw_only=True):
    """Everything kept for one server and nick."""

    version: int = STATE_VERSION
    session: str | None = None  # the session token: the identity
    private: int | None = None  # highest private message id shown
    rooms: dict[str, int] = msgspec.field(default_factory=dict)  # folded room name -> highest id shown
    open_rooms: list[str] = msgspec.field(default_factory=list)  # rooms open at exit, joined again, in order
    private_peers: list[str] = msgspec.field(default_factory=list)  # private conversations open at exit
    unsent: list[UnsentSay] = msgspec.field(default_factory=list)
    ignored: list[str] = msgspec.field(default_factory=list)  # /ignore: nicks whose messages are not shown

    def room_since(self, room: str) -> int | None:
        return self.rooms.get(fold(room))


def state_directory(environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_STATE_HOME/chat`, or `~/.local/state/chat` when it is unset or not absolute (XDG Base Directory): the
    client library's state folder, where its known-hosts file is too (chat.client.trust)."""
    return client_state_directory(environ)


def make_private_directory(path: Path) -> Path:
    """Create `path` (and parents) readable by the user only; return it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


class StateStore:
    """The session files under one state directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def log_path(self) -> Path:
        return self.directory / "client.log"

    def path_for(self, host: str, port: int, nick: str) -> Path:
        """The file of one server and nick; every part is percent-encoded, so no name can leave the folder."""
        name = f"{quote(host, safe='')}-{port}-{quote(fold(nick), safe='')}.json"
        return self.directory / "sessions" / name

    def load(self, host: str, port: int, nick: str) -> SessionState:
        """The state kept for this server and nick; a fresh one if there is none or it cannot be read."""
        path = self.path_for(host, port, nick)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return SessionState()
        except OSError as exc:
            logger.warning("cannot read %s: %s; starting without it", path, exc)
            return SessionState()
        try:
            return msgspec.json.decode(data, type=SessionState)
        except msgspec.DecodeError as exc:
            logger.warning("%s is damaged (%s); set aside as %s.bad", path, exc, path.name)
            with contextlib.suppress(OSError):
                path.replace(path.with_name(path.name + ".bad"))
            return SessionState()

    def save(self, host: str, port: int, nick: str, state: SessionState) -> None:
        """Write the state atomically, readable by the user only."""
        path = self.path_for(host, port, nick)
        make_private_directory(path.parent)
        write_private_file(path, msgspec.json.format(msgspec.json.encode(state), indent=2))
