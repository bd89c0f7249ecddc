"""The pytest plugin (chat/pytest_plugin.py) and what it is built on (chat/testing/).

The project's own suite has the plugin loaded by its entry point, so the first part uses the fixtures directly.
The second part runs a user's test files with `pytester` in a subprocess (a fresh interpreter, a fresh ini, no
cache): strict mode with no settings at all, both event loops, `--chat-server`, the loop-scope trap, and every
example of docs/testing.md.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from chat.client import Client, ClientClosed, ConnectionEvent, ConnectionState, Message, Presence
from chat.config import load_config
from chat.pytest_plugin import loop_factories, parse_target
from chat.testing import ChatFaults, ChatTestClient, LinkFaults, UdpRelay, describe, unique_name
from chat.testing.config import config_toml, test_config
from chat.testing.servers import ServerHandle

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "testing.md"

ServerFactory = Callable[..., Awaitable[Any]]
ClientFactory = Callable[..., Awaitable[ChatTestClient]]


def resumed(event: ConnectionEvent) -> bool:
    return event.attempt > 0


# --- servers and clients -------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_two_clients_exchange_a_message_and_the_client_is_a_client(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server()
    assert isinstance(server, ServerHandle)
    assert server.host == "127.0.0.1" and server.port > 0 and server.udp_port > 0
    alice = await chat_client(server, "alice", join="lobby")
    bob = await chat_client(server, "bob", join=["lobby", "dev"])
    assert isinstance(bob, Client)
    assert bob.joined_rooms == ["lobby", "dev"]
    sent = await alice.say("hello, bob", room="lobby")
    assert await bob.expect("message", room="lobby", sender="alice", text="hello, bob") == sent


@pytest.mark.asyncio
async def test_unnamed_clients_get_distinct_nicks_and_unknown_options_are_refused(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server()
    first, second = await chat_client(server), await chat_client(server)
    assert first.nick != second.nick
    with pytest.raises(TypeError, match="no_such_option"):
        await chat_client(server, no_such_option=1)
    assert unique_name("alice") != unique_name("alice")
    assert unique_name("x" * 40).startswith("x" * 25 + "-") and len(unique_name("x" * 40)) <= 32


@pytest.mark.asyncio
async def test_a_client_of_a_server_with_a_secret_uses_it(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server(server={"secret": "s3cret"})
    client = await chat_client(server, "alice")
    assert client.welcome is not None


@pytest.mark.chat_config(history={"replay": 3}, limits={"max_text_chars": 100})
class TestConfiguration:
    @pytest.mark.chat_config(limits={"burst": 50})
    @pytest.mark.asyncio
    async def test_markers_then_factory_arguments_override_the_test_config_key_by_key(
        self, chat_config: Any, chat_server: ServerFactory
    ) -> None:
        assert (chat_config.history.replay, chat_config.limits.max_text_chars) == (3, 100)
        assert chat_config.limits.burst == 50
        assert chat_config.server.port == 0 and chat_config.server.nick_hold == 0
        server = await chat_server(limits={"burst": 7})
        assert (server.config.limits.burst, server.config.history.replay) == (7, 3)


@pytest.mark.asyncio
async def test_a_second_server_in_a_test_gets_its_own_database(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    first, second = await chat_server(), await chat_server()
    assert first.config.history.database != second.config.history.database
    alice = await chat_client(first, "alice", join="lobby")
    await alice.say("only on the first", room="lobby")
    bob = await chat_client(second, "bob")
    assert (await bob.history(room="lobby")).messages == []


@pytest.mark.asyncio
async def test_restart_keeps_the_ports_and_clients_resume_by_themselves(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server()
    ports = (server.port, server.udp_port)
    alice = await chat_client(server, "alice", join="lobby")
    bob = await chat_client(server, "bob", join="lobby")
    before = await alice.say("before", room="lobby")
    await server.restart()
    assert (server.port, server.udp_port) == ports
    await bob.expect("connection", state="disconnected", code="server_shutdown")
    await bob.expect("connection", resumed, state="connected")
    after = await alice.say("after", room="lobby")
    assert [await bob.expect("message") for _ in range(2)] == [before, after]


@pytest.mark.asyncio
async def test_a_server_process_is_killed_restarted_and_terminated(
    chat_server_process: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server_process()
    assert server.pid and server.running and "listening on" in server.log()
    alice = await chat_client(server, "alice", join="lobby")
    stored = await alice.say("acknowledged before the crash", room="lobby")
    server.kill()
    assert await server.wait() == -signal.SIGKILL
    await alice.expect("connection", state="disconnected")
    await server.restart()
    await alice.expect("connection", resumed, state="connected")
    assert stored.id in [m.id for m in (await alice.history(room="lobby")).messages]
    server.terminate()
    assert await server.wait() == 0
    await alice.expect("connection", state="disconnected", code="server_shutdown")


# --- expect ------------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_expect_leaves_skipped_events_queued_in_order_for_later(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice", join="lobby")
    bob = await chat_client(server, "bob", join="lobby")
    first = await bob.say("first", room="lobby")
    second = await bob.say("second", room="lobby")
    assert await alice.expect("message", text="second") == second
    assert await alice.expect(Presence, nick="bob", event="join")
    assert await alice.expect("message") == first
    assert [e.type for e in alice.backlog] == ["connection"]
    third = await bob.say("third", room="lobby")
    assert (await alice.recv(timeout=5)).type == "connection"  # recv gives the backlog first
    assert await alice.recv(timeout=5) == third


@pytest.mark.asyncio
async def test_expect_takes_a_class_a_predicate_and_fields(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice", join="lobby")
    bob = await chat_client(server, "bob", join="lobby")
    for i in range(5):
        await bob.say(f"n{i}", room="lobby")
    message = await alice.expect(Message, lambda m: m.text.endswith("3"), sender="bob")
    assert message.text == "n3"
    connected = await alice.expect(ConnectionEvent, state=ConnectionState.CONNECTED)
    assert connected.attempt == 0


@pytest.mark.asyncio
async def test_a_failed_expect_lists_what_arrived_instead(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice", join="lobby")
    bob = await chat_client(server, "bob", join="lobby")
    await bob.say("not what alice waits for", room="lobby")
    with pytest.raises(AssertionError) as failure:
        await alice.expect("message", text="hello", timeout=0.3)
    text = str(failure.value)
    assert text.startswith("alice: no message(text='hello') within 0.3 s; these 3 events arrived instead")
    assert "connection(state='connected'" in text
    assert "presence(room='lobby', nick='bob', event='join')" in text
    assert "text='not what alice waits for'" in text
    assert len(alice.backlog) == 3  # nothing lost by failing


@pytest.mark.asyncio
async def test_a_failed_expect_shortens_a_long_list(chat_server: ServerFactory, chat_client: ClientFactory) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice", join="lobby")
    bob = await chat_client(server, "bob", join="lobby")
    for i in range(30):
        await bob.say("x" * 300 + str(i), room="lobby")
    await alice.expect("message", text="x" * 300 + "29")
    with pytest.raises(AssertionError, match=r"these 31 events arrived instead(.|\n)*\.\.\. and 19 more") as failure:
        await alice.expect("message", text="never", timeout=0.1)
    assert all(len(line) <= 162 for line in str(failure.value).splitlines())


@pytest.mark.asyncio
async def test_expect_fails_at_once_when_the_client_ends(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice", reconnect=False)
    await server.restart()
    with pytest.raises(AssertionError, match=r"the client ended .* before message"):
        await alice.expect("message", timeout=30)
    assert [e.state for e in alice.backlog] == ["connected", "closed"]  # still there, for a later look
    assert [e.type async for e in alice] == ["connection", "connection"]
    with pytest.raises(ClientClosed):
        await alice.recv(timeout=1)


@pytest.mark.asyncio
async def test_expect_no_waits_for_silence_and_fails_on_a_match(
    chat_server: ServerFactory, chat_client: ClientFactory
) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice", join="lobby")
    bob = await chat_client(server, "bob", join="lobby")
    await alice.expect_no("message", within=0.05)
    await bob.say("now there is one", room="lobby")
    with pytest.raises(AssertionError, match=r"got message.*now there is one"):
        await alice.expect_no("message", within=5)
    assert (await alice.expect("message")).text == "now there is one"  # still there


def test_describe_shows_set_fields_and_list_lengths() -> None:
    message = Message(id=7, room="lobby", sender="bob", text="hi", ts=123)
    assert describe(message) == "message(id=7, room='lobby', sender='bob', text='hi')"
    assert describe(Message(id=1, room="r", sender="s", text="y" * 500, ts=0)).endswith("…")


# --- TCP faults --------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_cut_client_resumes_and_gets_everything_once_in_order(
    chat_server: ServerFactory, chat_client: ClientFactory, chat_faults: ChatFaults
) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice", join="lobby")
    bob = await chat_client(server, "bob", join="lobby")
    chat_faults.cut(bob)
    sent = [await alice.say(f"m{i}", room="lobby") for i in range(20)]
    await bob.expect("connection", state="disconnected")
    await bob.expect("connection", resumed, state="connected")
    assert [await bob.expect("message") for _ in sent] == sent
    await bob.expect_no("message", within=0.1)


@pytest.mark.asyncio
async def test_a_stalled_client_reads_nothing_until_resumed(
    chat_server: ServerFactory, chat_client: ClientFactory, chat_faults: ChatFaults
) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice", join="lobby")
    bob = await chat_client(server, "bob", join="lobby")
    chat_faults.stall(bob)
    with pytest.raises(RuntimeError, match="not stalled"):
        chat_faults.resume(alice)
    sent = await alice.say("held in the socket", room="lobby")
    await bob.expect_no("message", within=0.2)
    chat_faults.resume(bob)
    assert await bob.expect("message") == sent


@pytest.mark.asyncio
async def test_a_client_still_stalled_at_the_end_is_resumed_and_closes_cleanly(
    chat_server: ServerFactory, chat_client: ClientFactory, chat_faults: ChatFaults
) -> None:
    server = await chat_server()
    bob = await chat_client(server, "bob", join="lobby")
    chat_faults.stall(bob)
    with pytest.raises(TimeoutError):  # the ping goes out; the pong waits in the socket
        await asyncio.wait_for(bob.ping(), 0.2)


# --- the UDP relay, against a toy echo server on loopback ------------------------------------------------------


class Datagrams(asyncio.DatagramProtocol):
    """A UDP socket that queues what it receives (and, as `echo`, sends it back)."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.queue: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait((data, addr))
        if self.echo and self.transport is not None:
            self.transport.sendto(data, addr)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, address)

    async def take(self, count: int, timeout: float = 5.0) -> list[bytes]:
        """The next `count` datagrams; AssertionError saying how many came if they do not within `timeout`."""
        got: list[bytes] = []
        try:
            async with asyncio.timeout(timeout):
                while len(got) < count:
                    got.append((await self.queue.get())[0])
        except TimeoutError:
            raise AssertionError(f"got {len(got)} of {count} datagrams: {got[:10]}") from None
        return got


