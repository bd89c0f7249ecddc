"""chat/config.py: defaults < config file < CHAT_* environment < flags, with every mistake a ConfigError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from chat.config import Config, ConfigError, config_with, environment_overrides, load_config, read_file

REPO_CONFIG = Path(__file__).parents[1] / "config.toml"
PATH_KEYS = {("history", "database"), ("files", "directory")}


@pytest.fixture
def chat_config_file(tmp_path: Path) -> Any:
    """A factory writing a TOML config file into a fresh folder and returning its path."""

    def write(text: str, name: str = "chat.toml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return write


def _keys(config: Config) -> dict[tuple[str, str], Any]:
    return {
        (section, key): value
        for section, values in msgspec.to_builtins(config).items()
        for key, value in values.items()
    }


# --- defaults and precedence ------------------------------------------------------------------------------------


def test_defaults_load_without_file_environment_or_flags() -> None:
    config = load_config(environ={})
    assert config == Config()
    assert config.server.port == 7777
    assert config.limits.max_header_bytes == 65_536
    assert config.limits.max_payload_bytes == 1_048_576
    assert config.limits.max_text_chars == 4000
    assert config.history.replay == 50
    assert config.server.nick_hold == 28_800


def test_built_in_defaults_pass_validation() -> None:
    assert Config().validate() == Config()


def test_file_overrides_defaults(chat_config_file: Any) -> None:
    path = chat_config_file('[server]\nport = 7000\nsecret = "s3cret"\n\n[limits]\nburst = 5\n')
    config = load_config(path, environ={})
    assert config.server.port == 7000
    assert config.server.secret == "s3cret"
    assert config.limits.burst == 5
    assert config.server.udp_port == Config().server.udp_port  # untouched keys keep their defaults


def test_environment_overrides_the_file(chat_config_file: Any) -> None:
    path = chat_config_file("[server]\nport = 7000\nbacklog = 64\n")
    config = load_config(path, environ={"CHAT_SERVER_PORT": "7100"})
    assert config.server.port == 7100
    assert config.server.backlog == 64


def test_environment_values_are_converted_to_the_key_type() -> None:
    config = load_config(environ={"CHAT_LIMITS_IDLE_TIMEOUT": "0.5", "CHAT_LIMITS_MAX_TEXT_CHARS": "500"})
    assert config.limits.idle_timeout == 0.5
    assert config.limits.max_text_chars == 500


def test_flags_override_the_environment(chat_config_file: Any) -> None:
    path = chat_config_file("[server]\nport = 7000\n")
    config = load_config(path, environ={"CHAT_SERVER_PORT": "7100"}, overrides={"server": {"port": 7200}})
    assert config.server.port == 7200


def test_environment_variables_not_starting_with_chat_are_ignored() -> None:
    assert load_config(environ={"PATH": "/bin", "SERVER_PORT": "1", "chat_server_port": "2"}) == Config()


def test_environment_overrides_map_names_to_sections_and_keys() -> None:
    assert environment_overrides({"CHAT_LIMITS_MAX_HEADER_BYTES": "128", "HOME": "/root"}) == {
        "limits": {"max_header_bytes": "128"}
    }


# --- mistakes are ConfigErrors that say what is wrong -----------------------------------------------------------


def test_unknown_key_in_file_is_named(chat_config_file: Any) -> None:
    path = chat_config_file("[server]\nprot = 7000\n")
    with pytest.raises(ConfigError, match="prot"):
        load_config(path, environ={})


def test_unknown_section_in_file_is_named(chat_config_file: Any) -> None:
    path = chat_config_file("[sever]\nport = 7000\n")
    with pytest.raises(ConfigError, match="sever"):
        load_config(path, environ={})


def test_section_that_is_not_a_table_is_an_error(chat_config_file: Any) -> None:
    with pytest.raises(ConfigError, match="server"):
        load_config(chat_config_file("server = 7000\n"), environ={})


def test_unknown_key_in_environment_is_named() -> None:
    with pytest.raises(ConfigError, match="CHAT_SERVER_PROT"):
        load_config(environ={"CHAT_SERVER_PROT": "7000"})


def test_environment_variable_naming_no_section_is_named() -> None:
    with pytest.raises(ConfigError, match="CHAT_SEVER_PORT"):
        load_config(environ={"CHAT_SEVER_PORT": "7000"})


def test_unknown_key_in_flags_is_named() -> None:
    with pytest.raises(ConfigError, match="prot"):
        load_config(environ={}, overrides={"server": {"prot": 1}})


@pytest.mark.parametrize(
    "text",
    ['[server]\nport = "7000"\n', "[server]\nport = true\n", "[server]\nport = 7000.0\n", "[server]\nhost = 5\n"],
    ids=["string-for-int", "bool-for-int", "float-for-int", "int-for-string"],
)
def test_wrong_type_in_file_is_an_error(chat_config_file: Any, text: str) -> None:
    with pytest.raises(ConfigError, match=r"server\.(port|host)"):
        load_config(chat_config_file(text), environ={})


def test_integer_for_a_seconds_value_is_accepted(chat_config_file: Any) -> None:
    # docs/protocol.md 8: timeouts are in seconds, fractions allowed; a whole number is just as good.
    config = load_config(chat_config_file("[limits]\nidle_timeout = 30\n"), environ={})
    assert config.limits.idle_timeout == 30.0


def test_non_numeric_environment_value_is_an_error_naming_the_key_and_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"server\.port.*CHAT_SERVER_PORT"):
        load_config(environ={"CHAT_SERVER_PORT": "seven"})


def test_wrong_type_in_flags_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"server\.port"):
        load_config(environ={}, overrides={"server": {"port": "x"}})


def test_invalid_toml_is_an_error_naming_the_file(chat_config_file: Any) -> None:
    path = chat_config_file("[server\nport = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path, environ={})


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml", environ={})


@pytest.mark.parametrize(
    ("section", "values", "named"),
    [
        ("server", {"port": 70000}, "port"),
        ("server", {"udp_port": -1}, "udp_port"),
        ("limits", {"burst": 0}, "burst"),
        ("limits", {"max_header_bytes": 63}, "max_header_bytes"),
        ("limits", {"idle_timeout": 0.0}, "idle_timeout"),
        ("history", {"synchronous": "off"}, "synchronous"),
    ],
)
def test_values_no_server_can_run_with_are_refused(section: str, values: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_config(environ={}, overrides={section: values})


# --- paths ------------------------------------------------------------------------------------------------------


def test_relative_paths_in_a_file_are_resolved_against_its_folder(chat_config_file: Any, tmp_path: Path) -> None:
    path = chat_config_file('[history]\ndatabase = "db/chat.db"\n\n[files]\ndirectory = "up"\n', "etc/chat.toml")
    config = load_config(path, environ={})
    assert config.history.database == str((tmp_path / "etc").resolve() / "db/chat.db")
    assert config.files.directory == str((tmp_path / "etc").resolve() / "up")


@pytest.mark.parametrize("database", [":memory:", "/var/lib/chat/chat.db"])
def test_absolute_and_in_memory_database_paths_are_kept(chat_config_file: Any, database: str) -> None:
    path = chat_config_file(f'[history]\ndatabase = "{database}"\n')
    assert load_config(path, environ={}).history.database == database


def test_relative_path_from_the_environment_is_left_to_the_working_folder(chat_config_file: Any) -> None:
    path = chat_config_file('[history]\ndatabase = "in-file.db"\n')
    assert load_config(path, environ={"CHAT_HISTORY_DATABASE": "env.db"}).history.database == "env.db"


def test_read_file_returns_the_tables_with_paths_resolved(chat_config_file: Any, tmp_path: Path) -> None:
    path = chat_config_file('[history]\ndatabase = "x.db"\nreplay = 10\n')
    assert read_file(path) == {"history": {"database": str(tmp_path.resolve() / "x.db"), "replay": 10}}


# --- config_with ------------------------------------------------------------------------------------------------


def test_config_with_replaces_only_the_named_keys() -> None:
    base = Config()
    changed = config_with(base, limits={"burst": 5}, server={"port": 0})
    assert changed.limits.burst == 5
    assert changed.server.port == 0
    assert changed.limits.max_text_chars == base.limits.max_text_chars
    assert base.limits.burst == 100  # the original is left alone


def test_config_with_refuses_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ConfigError, match="bogus"):
        config_with(Config(), limits={"bogus": 1})
    with pytest.raises(ConfigError, match="burst"):
        config_with(Config(), limits={"burst": 0})


# --- the repository's config.toml -------------------------------------------------------------------------------


@pytest.mark.xfail(not REPO_CONFIG.exists(), reason="config.toml not written yet", strict=False)
def test_repository_config_toml_spells_out_the_built_in_defaults() -> None:
    from_file = _keys(load_config(REPO_CONFIG, environ={}))
    defaults = _keys(Config())
    assert from_file.keys() == defaults.keys()
    differences = {
        key: (from_file[key], defaults[key])
        for key in defaults
        if key not in PATH_KEYS and from_file[key] != defaults[key]
    }
    assert differences == {}
