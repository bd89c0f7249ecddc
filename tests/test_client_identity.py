"""`connect(..., state=PATH)`: a program started again is the same identity, with its nick and its missed messages."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from chat.client import Client, Message, ServerError, connect
from chat.client.identity import IdentityFileError, SavedIdentity, load_identity, save_identity
from chat.testing.servers import ServerFactory

HOLD = {"server": {"nick_hold": 3600}}  # a nick stays its identity's for an hour after it leaves


async def next_message(client: Client) -> Message:
    async with asyncio.timeout(10):
        while True:
            event = await client.recv()
            if isinstance(event, Message):
                return event


@pytest.mark.asyncio
async def test_a_restarted_program_with_its_state_file_gets_its_nick_back(
    chat_server: ServerFactory, tmp_path: Path
) -> None:
    server = await chat_server(**HOLD)
    state = tmp_path / "bot.json"
    async with connect(server.host, server.port, nick="bot", state=state, udp=False) as first:
        token = first.session
    saved = load_identity(state)
    assert saved is not None and saved.session == token and saved.nick == "bot"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600, "the token is a credential: owner only"

    with pytest.raises(ServerError) as refused:  # without the file, the held nick is someone else's
        await connect(server.host, server.port, nick="bot", udp=False, reconnect=False)
    assert refused.value.code == "nick_taken"
    async with connect(server.host, server.port, nick="bot", state=state, udp=False) as again:
        assert (again.session, again.nick) == (token, "bot")


@pytest.mark.asyncio
async def test_private_messages_sent_while_the_program_was_down_are_delivered_once_after_its_restart(
    chat_server: ServerFactory, tmp_path: Path
) -> None:
    server = await chat_server(**HOLD)
    state = tmp_path / "bot.json"
    async with connect(server.host, server.port, nick="alice", udp=False) as alice:
        async with connect(server.host, server.port, nick="bot", state=state, udp=False) as bot:
            seen = await alice.say("seen before the restart", to="bot")
            assert await next_message(bot) == seen
        saved = load_identity(state)
        assert saved is not None and saved.since == seen.id, "the private since follows what was delivered"
        missed = [await alice.say(f"missed {i}", to="bot") for i in range(3)]
        async with connect(server.host, server.port, nick="bot", state=state, udp=False) as bot:
            assert [await next_message(bot) for _ in missed] == missed
            marker = await alice.say("after the restart", to="bot")
            assert await next_message(bot) == marker, "nothing, not `seen` again, between the missed and the marker"


@pytest.mark.asyncio
async def test_a_state_file_from_another_database_starts_a_new_identity_that_misses_nothing(
    chat_server: ServerFactory, tmp_path: Path
) -> None:
    state = tmp_path / "bot.json"
    save_identity(state, SavedIdentity(session="f" * 64, since=1_000, nick="bot"))  # ids far above the new server's
    server = await chat_server(**HOLD)
    async with (
        connect(server.host, server.port, nick="alice", udp=False) as alice,
        connect(server.host, server.port, nick="bot", state=state, udp=False) as bot,
    ):
        assert bot.session != "f" * 64
        first = await alice.say("hello new bot", to="bot")
        assert first.id < 1_000
        assert await next_message(bot) == first, "the old identity's since must not hide the new one's messages"
    saved = load_identity(state)
    assert saved is not None and saved.session != "f" * 64 and saved.since == first.id


def test_a_corrupt_state_file_is_refused_with_its_path(tmp_path: Path) -> None:
    state = tmp_path / "bot.json"
    state.write_text("{not json")
    with pytest.raises(IdentityFileError, match=r"bot\.json"):
        load_identity(state)
    assert load_identity(tmp_path / "missing.json") is None
