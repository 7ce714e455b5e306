"""The CourseChatPolicy resource as the operator reads it: its identity, its spec (checked
again here, so a policy that slipped past the API server's schema becomes `InvalidSpec`
instead of a crash), and what the spec means in the course's policy hash."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nextcampus_common import schedule as timetable
from nextcampus_common.ids import COURSE_ID
from nextcampus_common.keys import ANONYMOUS_TO_CLASSMATES, POLICY_OWNER_FIELD
from nextcampus_common.settings import PolicyDefaultSettings

GROUP = "chat.nextcampus.io"
VERSION = "v1alpha1"
PLURAL = "coursechatpolicies"
KIND = "CourseChatPolicy"
API_VERSION = f"{GROUP}/{VERSION}"


class Reason(StrEnum):
    """Reasons of the Ready condition (CamelCase, as the API conventions ask)."""

    APPLIED = "PolicyApplied"
    REDIS_UNAVAILABLE = "RedisUnavailable"
    CONFLICT = "Conflict"
    INVALID_SPEC = "InvalidSpec"
    NOT_PERMITTED = "NotPermitted"  # its namespace may not govern its course


NOT_READY_REASONS = (
    Reason.REDIS_UNAVAILABLE,
    Reason.CONFLICT,
    Reason.INVALID_SPEC,
    Reason.NOT_PERMITTED,
)


class InvalidSpec(ValueError):
    """A spec the operator cannot apply; the message names the field."""


class RateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: int = Field(ge=0, le=100_000)
    per_seconds: int = Field(alias="perSeconds", ge=1, le=86_400)


# Bounds of a schedule (the CRD's, once more): enough windows for a term's exams and every
# lecture of a week, few enough that a send scans a short string.
MAX_WINDOWS = 32
TIME_OF_DAY = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
END_OF_DAY = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"
LOCAL_DATE_TIME = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]$"
)
TIME_ZONE = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$"


class WeeklyTimes(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    days: list[Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]] = Field(
        min_length=1, max_length=7
    )
    start_time: str = Field(alias="startTime", pattern=TIME_OF_DAY)
    end_time: str = Field(alias="endTime", pattern=END_OF_DAY)

    @model_validator(mode="after")
    def _ordered(self) -> WeeklyTimes:
        if len(set(self.days)) != len(self.days):
            raise ValueError("days must not repeat a day")
        if self.end_time <= self.start_time:
            raise ValueError(
                "endTime must be after startTime (a window ends on the day it starts; "
                "use 24:00 for midnight, or two windows across it)"
            )
        return self


class DatedTimes(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    start: str = Field(pattern=LOCAL_DATE_TIME)
    end: str = Field(pattern=LOCAL_DATE_TIME)

    @model_validator(mode="after")
    def _ordered(self) -> DatedTimes:
        for value in (self.start, self.end):
            try:
                datetime.datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(f"{value} is not a date and time of the calendar") from None
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class ScheduleWindow(BaseModel):
    """One window of `spec.schedule`: weekly or dated, in its own IANA time zone."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    mode: Literal["ReadOnly", "SlowMode"]
    slow_mode_seconds: int | None = Field(default=None, alias="slowModeSeconds", ge=1, le=86_400)
    time_zone: str = Field(alias="timeZone", max_length=64, pattern=TIME_ZONE)
    weekly: WeeklyTimes | None = None
    dated: DatedTimes | None = None

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value} is not an IANA time zone (such as Europe/Berlin or UTC)"
            ) from None
        return value

    @model_validator(mode="after")
    def _one_form(self) -> ScheduleWindow:
        if (self.weekly is None) == (self.dated is None):
            raise ValueError("a window is either weekly or dated: give exactly one of them")
        if (self.mode == "SlowMode") != (self.slow_mode_seconds is not None):
            raise ValueError("slowModeSeconds is required with mode SlowMode and only there")
        return self

    def window(self) -> timetable.Window:
        return timetable.window_of(self.model_dump(by_alias=True, exclude_none=True))


