"""Configuration: built-in defaults < config.toml (or --config PATH) < CHAT_* environment < command-line flags.

Every section is a msgspec Struct, so a TOML file is decoded and validated in one step and an unknown key is an
error that names it. Environment variables are `CHAT_<SECTION>_<KEY>` in upper case (`CHAT_SERVER_PORT=7000`).
Relative paths in a config file are taken relative to that file's folder; elsewhere, relative to the working folder.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec


class ConfigError(Exception):
    """The configuration could not be read: a bad file, an unknown key, a value of the wrong type."""


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class ServerConfig(_Section):
    host: str = "0.0.0.0"
    port: int = 7777
    udp_port: int = 7777
    backlog: int = 512
    secret: str = ""
    max_clients: int = 1000
    nick_hold: float = 28_800.0
    # TLS on a port of its own, on when tls_cert names a certificate (docs/security.md, TLS and the shared secret)
    tls_port: int = 7778
    tls_cert: str = ""
    tls_key: str = ""  # empty: the private key is in the tls_cert file


class LimitsConfig(_Section):
    max_header_bytes: int = 65_536
    max_payload_bytes: int = 1_048_576
    # Before welcome (docs/security.md, memory before trust): a login is a few hundred bytes and takes no payload
    max_header_bytes_before_login: int = 4096
    max_payload_bytes_before_login: int = 0
    # Input held for one connection without asking the server-wide pool, and that pool (0 = no limit)
    max_buffered_bytes_per_connection: int = 131_072
    max_buffered_bytes: int = 33_554_432
    max_text_chars: int = 4000
    send_queue_bytes: int = 2 * 1024 * 1024
    messages_per_second: float = 20.0
    burst: int = 100
    idle_timeout: float = 120.0
    login_timeout: float = 10.0
    tls_handshake_timeout: float = 10.0
    udp_per_second: float = 200.0
    udp_burst: int = 400
    # Retransmissions of quick messages to one session (docs/security.md, UDP); a burst of 0 = no limit
    udp_retransmits_per_second: float = 10.0
    udp_retransmit_burst: int = 40
    # Per source address (IPv4 address, IPv6 /64; docs/security.md); 0 = no limit
    max_connections_per_address: int = 256
    max_unauthenticated_per_address: int = 128
    connections_per_minute_per_address: int = 1200
    logins_per_minute_per_address: int = 30
    identities_per_hour_per_address: int = 100  # new identities (logins without a known token); docs/security.md
    # Bytes of messages one identity may have stored per hour (text plus a fixed charge per row); 0 = no limit
    stored_bytes_per_hour_per_identity: int = 2 * 1024 * 1024


class HistoryConfig(_Section):
    database: str = "data/chat.db"
    replay: int = 50
    retention_days: float = 90.0
    synchronous: str = "normal"


class FilesConfig(_Section):
    directory: str = "data/files"
    max_bytes: int = 100 * 1024 * 1024
    quota_bytes: int = 1024 * 1024 * 1024
    quota_bytes_per_identity: int = 256 * 1024 * 1024
    max_open_uploads_per_identity: int = 4
    upload_idle_seconds: float = 300.0
    bytes_per_second: int = 0
    resume_seconds: float = 3600.0


class ClientConfig(_Section):
    host: str = "127.0.0.1"
    port: int = 7777
    nick: str = ""
    secret: str = ""
    scripts: str = ""  # comma-separated script names read as usual besides Latin and the nick's (chat/tui/render.py)
    highlight: str = ""  # the terminal client: words (blanks or commas between) that count as a mention
    logs: bool = False  # the terminal client: plain-text conversation logs in its state folder
    tls: bool = False  # connect to tls_port over TLS (also on when cafile or fingerprint is set)
    tls_port: int = 7778
    cafile: str = ""  # verify the server's certificate against these CAs (hostname checked)
    fingerprint: str = ""  # trust only the certificate with this SHA-256 fingerprint ("sha256:...")


class Config(_Section):
    """The whole configuration; each part of the program reads its own section."""

    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    history: HistoryConfig = msgspec.field(default_factory=HistoryConfig)
    files: FilesConfig = msgspec.field(default_factory=FilesConfig)
    client: ClientConfig = msgspec.field(default_factory=ClientConfig)

    def validate(self) -> Config:
        """Refuse values no server can run with; return self so calls chain."""
        problems = []
        for section, key, minimum in _MINIMUMS:
            value = getattr(getattr(self, section), key)
            if value < minimum:
                problems.append(f"[{section}] {key} = {value!r} is below {minimum}")
        if self.history.synchronous not in ("normal", "full"):
            problems.append(f"[history] synchronous = {self.history.synchronous!r} is not 'normal' or 'full'")
        if self.server.tls_key and not self.server.tls_cert:
            problems.append("[server] tls_key is set but tls_cert is not: TLS needs a certificate")
        for section, key in _PORTS:
            value = getattr(getattr(self, section), key)
            if not 0 <= value <= 65535:
                problems.append(f"[{section}] {key} = {value!r} is not a port number")
        if problems:
            raise ConfigError("; ".join(problems))
        return self


_MINIMUMS: tuple[tuple[str, str, float], ...] = (
    ("server", "backlog", 1),
    ("server", "max_clients", 1),
    ("server", "nick_hold", 0),
    ("limits", "max_header_bytes", 64),
    ("limits", "max_payload_bytes", 0),
    ("limits", "max_header_bytes_before_login", 64),
    ("limits", "max_payload_bytes_before_login", 0),
    ("limits", "max_buffered_bytes_per_connection", 1024),
    ("limits", "max_buffered_bytes", 0),
    ("limits", "max_text_chars", 1),
    ("limits", "send_queue_bytes", 1024),
    ("limits", "messages_per_second", 0.001),
    ("limits", "burst", 1),
    ("limits", "idle_timeout", 0.05),
    ("limits", "login_timeout", 0.05),
    ("limits", "tls_handshake_timeout", 0.05),
    ("limits", "udp_per_second", 0.001),
    ("limits", "udp_burst", 1),
    ("limits", "udp_retransmits_per_second", 0.001),
    ("limits", "udp_retransmit_burst", 0),
    ("limits", "max_connections_per_address", 0),
    ("limits", "max_unauthenticated_per_address", 0),
    ("limits", "connections_per_minute_per_address", 0),
    ("limits", "logins_per_minute_per_address", 0),
    ("limits", "identities_per_hour_per_address", 0),
    ("limits", "stored_bytes_per_hour_per_identity", 0),
    ("history", "replay", 1),
    ("history", "retention_days", 0),
    ("files", "max_bytes", 0),
    ("files", "quota_bytes", 0),
    ("files", "quota_bytes_per_identity", 0),
    ("files", "max_open_uploads_per_identity", 0),
    ("files", "upload_idle_seconds", 0.05),
    ("files", "bytes_per_second", 0),
    ("files", "resume_seconds", 0),
)
_PORTS = (
    ("server", "port"),
    ("server", "udp_port"),
    ("server", "tls_port"),
    ("client", "port"),
    ("client", "tls_port"),
)
SECTIONS: dict[str, type[_Section]] = {
    "server": ServerConfig,
    "limits": LimitsConfig,
    "history": HistoryConfig,
    "files": FilesConfig,
    "client": ClientConfig,
}
_PATH_KEYS = (
    ("history", "database"),
    ("files", "directory"),
    ("server", "tls_cert"),
    ("server", "tls_key"),
    ("client", "cafile"),
)


def _as_dict(config: Config) -> dict[str, dict[str, Any]]:
    return msgspec.to_builtins(config)  # type: ignore[no-any-return]


def _merge(base: dict[str, dict[str, Any]], overrides: Mapping[str, Mapping[str, Any]]) -> None:
    for section, values in overrides.items():
        if section not in SECTIONS:
            raise ConfigError(f"unknown section [{section}]")
        if not isinstance(values, Mapping):
            raise ConfigError(f"[{section}] must be a table")
        for key, value in values.items():
            if key not in SECTIONS[section].__struct_fields__:
                raise ConfigError(f"unknown key {key!r} in [{section}]")
            base[section][key] = value


def _build(data: dict[str, dict[str, Any]], strict: bool = True) -> Config:
    try:
        return msgspec.convert(data, Config, strict=strict).validate()
    except msgspec.ValidationError as exc:
        raise ConfigError(f"bad configuration value: {exc}") from None


def read_file(path: Path) -> dict[str, dict[str, Any]]:
    """The tables of a TOML config file, with relative paths resolved against its folder."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    for section, key in _PATH_KEYS:
        value = data.get(section, {}).get(key) if isinstance(data.get(section), dict) else None
        if isinstance(value, str) and value and value != ":memory:" and not Path(value).is_absolute():
            data[section][key] = str(path.parent.resolve() / value)
    return data


