"""The one settings object of a GraphQL process (env vars `NEXTCAMPUS_<FIELD>`)."""

from __future__ import annotations

from pydantic import Field

from nextcampus_common.settings import (
    HeapSettings,
    HopTimingSettings,
    JwtSettings,
    ServiceSettings,
)


class GraphqlSettings(ServiceSettings, HeapSettings, HopTimingSettings, JwtSettings):
    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8081, ge=0, le=65535)
    chat_target: str = Field(
        default="ipv4:127.0.0.1:50051",
        description="gRPC target of the chat pods, balanced round-robin: in Kubernetes the "
        "headless service (dns:///chat-headless:50051), locally ipv4:host:port,host:port",
    )
    chat_deadline_seconds: float = Field(default=5.0, gt=0)
    my_updates_interval_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="myUpdates sends a course's counts at most once per this many seconds",
    )
    chat_send_streams: int = Field(
        default=4,
        ge=0,
        le=64,
        description="SendMessages streams to the chat pods that carry this process's sends "
        "(spread over the pods as they open); 0: one SendMessage call per send",
    )
    chat_max_attempts: int = Field(
        default=4, ge=1, le=5, description="tries of a call that ends UNAVAILABLE (gRPC retry)"
    )
    max_operations_per_socket: int = Field(default=100, ge=1)
    max_queries_per_socket: int = Field(
        default=8,
        ge=1,
        description="queries in flight on one socket; one more is refused with RATE_LIMITED",
    )
    max_query_cost: int = Field(
        default=5000,
        ge=1,
        description="cost of one operation, checked before it runs: each field 1, a page's "
        "fields times its `limit` (a full page of 200 messages with every field: 1,601)",
    )
    max_response_bytes: int = Field(
        default=4_194_304,
        ge=1024,
        description="largest query or mutation response; a larger one is replaced by an error",
    )
    max_sockets_per_user: int = Field(
        default=16,
        ge=1,
        description="WebSockets one user may hold on one pod; one more is closed with 4013",
    )
    max_subscriptions_per_user: int = Field(
        default=100,
        ge=1,
        description="subscriptions one user may hold on one pod, across their sockets",
    )
    max_subscription_cost_per_user: int = Field(
        default=100,
        ge=2,
        description="per-event cost of one user's distinct subscription documents on one pod "
        "(each costed as an operation, counted once however many subscriptions share it)",
    )
    max_query_depth: int = Field(default=10, ge=2)
    max_query_bytes: int = Field(default=8192, ge=256)
    # A message may hold 16,000 characters (the CRD's maximum length): 64 KB of 4-byte UTF-8,
    # 192 KB when a client escapes each as a JSON surrogate pair.
    max_frame_bytes: int = Field(default=262_144, ge=1024, description="largest WebSocket frame")
    max_body_bytes: int = Field(default=262_144, ge=1024, description="largest HTTP POST body")
    socket_buffer_bytes: int = Field(
        default=1_048_576,
        ge=4096,
        description="unsent bytes a socket may hold before it is closed as a slow consumer",
    )
    connection_init_timeout_seconds: float = Field(default=10.0, gt=0)
    keepalive_seconds: float = Field(
        default=15.0, gt=0, description="interval of protocol pings (ping / ka) on sockets"
    )
    history_page_limit: int = Field(default=200, ge=1, le=1000)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    # Presence and typing (README, "Using the GraphQL API").
    presence_heartbeat_seconds: float = Field(
        default=10.0,
        gt=0,
        le=100,
        description="how often this process renews its presence in each course it holds users "
        "of (one call per course, whatever its size); keep it a third of chat's "
        "presence_ttl_seconds or less",
    )
    presence_coalesce_seconds: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="presenceChanged sends at most one update per course per this interval, "
        "carrying every join and leave since the last one",
    )
