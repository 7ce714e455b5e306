"""Timetable modes (nextcampus_common/schedule.py): windows in local time become UTC
segments that stay on the wall clock across daylight-saving changes, and the mode at a
moment is what the segments say, on either side of a window's edge. Time is a parameter
(a test clock), never the machine's."""

from __future__ import annotations

import datetime

import pytest

from nextcampus_common.schedule import (
    HORIZON_DAYS,
    Current,
    Interval,
    Mode,
    Window,
    current,
    decode,
    encode,
    next_change,
    segments,
    window_of,
)

UTC = datetime.UTC


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


def ms(text: str) -> int:
    return round(at(text).timestamp() * 1000)


LECTURE = Window(
    Mode.SLOW_MODE,
    "Europe/Berlin",
    slow_mode_seconds=30,
    days=("Mon",),
    start_time="09:00",
    end_time="11:00",
)


def utc_spans(found: list[Interval]) -> list[tuple[str, str]]:
    def text(value: int) -> str:
        return datetime.datetime.fromtimestamp(value / 1000, UTC).strftime("%m-%d %H:%M")

    return [(text(i.start_ms), text(i.end_ms)) for i in found]


def test_a_weekly_window_stays_on_local_time_when_clocks_go_forward() -> None:
    # Berlin moves to summer time on Sunday 2027-03-28: 09:00 local is 08:00 UTC before,
    # 07:00 UTC after.
    found = segments([LECTURE], at("2027-03-20T12:00"))
    assert utc_spans(found) == [("03-22 08:00", "03-22 10:00")]
    found = segments([LECTURE], at("2027-03-27T12:00"))
    assert utc_spans(found) == [("03-29 07:00", "03-29 09:00")]


def test_a_weekly_window_stays_on_local_time_when_clocks_go_back() -> None:
    # Back to winter time on Sunday 2027-10-31.
    found = segments([LECTURE], at("2027-10-25T00:00"))
    assert utc_spans(found) == [("10-25 07:00", "10-25 09:00"), ("11-01 08:00", "11-01 10:00")]


def test_a_window_on_the_night_of_the_change_has_its_real_length() -> None:
    # Sunday 01:00-04:00 Berlin lasts two hours in spring (02:00-03:00 never happens) and
    # four in autumn (02:00-03:00 happens twice).
    night = Window(
        Mode.READ_ONLY, "Europe/Berlin", days=("Sun",), start_time="01:00", end_time="04:00"
    )
    spring = segments([night], at("2027-03-28T00:00"))[0]
    autumn = segments([night], at("2027-10-30T00:00"))[0]
    assert spring.end_ms - spring.start_ms == 2 * 3_600_000
    assert autumn.end_ms - autumn.start_ms == 4 * 3_600_000


def test_a_time_the_clock_skips_is_read_with_the_offset_before_the_change() -> None:
    skipped = Window(
        Mode.READ_ONLY, "Europe/Berlin", days=("Sun",), start_time="02:30", end_time="05:00"
    )
    found = segments([skipped], at("2027-03-28T00:00"))[0]
    assert utc_spans([found]) == [("03-28 01:30", "03-28 03:00")]  # 03:30-05:00 CEST


def test_the_mode_changes_exactly_at_the_edges_of_a_window() -> None:
    found = segments([LECTURE], at("2027-03-29T00:00"))
    start, end = ms("2027-03-29T07:00"), ms("2027-03-29T09:00")
    assert current(found, start - 1) == Current(Mode.OPEN, 0, start)
    assert current(found, start) == Current(Mode.SLOW_MODE, 30, end)
    assert current(found, end - 1) == Current(Mode.SLOW_MODE, 30, end)
    assert current(found, end).mode is Mode.OPEN
    now, following = next_change(found, start - 1)
    assert (now.mode, following) == (Mode.OPEN, Current(Mode.SLOW_MODE, 30, end))


def test_dated_windows_and_overlaps_resolve_to_disjoint_segments() -> None:
    exam = window_of(
        {
            "mode": "ReadOnly",
            "timeZone": "America/New_York",
            "dated": {"start": "2027-03-29T02:30", "end": "2027-03-29T04:00"},
        }
    )
    # 02:30-04:00 EDT is 06:30-08:00 UTC: it overlaps the lecture's slow mode (07:00-09:00).
    found = segments([LECTURE, exam], at("2027-03-29T00:00"))[:2]  # (then next Monday's)
    assert [(i.mode, i.slow_mode_seconds) for i in found] == [
        (Mode.READ_ONLY, 0),
        (Mode.SLOW_MODE, 30),
    ]
    assert utc_spans(found) == [("03-29 06:30", "03-29 08:00"), ("03-29 08:00", "03-29 09:00")]
    assert decode(encode(found)) == found


def test_segments_reach_from_the_start_of_the_day_for_the_horizon() -> None:
    daily = Window(
        Mode.READ_ONLY,
        "UTC",
        days=("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
        start_time="00:00",
        end_time="24:00",
    )
    now = at("2027-05-05T15:00")
    (whole,) = segments([daily], now)  # adjacent days of one mode join
    assert whole.start_ms == ms("2027-05-05T00:00")
    assert whole.end_ms == ms("2027-05-05T00:00") + HORIZON_DAYS * 86_400_000
    past = window_of(
        {
            "mode": "ReadOnly",
            "timeZone": "UTC",
            "dated": {"start": "2027-01-01T00:00", "end": "2027-01-02T00:00"},
        }
    )
    assert segments([past], now) == []


@pytest.mark.parametrize("text", ["", None, "garbage"])
def test_no_segments_is_open(text: str | None) -> None:
    assert current(decode(text), 0) == Current(Mode.OPEN, 0, None)