def config_file(explicit: Path | None) -> Path | None:
    """The config file to read: the one given (which must exist), else `./config.toml` if there is one."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file {str(explicit)!r} does not exist")
        return explicit
    default = Path("config.toml")
    return default if default.is_file() else None


def environment_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """`CHAT_<SECTION>_<KEY>` variables as string overrides; an unknown name is an error."""
    overrides: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith("CHAT_"):
            continue
        rest = name[5:].lower()
        section = next((s for s in SECTIONS if rest.startswith(s + "_")), None)
        if section is None:
            raise ConfigError(f"environment variable {name} names no config section")
        key = rest[len(section) + 1 :]
        if key not in SECTIONS[section].__struct_fields__:
            raise ConfigError(f"environment variable {name}: unknown key {key!r} in [{section}]")
        overrides.setdefault(section, {})[key] = value
    return overrides


def load_config(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Defaults, then the file at `path` (if any), then `CHAT_*` variables, then `overrides` (flags)."""
    data = _as_dict(Config())
    if path is not None:
        _merge(data, read_file(path))
    _build(data)  # report a bad file before the environment muddles the message
    env = environment_overrides(os.environ if environ is None else environ)
    if env:
        _merge(data, env)
        try:
            data = _as_dict(_build(data, strict=False))
        except ConfigError as exc:  # name the variables: the bad value came from one of them
            names = ", ".join(f"CHAT_{section.upper()}_{key.upper()}" for section in env for key in env[section])
            raise ConfigError(f"{exc} (from the environment: {names})") from None
    if overrides:
        _merge(data, overrides)
    return _build(data, strict=False)


def config_with(config: Config, **sections: Mapping[str, Any]) -> Config:
    """A copy of `config` with some keys replaced: `config_with(c, limits={"burst": 5})`."""
    data = _as_dict(config)
    _merge(data, sections)
    return _build(data, strict=False)
