"""A course's export as NDJSON (README, "Exporting a course"): everything the course still
keeps, read from Redis in bounded batches (`lua/export.lua`, one round trip per batch), one
JSON object per line. The chat service streams it to moderators (ExportCourse); the policy
operator writes it to a file before a TTL change deletes history.

Lines, in this order:
- `{"type": "course", "courseId", "exportedAt", "policy": {…}}`: the header; `policy` is the
  course's effective policy when the export began, as GetCoursePolicy answers it (the
  CoursePolicy in the proto3 JSON mapping);
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
from nextcampus_common.course_policy import read_course_policy
from nextcampus_common.keys import CourseKeys
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
            "policy": proto_json(
                await read_course_policy(
                    redis, course_id, defaults, int(exported_at.timestamp() * 1000)
                )
            ),
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
