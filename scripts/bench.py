#!/usr/bin/env python3
"""scripts/bench: the project's benchmark. Starts a real chat-server on 127.0.0.1 for every run, on uvloop and on plain
asyncio (`chat-server --loop`), pinned to CPU 0 while the load generators run on the other CPUs, and measures:

  flood    deliveries/s (messages x receivers) at 10, 100 and 1,000 receivers of one sender, whose window is the
           messages not yet received by every receiver (512, 128 at 1,000 receivers); the run's length adapts to
           the rate (the sender sends for --duration seconds); every receiver must get every message once, in order
  latency  p50/p90/p99/max from the time a message was due to its receipt, 10 senders paced at 1,000 and 10,000
           msg/s in all into a room of 100 receivers (a full window of 128 per sender delays, never drops)
  accept   connections accepted (hello received) per second
  memory   server RSS per idle, logged-in, joined connection at 5,000 connections, and the join phase's time
  storm    5,000 clients of the client library through a server restart (SIGTERM, start again on the same database
           and port): time until every client has resumed, messages lost or duplicated, listen-queue overflows

Every run appends one JSON line to --out (figures, CPU use of the server and of the generators, machine) and the
end prints a table with the uvloop/asyncio ratio. Loopback only; every loop is bounded in count and time; the only
processes ended are the ones started here, by their PID.

    scripts/bench --quick                        # every case, short (about two minutes)
    scripts/bench                                # every case, full size
    scripts/bench --case flood --reps 3 --loop uvloop
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import multiprocessing.connection
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import RawArray, RawValue
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchwire as wire
from benchlib import (
    CLOCK_TICKS,
    ServerProcess,
    listen_queue_counters,
    machine_description,
    raise_open_files_limit,
    steal_ticks,
)
from benchstorm import StormSpec
from benchworkers import IdleSpec, PacedSpec, RelaySpec, Shared, worker_entry

from chat.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
CASES = ("flood", "latency", "accept", "memory", "storm")
LOOPS = ("uvloop", "asyncio")
Record = dict[str, Any]
Body = dict[str, Any]


@dataclass
class Settings:
    """What to run, from the command line."""

    cases: list[str]
    loops: list[str]
    reps: int
    config: Path
    out: Path
    secret: str | None
    flood_receivers: list[int]
    flood_seconds: float
    flood_messages: int | None
    window: int | None
    latency_rates: list[int]
    latency_seconds: float
    latency_receivers: int
    latency_senders: int
    accept_clients: int
    memory_clients: int
    memory_room_size: int
    storm_clients: int
    storm_room_size: int
    storm_timeout: float
    generator_processes: int | None
    server_cpus: list[int]
    generator_cpus: list[int]
    table: bool = True
    ceiling: bool = False


@dataclass
class Context:
    """The settings plus what every record carries."""

    settings: Settings
    machine: dict[str, object]
    commit: str | None
    records: list[Record] = field(default_factory=list)

    def processes(self, wanted: int) -> int:
        """Generator processes for a run that could use `wanted`: one per generator CPU unless told otherwise."""
        count = self.settings.generator_processes or len(self.settings.generator_cpus)
        return max(1, min(count, wanted))


class GeneratorFailed(RuntimeError):
    """A generator process crashed, refused, or did not answer in time."""


class Generators:
    """The generator processes of one run: started here, each pinned to the generator CPUs, ended by its PID."""

    def __init__(self, cpus: Sequence[int]) -> None:
        self.cpus = list(cpus)  # empty: not pinned
        self.context = multiprocessing.get_context("spawn")
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.pipes: list[multiprocessing.connection.Connection] = []

    def start(self, role: str, spec: object, shared: Shared) -> None:
        here, there = self.context.Pipe()
        cpus = [self.cpus[len(self.processes) % len(self.cpus)]] if self.cpus else []
        process = self.context.Process(target=worker_entry, args=(role, there, spec, shared, cpus), daemon=True)
        process.start()
        there.close()
        self.processes.append(process)
        self.pipes.append(here)

    def send_all(self, kind: str, body: Body | None = None) -> None:
        for pipe in self.pipes:
            with suppress(OSError):  # a process that has already ended
                pipe.send((kind, body or {}))

    def collect(self, kind: str, timeout: float) -> list[Body]:
        """One message of `kind` from every process, in process order; GeneratorFailed otherwise."""
        bodies: dict[int, Body] = {}
        deadline = time.monotonic() + timeout
        while len(bodies) < len(self.pipes):
            waiting = [p for i, p in enumerate(self.pipes) if i not in bodies]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise GeneratorFailed(f"{len(waiting)} generator process(es) sent no {kind!r} within {timeout:.0f} s")
            for pipe in multiprocessing.connection.wait(waiting, remaining):
                assert isinstance(pipe, multiprocessing.connection.Connection)
                try:
                    got, body = pipe.recv()
                except EOFError:
                    raise GeneratorFailed("a generator process ended without a word") from None
                if got == "error":
                    raise GeneratorFailed(body["traceback"])
                if got != kind:
                    raise GeneratorFailed(f"expected {kind!r} from a generator, got {got!r}")
                bodies[self.pipes.index(pipe)] = body
        return [bodies[i] for i in range(len(self.pipes))]

    def close(self) -> None:
        """Tell every process to exit; kill (by PID) any that has not after a few seconds."""
        self.send_all("exit")
        deadline = time.monotonic() + 10
        for process in self.processes:
            process.join(max(0.1, deadline - time.monotonic()))
        for process in self.processes:
            if process.is_alive():
                process.kill()
                process.join(5)
        for pipe in self.pipes:
            pipe.close()


@contextmanager
def server_and_generators(ctx: Context, loop: str) -> Iterator[tuple[ServerProcess, Generators]]:
    """A fresh server and an empty set of generators; both ended afterwards, the server first."""
    server = ServerProcess(ctx.settings.config, loop, ctx.settings.server_cpus)
    if ctx.settings.ceiling:
        server.command = (sys.executable, str(ROOT / "scripts" / "bench_relay.py"))
    generators = Generators(ctx.settings.generator_cpus if ctx.settings.server_cpus else [])
    try:
        server.start()
        yield server, generators
    finally:
        server.stop()
        generators.close()
        server.cleanup()


@dataclass
class Window:
    """CPU time of the server and of the generators over a measured stretch of wall time."""

    started: float = 0.0
    server_cpu_at_start: float = 0.0
    wall_s: float = 0.0
    server_cpu_s: float = 0.0
    steal_at_start: dict[str, int] = field(default_factory=dict)
    steal_ms: dict[str, int] = field(default_factory=dict)

    def start(self, server: ServerProcess | None) -> None:
        self.started = time.monotonic()
        self.steal_at_start = steal_ticks()
        if server is not None:
            self.server_cpu_at_start = server.cpu_seconds()

    def stop(self, server: ServerProcess | None) -> None:
        self.wall_s = time.monotonic() - self.started
        if server is not None:
            self.server_cpu_s = server.cpu_seconds() - self.server_cpu_at_start
        ticks = steal_ticks()
        self.steal_ms = {cpu: (ticks[cpu] - self.steal_at_start.get(cpu, 0)) * 1000 // CLOCK_TICKS for cpu in ticks}


def cpu_figures(ctx: Context, window: Window, done: Sequence[Body], processes: int) -> Record:
    """CPU use over the window: 1.0 is one saturated core for the server, all generator CPUs for the generators."""
    wall = max(window.wall_s, 1e-9)
    generator_cpu_s = sum(body["cpu_s"] for body in done)
    server_util = window.server_cpu_s / wall
    generator_util = generator_cpu_s / (wall * len(ctx.settings.generator_cpus))
    saturated = [name for name, util in (("server", server_util), ("generator", generator_util)) if util >= 0.9]
    return {
        "server_cpu_s": round(window.server_cpu_s, 3),
        "server_cpu_util": round(server_util, 3),
        "gen_cpu_s": round(generator_cpu_s, 3),
        "gen_cpu_util": round(generator_util, 3),
        "gen_cpu_util_by_process": [round(body["cpu_s"] / wall, 3) for body in done],
        "gen_procs": len(done),
        "steal_ms": window.steal_ms,
        "bottleneck": "+".join(saturated) or "neither",
    }


def start_run(server: ServerProcess, generators: Generators, window: Window, lead_s: float = 0.1) -> int:
    """Tell every generator to start `lead_s` from now; start measuring then. The start time (monotonic ns)."""
    t0_ns = time.monotonic_ns() + int(lead_s * 1e9)
    generators.send_all("go", {"t0_ns": t0_ns})
    time.sleep(max(0.0, (t0_ns - time.monotonic_ns()) / 1e9))
    window.start(server)
    return t0_ns


def split(items: Sequence[int], parts: int) -> list[list[int]]:
    """Round-robin shares, so every process gets connections from every part of the join order."""
    return [list(items[index::parts]) for index in range(parts)]


# --- the cases ----------------------------------------------------------------------------------------------------


def run_flood(ctx: Context, loop: str, receivers: int) -> Record:
    settings = ctx.settings
    window_size = settings.window or (512 if receivers < 1000 else 128)
    fixed = settings.flood_messages
    duration = None if fixed else settings.flood_seconds
    timeout = (duration or 0) + (60 if fixed else 30)
    processes = ctx.processes(receivers)
    shared = Shared(lows=RawArray("q", processes), final=RawValue("q", -1))
    params: Record = {"receivers": receivers, "senders": 1, "window": window_size, "text_chars": wire.TEXT_CHARS}
    params |= {"messages": fixed} if fixed else {"send_seconds": duration}
    if settings.ceiling:
        params["server"] = "scripts/bench_relay.py: relays only, the generator's ceiling"
    with server_and_generators(ctx, loop) as (server, generators):
        for slot, share in enumerate(split(range(receivers), processes)):
            spec = RelaySpec(
                port=server.port, secret=settings.secret, room="bench", receivers=share, senders=1, latency=False,
                window=window_size, timeout_s=timeout, slot=slot, processes=processes,
                flood_sender=receivers if slot == 0 else None, duration_s=duration, messages=fixed,
            )  # fmt: skip
            generators.start("relay", spec, shared)
        generators.collect("ready", 300)
        window = Window()
        queue_before = listen_queue_counters()
        t0_ns = start_run(server, generators, window)
        done = generators.collect("done", timeout + 30)
        window.stop(server)
    sender = next(body["sender"] for body in done if body["sender"])
    delivered = sum(body["delivered"] for body in done)
    last = max(body["last_delivery_ns"] for body in done)
    elapsed = max(1e-9, (last - sender["first_send_ns"]) / 1e9)
    figures = {
        "messages": sender["sent"],
        "deliveries": delivered,
        "elapsed_s": round(elapsed, 3),
        "deliveries_per_s": round(delivered / elapsed),
        "messages_per_s": round(sender["sent"] / elapsed),
        "window_waits": sender["window_waits"],
        "measured_s": round(window.wall_s, 3),
        "send_started_after_s": round((sender["first_send_ns"] - t0_ns) / 1e9, 3),
        "send_stopped_after_s": round((sender["last_send_ns"] - t0_ns) / 1e9, 3),
        "last_delivery_after_s": round((last - t0_ns) / 1e9, 3),
    }
    return relay_record(ctx, "flood", loop, params, figures, done, window, processes, queue_before)


def run_latency(ctx: Context, loop: str, rate_total: int) -> Record:
    settings = ctx.settings
    receivers, senders = settings.latency_receivers, settings.latency_senders
    per_sender = rate_total / senders
    messages = max(1, round(per_sender * settings.latency_seconds))
    window_size = settings.window or 128
    timeout = settings.latency_seconds + 30
    processes = ctx.processes(receivers)
    shared = Shared(lows=RawArray("q", processes * senders), final=RawValue("q", -1))
    params = {
        "receivers": receivers, "senders": senders, "rate_total": rate_total, "messages_per_sender": messages,
        "window": window_size, "text_chars": wire.TEXT_CHARS,
    }  # fmt: skip
    with server_and_generators(ctx, loop) as (server, generators):
        for slot, share in enumerate(split(range(receivers), processes)):
            spec = RelaySpec(
                port=server.port, secret=settings.secret, room="bench", receivers=share, senders=senders,
                latency=True, window=window_size, timeout_s=timeout, slot=slot, processes=processes,
                messages=messages,
            )  # fmt: skip
            generators.start("relay", spec, shared)
        generators.collect("ready", 300)  # receivers first: the senders' messages must find them in the room
        paced = PacedSpec(
            port=server.port, secret=settings.secret, room="bench",
            connections=list(range(receivers, receivers + senders)), numbers=list(range(senders)), senders=senders,
            rate=per_sender, messages=messages, window=window_size, receiver_processes=processes, timeout_s=timeout,
        )  # fmt: skip
        generators.start("paced", paced, shared)
        _collect_last(generators, "ready", 120)
        window = Window()
        queue_before = listen_queue_counters()
        t0_ns = start_run(server, generators, window)
        done = generators.collect("done", timeout + 30)
        window.stop(server)
    sending, receiving = done[-1], done[:-1]
    histogram: dict[int, int] = {}
    for body in receiving:
        for value, count in body["latency_histogram"].items():
            histogram[int(value)] = histogram.get(int(value), 0) + count
    p50, p90, p99, p100 = wire.histogram_percentiles(histogram, (0.5, 0.9, 0.99, 1.0))
    last = max(body["last_delivery_ns"] for body in receiving)
    elapsed = max(1e-9, (last - t0_ns) / 1e9)
    delivered = sum(body["delivered"] for body in receiving)
    figures = {
        "p50_us": p50, "p90_us": p90, "p99_us": p99, "max_us": p100,
        "messages": sending["sent"], "deliveries": delivered,
        "messages_per_s": round(sending["sent"] / elapsed), "deliveries_per_s": round(delivered / elapsed),
        "elapsed_s": round(elapsed, 3), "send_stalls": sending["stalls"],
        "send_lag_max_us": round(sending["lag_max_us"], 1), "send_lag_mean_us": round(sending["lag_mean_us"], 1),
    }  # fmt: skip
    return relay_record(ctx, "latency", loop, params, figures, done, window, processes, queue_before)


def _collect_last(generators: Generators, kind: str, timeout: float) -> Body:
    """The next message of the most recently started generator."""
    pipe = generators.pipes[-1]
    if not pipe.poll(timeout):
        raise GeneratorFailed(f"the last generator sent no {kind!r} within {timeout:.0f} s")
    got, body = pipe.recv()
    if got != kind:
        raise GeneratorFailed(body.get("traceback", f"expected {kind!r}, got {got!r}"))
    return dict(body)


def relay_record(
    ctx: Context,
    case: str,
    loop: str,
    params: Record,
    figures: Record,
    done: list[Body],
    window: Window,
    processes: int,
    queue_before: dict[str, int],
) -> Record:
    """The record of a flood or latency run: figures, integrity counts, CPU, problems."""
    receiving = [body for body in done if "receivers" in body]
    integrity = {key: sum(body[key] for body in receiving) for key in ("lost", "dup", "reordered")}
    integrity["error_frames"] = sum(body["error_frames"] for body in receiving)
    figures["frames_per_read"] = round(
        sum(b["delivered"] for b in receiving) / max(1, sum(b["reads"] for b in receiving)), 1
    )
    integrity["lost_connections"] = sum(body["lost_connections"] for body in receiving)
    problems = []
    if any(body["timed_out"] for body in receiving):
        problems.append("timed out before every receiver had every message")
    for body in receiving:
        if body["last_error"]:
            problems.append(f"server error frame: {body['last_error']}")
        if body["first_lost_connection"]:
            problems.append(f"a receiver's connection ended: {body['first_lost_connection']}")
    cpu = cpu_figures(ctx, window, done, processes)
    return make_record(ctx, case, loop, params, figures | integrity | cpu, queue_before, problems)


def run_accept(ctx: Context, loop: str, clients: int) -> Record:
    processes = ctx.processes(clients)
    params = {"connections": clients, "handshakes_in_flight": processes * 200}
    with server_and_generators(ctx, loop) as (server, generators):
        for share in split(range(clients), processes):
            spec = IdleSpec(server.port, ctx.settings.secret, share, log_in=False, room_size=0, timeout_s=120)
            generators.start("idle", spec, Shared())
        generators.collect("ready", 120)
        window = Window()
        queue_before = listen_queue_counters()
        t0_ns = start_run(server, generators, window)
        done = generators.collect("done", 180)
        window.stop(server)
    opened = sum(body["opened"] for body in done)
    elapsed = max(1e-9, (max(body["last_ns"] for body in done) - t0_ns) / 1e9)
    figures = {"accepted": opened, "elapsed_s": round(elapsed, 3), "accepts_per_s": round(opened / elapsed)}
    figures["failed"] = sum(body["failed"] for body in done)
    problems = [f"connection failed: {body['first_failure']}" for body in done if body["first_failure"]]
    cpu = cpu_figures(ctx, window, done, processes)
    return make_record(ctx, "accept", loop, params, figures | cpu, queue_before, problems)


def run_memory(ctx: Context, loop: str, clients: int) -> Record:
    room_size = ctx.settings.memory_room_size
    processes = ctx.processes(clients)
    params = {"connections": clients, "room_size": room_size, "settle_s": 2.0}
    with server_and_generators(ctx, loop) as (server, generators):
        for index, share in enumerate(split(range(clients), processes)):
            spec = IdleSpec(
                server.port, ctx.settings.secret, share, log_in=True, room_size=room_size, timeout_s=300,
                warm_up=index == 0,
            )  # fmt: skip
            generators.start("idle", spec, Shared())
        generators.collect("ready", 120)
        time.sleep(1.0)
        rss_before = server.rss_bytes()
        window = Window()
        queue_before = listen_queue_counters()
        t0_ns = start_run(server, generators, window)
        done = generators.collect("done", 330)
        window.stop(server)
        time.sleep(2.0)  # let the join phase's presence frames drain
        rss_after = server.rss_bytes()
    opened = sum(body["opened"] for body in done)
    figures = {
        "joined": opened,
        "failed": sum(body["failed"] for body in done),
        "join_phase_s": round((max(body["last_ns"] for body in done) - t0_ns) / 1e9, 3),
        "rss_before_kib": rss_before // 1024,
        "rss_after_kib": rss_after // 1024,
        "kib_per_connection": round((rss_after - rss_before) / 1024 / max(1, opened), 2),
    }
    problems = [f"connection failed: {body['first_failure']}" for body in done if body["first_failure"]]
    cpu = cpu_figures(ctx, window, done, processes)
    return make_record(ctx, "memory", loop, params, figures | cpu, queue_before, problems)


def run_storm(ctx: Context, loop: str, clients: int) -> Record:
    settings = ctx.settings
    room_size = settings.storm_room_size
    rooms = max(1, clients // room_size)
    processes = ctx.processes(rooms)
    params: Record = {"clients": rooms * room_size, "room_size": room_size, "messages_before": 2, "messages_after": 2}
    params |= {"udp": False, "backoff": "library defaults (0.2 s doubling to 5 s, jitter 0.5)"}
    with server_and_generators(ctx, loop) as (server, generators):
        for share in split(range(rooms), processes):
            spec = StormSpec(server.port, settings.secret, share, room_size, 2, 2, settings.storm_timeout)
            generators.start("storm", spec, Shared())
        ready = generators.collect("ready", 600)
        window = Window()
        queue_before = listen_queue_counters()
        generators.send_all("go", {})
        killed_ns = time.monotonic_ns()
        window.start(None)
        exit_status = server.stop()
        stopped_ns = time.monotonic_ns()
        server.start()
        listening_ns = time.monotonic_ns()
        done = generators.collect("done", settings.storm_timeout + 30)
        window.stop(None)
        window.server_cpu_s = server.cpu_seconds()  # the new server's CPU time since its start
    resumed = sorted(at for body in done for at in body["resumed_ns"])
    since_kill = [(at - killed_ns) / 1e9 for at in resumed]
    figures = {
        "resumed": len(resumed),
        "resume_all_s": round(since_kill[-1], 3) if since_kill else None,
        "resume_p50_s": round(statistics.median(since_kill), 3) if since_kill else None,
        "resume_after_listening_s": round((resumed[-1] - listening_ns) / 1e9, 3) if resumed else None,
        "shutdown_s": round((stopped_ns - killed_ns) / 1e9, 3),
        "restart_s": round((listening_ns - killed_ns) / 1e9, 3),
        "server_exit_status": exit_status,
        "setup_s": round(max(body["setup_s"] for body in ready), 3),
        "max_reconnect_attempts": max(body["max_attempts"] for body in done),
        "messages_expected": sum(body["messages_expected"] for body in done),
    }
    integrity = {key: sum(body[key] for body in done) for key in ("lost", "dup", "unexpected", "closed")}
    problems = []
    if any(body["timed_out"] for body in done):
        problems.append(f"not every client resumed and caught up within {settings.storm_timeout:.0f} s")
    problems += [f"a client ended: {body['first_closed_reason']}" for body in done if body["first_closed_reason"]]
    cpu = cpu_figures(ctx, window, done, processes)
    return make_record(ctx, "storm", loop, params, figures | integrity | cpu, queue_before, problems)


def make_record(
    ctx: Context,
    case: str,
    loop: str,
    params: Record,
    figures: Record,
    queue_before: dict[str, int],
    problems: list[str],
) -> Record:
    queue_after = listen_queue_counters()
    overflows = {f"listen_{key[6:].lower()}": queue_after[key] - queue_before[key] for key in queue_before}
    if any(overflows.values()):
        problems.append(f"the kernel's listen queue overflowed: {overflows}")
    integrity_keys = ("lost", "dup", "reordered", "unexpected", "failed", "error_frames", "lost_connections")
    ok = not problems and not any(figures.get(key) for key in integrity_keys)
    return {
        "case": case,
        "loop": loop,
        "params": params,
        **figures,
        **overflows,
        "ok": ok,
        "problems": problems,
        "server_cpus": ctx.settings.server_cpus,
        "gen_cpus": ctx.settings.generator_cpus,
        "generator_loop": "uvloop",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": ctx.machine,
        "commit": ctx.commit,
    }


# --- running, recording, the table --------------------------------------------------------------------------------

MAIN_FIGURE = {
    "flood": ("deliveries_per_s", "deliveries/s", True),
    "latency": ("p99_us", "p99 µs", False),
    "accept": ("accepts_per_s", "accepts/s", True),
    "memory": ("kib_per_connection", "KiB/connection", False),
    "storm": ("resume_all_s", "s until all resumed", False),
}


def runs(ctx: Context) -> Iterator[tuple[str, str, Callable[[Context, str, int], Record], int]]:
    """(case, label, runner, size) for every run asked for."""
    settings = ctx.settings
    for case in settings.cases:
        if case == "flood":
            for receivers in settings.flood_receivers:
                yield case, f"N={receivers}", run_flood, receivers
        elif case == "latency":
            for rate in settings.latency_rates:
                yield case, f"{rate:,}/s", run_latency, rate
        elif case == "accept":
            yield case, f"{settings.accept_clients:,} conns", run_accept, settings.accept_clients
        elif case == "memory":
            yield case, f"{settings.memory_clients:,} conns", run_memory, settings.memory_clients
        elif case == "storm":
            yield case, f"{settings.storm_clients:,} clients", run_storm, settings.storm_clients


def run_all(ctx: Context) -> int:
    """Every run, the loops interleaved per repetition; a failed run is recorded and the next one goes on."""
    failures = 0
    for case, label, runner, size in runs(ctx):
        for rep in range(ctx.settings.reps):
            for loop in ctx.settings.loops:
                started = time.monotonic()
                try:
                    record = runner(ctx, loop, size)
                except (GeneratorFailed, RuntimeError, OSError) as exc:
                    failures += 1
                    record = make_record(ctx, case, loop, {"size": size}, {}, listen_queue_counters(), [str(exc)])
                    record["ok"] = False
                record |= {"label": label, "rep": rep, "run_s": round(time.monotonic() - started, 1)}
                ctx.records.append(record)
                ctx.settings.out.parent.mkdir(parents=True, exist_ok=True)
                with ctx.settings.out.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(record) + "\n")
                print(summary_line(record), flush=True)
    return failures


def summary_line(record: Record) -> str:
    key, unit, _ = MAIN_FIGURE[record["case"]]
    value = record.get(key)
    shown = f"{value:,}" if isinstance(value, int | float) else "-"
    extra = ""
    if record["case"] == "latency":
        extra = f" (p50 {record.get('p50_us')} p90 {record.get('p90_us')} max {record.get('max_us')})"
    checks = " ".join(f"{k} {record[k]}" for k in ("lost", "dup", "reordered") if k in record)
    state = "ok" if record["ok"] else "PROBLEM: " + "; ".join(record["problems"])[:400]
    steal = ",".join(f"{cpu} {ms}" for cpu, ms in record.get("steal_ms", {}).items() if ms)
    if steal:
        state += f" | steal ms {steal}"
    return (
        f"{record['case']:<8} {record['label']:<14} {record['loop']:<8} rep {record['rep']}: {shown} {unit}{extra} "
        f"{checks} | server CPU {record.get('server_cpu_util', '-')} gen CPU {record.get('gen_cpu_util', '-')} "
        f"| {record['run_s']} s | {state}"
    )


def median_spread(values: Sequence[float]) -> str:
    """The median, with half the min-max spread in % of it when there are several values."""
    if not values:
        return "-"
    middle = statistics.median(values)
    text = f"{middle:,.0f}" if abs(middle) >= 100 else f"{middle:,.2f}"
    if len(values) > 1 and middle:
        text += f" ±{(max(values) - min(values)) / 2 / abs(middle) * 100:.0f}%"
    return text


def table(records: Sequence[Record]) -> str:
    """One row per case and size: each loop's median, the uvloop/asyncio ratio, integrity and CPU."""
    columns = ("case", "size", "figure", "uvloop", "asyncio", "uvloop/asyncio", "lost/dup/reord", "server CPU u/a",
               "gen CPU u/a", "saturated u/a")  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    keys = list(dict.fromkeys((r["case"], r["label"]) for r in records))
    for case, label in keys:
        group = [r for r in records if r["case"] == case and r["label"] == label]
        key, unit, higher_better = MAIN_FIGURE[case]
        cells, medians = [], {}
        for loop in LOOPS:
            values = [r[key] for r in group if r["loop"] == loop and r.get(key) is not None]
            cells.append(median_spread(values))
            if values:
                medians[loop] = statistics.median(values)
        ratio = "-"
        if medians.get("asyncio") and "uvloop" in medians:
            better = "higher" if higher_better else "lower"
            ratio = f"{medians['uvloop'] / medians['asyncio']:.2f} ({better} is better)"
        integrity_keys = ("lost", "dup", "unexpected") if case == "storm" else ("lost", "dup", "reordered")
        integrity = "/".join(str(sum(r.get(k, 0) or 0 for r in group)) for k in integrity_keys)
        cpu = "/".join(_median_of(group, "server_cpu_util", loop) for loop in LOOPS)
        gen = "/".join(_median_of(group, "gen_cpu_util", loop) for loop in LOOPS)
        bottleneck = " / ".join(
            ", ".join(sorted({r.get("bottleneck", "-") for r in group if r["loop"] == loop})) or "-" for loop in LOOPS
        )
        if not all(r["ok"] for r in group):
            bottleneck += " (PROBLEMS: see the JSON lines)"
        lines.append(f"| {case} | {label} | {unit} | {cells[0]} | {cells[1]} | {ratio} | {integrity} | {cpu} | {gen} | "
                     f"{bottleneck} |")  # fmt: skip
    lines += _latency_rows(records)
    return "\n".join(lines)


