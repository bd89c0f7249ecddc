"""Local files for /send and /get (chat/tui/paths.py): what may be sent, where a download goes, path completion."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chat.tui.paths import complete_path, default_download_dir, download_target, part_of, sendable


def test_the_download_folder_is_xdg_download_dir_then_downloads_then_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    assert default_download_dir({}, home) == home
    (home / "Downloads").mkdir()
    assert default_download_dir({}, home) == home / "Downloads"
    assert default_download_dir({"XDG_DOWNLOAD_DIR": "$HOME/Incoming"}, home) == home / "Incoming"
    assert default_download_dir({"XDG_DOWNLOAD_DIR": str(tmp_path / "dl")}, home) == tmp_path / "dl"


def test_only_a_readable_regular_file_can_be_sent(tmp_path: Path) -> None:
    file = tmp_path / "a.txt"
    file.write_bytes(b"12345")
    assert sendable(file) == 5
    assert sendable(tmp_path / "missing") == "no such file"
    assert sendable(tmp_path) == "it is a folder"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert sendable(fifo) == "not a regular file", "never opened: that would block"


def test_a_path_the_system_refuses_is_refused_with_its_reason(tmp_path: Path) -> None:
    file = tmp_path / "plain"
    file.write_bytes(b"x")
    # through a regular file as if it were a folder: refused for every user, root included (unlike chmod 0)
    assert sendable(file / "inside") == "not a directory"


def test_a_download_gets_a_safe_unused_name_in_a_folder(tmp_path: Path) -> None:
    assert download_target(tmp_path, "../../etc/passwd", 10).path == tmp_path / "passwd"
    assert download_target(tmp_path, "CON", 10).path == tmp_path / "_CON"
    (tmp_path / "a.txt").write_bytes(b"")
    assert download_target(tmp_path, "a.txt", 10).path == tmp_path / "a (1).txt"
    busy = {tmp_path / "a (1).txt"}
    assert download_target(tmp_path, "a.txt", 10, busy=busy).path == tmp_path / "a (2).txt", "another /get has it"
    assert download_target(tmp_path / "given.bin", "a.txt", 10).path == tmp_path / "given.bin"


def test_a_part_file_is_resumed_unless_it_is_larger_than_the_file(tmp_path: Path) -> None:
    part_of(tmp_path / "video.mp4").write_bytes(b"x" * 100)
    assert download_target(tmp_path, "video.mp4", 1000) == download_target(tmp_path, "video.mp4", 100)
    assert download_target(tmp_path, "video.mp4", 1000).resume_from == 100
    bigger = download_target(tmp_path, "video.mp4", 50)
    assert (bigger.path, bigger.resume_from) == (tmp_path / "video (1).mp4", 0), "not a part of this file"


def test_the_part_this_run_left_for_the_same_file_is_taken_first(tmp_path: Path) -> None:
    left = tmp_path / "video (3).mp4"
    part_of(left).write_bytes(b"x" * 10)
    target = download_target(tmp_path, "video.mp4", 1000, left_behind=left)
    assert (target.path, target.resume_from) == (left, 10)
    elsewhere = download_target(tmp_path / "other", "video.mp4", 1000, left_behind=left)
    assert elsewhere.path == tmp_path / "other", "another destination: not a folder, taken as the file's path"


def test_paths_complete_folders_first_hidden_only_when_asked_and_keep_the_tilde(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for folder in ("docs", "downloads", ".config"):
        (tmp_path / folder).mkdir()
    for file in ("diary.txt", ".hidden", "notes.md"):
        (tmp_path / file).write_bytes(b"abc")
    assert [c.path for c in complete_path("~/d")] == ["~/docs/", "~/downloads/", "~/diary.txt"]
    assert [c.path for c in complete_path("~/.")] == ["~/.config/", "~/.hidden"]
    assert [(c.name, c.folder, c.size) for c in complete_path(f"{tmp_path}/no")] == [("notes.md", False, 3)]
    assert [c.path for c in complete_path("~")] == ["~/"]
    assert complete_path("~/nowhere/x") == []
    monkeypatch.chdir(tmp_path)
    assert [c.path for c in complete_path("do")] == ["docs/", "downloads/"]
