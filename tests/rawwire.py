"""A raw protocol connection for server tests: frames in and out, no client-library logic in between.

Server tests need to send what a well-behaved client never would (oversize lengths, bad JSON, floods), so they talk
to the server through this thin layer over the protocol core instead of `chat.client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
from collections.abc import Callable
from typing import Any

from chat.protocol.auth import compute_proof
from chat.protocol.frames import MAX_SERVER_HEADER, PREFIX, FrameLimits, parse_prefix

Header = dict[str, Any]
_cids = itertools.count(1)


def frame(header: Header | bytes, payload: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header, ensure_ascii=False).encode()
    return PREFIX.pack(len(raw), len(payload)) + raw + payload


def new_cid() -> str:
    return f"cid-{next(_cids)}"


class RawConnection:
    """One TCP connection that records every frame the server sends, in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.inbox: list[Header] = []
        self.payloads: list[bytes] = []  # file data received, in order
        self.order: list[tuple[str, object]] = []  # (type, id or ref) of every frame received, in order
        self.hello: Header | None = None
        self.welcome: Header | None = None
        self.nick = ""
        self.closed = asyncio.Event()
        self._arrived = asyncio.Condition()
        self._task = asyncio.create_task(self._read_all())

    @classmethod
    async def open(cls, host: str, port: int, *, rcvbuf: int | None = None, source: str | None = None) -> RawConnection:
        """Connect; `source` is the loopback address to connect from (127.x.y.z), for per-address limits."""
        if source is not None:
            reader, writer = await asyncio.open_connection(host, port, limit=2**21, local_addr=(source, 0))
            return cls(reader, writer)
        sock = None
        if rcvbuf is not None:  # a tiny receive buffer makes a slow consumer quickly
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=2**21)
        else:
            reader, writer = await asyncio.open_connection(host, port, limit=2**21)
        return cls(reader, writer)

    async def _read_all(self) -> None:
        limits = FrameLimits(MAX_SERVER_HEADER, 2**21)
        try:
            while True:
                header_len, payload_len = parse_prefix(await self.reader.readexactly(8), limits)
                header = json.loads(await self.reader.readexactly(header_len))
                if payload_len:
                    self.payloads.append(await self.reader.readexactly(payload_len))
                self.order.append((header.get("type"), header.get("id", header.get("ref"))))
                if header.get("type") == "file_chunk":
                    continue  # its data is in `payloads`
                async with self._arrived:
                    self.inbox.append(header)
                    self._arrived.notify_all()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed.set()
            async with self._arrived:
                self._arrived.notify_all()

    def pause_reading(self) -> None:
        """Stop taking bytes off the socket, like a stuck client."""
        self.writer.transport.pause_reading()

    async def send(self, header: Header | bytes, payload: bytes = b"") -> None:
        self.writer.write(frame(header, payload))
        await self.writer.drain()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def take(self, match: Callable[[Header], bool], what: str, timeout: float = 5.0) -> Header:
        """Remove and return the oldest received frame that matches; frames before it stay in the inbox."""

        async def wait() -> Header:
            async with self._arrived:
                while True:
                    for index, header in enumerate(self.inbox):
                        if match(header):
                            return self.inbox.pop(index)
                    if self.closed.is_set():
                        raise AssertionError(f"connection closed before {what}; received {self.summary()}")
                    await self._arrived.wait()

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"no {what} within {timeout}s; received {self.summary()}") from None

    def summary(self, count: int = 8) -> str:
        """The last few unconsumed frames, shortened, for failure messages."""
        shown = [repr(h)[:200] for h in self.inbox[-count:]]
        skipped = len(self.inbox) - len(shown)
        return (f"{skipped} earlier frames, then " if skipped else "") + "[" + ", ".join(shown) + "]"

    async def expect(self, type_: str, pred: Callable[[Header], bool] | None = None, timeout: float = 5.0) -> Header:
        """The oldest unconsumed frame of this type (matching `pred`)."""
        return await self.take(
            lambda h: h.get("type") == type_ and (pred is None or pred(h)), f"a {type_!r} frame", timeout
        )

    async def first_of(self, *types: str, timeout: float = 5.0) -> Header:
        return await self.take(lambda h: h.get("type") in types, f"any of {types}", timeout)

    async def expect_ref(self, ref: str | int, timeout: float = 5.0) -> Header:
        return await self.take(lambda h: h.get("ref") == ref, f"the reply to ref {ref!r}", timeout)

    async def error(self, code: str, timeout: float = 5.0) -> Header:
        """The next error frame, which must carry `code`."""
        header = await self.expect("error", timeout=timeout)
        assert header.get("code") == code, f"expected error {code!r}, got {header}"
        return header

    async def request(self, header: Header, reply_type: str, timeout: float = 5.0) -> Header:
        """Send with a fresh ref and return the reply carrying it (an error reply fails the test)."""
        ref = new_cid()
        await self.send({**header, "ref": ref})
        reply = await self.expect_ref(ref, timeout)
        assert reply["type"] == reply_type, f"{header['type']} answered with {reply}"
        return reply

    async def wait_closed(self, timeout: float = 5.0) -> None:
        try:
            await asyncio.wait_for(self.closed.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"connection still open after {timeout}s") from None

    async def greeting(self) -> Header:
        """The server's `hello` (read once, then remembered)."""
        if self.hello is None:
            self.hello = await self.expect("hello")
        return self.hello

    async def login(self, nick: str, *, secret: str | None = None, **fields: Any) -> Header:
        await self.greeting()
        assert self.hello is not None
        login: Header = {"type": "login", "nick": nick, "protocol": 1, **fields}
        if secret is not None:
            login["proof"] = compute_proof(secret, bytes.fromhex(self.hello["nonce"]), nick)
        await self.send(login)
        answer = await self.first_of("welcome", "error")
        if answer["type"] == "welcome":
            self.welcome = answer
            self.nick = answer["nick"]
        return answer

    async def join(self, room: str, **fields: Any) -> Header:
        return await self.request({"type": "join", "room": room, **fields}, "joined")

    async def say(self, text: str, *, room: str | None = None, to: str | None = None, cid: str | None = None) -> Header:
        """Send a say and return its acknowledgement (the echoed message with our cid)."""
        cid = cid or new_cid()
        target = {"room": room} if room is not None else {"to": to}
        await self.send({"type": "say", "text": text, "cid": cid, **target})
        return await self.expect("message", lambda h: h.get("cid") == cid)

    async def close(self) -> None:
        self.writer.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class RawUdp(asyncio.DatagramProtocol):
    """A UDP socket on loopback speaking the quick-message datagrams of one session, with nothing automatic."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.bytes_received = 0
        self.sid = 0
        self.key = b""
        self.server: tuple[str, int] = ("127.0.0.1", 0)
        self.next_seq = 1

    @classmethod
    async def open(cls, udp_port: int, welcome: Header | None = None, source: str = "127.0.0.1") -> RawUdp:
        loop = asyncio.get_running_loop()
        _, endpoint = await loop.create_datagram_endpoint(cls, local_addr=(source, 0))
        endpoint.server = ("127.0.0.1", udp_port)
        if welcome is not None:
            endpoint.sid = welcome["udp"]["sid"]
            endpoint.key = bytes.fromhex(welcome["udp"]["key"])
        return endpoint

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.bytes_received += len(data)
        self.queue.put_nowait(data)

    def send_raw(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data, self.server)

    def send(self, kind: int, body: Header | None = None, *, seq: int | None = None) -> int:
        """Sign and send one datagram of this session; returns its seq."""
        from chat.protocol import datagrams as dg

        if seq is None:
            seq, self.next_seq = self.next_seq, self.next_seq + 1
        raw = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
        self.send_raw(dg.encode_datagram(dg.Kind(kind), self.sid, seq, raw, self.key))
        return seq

    async def recv(self, timeout: float = 5.0) -> tuple[int, int, Header | None]:
        """(kind, seq, body) of the next datagram, which must carry our sid and a good tag."""
        from chat.protocol import datagrams as dg

        data = await asyncio.wait_for(self.queue.get(), timeout)
        parsed = dg.parse_datagram(data)
        assert parsed.sid == self.sid and dg.verify(parsed, self.key), "a datagram not signed for this session"
        return parsed.kind, parsed.seq, json.loads(parsed.body) if parsed.body else None

    async def expect(self, kind: int, timeout: float = 5.0) -> tuple[int, Header | None]:
        """(seq, body) of the next datagram of `kind`, skipping others."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"no datagram of kind {kind} within {timeout}s")
            try:
                got, seq, body = await self.recv(remaining)
            except TimeoutError:
                raise AssertionError(f"no datagram of kind {kind} within {timeout}s") from None
            if got == kind:
                return seq, body

    async def bind(self, *, validate: bool = True) -> int:
        """HELLO until the server answers, then (unless `validate` is False, as an older client does) ACK the
        answer, which validates the address (docs/protocol.md 6.5); returns the answer's seq."""
        for _ in range(20):
            seq = self.send(1)
            try:
                answer_seq, body = await self.expect(1, timeout=0.5)
            except AssertionError:
                continue
            assert body == {"seq": seq}
            if validate:
                self.send(3, {"seq": answer_seq})
            return answer_seq
        raise AssertionError("the server never answered HELLO")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
