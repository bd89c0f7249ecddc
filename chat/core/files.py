"""File transfer (PROTOCOL.md 5 and 8, Files): streamed uploads with resume, checked by size and SHA-256, and
downloads with backpressure.

Safety: a client's file name is a display name only. Data is written to `<directory>/.partial/<fid>` and moved to
`<directory>/<fid>`, where `fid` is 32 random hex digits chosen here, so no byte a client sends ever becomes part of
a path. Nothing reads or writes a whole file in memory: uploads are written chunk by chunk (at most 64 KiB each),
downloads read 64 KiB at a time and wait for the connection to drain before the next chunk, so a transfer shares
the connection with chat frames and never holds a room's fan-out.

Resume: a partial upload outlives its connection for `[files] resume_seconds`; an offer of the same size and
SHA-256 by the same identity goes on at the stored offset. Partial uploads live in memory: a server restart forgets
them and clears the partial folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from chat.config import Config
from chat.core.limits import ByteBudget
from chat.protocol import messages as wire
from chat.protocol.errors import ErrorCode, ProtocolViolation
from chat.protocol.names import file_display_name
from chat.store.history import FileRecord, StoredMessage, now_ms

if TYPE_CHECKING:
    from chat.core.service import ChatService, Target
    from chat.core.session import Session

logger = logging.getLogger(__name__)

DOWNLOAD_HIGH_WATER = 256 * 1024  # queued bytes above which a download waits for the connection to drain


@dataclass(eq=False)
class Upload:
    """A file being received: where its bytes go, how many came, their running hash, and who may continue it."""

    fid: str
    owner: int
    name: str
    size: int
    sha256: str
    target: Target
    path: Path
    session: Session | None
    written: int = 0
    hasher: Any = field(default_factory=hashlib.sha256)
    handle: BinaryIO | None = None
    detached_at: float = 0.0


class FileService:
    """Uploads and downloads of one server."""

    def __init__(self, service: ChatService, config: Config) -> None:
        self.service = service
        self.config = config.files
        self.directory = Path(self.config.directory)
        self.partial = self.directory / ".partial"
        self.uploads: dict[str, Upload] = {}
        self._downloads: dict[Session, dict[asyncio.Task[None], str]] = {}  # running streams and their fids
        self._budgets: dict[Session, ByteBudget] = {}

    def start(self) -> None:
        """Create the folders; partial uploads of an earlier run cannot be resumed, so their data goes."""
        self.directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True, exist_ok=True)

    # --- uploads -----------------------------------------------------------------------------------------------

    async def offer(self, session: Session, request: wire.FileOffer) -> None:
        """`file_offer` -> `file_ready` with the offset to send from (0, or where a resumed upload goes on)."""
        target = self.service.resolve_target(session, request.room, request.to, "file_offer")
        if request.size > self.config.max_bytes:
            raise ProtocolViolation(
                ErrorCode.FILE_TOO_LARGE, f"{request.size} bytes is over the limit of {self.config.max_bytes}"
            )
        name = file_display_name(request.name)
        upload = self._resumable(session, request)
        if upload is None:
            if await self._used() + request.size > self.config.quota_bytes:
                raise ProtocolViolation(ErrorCode.QUOTA_EXCEEDED, "the server's file storage is full")
            fid = secrets.token_hex(16)
            upload = Upload(
                fid, session.identity, name, request.size, request.sha256, target, self.partial / fid, session
            )
            upload.handle = await asyncio.to_thread(open, upload.path, "wb")  # held open across chunks
            self.uploads[fid] = upload
        else:
            upload.session, upload.target, upload.name = session, target, name
            upload.handle = await asyncio.to_thread(open, upload.path, "ab")
            logger.info("%r resumes upload %s at %d of %d bytes", session, upload.fid, upload.written, upload.size)
        session.send(wire.FileReady(fid=upload.fid, offset=upload.written, ref=request.ref))

    def _resumable(self, session: Session, request: wire.FileOffer) -> Upload | None:
        for upload in self.uploads.values():
            if (
                upload.owner == session.identity
                and upload.sha256 == request.sha256
                and upload.size == request.size
                and (upload.session is None or upload.session is session)
            ):
                return upload
        return None

    async def _used(self) -> int:
        return await self.service.store.files_size() + sum(upload.size for upload in self.uploads.values())

    def _upload_of(self, session: Session, fid: str) -> Upload:
        upload = self.uploads.get(fid)
        if upload is None or upload.session is not session:
            raise ProtocolViolation(ErrorCode.NO_SUCH_FILE, f"no upload {fid!r} on this connection")
        return upload

    def chunk(self, session: Session, request: wire.FileChunk, payload: bytes, now: float) -> None:
        """Write one chunk at the expected offset; no answer unless it is refused."""
        if len(payload) > wire.MAX_CHUNK:
            raise ProtocolViolation(ErrorCode.BAD_REQUEST, f"a chunk carries at most {wire.MAX_CHUNK} bytes")
        upload = self._upload_of(session, request.fid)
        if request.offset != upload.written:
            raise ProtocolViolation(
                ErrorCode.FILE_OFFSET, f"chunk at offset {request.offset}, the upload expects {upload.written}"
            )
        if upload.written + len(payload) > upload.size:
            self._discard(upload)
            raise ProtocolViolation(ErrorCode.FILE_TOO_LARGE, f"more data than the {upload.size} bytes offered")
        assert upload.handle is not None
        upload.handle.write(payload)
        upload.hasher.update(payload)
        upload.written += len(payload)
        pause = self._budget(session, now).spend(len(payload), now)
        if pause:
            session.peer.throttle(pause)

    async def done(self, session: Session, request: wire.FileDone) -> None:
        """Check size and SHA-256, store the file under its fid, announce it; `file_stored` answers."""
        upload = self._upload_of(session, request.fid)
        if upload.written != upload.size:
            raise ProtocolViolation(
                ErrorCode.FILE_CHECKSUM, f"got {upload.written} of {upload.size} bytes; send the rest first"
            )
        if upload.hasher.hexdigest() != upload.sha256:
            self._discard(upload)
            raise ProtocolViolation(ErrorCode.FILE_CHECKSUM, "the data does not match the offered sha256")
        self._close(upload)
        final = self.directory / upload.fid
        os.replace(upload.path, final)
        del self.uploads[upload.fid]
        record = FileRecord(
            fid=upload.fid,
            name=upload.name,
            size=upload.size,
            sha256=upload.sha256,
            owner=upload.owner,
            room_key=upload.target.room_key,
            recipient_identity=upload.target.recipient_identity,
            created=now_ms(),
        )
        await self.service.store.add_file(record)
        logger.info("%r stored file %s (%d bytes) as %r", session, upload.fid, upload.size, upload.name)

        def stored(message: StoredMessage) -> None:
            session.send(wire.FileStored(fid=record.fid, id=message.id, ref=request.ref))

        self.service.submit_message(
            session, upload.target, upload.name, None, request.ref, file=record, on_stored=stored
        )

    def _close(self, upload: Upload) -> None:
        if upload.handle is not None:
            upload.handle.close()
            upload.handle = None

    def _discard(self, upload: Upload) -> None:
        self._close(upload)
        self.uploads.pop(upload.fid, None)
        with contextlib.suppress(FileNotFoundError):
            upload.path.unlink()

    # --- downloads ---------------------------------------------------------------------------------------------

    async def get(self, session: Session, request: wire.FileGet) -> None:
        """Stream a stored file from `offset` as `file_chunk` frames, then `file_end`."""
        record = await self.service.store.file(request.fid)
        private = record is not None and record.room_key is None
        if record is None or (private and session.identity not in (record.owner, record.recipient_identity)):
            raise ProtocolViolation(ErrorCode.NO_SUCH_FILE, f"no file {request.fid!r}")
        if request.offset > record.size:
            raise ProtocolViolation(ErrorCode.FILE_OFFSET, f"offset {request.offset} is beyond the {record.size} bytes")
        self._stop_streams(session, record.fid)  # a new file_get of the same file replaces the older one
        task = asyncio.create_task(self._stream(session, record, request.offset, request.ref))
        tasks = self._downloads.setdefault(session, {})
        tasks[task] = record.fid
        task.add_done_callback(lambda done: tasks.pop(done, None))

    def cancel(self, session: Session, request: wire.FileCancel) -> None:
        """`file_cancel`: stop this connection's download of the file, or set its upload aside for a resume."""
        self._stop_streams(session, request.fid)
        upload = self.uploads.get(request.fid)
        if upload is not None and upload.session is session:
            self._close(upload)
            upload.session = None
            upload.detached_at = self.service.clock()
        session.send(wire.FileCancelled(fid=request.fid, ref=request.ref))

    def _stop_streams(self, session: Session, fid: str) -> None:
        for task, streaming in list(self._downloads.get(session, {}).items()):
            if streaming == fid:
                task.cancel()

    async def _stream(self, session: Session, record: FileRecord, offset: int, ref: str | int | None) -> None:
        loop = asyncio.get_running_loop()
        try:
            source = await asyncio.to_thread(open, self.directory / record.fid, "rb")
        except FileNotFoundError:
            session.send(wire.Error(code=ErrorCode.NO_SUCH_FILE.value, message=f"file {record.fid!r} is gone", ref=ref))
            return
        try:
            source.seek(offset)
            while session.open:
                data = await asyncio.to_thread(source.read, wire.MAX_CHUNK)  # a slow disk never stalls the loop
                if not data:
                    break
                session.send(wire.FileData(fid=record.fid, offset=offset, data=data))
                offset += len(data)
                if session.peer.pending_bytes > DOWNLOAD_HIGH_WATER:
                    await session.peer.drain()  # chat frames of this connection go out in between
                pause = self._budget(session, loop.time()).spend(len(data), loop.time())
                if pause:
                    await asyncio.sleep(pause)
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            source.close()
        if session.open:
            session.send(wire.FileEnd(fid=record.fid, sha256=record.sha256, size=record.size, ref=ref))

    def _budget(self, session: Session, now: float) -> ByteBudget:
        budget = self._budgets.get(session)
        if budget is None:
            budget = self._budgets[session] = ByteBudget(self.config.bytes_per_second, now)
        return budget

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def connection_lost(self, session: Session, now: float) -> None:
        """Keep this connection's partial uploads for a resume; stop its downloads."""
        for upload in self.uploads.values():
            if upload.session is session:
                self._close(upload)
                upload.session = None
                upload.detached_at = now
        for task in self._downloads.pop(session, {}):
            task.cancel()
        self._budgets.pop(session, None)

    def sweep(self, now: float) -> None:
        """Drop partial uploads whose resume window has passed."""
        for upload in list(self.uploads.values()):
            if upload.session is None and now - upload.detached_at > self.config.resume_seconds:
                logger.info("partial upload %s expired after %d of %d bytes", upload.fid, upload.written, upload.size)
                self._discard(upload)

    def remove_stored(self, fids: list[str]) -> None:
        """Delete the data of files the store has forgotten (retention)."""
        for fid in fids:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / fid).unlink()

    def close(self) -> None:
        for upload in self.uploads.values():
            self._close(upload)
        for tasks in self._downloads.values():
            for task in tasks:
                task.cancel()