def _median_of(group: Sequence[Record], key: str, loop: str) -> str:
    values = [r[key] for r in group if r["loop"] == loop and r.get(key) is not None]
    return f"{statistics.median(values):.2f}" if values else "-"


def _latency_rows(records: Sequence[Record]) -> list[str]:
    """The latency case's percentiles, and the memory and storm side figures, per loop."""
    lines = []
    for record in records:
        if record["case"] == "latency" and record.get("p50_us") is not None:
            lines.append(
                f"- latency {record['label']} {record['loop']} rep {record['rep']}: p50/p90/p99/max "
                f"{record['p50_us']}/{record['p90_us']}/{record['p99_us']}/{record['max_us']} µs, "
                f"{record['messages_per_s']:,} msg/s achieved, {record['send_stalls']} window stalls, "
                f"send lag max {record['send_lag_max_us']} µs"
            )
        elif record["case"] == "memory" and record.get("join_phase_s") is not None:
            lines.append(
                f"- memory {record['label']} {record['loop']} rep {record['rep']}: join phase "
                f"{record['join_phase_s']} s, RSS {record['rss_before_kib']:,} -> {record['rss_after_kib']:,} KiB"
            )
        elif record["case"] == "storm" and record.get("resume_all_s") is not None:
            lines.append(
                f"- storm {record['label']} {record['loop']} rep {record['rep']}: restart {record['restart_s']} s, "
                f"all resumed {record['resume_all_s']} s after SIGTERM ({record['resume_after_listening_s']} s after "
                f"listening), p50 {record['resume_p50_s']} s, max attempts {record['max_reconnect_attempts']}, "
                f"listen overflows {record.get('listen_overflows')}, drops {record.get('listen_drops')}"
            )
    return lines


