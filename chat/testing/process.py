"""The real `chat-server` executable in a child process, for crash, signal and restart tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from chat.config import Config, config_with
from chat.testing.config import config_toml
from chat.testing.servers import ExternalTarget, Workspace, _skip, check_factory_loop

# The line the CLI prints on stderr once both ports are bound (README, "Configuration").
LISTENING = re.compile(r"listening on tcp://(?P<host>\[[^\]]+\]|[^\s:]+):(?P<port>\d+) udp://\S+:(?P<udp>\d+)")
OUTPUT_LINES = 2000


def server_command() -> list[str]:
    """How to run `chat-server` with this interpreter: its script next to it, else `python -m chat.cli`."""
    script = Path(sys.executable).parent / ("chat-server.exe" if sys.platform == "win32" else "chat-server")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "chat.cli"]


class ServerProcess:
    """`chat-server` in a child process: `.host`, `.port`, `.udp_port`, `.config`, `.pid`, `.output` (stderr).

    `kill()` (SIGKILL, a crash) and `terminate()` (SIGTERM, a graceful shutdown) only send the signal; `await
    wait()` for the exit code. `await restart()` stops it gracefully if it still runs, then starts it again on the
    same configuration, database and ports.
    """

    def __init__(
        self, config: Config, folder: Path, *, command: Sequence[str] | None = None, start_timeout: float = 20.0
    ) -> None:
        self.config = config
        self.folder = folder
        self.command = list(command) if command is not None else server_command()
        self.start_timeout = start_timeout
        self.host = config.server.host
        self.port = config.server.port
        self.udp_port = config.server.udp_port
        self.output: deque[str] = deque(maxlen=OUTPUT_LINES)
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.returncode}"
        return f"<ServerProcess pid={self.pid} {self.host}:{self.port} {state}>"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once it has exited (and been waited for), negative for a signal."""
        return None if self._proc is None else self._proc.returncode

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> ServerProcess:
        """Start it and wait for its listening line; AssertionError with its output if it exits or hangs first."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        path = self.folder / "config.toml"
        path.write_text(config_toml(self.config), encoding="utf-8")
        env = {name: value for name, value in os.environ.items() if not name.startswith("CHAT_")}
        self.output.append(f"--- starting {' '.join(self.command)} --config {path}\n")
        proc = await asyncio.create_subprocess_exec(
            *self.command, "--config", str(path),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            cwd=str(self.folder), env=env,
        )  # fmt: skip
        self._proc = proc
        try:
            match = await asyncio.wait_for(self._read_until_listening(proc), self.start_timeout)
        except BaseException as exc:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            if isinstance(exc, TimeoutError):
                problem = f"chat-server did not listen within {self.start_timeout:g} s:\n{self.log()}"
                raise AssertionError(problem) from None
            raise
        self.host = match["host"].strip("[]")
        self.port, self.udp_port = int(match["port"]), int(match["udp"])
        self.config = config_with(self.config, server={"port": self.port, "udp_port": self.udp_port})
        self._reader = asyncio.create_task(self._collect(proc), name=f"chat-server {proc.pid} stderr")
        return self

    async def _read_until_listening(self, proc: asyncio.subprocess.Process) -> re.Match[str]:
        assert proc.stderr is not None
        while line := (await proc.stderr.readline()).decode(errors="replace"):
            self.output.append(line)
            if match := LISTENING.search(line):
                return match
        await proc.wait()
        raise AssertionError(f"chat-server exited with {proc.returncode} before listening:\n{self.log()}")

    async def _collect(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            self.output.append(line.decode(errors="replace"))

    def log(self, lines: int = 40) -> str:
        """The last `lines` lines of its stderr."""
        return "".join(list(self.output)[-lines:])

    def send_signal(self, signum: int) -> None:
        if self.running:
            assert self._proc is not None
            self._proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed or told to anyone."""
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM: the graceful shutdown (clients told `server_shutdown`, history committed, exit 0)."""
        self.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = 10.0) -> int:
        """The exit code; TimeoutError if it has not exited within `timeout` seconds."""
        if self._proc is None:
            raise RuntimeError(f"{self!r} was never started")
        code = await asyncio.wait_for(self._proc.wait(), timeout)
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._reader, 1.0)  # the last lines of its output
        return code

    async def restart(self) -> None:
        """Stop it gracefully if it runs, then start it again on the same config, database and ports."""
        await self.stop()
        await self.start()

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, and SIGKILL if it has not exited after `timeout` seconds."""
        if self.running:
            self.terminate()
            try:
                await self.wait(timeout)
            except TimeoutError:
                self.kill()
                await self.wait(timeout)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None


class ProcessFactory:
    """`await chat_server_process(**sections)`: a started `ServerProcess`; `aclose()` stops them, newest first."""

    def __init__(
        self,
        config: Config,
        workspace: Workspace,
        *,
        external: ExternalTarget | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        self.config = config
        self.workspace = workspace
        self.external = external
        self.command = command
        self.processes: list[ServerProcess] = []
        self._loop = asyncio.get_running_loop()

    async def __call__(self, **sections: Mapping[str, Any]) -> ServerProcess:
        check_factory_loop(self._loop, "chat_server_process")
        if self.external is not None:
            _skip(f"needs its own chat-server process, and --chat-server={self.external.host}:{self.external.port}")
        config, folder = self.workspace.allocate(self.config, sections)
        process = ServerProcess(config, folder, command=self.command)
        self.processes.append(process)
        await process.start()
        return process

    async def aclose(self) -> None:
        errors: list[BaseException] = []
        for process in reversed(self.processes):
            try:
                await process.stop()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
