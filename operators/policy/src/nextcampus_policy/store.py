"""The Redis side of a course policy: its hash (`course:{id}:policy`) and the expiry of the
course's messages. Every write is one Lua script on the course's primary; re-timing walks
the course index in batches (DESIGN.md §2: never KEYS)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from nextcampus_common import export, scripts
from nextcampus_common.keys import POLICY_RETIME_PENDING_FIELD, CourseKeys
from nextcampus_common.redis_cluster import ClusterClient, RedisUnavailable
from nextcampus_common.settings import PolicyDefaultSettings

__all__ = ["PolicyStore", "RedisUnavailable", "Retimed", "Written"]


@dataclass(frozen=True, slots=True)
class Written:
    changed: bool  # the hash was not already exactly this
    previous_ttl_seconds: int | None  # what the hash said before (None: no TTL in it)
    retime_pending: bool  # the TTL changed now, or an earlier re-time was cut short


@dataclass(frozen=True, slots=True)
class Retimed:
    retimed: int  # messages that now expire at timestamp + TTL
    removed: int  # messages whose new expiry had passed: gone now
    batches: int


class PolicyStore:
    def __init__(self, redis: ClusterClient, *, retime_batch_size: int = 500) -> None:
        self._redis = redis
        self._batch_size = retime_batch_size
        self._started = False
        self._start_lock = asyncio.Lock()

    async def _ready(self) -> None:
        # Connect on first use, not at start-up: an operator whose Redis is down still runs,
        # reports RedisUnavailable on its policies and retries.
        async with self._start_lock:
            if not self._started:
                await self._redis.start()
                self._started = True

    async def close(self) -> None:
        await self._redis.close()

    async def read(self, course_id: str) -> dict[str, str]:
        await self._ready()
        key = CourseKeys(course_id).policy
        fields: dict[str, str] = await self._redis.command(key, "HGETALL", key)
        return fields

    async def write(self, course_id: str, fields: dict[str, str]) -> Written:
        """Make the policy hash exactly `fields` (empty: remove it)."""
        await self._ready()
        key = CourseKeys(course_id).policy
        flat = [item for pair in sorted(fields.items()) for item in pair]
        changed, previous, pending = await self._redis.script(
            scripts.POLICY, [key], flat, replicated=True
        )
        return Written(bool(int(changed)), int(previous) if previous else None, bool(int(pending)))

    async def has_history(self, course_id: str) -> bool:
        """Whether the course's index lists any message (some may have expired)."""
        await self._ready()
        index = CourseKeys(course_id).messages
        return bool(await self._redis.command(index, "EXISTS", index))

    async def export_lines(
        self, course_id: str, defaults: PolicyDefaultSettings
    ) -> AsyncIterator[str]:
        """The course's export, line by line (nextcampus_common.export)."""
        await self._ready()
        async for line in export.export_lines(self._redis, course_id, defaults):
            yield line

    async def retime(self, course_id: str, ttl_seconds: int) -> Retimed:
        """Every message of the course expires at its timestamp + `ttl_seconds` (and goes now
        where that has passed); then the policy's re-time marker is cleared."""
        await self._ready()
        keys = CourseKeys(course_id)
        after, retimed, removed, batches = "-inf", 0, 0, 0
        while True:
            batch_retimed, batch_removed, last, done = await self._redis.script(
                scripts.RETIME,
                [keys.messages, keys.pins, keys.endorsed],
                [
                    keys.prefix,
                    keys.client_prefix,
                    ttl_seconds * 1000,
                    after,
                    self._batch_size,
                ],
                replicated=True,
            )
            retimed += int(batch_retimed)
            removed += int(batch_removed)
            batches += 1
            if int(done) or not last:
                # Done: the marker goes (and with it a hash that held nothing else).
                policy = keys.policy
                await self._redis.command(policy, "HDEL", policy, POLICY_RETIME_PENDING_FIELD)
                return Retimed(retimed, removed, batches)
            after = f"({last}"