# --- command line -------------------------------------------------------------------------------------------------


def cpu_layout(pin: bool) -> tuple[list[int], list[int]]:
    """(server CPUs, generator CPUs): CPU 0 for the server and the rest for the generators when 2+ are usable."""
    cpus = sorted(os.sched_getaffinity(0))
    if pin and len(cpus) >= 2:
        return cpus[:1], cpus[1:]
    return [], cpus


def project_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def parse_settings(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run of every case (about two minutes)")
    parser.add_argument("--case", action="append", choices=CASES, help="run this case (repeatable; default all)")
    parser.add_argument("--reps", type=int, default=1, help="repetitions of each run (the table shows the median)")
    parser.add_argument("--loop", choices=[*LOOPS, "both"], default="both", help="the server's event loop")
    parser.add_argument("--config", type=Path, default=ROOT / "scripts" / "bench.toml", help="server config")
    default_out = Path(tempfile.gettempdir()) / "chat-scripts-bench" / "results.jsonl"
    parser.add_argument("--out", type=Path, default=default_out, help=f"JSON lines appended here ({default_out})")
    parser.add_argument("--receivers", type=int, action="append", help="flood receivers (repeatable; 10 100 1000)")
    parser.add_argument("--messages", type=int, help="flood: send exactly this many instead of for --duration")
    parser.add_argument("--duration", type=float, help="flood: seconds of sending (4; quick 1)")
    parser.add_argument(
        "--window", type=int, help="messages in flight per sender (flood 512, 128 at 1000; latency 128)"
    )
    parser.add_argument("--rate", type=int, action="append", help="latency: msg/s in all (repeatable; 1000 10000)")
    parser.add_argument("--clients", type=int, help="connections for accept, memory and storm (5000; quick 1000)")
    parser.add_argument("--memory-room-size", type=int, default=100, help="memory: connections per room (100)")
    parser.add_argument("--storm-room-size", type=int, default=50, help="storm: clients per room (50)")
    parser.add_argument("--generator-processes", type=int, help="generator processes (one per generator CPU)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the server and the generators to CPUs")
    parser.add_argument("--no-table", action="store_true", help="print no table at the end")
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="flood against scripts/bench_relay.py (relays, stores nothing) instead of chat-server: the generator's "
        "ceiling",
    )
    args = parser.parse_args(argv)
    try:
        secret = load_config(args.config, environ={}).server.secret or None
    except ConfigError as exc:
        parser.error(str(exc))
    clients = args.clients or (1000 if args.quick else 5000)
    server_cpus, generator_cpus = cpu_layout(not args.no_pin)
    if args.ceiling:
        args.case, args.loop = ["flood"], "uvloop"  # the relay runs on uvloop and knows no more than a flood
    return Settings(
        cases=args.case or list(CASES),
        loops=list(LOOPS) if args.loop == "both" else [args.loop],
        reps=max(1, args.reps),
        config=args.config.resolve(),
        out=args.out,
        secret=secret,
        flood_receivers=args.receivers or [10, 100, 1000],
        flood_seconds=args.duration or (1.0 if args.quick else 4.0),
        flood_messages=args.messages,
        window=args.window,
        latency_rates=args.rate or [1000, 10000],
        latency_seconds=1.5 if args.quick else 5.0,
        latency_receivers=100,
        latency_senders=10,
        accept_clients=clients,
        memory_clients=clients,
        memory_room_size=args.memory_room_size,
        storm_clients=clients,
        storm_room_size=args.storm_room_size,
        storm_timeout=60.0 if args.quick else 120.0,
        generator_processes=args.generator_processes,
        server_cpus=server_cpus,
        generator_cpus=generator_cpus,
        table=not args.no_table,
        ceiling=args.ceiling,
    )


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)
    raise_open_files_limit()
    if settings.generator_cpus and settings.server_cpus:
        os.sched_setaffinity(0, set(settings.generator_cpus))  # this process stays off the server's CPU
    ctx = Context(settings, machine_description(), project_commit())
    print(
        f"chat bench: server on CPU {settings.server_cpus or 'any'}, generators on CPU {settings.generator_cpus}, "
        f"{ctx.machine['cpu_model']}, Python {ctx.machine['python']}; results appended to {settings.out}",
        flush=True,
    )
    failures = run_all(ctx)
    if settings.table and ctx.records:
        print()
        print(table(ctx.records))
    return 1 if failures or not all(r["ok"] for r in ctx.records) else 0


if __name__ == "__main__":
    sys.exit(main())
