"""Per-address limits over real sockets (docs/security.md): one host cannot lock the others out.

Each attack comes from 127.0.0.1; the legitimate client beside it connects from 127.0.0.2 (another loopback address,
as another machine of the LAN would) and must get `hello`, log in and chat.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import ServerFactory
from rawwire import RawConnection

from chat.server.app import ChatServer

pytestmark = pytest.mark.asyncio

ATTACKER, NEIGHBOUR = "127.0.0.1", "127.0.0.2"


async def first_frame(server: ChatServer, source: str) -> tuple[RawConnection, dict[str, Any]]:
    conn = await RawConnection.open("127.0.0.1", server.port, source=source)
    first = await conn.first_of("hello", "error")
    if first["type"] == "hello":
        conn.hello = first
    return conn, first


async def neighbour_chats(server: ChatServer) -> None:
    """A client of another address gets hello, logs in, joins and has its message stored."""
    conn, first = await first_frame(server, NEIGHBOUR)
    assert first["type"] == "hello", first
    assert (await conn.login("neighbour"))["type"] == "welcome"
    await conn.join("lobby")
    assert (await conn.say("still here", room="lobby"))["text"] == "still here"
    await conn.close()


async def test_sockets_held_by_one_address_stop_at_its_limit_and_a_neighbour_still_gets_in(
    make_server: ServerFactory,
) -> None:
    server = await make_server(server={"max_clients": 100}, limits={"max_connections_per_address": 20})
    held, refused = [], []
    for _ in range(40):
        conn, first = await first_frame(server, ATTACKER)
        (held if first["type"] == "hello" else refused).append((conn, first))
    assert len(held) == 20
    assert {first["code"] for _, first in refused} == {"too_many_connections"}
    await neighbour_chats(server)
    for conn, _ in held + refused:
        await conn.close()


async def test_connections_not_logged_in_have_a_lower_limit_of_their_own(make_server: ServerFactory) -> None:
    server = await make_server(
        limits={"max_connections_per_address": 50, "max_unauthenticated_per_address": 5}
    )  # fmt: skip
    waiting = [await first_frame(server, ATTACKER) for _ in range(5)]
    assert all(first["type"] == "hello" for _, first in waiting)
    extra, first = await first_frame(server, ATTACKER)
    assert first["code"] == "too_many_connections" and "not logged in" in first["message"]
    assert (await waiting[0][0].login("early"))["type"] == "welcome"  # one logs in: a place is free again
    again, first = await first_frame(server, ATTACKER)
    assert first["type"] == "hello"
    await neighbour_chats(server)
    for conn in [c for c, _ in waiting] + [extra, again]:
        await conn.close()


async def test_reconnecting_in_a_loop_is_refused_past_the_rate_and_the_neighbour_is_not(
    make_server: ServerFactory,
) -> None:
    server = await make_server(limits={"connections_per_minute_per_address": 30})
    codes = []
    for _ in range(40):
        conn, first = await first_frame(server, ATTACKER)
        codes.append(first.get("code", first["type"]))
        await conn.close()
    assert codes[:30] == ["hello"] * 30
    assert set(codes[30:]) == {"connecting_too_fast"}
    await neighbour_chats(server)


async def test_a_failed_proof_pauses_its_address_only(make_server: ServerFactory) -> None:
    server = await make_server(server={"secret": "s3cret"}, limits={"logins_per_minute_per_address": 10})
    guess = await RawConnection.open("127.0.0.1", server.port, source=ATTACKER)
    assert (await guess.login("mallory", secret="wrong"))["code"] == "auth_failed"
    retry = await RawConnection.open("127.0.0.1", server.port, source=ATTACKER)
    answer = await retry.login("mallory", secret="s3cret")  # even the right secret waits out the pause
    assert answer["code"] == "too_many_logins"
    neighbour = await RawConnection.open("127.0.0.1", server.port, source=NEIGHBOUR)
    assert (await neighbour.login("alice", secret="s3cret"))["type"] == "welcome"
    for conn in (guess, retry, neighbour):
        await conn.close()


async def test_near_max_clients_the_last_slots_are_kept_for_small_hosts(make_server: ServerFactory) -> None:
    server = await make_server(
        server={"max_clients": 20},
        limits={"max_connections_per_address": 0, "max_unauthenticated_per_address": 0},
    )
    held = []
    while True:
        conn, first = await first_frame(server, ATTACKER)
        held.append(conn)
        if first["type"] != "hello":
            assert first["code"] == "too_many_clients"
            break
        assert len(held) <= 20
    assert len(held) - 1 == 18, "the host that took many slots stops at max_clients minus a tenth"
    await neighbour_chats(server)
    for conn in held:
        await conn.close()
    await asyncio.sleep(0)


async def test_new_nicks_in_a_loop_stop_at_the_identity_limit_and_resumes_and_neighbours_go_on(
    make_server: ServerFactory,
) -> None:
    """The squatting loop (docs/security.md): log in with a new nick and quit, again and again, from one address."""
    server = await make_server(server={"nick_hold": 28_800}, limits={"identities_per_hour_per_address": 5})
    answers, tokens = [], []
    for number in range(8):
        conn, _ = await first_frame(server, ATTACKER)
        answer = await conn.login(f"squat{number}")
        answers.append(answer.get("code", answer["type"]))
        if answer["type"] == "welcome":
            tokens.append((answer["nick"], answer["session"]))
        await conn.close()
    assert answers == ["welcome"] * 5 + ["too_many_identities"] * 3
    assert server.service.engine.nick_holder("squat5") is None, "a refused login reserves nothing"
    for nick, token in tokens[:2]:  # a login with a known token makes no identity: never counted
        conn, _ = await first_frame(server, ATTACKER)
        assert (await conn.login(nick, session=token))["type"] == "welcome"
        await conn.close()
    conn, _ = await first_frame(server, ATTACKER)
    assert (await conn.login("squat9", session="not a token the server knows"))["code"] == "too_many_identities"
    await conn.close()
    await neighbour_chats(server)
