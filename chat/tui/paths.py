"""Local files for /send and /get: which file may be sent, where a download goes, and completing paths.

A download's local name is made by the library from the peer's display name (`safe_file_name`: one path component,
no separators or device names) and never overwrites an existing file (`unused_path`). The client picks the exact
path itself, with the same rules, for two reasons: so that two downloads of files with the same name running at once
get two names, and so that a `/get` to a folder where an earlier attempt left `<name>.part` goes on from those bytes
(the library resumes a `.part` only when it is given the file's path, not its folder).

Which `.part` is resumed: one this run left for the same fid (a cancelled or failed /get), else one left by an
earlier run that is not larger than the file. A `.part` of another file that happens to have the same name is caught
by the SHA-256 check at the end: the library deletes it, and the next /get starts from scratch.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from chat.client.files import safe_file_name

PART_SUFFIX = ".part"
MAX_PATH_CANDIDATES = 200  # entries a path completion lists, so a huge folder never stalls a Tab


def default_download_dir(environ: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """`$XDG_DOWNLOAD_DIR` if set, else `~/Downloads` if it exists, else the home directory."""
    environ = os.environ if environ is None else environ
    home = Path.home() if home is None else home
    configured = environ.get("XDG_DOWNLOAD_DIR", "").strip()
    if configured:
        return Path(os.path.expandvars(configured.replace("$HOME", str(home)))).expanduser()
    downloads = home / "Downloads"
    return downloads if downloads.is_dir() else home


def expand(text: str) -> Path:
    """A path as the user typed it, `~` and `~user` expanded (left as typed for a user that does not exist)."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        return Path(text)


def sendable(path: Path) -> int | str:
    """The size of the file at `path`, or why it cannot be sent: not there, a folder, a device or a pipe (not a
    regular file), or not readable."""
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            return "it is a folder"
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file"
        with open(path, "rb"):  # a regular file: opening it does not block
            pass
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
    return info.st_size


def part_of(target: Path) -> Path:
    """Where the bytes of a download to `target` go until it is complete."""
    return target.with_name(target.name + PART_SUFFIX)


@dataclass(frozen=True, slots=True)
class DownloadTarget:
    """Where a download goes, and the bytes already in its `.part` file (0: a new download)."""

    path: Path
    resume_from: int


def download_target(
    dest: Path, name: str, size: int, *, busy: Collection[Path] = (), left_behind: Path | None = None
) -> DownloadTarget:
    """The file a download of `name` (`size` bytes) into `dest` (a folder, or a file path) is written to.

    In a folder: `left_behind` (the target this run used for the same fid, whose `.part` is still there) if it is
    in that folder; else the safe name, then `name (1).ext`, `(2)`, ... the first that neither exists nor is `busy`
    (another download running now), resuming its `.part` if one is there and not larger than the file.
    """
    if not dest.is_dir():
        return DownloadTarget(dest, _part_size(dest))
    if left_behind is not None and left_behind.parent == dest and left_behind not in busy:
        held = _part_size(left_behind)
        if held and not left_behind.exists():
            return DownloadTarget(left_behind, held)
    local = Path(safe_file_name(name))
    number = 0
    while True:
        candidate = dest / (local.name if number == 0 else f"{local.stem} ({number}){local.suffix}")
        number += 1
        if candidate in busy or candidate.exists():
            continue
        held = _part_size(candidate)
        if not part_of(candidate).exists() or held <= size:
            return DownloadTarget(candidate, held)


def _part_size(target: Path) -> int:
    try:
        return part_of(target).stat().st_size
    except OSError:
        return 0


@dataclass(frozen=True, slots=True)
class PathCandidate:
    """A completion of a path: the whole path as it should read, and the entry's name (with `/` for a folder)."""

    path: str
    name: str
    folder: bool
    size: int | None = None


def complete_path(typed: str) -> list[PathCandidate]:
    """Entries of the folder `typed` points into whose names start with its last component: folders first, then
    files, each sorted; hidden ones only when that component starts with a dot. The paths keep the user's
    spelling (`~/Doc` completes to `~/Documents/`); a lone `~` or `~user` completes to that home folder."""
    if typed.startswith("~") and "/" not in typed:
        return [PathCandidate(typed + "/", typed + "/", True)] if expand(typed).is_dir() else []
    head, slash, start = typed.rpartition("/")
    folder_text = head + slash
    try:
        with os.scandir(expand(folder_text or ".")) as listing:
            entries = [
                (entry, entry.is_dir())
                for entry in listing
                if entry.name.startswith(start) and (start.startswith(".") or not entry.name.startswith("."))
            ]
    except OSError:
        return []
    entries.sort(key=lambda pair: (not pair[1], pair[0].name))
    candidates: list[PathCandidate] = []
    for entry, is_folder in entries[:MAX_PATH_CANDIDATES]:
        suffix = "/" if is_folder else ""
        try:
            size = None if is_folder else entry.stat().st_size
        except OSError:
            size = None
        candidates.append(PathCandidate(folder_text + entry.name + suffix, entry.name + suffix, is_folder, size))
    return candidates
