"""Timetable modes of a course (README, "Course policies"): the windows of a
CourseChatPolicy's `spec.schedule`, and the compact form in which they reach every send.

The operator turns the windows into *segments*: disjoint, sorted intervals in absolute UTC
milliseconds, each with its mode, from the start of the current UTC day for
`HORIZON_DAYS` days (`segments`). Local times become UTC instants here, with `zoneinfo`,
one day at a time, so a weekly 09:00-11:00 Europe/Berlin window is 08:00-10:00 UTC in
winter and 07:00-09:00 UTC in summer. The policy hash carries them as one string
(`encode`), which the send script scans with Redis's own clock (`lua/lib/course.lua`,
`scheduled_mode`): no time zone database in Lua, no operator round trip at a window edge.
The operator re-writes the segments at every re-check, so they always reach days ahead.
"""

from __future__ import annotations

import datetime
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

# How far ahead the segments reach (from the start of the current UTC day): the operator
# re-checks every policy every few seconds, so they never run short; a day boundary only
# moves the start.
HORIZON_DAYS = 8
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_SEGMENT = re.compile(r"(\d+)-(\d+):([rs])(\d*)")


class Mode(StrEnum):
    """What a schedule window makes of the course (the CRD's `mode` enum)."""

    OPEN = "Open"  # no window: the policy's own rules
    READ_ONLY = "ReadOnly"
    SLOW_MODE = "SlowMode"


@dataclass(frozen=True, slots=True)
class Window:
    """One window of a schedule: weekly (`days`, `start_time`-`end_time` local, "HH:MM",
    end "24:00" for midnight) or dated (`start`-`end` local "YYYY-MM-DDTHH:MM"), both in
    `time_zone`."""

    mode: Mode
    time_zone: str
    slow_mode_seconds: int = 0
    days: tuple[str, ...] = ()
    start_time: str = ""
    end_time: str = ""
    start: str = ""
    end: str = ""

    @property
    def weekly(self) -> bool:
        return bool(self.days)

    def intervals(self, since: datetime.datetime, until: datetime.datetime) -> list[Interval]:
        """The UTC intervals of this window that overlap [since, until) (aware datetimes)."""
        zone = ZoneInfo(self.time_zone)
        if not self.weekly:
            begin = _local(datetime.datetime.fromisoformat(self.start), zone)
            end = _local(datetime.datetime.fromisoformat(self.end), zone)
            return [self._interval(begin, end)] if begin < until and end > since else []
        found = []
        # Local calendar days that can touch the range (a day either side for the offset).
        day = since.astimezone(zone).date() - datetime.timedelta(days=1)
        last = until.astimezone(zone).date() + datetime.timedelta(days=1)
        start_clock = datetime.time.fromisoformat(self.start_time)
        while day <= last:
            if DAYS[day.weekday()] in self.days:
                begin = _local(datetime.datetime.combine(day, start_clock), zone)
                end = _local(_end_of(day, self.end_time), zone)
                if begin < until and end > since:
                    found.append(self._interval(begin, end))
            day += datetime.timedelta(days=1)
        return found

    def _interval(self, begin: datetime.datetime, end: datetime.datetime) -> Interval:
        return Interval(_ms(begin), _ms(end), self.mode, self.slow_mode_seconds)


def window_of(spec: Mapping[str, Any]) -> Window:
    """A window from its CRD form (camelCase, `weekly` or `dated`; checked already)."""
    weekly = spec.get("weekly") or {}
    dated = spec.get("dated") or {}
    return Window(
        mode=Mode(spec["mode"]),
        time_zone=str(spec["timeZone"]),
        slow_mode_seconds=int(spec.get("slowModeSeconds") or 0),
        days=tuple(weekly.get("days") or ()),
        start_time=str(weekly.get("startTime") or ""),
        end_time=str(weekly.get("endTime") or ""),
        start=str(dated.get("start") or ""),
        end=str(dated.get("end") or ""),
    )


def _end_of(day: datetime.date, clock: str) -> datetime.datetime:
    if clock == "24:00":
        return datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time())
    return datetime.datetime.combine(day, datetime.time.fromisoformat(clock))