SocketFactory = Callable[..., Awaitable[Datagrams]]


@pytest_asyncio.fixture
async def udp_socket() -> AsyncIterator[SocketFactory]:
    sockets: list[Datagrams] = []

    async def open_socket(echo: bool = False) -> Datagrams:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(lambda: Datagrams(echo), local_addr=("127.0.0.1", 0))
        sockets.append(protocol)
        return protocol

    yield open_socket
    for sock in reversed(sockets):
        assert sock.transport is not None
        sock.transport.close()


async def send_through(relay: UdpRelay, sock: Datagrams, payloads: list[bytes], batch: int = 25) -> None:
    """Send in batches that the relay has taken in before the next: no loss in the kernel's socket buffers."""
    for start in range(0, len(payloads), batch):
        chunk = payloads[start : start + batch]
        for data in chunk:
            sock.send(data, relay.address)
        total = start + len(chunk)
        await relay.wait_until(lambda stats, total=total: stats.up.received >= total)  # type: ignore[misc]


def numbered(count: int) -> list[bytes]:
    return [b"%d" % i for i in range(count)]


async def arrivals_with_loss(udp_socket: SocketFactory, seed: int, **faults: Any) -> list[int]:
    echo, client = await udp_socket(), await udp_socket()
    async with UdpRelay(("127.0.0.1", echo.port), seed=seed, up=LinkFaults(**faults)) as relay:
        await send_through(relay, client, numbered(400))
        got = await echo.take(relay.stats.up.delivered)
        stats = relay.stats.up
        assert stats.received == 400 and stats.dropped + stats.delivered - stats.duplicated == 400
    return sorted({int(data) for data in got})


