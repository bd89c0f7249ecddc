"""chat/protocol/names.py: nicks, room names and texts (docs/protocol.md 2.2, 3 and 8, "Characters" and "Spelling")."""

from __future__ import annotations

import unicodedata

import icu
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from chat.protocol.errors import ErrorCode, ProtocolViolation
from chat.protocol.names import (
    DEFAULT_MAX_TEXT_CHARS,
    MAX_NAME_CHARS,
    _restricted_problem,
    _spoof_problem,
    checked_nick,
    checked_room,
    checked_text,
    confusable_keys,
    fold,
    name_char_allowed,
    name_problem,
    nfc,
    scripts_of,
    skeleton,
    text_problem,
)

CONTROL_CHARACTERS = [chr(cp) for cp in range(0x110000) if unicodedata.category(chr(cp)) == "Cc"]
REFUSED_CONTROLS = [char for char in CONTROL_CHARACTERS if char not in "\n\t"]
utf8_chars = st.characters(codec="utf-8")  # every code point but the surrogates


def _bad_nick(raw: str) -> ProtocolViolation:
    with pytest.raises(ProtocolViolation) as caught:
        checked_nick(raw)
    return caught.value


# --- nicks and room names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "nick",
    [
        "alice",
        "Bob_42",
        "a",
        "x" * MAX_NAME_CHARS,
        "_-.",
        "...",
        "-dash",
        "9lives",
        "zoë",
        "Ærøskøbing",
        "Борис",
        "张伟",
        "さくら",
        "김민준",
        "محمد",
        "שלום",
        "देवनागरी",  # Devanagari with vowel signs (Mc) and virama (Mn) after the first letter
        "हिन्दी",
        "ไทย",
        "Ελένη",
        "١٢٣",  # Arabic-Indic digits are Nd
        "x\u0301",  # a combining mark after a letter
    ],
)
def test_letters_digits_and_marks_of_any_script_make_a_valid_nick(nick: str) -> None:
    assert checked_nick(nick) == nfc(nick)
    assert name_problem(nfc(nick)) is None


@pytest.mark.parametrize(
    "nick",
    [
        pytest.param("", id="empty"),
        pytest.param("x" * (MAX_NAME_CHARS + 1), id="33-chars"),
        pytest.param("two words", id="space"),
        pytest.param("\u00a0nbsp", id="no-break-space"),
        pytest.param("\u3000ideographic", id="ideographic-space"),
        pytest.param("a@b", id="at"),
        pytest.param("a!", id="exclamation"),
        pytest.param("a/b", id="slash"),
        pytest.param("a+b", id="math-symbol"),
        pytest.param("a$", id="currency"),
        pytest.param("emoji\U0001f600", id="emoji"),
        pytest.param("x²", id="superscript-two-No"),
        pytest.param("Ⅻ", id="roman-numeral-Nl"),
        pytest.param("½", id="vulgar-fraction-No"),
        pytest.param("a\u200bb", id="zero-width-space"),
        pytest.param("a\u200db", id="zero-width-joiner"),
        pytest.param("a\u200cb", id="zero-width-non-joiner"),
        pytest.param("a\u202eb", id="right-to-left-override"),
        pytest.param("a\u2066b", id="left-to-right-isolate"),
        pytest.param("\ufeffbom", id="byte-order-mark"),
        pytest.param("a\u00adb", id="soft-hyphen"),
        pytest.param("\u0301a", id="mark-first"),
        pytest.param("\u093fक", id="spacing-mark-first"),
        pytest.param("a\x00", id="nul"),
        pytest.param("a\nb", id="newline"),
        pytest.param("a\tb", id="tab"),
        pytest.param("a\x1b[31m", id="escape"),
        pytest.param("a\x7f", id="del"),
        pytest.param("a\x85", id="c1-next-line"),
        pytest.param("a\ue000", id="private-use"),
        pytest.param("a\U000e0041", id="tag-character"),
    ],
)
def test_refused_nick_is_bad_nick(nick: str) -> None:
    assert _bad_nick(nick).code == ErrorCode.BAD_NICK


def test_refused_room_name_is_bad_room() -> None:
    with pytest.raises(ProtocolViolation) as caught:
        checked_room("general chat")
    assert caught.value.code == ErrorCode.BAD_ROOM
    assert checked_room("général") == "général"


