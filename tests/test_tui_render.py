"""Safe and aligned text for the terminal (chat/tui/render.py): what a peer sends can only ever show as text."""

from __future__ import annotations

import time

import wcwidth
from hypothesis import given
from hypothesis import strategies as st
from prompt_toolkit.layout import Window
from prompt_toolkit.layout.mouse_handlers import MouseHandlers
from prompt_toolkit.layout.screen import Screen, WritePosition

from chat.protocol.messages import FileInfo
from chat.tui.layout import ClusterTextControl, conversation_list
from chat.tui.model import ChatModel, Delivery, Line, LineKind
from chat.tui.render import (
    FOREIGN_MARK,
    FOREIGN_STYLE,
    NICK_WIDTH,
    PREFIX_WIDTH,
    TIME_WIDTH,
    cell_width,
    fit,
    nick_class,
    render_line,
    row_width,
    safe_fragments,
    usual_scripts,
    visible,
    wrap,
)

TS = 1_764_607_200.0
CHINESE = "你好，世界！这是一条很长的消息，需要换行显示。"  # noqa: RUF001 (Chinese punctuation is full width)


def text_of(row: list[tuple[str, str]] | object) -> str:
    return "".join(fragment[1] for fragment in row)  # type: ignore[attr-defined]


def test_terminal_escapes_are_shown_not_obeyed() -> None:
    assert visible("\x1b[2J\x1b]0;pwned\x07") == "^[[2J^[]0;pwned^G"
    assert visible("\x1b]52;c;aGk=\x07") == "^[]52;c;aGk=^G"  # OSC 52: the clipboard
    assert visible("a\rb\x7f") == "a^Mb^?"
    assert visible("\x9b31m") == "\\x9b31m"  # C1 CSI


def test_bidi_overrides_isolates_and_invisible_characters_are_made_visible() -> None:
    assert visible("abc\u202edcba") == "abc<U+202E>dcba"
    assert visible("\u2066x\u2069") == "<U+2066>x<U+2069>"
    assert visible("a\u200bb\ufeff") == "a<U+200B>b<U+FEFF>"
    assert visible("line\u2028sep") == "line<U+2028>sep"
    assert visible("\u200f\u061c") == "<U+200F><U+061C>"


def test_ordinary_text_of_any_script_passes_unchanged() -> None:
    for text in ("héllo", CHINESE, "👩\u200d💻 ok", "مرحبا", "e\u0301"):
        assert visible(text) == text


def test_newlines_are_kept_only_in_message_bodies_and_tabs_become_spaces() -> None:
    assert visible("a\nb") == "a^Jb"
    assert visible("a\nb", newlines=True) == "a\nb"
    assert visible("a\tb") == "a    b"


def test_stand_ins_are_styled_so_they_stand_out() -> None:
    assert safe_fragments("x\x1by", "class:body") == [
        ("class:body", "x"),
        ("class:body class:control", "^["),
        ("class:body", "y"),
    ]


def test_widths_count_cells() -> None:
    assert cell_width("abc") == 3
    assert cell_width("你好") == 4
    assert cell_width("😀") == 2
    assert cell_width("e\u0301") == 1


def test_fit_pads_and_cuts_by_cells() -> None:
    assert fit("bob", 6, right=True) == "   bob"
    assert fit("张伟", 6, right=True) == "  张伟"
    assert fit("abcdefgh", 5) == "abcd+"
    assert fit("张伟张伟", 5) == "张伟+"
    assert cell_width(fit("张伟张伟张", 6)) == 6


def test_wrap_breaks_at_spaces_and_inside_words_too_long_for_a_row() -> None:
    assert [text_of(row) for row in wrap([("", "the quick brown fox")], 10)] == ["the quick", "brown fox"]
    assert [text_of(row) for row in wrap([("", "abcdefghijkl")], 5)] == ["abcde", "fghij", "kl"]
    assert [text_of(row) for row in wrap([("", "one\ntwo")], 10)] == ["one", "two"]


def test_a_wide_character_never_straddles_a_row_end() -> None:
    rows = [text_of(row) for row in wrap([("", "ab你好世界")], 5)]
    assert rows == ["ab你", "好世", "界"]


def test_combining_marks_stay_with_their_letter() -> None:
    rows = [text_of(row) for row in wrap([("", "abcde\u0301f")], 5)]
    assert rows == ["abcde\u0301", "f"]


