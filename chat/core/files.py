"""File transfer (docs/protocol.md 5 and 8, Files): streamed uploads with resume, checked by size and SHA-256, and
downloads with backpressure.

Safety: a client's file name is a display name only. Data is written to `<directory>/.partial/<fid>` and moved to
`<directory>/<fid>`, where `fid` is 32 random hex digits chosen here, so no byte a client sends ever becomes part of
a path. Nothing reads or writes a whole file in memory: uploads are written chunk by chunk (at most 64 KiB each),
downloads read 64 KiB at a time and wait for the connection to drain before the next chunk, so a transfer shares
the connection with chat frames and never holds a room's fan-out.

Resume: a partial upload outlives its connection for `[files] resume_seconds`; an offer of the same size and
SHA-256 by the same identity goes on at the stored offset. Partial uploads live in memory: a server restart forgets
them and clears the partial folder.

Invariants that keep one client from exhausting the server (docs/security.md, "File uploads"):
- An offer costs nothing but a small record: no file exists and no descriptor is open until the first chunk, and a
  partial file's descriptor is open only during the loop turn that writes to it (`_fd`, closed by `_close_fds` at
  the end of the turn). So descriptors held for uploads never exceed the connections that sent a chunk this turn.
- The quotas count bytes received, never declared sizes: stored files plus the bytes partial uploads hold, in total
  (`quota_bytes`) and per identity (`quota_bytes_per_identity`). A declared size is only compared with what is left,
  so an offer that could never fit is refused up front, but it reserves nothing.
- An identity has at most `max_open_uploads_per_identity` uploads; to make room for a new one, its oldest upload
  kept for a resume is dropped; only when all of them are live on its connection is the offer refused.
- An upload that received nothing is dropped when set aside (nothing to resume), and a live upload idle for
  `upload_idle_seconds` is set aside, so dead offers do not pile up.
- The operating system running out of descriptors or disk (`EXHAUSTION_ERRNOS`) answers `resource_exhausted` with
  the upload unchanged (a short write is cut back), and is logged at most once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chat.config import Config
from chat.core.limits import ByteBudget
from chat.protocol import messages as wire
from chat.protocol.errors import ErrorCode, ProtocolViolation
from chat.protocol.names import file_display_name
from chat.store.errors import FilesUnavailable
from chat.store.history import FileRecord, StoredMessage, now_ms

if TYPE_CHECKING:
    from chat.core.service import ChatService, Target
    from chat.core.session import Session

logger = logging.getLogger(__name__)

DOWNLOAD_HIGH_WATER = 256 * 1024  # queued bytes above which a download waits for the connection to drain
# What the operating system says when it is out of what a file needs: answered with resource_exhausted.
EXHAUSTION_ERRNOS = {
    errno.EMFILE: "file descriptors",
    errno.ENFILE: "file descriptors (system-wide)",
    errno.ENOSPC: "disk space",
    errno.EDQUOT: "disk quota",
}
EXHAUSTION_LOG_SECONDS = 60.0  # at most one log line per this many seconds while the refusals go on
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


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
    fd: int | None = None  # open only within the loop turn that wrote to it
    active_at: float = 0.0  # loop time of the offer or of the last chunk
    detached_at: float = 0.0


class FileService:
    """Uploads and downloads of one server."""

    def __init__(self, service: ChatService, config: Config) -> None:
        self.service = service
        self.config = config.files
        self.directory = Path(self.config.directory)
        self.partial = self.directory / ".partial"
        self.uploads: dict[str, Upload] = {}
        self._by_owner: dict[int, dict[str, Upload]] = {}
        # Bytes received by partial uploads, and of stored files as last read from the store (refreshed at every new
        # offer, added to at every file_done; retention only makes it high until the next offer). An owner with
        # uploads always has an entry in both per-identity dicts.
        self._partial_total = 0
        self._partial_by_owner: dict[int, int] = {}
        self._stored_total = 0
        self._stored_by_owner: dict[int, int] = {}
        self._open_fds: list[Upload] = []
        self._downloads: dict[Session, dict[asyncio.Task[None], str]] = {}  # running streams and their fids
        self._budgets: dict[Session, ByteBudget] = {}
        self._exhaustion_logged = -EXHAUSTION_LOG_SECONDS
        self._exhaustion_unlogged = 0

    def start(self) -> None:
        """Create the folders and prove they take a file; partial uploads of an earlier run cannot be resumed, so
        their data goes. FilesUnavailable names the folder when the operating system refuses (a clear start-up
        line rather than a failed upload later)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(self.partial, ignore_errors=True)
            self.partial.mkdir(parents=True, exist_ok=True)
            descriptor, probe = tempfile.mkstemp(dir=self.partial, prefix="probe-")
            os.close(descriptor)
            os.unlink(probe)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise FilesUnavailable(f"cannot use the files folder {self.directory}: {reason}") from None

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
            stored_total = await self.service.store.files_size()
            stored_mine = await self.service.store.files_size(session.identity)
            upload = self._resumable(session, request)  # an offer of the same file may have run meanwhile
            if upload is None:  # nothing awaited from here on: the checks and the registration happen together
                upload = self._new_upload(session, request, target, name, stored_total, stored_mine)
        if upload.written:
            logger.info("%r resumes upload %s at %d of %d bytes", session, upload.fid, upload.written, upload.size)
        upload.session, upload.target, upload.name = session, target, name
        upload.active_at = self.service.clock()
        session.send(wire.FileReady(fid=upload.fid, offset=upload.written, ref=request.ref))

    def _new_upload(
        self, session: Session, request: wire.FileOffer, target: Target, name: str, stored_total: int, stored_mine: int
    ) -> Upload:
        """Check the quotas and the cap, then register a new upload; no file is made until its first chunk."""
        owner = session.identity
        self._stored_total = stored_total
        self._check_quota(owner, request.size, stored_mine)
        self._make_room(owner)
        fid = secrets.token_hex(16)
        upload = Upload(fid, owner, name, request.size, request.sha256, target, self.partial / fid, session)
        self.uploads[fid] = upload
        self._by_owner.setdefault(owner, {})[fid] = upload
        self._partial_by_owner.setdefault(owner, 0)
        self._stored_by_owner[owner] = stored_mine
        return upload

    def _resumable(self, session: Session, request: wire.FileOffer) -> Upload | None:
        for upload in self._by_owner.get(session.identity, {}).values():
            if (
                upload.sha256 == request.sha256
                and upload.size == request.size
                and (upload.session is None or upload.session is session)
            ):
                return upload
        return None

    def _check_quota(self, owner: int, count: int, stored_mine: int | None = None) -> None:
        """Refuse `count` more bytes for `owner` if they would not fit (docs/protocol.md 5.1: bytes received count)."""
        quota = self.config.quota_bytes
        used = self._stored_total + self._partial_total
        if used + count > quota:
            raise ProtocolViolation(
                ErrorCode.QUOTA_EXCEEDED, f"the server's file storage is full: {used} of {quota} bytes used"
            )
        quota = self.config.quota_bytes_per_identity
        if stored_mine is None:
            stored_mine = self._stored_by_owner[owner]
        used = stored_mine + self._partial_by_owner.get(owner, 0)
        if quota and used + count > quota:
            raise ProtocolViolation(
                ErrorCode.QUOTA_EXCEEDED, f"this identity's files are full: {used} of its {quota} bytes used"
            )

    def _make_room(self, owner: int) -> None:
        """Keep `owner` under its cap of uploads: drop its oldest one kept for a resume, or refuse the offer."""
        cap = self.config.max_open_uploads_per_identity
        mine = self._by_owner.get(owner, {})
        if not cap or len(mine) < cap:
            return
        kept = [upload for upload in mine.values() if upload.session is None]
        if not kept:
            raise ProtocolViolation(
                ErrorCode.TOO_MANY_UPLOADS, f"{len(mine)} uploads are open, the limit is {cap}: finish or cancel one"
            )
        oldest = min(kept, key=lambda upload: upload.detached_at)
        logger.info("partial upload %s dropped to make room for a new upload of its identity", oldest.fid)
        self._discard(oldest)

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
        upload.active_at = now
        self._check_quota(upload.owner, len(payload))  # refused: the upload stays open at its offset
        self._write(upload, payload)
        upload.hasher.update(payload)
        upload.written += len(payload)
        self._partial_total += len(payload)
        self._partial_by_owner[upload.owner] += len(payload)
        pause = self._budget(session, now).spend(len(payload), now)
        if pause:
            session.peer.throttle(pause)

    def _write(self, upload: Upload, payload: bytes) -> None:
        """All of `payload` at the upload's offset, or nothing: a short write is cut back before the error."""
        try:
            fd = self._fd(upload)
            view, offset = memoryview(payload), upload.written
            try:
                while view:
                    count = os.pwrite(fd, view, offset)
                    view, offset = view[count:], offset + count
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, upload.written)
                raise
        except OSError as exc:
            raise self._exhausted(exc, f"upload {upload.fid}") from None

    def _fd(self, upload: Upload) -> int:
        """The partial file's descriptor, opened for this loop turn only (the module docstring says why)."""
        if upload.fd is None:
            upload.fd = os.open(upload.path, _WRITE_FLAGS, 0o666)
            if not self._open_fds:
                asyncio.get_running_loop().call_soon(self._close_fds)  # after the frames read this turn
            self._open_fds.append(upload)
        return upload.fd

    def _close_fds(self) -> None:
        for upload in self._open_fds:
            self._close(upload)
        self._open_fds.clear()

    def _exhausted(self, exc: OSError, what: str) -> Exception:
        """`resource_exhausted` for the OS running out of descriptors or disk (logged at most once a minute);
        any other OSError is returned as it is, a failure of the server."""
        resource = EXHAUSTION_ERRNOS.get(exc.errno or 0)
        if resource is None:
            return exc
        now = self.service.clock()
        if now - self._exhaustion_logged >= EXHAUSTION_LOG_SECONDS:
            more = f"; {self._exhaustion_unlogged} more since the last report" if self._exhaustion_unlogged else ""
            logger.warning("out of %s: %s refused with resource_exhausted (%s)%s", resource, what, exc.strerror, more)
            self._exhaustion_logged, self._exhaustion_unlogged = now, 0
        else:
            self._exhaustion_unlogged += 1
        return ProtocolViolation(ErrorCode.RESOURCE_EXHAUSTED, f"the server is out of {resource}; try again later")

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
        try:
            if upload.written == 0:  # no chunk made the file
                os.close(os.open(upload.path, _WRITE_FLAGS, 0o666))
            os.replace(upload.path, final)
        except OSError as exc:
            raise self._exhausted(exc, f"file_done of {upload.fid}") from None
        self._stored_total += upload.size
        self._stored_by_owner[upload.owner] += upload.size
        self._forget(upload)
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
        if upload.fd is not None:
            os.close(upload.fd)
            upload.fd = None

    def _set_aside(self, upload: Upload, now: float) -> None:
        """Detach an upload from its connection, kept for a resume; one that received nothing has nothing to keep."""
        self._close(upload)
        if upload.written == 0:
            self._discard(upload)
            return
        upload.session = None
        upload.detached_at = now

    def _forget(self, upload: Upload) -> None:
        """Take an upload out of the books (its data is stored or discarded)."""
        self._close(upload)
        if self.uploads.pop(upload.fid, None) is None:
            return
        owner = upload.owner
        self._partial_total -= upload.written
        self._partial_by_owner[owner] -= upload.written
        mine = self._by_owner[owner]
        del mine[upload.fid]
        if not mine:
            del self._by_owner[owner], self._partial_by_owner[owner], self._stored_by_owner[owner]

    def _discard(self, upload: Upload) -> None:
        self._forget(upload)
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
            self._set_aside(upload, self.service.clock())
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
        except OSError as exc:
            refusal = self._exhausted(exc, f"download of {record.fid}")
            if not isinstance(refusal, ProtocolViolation):
                raise
            session.send(wire.Error(code=refusal.code.value, message=refusal.message, ref=ref))
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
        for upload in list(self._by_owner.get(session.identity, {}).values()):
            if upload.session is session:
                self._set_aside(upload, now)
        for task in self._downloads.pop(session, {}):
            task.cancel()
        self._budgets.pop(session, None)

    def sweep(self, now: float) -> None:
        """Drop partial uploads whose resume window has passed; set aside live ones idle for too long."""
        idle, keep = self.config.upload_idle_seconds, self.config.resume_seconds
        for upload in list(self.uploads.values()):
            if upload.session is None:
                if now - upload.detached_at > keep:
                    logger.info(
                        "partial upload %s expired after %d of %d bytes", upload.fid, upload.written, upload.size
                    )
                    self._discard(upload)
            elif now - upload.active_at > idle:
                logger.info("upload %s idle for %g s: set aside at %d bytes", upload.fid, idle, upload.written)
                self._set_aside(upload, now)

    def remove_stored(self, fids: list[str]) -> None:
        """Delete the data of files the store has forgotten (retention)."""
        for fid in fids:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / fid).unlink()

    def close(self) -> None:
        self._close_fds()
        for tasks in self._downloads.values():
            for task in tasks:
                task.cancel()
