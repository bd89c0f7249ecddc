"""pytest fixtures for async integration tests against a chat server: a guide with examples is docs/testing.md.

pytest loads this module through the `pytest11` entry point `chat` in every session where the package is installed
(`-p no:chat` turns it off), so it imports nothing but pytest and pytest-asyncio: the server, the client library and
SQLite are imported by the fixtures, when a test asks for one.

The fixtures are async factories of function scope, made with `@pytest_asyncio.fixture` and no loop scope of their
own: they run on the loop pytest-asyncio gives function-scoped async fixtures (the test's own loop, unless
`asyncio_default_fixture_loop_scope` says otherwise). Each closes what it made at the end of the test, newest
first, and in this order: faults (stalled links resumed, relays closed), clients, servers.

- `chat_config`: the test `Config` (loopback, free ports, a database in tmp_path); `@pytest.mark.chat_config(...)`
  on a test, class or module overrides keys.
- `await chat_server(**sections)`: a running in-process server (`.host .port .udp_port .config await .restart()`).
- `await chat_server_process(**sections)`: the real `chat-server` in a child process, plus `.kill() .terminate()`.
- `await chat_client(server, nick=None, join=(), **options)`: a logged-in `ChatTestClient` (a `chat.client.Client`).
- `chat_faults`: `.cut(client)`, `.stall(client)`, `.resume(client)`, `await .udp_relay(server, seed=, loss=...)`.

`--chat-server=HOST:PORT` points `chat_server` and `chat_client` at a server already running; tests that need to
restart or configure a server, or their own server process, are skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest

MISSING_ASYNCIO = "chat's fixtures need pytest-asyncio>=1.4: pip install 'chat[test]' (or -p no:chat to hide them)"

try:
    import pytest_asyncio

    HAVE_ASYNCIO = True
except ImportError:  # loaded wherever the package is installed: never break someone else's test session
    HAVE_ASYNCIO = False

F = TypeVar("F", bound=Callable[..., Any])


def _async_fixture(function: F) -> F:
    """`@pytest_asyncio.fixture`, or, without pytest-asyncio, a fixture that fails the test that asks for it."""
    if HAVE_ASYNCIO:
        return cast(F, pytest_asyncio.fixture(function))

    @pytest.fixture(name=function.__name__)
    def missing() -> None:
        pytest.fail(MISSING_ASYNCIO, pytrace=False)

    return cast(F, missing)


if TYPE_CHECKING:
    import asyncio

    from chat.config import Config
    from chat.testing.client import ClientFactory
    from chat.testing.faults import ChatFaults
    from chat.testing.process import ProcessFactory
    from chat.testing.servers import ExternalTarget, ServerFactory, Workspace

_TARGET = pytest.StashKey[tuple[str, int, int]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chat", "chat server fixtures (chat.pytest_plugin)")
    group.addoption(
        "--chat-server",
        metavar="HOST:PORT",
        default=None,
        help="run the chat_* fixtures against this already-running chat server instead of starting servers; "
        "tests that restart or configure a server are skipped",
    )
    group.addoption(
        "--chat-server-udp-port",
        metavar="PORT",
        type=int,
        default=None,
        help="the UDP port of the --chat-server (default: its TCP port)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "chat_config(**sections): override keys of the chat test configuration for a test, class or module, "
        "e.g. chat_config(limits={'burst': 5})",
    )
    value = config.getoption("chat_server", None)
    if value is not None:
        config.stash[_TARGET] = parse_target(value, config.getoption("chat_server_udp_port", None))


def parse_target(value: str, udp_port: int | None = None) -> tuple[str, int, int]:
    """`HOST:PORT` or `[IPV6]:PORT` (and an optional UDP port) as (host, port, udp_port); UsageError if malformed."""
    host, sep, port_text = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise pytest.UsageError(f"--chat-server expects HOST:PORT, e.g. 127.0.0.1:7777, not {value!r}")
    if udp_port is not None and not 0 < udp_port < 65536:
        raise pytest.UsageError(f"--chat-server-udp-port: {udp_port!r} is not a port")
    port = int(port_text)
    return host, port, port if udp_port is None else udp_port


def pytest_report_header(config: pytest.Config) -> list[str]:
    if _TARGET not in config.stash:
        return []
    host, port, udp_port = config.stash[_TARGET]
    return [f"chat: fixtures target the external server at {host}:{port} (udp {udp_port}), from --chat-server"]


def _external(config: pytest.Config) -> ExternalTarget | None:
    if _TARGET not in config.stash:
        return None
    from chat.testing.servers import ExternalTarget

    return ExternalTarget(*config.stash[_TARGET])


def loop_factories(*names: str) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Event loops for pytest-asyncio's `pytest_asyncio_loop_factories` hook, by name: "asyncio", "uvloop".

    In a conftest.py, `def pytest_asyncio_loop_factories(config, item): return loop_factories()` runs every async
    test once on each loop (test ids `[asyncio]`, `[uvloop]`). With no names: asyncio, and uvloop where installed.
    """
    import asyncio

    wanted = names or ("asyncio", "uvloop")
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {}
    for name in wanted:
        if name == "asyncio":
            factories[name] = asyncio.new_event_loop
        elif name == "uvloop":
            try:
                import uvloop
            except ImportError:
                if names:
                    raise
                continue
            factories[name] = uvloop.new_event_loop
        else:
            raise ValueError(f"unknown event loop {name!r}: expected 'asyncio' or 'uvloop'")
    return factories


