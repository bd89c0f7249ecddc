"""Support for async integration tests against a chat server: what the `chat_*` pytest fixtures are built on.

The fixtures (`chat.pytest_plugin`, loaded by pytest through its `pytest11` entry point) cover a test's needs; these
pieces are for fixtures of a broader scope, for other test runners, and for type hints:

- `test_config(folder, **sections)`: the test configuration (`chat_config`).
- `serve(config)`: an in-process server as an async context manager; `ServerHandle`, what every server offers.
- `ServerProcess`: the real `chat-server` in a child process (`chat_server_process`).
- `ChatTestClient`: a `chat.client.Client` with `expect()` and `expect_no()` (`chat_client`); `open_client()`.
- `ChatFaults`, `UdpRelay`, `LinkFaults`: fault injection (`chat_faults`).
- `unique_name()`: nicks and rooms that never collide, for tests against a shared or external server.

See docs/testing.md.
"""

from chat.testing.client import ChatTestClient, ClientFactory, describe, open_client, unique_name
from chat.testing.config import test_config
from chat.testing.faults import ChatFaults
from chat.testing.process import ProcessFactory, ServerProcess
from chat.testing.relay import LinkFaults, LinkStats, RelayStats, UdpRelay
from chat.testing.servers import ExternalServer, ExternalTarget, ServerFactory, ServerHandle, Workspace, serve

__all__ = [
    "ChatFaults",
    "ChatTestClient",
    "ClientFactory",
    "ExternalServer",
    "ExternalTarget",
    "LinkFaults",
    "LinkStats",
    "ProcessFactory",
    "RelayStats",
    "ServerFactory",
    "ServerHandle",
    "ServerProcess",
    "UdpRelay",
    "Workspace",
    "describe",
    "open_client",
    "serve",
    "test_config",
    "unique_name",
]