@given(st.text(alphabet=st.sampled_from("ab 你好😀\u0301\n-"), max_size=80), st.integers(min_value=2, max_value=30))
def test_no_wrapped_row_is_wider_than_its_width(text: str, width: int) -> None:
    for row in wrap([("", text)], width):
        assert row_width(row) <= width


def line(text: str, sender: str = "bob", **fields: object) -> Line:
    return Line(fields.pop("kind", LineKind.MESSAGE), text, TS, sender=sender, **fields)  # type: ignore[arg-type]


def separator_column(row_text: str) -> int:
    """The cell column of the `│` separator in a rendered row."""
    return cell_width(row_text[: row_text.index("│")])


def test_the_text_column_lines_up_for_wide_nicks_and_wide_text() -> None:
    rows = [
        *render_line(line("plain text", sender="bob"), 40, "alice", local=time.gmtime),
        *render_line(line(CHINESE, sender="张伟"), 40, "alice", local=time.gmtime),
        *render_line(line("emoji 😀😀😀😀😀😀😀😀😀😀😀😀", sender="zoë"), 40, "alice", local=time.gmtime),
    ]
    assert len(rows) > 3
    for row in rows:
        assert separator_column(text_of(row)) == TIME_WIDTH + 1 + NICK_WIDTH + 1
        assert row_width(row) <= 40


def test_a_rendered_line_has_time_nick_and_text() -> None:
    [row] = render_line(line("hello", sender="bob"), 60, "alice", local=time.gmtime)
    assert text_of(row) == "16:40" + " " + " " * 7 + "bob" + " │ " + "hello"
    assert len(text_of(row)) == PREFIX_WIDTH + 5


def test_own_messages_show_their_delivery_state() -> None:
    pending = line("hi", sender="alice", own=True, delivery=Delivery.PENDING)
    acked = line("hi", sender="alice", own=True, delivery=Delivery.ACKED)
    failed = line("hi", sender="alice", own=True, delivery=Delivery.FAILED, reason="no_such_nick")
    assert text_of(render_line(pending, 60, "alice")[0]).endswith("hi (sending)")
    assert text_of(render_line(acked, 60, "alice")[0]).endswith("hi ✓")
    assert text_of(render_line(failed, 60, "alice")[0]).endswith("hi ✗ not sent: no_such_nick")


def test_mentions_are_highlighted_in_the_text() -> None:
    [row] = render_line(line("hey alice, look", mention=True), 60, "alice")
    assert ("class:mention", "alice") in [(style.strip(), text) for style, text, *_ in row]


def test_a_peers_escape_sequences_stay_visible_in_a_rendered_line() -> None:
    [row] = render_line(line("\x1b[31mred\u202e"), 80, "alice")
    rendered = text_of(row)
    assert "\x1b" not in rendered and "\u202e" not in rendered
    assert rendered.endswith("^[[31mred<U+202E>")


def test_actions_and_presence_have_their_own_nick_column() -> None:
    [action] = render_line(line("waves", kind=LineKind.ACTION), 60, "alice")
    [joined] = render_line(line("bob joined lobby", sender="", kind=LineKind.JOIN), 60, "alice")
    assert "* │ bob waves" in text_of(action)
    assert "--> │ bob joined lobby" in text_of(joined)


def test_nick_colours_are_stable_and_case_blind() -> None:
    assert nick_class("Bob") == nick_class("bob")
    assert len({nick_class(f"user{index}") for index in range(40)}) >= 8


def test_a_file_message_shows_its_name_size_and_how_to_get_it() -> None:
    info = FileInfo(fid="6c1f0d5e" + "0" * 24, name="report.pdf", size=1258291, sha256="0" * 64)
    line = Line(LineKind.FILE, info.name, TS, sender="bob", id=1, file=info)
    [row] = render_line(line, 80, "alice", local=time.gmtime)
    assert text_of(row).endswith("bob │ 📎 report.pdf (1.2 MiB) — /get 6c1f0d5e")
    assert row_width(row) <= 80


def test_a_hostile_file_name_and_fid_from_the_network_are_shown_not_obeyed() -> None:
    info = FileInfo(fid="\x1b]52;c;x\x07", name="a\x1b[2J\u202egnp.exe\x9b", size=-5, sha256="")
    line = Line(LineKind.FILE, info.name, TS, sender="evil\x1b", id=1, file=info)
    shown = "".join(text_of(row) for row in render_line(line, 120, "alice", local=time.gmtime))
    assert "a^[[2J<U+202E>gnp.exe\\x9b (0 B) — /get ^[]52;c;" in shown
    assert "evil^[" in shown
    assert not any(char in shown for char in "\x1b\x07\u202e\x9b")


