"""`chat-client` settings (chat/tui/app.py): the `[client]` section, flags, and the nick from the login name."""

from __future__ import annotations

from pathlib import Path

import pytest

from chat.config import ConfigError
from chat.tui.app import _arguments, client_settings, login_nick, main


def settings_for(argv: list[str], environ: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return client_settings(_arguments().parse_args(argv), environ or {})


def test_without_a_config_file_it_runs_on_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = settings_for(["--nick", "alice"])
    assert (settings.host, settings.port, settings.nick, settings.secret) == ("127.0.0.1", 7777, "alice", "")


def test_config_file_then_environment_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.toml").write_text('[client]\nhost = "10.0.0.5"\nport = 7000\nnick = "carol"\n')
    assert settings_for([]).host == "10.0.0.5"
    assert settings_for([], {"CHAT_CLIENT_PORT": "7100"}).port == 7100
    settings = settings_for(["--port", "7200", "--nick", "dave"], {"CHAT_CLIENT_PORT": "7100"})
    assert (settings.port, settings.nick) == (7200, "dave")


def test_a_config_path_that_does_not_exist_is_an_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere" / "chat.toml"
    assert main(["--config", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_a_bad_nick_is_refused_before_anything_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="nick 'a b'"):
        settings_for(["--nick", "a b"])


def test_without_a_nick_the_login_name_is_made_into_one() -> None:
    assert login_nick("alice") == "alice"
    assert login_nick("John Smith") == "JohnSmith"
    assert login_nick("x@example.org") == "xexample.org"
    assert login_nick("\u0301ana") == "ana"
    assert login_nick("a" * 40) == "a" * 32
    assert login_nick("+++") == "guest"


def test_highlight_words_come_from_the_client_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.toml").write_text('[client]\nnick = "carol"\nhighlight = "deploy, outage  db"\n')
    assert settings_for([]).highlight == ("deploy", "outage", "db")
    assert settings_for([], {"CHAT_CLIENT_HIGHLIGHT": "oncall"}).highlight == ("oncall",)


def test_conversation_logs_are_off_unless_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert settings_for(["--nick", "carol"]).logs is False
    assert settings_for(["--nick", "carol"], {"CHAT_CLIENT_LOGS": "true"}).logs is True


def test_tls_uses_the_tls_port_and_a_cafile_or_fingerprint_implies_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    plain = settings_for(["--nick", "alice"])
    assert (plain.tls, plain.port) == (False, 7777)
    over_tls = settings_for(["--nick", "alice", "--tls"])
    assert (over_tls.tls, over_tls.port) == (True, 7778)
    assert settings_for(["--nick", "alice", "--tls", "--port", "9001"]).port == 9001
    pinned = settings_for(["--nick", "alice", "--fingerprint", "sha256:" + "ab" * 32])
    assert (pinned.tls, pinned.port, pinned.fingerprint) == (True, 7778, "sha256:" + "ab" * 32)
    assert settings_for(["--nick", "alice"], {"CHAT_CLIENT_CAFILE": "ca.pem"}).tls
    assert settings_for(["--nick", "alice"], {"CHAT_CLIENT_TLS": "true", "CHAT_CLIENT_TLS_PORT": "9443"}).port == 9443


def test_a_fingerprint_that_is_not_one_is_refused_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="fingerprint"):
        settings_for(["--nick", "alice", "--fingerprint", "sha256:abcd"])
