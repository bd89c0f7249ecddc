"""Servers for tests: in-process ones, a handle to an external one, and the factory behind `chat_server`.

Every server a test gets has `.host`, `.port`, `.udp_port`, `.config` and `await .restart()` (`ServerHandle`). An
in-process server is a `chat.server.app.ChatServer`; `chat.testing.process.ServerProcess` is the real `chat-server`
in a child process; `ExternalServer` is one the test run did not start (`--chat-server=HOST:PORT`), which cannot be
restarted or configured: a test that asks for either is skipped.

An in-process server lives on the event loop that started it, and only serves while that loop runs. The loop of
each server started here is remembered, so a client asked for on another loop fails at once with an explanation
instead of timing out (the "attached to a different loop" trap; docs/testing.md, "Loop scopes").
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol, runtime_checkable

from chat.config import Config, config_with
from chat.server.app import ChatServer
from chat.testing.config import Sections, merge_sections

LOOP_SCOPES_HELP = "see 'Loop scopes' in docs/testing.md"

_server_loops: weakref.WeakKeyDictionary[object, asyncio.AbstractEventLoop] = weakref.WeakKeyDictionary()


@runtime_checkable
class ServerHandle(Protocol):
    """What every server a test gets offers."""

    host: str
    port: int
    udp_port: int
    config: Config

    async def restart(self) -> None:
        """Restart on the same database, host and ports; connected clients resume by themselves."""


def remember_loop(server: object) -> None:
    """Note that `server` serves on the running loop (see the module doc)."""
    _server_loops[server] = asyncio.get_running_loop()


def check_same_loop(server: object) -> None:
    """RuntimeError if `server` is an in-process server started on another loop than the running one."""
    loop = _server_loops.get(server)
    if loop is not None and loop is not asyncio.get_running_loop():
        state = "closed" if loop.is_closed() else "not running now" if not loop.is_running() else "another thread's"
        raise RuntimeError(
            f"{server!r} was started on another event loop ({state}) than the one this code runs on, so it cannot "
            f"answer: a server and the tests that use it must share one loop; {LOOP_SCOPES_HELP}"
        )


@contextlib.asynccontextmanager
async def serve(config: Config) -> AsyncIterator[ChatServer]:
    """`async with serve(test_config(folder)) as server:` an in-process server, closed at the end.

    For fixtures of a broader scope than a test (see docs/testing.md, "A server for the whole session").
    """
    server = ChatServer(config)
    await server.start()
    remember_loop(server)
    try:
        yield server
    finally:
        await server.close()


@dataclass(frozen=True, slots=True)
class ExternalTarget:
    """Where `--chat-server=HOST:PORT` points."""

    host: str
    port: int
    udp_port: int


class ExternalServer:
    """A server this test run did not start: it can be talked to, not restarted or configured."""

    def __init__(self, target: ExternalTarget, config: Config) -> None:
        self.host = target.host
        self.port = target.port
        self.udp_port = target.udp_port
        # What the tests may assume, not read from the server: the test configuration with its address.
        self.config = config_with(config, server={"host": self.host, "port": self.port, "udp_port": self.udp_port})

    def __repr__(self) -> str:
        return f"<ExternalServer {self.host}:{self.port}>"

    async def restart(self) -> NoReturn:
        """Skip the test: an external server cannot be restarted from here."""
        _skip(f"needs to restart the server, and --chat-server={self.host}:{self.port} is not ours to restart")


def _skip(reason: str) -> NoReturn:
    import pytest  # only ever called under pytest

    pytest.skip(reason)


class Workspace:
    """Hands out a folder per server of a test; servers after the first get their own database and files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._count = 0

    def allocate(self, config: Config, overrides: Sections) -> tuple[Config, Path]:
        """The config for the next server (with `overrides` applied) and a folder of its own."""
        number, self._count = self._count, self._count + 1
        folder = self.root / f"server-{number}"
        folder.mkdir(parents=True, exist_ok=True)
        sections: dict[str, dict[str, Any]] = {}
        if number > 0:  # two servers on one SQLite file would fight over it
            if config.history.database != ":memory:":
                sections["history"] = {"database": str(folder / "chat.db")}
            sections["files"] = {"directory": str(folder / "files")}
        merged = merge_sections(sections, overrides)
        return (config_with(config, **merged) if merged else config), folder


class ServerFactory:
    """`await chat_server(**sections)`: a started in-process server; `aclose()` closes them all, newest first.

    `sections` override the test configuration: `await chat_server(limits={"burst": 5})`. With an external target,
    every call returns a handle to it, and a call with overrides skips the test.
    """

    def __init__(self, config: Config, workspace: Workspace, *, external: ExternalTarget | None = None) -> None:
        self.config = config
        self.workspace = workspace
        self.external = external
        self.servers: list[ServerHandle] = []
        self._loop = asyncio.get_running_loop()
        self._stack = contextlib.AsyncExitStack()

    async def __call__(self, **sections: Mapping[str, Any]) -> ServerHandle:
        check_factory_loop(self._loop, "chat_server")
        if self.external is not None:
            if sections:
                shown = ", ".join(f"[{name}] {values}" for name, values in sections.items())
                _skip(f"needs a server configured with {shown}; --chat-server points at an external one")
            return ExternalServer(self.external, self.config)
        config, _ = self.workspace.allocate(self.config, sections)
        server = await self._stack.enter_async_context(serve(config))
        self.servers.append(server)
        return server

    async def aclose(self) -> None:
        await self._stack.aclose()


def check_factory_loop(loop: asyncio.AbstractEventLoop, fixture: str) -> None:
    """RuntimeError if a fixture's factory is called on another loop than the one it was set up on."""
    if asyncio.get_running_loop() is not loop:
        raise RuntimeError(
            f"{fixture} was set up on another event loop than the one this test runs on: pytest-asyncio runs an "
            "async fixture on the loop of its own loop scope (asyncio_default_fixture_loop_scope, else the "
            "fixture's scope) and a test on the loop of the test's (mark.asyncio(loop_scope=...), else "
            f"asyncio_default_test_loop_scope); give both the same scope; {LOOP_SCOPES_HELP}"
        )