@pytest.mark.asyncio
async def test_relay_loss_is_near_its_rate_and_the_same_for_the_same_seed(udp_socket: SocketFactory) -> None:
    first = await arrivals_with_loss(udp_socket, seed=1, loss=0.3)
    assert 400 * 0.6 < len(first) < 400 * 0.8
    assert await arrivals_with_loss(udp_socket, seed=1, loss=0.3) == first
    assert await arrivals_with_loss(udp_socket, seed=2, loss=0.3) != first
    # the other faults draw their own numbers: doubling some datagrams loses the same ones
    assert await arrivals_with_loss(udp_socket, seed=1, loss=0.3, duplicate=0.5) == first


@pytest.mark.asyncio
async def test_relay_duplicates_every_datagram_with_duplicate_one(udp_socket: SocketFactory) -> None:
    echo, client = await udp_socket(), await udp_socket()
    async with UdpRelay(("127.0.0.1", echo.port), up=LinkFaults(duplicate=1.0)) as relay:
        await send_through(relay, client, numbered(10))
        assert sorted(await echo.take(20)) == sorted(numbered(10) * 2)
        assert (relay.stats.up.duplicated, relay.stats.up.delivered) == (10, 20)


@pytest.mark.asyncio
async def test_relay_reorder_swaps_each_held_datagram_with_the_next(udp_socket: SocketFactory) -> None:
    echo, client = await udp_socket(), await udp_socket()
    async with UdpRelay(("127.0.0.1", echo.port), up=LinkFaults(reorder=1.0), hold_timeout=30) as relay:
        await send_through(relay, client, numbered(6), batch=6)
        assert await echo.take(6) == [b"1", b"0", b"3", b"2", b"5", b"4"]
        assert relay.stats.up.reordered == 3