class PolicySpec(BaseModel):
    """`spec` of a CourseChatPolicy (the bounds of the CRD's schema, once more)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    course_id: str = Field(alias="courseId", pattern=COURSE_ID.pattern)
    message_ttl_seconds: int | None = Field(
        default=None, alias="messageTTLSeconds", ge=60, le=31_536_000
    )
    max_message_length: int | None = Field(default=None, alias="maxMessageLength", ge=1, le=16_000)
    read_only: bool = Field(default=False, alias="readOnly")
    rate_limit: RateLimit | None = Field(default=None, alias="rateLimit")
    edit_window_seconds: int | None = Field(
        default=None, alias="editWindowSeconds", ge=0, le=31_536_000
    )
    schedule: list[ScheduleWindow] = Field(default_factory=list, max_length=MAX_WINDOWS)
    anonymous_posting: Literal["Disabled", "ToClassmates"] = Field(
        default="Disabled", alias="anonymousPosting"
    )
    # Opt-in: before a change that shortens the TTL of a course with history, the operator
    # writes a full export of it to its export directory (README, "Exporting a course").
    export_before_ttl_change: bool = Field(default=False, alias="exportBeforeTTLChange")

    def windows(self) -> list[timetable.Window]:
        return [window.window() for window in self.schedule]

    def schedule_fields(self, now: datetime.datetime) -> dict[str, str]:
        """The schedule as the policy hash carries it: the windows as written (JSON, for
        `GetCoursePolicy`) and the segments from today on (for the send script)."""
        if not self.schedule:
            return {}
        return {
            "schedule": json.dumps(
                [w.model_dump(by_alias=True, exclude_none=True) for w in self.schedule],
                separators=(",", ":"),
            ),
            "schedule_segments": timetable.encode(timetable.segments(self.windows(), now)),
        }

    def ttl_seconds(self, defaults: PolicyDefaultSettings) -> int:
        return self.message_ttl_seconds or defaults.default_ttl_seconds

    def policy_fields(self, owner: str, now: datetime.datetime | None = None) -> dict[str, str]:
        """The course's policy hash: only what the spec sets (the chat service's defaults
        cover the rest), and which policy wrote it; the schedule's segments as of `now`."""
        now = now or datetime.datetime.now(datetime.UTC)
        fields = {POLICY_OWNER_FIELD: owner, "read_only": "1" if self.read_only else "0"}
        fields.update(self.schedule_fields(now))
        if self.message_ttl_seconds is not None:
            fields["ttl_seconds"] = str(self.message_ttl_seconds)
        if self.max_message_length is not None:
            fields["max_length"] = str(self.max_message_length)
        if self.rate_limit is not None:
            fields["rate_limit_messages"] = str(self.rate_limit.messages)
            fields["rate_limit_seconds"] = str(self.rate_limit.per_seconds)
        if self.edit_window_seconds is not None:
            fields["edit_window_seconds"] = str(self.edit_window_seconds)
        if self.anonymous_posting == "ToClassmates":
            fields["anonymous_posting"] = ANONYMOUS_TO_CLASSMATES
        return fields

    def describe(self, defaults: PolicyDefaultSettings) -> str:
        limit = self.rate_limit
        rate = (
            f"{limit.messages} per {limit.per_seconds} s"
            if limit is not None
            else f"{defaults.default_rate_limit_messages} per "
            f"{defaults.default_rate_limit_seconds} s (default)"
        )
        if limit is not None and limit.messages == 0:
            rate = "off"
        length = self.max_message_length or defaults.default_max_length
        window = (
            self.edit_window_seconds
            if self.edit_window_seconds is not None
            else defaults.default_edit_window_seconds
        )
        edits = f"edits for {window} s" if window else "no edits"
        described = (
            f"TTL {self.ttl_seconds(defaults)} s, max length {length}, "
            f"read-only {'yes' if self.read_only else 'no'}, rate limit {rate}, {edits}"
        )
        if self.anonymous_posting == "ToClassmates":
            described += ", anonymous to classmates"
        if self.schedule:
            described += f", {len(self.schedule)} schedule window" + (
                "" if len(self.schedule) == 1 else "s"
            )
        return described


def parse_spec(spec: Mapping[str, Any]) -> PolicySpec:
    try:
        return PolicySpec.model_validate(dict(spec))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'spec'}: {error['msg']}"
            for error in exc.errors()
        )
        raise InvalidSpec(f"spec is invalid: {problems}") from None


@dataclass(frozen=True, slots=True, order=True)
class PolicyRef:
    """One CourseChatPolicy, as far as deciding who governs a course needs it. Ordered by
    age: the oldest policy of a course governs it (then namespace and name, so that two
    created in the same second still have one winner)."""

    created: str  # metadata.creationTimestamp, RFC 3339 in UTC: sorts by time
    namespace: str
    name: str
    course_id: str

    @classmethod
    def of(
        cls,
        namespace: str | None,
        name: str | None,
        meta: Mapping[str, Any],
        spec: Mapping[str, Any],
    ) -> PolicyRef:
        """The policy an object's namespace, name, metadata and spec describe."""
        return cls(
            created=str(meta.get("creationTimestamp") or ""),
            namespace=namespace or "",
            name=name or "",
            course_id=str(spec.get("courseId") or ""),
        )

    @property
    def owner(self) -> str:
        return f"{self.namespace}/{self.name}"


def governing(policies: list[PolicyRef]) -> PolicyRef | None:
    """The policy that governs a course among all policies naming it (the oldest)."""
    return min(policies, default=None)


@dataclass(frozen=True, slots=True)
class CourseGovernance:
    """Which namespaces' policies may govern which courses: namespace → course-id glob
    patterns (`*`, `?`, `[…]`, case-sensitive). Without patterns (None) every namespace
    governs every course, as on the local stack, where no namespaces exist.

    A policy outside its namespace's patterns is never applied and never counts as the
    older policy of its course: otherwise anyone who may create a CourseChatPolicy in some
    namespace could cut any course's TTL to 60 s and with it delete the course's history."""

    patterns: Mapping[str, tuple[str, ...]] | None = None

    @classmethod
    def of(cls, patterns: Mapping[str, Iterable[str]] | None) -> CourseGovernance:
        if patterns is None:
            return cls()
        return cls({namespace: tuple(globs) for namespace, globs in patterns.items()})

    def permits(self, policy: PolicyRef) -> bool:
        if self.patterns is None:
            return True
        globs = self.patterns.get(policy.namespace, ())
        return any(fnmatchcase(policy.course_id, glob) for glob in globs)

    def eligible(self, policies: Iterable[PolicyRef]) -> list[PolicyRef]:
        """The policies that may govern their course (the others never do)."""
        return [policy for policy in policies if self.permits(policy)]

    def refusal(self, policy: PolicyRef) -> str | None:
        """Why `policy` may not govern its course (None: it may)."""
        if self.permits(policy):
            return None
        globs = (self.patterns or {}).get(policy.namespace, ())
        allowed = (
            f"only courses matching {', '.join(globs)}"
            if globs
            else "no course (it is not in the operator's governed_courses)"
        )
        return (
            f"namespace {policy.namespace} may not govern course {policy.course_id}: its "
            f"CourseChatPolicies may govern {allowed}; the policy is not applied"
        )
