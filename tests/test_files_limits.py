"""File uploads cannot exhaust the server (docs/security.md, "File uploads"): offers hold no descriptor, quotas
count bytes received, a cap on uploads per identity, idle uploads set aside, and the OS running out of descriptors
answered `resource_exhausted`. Each attack test also checks that a legitimate client beside it still uploads."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from conftest import ConnectFactory, ServerFactory
from rawwire import RawConnection, frame
from test_files import CHUNK, download, offer, send_chunks, sha

from chat.server.app import ChatServer
from chat.testing.config import test_config
from chat.testing.process import ServerProcess

pytestmark = pytest.mark.asyncio
MIB = 2**20


def open_fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextlib.contextmanager
def descriptors_filled() -> Iterator[None]:
    """Inside, this process (and so the in-process server) has no free file descriptor: EMFILE for real."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_fds() + 64, hard))  # a lower limit fills quickly
    fillers: list[int] = []
    try:
        with contextlib.suppress(OSError):
            while True:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def limited_server_command(max_fds: int) -> list[str]:
    """`chat-server` with RLIMIT_NOFILE lowered to `max_fds`, as on a host with the common default of 1,024."""
    code = (
        "import resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({max_fds}, {max_fds})); "
        "from chat.cli import server_main; sys.exit(server_main())"
    )
    return [sys.executable, "-c", code]


async def upload(conn: RawConnection, data: bytes, **target: object) -> dict[str, object]:
    """Offer, send and finish a whole file; the `file_stored` answer."""
    ready = await offer(conn, data, **target)
    await send_chunks(conn, str(ready["fid"]), data, start=int(str(ready["offset"])))
    return await conn.request({"type": "file_done", "fid": ready["fid"]}, "file_stored", timeout=20)


async def legit_user_uploads_and_chats(conn: RawConnection, other: RawConnection) -> None:
    """A file of 3 chunks goes up, comes back identical, and a chat message reaches the other member."""
    data = os.urandom(3 * CHUNK)
    stored = await upload(conn, data, room="lobby")
    assert await download(conn, str(stored["fid"])) == data
    said = await conn.say("still here", room="lobby")
    await other.expect("message", lambda h: h["id"] == said["id"])


@pytest_asyncio.fixture
async def limited_server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """A real `chat-server` process at a 1,024 descriptor limit, with no cap on uploads per identity (so the test
    sees what each offer costs, not the cap)."""
    config = test_config(tmp_path, files={"max_open_uploads_per_identity": 0})
    process = ServerProcess(config, tmp_path, command=limited_server_command(1024))
    await process.start()
    yield process
    await process.stop()


async def test_empty_offers_with_new_hashes_hold_no_descriptor_at_a_1024_fd_limit(
    limited_server: ServerProcess,
) -> None:
    # issue 18: one open file per offer; at 1,024 fds new connections got EOF without hello and every offer
    # internal_error. Now an offer is a record in memory: 2,000 of them leave the descriptor count where it was.
    pid = limited_server.pid
    assert pid is not None
    attacker = await RawConnection.open("127.0.0.1", limited_server.port)
    await attacker.login("mallory")
    await attacker.join("lobby")
    baseline = open_fds(pid)
    offers = 2000
    for index in range(offers):
        header = {"type": "file_offer", "room": "lobby", "name": "e", "size": 0, "sha256": sha(b"%d" % index)}
        attacker.writer.write(frame({**header, "ref": f"o{index}"}))
    await attacker.writer.drain()
    codes = [(await attacker.expect_ref(f"o{index}", timeout=30)).get("code", "ready") for index in range(offers)]
    assert codes == ["ready"] * offers, f"refused: {sorted(set(codes))}"
    held = open_fds(pid) - baseline
    assert held < 16, f"{offers} offers that sent nothing hold {held} descriptors"
    alice = await RawConnection.open("127.0.0.1", limited_server.port)
    assert (await alice.greeting())["type"] == "hello", "a new connection is still greeted"
    await alice.login("alice")
    await alice.join("lobby")
    await legit_user_uploads_and_chats(alice, attacker)
    assert open_fds(pid) - baseline < 16
    assert "Traceback" not in limited_server.log(2000)
    for conn in (attacker, alice):
        await conn.close()