# --- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture
def chat_config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    """The chat test configuration: 127.0.0.1, TCP and UDP port 0, nick_hold 0, rate limits out of the way, the
    database and files in tmp_path/chat. `@pytest.mark.chat_config(limits={...})` on the test, its class or its
    module overrides keys (the closest wins); so does overriding this fixture."""
    from chat.testing.config import merge_sections, test_config

    layers = []
    for marker in reversed(list(request.node.iter_markers("chat_config"))):
        if marker.args:
            raise pytest.UsageError("chat_config takes sections as keywords: chat_config(limits={'burst': 5})")
        layers.append(marker.kwargs)
    return test_config(tmp_path / "chat", **merge_sections(*layers))


@pytest.fixture
def _chat_workspace(tmp_path: Path) -> Workspace:
    """Folders for the servers of one test, shared by chat_server and chat_server_process."""
    from chat.testing.servers import Workspace

    return Workspace(tmp_path / "chat")


@_async_fixture
async def chat_server(
    request: pytest.FixtureRequest, chat_config: Config, _chat_workspace: Workspace
) -> AsyncIterator[ServerFactory]:
    """`server = await chat_server(**sections)`: a running in-process server (a `chat.server.app.ChatServer`) on
    127.0.0.1 with free TCP and UDP ports: `.host .port .udp_port .config`, and `await server.restart()` on the same
    database and ports (clients resume by themselves). `sections` override chat_config:
    `await chat_server(limits={"burst": 5})`. A second server in a test gets its own database.
    With --chat-server, a handle to that server instead."""
    from chat.testing.servers import ServerFactory

    factory = ServerFactory(chat_config, _chat_workspace, external=_external(request.config))
    try:
        yield factory
    finally:
        await factory.aclose()


@_async_fixture
async def chat_server_process(
    request: pytest.FixtureRequest, chat_config: Config, _chat_workspace: Workspace
) -> AsyncIterator[ProcessFactory]:
    """`server = await chat_server_process(**sections)`: the real `chat-server` in a child process (for crash,
    signal and restart tests): `.host .port .udp_port .config .pid .output`, `.kill()` (SIGKILL), `.terminate()`
    (SIGTERM), `await .wait()` for the exit code, `await .restart()` on the same database and ports."""
    from chat.testing.process import ProcessFactory

    factory = ProcessFactory(chat_config, _chat_workspace, external=_external(request.config))
    try:
        yield factory
    finally:
        await factory.aclose()


@_async_fixture
async def chat_client(chat_server: ServerFactory, chat_server_process: ProcessFactory) -> AsyncIterator[ClientFactory]:
    """`client = await chat_client(server, nick=None, join=(), **options)`: a connected, logged-in
    `ChatTestClient` (a `chat.client.Client` with `await client.expect(...)`), in the rooms of `join`; a unique
    nick when none is given; `options` are `connect()`'s. Closed (with a clean quit) before any server of the
    test."""
    from chat.testing.client import ClientFactory

    factory = ClientFactory()
    try:
        yield factory
    finally:
        await factory.aclose()


@_async_fixture
async def chat_faults(chat_client: ClientFactory) -> AsyncIterator[ChatFaults]:
    """Faults to inject: `chat_faults.cut(client)` cuts its TCP link, `.stall(client)` / `.resume(client)` stop and
    restart its reading, `relay = await chat_faults.udp_relay(server, seed=1, loss=0.3, duplicate=..., reorder=...,
    delay=...)` puts a seeded lossy UDP relay in front of the server's UDP port (clients send to `relay.port`)."""
    from chat.testing.faults import ChatFaults

    faults = ChatFaults()
    try:
        yield faults
    finally:
        await faults.aclose()
