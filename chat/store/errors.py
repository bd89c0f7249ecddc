"""What the store raises on purpose.

ChatError (chat.protocol.errors)
 +-- StoreError                 the history store cannot do what was asked
      +-- StoreUnavailable      the database cannot be opened: corrupt, read-only, or its folder cannot be made
      +-- SchemaTooNew          the database was made by a newer chat-server: refused, never touched
      +-- StoreClosed           a call after `AsyncStore.close()` (local misuse)
      +-- BackupRefused         `chat-server backup` cannot start (no database, destination exists, ...)
      +-- FilesUnavailable      the files folder cannot be made or written to (at start)
"""

from __future__ import annotations

from chat.protocol.errors import ChatError


class StoreError(ChatError):
    """The history store cannot do what was asked; the message says what and where."""


class StoreUnavailable(StoreError):
    """The database cannot be opened or created; the message names the file and says why, in one line."""


class SchemaTooNew(StoreError):
    """The database's `PRAGMA user_version` is above the newest schema this code knows."""

    def __init__(self, path: str, found: int, supported: int) -> None:
        super().__init__(
            f"{path}: schema version {found} is newer than this chat-server understands ({supported}); "
            "run a newer chat-server on it, or restore a backup made by this version"
        )
        self.path = path
        self.found = found
        self.supported = supported


class StoreClosed(StoreError):
    """The store was used after `close()` (or before `start()`)."""


class BackupRefused(StoreError):
    """An online backup cannot start: the reason is in the message."""


class FilesUnavailable(StoreError):
    """The `[files] directory` cannot be made or written to; the message names the folder and says why."""
