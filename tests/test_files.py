"""File transfer over real sockets: raw protocol rules, and the client library's streamed, resumable transfers."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
from conftest import ConnectFactory, ServerFactory
from rawwire import RawConnection

from chat.client import Message
from chat.client.files import safe_file_name
from chat.server.app import ChatServer

pytestmark = pytest.mark.asyncio
CHUNK = 64 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def offer(conn: RawConnection, data: bytes, **target: object) -> dict[str, object]:
    return await conn.request(
        {"type": "file_offer", "name": "data.bin", "size": len(data), "sha256": sha(data), **target}, "file_ready"
    )


async def send_chunks(conn: RawConnection, fid: str, data: bytes, start: int = 0, end: int | None = None) -> None:
    end = len(data) if end is None else end
    for offset in range(start, end, CHUNK):
        await conn.send({"type": "file_chunk", "fid": fid, "offset": offset}, data[offset : min(offset + CHUNK, end)])


async def download(conn: RawConnection, fid: str, offset: int = 0) -> bytes:
    """file_get, then the raw chunks (read from the frames' payloads) up to file_end."""
    ref = f"get-{fid}-{offset}"
    chunks: list[bytes] = []
    conn.payloads = chunks  # type: ignore[attr-defined]
    await conn.send({"type": "file_get", "fid": fid, "offset": offset, "ref": ref})
    end = await conn.expect_ref(ref, timeout=20)
    assert end["type"] == "file_end", end
    return b"".join(chunks)


def rss_kib() -> int:
    """This process's resident memory now (not a peak: sampled during the transfers)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def files_on_disk(server: ChatServer) -> set[str]:
    root = Path(server.config.files.directory)
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


async def test_upload_then_download_is_byte_identical_and_announced(
    server: ChatServer, connect: ConnectFactory
) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    for conn in (alice, bob):
        await conn.join("lobby")
    data = os.urandom(5 * CHUNK + 123)
    ready = await offer(alice, data, room="lobby")
    assert ready["offset"] == 0
    await send_chunks(alice, ready["fid"], data)
    stored = await alice.request({"type": "file_done", "fid": ready["fid"]}, "file_stored")
    announced = await bob.expect("message", lambda h: h.get("file") is not None)
    assert announced["id"] == stored["id"] and announced["text"] == "data.bin"
    assert announced["file"] == {"fid": ready["fid"], "name": "data.bin", "size": len(data), "sha256": sha(data)}
    assert await download(bob, ready["fid"]) == data
    assert await download(bob, ready["fid"], offset=3 * CHUNK + 5) == data[3 * CHUNK + 5 :]


async def test_an_upload_resumes_at_the_stored_offset_after_a_cut(server: ChatServer, connect: ConnectFactory) -> None:
    alice = await connect("alice")
    token = alice.welcome["session"] if alice.welcome else ""
    await alice.join("lobby")
    data = os.urandom(10 * CHUNK)
    ready = await offer(alice, data, room="lobby")
    await send_chunks(alice, ready["fid"], data, end=4 * CHUNK)
    await alice.request({"type": "ping", "t": 1}, "pong")  # the chunks before it are written
    alice.writer.transport.abort()
    again = await connect()
    await again.login("alice", session=token)
    await again.join("lobby")
    resumed = await offer(again, data, room="lobby")
    assert (resumed["fid"], resumed["offset"]) == (ready["fid"], 4 * CHUNK)
    await send_chunks(again, resumed["fid"], data, start=4 * CHUNK)
    await again.request({"type": "file_done", "fid": resumed["fid"]}, "file_stored")
    assert await download(again, resumed["fid"]) == data


async def test_another_identity_never_resumes_someone_elses_upload(server: ChatServer, connect: ConnectFactory) -> None:
    alice, mallory = await connect("alice"), await connect("mallory")
    for conn in (alice, mallory):
        await conn.join("lobby")
    data = os.urandom(3 * CHUNK)
    ready = await offer(alice, data, room="lobby")
    await send_chunks(alice, ready["fid"], data, end=CHUNK)
    await alice.request({"type": "ping", "t": 1}, "pong")
    theirs = await offer(mallory, data, room="lobby")
    assert theirs["fid"] != ready["fid"] and theirs["offset"] == 0
    await mallory.send({"type": "file_chunk", "fid": ready["fid"], "offset": CHUNK, "ref": "x"}, data[:10])
    assert (await mallory.expect_ref("x"))["code"] == "no_such_file"


async def test_limits_and_checks(make_server: ServerFactory, connect: ConnectFactory) -> None:
    server = await make_server(files={"max_bytes": 4 * CHUNK, "quota_bytes": 6 * CHUNK})
    alice = await connect("alice", to=server)
    await alice.join("lobby")
    big = await alice.request(
        {"type": "file_offer", "room": "lobby", "name": "big", "size": 4 * CHUNK + 1, "sha256": "0" * 64}, "error"
    )
    assert big["code"] == "file_too_large"
    data = os.urandom(3 * CHUNK)
    ready = await offer(alice, data, room="lobby")
    await alice.send(
        {"type": "file_chunk", "fid": ready["fid"], "offset": CHUNK, "ref": "skip"}, data[CHUNK : 2 * CHUNK]
    )
    assert (await alice.expect_ref("skip"))["code"] == "file_offset"
    await send_chunks(alice, ready["fid"], data)  # the upload went on at the right offset
    await alice.send({"type": "file_chunk", "fid": ready["fid"], "offset": 3 * CHUNK, "ref": "over"}, b"x")
    assert (await alice.expect_ref("over"))["code"] == "file_too_large"
    # that ended the upload: its data is gone
    assert (await alice.request({"type": "file_done", "fid": ready["fid"]}, "error"))["code"] == "no_such_file"
    wrong = await alice.request(
        {"type": "file_offer", "room": "lobby", "name": "w", "size": CHUNK, "sha256": "ab" * 32}, "file_ready"
    )
    await send_chunks(alice, wrong["fid"], os.urandom(CHUNK))
    assert (await alice.request({"type": "file_done", "fid": wrong["fid"]}, "error"))["code"] == "file_checksum"
    short = await offer(alice, data, room="lobby")
    await send_chunks(alice, short["fid"], data, end=CHUNK)
    assert (await alice.request({"type": "file_done", "fid": short["fid"]}, "error"))["code"] == "file_checksum"
    # the quota counts bytes received: CHUNK so far, so an offer of 4 more fits in 6 (tests/test_files_limits.py)
    await alice.request(
        {"type": "file_offer", "room": "lobby", "name": "q", "size": 4 * CHUNK, "sha256": "cd" * 32}, "file_ready"
    )
    await alice.send({"type": "file_chunk", "fid": short["fid"], "offset": CHUNK, "ref": "fat"}, b"x" * (CHUNK + 1))
    assert (await alice.expect_ref("fat"))["code"] == "bad_request"


async def test_a_private_file_is_served_only_to_its_two_identities(server: ChatServer, connect: ConnectFactory) -> None:
    alice, bob, carol = [await connect(n) for n in ("alice", "bob", "carol")]
    data = os.urandom(CHUNK)
    ready = await offer(alice, data, to="bob")
    await send_chunks(alice, ready["fid"], data)
    await alice.request({"type": "file_done", "fid": ready["fid"]}, "file_stored")
    announced = await bob.expect("message", lambda h: h.get("file") is not None)
    assert announced["to"] == "bob"
    assert await download(bob, ready["fid"]) == data
    assert await download(alice, ready["fid"]) == data
    refused = await carol.request({"type": "file_get", "fid": ready["fid"]}, "error")
    assert refused["code"] == "no_such_file"


@pytest.mark.parametrize("name", ["../../etc/passwd", "/abs/x", "C:\\x", "nul\x00byte", "n" * 300, "CON", ".."])
async def test_no_client_name_ever_becomes_a_path(server: ChatServer, connect: ConnectFactory, name: str) -> None:
    alice = await connect("alice")
    await alice.join("lobby")
    data = b"payload"
    ready = await alice.request(
        {"type": "file_offer", "room": "lobby", "name": name, "size": len(data), "sha256": sha(data)}, "file_ready"
    )
    await send_chunks(alice, ready["fid"], data)
    await alice.request({"type": "file_done", "fid": ready["fid"]}, "file_stored")
    announced = await alice.expect("message", lambda h: h.get("file") is not None)
    shown = announced["file"]["name"]
    assert "/" not in shown and "\\" not in shown and "\x00" not in shown and len(shown) <= 255
    assert files_on_disk(server) == {ready["fid"]}, "stored under the server's id only"
    local = safe_file_name(shown)
    assert Path(local).name == local and local not in ("", ".", "..") and not local.upper().startswith("CON")


async def test_chat_keeps_flowing_in_order_during_a_large_download(server: ChatServer, connect: ConnectFactory) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    for conn in (alice, bob):
        await conn.join("lobby")
    data = os.urandom(8 * 1024 * 1024)
    ready = await offer(alice, data, room="lobby")
    await send_chunks(alice, ready["fid"], data)
    await alice.request({"type": "file_done", "fid": ready["fid"]}, "file_stored")
    chunks: list[bytes] = []
    bob.payloads = chunks  # type: ignore[attr-defined]
    await bob.send({"type": "file_get", "fid": ready["fid"], "ref": "big"})
    ids = [(await alice.say(f"during {i}", room="lobby"))["id"] for i in range(20)]
    got = [await bob.expect("message", lambda h, i=i: h["id"] == i, timeout=20) for i in ids]
    end = await bob.expect_ref("big", timeout=30)
    assert end["type"] == "file_end"
    assert [m["text"] for m in got] == [f"during {i}" for i in range(20)]
    positions = bob.order  # type: ignore[attr-defined]
    first_chat = positions.index(("message", ids[0]))
    assert first_chat < positions.index(("file_end", "big")), "chat frames were not held behind the whole file"
    assert b"".join(chunks) == data


async def test_client_send_and_get_a_20_mib_file_with_bounded_memory(chat_server, chat_client, tmp_path: Path) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice", join="lobby")
    bob = await chat_client(server, "bob", join="lobby")
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(20 * 1024 * 1024))
    baseline = rss_kib()
    peak = [baseline]
    sent: list[int] = []

    def sample(done: int, total: int) -> None:
        sent.append(done)
        peak[0] = max(peak[0], rss_kib())

    message = await alice.send_file(source, room="lobby", progress=sample)
    assert isinstance(message, Message) and message.file is not None and message.file.size == 20 * 1024 * 1024
    announced = await bob.expect("message", lambda m: m.file is not None)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    path = await bob.get_file(announced.file, downloads, progress=lambda done, total: sample(done, total))
    grown_kib = peak[0] - baseline
    assert path.parent == downloads and path.name == "big.bin"
    assert path.read_bytes() == source.read_bytes()
    assert sent[-1] == 20 * 1024 * 1024
    # server and both clients live in this process: none of them holds the file in memory
    assert grown_kib < 16 * 1024, f"memory grew by {grown_kib / 1024:.1f} MiB while 20 MiB moved up and down"
    again = await bob.get_file(announced.file, downloads)
    assert again.name == "big (1).bin", "never overwrites"


async def test_client_transfers_resume_after_cuts(chat_server, chat_client, tmp_path: Path) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice", join="lobby")
    bob = await chat_client(server, "bob", join="lobby")
    source = tmp_path / "cut.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024))
    cut = {"up": False, "down": False}

    def cut_upload(done: int, total: int) -> None:
        if not cut["up"] and 0 < done < total:  # the server has read some of it, not all
            cut["up"] = True
            alice.drop_connection()

    message = await asyncio.wait_for(alice.send_file(source, room="lobby", progress=cut_upload), 30)
    assert cut["up"] and message.file is not None
    announced = await bob.expect("message", lambda m: m.file is not None)

    def cut_download(done: int, total: int) -> None:
        if not cut["down"] and done >= total // 2:
            cut["down"] = True
            bob.drop_connection()

    path = await asyncio.wait_for(bob.get_file(announced.file, tmp_path / "copy.bin", progress=cut_download), 30)
    assert cut["down"] and path.read_bytes() == source.read_bytes()


async def test_file_cancel_stops_a_download_and_sets_an_upload_aside(
    make_server: ServerFactory, connect: ConnectFactory
) -> None:
    server = await make_server(files={"bytes_per_second": 4 * 2**20})  # the download of 8 MiB takes about 2 s
    alice = await connect("alice", to=server)
    await alice.join("lobby")
    data = os.urandom(8 * 2**20)
    ready = await offer(alice, data, room="lobby")
    await send_chunks(alice, ready["fid"], data)
    await alice.request({"type": "file_done", "fid": ready["fid"]}, "file_stored", timeout=30)
    await alice.send({"type": "file_get", "fid": ready["fid"], "ref": "slow"})
    cancelled = await alice.request({"type": "file_cancel", "fid": ready["fid"]}, "file_cancelled")
    assert cancelled["fid"] == ready["fid"]
    got_before = len(alice.payloads)
    assert got_before * CHUNK < len(data), "the download was still running when it was cancelled"
    await alice.request({"type": "ping", "t": 1}, "pong")
    assert not [h for h in alice.inbox if h.get("ref") == "slow"], "no file_end after a cancel"
    assert not server.service.files._downloads.get(next(iter(server.connections)), {})
    # an upload set aside is resumed by the next offer of the same file
    other = os.urandom(3 * CHUNK)
    first = await offer(alice, other, room="lobby")
    await send_chunks(alice, first["fid"], other, end=CHUNK)
    await alice.request({"type": "file_cancel", "fid": first["fid"]}, "file_cancelled")
    again = await offer(alice, other, room="lobby")
    assert (again["fid"], again["offset"]) == (first["fid"], CHUNK)


async def test_upload_progress_counts_the_bytes_the_server_has_read_not_those_handed_to_the_socket(
    chat_server, chat_client, tmp_path: Path
) -> None:
    server = await chat_server()
    alice = await chat_client(server, "alice", join="lobby")
    source = tmp_path / "read.bin"
    source.write_bytes(os.urandom(4 * 1024 * 1024))
    reports: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:  # the server runs in this process: ask it how far it read
        uploads = list(server.service.files.uploads.values())
        reports.append((done, uploads[0].written if uploads else total))

    message = await alice.send_file(source, room="lobby", progress=progress)
    assert message.file is not None
    assert reports[-1][0] == 4 * 1024 * 1024
    ahead = [(done, read) for done, read in reports if done > read]
    assert not ahead, f"progress ahead of what the server had read: {ahead[:3]}"
