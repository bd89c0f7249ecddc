"""`chat-server` refusing to start says why in one line naming the file or port at fault, never with a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def start_server(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real chat-server in `folder` (no config.toml there) until it exits by itself."""
    command = [sys.executable, "-m", "chat.cli", "--host", "127.0.0.1", "--port", "0", "--udp-port", "0", *args]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=30)


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *names: str) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    [line] = [line for line in result.stderr.splitlines() if " ERROR " in line]
    for name in names:
        assert name in line, line
    return line


def test_a_corrupt_database_is_named_and_left_untouched(tmp_path: Path) -> None:
    database = tmp_path / "chat.db"
    database.write_bytes(b"this is not an SQLite database, just some text that fills a header" * 4)
    before = database.read_bytes()
    line = assert_one_clear_line(start_server(tmp_path, "--database", str(database)), str(database))
    assert "not an SQLite database" in line
    assert database.read_bytes() == before


def test_a_database_path_under_a_file_names_the_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "notes").write_text("a file, not a folder")
    database = tmp_path / "notes" / "chat.db"
    line = assert_one_clear_line(start_server(tmp_path, "--database", str(database)), str(database))
    assert "not a folder" in line and "cannot listen" not in line


def test_a_database_that_cannot_be_created_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() == 0:
        target = Path("/sys/chat-test.db")  # root writes anywhere but on a filesystem that takes no files
        if not Path("/sys").is_dir():
            pytest.skip("running as root and no /sys to stand for an unwritable folder")
    else:
        folder.chmod(0o500)
        target = folder / "chat.db"
    try:
        line = assert_one_clear_line(start_server(tmp_path, "--database", str(target)), str(target))
    finally:
        folder.chmod(0o700)
    assert "cannot open the history database" in line


def test_a_busy_tcp_port_is_named(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "chat.cli", "--host", "127.0.0.1", "--port", str(port), "--udp-port", "0"]
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert_one_clear_line(result, f"127.0.0.1:{port}")


def test_a_busy_udp_port_is_named(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "chat.cli", "--host", "127.0.0.1", "--port", "0", "--udp-port", str(port)]
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    line = assert_one_clear_line(result, f"udp 127.0.0.1:{port}")
    assert "in use" in line


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in: a read-only one, or for root a path under /proc."""
    if os.geteuid() == 0:
        if not Path("/proc/self").is_dir():
            pytest.skip("running as root and no /proc to stand for an unwritable folder")
        return Path("/proc/self/chat-files")  # root may write anywhere but where the kernel takes no files
    folder = tmp_path / "files"
    folder.mkdir()
    folder.chmod(0o500)
    return folder


def test_an_unwritable_files_folder_is_named(tmp_path: Path) -> None:
    folder = unwritable_folder(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(f'[files]\ndirectory = "{folder}"\n[history]\ndatabase = ":memory:"\n')
    try:
        result = start_server(tmp_path, "--config", str(config))
    finally:
        if folder.is_relative_to(tmp_path):
            folder.chmod(0o700)
    line = assert_one_clear_line(result, str(folder))
    assert "files folder" in line and "cannot listen" not in line