# --- lookalikes: names outside the viewer's usual scripts are marked ---------------------------------------------

CYRILLIC_POPE = "\u0440\u043e\u0440\u0435"  # drawn like the Latin "pope"
GREEK_ELENI = "\u0395\u03bb\u03ad\u03bd\u03b7"


def styles_of(row: list[tuple[str, str]] | object, text: str) -> set[str]:
    return {fragment[0] for fragment in row if text in fragment[1]}  # type: ignore[attr-defined]


def test_a_sender_in_a_script_the_viewer_does_not_read_is_marked() -> None:
    [foreign] = render_line(line("hi", sender=CYRILLIC_POPE), 60, "alice", local=time.gmtime)
    [latin] = render_line(line("hi", sender="pope"), 60, "alice", local=time.gmtime)
    assert f"{CYRILLIC_POPE}{FOREIGN_MARK} │ hi" in text_of(foreign)
    assert any(FOREIGN_STYLE in style for style in styles_of(foreign, CYRILLIC_POPE))
    assert "pope │ hi" in text_of(latin) and FOREIGN_MARK not in text_of(latin)
    assert separator_column(text_of(foreign)) == separator_column(text_of(latin)), "the mark keeps the column"


def test_the_scripts_of_the_own_nick_and_the_configured_ones_are_usual() -> None:
    assert usual_scripts("alice") == {"Latin"}
    assert usual_scripts(GREEK_ELENI) == {"Latin", "Greek"}
    assert usual_scripts("alice", ["Cyrillic"]) == {"Latin", "Cyrillic"}
    [greek_viewer] = render_line(line("hi", sender="\u039d\u03af\u03ba\u03bf\u03c2"), 60, GREEK_ELENI)
    assert FOREIGN_MARK not in text_of(greek_viewer)
    reads_cyrillic = usual_scripts("alice", ["Cyrillic"])
    [configured] = render_line(line("hi", sender=CYRILLIC_POPE), 60, "alice", usual=reads_cyrillic)
    assert FOREIGN_MARK not in text_of(configured)


def test_a_long_foreign_nick_is_cut_before_its_mark() -> None:
    [row] = render_line(line("hi", sender=CYRILLIC_POPE * 5), 60, "alice", local=time.gmtime)
    assert f"+{FOREIGN_MARK} │ hi" in text_of(row)
    assert separator_column(text_of(row)) == TIME_WIDTH + 1 + NICK_WIDTH + 1


def test_an_action_by_a_foreign_nick_is_marked_and_common_characters_never_count() -> None:
    [action] = render_line(line("waves", sender=CYRILLIC_POPE, kind=LineKind.ACTION), 60, "alice")
    assert f"{CYRILLIC_POPE}{FOREIGN_MARK} waves" in text_of(action)
    [digits] = render_line(line("hi", sender="_42-."), 60, "alice")
    assert FOREIGN_MARK not in text_of(digits)


def test_the_room_list_marks_a_room_name_in_a_script_the_viewer_does_not_read() -> None:
    model = ChatModel("alice", "server", lambda: TS)
    model.open_room("lobby")
    model.open_room("\u043b\u043e\u0431\u0431\u0438")  # Cyrillic
    shown = "".join(fragment[1] for fragment in conversation_list(model, lambda conversation: None))
    assert f"\u043b\u043e\u0431\u0431\u0438{FOREIGN_MARK}" in shown and f"lobby{FOREIGN_MARK}" not in shown
    reader = ChatModel("alice", "server", lambda: TS, scripts=["Cyrillic"])
    reader.open_room("\u043b\u043e\u0431\u0431\u0438")
    assert FOREIGN_MARK not in "".join(fragment[1] for fragment in conversation_list(reader, lambda c: None))


FAMILY, THUMB, FLAG, ACUTE_X = "👨\u200d👩\u200d👧\u200d👦", "👍🏽", "🇩🇪", "x\u0301"  # x with an acute: no NFC form
ENGLAND = "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"


