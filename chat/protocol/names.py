"""Rules for nicks, room names and message text (docs/protocol.md 2.2, 3 and 8, "Characters" and "Spelling").

A name is 1 to 32 code points after NFC, made of letters (L*), marks (M*, never first) and decimal digits (Nd) of
any script plus `_`, `-` and `.`; everything else (spaces, zero-width and bidi format characters, symbols, `²`)
is refused. Two names are the same when their `fold()` forms are equal. A text is 1 to `max_chars` code points after
NFC with no control character (category Cc: C0, DEL, C1) other than newline and tab, so no message can carry a
terminal escape sequence.

Names people can trust (docs/protocol.md 8, "Lookalikes"; docs/security.md, Names), all from Unicode TS #39 as ICU's
spoof checker implements it (the `icu` module of PyICU), never from a list of our own:
- a name has no character TS #39 restricts for its form (Identifier_Type Default_Ignorable, such as U+034F, U+FE0F,
  U+180B, the U+3164 Hangul filler; Not_NFKC, such as fullwidth letters; Technical, such as small capitals; Not_XID,
  Obsolete, Deprecated). Letters restricted only because their script is rare (Limited_Use, Uncommon_Use,
  Exclusion) stay allowed, so a Cherokee or N'Ko nick keeps working;
- a name is "moderately restrictive" (TS #39 5.2): one script plus Common and Inherited characters, or Latin with
  Han and Hiragana/Katakana, Bopomofo or Hangul, or Latin and one other recommended script but Cyrillic or Greek;
  no repeated combining mark, no digits of two numbering systems (TS #39 5.3 and 5.4);
- `confusable_keys()` gives the TS #39 skeletons of a name (of its fold, and of its fold in capitals): two names
  sharing one are confusable, and the server keeps at most one of them per table (chat/engine/local.py).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import icu

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
    if name.isascii():  # letters, digits and _-. of ASCII: Latin and Common, none restricted (tests/test_names.py)
        return None
    return _restricted_problem(name) or _spoof_problem(name)


def name_char_allowed(char: str, position: int) -> bool:
    """May `char` stand at `position` of a name: a letter, a decimal digit, `_-.`, or a mark not in first place."""
    if char in _NAME_PUNCTUATION:
        return True
    category = unicodedata.category(char)
    return category[0] == "L" or category == "Nd" or (category[0] == "M" and position > 0)


# TS #39 3.1 (Identifier_Type): the reasons a character is restricted that concern its form, not its script's use.
_REFUSED_ID_TYPES = {
    icu.UIdentifierType.DEFAULT_IGNORABLE: "invisible (Default_Ignorable)",
    icu.UIdentifierType.NOT_NFKC: "a compatibility variant (Not_NFKC)",
    icu.UIdentifierType.TECHNICAL: "a technical character (Technical)",
    icu.UIdentifierType.NOT_XID: "not an identifier character (Not_XID)",
    icu.UIdentifierType.OBSOLETE: "obsolete (Obsolete)",
    icu.UIdentifierType.DEPRECATED: "deprecated (Deprecated)",
    icu.UIdentifierType.NOT_CHARACTER: "not a character (Not_Character)",
}
_SPOOF_CHECKS = icu.USpoofChecks.RESTRICTION_LEVEL | icu.USpoofChecks.INVISIBLE | icu.USpoofChecks.MIXED_NUMBERS
_NEUTRAL_SCRIPTS = frozenset({icu.UScriptCode.COMMON, icu.UScriptCode.INHERITED, icu.UScriptCode.UNKNOWN})


def _spoof_checker() -> icu.SpoofChecker:
    checker = icu.SpoofChecker()
    checker.setChecks(_SPOOF_CHECKS)
    checker.setRestrictionLevel(icu.URestrictionLevel.MODERATELY_RESTRICTIVE)
    return checker


_CHECKER = _spoof_checker()


def _described(char: str) -> str:
    return f"{char!r} (U+{ord(char):04X} {unicodedata.name(char, 'unnamed')})"


def _restricted_problem(name: str) -> str | None:
    """The first character TS #39 restricts for its form, or None."""
    for position, char in enumerate(name):
        if icu.Char.hasBinaryProperty(ord(char), icu.UProperty.DEFAULT_IGNORABLE_CODE_POINT):
            return f"character {_described(char)} at position {position} is invisible (Default_Ignorable_Code_Point)"
        for id_type in icu.Char.getIDTypes(ord(char)):
            reason = _REFUSED_ID_TYPES.get(id_type)
            if reason is not None:
                return f"character {_described(char)} at position {position} is {reason}"
    return None


def _spoof_problem(name: str) -> str | None:
    """Why ICU's spoof checker refuses `name` (mixed scripts, repeated marks, mixed digits), or None."""
    result = int(_CHECKER.check(name))
    if result & icu.USpoofChecks.RESTRICTION_LEVEL:
        return f"mixes the scripts {', '.join(sorted(scripts_of(name)))}"
    if result & icu.USpoofChecks.INVISIBLE:
        return "repeats a combining mark, which is invisible"
    if result & icu.USpoofChecks.MIXED_NUMBERS:
        return "mixes digits of different numbering systems"
    return None


@lru_cache(maxsize=4096)
def scripts_of(name: str) -> frozenset[str]:
    """The scripts of `name`'s characters by their full Unicode names, Common and Inherited left out."""
    scripts = (icu.Script.getScript(ord(char)) for char in name)
    return frozenset(str(script.getName()) for script in scripts if script.getScriptCode() not in _NEUTRAL_SCRIPTS)


_SKELETON_ROUNDS = 4  # fold and skeleton settle in one or two rounds; a bound all the same


def _settled_skeleton(spelling: str) -> str:
    """Skeleton then fold, again until nothing changes: a skeleton may hold capitals (`0` -> `O`) that fold anew."""
    current = spelling
    for _ in range(_SKELETON_ROUNDS):
        following = fold(str(_CHECKER.getSkeleton(0, current)))
        if following == current:
            break
        current = following
    return current


@lru_cache(maxsize=4096)
def skeleton(name: str) -> str:
    """The TS #39 skeleton (NFD, confusables.txt mapping, NFD) of the case-folded name, folded and mapped again
    until it settles: names that look alike in lower case share it, such as `alice` and `\\u0430lice` (with a
    Cyrillic a), or `l0bby` and `lobby` (`0` is drawn like `O`, which folds to `o`)."""
    return _settled_skeleton(fold(name))


@lru_cache(maxsize=4096)
def confusable_keys(name: str) -> frozenset[str]:
    """Every key under which `name` may be confused with another name: its `skeleton`, and that of its fold in upper
    case. Names are case-insensitive, so a holder may respell its nick in capitals at any time: `aiice` may become
    `AIICE`, drawn like `ALICE`. Both keys depend on the fold only, so every spelling of a name has the same ones."""
    folded = fold(name)
    return frozenset({skeleton(folded), _settled_skeleton(nfc(folded.upper()))})  # upper: see str.upper


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