def test_problem_names_the_character_and_its_position() -> None:
    problem = name_problem("ab\u200bc")
    assert problem is not None
    assert "U+200B" in problem
    assert "Cf" in problem
    assert "2" in problem


def test_decomposed_nick_is_accepted_and_returned_composed() -> None:
    decomposed = "Jose\u0301"
    assert len(decomposed) == 5
    assert checked_nick(decomposed) == "Jos\u00e9"


def test_nick_length_counts_code_points_after_nfc() -> None:
    # 64 code points as sent, 32 after composition: accepted.
    assert checked_nick("e\u0301" * MAX_NAME_CHARS) == "\u00e9" * MAX_NAME_CHARS
    _bad_nick("e\u0301" * (MAX_NAME_CHARS + 1))


def test_nick_that_grows_past_32_under_nfc_is_refused() -> None:
    # U+0958 DEVANAGARI LETTER QA is a composition exclusion: NFC writes it as KA + NUKTA, two code points.
    assert nfc("\u0958") == "\u0915\u093c"
    assert checked_nick("\u0958" * (MAX_NAME_CHARS // 2)) == "\u0915\u093c" * (MAX_NAME_CHARS // 2)
    _bad_nick("\u0958" * (MAX_NAME_CHARS // 2 + 1))


@settings(deadline=None)  # ICU calls: slow on a busy machine, never wrong
@given(raw=st.text(utf8_chars, max_size=40))
def test_checked_nick_returns_a_valid_nfc_name_or_raises_bad_nick(raw: str) -> None:
    try:
        nick = checked_nick(raw)
    except ProtocolViolation as violation:
        assert violation.code == ErrorCode.BAD_NICK
        assert name_problem(nfc(raw)) is not None
    else:
        assert nick == nfc(raw)
        assert unicodedata.is_normalized("NFC", nick)
        assert name_problem(nick) is None


name_chars = st.characters(categories=("L", "M", "Nd"), codec="utf-8") | st.sampled_from("_-.")


@settings(deadline=None)  # ICU calls: slow on a busy machine, never wrong
@given(raw=st.text(name_chars, min_size=1, max_size=MAX_NAME_CHARS))
def test_a_name_with_a_mark_first_is_refused_and_an_accepted_one_has_only_allowed_categories(raw: str) -> None:
    # The categories are necessary, not sufficient: TS #39's rules (below) refuse more.
    name = nfc(raw)
    if unicodedata.category(name[0]).startswith("M"):
        assert name_problem(name) is not None
    if name_problem(name) is None:
        assert all(name_char_allowed(char, position) for position, char in enumerate(name))


# One recommended script each: TS #39 lets any name of one of them through.
_COMMON = "0123456789_-."
SINGLE_SCRIPT_ALPHABETS = {
    "Latin": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\u00df\u00f8\u00e6\u00e9\u00fc" + _COMMON,
    "Cyrillic": "".join(map(chr, range(0x0410, 0x0450))) + _COMMON,  # capital A to small ya
    "Greek": "".join(map(chr, [*range(0x0391, 0x03A2), *range(0x03A3, 0x03AA), *range(0x03B1, 0x03CA)])) + _COMMON,
    "Han": "张伟王李赵刘陈杨黄周吴徐孙马朱胡郭何高林罗",
    "Hiragana": "".join(map(chr, range(0x3041, 0x3097))),
}


@settings(deadline=None)  # ICU calls: slow on a busy machine, never wrong
@given(data=st.data(), script=st.sampled_from(sorted(SINGLE_SCRIPT_ALPHABETS)))
def test_names_of_one_recommended_script_pass(data: st.DataObject, script: str) -> None:
    name = data.draw(st.text(st.sampled_from(SINGLE_SCRIPT_ALPHABETS[script]), min_size=1, max_size=MAX_NAME_CHARS))
    assert name_problem(nfc(name)) is None


# --- lookalikes: TS #39 (docs/protocol.md 8, Lookalikes) ------------------------------------------------------------

# Every Default_Ignorable_Code_Point, as ICU knows them (not a list of ours).
DEFAULT_IGNORABLES = list(icu.UnicodeSet("[:Default_Ignorable_Code_Point:]"))
# Cyrillic letters drawn like Latin ones, to build attacks with: test data, not a rule of the server.
CYRILLIC_FOR_LATIN = {"a": "\u0430", "c": "\u0441", "e": "\u0435", "o": "\u043e", "p": "\u0440", "x": "\u0445"}
latin_names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789_"), min_size=1, max_size=MAX_NAME_CHARS)
valid_names = st.one_of(
    *(
        st.text(st.sampled_from(alphabet), min_size=1, max_size=MAX_NAME_CHARS)
        for alphabet in SINGLE_SCRIPT_ALPHABETS.values()
    )
)


@pytest.mark.parametrize(
    "nick",
    [
        pytest.param("a\u034flice", id="combining-grapheme-joiner"),
        pytest.param("alice\ufe0f", id="variation-selector-16"),
        pytest.param("alice\u180b", id="mongolian-free-variation-selector"),
        pytest.param("\u3164", id="hangul-filler"),
        pytest.param("\u115f\u1160", id="hangul-choseong-and-jungseong-fillers"),
        pytest.param("a\uffa0", id="halfwidth-hangul-filler"),
        pytest.param("\u3164alice", id="leading-hangul-filler"),
    ],
)
def test_an_invisible_character_is_refused_and_named(nick: str) -> None:
    violation = _bad_nick(nick)
    assert violation.code == ErrorCode.BAD_NICK
    invisible = next(char for char in nick if char in DEFAULT_IGNORABLES)
    assert f"U+{ord(invisible):04X}" in violation.message and "invisible" in violation.message


@pytest.mark.parametrize(
    ("nick", "reason"),
    [
        pytest.param("\uff41\uff4c\uff49\uff43\uff45", "Not_NFKC", id="fullwidth"),
        pytest.param("\u1d00\u029f\u026a\u1d04\u1d07", "Technical", id="small-capitals"),
        pytest.param("\u00b5", "Not_NFKC", id="micro-sign"),
        pytest.param("\ufb01le", "Not_NFKC", id="fi-ligature"),
        pytest.param("\u0430lice", "Cyrillic, Latin", id="latin-with-a-cyrillic-a"),
        pytest.param("l\u03bfbby", "Greek, Latin", id="latin-with-a-greek-omicron"),
        pytest.param("\u0430\u03b1", "Cyrillic, Greek", id="cyrillic-with-greek"),
        pytest.param("x\u0301\u0301", "combining mark", id="a-repeated-combining-mark"),
        pytest.param("1\u0661", "numbering systems", id="latin-and-arabic-indic-digits"),
    ],
)
def test_a_restricted_or_mixed_name_is_refused_with_its_reason(nick: str, reason: str) -> None:
    assert reason in _bad_nick(nick).message


@pytest.mark.parametrize(
    "nick",
    [
        pytest.param("Zo\u00eb_\u540d\u524d-\u3055.9", id="latin-han-hiragana"),
        pytest.param("abc\u4e2d\u6587\u3105", id="latin-han-bopomofo"),
        pytest.param("kim\uae40\u91d1", id="latin-hangul-han"),
        pytest.param("raj\u0930\u093e\u091c", id="latin-and-devanagari"),
        pytest.param("\u13a0\u13f8", id="cherokee-alone"),  # a Limited_Use script, not refused for that
    ],
)
def test_the_mixes_moderately_restrictive_allows_pass(nick: str) -> None:
    assert name_problem(nfc(nick)) is None


def test_the_ascii_shortcut_skips_nothing_the_ts39_rules_would_refuse() -> None:
    # name_problem lets an ASCII name through after the category check alone: every ASCII name character must
    # pass the TS #39 rules, alone and in any mix (one script, Latin, plus Common).
    allowed = [chr(cp) for cp in range(128) if name_char_allowed(chr(cp), 1)]
    assert len(allowed) == 26 * 2 + 10 + 3
    assert all(_restricted_problem(char) is None and _spoof_problem(char) is None for char in allowed)
    assert _spoof_problem("".join(allowed)) is None


def test_the_skeleton_is_that_of_ts39_over_the_fold() -> None:
    assert skeleton("alice") == skeleton("ALICE") == skeleton("\u0430lice") == "alice"
    assert skeleton("l\u043ebby") == skeleton("lobby")
    assert skeleton("rn") == skeleton("m")
    assert skeleton("\uff41\uff4c\uff49\uff43\uff45") == "alice"


def test_the_confusable_keys_catch_lookalikes_in_capitals_too() -> None:
    # `aiice` and `alice` fold apart and look apart, but their holders may respell them `AIICE` and `ALICE`.
    assert confusable_keys("AIice") & confusable_keys("alice")
    assert confusable_keys("aiice") == confusable_keys("AIICE") == confusable_keys("AiIcE"), "only the fold counts"
    assert confusable_keys("l0bby") & confusable_keys("LOBBY")
    assert not confusable_keys("alice") & confusable_keys("bob")
    assert not confusable_keys("alice") & confusable_keys("alice_")


def test_scripts_of_leaves_common_and_inherited_out() -> None:
    assert scripts_of("Zo\u00eb_9") == {"Latin"}
    assert scripts_of("_-.9") == frozenset()
    assert scripts_of("\u0430lice") == {"Latin", "Cyrillic"}


@settings(deadline=None)
@given(name=valid_names)
def test_skeleton_is_idempotent_and_stable_under_case_and_normal_form(name: str) -> None:
    assert skeleton(skeleton(name)) == skeleton(name)
    assert skeleton(unicodedata.normalize("NFD", name)) == skeleton(name)
    assert skeleton(fold(name)) == skeleton(name)
    assert confusable_keys(name.upper()) == confusable_keys(name) or fold(name.upper()) != fold(name)
    assert skeleton(name) in confusable_keys(name)


@settings(deadline=None)
@given(name=valid_names, data=st.data())
def test_an_invisible_character_anywhere_is_always_refused(name: str, data: st.DataObject) -> None:
    assume(len(name) < MAX_NAME_CHARS)
    invisible = data.draw(st.sampled_from(DEFAULT_IGNORABLES))
    position = data.draw(st.integers(min_value=0, max_value=len(name)))
    problem = name_problem(nfc(name[:position] + invisible + name[position:]))
    assert problem is not None
    assert f"U+{ord(invisible):04X}" in problem


@settings(deadline=None)
@given(name=latin_names, data=st.data())
def test_a_latin_name_with_one_cyrillic_lookalike_is_refused_or_collides(name: str, data: st.DataObject) -> None:
    swappable = [index for index, char in enumerate(name) if char in CYRILLIC_FOR_LATIN]
    assume(swappable)
    index = data.draw(st.sampled_from(swappable))
    impostor = name[:index] + CYRILLIC_FOR_LATIN[name[index]] + name[index + 1 :]
    assert fold(impostor) != fold(name)
    assert name_problem(impostor) is not None or confusable_keys(impostor) & confusable_keys(name)


# --- spelling: fold ---------------------------------------------------------------------------------------------


def test_fold_is_nfc_then_casefold_then_nfc() -> None:
    for name in ["Straße", "ǰ", "J\u030c", "İstanbul", "ΣΑΣ", "Å", "A\u030a"]:
        assert fold(name) == unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold()), name


def test_names_differing_only_in_case_are_the_same() -> None:
    assert fold("Alice") == fold("ALICE") == fold("alice")
    assert fold("Борис") == fold("БОРИС")
    assert fold("Ελένη") == fold("ΕΛΈΝΗ")


def test_sharp_s_folds_to_ss() -> None:
    # casefold, unlike lower, maps ß to "ss": "Straße" and "STRASSE" are one name.
    assert fold("Straße") == fold("STRASSE") == fold("strasse") == "strasse"


def test_composed_and_decomposed_spellings_are_the_same() -> None:
    assert fold("Zoë") == fold("Zoe\u0308") == fold("ZOË")
    assert fold("Ångström") == fold("A\u030angstro\u0308m")


def test_final_nfc_recomposes_what_casefold_decomposed() -> None:
    # "ǰ" (U+01F0) casefolds to "j" + COMBINING CARON; without the second NFC it would not match itself in NFC.
    assert "\u01f0".casefold() == "j\u030c"
    assert fold("\u01f0") == "\u01f0"
    assert fold("J\u030c") == fold("\u01f0")


def test_distinct_names_stay_distinct() -> None:
    assert fold("alice") != fold("alice_")
    assert fold("ana") != fold("aña")


@given(name=st.text(utf8_chars, max_size=20))
def test_fold_is_idempotent(name: str) -> None:
    assert fold(fold(name)) == fold(name)


@given(name=st.text(utf8_chars, max_size=20))
def test_fold_is_in_nfc_and_the_same_for_every_normal_form(name: str) -> None:
    folded = fold(name)
    assert unicodedata.is_normalized("NFC", folded)
    assert fold(unicodedata.normalize("NFD", name)) == folded
    assert fold(unicodedata.normalize("NFC", name)) == folded


@given(name=st.text(st.characters(codec="ascii", categories=("L", "Nd")), min_size=1, max_size=MAX_NAME_CHARS))
def test_ascii_names_fold_to_their_lower_case(name: str) -> None:
    assert fold(name.upper()) == fold(name) == name.lower()


# --- text -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["x", "hello, world!", "line one\nline two", "col\tcol", "😀 emoji and symbols ² ½ ©", "a\u200db", "\u202eok"],
)
def test_printable_text_newlines_and_tabs_are_accepted(text: str) -> None:
    assert checked_text(text) == nfc(text)
    assert text_problem(nfc(text)) is None


def test_empty_text_is_bad_text() -> None:
    with pytest.raises(ProtocolViolation) as caught:
        checked_text("")
    assert caught.value.code == ErrorCode.BAD_TEXT


def test_default_text_limit_is_4000_characters() -> None:
    assert DEFAULT_MAX_TEXT_CHARS == 4000
    assert checked_text("x" * 4000) == "x" * 4000
    with pytest.raises(ProtocolViolation) as caught:
        checked_text("x" * 4001)
    assert caught.value.code == ErrorCode.BAD_TEXT


def test_text_limit_is_configurable() -> None:
    assert checked_text("abc", max_chars=3) == "abc"
    with pytest.raises(ProtocolViolation):
        checked_text("abcd", max_chars=3)


def test_text_length_counts_code_points_after_nfc() -> None:
    assert checked_text("e\u0301" * 4000) == "\u00e9" * 4000
    assert checked_text("\U0001f600" * 4000) == "\U0001f600" * 4000  # code points, not UTF-16 units or bytes


def test_text_is_returned_in_nfc() -> None:
    assert checked_text("cafe\u0301") == "caf\u00e9"


def test_escape_is_refused_so_no_terminal_sequence_gets_through() -> None:
    with pytest.raises(ProtocolViolation) as caught:
        checked_text("red \x1b[31malert\x1b[0m")
    assert caught.value.code == ErrorCode.BAD_TEXT
    assert "U+001B" in caught.value.message


def test_every_control_character_but_newline_and_tab_is_refused() -> None:
    assert len(CONTROL_CHARACTERS) == 65  # C0 (32), DEL, C1 (32)
    for char in REFUSED_CONTROLS:
        assert text_problem(f"a{char}b") is not None, f"U+{ord(char):04X}"
    assert text_problem("a\nb\tc") is None


@given(
    before=st.text(utf8_chars, max_size=20),
    control=st.sampled_from(REFUSED_CONTROLS),
    after=st.text(utf8_chars, max_size=20),
)
def test_control_character_anywhere_is_bad_text(before: str, control: str, after: str) -> None:
    with pytest.raises(ProtocolViolation) as caught:
        checked_text(before + control + after)
    assert caught.value.code == ErrorCode.BAD_TEXT


@given(text=st.text(st.characters(exclude_categories=("Cc", "Cs")) | st.sampled_from("\n\t"), min_size=1))
def test_text_without_forbidden_controls_is_accepted_in_nfc(text: str) -> None:
    if len(nfc(text)) <= DEFAULT_MAX_TEXT_CHARS:
        assert checked_text(text) == nfc(text)


@given(st.text(max_size=60), st.integers(min_value=1, max_value=80))
def test_checked_text_accepts_exactly_what_text_problem_allows(raw: str, max_chars: int) -> None:
    """The printable fast path of checked_text may not accept anything the full check refuses, nor the reverse."""
    problem = text_problem(nfc(raw), max_chars)
    if problem is None:
        assert checked_text(raw, max_chars) == nfc(raw)
    else:
        with pytest.raises(ProtocolViolation) as caught:
            checked_text(raw, max_chars)
        assert caught.value.code is ErrorCode.BAD_TEXT
