"""The test configuration: loopback, free ports, a database in a test folder, limits out of the way."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from chat.config import Config, LimitsConfig, config_with

Sections = Mapping[str, Mapping[str, Any]]

# High enough that no test trips a rate limit unless it sets one; UDP keys only where the config has them.
# The per-address limits are off: a test suite connects from 127.0.0.1 thousands of times and fails logins on purpose.
_GENEROUS_LIMITS = {
    "messages_per_second": 10_000,
    "burst": 10_000,
    "udp_per_second": 10_000,
    "udp_burst": 10_000,
    "max_connections_per_address": 0,
    "max_unauthenticated_per_address": 0,
    "connections_per_minute_per_address": 0,
    "logins_per_minute_per_address": 0,
    "identities_per_hour_per_address": 0,
    "stored_bytes_per_hour_per_identity": 0,
}


def test_config(directory: Path | str, **sections: Mapping[str, Any]) -> Config:
    """The configuration a test server runs with; `sections` override keys: `test_config(d, limits={"burst": 5})`.

    127.0.0.1 with TCP and UDP port 0 (any free port), no nick hold, rate limits far above any test's traffic, the
    history database and the files folder in `directory`, no per-address limits.
    """
    folder = Path(directory)
    limits = {key: value for key, value in _GENEROUS_LIMITS.items() if key in LimitsConfig.__struct_fields__}
    base = config_with(
        Config(),
        server={"host": "127.0.0.1", "port": 0, "udp_port": 0, "nick_hold": 0},
        limits=limits,
        history={"database": str(folder / "chat.db")},
        files={"directory": str(folder / "files")},
    )
    return config_with(base, **sections) if sections else base


test_config.__test__ = False  # type: ignore[attr-defined]  # not a test, whatever its name


def merge_sections(*layers: Sections) -> dict[str, dict[str, Any]]:
    """Section overrides merged key by key, later layers winning."""
    merged: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in layer.items():
            merged.setdefault(section, {}).update(values)
    return merged


def config_toml(config: Config) -> str:
    """`config` as a TOML file `load_config` reads back to the same values (for a `chat-server` subprocess)."""
    lines: list[str] = []
    for section, values in msgspec.to_builtins(config).items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string, once DEL is escaped too (TOML 1.0, "String").
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    raise TypeError(f"no TOML form for {value!r} in a chat config")