async def test_declared_sizes_reserve_no_quota_so_others_can_still_upload(
    server: ChatServer, connect: ConnectFactory
) -> None:
    # issue 18: 10 offers of 100 MiB and one of 24 MiB, no data: everyone got quota_exceeded for an hour. Default
    # limits (1 GiB in all, 4 uploads per identity), so the attacker spreads its offers over three identities.
    attackers = [await connect(f"mallory{index}") for index in range(3)]
    for conn in attackers:
        await conn.join("lobby")
    sizes = [100 * MIB] * 10 + [24 * MIB]
    for index, size in enumerate(sizes):
        header = {"type": "file_offer", "room": "lobby", "name": "big", "size": size, "sha256": sha(b"%d" % index)}
        await attackers[index // 4].request(header, "file_ready")
    alice, bob = await connect("alice"), await connect("bob")
    for conn in (alice, bob):
        await conn.join("lobby")
    await legit_user_uploads_and_chats(alice, bob)
    ready = await offer(bob, os.urandom(10), room="lobby")  # an offer as large as what is left also still fits
    assert ready["offset"] == 0
    for conn in attackers:
        await conn.close()


async def test_the_quotas_count_bytes_received_per_identity_and_in_total(
    make_server: ServerFactory, connect: ConnectFactory
) -> None:
    server = await make_server(files={"quota_bytes": 6 * CHUNK, "quota_bytes_per_identity": 4 * CHUNK})
    alice, bob = await connect("alice", to=server), await connect("bob", to=server)
    for conn in (alice, bob):
        await conn.join("lobby")
    first, second = os.urandom(4 * CHUNK), os.urandom(4 * CHUNK)
    ready_second = await offer(alice, second, room="lobby")  # nothing received yet: both offers fit
    await upload(alice, first, room="lobby")
    await alice.send({"type": "file_chunk", "fid": ready_second["fid"], "offset": 0, "ref": "mine"}, second[:CHUNK])
    refused = await alice.expect_ref("mine")
    assert refused["code"] == "quota_exceeded" and "identity" in refused["message"], refused
    over_mine = await alice.request(
        {"type": "file_offer", "room": "lobby", "name": "x", "size": 1, "sha256": sha(b"x")}, "error"
    )
    assert over_mine["code"] == "quota_exceeded", "alice's 4 chunks stored fill her quota"
    over_all = await bob.request(
        {"type": "file_offer", "room": "lobby", "name": "y", "size": 3 * CHUNK, "sha256": "ab" * 32}, "error"
    )
    assert over_all["code"] == "quota_exceeded" and "server" in over_all["message"], "4 of 6 used, 3 do not fit"
    await upload(bob, os.urandom(2 * CHUNK), room="lobby")  # 2 do
    # the refused chunk changed nothing: alice's upload still expects offset 0
    await alice.send({"type": "file_chunk", "fid": ready_second["fid"], "offset": CHUNK, "ref": "off"}, b"z")
    assert "expects 0" in (await alice.expect_ref("off"))["message"]


async def test_an_identity_has_at_most_max_open_uploads_and_a_kept_one_makes_room(
    make_server: ServerFactory, connect: ConnectFactory
) -> None:
    server = await make_server(files={"max_open_uploads_per_identity": 2})
    alice, bob = await connect("alice", to=server), await connect("bob", to=server)
    for conn in (alice, bob):
        await conn.join("lobby")
    files = [os.urandom(2 * CHUNK) for _ in range(3)]
    first = await offer(alice, files[0], room="lobby")
    await offer(alice, files[1], room="lobby")
    refused = await alice.request(
        {"type": "file_offer", "room": "lobby", "name": "c", "size": CHUNK, "sha256": sha(files[2])}, "error"
    )
    assert refused["code"] == "too_many_uploads" and "2" in refused["message"]
    await legit_user_uploads_and_chats(bob, alice)  # another identity is not held back
    await send_chunks(alice, str(first["fid"]), files[0], end=CHUNK)
    await alice.request({"type": "file_cancel", "fid": first["fid"]}, "file_cancelled")  # kept for a resume
    third = await offer(alice, files[2], room="lobby")  # drops the kept one to make room
    assert third["offset"] == 0
    again = await offer(bob, files[0], room="lobby")
    assert again["offset"] == 0
    assert first["fid"] not in server.service.files.uploads, "the kept upload made room"


async def test_an_idle_upload_is_set_aside_and_one_that_got_nothing_is_dropped(
    make_server: ServerFactory, connect: ConnectFactory
) -> None:
    server = await make_server(files={"upload_idle_seconds": 300, "resume_seconds": 3600})
    files = server.service.files
    alice = await connect("alice", to=server)
    await alice.join("lobby")
    empty, started = os.urandom(CHUNK), os.urandom(2 * CHUNK)
    nothing = await offer(alice, empty, room="lobby")
    some = await offer(alice, started, room="lobby")
    await send_chunks(alice, str(some["fid"]), started, end=CHUNK)
    await alice.request({"type": "ping", "t": 1}, "pong")  # the chunk was handled
    assert files.uploads[str(some["fid"])].fd is None, "its file was closed at the end of the turn that wrote it"
    now = server.service.clock()
    files.sweep(now + 299)  # the sweep takes the time: no waiting on the real clock
    assert files.uploads[str(nothing["fid"])].session is not None, "not idle yet"
    files.sweep(now + 301)
    assert str(nothing["fid"]) not in files.uploads, "an offer that received nothing is dropped"
    assert files.uploads[str(some["fid"])].session is None, "one with data is kept for a resume"
    await alice.send({"type": "file_chunk", "fid": nothing["fid"], "offset": 0, "ref": "late"}, empty)
    assert (await alice.expect_ref("late"))["code"] == "no_such_file"
    resumed = await offer(alice, started, room="lobby")
    assert (resumed["fid"], resumed["offset"]) == (some["fid"], CHUNK)


async def test_out_of_descriptors_is_answered_resource_exhausted_and_the_upload_goes_on_after(
    server: ChatServer, connect: ConnectFactory, caplog: pytest.LogCaptureFixture
) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    for conn in (alice, bob):
        await conn.join("lobby")
    data = os.urandom(2 * CHUNK)
    caplog.set_level(logging.WARNING, logger="chat.core.files")
    with descriptors_filled():
        ready = await offer(alice, data, room="lobby")  # an offer needs no descriptor
        for attempt in range(3):
            await alice.send(
                {"type": "file_chunk", "fid": ready["fid"], "offset": 0, "ref": f"c{attempt}"}, data[:CHUNK]
            )
            refused = await alice.expect_ref(f"c{attempt}")
            assert refused["code"] == "resource_exhausted" and "file descriptors" in refused["message"], refused
    warnings = [record for record in caplog.records if record.name == "chat.core.files"]
    assert len(warnings) == 1 and warnings[0].exc_info is None, "one line, no traceback, for the three refusals"
    await send_chunks(alice, str(ready["fid"]), data)  # nothing was written: it goes on at offset 0
    stored = await alice.request({"type": "file_done", "fid": ready["fid"]}, "file_stored")
    assert await download(bob, str(stored["fid"])) == data
    await legit_user_uploads_and_chats(bob, alice)
