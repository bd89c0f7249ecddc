"""`chat-client`: the full-screen terminal client, assembled from the model, the controller, the panes and the keys.

    chat-client [--host H] [--port P] [--nick N] [--secret S] [--tls] [--cafile F] [--fingerprint F] [--config PATH]

Settings come from the `[client]` section, with the server's precedence: built-in defaults < `config.toml` in the
working folder (or `--config PATH`, which must exist) < `CHAT_CLIENT_*` environment variables < flags. Without a
nick anywhere, the login name is used, reduced to the characters a nick may have.

The app never writes to the terminal except through prompt_toolkit: logging goes to a file in the XDG state
directory (`chat.tui.state`), configured before the app starts, and exceptions in the event loop are logged there
too instead of being printed over the screen.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import logging.handlers
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.document import Document
from prompt_toolkit.input import Input
from prompt_toolkit.output import Output

from chat import __version__
from chat.client.trust import parse_fingerprint
from chat.config import ConfigError, config_file, load_config
from chat.protocol.names import MAX_NAME_CHARS, name_char_allowed, name_problem, nfc
from chat.tui.commands import COMMANDS, ChatCompleter, CommandTable
from chat.tui.controller import Controller, Settings
from chat.tui.keys import create_key_bindings
from chat.tui.layout import MessagePane, create_layout, create_style
from chat.tui.model import ChatModel, Conversation
from chat.tui.state import StateStore, make_private_directory, state_directory

logger = logging.getLogger("chat.tui")

LOG_BYTES = 1_000_000
ESCAPE_SEQUENCE_WAIT = 0.1  # seconds for the rest of a terminal escape sequence to arrive (Vim's ttimeoutlen)
ALT_KEY_WAIT = 0.4  # seconds an Esc waits to see if it starts an Alt-key binding (Vim's timeoutlen)
FALLBACK_NICK = "guest"


class ChatApp:
    """One terminal client: its model, controller and prompt_toolkit Application (also the controller's UI)."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        *,
        input: Input | None = None,
        output: Output | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.model = ChatModel(
            settings.nick, _server_name(settings.host, settings.port), clock, scripts=settings.scripts
        )
        self.table = CommandTable(COMMANDS)
        self.controller = Controller(settings, self.model, store, self, self.table, clock=clock, monotonic=monotonic)
        self.buffer = Buffer(
            multiline=True,
            completer=ChatCompleter(self.model, self.table),
            complete_while_typing=False,
            on_text_changed=self._typed,
        )
        self.pane = MessagePane(self.model, self.controller.request_older)
        self._shown: Conversation | None = None
        layout, self.input_window = create_layout(
            self.model,
            self.pane,
            self.buffer,
            self.show,
            clock,
            lambda: self.application.output.get_size().columns,
            monotonic=monotonic,
        )
        self.application: Application[int] = Application(
            layout=layout,
            key_bindings=create_key_bindings(self),
            style=create_style(),
            full_screen=True,
            mouse_support=True,
            input=input,
            output=output,
        )
        # A lone Esc acts after these delays (it may start an escape sequence, or Alt-key); prompt_toolkit's
        # defaults (0.5 s, then 1 s) make Esc feel stuck.
        self.application.ttimeoutlen = ESCAPE_SEQUENCE_WAIT
        self.application.timeoutlen = ALT_KEY_WAIT

    # --- what the controller asks of the interface ---------------------------------------------------------------

    def refresh(self) -> None:
        self.application.invalidate()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return self.application.create_background_task(coroutine)

    def bell(self) -> None:
        self.application.output.bell()

    def exit(self) -> None:
        if self.application.future is not None and not self.application.future.done():
            self.application.exit(result=0)

    def show(self, conversation: Conversation) -> None:
        """Show a conversation; the input line's text stays with the conversation it was typed in."""
        if self._shown is not None and self._shown is not conversation:
            self._shown.draft = self.buffer.text
        self.model.switch(conversation)
        if self._shown is not conversation:
            self._shown = conversation
            self.buffer.document = Document(conversation.draft, len(conversation.draft))
        self.model.confirm = None
        self.refresh()

    def _typed(self, buffer: Buffer) -> None:
        self.model.confirm = None
        text = buffer.text
        if text and not text.startswith("/"):
            self.controller.typing(self.model.current)

    # --- running -------------------------------------------------------------------------------------------------

    def _start_connection(self) -> None:
        self.controller.spawn(self.controller.run())

    async def run(self) -> int:
        """Run until /quit (0). The connection runs as a background task of the application."""
        result = await self.application.run_async(
            pre_run=self._start_connection,
            set_exception_handler=False,
            handle_sigint=False,
        )
        return result or 0


def _server_name(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- command line ----------------------------------------------------------------------------------------------


def _arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chat-client", description="Chat on a chat server, full screen.")
    parser.add_argument("--config", type=Path, help="config file (default: ./config.toml if it exists)")
    parser.add_argument("--host", help="server address ([client] host)")
    parser.add_argument("--port", type=int, help="server TCP port ([client] port)")
    parser.add_argument("--nick", help="nick to log in with ([client] nick; default: your login name)")
    parser.add_argument("--secret", help="the server's shared secret, if it has one ([client] secret)")
    parser.add_argument(
        "--tls", action="store_true", default=None, help="connect over TLS, to [client] tls_port ([client] tls)"
    )
    parser.add_argument("--cafile", help="verify the server's certificate with these CAs; implies --tls")
    parser.add_argument("--fingerprint", help="trust only the certificate with this sha256: fingerprint; implies --tls")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--version", action="version", version=f"chat-client {__version__}")
    return parser


def client_settings(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """Defaults < config file < CHAT_* environment < flags, for the `[client]` section; ConfigError if wrong."""
    path = config_file(args.config)
    given = {key: getattr(args, key, None) for key in ("host", "nick", "secret", "tls", "cafile", "fingerprint")}
    flags: dict[str, Any] = {key: value for key, value in given.items() if value is not None}
    config = load_config(path, environ=environ, overrides={"client": flags}).client
    tls = config.tls or bool(config.cafile or config.fingerprint)
    if config.fingerprint:
        try:
            parse_fingerprint(config.fingerprint)
        except ValueError as exc:
            raise ConfigError(f"[client] fingerprint: {exc}") from None
    port = config.tls_port if tls else config.port  # --port sets the port of the way in use
    if getattr(args, "port", None) is not None:
        if not 0 < args.port <= 65535:
            raise ConfigError(f"--port {args.port} is not a port number")
        port = args.port
    nick = nfc(config.nick) if config.nick else login_nick()
    problem = name_problem(nick)
    if problem is not None:
        raise ConfigError(f"nick {nick!r}: {problem}")
    scripts = tuple(name.strip() for name in config.scripts.split(",") if name.strip())
    highlight = tuple(word for word in re.split(r"[\s,]+", config.highlight) if word)
    return Settings(
        host=config.host,
        port=port,
        nick=nick,
        secret=config.secret,
        scripts=scripts,
        highlight=highlight,
        logs=config.logs,
        tls=tls,
        cafile=config.cafile,
        fingerprint=config.fingerprint,
    )


def login_nick(user: str | None = None) -> str:
    """The login name reduced to a valid nick: letters, digits, marks (not first), `_`, `-` and `.`; at most 32."""
    if user is None:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = ""
    kept: list[str] = []
    for char in nfc(user):
        if name_char_allowed(char, len(kept)):
            kept.append(char)
    nick = "".join(kept)[:MAX_NAME_CHARS]
    return nick if nick and name_problem(nick) is None else FALLBACK_NICK


def configure_logging(path: Path, level: str) -> None:
    """Send every log record to `path` (rotated), none to the terminal; warnings too."""
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=LOG_BYTES, backupCount=2, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)


def _log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exception = context.get("exception")
    logger.error("unhandled in the event loop: %s", context.get("message"), exc_info=exception)


async def _run(settings: Settings, store: StateStore) -> int:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_log_loop_exception)
    app = ChatApp(settings, store)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, app.controller.request_quit)
    return await app.run()


def main(argv: Sequence[str] | None = None) -> int:
    """`chat-client`: exit 0 after /quit, 2 for a bad configuration or no terminal."""
    args = _arguments().parse_args(argv)
    try:
        settings = client_settings(args)
    except ConfigError as exc:
        print(f"chat-client: {exc}", file=sys.stderr)
        return 2
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("chat-client: needs a terminal (stdin and stdout)", file=sys.stderr)
        return 2
    store = StateStore(state_directory())
    try:
        make_private_directory(store.directory)
        configure_logging(store.log_path, args.log_level)
    except OSError as exc:
        print(f"chat-client: cannot use {store.directory}: {exc.strerror}", file=sys.stderr)
        return 1
    logger.info("chat-client %s for %s as %r (pid %d)", __version__, settings.host, settings.nick, os.getpid())
    try:
        return asyncio.run(_run(settings, store))
    finally:
        logger.info("chat-client exits")


if __name__ == "__main__":
    sys.exit(main())
