"""Rules for nicks, room names and message text (PROTOCOL.md 2.2, 3 and 8, "Characters" and "Spelling").

A name is 1 to 32 code points after NFC, made of letters (L*), marks (M*, never first) and decimal digits (Nd) of
any script plus `_`, `-` and `.`; everything else (spaces, zero-width and bidi format characters, symbols, `²`)
is refused. Two names are the same when their `fold()` forms are equal. A text is 1 to `max_chars` code points after
NFC with no control character (category Cc: C0, DEL, C1) other than newline and tab, so no message can carry a
terminal escape sequence.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from chat.protocol.errors import ErrorCode, ProtocolViolation

MAX_NAME_CHARS = 32
DEFAULT_MAX_TEXT_CHARS = 4000
_NAME_PUNCTUATION = frozenset("_-.")
# Category Cc is exactly C0, DEL and C1; newline and tab are allowed.
_TEXT_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def nfc(text: str) -> str:
    """The NFC form, in which names and texts are kept, shown and measured."""
    return unicodedata.normalize("NFC", text)


@lru_cache(maxsize=4096)
def fold(name: str) -> str:
    """The comparison key of a valid name: NFC, case-folded, NFC again."""
    return nfc(nfc(name).casefold())


def name_problem(name: str) -> str | None:
    """Why `name` (already NFC) is not a valid nick or room name, or None if it is."""
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        return f"must be 1 to {MAX_NAME_CHARS} characters, not {len(name)}"
    for position, char in enumerate(name):
        if not name_char_allowed(char, position):
            category = unicodedata.category(char)
            return f"character {char!r} (U+{ord(char):04X}, {category}) at position {position} is not allowed"
    return None


def name_char_allowed(char: str, position: int) -> bool:
    """May `char` stand at `position` of a name: a letter, a decimal digit, `_-.`, or a mark not in first place."""
    if char in _NAME_PUNCTUATION:
        return True
    category = unicodedata.category(char)
    return category[0] == "L" or category == "Nd" or (category[0] == "M" and position > 0)


@lru_cache(maxsize=4096)  # the same few room names and nicks arrive with every message
def _checked_name(raw: str, code: ErrorCode, what: str) -> str:
    name = nfc(raw)
    problem = name_problem(name)
    if problem is not None:
        raise ProtocolViolation(code, f"{what} {raw!r}: {problem}")
    return name


def checked_nick(raw: str) -> str:
    """The NFC spelling of a nick, or ProtocolViolation(bad_nick)."""
    return _checked_name(raw, ErrorCode.BAD_NICK, "nick")


def checked_room(raw: str) -> str:
    """The NFC spelling of a room name, or ProtocolViolation(bad_room)."""
    return _checked_name(raw, ErrorCode.BAD_ROOM, "room name")


def text_problem(text: str, max_chars: int = DEFAULT_MAX_TEXT_CHARS) -> str | None:
    """Why `text` (already NFC) may not be sent, or None if it may."""
    if not 1 <= len(text) <= max_chars:
        return f"text must be 1 to {max_chars} characters, not {len(text)}"
    control = _TEXT_CONTROL.search(text)
    if control is not None:
        return f"control character U+{ord(control.group()):04X} at position {control.start()} is not allowed"
    return None


def checked_text(raw: str, max_chars: int = DEFAULT_MAX_TEXT_CHARS) -> str:
    """The NFC form of a message text, or ProtocolViolation(bad_text)."""
    text = nfc(raw)
    # A printable text has no Cc character at all: most texts need no regex scan (0.2 us instead of 0.6 per 100)
    if text.isprintable() and 1 <= len(text) <= max_chars:
        return text
    problem = text_problem(text, max_chars)
    if problem is not None:
        raise ProtocolViolation(ErrorCode.BAD_TEXT, problem)
    return text


MAX_FILE_NAME_CHARS = 255


def file_display_name(raw: str) -> str:
    """A file name fit to show: its last path component, NFC, without control, format or unassigned characters, at
    most 255 characters, "file" if nothing is left. A display name only: never use it as a path as it is."""
    name = nfc(raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(char for char in name if unicodedata.category(char) not in ("Cc", "Cf", "Cs", "Co", "Cn"))
    name = name.strip().strip(".").strip()
    return name[:MAX_FILE_NAME_CHARS] or "file"