def _local(naive: datetime.datetime, zone: ZoneInfo) -> datetime.datetime:
    """A wall-clock time in `zone` as a UTC instant. A time the clock skips (02:30 on the
    night clocks go forward) is read with the offset before the change (03:30 after it); a
    time that happens twice (the night clocks go back), as its first occurrence (fold=0)."""
    return naive.replace(tzinfo=zone, fold=0).astimezone(datetime.UTC)


def _ms(moment: datetime.datetime) -> int:
    return round(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True, order=True)
class Interval:
    """A span of absolute time in one mode: [start_ms, end_ms)."""

    start_ms: int
    end_ms: int
    mode: Mode
    slow_mode_seconds: int = 0


def _strength(interval: Interval) -> tuple[int, int]:
    # Where windows overlap, read-only wins over slow mode, and the slower slow mode wins.
    return (1 if interval.mode is Mode.READ_ONLY else 0, interval.slow_mode_seconds)


def segments(windows: Iterable[Window], now: datetime.datetime) -> list[Interval]:
    """Disjoint, sorted segments of `windows` from the start of `now`'s UTC day for
    `HORIZON_DAYS` days; overlapping windows resolved (read-only first, then the longer
    slow mode); adjacent segments of the same mode joined."""
    since = now.astimezone(datetime.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    until = since + datetime.timedelta(days=HORIZON_DAYS)
    low, high = _ms(since), _ms(until)
    intervals = [
        Interval(max(i.start_ms, low), min(i.end_ms, high), i.mode, i.slow_mode_seconds)
        for window in windows
        for i in window.intervals(since, until)
    ]
    edges = sorted({edge for i in intervals for edge in (i.start_ms, i.end_ms)})
    result: list[Interval] = []
    for begin, end in itertools.pairwise(edges):
        covering = [i for i in intervals if i.start_ms <= begin and i.end_ms >= end]
        if not covering:
            continue
        top = max(covering, key=_strength)
        last = result[-1] if result else None
        if (
            last is not None
            and last.end_ms == begin
            and (last.mode, last.slow_mode_seconds) == (top.mode, top.slow_mode_seconds)
        ):
            result[-1] = Interval(last.start_ms, end, top.mode, top.slow_mode_seconds)
        else:
            result.append(Interval(begin, end, top.mode, top.slow_mode_seconds))
    return result


def encode(found: Sequence[Interval]) -> str:
    """The policy hash's `schedule_segments`: `start-end:r` (read-only) or `start-end:sN`
    (slow mode, N seconds), `;`-separated, in UTC milliseconds (lua/lib/course.lua reads it)."""
    return ";".join(
        f"{i.start_ms}-{i.end_ms}:"
        + ("r" if i.mode is Mode.READ_ONLY else f"s{i.slow_mode_seconds}")
        for i in found
    )


def decode(text: str | None) -> list[Interval]:
    return [
        Interval(
            int(start),
            int(end),
            Mode.READ_ONLY if code == "r" else Mode.SLOW_MODE,
            int(seconds or 0),
        )
        for start, end, code, seconds in _SEGMENT.findall(text or "")
    ]


@dataclass(frozen=True, slots=True)
class Current:
    """The mode a schedule puts a course in at one moment, and until when (None: no
    change is known within the segments' reach)."""

    mode: Mode
    slow_mode_seconds: int
    until_ms: int | None


def current(found: Sequence[Interval], now_ms: int) -> Current:
    """The mode at `now_ms` (what `scheduled_mode` in lua/lib/course.lua decides)."""
    for interval in found:
        if interval.end_ms > now_ms:
            if interval.start_ms <= now_ms:
                return Current(interval.mode, interval.slow_mode_seconds, interval.end_ms)
            return Current(Mode.OPEN, 0, interval.start_ms)
    return Current(Mode.OPEN, 0, None)


def next_change(found: Sequence[Interval], now_ms: int) -> tuple[Current, Current | None]:
    """The mode at `now_ms` and the one that follows it (None: no change known)."""
    now = current(found, now_ms)
    if now.until_ms is None:
        return now, None
    return now, current(found, now.until_ms)
