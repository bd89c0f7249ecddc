"""The terminal client's state file (chat/tui/state.py): XDG places, one private file per server and nick."""

from __future__ import annotations

import stat
from pathlib import Path

from chat.tui.state import SessionState, StateStore, UnsentSay, state_directory


def test_the_state_lives_under_xdg_state_home_or_the_home_directory() -> None:
    assert state_directory({"XDG_STATE_HOME": "/x/state", "HOME": "/home/u"}) == Path("/x/state/chat")
    assert state_directory({"HOME": "/home/u"}) == Path("/home/u/.local/state/chat")
    # XDG: a relative path is invalid and ignored
    assert state_directory({"XDG_STATE_HOME": "relative", "HOME": "/home/u"}) == Path("/home/u/.local/state/chat")


def test_a_saved_state_comes_back_for_the_same_server_and_nick_only(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "chat")
    state = SessionState(
        session="token",
        private=41,
        rooms={"lobby": 17},
        open_rooms=["lobby", "Dev"],
        private_peers=["bob"],
        unsent=[UnsentSay(room="lobby", text="typed before quitting", cid="c1")],
    )
    store.save("127.0.0.1", 7777, "Alice", state)
    assert store.load("127.0.0.1", 7777, "alice") == state  # nicks fold
    assert store.load("127.0.0.1", 7778, "alice") == SessionState()
    assert store.load("127.0.0.1", 7777, "bob") == SessionState()
    assert state.room_since("LOBBY") == 17


def test_the_file_is_private_and_replaced_whole(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "chat")
    store.save("h", 1, "alice", SessionState(session="one"))
    store.save("h", 1, "alice", SessionState(session="two"))
    path = store.path_for("h", 1, "alice")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    assert store.load("h", 1, "alice").session == "two"


def test_no_name_can_leave_the_state_folder(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "chat")
    for host, nick in (("../../etc", ".."), ("a/b", "x/y"), ("::1", "..")):
        path = store.path_for(host, 1, nick)
        assert path.parent == tmp_path / "chat" / "sessions"


def test_a_damaged_file_is_set_aside_and_the_client_starts_fresh(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "chat")
    path = store.path_for("h", 1, "alice")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert store.load("h", 1, "alice") == SessionState()
    assert path.with_name(path.name + ".bad").exists()
