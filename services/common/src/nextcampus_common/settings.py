"""The typed settings base every process builds once in its `__main__`.

Fields are read from `NEXTCAMPUS_<FIELD>` environment variables (the chart sets them from a
ConfigMap; secrets only from a Secret). Each service composes the mixins it needs, so the
env vars a pod accepts are exactly the fields of its settings class.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "NEXTCAMPUS_"


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load_settings(settings_class: type[SettingsT], process: str) -> SettingsT:
    """The process's settings from its env vars, or exit with every bad field named."""
    try:
        return settings_class()
    except ValidationError as exc:
        sys.exit(f"invalid {process} settings:\n{exc}")


def comma_separated(value: object) -> object:
    """A list field's env var is `a,b,c` (fields using it are marked NoDecode, not JSON)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class ServiceSettings(BaseSettings):
    """Fields every process has: logging and the Prometheus endpoint."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(default=9100, ge=0, le=65535, description="0 disables /metrics")


class HeapSettings(BaseSettings):
    """The garbage collector of a serving process once it has started
    (nextcampus_common.runtime.settle_heap)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    gc_freeze: bool = Field(
        default=True, description="freeze start-up's objects out of the collector's scans"
    )
    # 10,000 rather than Python's 700: measured with bench-fanout (README, "Performance").
    gc_threshold0: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="allocations between two collections of the youngest generation",
    )


class HopTimingSettings(BaseSettings):
    """A serving process that a message passes (chat, GraphQL)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    hop_timing: bool = Field(
        default=False,
        description="benchmarks only: time the load generator's messages at every hop "
        "(nextcampus_common.hops)",
    )


class RedisSettings(BaseSettings):
    """How a process reaches the Redis Cluster."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    # NoDecode: the env var is `host:port,host:port`, not JSON.
    redis_nodes: Annotated[list[str], NoDecode] = Field(
        default=["127.0.0.1:7000"],
        description="startup nodes as host:port, comma-separated in the env var",
    )
    redis_password: SecretStr | None = None
    redis_socket_timeout_seconds: float = Field(default=5.0, gt=0)
    redis_retry_seconds: float = Field(
        default=10.0, gt=0, description="how long a command retries through a failover"
    )
    redis_min_replicas: int | None = Field(
        default=None,
        ge=0,
        description="replicas that must hold a write before it is acknowledged; empty: 1 when "
        "the cluster has replicas, else 0",
    )
    # A replica confirms within a millisecond when it is well; the wait runs long only when
    # it is not (paused, partitioned, starved of CPU), and a send refused then is retried by
    # its client anyway: long enough to ride out a stall, short enough to answer promptly.
    redis_wait_timeout_ms: int = Field(
        default=1000,
        ge=1,
        description="longest wait for those replicas; past it the write is refused as "
        "UNAVAILABLE (retry with the same client message id)",
    )
    redis_without_replicas: Literal["refuse", "accept"] = Field(
        default="refuse",
        description="a write while its shard has no replica at all (after a failover, until "
        "the old primary rejoins): refuse (UNAVAILABLE, nothing stored) or accept it with "
        "one copy only (counted and logged)",
    )

    _split_nodes = field_validator("redis_nodes", mode="before")(comma_separated)

    @field_validator("redis_nodes")
    @classmethod
    def _check_nodes(cls, nodes: list[str]) -> list[str]:
        if not nodes:
            raise ValueError("at least one Redis node is required")
        for node in nodes:
            host, sep, port = node.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"Redis node {node!r} is not host:port")
        return nodes

    def redis_startup_nodes(self) -> list[tuple[str, int]]:
        return [
            (host, int(port)) for host, _, port in (n.rpartition(":") for n in self.redis_nodes)
        ]


class JwtSettings(BaseSettings):
    """How tokens are verified: an HS256 secret, or a JWKS from a file or URL."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    jwt_secret: SecretStr | None = None
    jwt_jwks_file: Path | None = None
    jwt_jwks_url: str | None = None
    jwt_issuer: str | None = Field(
        default="nextcampus", description="required `iss`; empty: not checked"
    )
    jwt_audience: str | None = Field(
        default="nextcampus-chat", description="required `aud`; empty: not checked"
    )
    jwt_leeway_seconds: int = Field(default=5, ge=0, le=300)
    jwt_cache_size: int = Field(default=100_000, ge=0, description="verified tokens kept until exp")
    jwt_jwks_timeout_seconds: float = Field(
        default=3.0, gt=0, le=60, description="longest wait for the JWKS URL to answer"
    )
    jwt_jwks_cooldown_seconds: float = Field(
        default=10.0,
        ge=0,
        description="least time between two fetches of the JWKS URL (tokens with unknown "
        "key ids are refused meanwhile)",
    )
    jwt_jwks_refresh_seconds: float = Field(
        default=300.0,
        gt=0,
        description="age after which the JWKS URL's keys are re-fetched in the background",
    )

    @field_validator("jwt_issuer", "jwt_audience", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _exactly_one_key_source(self) -> JwtSettings:
        sources = [
            name
            for name, value in (
                ("NEXTCAMPUS_JWT_SECRET", self.jwt_secret),
                ("NEXTCAMPUS_JWT_JWKS_FILE", self.jwt_jwks_file),
                ("NEXTCAMPUS_JWT_JWKS_URL", self.jwt_jwks_url),
            )
            if value
        ]
        if len(sources) != 1:
            raise ValueError(
                "set exactly one of NEXTCAMPUS_JWT_SECRET, NEXTCAMPUS_JWT_JWKS_FILE, "
                f"NEXTCAMPUS_JWT_JWKS_URL (got: {', '.join(sources) or 'none'})"
            )
        if self.jwt_secret is not None and len(self.jwt_secret.get_secret_value()) < 32:
            raise ValueError("NEXTCAMPUS_JWT_SECRET must be at least 32 characters (HS256)")
        return self


class PolicyDefaultSettings(BaseSettings):
    """The policy of a course without a CourseChatPolicy: the chat service sends by it, and
    the operator restores it when a policy is deleted. One definition, so both agree."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    default_ttl_seconds: int = Field(default=86400, ge=60, le=31_536_000)
    default_max_length: int = Field(default=4000, ge=1, le=16_000)
    default_rate_limit_messages: int = Field(default=10, ge=0, description="0: no rate limit")
    default_rate_limit_seconds: int = Field(default=10, ge=1)
    default_edit_window_seconds: int = Field(
        default=3600,
        ge=0,
        le=31_536_000,
        description="how long after a send its author may edit it; 0: no edits",
    )
