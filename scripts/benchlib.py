"""Shared pieces of the benchmarks: start a real `chat-server` process on loopback, read its memory and CPU time from
/proc, the kernel's listen-queue counters, percentiles."""

from __future__ import annotations

import asyncio
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
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


# --- a server process for scripts/bench: synchronous, pinned, restartable ----------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
NOFILE = 20_000  # open files for the server and the generators: thousands of connections on each side


def proc_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (all its threads), in seconds, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_rss_bytes(pid: int) -> int:
    """Resident memory of a process, from VmRSS in /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def steal_ticks() -> dict[str, int]:
    """Per CPU, the time the hypervisor ran something else while this machine wanted to run (/proc/stat), in clock
    ticks: a benchmark on a virtual machine is only as steady as this."""
    ticks = {}
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0].startswith("cpu") and fields[0] != "cpu" and len(fields) > 8:
            ticks[fields[0]] = int(fields[8])
    return ticks


def listen_queue_counters() -> dict[str, int]:
    """TcpExt ListenOverflows and ListenDrops from /proc/net/netstat: connections the kernel refused because a
    listen queue was full (counted for the whole network namespace, not per socket)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=False))
            return {"ListenOverflows": table.get("ListenOverflows", 0), "ListenDrops": table.get("ListenDrops", 0)}
    return {"ListenOverflows": 0, "ListenDrops": 0}


def machine_description() -> dict[str, object]:
    """CPU model, core count, Python and kernel versions: what a reader needs to compare figures."""
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def raise_open_files_limit(wanted: int = NOFILE) -> None:
    """Raise this process's limit of open files towards `wanted` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@dataclass
class ServerProcess:
    """A `chat-server` child for one benchmark run: pinned to `cpus`, its log in its run folder, restartable on the
    same database and port (the clients' resume is what a restart tests)."""

    config: Path
    loop: str
    cpus: Sequence[int] = ()
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="chat-bench-")))
    port: int = 0
    command: Sequence[str] = ()  # instead of chat-server (scripts/bench_relay.py for --ceiling); gets --port N
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the server is not running"
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.workdir / f"server-{self.starts}.log"

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (on `port`, 0 the first time) and wait for its listening line."""
        self.starts += 1
        executable = Path(sys.executable).parent / "chat-server"
        command = [
            str(executable), "--config", str(self.config.resolve()), "--loop", self.loop, "--log-level", "warning",
            "--host", "127.0.0.1", "--port", str(self.port), "--udp-port", "0",
            "--database", str(self.workdir / "bench.db"),
        ]  # fmt: skip
        if self.command:
            command = [*self.command, "--port", str(self.port)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        cpus = set(self.cpus)

        def in_child() -> None:
            raise_open_files_limit()
            if cpus:
                os.sched_setaffinity(0, cpus)

        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                preexec_fn=in_child, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if match := LISTENING.search(self.log_path.read_text(errors="replace")):
                self.port = int(match["port"])
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        tail = self.log_path.read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"chat-server did not start; its log ends with:\n{tail}")

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return proc_rss_bytes(self.pid)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (the server's clean shutdown), SIGKILL after `timeout`; the exit status."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def restart(self) -> None:
        """Stop, then start again on the same port and database."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server if it runs and remove its run folder."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
