"""/send and /get while they run: one guarded background task per transfer, its progress into the model, redraws
at most ten times a second, cancellation with Ctrl-C, and a notice that says how it ended.

Life of a transfer:

    /send PATH or /get FID --> Transfer in model.transfers (drawn in the status area) --> task waits for the client
      --> progress callbacks: Transfer.advance + a throttled redraw
      --> sent: the file's message shows in the conversation   /  saved: a notice with the local path
      --> refused or failed: a notice with the server's reason
      --> Ctrl-C (on an empty input line): the newest transfer's task is cancelled, a notice says what is kept
    and in every case the Transfer leaves model.transfers.

What a cancellation keeps comes from the library and the server: a cancelled upload stays on the server as a partial
upload of our identity (protocol.md 5.1, for `[files] resume_seconds`), and sending the same file again goes on from
where it stopped; a cancelled download keeps its bytes in `<name>.part`, and a /get of the same file into the same
folder goes on from them (`chat.tui.paths.download_target`). The protocol has no way to stop a download the server
is streaming: after a cancelled /get the server goes on sending the rest of the file, which the library drops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chat.client import ClientClosed, ClientError, ServerError
from chat.protocol.messages import FileInfo
from chat.tui.model import Conversation, Kind, LineKind
from chat.tui.paths import download_target, part_of
from chat.tui.render import human_size, short_fid
from chat.tui.transfers import Direction, Transfer

if TYPE_CHECKING:
    from chat.tui.controller import Controller

logger = logging.getLogger("chat.tui")

PROGRESS_REDRAW = 0.1  # seconds between redraws for progress callbacks: at most ten a second
TRANSFER_TICK = 1.0  # redraw interval while transfers run, so a stalled one shows its rate falling


class FileTransfers:
    """The running /send and /get of one app (module doc)."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.model = controller.model
        self.ui = controller.ui
        self._tasks: dict[Transfer, asyncio.Task[None]] = {}
        self._left_behind: dict[str, Path] = {}  # fid -> where a cancelled or failed /get left its `.part`
        self._redrawn_at = float("-inf")
        self._redraw: asyncio.TimerHandle | None = None
        self._ticking = False

    # --- starting ------------------------------------------------------------------------------------------------

    def send(self, path: Path, size: int, conversation: Conversation, *, room: str | None, to: str | None) -> None:
        """Upload the file at `path` (`size` bytes, already checked readable) to a room or a nick."""
        if any(t.direction is Direction.UP and t.where == str(path) for t in self.model.transfers):
            self.model.notice(f"{path} is being sent already", conversation, kind=LineKind.ERROR)
            return
        transfer = Transfer(Direction.UP, path.name, str(path), size)
        self._start(transfer, self._upload(transfer, path, conversation, room=room, to=to))

    def get(self, file: FileInfo | str, dest: Path, conversation: Conversation) -> None:
        """Download a file (a seen one, or a bare fid) into the folder or file path `dest`."""
        info = file if isinstance(file, FileInfo) else FileInfo(fid=file, name=file, size=0, sha256="")
        if any(t.direction is Direction.DOWN and t.fid == info.fid for t in self.model.transfers):
            self.model.notice(f"{info.name} is being downloaded already", conversation, kind=LineKind.ERROR)
            return
        busy = {Path(t.where) for t in self.model.transfers if t.direction is Direction.DOWN}
        try:
            target = download_target(dest, info.name, info.size, busy=busy, left_behind=self._left_behind.get(info.fid))
        except OSError as exc:
            self.model.notice(f"cannot save to {dest}: {exc.strerror or exc}", conversation, kind=LineKind.ERROR)
            return
        transfer = Transfer(
            Direction.DOWN, info.name, str(target.path), info.size, fid=info.fid, size_known=isinstance(file, FileInfo)
        )
        transfer.done = transfer.resumed_from = target.resume_from
        if target.resume_from:
            of = f" of {human_size(info.size)}" if info.size else ""
            self.model.notice(
                f"going on with {info.name} from {human_size(target.resume_from)}{of} in {part_of(target.path)}",
                conversation,
            )
        self._start(transfer, self._download(transfer, file, target.path, conversation))

    def _start(self, transfer: Transfer, job: Coroutine[Any, Any, None]) -> None:
        self.model.add_transfer(transfer)
        task = self.controller.spawn(job)
        self._tasks[transfer] = task
        task.add_done_callback(lambda _: self._ended(transfer, task))
        if not self._ticking:
            self._ticking = True
            self.controller.spawn(self._tick())
        self.ui.refresh()

    def _ended(self, transfer: Transfer, task: asyncio.Task[None]) -> None:
        """However a transfer ended: it leaves the status area; if the user cancelled it, say what is kept."""
        self.model.remove_transfer(transfer)
        self._tasks.pop(transfer, None)
        if task.cancelled() and transfer.cancelled:
            self._say_cancelled(transfer)
        self.ui.refresh()

    def _say_cancelled(self, transfer: Transfer) -> None:
        if transfer.direction is Direction.UP:
            # Progress counts what the server has read (chat.client.files.ReadProgress), not what the socket took.
            percent = int((transfer.fraction or 0.0) * 100)
            self.model.notice(
                f"cancelled sending {transfer.name} at {percent}%; /send it again to go on from where the server "
                "got to (it keeps the part for a while)"
            )
            return
        fid = transfer.fid or ""
        target = Path(transfer.where)
        self._left_behind[fid] = target
        self.model.notice(
            f"cancelled the download of {transfer.name}: {human_size(transfer.done)} kept in {part_of(target)}; "
            f"/get {short_fid(fid)} again goes on from there"
        )

    # --- running -------------------------------------------------------------------------------------------------

    async def _upload(
        self, transfer: Transfer, path: Path, conversation: Conversation, *, room: str | None, to: str | None
    ) -> None:
        name = path.name
        try:
            client = await self.controller.client_ready()
            message = await client.send_file(path, room=room, to=to, progress=self._progress(transfer))
        except ClientError as exc:  # before OSError: ConnectionLost is both
            self._failed(f"could not send {name}", exc, conversation)
            return
        except OSError as exc:
            self._failed(f"could not read {path}", exc, conversation)
            return
        if message.file is not None:  # else its echo, on its way as an event, shows it
            self.controller.handle(message)

    async def _download(
        self, transfer: Transfer, file: FileInfo | str, target: Path, conversation: Conversation
    ) -> None:
        fid = transfer.fid or ""
        name = transfer.name
        try:
            client = await self.controller.client_ready()
            saved = await client.get_file(file, target, progress=self._progress(transfer))
        except ClientError as exc:  # before OSError: ConnectionLost is both
            self._left_behind[fid] = target
            self._failed(f"could not download {name}", exc, conversation)
            return
        except OSError as exc:
            self._left_behind[fid] = target
            self._failed(f"could not save {name} as {target}", exc, conversation)
            return
        self._left_behind.pop(fid, None)
        size = human_size(max(transfer.total, transfer.done))
        self.model.notice(f"saved {name} ({size}) as {saved}", self._where(conversation))

    def _failed(self, what: str, exc: Exception, conversation: Conversation) -> None:
        if isinstance(exc, ServerError):
            reason = exc.message
        elif isinstance(exc, ClientClosed):
            reason = f"the connection ended ({exc.reason})"
        elif isinstance(exc, OSError) and exc.strerror:
            reason = exc.strerror
        else:
            reason = str(exc) or type(exc).__name__
        logger.info("%s: %s", what, reason)
        self.model.notice(f"{what}: {reason}", self._where(conversation), kind=LineKind.ERROR)

    def _where(self, conversation: Conversation) -> Conversation | None:
        """The conversation a transfer was started in, if it is still open (else the one shown)."""
        if conversation.kind is Kind.STATUS or conversation in self.model.conversations:
            return conversation
        return None

    # --- progress ------------------------------------------------------------------------------------------------

    def _progress(self, transfer: Transfer) -> Callable[[int, int], None]:
        def progress(done: int, total: int) -> None:
            transfer.advance(done, total, self.controller.monotonic())  # the clock the status area reads rates with
            self._redraw_soon()

        return progress

    def _redraw_soon(self) -> None:
        """Redraw now, or once PROGRESS_REDRAW after the last progress redraw: a burst of callbacks is one redraw,
        and the last one is always drawn."""
        if self._redraw is not None:
            return
        loop = asyncio.get_running_loop()
        wait = self._redrawn_at + PROGRESS_REDRAW - loop.time()
        if wait <= 0:
            self._redraw_now()
        else:
            self._redraw = loop.call_later(wait, self._redraw_now)

    def _redraw_now(self) -> None:
        self._redraw = None
        self._redrawn_at = asyncio.get_running_loop().time()
        self.ui.refresh()

    async def _tick(self) -> None:
        """Redraw every TRANSFER_TICK while transfers run, so rates and ETAs move even when no bytes do."""
        try:
            while self.model.transfers:
                await asyncio.sleep(TRANSFER_TICK)
                self.ui.refresh()
        finally:
            self._ticking = False

    # --- cancelling ----------------------------------------------------------------------------------------------

    def cancel_latest(self) -> Transfer | None:
        """Cancel the transfer started last that is still running (Ctrl-C); None if there is none."""
        for transfer in reversed(self.model.transfers):
            task = self._tasks.get(transfer)
            if transfer.cancelled or task is None or task.done():
                continue
            transfer.cancelled = True
            # On the next turn of the loop, so a task cancelled in the turn it was created in has started: its
            # coroutine then always ends through its own `finally` clauses (the library's close the files).
            asyncio.get_running_loop().call_soon(task.cancel)
            self.ui.refresh()
            return transfer
        return None
