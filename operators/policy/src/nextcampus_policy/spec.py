"""The CourseChatPolicy resource as the operator reads it: its identity, its spec (checked
again here, so a policy that slipped past the API server's schema becomes `InvalidSpec`
instead of a crash), and what the spec means in the course's policy hash."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nextcampus_common.ids import COURSE_ID
from nextcampus_common.keys import POLICY_OWNER_FIELD
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

    def ttl_seconds(self, defaults: PolicyDefaultSettings) -> int:
        return self.message_ttl_seconds or defaults.default_ttl_seconds

    def policy_fields(self, owner: str) -> dict[str, str]:
        """The course's policy hash: only what the spec sets (the chat service's defaults
        cover the rest), and which policy wrote it."""
        fields = {POLICY_OWNER_FIELD: owner, "read_only": "1" if self.read_only else "0"}
        if self.message_ttl_seconds is not None:
            fields["ttl_seconds"] = str(self.message_ttl_seconds)
        if self.max_message_length is not None:
            fields["max_length"] = str(self.max_message_length)
        if self.rate_limit is not None:
            fields["rate_limit_messages"] = str(self.rate_limit.messages)
            fields["rate_limit_seconds"] = str(self.rate_limit.per_seconds)
        if self.edit_window_seconds is not None:
            fields["edit_window_seconds"] = str(self.edit_window_seconds)
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
        return (
            f"TTL {self.ttl_seconds(defaults)} s, max length {length}, "
            f"read-only {'yes' if self.read_only else 'no'}, rate limit {rate}, {edits}"
        )


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
