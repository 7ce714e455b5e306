"""A course's export as NDJSON (README, "Exporting a course"): everything the course still
keeps, read from Redis in bounded batches (`lua/export.lua`, one round trip per batch), one
JSON object per line. The chat service streams it to moderators (ExportCourse); the policy
operator writes it to a file before a TTL change deletes history.

Lines, in this order:
- `{"type": "course", "courseId", "exportedAt", "policy": {…}}`: the header; `policy` is the
  course's effective policy when the export began (the defaults under its policy hash);
- `{"type": "message", "message": {…}, "versions": […], "reactors": […]}` per message, oldest
  first (replies and tombstones too): `message` is the ChatMessage in the proto3 JSON mapping
  (every field, defaults included, so `json_format.ParseDict` reads it back, and a field
  added to the proto is exported with no change here); `versions` its earlier contents
  (MessageVersion, oldest first); `reactors` who reacted with which emoji;
- `{"type": "end", "messages": N}`: the last line. An export without it was cut short.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import Message

from nextcampus_common import scripts
from nextcampus_common.keys import POLICY_OWNER_FIELD, CourseKeys
from nextcampus_common.proto.chat.v1.chat_pb2 import MessageVersion
from nextcampus_common.records import message_from_record
from nextcampus_common.redis_cluster import ClusterClient
from nextcampus_common.settings import PolicyDefaultSettings

# Messages per Redis round trip, and the content (with earlier versions) of one batch past
# its first message: what the exporting process holds at a time, whatever the course's size.
DEFAULT_BATCH_SIZE = 200
DEFAULT_BATCH_BYTES = 1_048_576
# Bytes of lines per chunk a stream sends (a single longer line goes alone in its chunk).
DEFAULT_CHUNK_BYTES = 65_536


def proto_json(message: Message) -> dict[str, Any]:
    """A proto message in the proto3 JSON mapping, every field present (defaults too): a
    reader sees what a field says even where it is its default."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def _line(value: Mapping[str, Any]) -> str:
    return orjson.dumps(value).decode()


async def _effective_policy(
    redis: ClusterClient, keys: CourseKeys, defaults: PolicyDefaultSettings
) -> dict[str, Any]:
    """The course's policy as the chat service applies it: its hash over the defaults."""
    fields: dict[str, str] = await redis.command(keys.policy, "HGETALL", keys.policy)

    def number(name: str, default: int) -> int:
        try:
            return int(fields[name])
        except (KeyError, ValueError):
            return default

    policy: dict[str, Any] = {
        "ttlSeconds": number("ttl_seconds", defaults.default_ttl_seconds),
        "maxLength": number("max_length", defaults.default_max_length),
        "readOnly": fields.get("read_only") in ("1", "true"),
        "rateLimitMessages": number("rate_limit_messages", defaults.default_rate_limit_messages),
        "rateLimitSeconds": number("rate_limit_seconds", defaults.default_rate_limit_seconds),
        "editWindowSeconds": number("edit_window_seconds", defaults.default_edit_window_seconds),
        "schedule": orjson.loads(fields["schedule"]) if fields.get("schedule") else [],
    }
    if fields.get(POLICY_OWNER_FIELD):
        policy["owner"] = fields[POLICY_OWNER_FIELD]
    return policy


def _message_line(course_id: str, entry: Sequence[Any]) -> str:
    record, versions, reactors = entry
    earlier = [
        proto_json(MessageVersion(content=version["b"], written_at=int(version["t"])))
        for version in map(orjson.loads, versions)
    ]
    pairs = sorted(zip(reactors[::2], reactors[1::2], strict=True))
    return _line(
        {
            "type": "message",
            "message": proto_json(message_from_record(course_id, record)),
            "versions": earlier,
            "reactors": [{"userId": user, "emoji": emoji.split(" ")} for user, emoji in pairs],
        }
    )


async def export_lines(
    redis: ClusterClient,
    course_id: str,
    defaults: PolicyDefaultSettings,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    now: datetime.datetime | None = None,
) -> AsyncIterator[str]:
    """The course's export, line by line (no newlines: each item is one line's JSON)."""
    keys = CourseKeys(course_id)
    exported_at = now or datetime.datetime.now(datetime.UTC)
    yield _line(
        {
            "type": "course",
            "courseId": course_id,
            "exportedAt": exported_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "policy": await _effective_policy(redis, keys, defaults),
        }
    )
    after, count = "", 0
    while True:
        reply = await redis.script(
            scripts.EXPORT,
            [keys.messages],
            [keys.prefix, after, batch_size, batch_bytes],
            replicated=False,
        )
        has_more, last = reply[0], reply[1]
        for entry in reply[2:]:
            count += 1
            yield _message_line(course_id, entry)
        if has_more != 1 or not last:
            break
        after = last
    yield _line({"type": "end", "messages": count})


async def chunked(
    lines: AsyncIterable[str], max_bytes: int = DEFAULT_CHUNK_BYTES
) -> AsyncIterator[list[str]]:
    """Lines in chunks of at most `max_bytes` (UTF-8) each; a longer line is a chunk alone."""
    chunk: list[str] = []
    size = 0
    async for line in lines:
        length = len(line.encode())
        if chunk and size + length > max_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append(line)
        size += length
    if chunk:
        yield chunk
