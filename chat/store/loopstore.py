"""A `Store` over the synchronous HistoryStore on the loop thread (group commit per loop turn); a stopgap."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from chat.store.history import Appended, Draft, FileRecord, HistoryStore, NickHolder, Page, Scope

logger = logging.getLogger(__name__)


class LoopStore:
    """Commits the drafts of one loop turn in one transaction; reads run inline."""

    def __init__(self, path: str | Path, *, synchronous: str = "normal") -> None:
        self._path = path
        self._synchronous = synchronous
        self._db: HistoryStore | None = None
        self._pending: list[tuple[Draft, Callable[[Appended | None], None]]] = []
        self._scheduled = False

    @property
    def db(self) -> HistoryStore:
        assert self._db is not None
        return self._db

    async def start(self) -> None:
        self._db = HistoryStore(self._path, synchronous=self._synchronous)

    async def close(self) -> None:
        if self._db is not None:
            self._flush()
            self._db.close()
            self._db = None

    def submit(self, draft: Draft, on_stored: Callable[[Appended | None], None]) -> None:
        self._pending.append((draft, on_stored))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            results: list[Appended | None] = list(self.db.append_batch([d for d, _ in batch]))
        except Exception:
            logger.exception("storing %d message(s) failed", len(batch))
            results = [None] * len(batch)
        for (_, on_stored), result in zip(batch, results, strict=True):
            try:
                on_stored(result)
            except Exception:
                logger.exception("delivering a stored message failed")

    async def flush(self) -> None:
        self._flush()

    def hold_nick(self, key: str, nick: str, identity: int, now_ms: int) -> None:
        self.db.hold_nick(key, nick, identity, now_ms)

    async def create_identity(self, token: str, now_ms: int) -> int:
        return self.db.create_identity(token, now_ms)

    async def identity_for_token(self, token: str) -> int | None:
        return self.db.identity_for_token(token)

    async def page(self, scope: Scope, *, after: int | None = None, before: int | None = None, limit: int = 50) -> Page:
        return self.db.page(scope, after=after, before=before, limit=limit)

    async def add_file(self, record: FileRecord) -> None:
        self.db.add_file(record)

    async def file(self, fid: str) -> FileRecord | None:
        return self.db.file(fid)

    async def files_size(self) -> int:
        return self.db.files_size()

    async def last_id(self) -> int:
        return self.db.last_id()

    async def load_nicks(self) -> dict[str, NickHolder]:
        rows = self.db._db.execute("SELECT key, identity, nick, last_used FROM nicks").fetchall()
        return {str(k): NickHolder(int(i), str(n), int(t)) for k, i, n, t in rows}

    async def delete_older_than(self, cutoff_ms: int) -> int:
        return self.db.delete_older_than(cutoff_ms)

    async def delete_files_older_than(self, cutoff_ms: int) -> list[str]:
        return self.db.delete_files_older_than(cutoff_ms)
