"""File transfer for the client library: streamed, resumable uploads and downloads (docs/protocol.md 5).

Nothing holds a whole file in memory: the SHA-256 is computed reading 64 KiB at a time, uploads send 64 KiB chunks
(waiting on the connection's buffer, not on a reply per chunk), downloads write each chunk as it arrives into
`<name>.part` beside the destination. An upload's progress is the bytes the server has read, not those handed to
the socket (`ReadProgress`). A lost connection is resumed: an upload is offered again and goes on from the offset
the server has, a download asks again from the bytes it already holds. The file's name from a message is
a display name: `safe_file_name` makes a local name of it that cannot leave the destination folder, and a
download never overwrites an existing file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from chat.client.errors import ConnectionLost, ServerError
from chat.protocol.errors import ErrorCode
from chat.protocol.messages import (
    MAX_CHUNK,
    FileCancel,
    FileChunk,
    FileData,
    FileDone,
    FileEnd,
    FileGet,
    FileInfo,
    FileOffer,
    FileReady,
    FileStored,
    Message,
    Ping,
    ServerFrame,
)
from chat.protocol.names import file_display_name

if TYPE_CHECKING:
    from chat.client.client import Client

Progress = Callable[[int, int], None]  # (bytes done, total bytes)
PROBE_EVERY = 0.5  # seconds between the pings that learn how far the server has read an upload
MAX_PROBES = 4  # such pings of one upload in flight at once (each costs a rate-limit token: docs/protocol.md 1.8)
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)
_UNSAFE = re.compile(r'[<>:"/\\|?*]')
MAX_LOCAL_NAME_BYTES = 200


def safe_file_name(display_name: str) -> str:
    """A local file name for a display name: one path component, no separators or characters that are special on
    some system, not a reserved device name (`CON`), at most 200 bytes of UTF-8."""
    name = _UNSAFE.sub("_", file_display_name(display_name))
    if _RESERVED.match(name):
        name = "_" + name
    while len(name.encode("utf-8")) > MAX_LOCAL_NAME_BYTES:
        stem, dot, suffix = name.rpartition(".")
        name = (stem[:-1] + dot + suffix) if dot and len(suffix) < 16 and stem else name[:-1]
    return name or "file"


def unused_path(folder: Path, name: str) -> Path:
    """`folder/name`, or `folder/name (1).ext`, `(2)`, ... whichever does not exist yet."""
    candidate = folder / name
    stem, suffix = candidate.stem, candidate.suffix
    number = 1
    while candidate.exists() or candidate.with_name(candidate.name + ".part").exists():
        candidate = folder / f"{stem} ({number}){suffix}"
        number += 1
    return candidate


async def file_digest(path: Path, upto: int | None = None) -> tuple[int, str]:
    """(size, sha256 hex) of a file, or of its first `upto` bytes, read 64 KiB at a time off the event loop."""

    def digest() -> tuple[int, str]:
        hasher = hashlib.sha256()
        size = 0
        with open(path, "rb") as source:
            while upto is None or size < upto:
                block = source.read(MAX_CHUNK if upto is None else min(MAX_CHUNK, upto - size))
                if not block:
                    break
                hasher.update(block)
                size += len(block)
        return size, hasher.hexdigest()

    return await asyncio.to_thread(digest)


@dataclass(eq=False)
class Download:
    """A download in progress: where its bytes go, and the future that `file_end` (or an error) settles."""

    fid: str
    part: Path
    handle: BinaryIO
    hasher: Any
    received: int
    progress: Progress | None
    total: int = 0
    done: asyncio.Future[FileEnd] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class ReadProgress:
    """How far the server has read an upload, learned without waiting for it: the server handles a connection's
    frames in order (docs/protocol.md 1.9), so the `pong` to a `ping` sent after a chunk comes once it has read that
    chunk, and reports the bytes before it. Bytes handed to the socket are no progress: the socket buffers of both
    ends take megabytes at once, far more than a server reading at `[files] bytes_per_second` has read (the rate
    shown would be that of the buffers filling)."""

    def __init__(self, client: Client, connection: Any, size: int, progress: Progress | None) -> None:
        self.client = client
        self.connection = connection
        self.size = size
        self.progress = progress
        self.reported = -1
        self.in_flight = 0
        self.probed_at = float("-inf")
        self.loop = asyncio.get_running_loop()

    def report(self, done: int) -> None:
        """The server holds `done` bytes of the upload (said by the server: its offset, or a probe's answer)."""
        if self.progress is not None and done > self.reported:
            self.reported = done
            self.progress(done, self.size)

    def sent(self, offset: int, *, last: bool = False) -> None:
        """`offset` bytes are handed to the socket: probe, at most every PROBE_EVERY seconds, and after the last."""
        if self.progress is None or offset <= self.reported:
            return
        now = self.loop.time()
        if not last and (self.in_flight >= MAX_PROBES or now - self.probed_at < PROBE_EVERY):
            return
        self.probed_at = now
        self.in_flight += 1
        future = self.connection.request(Ping(ref=self.client._next_ref()), lambda _: self.report(offset))
        future.add_done_callback(self._answered)

    def _answered(self, future: asyncio.Future[ServerFrame]) -> None:
        self.in_flight -= 1
        if not future.cancelled():
            future.exception()  # a lost connection or `rate_limited`: this probe tells nothing, the next may


class FileTransfers:
    """The client's uploads and downloads; `Client.send_file` and `Client.get_file` delegate here."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.downloads: dict[str, Download] = {}
        self.upload_errors: dict[str, ServerError | None] = {}  # chunk refusals, by the upload's chunk ref
        self.announced: dict[str, Message | None] = {}  # fid -> the message announcing one of our uploads

    # --- frames from the connection ----------------------------------------------------------------------------

    def on_frame(self, frame: ServerFrame) -> bool:
        """Take a frame that belongs to a transfer; True if it did."""
        if isinstance(frame, FileData):
            download = self.downloads.get(frame.fid)
            if download is not None and frame.offset == download.received:
                download.handle.write(frame.data)
                download.hasher.update(frame.data)
                download.received += len(frame.data)
                if download.progress is not None:
                    download.progress(download.received, download.total)
            return True
        if isinstance(frame, Message) and frame.file is not None and frame.file.fid in self.announced:
            self.announced[frame.file.fid] = frame
        return False

    def chunk_refused(self, ref: object, error: ServerError) -> bool:
        """An error answering one of our chunks (they carry the upload's ref); True if it was one."""
        if isinstance(ref, str) and ref in self.upload_errors:
            self.upload_errors[ref] = error
            return True
        return False

    # --- upload ------------------------------------------------------------------------------------------------

    async def send_file(
        self,
        path: str | os.PathLike[str],
        *,
        room: str | None,
        to: str | None,
        name: str | None,
        progress: Progress | None,
    ) -> Message:
        source = Path(path)
        size, sha256 = await file_digest(source)
        display = name or source.name
        chunk_ref = f"upload-{sha256[:16]}-{id(source)}"
        offset_retries = 0
        fid: str | None = None
        while True:
            connection = await self.client._wait_ready()
            try:
                ready = await connection.request(
                    FileOffer(room=room, to=to, name=display, size=size, sha256=sha256, ref=self.client._next_ref())
                )
                if not isinstance(ready, FileReady):
                    raise ServerError(ErrorCode.BAD_REQUEST, f"unexpected {ready.type} to file_offer")
                fid = ready.fid
                self.announced[ready.fid] = None
                self.upload_errors[chunk_ref] = None
                read = ReadProgress(self.client, connection, size, progress)
                read.report(ready.offset)  # what the server holds already
                await self._send_chunks(connection, source, ready.fid, ready.offset, size, chunk_ref, read)
                stored = await connection.request(FileDone(fid=ready.fid, ref=self.client._next_ref()))
                if not isinstance(stored, FileStored):
                    raise ServerError(ErrorCode.BAD_REQUEST, f"unexpected {stored.type} to file_done")
                read.report(size)  # stored: every byte was read, whatever became of the probes
                message = self.announced.pop(ready.fid, None)
                if message is None or message.id != stored.id:  # not echoed to us: rebuild it from the reply
                    message = Message(id=stored.id, room=room, to=to, sender=self.client.nick, text=display, ts=0)
                return message
            except ConnectionLost:
                if self.client._closed is not None:
                    raise self.client._closed from None
                continue  # the next offer resumes where the server got to
            except asyncio.CancelledError:
                if fid is not None:
                    self._cancel_remote(fid)  # the server keeps the partial upload for a later resume
                raise
            except ServerError as exc:
                if exc.code == ErrorCode.FILE_OFFSET and offset_retries < 3:
                    offset_retries += 1
                    continue  # out of step with the server: offer again to learn its offset
                raise
            finally:
                self.upload_errors.pop(chunk_ref, None)

    async def _send_chunks(
        self, connection: Any, source: Path, fid: str, offset: int, size: int, ref: str, read: ReadProgress
    ) -> None:
        handle = await asyncio.to_thread(open, source, "rb")
        try:
            handle.seek(offset)
            while offset < size:
                data = await asyncio.to_thread(handle.read, MAX_CHUNK)
                if not data:
                    raise ServerError(ErrorCode.FILE_CHECKSUM, f"{source} shrank while it was being sent (sha256)")
                connection.send(FileChunk(fid=fid, offset=offset, ref=ref), data)
                offset += len(data)
                await connection.drain()
                refused = self.upload_errors.get(ref)
                if refused is not None:
                    raise refused
                read.sent(offset, last=offset >= size)
        finally:
            handle.close()

    # --- download ----------------------------------------------------------------------------------------------

    async def get_file(self, file: str | FileInfo, dest: str | os.PathLike[str], progress: Progress | None) -> Path:
        fid, name, size = (file, file, 0) if isinstance(file, str) else (file.fid, file.name, file.size)
        target, part, received, hasher = await asyncio.to_thread(_prepare_download, Path(dest), name)
        handle = await asyncio.to_thread(open, part, "ab")
        download = Download(fid, part, handle, hasher, received, progress, total=size)
        self.downloads[fid] = download
        try:
            while True:
                connection = await self.client._wait_ready()
                try:
                    end = await connection.request(
                        FileGet(fid=fid, offset=download.received, ref=self.client._next_ref())
                    )
                except ConnectionLost:
                    if self.client._closed is not None:
                        raise self.client._closed from None
                    continue  # ask again from what we hold
                except asyncio.CancelledError:
                    self._cancel_remote(fid)  # stop the stream; the .part stays for a later resume
                    raise
                if not isinstance(end, FileEnd):
                    raise ServerError(ErrorCode.BAD_REQUEST, f"unexpected {end.type} to file_get")
                handle.close()
                if download.received != end.size or download.hasher.hexdigest() != end.sha256:
                    await asyncio.to_thread(part.unlink, True)
                    raise ServerError(ErrorCode.FILE_CHECKSUM, f"the download of {fid} does not match its sha256")
                return await asyncio.to_thread(_finish_download, part, target)
        finally:
            handle.close()
            self.downloads.pop(fid, None)

    def _cancel_remote(self, fid: str) -> None:
        """Tell the server to stop streaming `fid` to us, or to set our upload of it aside (best effort)."""
        connection = self.client._connection
        if connection is not None and not connection.closed:
            with contextlib.suppress(ConnectionLost):
                connection.send(FileCancel(fid=fid, ref=self.client._next_ref()))


def _prepare_download(dest: Path, name: str) -> tuple[Path, Path, int, Any]:
    """Where a download goes (a safe, unused name in a folder, or the path given), its `.part` file, the bytes
    already there from an earlier attempt, and their running hash."""
    target = unused_path(dest, safe_file_name(name)) if dest.is_dir() else dest
    part = target.with_name(target.name + ".part")
    hasher = hashlib.sha256()
    received = 0
    if part.exists():
        with open(part, "rb") as source:
            while block := source.read(MAX_CHUNK):
                hasher.update(block)
                received += len(block)
    return target, part, received, hasher


def _finish_download(part: Path, target: Path) -> Path:
    """Move a checked download into place, never over an existing file."""
    final = target if not target.exists() else unused_path(target.parent, target.name)
    os.replace(part, final)
    return final
