"""Group commit: the messages sent during one turn of the event loop are stored in one SQLite transaction.

`submit` queues a draft with a callback; the flush runs on the next loop turn, commits the whole batch, and only
then calls each callback with its stored message, in id order. So nothing is acknowledged before it is on disk, and
one commit serves every sender of that turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from chat.store.history import Appended, Draft, HistoryStore

logger = logging.getLogger("chat.server")

StoredCallback = Callable[[Appended | None], None]  # None: the store failed


class CommitQueue:
    """Collects drafts and stores them in batches, one per loop turn."""

    def __init__(self, store: HistoryStore, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self._loop = loop
        self._pending: list[tuple[Draft, StoredCallback]] = []
        self._scheduled = False
        self.batches = 0
        self.messages = 0

    def submit(self, draft: Draft, on_stored: StoredCallback) -> None:
        """Store `draft` soon; `on_stored` runs after the commit."""
        self._pending.append((draft, on_stored))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Commit everything pending now and run the callbacks."""
        self._scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            results: list[Appended | None] = list(self._store.append_batch([draft for draft, _ in batch]))
        except Exception:
            logger.exception("storing %d message(s) failed", len(batch))
            results = [None] * len(batch)
        self.batches += 1
        self.messages += len(batch)
        for (_, on_stored), result in zip(batch, results, strict=True):
            try:
                on_stored(result)
            except Exception:
                logger.exception("delivering a stored message failed")
