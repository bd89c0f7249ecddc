"""A client's identity kept in a file (`connect(..., state=PATH)`), so a restarted bot is the same identity.

The file holds the session token (the identity: the server gives its nick back to it, and its private messages) and
the highest private message id delivered (the `since` of the next login, so the private messages sent while the
program was down are delivered, docs/protocol.md 2.2). It is JSON, written whole to a temporary file beside it and
renamed over it (a crash leaves the old file or the new one, never half of one), readable by its owner only: the
token is a credential.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import msgspec


class SavedIdentity(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a state file holds: the session token, and the highest private message id delivered (if any)."""

    session: str
    since: int | None = None
    nick: str | None = None  # the nick last used, for people reading the file


class IdentityFileError(ValueError):
    """A state file exists but cannot be read as one: the message names the file and what is wrong."""


_decoder = msgspec.json.Decoder(SavedIdentity)
_encoder = msgspec.json.Encoder()


def load_identity(path: str | os.PathLike[str]) -> SavedIdentity | None:
    """The identity saved in `path`, or None if there is no such file yet."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise IdentityFileError(f"{os.fspath(path)}: not a chat client state file ({exc})") from None


def save_identity(path: str | os.PathLike[str], identity: SavedIdentity) -> None:
    """Write `identity` to `path` atomically, mode 0600."""
    write_private_file(Path(path), _encoder.encode(identity))


def write_private_file(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically (a temporary file beside it, fsync, rename), readable by its owner only
    (mkstemp makes it 0600): a crash leaves the old file or the new one, never half of one."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
