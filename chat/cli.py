"""Command-line entry points: `chat-server` (serve) and `chat-server backup DEST` (copy the live database)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sqlite3
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from chat import __version__
from chat.config import Config, ConfigError, config_file, load_config

logger = logging.getLogger("chat.server")


def _server_arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chat-server",
        description="Run a chat server for the local network.",
        epilog="chat-server backup DEST copies the history database, also while a server runs on it "
        "(chat-server backup --help).",
    )
    parser.add_argument("--config", type=Path, help="config file (default: ./config.toml if it exists)")
    parser.add_argument("--host", help="address to listen on ([server] host)")
    parser.add_argument("--port", type=int, help="TCP port, 0 for any free port ([server] port)")
    parser.add_argument("--udp-port", type=int, help="UDP port, 0 for any free port ([server] udp_port)")
    parser.add_argument("--tls-port", type=int, help="TLS port, 0 for any free port ([server] tls_port)")
    parser.add_argument("--tls-cert", help="PEM certificate: turns the TLS port on ([server] tls_cert)")
    parser.add_argument("--tls-key", help="PEM private key, if not in the certificate's file ([server] tls_key)")
    parser.add_argument("--database", help="SQLite history file, or :memory: ([history] database)")
    parser.add_argument("--secret", help="shared secret clients must prove ([server] secret)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], help="event loop (default: uvloop when installed)")
    parser.add_argument("--version", action="version", version=f"chat-server {__version__}")
    return parser


def server_config(args: argparse.Namespace) -> Config:
    """Defaults < config file < CHAT_* environment < flags."""
    path = config_file(args.config)
    flags: dict[str, dict[str, Any]] = {"server": {}, "history": {}}
    for key in ("host", "port", "udp_port", "secret", "tls_port", "tls_cert", "tls_key"):
        value = getattr(args, key)
        if value is not None:
            flags["server"][key] = value
    if args.database is not None:
        flags["history"]["database"] = args.database
    return load_config(path, overrides=flags)


def run_event_loop(main: Coroutine[Any, Any, int], loop: str | None = None) -> int:
    """Run `main` on the `loop` asked for ("uvloop" or "asyncio"); by default on uvloop when it is installed."""
    if loop == "asyncio":
        return asyncio.run(main)
    try:
        import uvloop
    except ImportError:
        if loop == "uvloop":
            main.close()
            raise SystemExit("uvloop is not installed: use --loop asyncio") from None
        return asyncio.run(main)
    return uvloop.run(main)


async def _serve(config: Config) -> int:
    from chat.server.app import ChatServer, ListenError
    from chat.server.tls import TlsUnavailable
    from chat.store.errors import StoreError

    server = ChatServer(config)
    try:
        await server.start()
    except (StoreError, ListenError, TlsUnavailable) as exc:  # one line naming the file or port at fault, and why
        logger.error("%s", exc)
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(server.listening_line, file=sys.stderr, flush=True)
    await stop.wait()
    logger.info("shutting down")
    await server.close()
    return 0


def _backup_arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chat-server backup",
        description="Copy the history database into DEST, a new file: a consistent snapshot taken with SQLite's "
        "online backup, also while a server is serving on it (it goes on serving).",
    )
    parser.add_argument("dest", type=Path, metavar="DEST", help="the new file (never replaces one)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", type=Path, help="read [history] database from this config file")
    source.add_argument("--database", type=Path, help="the SQLite history file to copy")
    parser.add_argument("--pages", type=int, default=1024, help="pages copied per step (default 1024)")
    return parser


def backup_main(argv: Sequence[str]) -> int:
    """`chat-server backup DEST [--config PATH | --database PATH]`: 0 once DEST holds a checked copy, else 1."""
    from chat.store.backup import backup
    from chat.store.errors import StoreError

    args = _backup_arguments().parse_args(argv)
    try:
        source = args.database or Path(load_config(config_file(args.config)).history.database)
        result = backup(source, args.dest, pages=args.pages)
    except (ConfigError, StoreError, sqlite3.Error, OSError) as exc:
        print(f"chat-server backup: {exc}", file=sys.stderr)
        return 1
    print(
        f"chat-server backup: {source} -> {result.dest}: {result.pages} pages in {result.steps} steps, "
        f"{result.seconds:.2f} s, last message id {result.last_id}",
        file=sys.stderr,
    )
    return 0


def server_main(argv: Sequence[str] | None = None) -> int:
    """`chat-server`: start the server and run until SIGINT or SIGTERM (exit 0 after a clean shutdown);
    `chat-server backup ...`: see backup_main."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["backup"]:
        return backup_main(arguments[1:])
    args = _server_arguments().parse_args(arguments)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        config = server_config(args)
    except ConfigError as exc:
        print(f"chat-server: {exc}", file=sys.stderr)
        return 2
    return run_event_loop(_serve(config), args.loop)


if __name__ == "__main__":
    sys.exit(server_main())
