"""Session rules of the server over real sockets: hello, login, auth, takeover, nick hold, timeouts, keepalive."""

from __future__ import annotations

import asyncio

import pytest
from conftest import ConnectFactory, ServerFactory
from rawwire import RawConnection, frame

from chat.protocol.auth import compute_proof
from chat.server.app import ChatServer

pytestmark = pytest.mark.asyncio


async def test_hello_then_welcome_with_session_udp_and_limits(server: ChatServer, connect: ConnectFactory) -> None:
    conn = await connect()
    welcome = await conn.login("alice", ref="r1")
    assert conn.hello is not None
    assert conn.hello["auth"] == "none" and conn.hello["protocol"] == 1 and len(conn.hello["nonce"]) == 64
    assert welcome["nick"] == "alice" and welcome["ref"] == "r1" and welcome["session"]
    assert welcome["udp"]["port"] == server.udp_port and 1 <= welcome["udp"]["sid"] < 2**53
    assert welcome["limits"]["max_text_chars"] == server.config.limits.max_text_chars


async def test_only_login_and_ping_before_welcome(connect: ConnectFactory) -> None:
    conn = await connect()
    await conn.greeting()
    await conn.send({"type": "join", "room": "lobby", "ref": 5})
    error = await conn.error("not_logged_in")
    assert error["ref"] == 5
    await conn.send({"type": "ping", "t": {"any": ["json", 1]}})
    assert (await conn.expect("pong"))["t"] == {"any": ["json", 1]}
    assert (await conn.login("late"))["type"] == "welcome"


@pytest.mark.parametrize("nick", ["", "x" * 33, "has space", "zero\u200bwidth", "bidi\u202eflip", "\u0301mark", "x²"])
async def test_bad_nick_is_refused_and_closed(connect: ConnectFactory, nick: str) -> None:
    conn = await connect()
    answer = await conn.login(nick)
    assert answer["type"] == "error" and answer["code"] == "bad_nick", answer
    await conn.wait_closed()


async def test_nicks_of_any_script_are_kept_in_nfc(connect: ConnectFactory) -> None:
    # Latin with Han and Hiragana is one of TS #39's allowed mixes (docs/protocol.md 8, Lookalikes); Latin with
    # Cyrillic, which this nick once carried, is not (tests/test_server_names.py).
    conn = await connect()
    welcome = await conn.login("Zoe\u0308_\u540d\u524d-\u3055.9")  # decomposed ë
    assert welcome["nick"] == "Zo\u00eb_\u540d\u524d-\u3055.9"


async def test_nick_taken_compares_casefolded(connect: ConnectFactory) -> None:
    await connect("Straße")
    conn = await connect()
    answer = await conn.login("STRASSE")
    assert answer["code"] == "nick_taken"
    await conn.wait_closed()


async def test_protocol_mismatch_and_malformed_login_close(connect: ConnectFactory) -> None:
    conn = await connect()
    assert (await conn.login("bob", protocol=2))["code"] == "protocol_mismatch"
    await conn.wait_closed()
    conn = await connect()
    await conn.greeting()
    await conn.send({"type": "login", "nick": 5, "protocol": 1, "ref": "x"})
    error = await conn.error("bad_request")
    assert error["ref"] == "x"
    await conn.wait_closed()
    conn = await connect()
    await conn.greeting()
    await conn.send({"type": "login", "nick": "bob", "protocol": 1}, b"payload")
    await conn.error("frame_too_large")  # nothing takes a payload before welcome: refused at the prefix
    await conn.wait_closed()


async def test_second_login_is_refused_but_connection_stays(connect: ConnectFactory) -> None:
    conn = await connect("first")
    await conn.send({"type": "login", "nick": "second", "protocol": 1, "ref": 1})
    assert (await conn.error("already_logged_in"))["ref"] == 1
    await conn.request({"type": "ping", "t": 1}, "pong")


async def test_hmac_login(make_server: ServerFactory) -> None:
    server = await make_server(server={"secret": "s3cret"})
    good = await RawConnection.open("127.0.0.1", server.port)
    welcome = await good.login("émile", secret="s3cret")
    assert good.hello is not None and good.hello["auth"] == "hmac-sha256"
    assert welcome["type"] == "welcome"
    for proof in (None, "zz", "00" * 32, compute_proof("wrong", b"\0" * 32, "mallory")):
        bad = await RawConnection.open("127.0.0.1", server.port)
        fields = {} if proof is None else {"proof": proof}
        answer = await bad.login("mallory", **fields)
        assert answer["code"] == "auth_failed"
        await bad.wait_closed()
        await bad.close()
    await good.close()


async def test_session_token_takes_over_and_keeps_identity(connect: ConnectFactory) -> None:
    old = await connect("carol")
    token = old.welcome["session"] if old.welcome else ""
    watcher = await connect("watcher")
    await old.join("lobby")
    await watcher.join("lobby")
    new = await connect()
    welcome = await new.login("carol", session=token)
    assert welcome["session"] == token
    await old.error("session_taken")
    await old.wait_closed()
    presence = await watcher.expect("presence", lambda h: h["event"] == "quit")
    assert presence["nick"] == "carol"


async def test_unknown_token_to_free_nick_starts_a_new_identity(connect: ConnectFactory) -> None:
    conn = await connect()
    welcome = await conn.login("dave", session="not-a-token")
    assert welcome["type"] == "welcome" and welcome["session"] != "not-a-token"


