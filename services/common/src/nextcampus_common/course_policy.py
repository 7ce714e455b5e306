"""A course's effective policy: its policy hash (what the operator wrote) over the defaults,
with the schedule's mode now — as the send script applies it. One copy for the chat service
(GetCoursePolicy) and the course export's header."""

from __future__ import annotations

from typing import Any

import orjson

from nextcampus_common import schedule as timetable
from nextcampus_common.keys import ANONYMOUS_TO_CLASSMATES, POLICY_FIELDS, CourseKeys
from nextcampus_common.proto.chat.v1.chat_pb2 import (
    ANONYMOUS_POSTING_DISABLED,
    ANONYMOUS_POSTING_TO_CLASSMATES,
    COURSE_MODE_OPEN,
    COURSE_MODE_READ_ONLY,
    COURSE_MODE_SLOW,
    COURSE_MODE_UNSPECIFIED,
    CoursePolicy,
    ScheduleWindow,
)
from nextcampus_common.redis_cluster import ClusterClient
from nextcampus_common.settings import PolicyDefaultSettings

_COURSE_MODES = {
    timetable.Mode.OPEN: COURSE_MODE_OPEN,
    timetable.Mode.READ_ONLY: COURSE_MODE_READ_ONLY,
    timetable.Mode.SLOW_MODE: COURSE_MODE_SLOW,
}


def _int_or(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:  # a hand-edited hash: the send script falls back the same way
        return default


def _schedule_window(spec: dict[str, Any]) -> ScheduleWindow:
    window = timetable.window_of(spec)
    return ScheduleWindow(
        mode=_COURSE_MODES[window.mode],
        slow_mode_seconds=window.slow_mode_seconds,
        time_zone=window.time_zone,
        days=window.days,
        start_time=window.start_time,
        end_time=window.end_time,
        start=window.start,
        end=window.end,
    )


async def read_course_policy(
    redis: ClusterClient, course_id: str, defaults: PolicyDefaultSettings, now_ms: int
) -> CoursePolicy:
    """The course's effective policy at `now_ms` (the schedule's mode then)."""
    key = CourseKeys(course_id).policy
    (
        ttl,
        max_length,
        read_only,
        rate_messages,
        rate_seconds,
        edit_window,
        windows,
        segments,
        anonymous_posting,
    ) = await redis.command(key, "HMGET", key, *POLICY_FIELDS)
    read_only = read_only in ("1", "true")
    now, following = timetable.next_change(timetable.decode(segments), now_ms)
    if read_only:
        now, following = timetable.Current(timetable.Mode.READ_ONLY, 0, None), None
    return CoursePolicy(
        course_id=course_id,
        ttl_seconds=_int_or(ttl, defaults.default_ttl_seconds),
        max_length=_int_or(max_length, defaults.default_max_length),
        read_only=read_only,
        rate_limit_messages=_int_or(rate_messages, defaults.default_rate_limit_messages),
        rate_limit_seconds=_int_or(rate_seconds, defaults.default_rate_limit_seconds),
        edit_window_seconds=_int_or(edit_window, defaults.default_edit_window_seconds),
        mode=_COURSE_MODES[now.mode],
        mode_ends_at=now.until_ms or 0,
        slow_mode_seconds=now.slow_mode_seconds,
        next_mode=_COURSE_MODES[following.mode] if following else COURSE_MODE_UNSPECIFIED,
        schedule=[_schedule_window(w) for w in orjson.loads(windows or "[]")],
        anonymous_posting=ANONYMOUS_POSTING_TO_CLASSMATES
        if anonymous_posting == ANONYMOUS_TO_CLASSMATES
        else ANONYMOUS_POSTING_DISABLED,
    )
