"""The one settings object of a chat process (env vars `NEXTCAMPUS_<FIELD>`)."""

from __future__ import annotations

from pydantic import Field

from nextcampus_common.settings import (
    HeapSettings,
    HopTimingSettings,
    JwtSettings,
    PolicyDefaultSettings,
    RedisSettings,
    ServiceSettings,
)


class ChatSettings(
    ServiceSettings,
    HeapSettings,
    HopTimingSettings,
    RedisSettings,
    JwtSettings,
    PolicyDefaultSettings,
):
    grpc_host: str = "0.0.0.0"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    # Content over this many characters is refused before Redis is asked (policies can only
    # lower the limit below it).
    max_content_length: int = Field(default=16_000, ge=1)
    history_page_limit: int = Field(default=200, ge=1, le=1000)
    history_page_bytes: int = Field(
        default=1_048_576,
        ge=65_536,
        le=2_097_152,  # a page stays far below the gRPC message limit of every client
        description="content bytes of a history page past its first message: a page of large "
        "messages ends early (has_more) and the reader pages on",
    )
    stream_queue_size: int = Field(
        default=10_000, ge=1, description="messages buffered per stream before it is cut off"
    )
    stream_queue_bytes: int = Field(
        default=16_777_216,
        ge=1_048_576,
        description="bytes buffered per stream (content of queued messages) before it is cut off",
    )
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    # Course exports (ExportCourse; README, "Exporting a course").
    export_batch_size: int = Field(
        default=200,
        ge=1,
        le=1000,
        description="messages an export reads per Redis round trip (a batch also ends at "
        "history_page_bytes of content)",
    )
    export_chunk_bytes: int = Field(
        default=65_536,
        ge=1_024,
        le=1_048_576,
        description="bytes of NDJSON lines per ExportChunk (a longer line goes alone)",
    )
    # Edits, reactions and pins of one user in one course (sends have the course policy's).
    action_rate_limit_messages: int = Field(default=30, ge=0, description="0: no limit")
    action_rate_limit_seconds: int = Field(default=10, ge=1)
    # Presence and typing (README, "Data model"): short-lived state, never in the event log.
    presence_ttl_seconds: float = Field(
        default=30.0,
        ge=1,
        le=300,
        description="how long a GraphQL process's presence in a course lives without a "
        "heartbeat: a process killed without a goodbye has its users reaped after at most this "
        "plus one heartbeat of another process (GraphQL's presence_heartbeat_seconds)",
    )
    typing_throttle_seconds: float = Field(
        default=3.0,
        gt=0,
        le=60,
        description="at most one typing event per user and course per this many seconds (more are answered published=false)",
    )
    typing_ttl_seconds: float = Field(
        default=6.0,
        gt=0,
        le=120,
        description="how long a typing event stands without a renewal (subscribers drop it then)",
    )
