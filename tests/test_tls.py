"""TLS: the TLS port beside the plain one, the client's trust (first use, pinned, CA file), refusals, the handshake
timeout, start-up errors, and the terminal client over TLS. Real sockets on 127.0.0.1; certificates made per test."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import stat
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography import x509
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from test_startup_errors import assert_one_clear_line, start_server
from test_tui_app import Tui
from tlscerts import CertFiles, ca_signed, self_signed

from chat.certs import main as make_cert_main
from chat.client import Client, ConnectionEvent, ConnectionState, Message, UntrustedCertificate, connect
from chat.client.errors import KnownHostsError
from chat.client.trust import KnownHosts, TrustMode, parse_fingerprint, server_address
from chat.config import ConfigError, config_with, load_config
from chat.core.admission import address_key
from chat.server.app import ChatServer
from chat.server.tls import TlsUnavailable, server_context
from chat.tui.app import ChatApp
from chat.tui.controller import Settings
from chat.tui.model import LinkState
from chat.tui.state import StateStore

WAIT = 10.0
ServerFactory = Callable[..., Awaitable[ChatServer]]


def tls_sections(cert: CertFiles, **server: Any) -> dict[str, Any]:
    return {"tls_port": 0, "tls_cert": str(cert.cert), "tls_key": str(cert.key), **server}


@pytest_asyncio.fixture
async def cert(tmp_path: Path) -> CertFiles:
    return self_signed(tmp_path / "cert-a", "127.0.0.1")


@pytest_asyncio.fixture
async def tls_server(make_server: ServerFactory, cert: CertFiles) -> ChatServer:
    return await make_server(server=tls_sections(cert))


@pytest_asyncio.fixture
async def chat_tls(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """`await chat_tls(server, "alice", ...)`: a TLS client with a known-hosts file in tmp_path; closed at the end."""
    clients: list[Client] = []

    async def start(server: ChatServer, nick: str, **options: Any) -> Client:
        assert server.tls_port is not None
        options.setdefault("tls", True)
        options.setdefault("known_hosts", tmp_path / "known_hosts")
        client = await connect("127.0.0.1", server.tls_port, nick=nick, reconnect=False, **options)
        clients.append(client)
        return client

    yield start
    for client in reversed(clients):
        await client.close()


async def next_message(client: Client, text: str) -> Message:
    async with asyncio.timeout(WAIT):
        while True:
            event = await client.recv()
            if isinstance(event, Message) and event.text == text:
                return event


# --- the server ---------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_tls_login_and_chat_work_while_the_plain_port_still_serves(
    tls_server: ChatServer, chat_tls: Callable[..., Awaitable[Client]], cert: CertFiles, tmp_path: Path
) -> None:
    alice = await chat_tls(tls_server, "alice")
    assert alice.certificate is not None and alice.certificate.fingerprint == cert.fingerprint
    assert alice.udp_state == "off", "with TLS, quick messages stay on the encrypted connection"
    async with connect("127.0.0.1", tls_server.port, nick="bob", reconnect=False) as bob:
        assert bob.certificate is None
        await alice.join("lobby")
        await bob.join("lobby")
        await bob.say("over plain TCP", room="lobby")
        await next_message(alice, "over plain TCP")
        await alice.say("over TLS", room="lobby")
        await next_message(bob, "over TLS")
        receipt = await alice.quick("quick over TLS", to="bob")
        assert receipt.via == "tcp"
    assert f"tls://127.0.0.1:{tls_server.tls_port}" in tls_server.listening_line
    assert f"tcp://127.0.0.1:{tls_server.port}" in tls_server.listening_line


@pytest.mark.asyncio
async def test_without_a_certificate_there_is_no_tls_port(server: ChatServer) -> None:
    assert server.tls_port is None
    assert "tls://" not in server.listening_line


@pytest.mark.asyncio
async def test_a_client_that_never_handshakes_is_cut_at_the_handshake_timeout_and_uncounted(
    make_server: ServerFactory, cert: CertFiles
) -> None:
    timeout = 0.3
    server = await make_server(
        server=tls_sections(cert), limits={"tls_handshake_timeout": timeout, "login_timeout": 60}
    )
    assert server.tls_port is not None
    loop = asyncio.get_running_loop()
    started = loop.time()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.tls_port)
    try:
        async with asyncio.timeout(WAIT):  # the login timeout (60 s) cannot be what cuts it within this
            with contextlib.suppress(ConnectionResetError):  # a reset is a cut as well
                assert await reader.read(1024) == b"", "no frame before TLS is up"
        elapsed = loop.time() - started
    finally:
        writer.close()
    assert elapsed >= timeout * 0.9, f"cut after {elapsed:.2f} s, before the handshake timeout"
    assert server.addresses.connections_of(address_key("127.0.0.1")) == 0


@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
async def test_tls_1_1_is_refused_by_the_server(tls_server: ChatServer, cert: CertFiles) -> None:
    assert tls_server.tls_port is not None
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    try:
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        old.minimum_version = ssl.TLSVersion.TLSv1_1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot offer TLS 1.1")
    # A control: a server context that allows TLS 1.1 takes this client, so the refusal below is the server's.
    permissive = server_context(str(cert.cert), str(cert.key))
    permissive.minimum_version = ssl.TLSVersion.TLSv1
    with contextlib.suppress(ssl.SSLError):
        permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    control = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=permissive)
    try:
        port = control.sockets[0].getsockname()[1]
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=old)
        except ssl.SSLError as exc:
            pytest.skip(f"this OpenSSL does not speak TLS 1.1 at all: {exc}")
        writer.close()
    finally:
        control.close()
    # The server aborts a failed handshake, so its protocol_version alert may be cut off by the close: a reset.
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        await asyncio.open_connection("127.0.0.1", tls_server.tls_port, ssl=old)


@pytest.mark.asyncio
async def test_a_missing_certificate_is_named_in_process(make_server: ServerFactory, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "cert.pem"
    with pytest.raises(TlsUnavailable, match=str(missing)):
        await make_server(server={"tls_port": 0, "tls_cert": str(missing)})


def test_a_missing_certificate_file_is_one_clear_line_at_start_up(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-cert.pem"
    line = assert_one_clear_line(start_server(tmp_path, "--tls-port", "0", "--tls-cert", str(missing)), str(missing))
    assert "no such file" in line


def test_a_key_that_does_not_match_the_certificate_is_one_clear_line(tmp_path: Path) -> None:
    first = self_signed(tmp_path / "one")
    second = self_signed(tmp_path / "two")
    result = start_server(tmp_path, "--tls-port", "0", "--tls-cert", str(first.cert), "--tls-key", str(second.key))
    assert_one_clear_line(result, str(first.cert), str(second.key))


@pytest.mark.asyncio
async def test_the_real_chat_server_on_uvloop_serves_tls_and_names_it(tmp_path: Path) -> None:
    pytest.importorskip("uvloop")
    cert = self_signed(tmp_path / "cert")
    command = [sys.executable, "-m", "chat.cli", "--host", "127.0.0.1", "--port", "0", "--udp-port", "0",
               "--tls-port", "0", "--tls-cert", str(cert.cert), "--tls-key", str(cert.key),
               "--database", str(tmp_path / "chat.db"), "--loop", "uvloop"]  # fmt: skip
    env = {name: value for name, value in os.environ.items() if not name.startswith("CHAT_")}
    proc = await asyncio.create_subprocess_exec(*command, cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(30):
            while b"listening on" not in (line := await proc.stderr.readline()):
                assert line, "chat-server exited before listening"
        text = line.decode()
        port = int(text.rsplit("tls://127.0.0.1:", 1)[1].split()[0])
        async with connect("127.0.0.1", port, nick="alice", fingerprint=cert.fingerprint, reconnect=False) as alice:
            assert alice.certificate is not None and alice.certificate.mode is TrustMode.PINNED
            await alice.join("lobby")
            await next_message(alice, (await alice.say("hello over TLS on uvloop", room="lobby")).text)
    finally:
        proc.terminate()
        assert proc.stderr is not None
        rest = await proc.stderr.read()
        await proc.wait()
        print(rest.decode())


# --- the client's trust -------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_trust_on_first_use_records_the_fingerprint_then_accepts_it(
    tls_server: ChatServer, chat_tls: Callable[..., Awaitable[Client]], cert: CertFiles, tmp_path: Path
) -> None:
    first = await chat_tls(tls_server, "alice")
    assert first.certificate is not None and first.certificate.first_use
    known = tmp_path / "known_hosts"
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    address = server_address("127.0.0.1", tls_server.tls_port or 0)
    assert KnownHosts(known).lookup(address) == cert.fingerprint
    before = known.read_bytes()
    again = await chat_tls(tls_server, "bob")
    assert again.certificate is not None and not again.certificate.first_use
    assert again.certificate.mode is TrustMode.FIRST_USE
    assert known.read_bytes() == before


@pytest.mark.asyncio
async def test_a_changed_certificate_is_refused_naming_both_fingerprints_and_the_way_to_accept_it(
    make_server: ServerFactory, cert: CertFiles, chat_tls: Callable[..., Awaitable[Client]], tmp_path: Path
) -> None:
    server = await make_server(server=tls_sections(cert))
    port = server.tls_port
    await (await chat_tls(server, "alice")).close()
    await server.close()
    other = self_signed(tmp_path / "cert-b", "127.0.0.1")
    impostor = await make_server(server=tls_sections(other, tls_port=port))
    with pytest.raises(UntrustedCertificate) as refused:
        await chat_tls(impostor, "alice")
    message = str(refused.value)
    assert "HAS CHANGED" in message
    assert cert.fingerprint in message and other.fingerprint in message
    assert str(tmp_path / "known_hosts") in message and "delete the line" in message
    assert (refused.value.expected, refused.value.found) == (cert.fingerprint, other.fingerprint)
    assert not impostor.connections or all(s.identity == 0 for s in impostor.connections), "no login reached it"


@pytest.mark.asyncio
async def test_a_resuming_client_keeps_tls_and_ends_when_the_certificate_changes(
    tls_server: ChatServer, tmp_path: Path
) -> None:
    async with connect(
        "127.0.0.1",
        tls_server.tls_port or 0,
        nick="alice",
        tls=True,
        known_hosts=tmp_path / "known_hosts",
        backoff_initial=0.05,
        backoff_max=0.1,
    ) as alice:
        await alice.join("lobby")
        alice.certificate = None
        alice.drop_connection()
        await next_message(alice, (await alice.say("after a resume", room="lobby")).text)
        assert alice.certificate is not None, "the resume was checked over TLS again"
        other = self_signed(tmp_path / "cert-b", "127.0.0.1")
        tls_server.config = config_with(
            tls_server.config, server={"tls_cert": str(other.cert), "tls_key": str(other.key)}
        )
        await tls_server.restart()
        async with asyncio.timeout(WAIT):
            async for event in alice:
                if isinstance(event, ConnectionEvent) and event.state is ConnectionState.CLOSED:
                    break
        assert alice.closed
        assert alice.close_reason is not None and "HAS CHANGED" in alice.close_reason.reason


@pytest.mark.asyncio
async def test_a_pinned_fingerprint_is_accepted_and_another_refused_without_a_known_hosts_file(
    tls_server: ChatServer, chat_tls: Callable[..., Awaitable[Client]], cert: CertFiles, tmp_path: Path
) -> None:
    alice = await chat_tls(tls_server, "alice", fingerprint=cert.fingerprint.upper().replace("SHA256:", "sha256:"))
    assert alice.certificate is not None and alice.certificate.mode is TrustMode.PINNED
    wrong = "sha256:" + "00" * 32
    with pytest.raises(UntrustedCertificate, match="not the pinned one") as refused:
        await chat_tls(tls_server, "bob", fingerprint=wrong)
    assert refused.value.found == cert.fingerprint and refused.value.expected == wrong
    assert not (tmp_path / "known_hosts").exists(), "a pinned client records nothing"


@pytest.mark.asyncio
async def test_a_ca_file_verifies_the_certificate_and_its_host_name(
    make_server: ServerFactory, chat_tls: Callable[..., Awaitable[Client]], tmp_path: Path
) -> None:
    ca, signed = ca_signed(tmp_path / "ca", "127.0.0.1")
    server = await make_server(server=tls_sections(signed))
    alice = await chat_tls(server, "alice", cafile=ca)
    assert alice.certificate is not None and alice.certificate.mode is TrustMode.CA
    _, elsewhere = ca_signed(tmp_path / "ca-other", "chat.example")  # another CA, another name
    stranger = await make_server(server=tls_sections(elsewhere))
    with pytest.raises(UntrustedCertificate, match="does not verify"):
        await chat_tls(stranger, "bob", cafile=ca)
    name_ca, for_another_host = ca_signed(tmp_path / "ca-name", "chat.example")
    wrong_name = await make_server(server=tls_sections(for_another_host))
    with pytest.raises(UntrustedCertificate, match="does not verify"):  # signed by the CA given, for another host
        await chat_tls(wrong_name, "carol", cafile=name_ca)


# --- files, configuration, make-cert ------------------------------------------------------------------------------


def test_fingerprints_are_read_in_the_forms_people_paste() -> None:
    canonical = "sha256:" + "ab" * 32
    assert parse_fingerprint(canonical) == canonical
    assert parse_fingerprint(":".join(["AB"] * 32)) == canonical
    assert parse_fingerprint("SHA256 Fingerprint=" + ":".join(["AB"] * 32)) == canonical
    with pytest.raises(ValueError):
        parse_fingerprint("sha256:abcd")


def test_a_bad_known_hosts_line_is_an_error_not_a_new_first_use(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text("127.0.0.1:7778 sha256:nothex\n")
    with pytest.raises(KnownHostsError, match="line 1"):
        KnownHosts(path).lookup("127.0.0.1:7778")


def test_tls_keys_come_from_the_environment_with_paths_resolved_against_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[server]\ntls_cert = "tls/cert.pem"\n[client]\ncafile = "ca.pem"\n')
    config = load_config(path, environ={"CHAT_SERVER_TLS_PORT": "9443", "CHAT_LIMITS_TLS_HANDSHAKE_TIMEOUT": "2"})
    assert config.server.tls_cert == str(tmp_path.resolve() / "tls" / "cert.pem")
    assert config.client.cafile == str(tmp_path.resolve() / "ca.pem")
    assert (config.server.tls_port, config.limits.tls_handshake_timeout) == (9443, 2.0)
    assert load_config(environ={}).server.tls_cert == "", "TLS is off by default"
    with pytest.raises(ConfigError, match="tls_key"):
        load_config(environ={"CHAT_SERVER_TLS_KEY": "key.pem"})


def test_make_cert_writes_a_private_key_and_prints_the_certificates_fingerprint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert make_cert_main(["--out", str(tmp_path / "tls"), "chat.lan", "192.168.1.20"]) == 0
    printed = capsys.readouterr().out
    key, pem = tmp_path / "tls" / "chat-key.pem", tmp_path / "tls" / "chat-cert.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    certificate = x509.load_pem_x509_certificate(pem.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["chat.lan"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["192.168.1.20"]
    der = ssl.PEM_cert_to_DER_cert(pem.read_text())
    from chat.client.trust import fingerprint_of

    assert f"fingerprint {fingerprint_of(der)}" in printed
    server_context(str(pem), str(key))  # the server can load what it wrote


# --- the terminal client ------------------------------------------------------------------------------------------


def every_line(tui: Tui) -> list[str]:
    """The text of every line in every conversation, the status one too."""
    conversations = [tui.model.status_conversation(), *tui.model.conversations]
    return [line.text for conversation in conversations for line in conversation.lines]


async def start_tui(server: ChatServer, tmp_path: Path, stack: contextlib.ExitStack, **settings: Any) -> Tui:
    assert server.tls_port is not None
    options = {"host": "127.0.0.1", "port": server.tls_port, "nick": "alice", "tls": True, "backoff_initial": 0.05}
    pipe = stack.enter_context(create_pipe_input())
    app = ChatApp(Settings(**{**options, **settings}), StateStore(tmp_path / "state"), input=pipe, output=DummyOutput())
    return Tui(app, pipe, DummyOutput())  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_the_terminal_client_logs_in_over_tls_and_says_it_trusts_on_first_use(
    tls_server: ChatServer, cert: CertFiles, tmp_path: Path
) -> None:
    with contextlib.ExitStack() as stack:
        tui = await start_tui(tls_server, tmp_path, stack)
        try:
            await tui.wait_for(lambda: tui.model.current.name == "lobby" and tui.model.current.joined, "lobby")
            assert tui.model.connection.state is LinkState.CONNECTED
            assert any(cert.fingerprint in text and "first TLS connection" in text for text in every_line(tui))
            assert (tmp_path / "state" / "known_hosts").read_text().count(cert.fingerprint) == 1
        finally:
            await tui.quit()


@pytest.mark.asyncio
async def test_the_terminal_client_shows_a_changed_certificate_as_an_error_line(
    tls_server: ChatServer, cert: CertFiles, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    KnownHosts(state / "known_hosts").remember(
        server_address("127.0.0.1", tls_server.tls_port or 0), "sha256:" + "11" * 32
    )
    with contextlib.ExitStack() as stack:
        tui = await start_tui(tls_server, tmp_path, stack)
        try:
            await tui.wait_for(lambda: tui.model.connection.state is LinkState.REFUSED, "the refusal")
            lines = every_line(tui)
            assert any("HAS CHANGED" in text and cert.fingerprint in text for text in lines), lines
            assert not tui.task.done(), "shown on screen, not raised"
        finally:
            await tui.quit()


@pytest.mark.asyncio
async def test_the_tls_port_refuses_a_large_frame_before_login_as_the_plain_port_does(tls_server: ChatServer) -> None:
    """The limits before trust (docs/protocol.md 2.7) hold on every port: a 64 KiB header before `welcome` is
    refused at its prefix over TLS too."""
    assert tls_server.tls_port is not None
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", tls_server.tls_port, ssl=context)
    try:
        header_len, payload_len = struct.unpack("!II", await asyncio.wait_for(reader.readexactly(8), 5))
        await reader.readexactly(header_len + payload_len)  # hello
        writer.write(struct.pack("!II", 65_536, 0))
        header_len, payload_len = struct.unpack("!II", await asyncio.wait_for(reader.readexactly(8), 5))
        error = json.loads(await reader.readexactly(header_len))
        assert (error["type"], error["code"]) == ("error", "frame_too_large")
    finally:
        writer.close()