@pytest.mark.asyncio
async def test_relay_releases_a_held_datagram_when_nothing_follows(udp_socket: SocketFactory) -> None:
    echo, client = await udp_socket(), await udp_socket()
    async with UdpRelay(("127.0.0.1", echo.port), up=LinkFaults(reorder=1.0), hold_timeout=0.01) as relay:
        await send_through(relay, client, [b"alone"])
        assert await echo.take(1) == [b"alone"]
        assert relay.stats.up.reordered == 0


@pytest.mark.asyncio
async def test_relay_delay_holds_datagrams_at_least_that_long_and_within_bounds(udp_socket: SocketFactory) -> None:
    echo, client = await udp_socket(), await udp_socket()
    faults = LinkFaults(delay=1.0, delay_range=(0.2, 0.2))
    async with UdpRelay(("127.0.0.1", echo.port), up=faults, max_queue=3) as relay:
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        await send_through(relay, client, numbered(5))
        assert sorted(await echo.take(3)) == numbered(3)
        assert loop.time() - sent_at >= 0.19  # a lower bound only: a slow machine never fails it
        assert (relay.stats.up.delayed, relay.stats.up.overflowed) == (3, 2)


@pytest.mark.asyncio
async def test_relay_carries_replies_back_per_client_and_faults_each_direction(udp_socket: SocketFactory) -> None:
    echo = await udp_socket(echo=True)
    one, two = await udp_socket(), await udp_socket()
    async with UdpRelay(("127.0.0.1", echo.port)) as relay:
        one.send(b"from one", relay.address)
        two.send(b"from two", relay.address)
        assert await one.take(1) == [b"from one"]
        assert await two.take(1) == [b"from two"]
        assert len(relay.peers) == 2
        relay.down = LinkFaults(loss=1.0)
        await send_through(relay, one, numbered(5))
        await relay.wait_until(lambda stats: stats.down.dropped == 5)
        assert relay.stats.up.delivered == 7 and one.queue.empty()
        relay.heal()
        one.send(b"healed", relay.address)
        assert await one.take(1) == [b"healed"]
        relay.partition()
        one.send(b"lost", relay.address)
        await relay.wait_until(lambda stats: stats.up.dropped == 1)


@pytest.mark.asyncio
async def test_relay_wait_until_fails_with_the_counters(udp_socket: SocketFactory) -> None:
    echo = await udp_socket()
    async with UdpRelay(("127.0.0.1", echo.port)) as relay:
        with pytest.raises(AssertionError, match="up: received 0, delivered 0"):
            await relay.wait_until(lambda stats: stats.up.received > 0, timeout=0.05)


def test_link_faults_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="loss"):
        LinkFaults(loss=1.5)
    with pytest.raises(ValueError, match="delay_range"):
        LinkFaults(delay_range=(0.2, 0.1))


