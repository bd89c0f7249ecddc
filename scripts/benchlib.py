"""Shared pieces of the benchmarks: start a real `chat-server` process on loopback, read its memory, percentiles."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

LISTENING = re.compile(r"listening on tcp://(?P<host>[^\s]+):(?P<port>\d+) udp://[^\s]+:(?P<udp>\d+)")


@dataclass
class BenchServer:
    """A chat-server child process started for one benchmark run."""

    proc: asyncio.subprocess.Process
    port: int
    workdir: tempfile.TemporaryDirectory[str]

    @classmethod
    async def start(cls, extra_config: str = "") -> BenchServer:
        workdir = tempfile.TemporaryDirectory(prefix="chat-bench-")
        config = Path(workdir.name) / "config.toml"
        config.write_text(
            f'[history]\ndatabase = "{Path(workdir.name) / "bench.db"}"\n'
            "[limits]\nmessages_per_second = 1000000\nburst = 1000000\nsend_queue_bytes = 67108864\n"
            "udp_per_second = 1000000\nudp_burst = 1000000\n" + extra_config,
            encoding="utf-8",
        )
        executable = Path(sys.executable).parent / "chat-server"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        proc = await asyncio.create_subprocess_exec(
            str(executable), "--config", str(config), "--host", "127.0.0.1", "--port", "0", "--udp-port", "0",
            "--log-level", "warning",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env=env,
        )  # fmt: skip
        assert proc.stderr is not None
        for _ in range(100):
            line = (await asyncio.wait_for(proc.stderr.readline(), 20)).decode()
            if not line:
                break
            if match := LISTENING.search(line):
                return cls(proc, int(match["port"]), workdir)
        proc.kill()
        raise RuntimeError("chat-server did not start")

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.workdir.cleanup()


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The value below which `fraction` of the sorted values lie (nearest rank)."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def report_latencies(label: str, milliseconds: list[float], what: str = "messages") -> None:
    """One line: p50, p99 and max of a list of latencies in milliseconds."""
    ordered = sorted(milliseconds)
    print(
        f"{label:<36} p50 {percentile(ordered, 0.5):7.3f} ms   p99 {percentile(ordered, 0.99):7.3f} ms   "
        f"max {ordered[-1]:7.3f} ms   ({len(ordered)} {what})"
    )
