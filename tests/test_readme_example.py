"""The README's client-library example, run as written (only the port changed) twice in a row on a fresh server."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import pytest

from chat.client import Client, Message, connect
from chat.testing.servers import ServerFactory

README = Path(__file__).resolve().parent.parent / "README.md"
WAIT = 20.0


def readme_example() -> str:
    """The README's python block that uses `chat.client.connect`."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    [example] = [block for block in blocks if "from chat.client import" in block and "connect(" in block]
    return example


async def next_message_from(client: Client, sender: str) -> Message:
    async with asyncio.timeout(WAIT):
        while True:
            event = await client.recv()
            if isinstance(event, Message) and event.sender == sender:
                return event


class ExampleRun:
    """The example as a child process in `folder` (where its state file goes), against `port`."""

    def __init__(self, code: str, folder: Path) -> None:
        self.code = code
        self.folder = folder
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> str:
        """Start it; its first line of output (`stored as N`)."""
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", self.code, cwd=self.folder,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.process.stdout is not None
        async with asyncio.timeout(WAIT):
            line = await self.process.stdout.readline()
        if not line:
            assert self.process.stderr is not None
            raise AssertionError(f"the example ended: {(await self.process.stderr.read()).decode()}")
        return line.decode().strip()

    async def stop(self) -> None:
        """Ctrl-C, as a user stops it; it must end by itself."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
            async with asyncio.timeout(WAIT):
                await self.process.wait()


@pytest.mark.asyncio
async def test_the_readme_bot_runs_twice_in_a_row_and_answers_only_new_pings(
    chat_server: ServerFactory, tmp_path: Path
) -> None:
    server = await chat_server(server={"nick_hold": 28_800})  # the default hold: the nick stays the bot's
    code = readme_example().replace("7777", str(server.port))
    assert code != readme_example(), "the example connects to port 7777"
    async with connect(server.host, server.port, nick="alice", udp=False) as alice:
        await alice.join("lobby")
        for run in range(2):
            bot = ExampleRun(code, tmp_path)
            try:
                assert re.fullmatch(r"stored as \d+", await bot.start())
                announcement = await next_message_from(alice, "pingbot")
                assert announcement.text == "pingbot is here: say !ping"
                ping = await alice.say("!ping", room="lobby")
                # The bot's next message answers this ping: not one found in its join replay (run 2 has run 1's)
                assert (await next_message_from(alice, "pingbot")).text == f"pong to message {ping.id}, alice", run
            finally:
                await bot.stop()
    assert (tmp_path / "pingbot.json").exists()