@pytest.mark.asyncio
async def test_chat_faults_puts_a_relay_in_front_of_the_servers_udp_port(
    chat_server: ServerFactory, chat_faults: ChatFaults, udp_socket: SocketFactory
) -> None:
    server = await chat_server()
    relay = await chat_faults.udp_relay(server, seed=3, loss=0.0, down=LinkFaults(loss=1.0))
    assert relay.target == ("127.0.0.1", server.udp_port) and relay.port not in (0, server.udp_port)
    assert relay.up == LinkFaults() and relay.down.loss == 1.0
    client = await udp_socket()
    client.send(b"\x01" * 40, relay.address)  # not a valid datagram: the server drops it silently
    await relay.wait_until(lambda stats: stats.up.delivered == 1)


# --- the plugin module --------------------------------------------------------------------------------------------


def test_config_toml_reads_back_to_the_same_config(tmp_path: Path) -> None:
    config = test_config(tmp_path / 'we"ird\\dir ü', limits={"burst": 5})
    path = tmp_path / "config.toml"
    path.write_text(config_toml(config), encoding="utf-8")
    assert load_config(path, environ={}) == config


def test_parse_target_takes_host_port_and_ipv6() -> None:
    assert parse_target("127.0.0.1:7777") == ("127.0.0.1", 7777, 7777)
    assert parse_target("[::1]:9000", 9001) == ("::1", 9000, 9001)
    for bad in ("7777", "host:", "host:0", "host:70000", ":7777"):
        with pytest.raises(pytest.UsageError):
            parse_target(bad)


def test_loop_factories_name_asyncio_and_uvloop() -> None:
    assert set(loop_factories()) == {"asyncio", "uvloop"}
    assert list(loop_factories("uvloop")) == ["uvloop"]
    with pytest.raises(ValueError, match="trio"):
        loop_factories("trio")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)


def test_importing_the_plugin_imports_nothing_heavy() -> None:
    heavy = ["chat.server", "chat.client", "chat.testing", "chat.config", "msgspec", "sqlite3", "uvloop"]
    result = run_python(f"import sys, chat.pytest_plugin; print([m for m in {heavy!r} if m in sys.modules])")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_without_pytest_asyncio_the_plugin_loads_and_its_fixtures_say_what_to_install(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_python("import sys; sys.modules['pytest_asyncio'] = None; import chat.pytest_plugin; print('loaded')")
    assert result.returncode == 0 and result.stdout.strip() == "loaded", result.stderr
    # a whole pytest session where pytest-asyncio cannot be imported: unrelated tests still run
    blocker = pytester.mkdir("no_asyncio")
    (blocker / "pytest_asyncio.py").write_text("raise ImportError('pytest-asyncio is not installed here')\n")
    monkeypatch.setenv("PYTHONPATH", str(blocker))
    pytester.makeini(EMPTY_INI)
    pytester.makepyfile(
        "def test_unrelated():\n    assert 1 + 1 == 2\n\ndef test_asks_for_a_server(chat_server):\n    pass\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:asyncio")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*need pytest-asyncio>=1.4*"])


# --- a user's test files, run by pytester -------------------------------------------------------------------------

# No ini settings at all: the empty [pytest] section only stops pytest from looking further up for one.
EMPTY_INI = "[pytest]\n"
RUN = ("-p", "no:cacheprovider", "-W", "error::pytest.PytestUnraisableExceptionWarning")

USER_TESTS = """
    import asyncio

    import pytest

    from chat.client import Client

    pytestmark = pytest.mark.chat_config(history={"replay": 4})


    def resumed(event):
        return event.attempt > 0


    @pytest.mark.asyncio
    async def test_the_loop(request):
        loop = type(asyncio.get_running_loop()).__module__
        assert ("uvloop" in loop) == ("uvloop" in request.node.name), loop


    @pytest.mark.asyncio
    async def test_config_server_and_clients(chat_config, chat_server, chat_client):
        assert chat_config.history.replay == 4
        server = await chat_server(limits={"burst": 9})
        assert server.config.limits.burst == 9
        alice = await chat_client(server, "alice", join="lobby")
        bob = await chat_client(server, join="lobby")
        assert isinstance(bob, Client)
        await alice.say("hello", room="lobby")
        await bob.expect("message", sender="alice", text="hello")


    @pytest.mark.chat_config(history={"replay": 2})
    def test_marker_on_the_test_wins(chat_config):
        assert chat_config.history.replay == 2


    @pytest.mark.asyncio
    async def test_restart_and_faults(chat_server, chat_client, chat_faults):
        server = await chat_server()
        alice = await chat_client(server, "alice", join="lobby")
        bob = await chat_client(server, "bob", join="lobby")
        chat_faults.cut(bob)
        await bob.expect("connection", resumed, state="connected")
        chat_faults.stall(bob)
        await alice.say("while stalled", room="lobby")
        chat_faults.resume(bob)
        await bob.expect("message", text="while stalled")
        await server.restart()
        await alice.expect("connection", resumed, state="connected")
        await alice.say("after the restart", room="lobby")
        await bob.expect("message", text="after the restart")


    @pytest.mark.asyncio
    async def test_udp_relay(chat_server, chat_faults):
        server = await chat_server()
        relay = await chat_faults.udp_relay(server, seed=1, loss=0.5)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        for _ in range(20):
            transport.sendto(b"x" * 30, relay.address)
        stats = await relay.wait_until(lambda s: s.up.received == 20)
        assert stats.up.dropped + stats.up.delivered == 20
        transport.close()


    @pytest.mark.asyncio
    async def test_server_process(chat_server_process, chat_client):
        server = await chat_server_process()
        alice = await chat_client(server, "alice")
        server.kill()
        assert await server.wait() == -9
        await server.restart()
        await alice.expect("connection", resumed, state="connected")
        server.terminate()
        assert await server.wait() == 0


    @pytest.mark.asyncio
    async def test_a_failing_expectation(chat_server, chat_client):
        server = await chat_server()
        alice = await chat_client(server, "alice")
        await alice.expect("message", text="never sent", timeout=0.2)
"""

LOOP_FACTORIES_CONFTEST = """
    from chat.pytest_plugin import loop_factories


    def pytest_asyncio_loop_factories(config, item):
        return loop_factories("asyncio", "uvloop")
"""


def user_project(pytester: pytest.Pytester, **files: str) -> None:
    pytester.makeini(EMPTY_INI)
    pytester.makepyfile(**{name: textwrap.dedent(text) for name, text in files.items()})


def check_failing_expectation(result: pytest.RunResult) -> None:
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: alice: no message(text='never sent') within 0.2 s; this event arrived instead (oldest*",
            "*connection(state='connected', reason='logged in', attempt=0)*",
        ]
    )
    # The failure points at the user's line, not at the plugin's source (its frames are hidden from the report)
    assert 'raise AssertionError(f"{self.nick}: no' not in result.stdout.str()


