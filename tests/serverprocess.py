"""The real `chat-server` executable as a subprocess, for signal, crash and memory tests."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

LISTENING = re.compile(r"listening on tcp://(?P<host>[^\s]+):(?P<port>\d+) udp://[^\s]+:(?P<udp>\d+)")


class ServerProcess:
    """A `chat-server` child started with a config file written for the test."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, udp_port: int, stderr_lines: list[str]) -> None:
        self.proc = proc
        self.port = port
        self.udp_port = udp_port
        self.stderr_lines = stderr_lines
        self._drain = asyncio.create_task(self._collect())

    @classmethod
    async def start(cls, workdir: Path, config: str, timeout: float = 20.0) -> ServerProcess:
        path = workdir / "config.toml"
        path.write_text(config, encoding="utf-8")
        executable = Path(sys.executable).parent / "chat-server"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        proc = await asyncio.create_subprocess_exec(
            str(executable), "--config", str(path), "--host", "127.0.0.1", "--port", "0", "--udp-port", "0",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            cwd=str(workdir), env=env,
        )  # fmt: skip
        assert proc.stderr is not None
        lines: list[str] = []

        async def wait_listening() -> re.Match[str]:
            assert proc.stderr is not None
            while line := (await proc.stderr.readline()).decode(errors="replace"):
                lines.append(line)
                if match := LISTENING.search(line):
                    return match
            raise AssertionError(f"chat-server exited before listening: {''.join(lines)}")

        try:
            match = await asyncio.wait_for(wait_listening(), timeout)
        except BaseException:
            proc.kill()
            await proc.wait()
            raise
        return cls(proc, int(match["port"]), int(match["udp"]), lines)

    async def _collect(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.stderr_lines.append(line.decode(errors="replace"))

    def rss_bytes(self) -> int:
        """Resident memory of the server process."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(kib) * 1024

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def stop(self) -> None:
        """Kill it if it still runs (by PID: it is our own child)."""
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._drain.cancel()
