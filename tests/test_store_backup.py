"""Online backup of a live database: a consistent snapshot from the backup's start, taken while a real chat-server
process goes on storing messages, that the store opens; and the `chat-server backup` command around it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from rawwire import RawConnection

from chat.store.backup import backup
from chat.store.errors import BackupRefused
from chat.store.history import HistoryStore
from chat.store.records import Scope
from chat.testing.process import server_command


class Writer:
    """One client saying messages one at a time (each sent after the previous one's acknowledgement), so a message
    sent after some moment was committed after it."""

    def __init__(self, conn: RawConnection) -> None:
        self.conn = conn
        self.acked: list[int] = []
        self.sent = 0
        self.progress = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sent += 1
            ack = await self.conn.say(f"m{self.sent}", room="lobby")
            self.acked.append(int(ack["id"]))
            self.progress.set()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(20):
            while len(self.acked) < count:
                self.progress.clear()
                await self.progress.wait()


@asynccontextmanager
async def writing(server: object) -> AsyncIterator[Writer]:
    conn = await RawConnection.open("127.0.0.1", server.port)  # type: ignore[attr-defined]
    await conn.login("writer")
    await conn.join("lobby")
    writer = Writer(conn)
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    try:
        yield writer
    finally:
        stop.set()
        await task
        await conn.close()


def copy_ids(path: Path) -> list[int]:
    """The message ids in a copy, read through the store (which migrates and opens it like a live database)."""
    store = HistoryStore(path)
    try:
        assert store.connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids: list[int] = []
        page = store.page(Scope.room("lobby"), after=0, limit=500)
        while page.messages:
            ids += [message.id for message in page.messages]
            page = store.page(Scope.room("lobby"), after=ids[-1], limit=500)
        return ids
    finally:
        store.close()


@pytest.mark.asyncio
async def test_a_backup_while_a_server_writes_is_the_snapshot_of_its_start(chat_server_process, tmp_path: Path) -> None:
    server = await chat_server_process()
    database = Path(server.config.history.database)
    dest = tmp_path / "copy.db"
    paused, resume = asyncio.Event(), threading.Event()
    loop = asyncio.get_running_loop()
    steps: list[int] = []

    def progress(done: int, total: int) -> None:  # on the backup's thread
        steps.append(done)
        if len(steps) == 1:
            loop.call_soon_threadsafe(paused.set)
            resume.wait(20)

    async with writing(server) as writer:
        await writer.until(300)
        acked_before = list(writer.acked)
        copying = asyncio.ensure_future(asyncio.to_thread(backup, database, dest, pages=1, progress=progress))
        await asyncio.wait_for(paused.wait(), 20)  # the snapshot is taken, one page is copied
        sent_at_pause = writer.sent
        await writer.until(len(writer.acked) + 100)  # the server goes on committing meanwhile
        resume.set()
        result = await asyncio.wait_for(copying, 60)
        acked = list(writer.acked)
    assert len(steps) > 10 and steps == sorted(steps), "copied step by step, never restarted"
    ids = copy_ids(dest)
    assert ids == acked[: len(ids)], "the copy holds a prefix of the acknowledged messages, without gaps"
    assert len(ids) >= len(acked_before), "every message acknowledged before the backup began is in it"
    assert len(ids) <= sent_at_pause, "nothing sent after the snapshot was taken is in it (the one in flight may be)"
    assert result.last_id == ids[-1]


async def run_cli(*args: str) -> tuple[int, str]:
    command = server_command()
    proc = await asyncio.create_subprocess_exec(
        *command, "backup", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


@pytest.mark.asyncio
async def test_chat_server_backup_copies_the_database_a_server_is_serving(chat_server_process, tmp_path: Path) -> None:
    server = await chat_server_process()
    dest = tmp_path / "copy.db"
    async with writing(server) as writer:
        await writer.until(200)
        acked_before = list(writer.acked)
        code, err = await run_cli(str(dest), "--config", str(server.folder / "config.toml"))
        await writer.until(len(writer.acked) + 20)  # still serving
    assert code == 0, err
    assert "last message id" in err
    ids = copy_ids(dest)
    assert ids[: len(acked_before)] == acked_before
    assert ids == writer.acked[: len(ids)]


@pytest.mark.asyncio
async def test_chat_server_backup_refuses_to_replace_a_file(tmp_path: Path) -> None:
    database = tmp_path / "chat.db"
    HistoryStore(database).close()
    dest = tmp_path / "exists.db"
    dest.write_bytes(b"precious")
    code, err = await run_cli(str(dest), "--database", str(database))
    assert code == 1 and "never replaces a file" in err
    assert dest.read_bytes() == b"precious"
    code, err = await run_cli(str(tmp_path / "new.db"), "--database", str(tmp_path / "missing.db"))
    assert code == 1 and "no database at" in err


def test_backup_refuses_what_it_cannot_copy(tmp_path: Path) -> None:
    with pytest.raises(BackupRefused, match="memory"):
        backup(":memory:", tmp_path / "x.db")
    with pytest.raises(BackupRefused, match="no database"):
        backup(tmp_path / "none.db", tmp_path / "x.db")
    HistoryStore(tmp_path / "chat.db").close()
    with pytest.raises(BackupRefused, match="exists"):
        backup(tmp_path / "chat.db", tmp_path / "chat.db")


def test_the_copy_is_one_file_and_no_part_file_is_left(tmp_path: Path) -> None:
    HistoryStore(tmp_path / "chat.db").close()
    result = backup(tmp_path / "chat.db", tmp_path / "copy.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.db", "copy.db"]
    db = sqlite3.connect(result.dest)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    db.close()
