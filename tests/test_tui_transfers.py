"""Transfers as the status area shows them (chat/tui/transfers.py, and its rows in chat/tui/layout.py): progress,
rate over a sliding window, ETA, and the compact summary, all with made-up times."""

from __future__ import annotations

from chat.tui.layout import MAX_TRANSFER_ROWS, transfer_rows
from chat.tui.render import cell_width, human_duration, human_rate, human_size
from chat.tui.transfers import MIN_RATE_SPAN, RATE_WINDOW, Direction, Transfer, summary

MiB = 1024 * 1024


def text(row: list[tuple[str, str]] | object) -> str:
    return "".join(fragment[1] for fragment in row)  # type: ignore[attr-defined]


def download(name: str = "video.mp4", total: int = 10 * MiB) -> Transfer:
    return Transfer(Direction.DOWN, name, f"/tmp/{name}", total, fid="ab" * 16)


def test_rate_and_eta_come_from_the_progress_of_the_last_seconds() -> None:
    transfer = download()
    assert transfer.rate(0.0) is None and transfer.eta(0.0) is None and transfer.fraction == 0.0
    for second in range(5):
        transfer.advance(second * MiB, 10 * MiB, 100.0 + second)
    assert transfer.fraction == 0.4
    assert transfer.rate(104.0) == MiB
    assert transfer.eta(104.0) == 6.0


def test_a_stalled_transfer_shows_its_rate_falling_to_zero() -> None:
    transfer = download()
    transfer.advance(MiB, 10 * MiB, 0.0)
    transfer.advance(2 * MiB, 10 * MiB, 1.0)
    assert transfer.rate(1.0) == MiB
    assert transfer.rate(1.0 + RATE_WINDOW / 2) == MiB / (1 + RATE_WINDOW / 2)
    assert transfer.rate(1.0 + RATE_WINDOW + 1) == 0.0
    assert transfer.eta(1.0 + RATE_WINDOW + 1) is None


def test_the_first_callback_is_where_the_rate_starts_so_resumed_bytes_are_not_speed() -> None:
    transfer = download()
    transfer.advance(8 * MiB, 10 * MiB, 50.0)  # 8 MiB were in the .part file already
    assert transfer.rate(50.0 + MIN_RATE_SPAN / 2) is None, "too early to tell"
    transfer.advance(9 * MiB, 10 * MiB, 51.0)
    assert transfer.rate(51.0) == MiB


def test_the_rows_show_name_percent_bar_rate_and_eta_within_the_width() -> None:
    transfer = download("report.pdf")
    transfer.advance(0, 10 * MiB, 0.0)
    transfer.advance(4 * MiB, 10 * MiB, 2.0)
    [row] = transfer_rows([transfer], 2.0, 100)
    shown = text(row)
    assert shown.startswith(" get  report.pdf ")
    assert shown.endswith(" 40% [=======>            ]   2.0 MiB/s  0:03 left ")
    assert cell_width(shown) == 100
    [narrow] = transfer_rows([transfer], 2.0, 50)
    assert "[" not in text(narrow) and cell_width(text(narrow)) <= 50 and "40%" in text(narrow)


def test_a_peers_file_name_is_made_visible_in_the_status_area() -> None:
    transfer = download("evil\x1b]0;title\x07.txt")
    [row] = transfer_rows([transfer], 0.0, 100)
    assert "evil^[]0;title^G.txt" in text(row) and "\x1b" not in text(row)


def test_many_transfers_show_the_newest_and_a_summary_of_the_others() -> None:
    transfers = [download(f"file{n}.bin", MiB) for n in range(5)]
    for transfer in transfers:
        transfer.advance(0, MiB, 0.0)
        transfer.advance(MiB // 2, MiB, 1.0)
    rows = [text(row) for row in transfer_rows(transfers, 1.0, 100)]
    assert len(rows) == MAX_TRANSFER_ROWS
    assert rows[0].startswith(" 3 more of 3.0 MiB") and " 50% " in rows[0] and "1.5 MiB/s" in rows[0]
    assert rows[1].startswith(" get  file3.bin") and rows[2].startswith(" get  file4.bin")
    assert summary(transfers[:3], 1.0) == (3 * MiB // 2, 3 * MiB, 1.5 * MiB)


def test_before_the_first_bytes_and_after_the_last_the_row_says_so_instead_of_a_rate() -> None:
    upload = Transfer(Direction.UP, "big.iso", "/tmp/big.iso", 3 * MiB)
    [row] = transfer_rows([upload], 0.0, 100)
    assert text(row).startswith(" send big.iso") and "  0% [                    ]" in text(row)
    assert text(row).endswith(" starting ") and "left" not in text(row)
    upload.advance(3 * MiB, 3 * MiB, 1.0)
    [row] = transfer_rows([upload], 9.0, 100)
    assert " 100% [====================] " in text(row) and text(row).endswith(" finishing "), "the server checks it"


def test_sizes_rates_and_durations_read_like_a_person_would_write_them() -> None:
    assert [human_size(n) for n in (0, 512, 1536, 1258291, 5 * 1024**3)] == [
        "0 B",
        "512 B",
        "1.5 KiB",
        "1.2 MiB",
        "5.0 GiB",
    ]
    assert human_rate(512) == "0.5 KiB/s" and human_rate(3 * MiB) == "3.0 MiB/s"
    assert [human_duration(s) for s in (0, 7.4, 754, 3723)] == ["0:00", "0:07", "12:34", "1:02:03"]


def test_a_get_by_a_bare_fid_has_no_percent_and_no_eta_until_its_size_is_known() -> None:
    transfer = Transfer(Direction.DOWN, "ab" * 16, "/tmp/x", 0, fid="ab" * 16, size_known=False)
    transfer.advance(0, 0, 0.0)
    transfer.advance(MiB, 0, 1.0)
    assert transfer.fraction is None and transfer.eta(1.0) is None and transfer.rate(1.0) == MiB
    [row] = transfer_rows([transfer], 1.0, 100)
    assert "  ?% [                    ]" in text(row) and "1.0 MiB/s" in text(row)
