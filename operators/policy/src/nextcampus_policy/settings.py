"""The one settings object of the policy operator (env vars `NEXTCAMPUS_<FIELD>`)."""

from __future__ import annotations

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
    health_host: str = "0.0.0.0"
    health_port: int = Field(default=8080, ge=0, le=65535, description="/healthz; 0 disables")

    _split_namespaces = field_validator("watch_namespaces", mode="before")(comma_separated)