def test_width_is_measured_by_grapheme_cluster() -> None:
    assert [cell_width(text) for text in (FAMILY, THUMB, FLAG, ACUTE_X, ENGLAND)] == [2, 2, 2, 1, 2]
    assert cell_width(f"a{FAMILY}b{ACUTE_X}") == 5


def test_fit_cuts_between_clusters_never_inside_one() -> None:
    assert fit(f"ab{FAMILY}cd", 4) == "ab+ "  # the family does not fit before the mark: it is left out whole
    assert fit(f"{FAMILY}{THUMB}{FLAG}", 5) == f"{FAMILY}{THUMB}+"
    assert fit(f"{ACUTE_X}{FLAG}", 3) == f"{ACUTE_X}{FLAG}"
    assert cell_width(fit(f"x{FAMILY}" * 5, 9, right=True)) == 9


def test_emoji_sequences_and_combining_marks_wrap_whole_and_keep_the_text_column() -> None:
    text = "".join([FAMILY, THUMB, "a", FLAG, ACUTE_X] * 12)  # one long word: broken between clusters
    width = PREFIX_WIDTH + 25
    rows = render_line(Line(LineKind.MESSAGE, text, TS, sender="bob"), width, "alice", local=time.gmtime)
    assert len(rows) > 1
    clusters = {FAMILY, THUMB, FLAG, ACUTE_X, "a"}
    for row in rows:
        body = text_of(row)[PREFIX_WIDTH:]
        assert set(wcwidth.iter_graphemes(body)) <= clusters, f"a cluster was cut: {body!r}"
        assert row_width(row) <= width and wcwidth.width(text_of(row)) <= width
        assert text_of(row)[:PREFIX_WIDTH].endswith(" │ ")


def test_invisible_characters_are_shown_one_way_and_joiners_only_where_they_join() -> None:
    assert visible("a\u200bb") == "a<U+200B>b"
    assert visible("a\u200db") == "a<U+200D>b"  # a joiner between ASCII letters joins nothing
    assert visible("\u200d") == "<U+200D>" and visible("x\u200c") == "x<U+200C>"
    assert visible("\u3164") == "<U+3164>"  # Hangul filler: a letter that draws nothing
    assert visible("a\u2060b\u00adc") == "a<U+2060>b<U+00AD>c"
    for text in (FAMILY, "👩\u200d💻 ok", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", ENGLAND, THUMB, FLAG):
        assert visible(text) == text
    assert visible("x\U000e0067") == "x<U+E0067>"  # a tag character outside a flag


def test_prompt_toolkit_lays_a_cluster_out_as_one_cell_of_its_width() -> None:
    text = f"{FAMILY}|{THUMB}|{FLAG}|{ACUTE_X}|end"
    window = Window(ClusterTextControl(lambda: [("", text)]))
    screen = Screen()
    window.write_to_screen(screen, MouseHandlers(), WritePosition(0, 0, 40, 1), "", erase_bg=False, z_index=None)
    row = screen.data_buffer[0]
    drawn = [(x, row[x].char) for x in range(40) if row[x].char]
    assert drawn[:11] == [
        (0, FAMILY), (2, "|"), (3, THUMB), (5, "|"), (6, FLAG), (8, "|"), (9, ACUTE_X), (10, "|"),
        (11, "e"), (12, "n"), (13, "d"),
    ]  # fmt: skip


def test_a_narrow_pane_drops_the_time_and_shrinks_the_nick_column_instead_of_a_sliver_of_text() -> None:
    line = Line(LineKind.MESSAGE, "the quick brown fox jumps over the lazy dog", TS, sender="bartholomew")
    for width in (38, 30, 24, 16, 12):
        rows = render_line(line, width, "alice", local=time.gmtime)
        assert all(row_width(row) <= width for row in rows), width
        texts = [text_of(row) for row in rows]
        column = texts[0].index(" │ ") + 3
        assert all(text.index(" │ ") + 3 == column for text in texts), f"the text column moves at {width}"
        assert width - column >= width // 2, f"the text gets less than half of {width} cells"
        assert " ".join(text[column:] for text in texts) == line.text, "nothing is cut"
    assert text_of(render_line(line, 30, "alice", local=time.gmtime)[0]).startswith("barth+ │ the quick")
    wide = render_line(line, 80, "alice", local=time.gmtime)
    assert text_of(wide[0])[TIME_WIDTH:].startswith(" bartholom+ │ the quick")
