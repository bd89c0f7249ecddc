"""What the terminal client's commands show, as pure functions (chat/tui/actions.py): the lines of /whois."""

from __future__ import annotations

import time

from chat.protocol.messages import WhoisInfo
from chat.tui.actions import moment, span, whois_lines

NOW = 1_796_144_400.0  # Tuesday 1 December 2026, 17:00 UTC


def utc(ts: float) -> time.struct_time:
    return time.gmtime(ts)


def test_an_online_nick_shows_rooms_away_idle_and_connected_since_a_line_each() -> None:
    info = WhoisInfo(nick="Bob", online=True, rooms=["Lobby", "ops"], away="lunch", idle=42.5,
                     connected=int((NOW - 7500) * 1000))  # fmt: skip
    assert whois_lines(info, NOW, utc) == [
        "Bob is connected",
        "  rooms: Lobby, ops",
        "  away: lunch",
        "  idle: 42 s",
        "  connected since: today 14:55 (2 h 5 min)",
    ]


def test_an_online_nick_in_no_room_and_not_away_says_so() -> None:
    info = WhoisInfo(nick="carol", online=True, rooms=[], away=None, idle=0.0, connected=int(NOW * 1000))
    assert whois_lines(info, NOW, utc)[1:3] == ["  rooms: none", "  away: no"]


def test_a_held_nick_of_someone_offline_says_when_it_was_last_seen() -> None:
    info = WhoisInfo(nick="erin", online=False, seen=int((NOW - 3 * 86400) * 1000))
    assert whois_lines(info, NOW, utc) == ["erin is not connected; last seen Sat 28 Nov 2026 17:00"]


def test_durations_and_moments_read_as_people_say_them() -> None:
    assert [span(s) for s in (0, 59.9, 60, 3599, 3600 * 5 + 60 * 7, 86400 * 3 + 3600 * 4)] == [
        "0 s", "59 s", "1 min", "59 min", "5 h 7 min", "3 d 4 h",
    ]  # fmt: skip
    assert moment(NOW - 60, NOW, utc) == "today 16:59"
    assert moment(NOW - 86400, NOW, utc) == "Mon 30 Nov 2026 17:00"