async def test_nick_hold_reserves_a_nick_for_its_identity(make_server: ServerFactory) -> None:
    server = await make_server(server={"nick_hold": 3600})
    first = await RawConnection.open("127.0.0.1", server.port)
    token = (await first.login("erin"))["session"]
    await first.send({"type": "quit"})
    await first.wait_closed()
    thief = await RawConnection.open("127.0.0.1", server.port)
    assert (await thief.login("ERIN"))["code"] == "nick_taken"
    owner = await RawConnection.open("127.0.0.1", server.port)
    assert (await owner.login("erin", session=token))["type"] == "welcome"
    for conn in (first, thief, owner):
        await conn.close()


async def test_max_clients_refuses_the_next_connection(make_server: ServerFactory) -> None:
    server = await make_server(server={"max_clients": 2})
    kept = [await RawConnection.open("127.0.0.1", server.port) for _ in range(2)]
    for conn in kept:
        await conn.greeting()
    extra = await RawConnection.open("127.0.0.1", server.port)
    await extra.error("too_many_clients")
    await extra.wait_closed()
    assert not [h for h in extra.inbox if h["type"] == "hello"]
    await kept[0].close()
    for _ in range(200):  # the server notices the close on its next read; bounded retry, no fixed sleep
        if len(server.connections) < 2:
            break
        await asyncio.sleep(0.01)
    again = await RawConnection.open("127.0.0.1", server.port)
    await again.expect("hello")
    for conn in (kept[1], extra, again):
        await conn.close()


async def test_login_timeout_closes_with_timeout(make_server: ServerFactory) -> None:
    server = await make_server(limits={"login_timeout": 0.3})
    conn = await RawConnection.open("127.0.0.1", server.port)
    await conn.greeting()
    await conn.error("timeout")
    await conn.wait_closed()
    await conn.close()


async def test_idle_connection_is_pinged_then_closed(make_server: ServerFactory) -> None:
    server = await make_server(limits={"idle_timeout": 0.6})
    conn = await RawConnection.open("127.0.0.1", server.port)
    await conn.login("idle")
    ping = await conn.expect("ping")
    assert isinstance(ping["t"], int)
    await conn.error("timeout", timeout=5)
    await conn.wait_closed()
    await conn.close()


async def test_answering_pings_keeps_a_connection_open(make_server: ServerFactory) -> None:
    server = await make_server(limits={"idle_timeout": 0.6})
    conn = await RawConnection.open("127.0.0.1", server.port)
    await conn.login("lively")
    for _ in range(3):  # three pings, each answered, span more than the idle timeout
        ping = await conn.expect("ping")
        await conn.send({"type": "pong", "t": ping["t"]})
    assert not conn.closed.is_set()
    await conn.close()


async def test_oversize_lengths_close_with_frame_too_large(connect: ConnectFactory) -> None:
    conn = await connect("big")
    await conn.send_raw(frame(b"")[:4] + (2**32 - 1).to_bytes(4, "big"))
    await conn.error("frame_too_large")
    await conn.wait_closed()
    conn = await connect()
    await conn.send_raw((70_000).to_bytes(4, "big") + b"\0\0\0\0")
    await conn.error("frame_too_large")
    await conn.wait_closed()


async def test_rate_limit_answers_rate_limited_and_recovers(make_server: ServerFactory) -> None:
    server = await make_server(limits={"messages_per_second": 5, "burst": 3})
    conn = await RawConnection.open("127.0.0.1", server.port)
    await conn.login("fast")
    for i in range(6):
        await conn.send({"type": "ping", "t": i, "ref": i})
    replies = [await conn.expect_ref(i) for i in range(6)]
    kinds = [r["type"] for r in replies]
    # the login took one of the 3 burst tokens; refill at 5/s adds at most a token while these are sent
    assert kinds[:2] == ["pong", "pong"] and kinds.count("error") >= 3, kinds
    assert all(r["code"] == "rate_limited" for r in replies if r["type"] == "error")
    pong = None
    for attempt in range(50):  # tokens come back at 5/s; retry a bounded number of times
        await conn.send({"type": "ping", "t": "again", "ref": f"a{attempt}"})
        reply = await conn.expect_ref(f"a{attempt}")
        if reply["type"] == "pong":
            pong = reply
            break
        await asyncio.sleep(0.05)
    assert pong is not None
    await conn.close()


async def test_a_login_is_never_rate_limited_before_welcome(make_server: ServerFactory) -> None:
    server = await make_server(limits={"messages_per_second": 0.001, "burst": 2})
    conn = await RawConnection.open("127.0.0.1", server.port)
    for i in range(4):
        await conn.send({"type": "ping", "t": i})
    for _ in range(2):  # a burst of 2: two pongs, then two refusals
        assert (await conn.first_of("error"))["code"] == "rate_limited"
    assert (await conn.login("patient"))["type"] == "welcome"
    await conn.close()


async def test_pong_before_login_is_not_logged_in(connect: ConnectFactory) -> None:
    conn = await connect()
    await conn.greeting()
    await conn.send({"type": "pong", "t": 1, "ref": "p"})
    assert (await conn.expect_ref("p"))["code"] == "not_logged_in"
