"""The one settings object of the policy operator (env vars `NEXTCAMPUS_<FIELD>`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from nextcampus_common.settings import (
    PolicyDefaultSettings,
    RedisSettings,
    ServiceSettings,
    comma_separated,
)


class PolicyOperatorSettings(ServiceSettings, RedisSettings, PolicyDefaultSettings):
    # NoDecode: the env var is `ns1,ns2`, not JSON.
    watch_namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="namespaces whose CourseChatPolicies to reconcile; empty: all namespaces",
    )
    resync_seconds: float = Field(
        default=30.0, ge=1, description="how often each policy is checked against Redis"
    )
    retry_seconds: float = Field(
        default=10.0, gt=0, description="delay before retrying a policy whose Redis was away"
    )
    retime_batch_size: int = Field(
        default=500, ge=1, le=10_000, description="messages re-timed per Redis round trip"
    )
    governed_courses: dict[str, list[str]] | None = Field(
        default=None,
        description=(
            "namespace → course-id glob patterns (* ? […]) its CourseChatPolicies may govern, "
            'as JSON: {"chat": ["*"], "archive": ["cs-*"]}; a policy for any other course is '
            "Ready=False NotPermitted and never applied; unset: every namespace governs every "
            "course"
        ),
    )
    export_directory: Path | None = Field(
        default=None,
        description="where exports of courses go before a TTL change shortens their history "
        "(spec.exportBeforeTTLChange; the chart mounts operator.exports.persistence there); "
        "unset: such exports are refused (logged, in the policy's status and an Event) and the "
        "TTL is applied all the same",
    )
    health_host: str = "0.0.0.0"
    health_port: int = Field(default=8080, ge=0, le=65535, description="/healthz; 0 disables")

    _split_namespaces = field_validator("watch_namespaces", mode="before")(comma_separated)

    @field_validator("governed_courses")
    @classmethod
    def _check_governed_courses(
        cls, governed: dict[str, list[str]] | None
    ) -> dict[str, list[str]] | None:
        if governed is None:
            return None
        if not governed:
            # {} would let no policy apply anywhere: almost surely a mistake.
            raise ValueError(
                "name at least one namespace; leave it unset to let every namespace govern "
                "every course"
            )
        for namespace, patterns in governed.items():
            if not _NAMESPACE.fullmatch(namespace):
                raise ValueError(f"{namespace!r} is not a namespace name")
            for pattern in patterns:
                if not _COURSE_PATTERN.fullmatch(pattern):
                    raise ValueError(
                        f"{pattern!r} (namespace {namespace}) is not a course-id pattern: "
                        "1-128 of A-Z a-z 0-9 . _ - and the glob characters * ? [ ] !"
                    )
        return governed


_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_COURSE_PATTERN = re.compile(r"^[A-Za-z0-9._*?\[\]!-]{1,128}$")