def test_a_users_file_uses_every_fixture_in_strict_mode_with_no_settings(pytester: pytest.Pytester) -> None:
    user_project(pytester, test_user=USER_TESTS)
    result = pytester.runpytest_subprocess(*RUN)  # no -p: the entry point loads the plugin
    result.assert_outcomes(passed=6, failed=1)
    result.stdout.fnmatch_lines(["*plugins:*lanroom-*", "*asyncio: mode=Mode.STRICT*"])
    check_failing_expectation(result)


def test_a_users_file_runs_on_asyncio_and_uvloop(pytester: pytest.Pytester) -> None:
    user_project(pytester, test_user=USER_TESTS, conftest=LOOP_FACTORIES_CONFTEST)
    result = pytester.runpytest_subprocess(*RUN, "-o", "asyncio_mode=strict", "-v")
    result.assert_outcomes(passed=11, failed=2)  # the sync test runs once
    result.stdout.fnmatch_lines(
        ["*test_the_loop?asyncio? PASSED*", "*test_the_loop?uvloop? PASSED*", "*test_server_process?uvloop? PASSED*"]
    )


def test_the_fixtures_are_listed_with_their_docs(pytester: pytest.Pytester) -> None:
    pytester.makeini(EMPTY_INI)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--fixtures")
    result.stdout.fnmatch_lines(
        [
            "*chat_config*",
            "*chat_server*",
            "*chat_server_process*",
            "*chat_client*",
            "*chat_faults*",
        ]
    )
    assert "_chat_workspace" not in result.stdout.str()


def test_a_test_on_another_loop_than_the_fixtures_fails_with_a_clear_message(pytester: pytest.Pytester) -> None:
    user_project(
        pytester,
        test_trap="""
            import pytest


            @pytest.mark.asyncio(loop_scope="module")
            async def test_on_the_module_loop(chat_server):
                await chat_server()
        """,
    )
    result = pytester.runpytest_subprocess(*RUN)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*RuntimeError: chat_server was set up on another event loop*Loop scopes*"])


