"""Shared test settings. Fixtures for the server and client suites are added below this profile."""

from __future__ import annotations

import os

from hypothesis import settings

# Machines running the suite are shared and noisy: no per-example deadline, and few enough examples that the whole
# protocol suite stays at a few seconds. HYPOTHESIS_PROFILE=chat-thorough runs a deeper search on demand.
settings.register_profile("chat", deadline=None, max_examples=60)
settings.register_profile("chat-thorough", deadline=None, max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "chat"))


# --- real servers and raw connections for the server suites ----------------------------------------------------

from collections.abc import AsyncIterator, Awaitable, Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest_asyncio  # noqa: E402
from rawwire import RawConnection  # noqa: E402

from chat.config import Config, config_with  # noqa: E402
from chat.server.app import ChatServer  # noqa: E402


def make_config(tmp_path: Path, **sections: dict[str, Any]) -> Config:
    """Loopback, free ports, a database in tmp_path, generous limits; `sections` override keys."""
    base = config_with(
        Config(),
        server={"host": "127.0.0.1", "port": 0, "udp_port": 0, "nick_hold": 0},
        limits={
            "messages_per_second": 10_000,
            "burst": 10_000,
            "max_connections_per_address": 0,
            "max_unauthenticated_per_address": 0,
            "connections_per_minute_per_address": 0,
            "logins_per_minute_per_address": 0,
            "identities_per_hour_per_address": 0,
            "stored_bytes_per_hour_per_identity": 0,
        },
        history={"database": str(tmp_path / "chat.db")},
        files={"directory": str(tmp_path / "files")},
    )
    return config_with(base, **sections) if sections else base


ServerFactory = Callable[..., Awaitable[ChatServer]]
ConnectFactory = Callable[..., Awaitable[RawConnection]]


@pytest_asyncio.fixture
async def make_server(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """Start in-process servers on 127.0.0.1 port 0; each closes at the end of the test, newest first."""
    servers: list[ChatServer] = []

    async def start(**sections: dict[str, Any]) -> ChatServer:
        server = ChatServer(make_config(tmp_path, **sections))
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        await server.close()


@pytest_asyncio.fixture
async def server(make_server: ServerFactory) -> ChatServer:
    """One server with the test configuration."""
    return await make_server()


@pytest_asyncio.fixture
async def connect(server: ChatServer) -> AsyncIterator[ConnectFactory]:
    """Open raw connections (optionally logged in) to `server`, or to another server given as `to=`."""
    opened: list[RawConnection] = []

    async def open_connection(
        nick: str | None = None, *, to: ChatServer | None = None, rcvbuf: int | None = None, **login: Any
    ) -> RawConnection:
        target = to or server
        conn = await RawConnection.open("127.0.0.1", target.port, rcvbuf=rcvbuf)
        opened.append(conn)
        if nick is not None:
            answer = await conn.login(nick, **login)
            assert answer["type"] == "welcome", f"login as {nick!r} refused: {answer}"
        return conn

    yield open_connection
    for conn in reversed(opened):
        await conn.close()