def test_a_client_of_a_server_on_a_loop_that_is_not_running_fails_with_a_clear_message(
    pytester: pytest.Pytester,
) -> None:
    user_project(
        pytester,
        test_trap="""
            import pytest
            import pytest_asyncio

            from chat.testing import serve, test_config


            @pytest_asyncio.fixture(scope="module", loop_scope="module")
            async def module_server(tmp_path_factory):
                async with serve(test_config(tmp_path_factory.mktemp("chat"))) as server:
                    yield server


            @pytest.mark.asyncio
            async def test_on_the_function_loop(module_server, chat_client):
                await chat_client(module_server)
        """,
    )
    result = pytester.runpytest_subprocess(*RUN)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*RuntimeError: <chat.server.app.ChatServer*another event loop*Loop scopes*"])


EXTERNAL_TESTS = """
            import pytest


            @pytest.mark.asyncio
            async def test_talks_to_it(chat_server, chat_client):
                server = await chat_server()
                assert server.port == PORT
                alice = await chat_client(server, join="lobby")
                bob = await chat_client(server, join="lobby")
                await alice.say("over there", room="lobby")
                await bob.expect("message", sender=alice.nick, text="over there")


            @pytest.mark.asyncio
            async def test_restart_is_skipped(chat_server):
                await (await chat_server()).restart()


            @pytest.mark.asyncio
            async def test_overrides_are_skipped(chat_server):
                await chat_server(limits={"burst": 1})


            @pytest.mark.asyncio
            async def test_a_process_is_skipped(chat_server_process):
                await chat_server_process()
"""


def test_chat_server_option_points_the_fixtures_at_a_running_server(pytester: pytest.Pytester, tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "chat.cli", "--config", str(write_config(tmp_path)), "--log-level", "warning"],
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        try:
            assert server.stderr is not None
            match = re.search(r"tcp://127\.0\.0\.1:(\d+) udp://127\.0\.0\.1:(\d+)", server.stderr.readline())
            assert match, "no listening line"
            user_project(pytester, test_external=EXTERNAL_TESTS.replace("PORT", match[1]))
            result = pytester.runpytest_subprocess(*RUN, "-rs", f"--chat-server=127.0.0.1:{match[1]}")
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=10)
    result.assert_outcomes(passed=1, skipped=3)
    result.stdout.fnmatch_lines(
        [
            f"chat: fixtures target the external server at 127.0.0.1:{match[1]} (udp {match[1]}), from --chat-server",
            "*needs to restart the server, and --chat-server=127.0.0.1:* is not ours to restart*",
            "*needs a server configured with [[]limits[]] {'burst': 1}*",
            "*needs its own chat-server process*",
        ]
    )


def write_config(folder: Path) -> Path:
    path = folder / "config.toml"
    path.write_text(config_toml(test_config(folder)), encoding="utf-8")
    return path


def test_a_malformed_chat_server_option_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini(EMPTY_INI)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--chat-server=nowhere")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--chat-server expects HOST:PORT*'nowhere'*"])


def doc_files() -> dict[str, str]:
    """The complete files in docs/testing.md: code blocks whose first line is `# <path>`."""
    blocks = re.findall(r"```(?:python|toml)\n# (\S+\.(?:py|toml))\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    return dict(blocks)


def test_the_ten_line_example_runs(pytester: pytest.Pytester) -> None:
    text = DOCS.read_text(encoding="utf-8")
    first = re.search(r"A whole test:\n\n```python\n(.*?)```", text, re.S)
    assert first and len(first[1].splitlines()) == 10
    user_project(pytester, test_hello=first[1])
    pytester.runpytest_subprocess(*RUN).assert_outcomes(passed=1)


def test_the_examples_of_the_guide_run(pytester: pytest.Pytester) -> None:
    files = doc_files()
    assert {"test_bot.py", "test_resume.py", "test_quick_loss.py", "conftest.py"} <= set(files)
    pytester.makeini(EMPTY_INI)
    for name, text in files.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    result = pytester.runpytest_subprocess(*RUN, "-rs", "test_bot.py", "test_resume.py", "test_quick_loss.py")
    result.assert_outcomes(passed=8)  # on both loops (the conftest)
    shared = pytester.runpytest_subprocess(*RUN, "shared")
    shared.assert_outcomes(passed=2)
