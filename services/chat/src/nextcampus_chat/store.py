"""Messages in Redis: send, history, get and delete through the scripts of DESIGN.md §2."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from nextcampus_chat.errors import ChatError, Problem
from nextcampus_chat.settings import ChatSettings
from nextcampus_common import scripts
from nextcampus_common.keys import MESSAGE_FIELDS, POLICY_FIELDS, CourseKeys
from nextcampus_common.proto.chat.v1.chat_pb2 import (
    ChatMessage,
    CourseEvent,
    CourseEventKind,
    CoursePolicy,
)
from nextcampus_common.redis_cluster import ClusterClient


@dataclass(frozen=True, slots=True)
class SendResult:
    message: ChatMessage
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Page:
    messages: list[ChatMessage]
    has_more: bool
    # The newest cursor of the course's event log when the page was read ("": none yet).
    event_cursor: str = ""


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[CourseEvent]
    has_more: bool


# The log's kinds (send.lua 'a', delete.lua 'd', retract.lua 'r').
EVENT_KINDS = {
    "a": CourseEventKind.MESSAGE_ADDED,
    "d": CourseEventKind.MESSAGE_DELETED,
    "r": CourseEventKind.MESSAGE_RETRACTED,
}


def _message(course_id: str, message_id: str, fields: Sequence[str]) -> ChatMessage:
    user_id, content, timestamp, deleted, client_message_id, prev_id = fields
    return ChatMessage(
        course_id=course_id,
        message_id=message_id,
        user_id=user_id,
        content=content,
        timestamp=int(timestamp),
        deleted=deleted == "1",
        client_message_id=client_message_id,
        previous_message_id=prev_id,
    )


def _int_or(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:  # a hand-edited hash: the send script falls back the same way
        return default


class MessageStore:
    def __init__(self, redis: ClusterClient, settings: ChatSettings) -> None:
        self._redis = redis
        self._settings = settings

    async def send(
        self, course_id: str, user_id: str, content: str, client_message_id: str | None
    ) -> SendResult:
        # Without a client id the send still gets one: our own retries through a failover
        # must not store it twice either.
        client_message_id = client_message_id or f"srv-{uuid.uuid4().hex}"
        keys = CourseKeys(course_id)
        settings = self._settings
        reply = await self._redis.script(
            scripts.SEND,
            [
                keys.policy,
                keys.seq,
                keys.messages,
                keys.events,
                keys.client(user_id, client_message_id),
                keys.rate(user_id),
                keys.log,
            ],
            [
                keys.message_prefix,
                user_id,
                content,
                client_message_id,
                settings.default_ttl_seconds,
                settings.default_max_length,
                settings.default_rate_limit_messages,
                settings.default_rate_limit_seconds,
                course_id,
            ],
            replicated=True,
        )
        outcome = reply[0]
        if outcome == "ok":
            _, message_id, timestamp, prev_id = reply
            fields = (user_id, content, timestamp, "0", client_message_id, prev_id)
            return SendResult(_message(course_id, message_id, fields), duplicate=False)
        if outcome == "dup":
            _, message_id, author, stored_content, timestamp, deleted, prev_id = reply
            fields = (author, stored_content, timestamp, deleted, client_message_id, prev_id)
            return SendResult(_message(course_id, message_id, fields), duplicate=True)
        if outcome == "read_only":
            raise ChatError(Problem.READ_ONLY, f"course {course_id} is read-only")
        if outcome == "too_long":
            raise ChatError(
                Problem.INVALID_ARGUMENT,
                f"content is longer than the course's limit of {reply[1]} characters",
            )
        if outcome == "rate_limited":
            retry_after_ms = int(reply[1])
            raise ChatError(
                Problem.RATE_LIMITED,
                f"too many messages; retry in {retry_after_ms / 1000:.1f} s",
                retry_after_ms=retry_after_ms,
            )
        raise RuntimeError(f"unexpected send script reply {reply!r}")

    async def history(
        self, course_id: str, *, after: str | None = None, before: str | None = None, limit: int
    ) -> Page:
        keys = CourseKeys(course_id)
        reply = await self._redis.script(
            scripts.HISTORY,
            [keys.messages, keys.seq, keys.log],
            [
                keys.message_prefix,
                after or "",
                before or "",
                limit,
                self._settings.history_page_bytes,
            ],
            replicated=False,
        )
        if reply[0] == "ahead":
            raise ChatError(
                Problem.INVALID_ARGUMENT,
                f"after_message_id {after} is ahead of the newest message of {course_id}",
            )
        has_more, event_cursor, flat = reply[0] == 1, reply[1], reply[2:]
        width = 1 + len(MESSAGE_FIELDS)
        messages = [
            _message(course_id, flat[i], flat[i + 1 : i + width])
            for i in range(0, len(flat), width)
        ]
        return Page(messages, has_more, event_cursor)

    async def events(self, course_id: str, *, after: str | None, limit: int) -> EventPage:
        """The course's changes after a cursor, each with its message as it is now."""
        keys = CourseKeys(course_id)
        reply = await self._redis.script(
            scripts.EVENTS,
            [keys.log],
            [keys.message_prefix, after or "", limit, self._settings.history_page_bytes],
            replicated=False,
        )
        if reply[0] == "ahead":
            raise ChatError(
                Problem.INVALID_ARGUMENT, f"event cursor {after} is ahead of {course_id}'s log"
            )
        if reply[0] == "stale":
            raise ChatError(
                Problem.CURSOR_EXPIRED,
                f"event cursor {after} is older than what {course_id}'s event log keeps (as "
                f"long as its messages); reload the history (ListMessages) and continue after "
                f"its event_cursor",
            )
        has_more, flat = reply[0] == 1, reply[1:]
        width = 4 + len(MESSAGE_FIELDS)
        events = [
            CourseEvent(
                cursor=flat[i],
                kind=EVENT_KINDS[flat[i + 1]],
                actor_user_id=flat[i + 3],
                message=_message(course_id, flat[i + 2], flat[i + 4 : i + width]),
            )
            for i in range(0, len(flat), width)
        ]
        return EventPage(events, has_more)

    async def newest_event_cursor(self, course_id: str) -> str:
        """The cursor of the course's newest change ("" when its log is empty)."""
        key = CourseKeys(course_id).log
        newest = await self._redis.command(key, "XREVRANGE", key, "+", "-", "COUNT", 1)
        return str(newest[0][0]) if newest else ""

    async def get(self, course_id: str, message_id: str) -> ChatMessage:
        keys = CourseKeys(course_id)
        key = keys.message(message_id)
        fields = await self._redis.command(key, "HMGET", key, *MESSAGE_FIELDS)
        if fields[0] is None:
            raise ChatError(Problem.NOT_FOUND, f"message {message_id} not found in {course_id}")
        user_id, content, timestamp, deleted, client_message_id, prev_id = fields
        return _message(
            course_id,
            message_id,
            (user_id, content, timestamp, deleted or "0", client_message_id or "", prev_id or ""),
        )

    async def delete(
        self, course_id: str, message_id: str, user_id: str, *, moderator: bool
    ) -> tuple[ChatMessage, bool]:
        """Tombstone a message; returns it and whether this call changed it."""
        keys = CourseKeys(course_id)
        reply = await self._redis.script(
            scripts.DELETE,
            [keys.message(message_id), keys.events, keys.log],
            [user_id, "1" if moderator else "0", course_id, message_id],
            replicated=True,
        )
        if reply[0] == "not_found":
            raise ChatError(Problem.NOT_FOUND, f"message {message_id} not found in {course_id}")
        if reply[0] == "forbidden":
            raise ChatError(
                Problem.PERMISSION_DENIED,
                "only the author or a moderator of the course may delete this message",
            )
        _, author, timestamp, client_message_id, changed, prev_id = reply
        fields = (author, "", timestamp, "1", client_message_id, prev_id)
        return _message(course_id, message_id, fields), changed == "1"

    async def retract(
        self, course_id: str, survivor: int, lost: Sequence[ChatMessage]
    ) -> tuple[int, list[str]]:
        """Make `lost` (messages a failover lost after they were published) retracted
        tombstones, once for all processes (retract.lua). Returns how many this call
        retracted, and the ids under which another message is stored now (which only a clock
        difference between Redis nodes beyond a failover's duration could cause)."""
        keys = CourseKeys(course_id)
        args: list[str | int] = [
            keys.message_prefix,
            course_id,
            self._settings.default_ttl_seconds,
            str(survivor) if survivor else "",
        ]
        for message in lost:
            args += [
                message.message_id,
                message.user_id,
                message.timestamp,
                message.client_message_id,
            ]
        reply = await self._redis.script(
            scripts.RETRACT,
            [keys.messages, keys.events, keys.policy, keys.seq, keys.log],
            args,
            replicated=True,
        )
        return int(reply[0]), list(reply[1:])

    async def policy(self, course_id: str) -> CoursePolicy:
        """The effective policy: the course's policy hash over the service's defaults (the
        same precedence as the send script)."""
        key = CourseKeys(course_id).policy
        ttl, max_length, read_only, rate_messages, rate_seconds = await self._redis.command(
            key, "HMGET", key, *POLICY_FIELDS
        )
        settings = self._settings
        return CoursePolicy(
            course_id=course_id,
            ttl_seconds=_int_or(ttl, settings.default_ttl_seconds),
            max_length=_int_or(max_length, settings.default_max_length),
            read_only=read_only in ("1", "true"),
            rate_limit_messages=_int_or(rate_messages, settings.default_rate_limit_messages),
            rate_limit_seconds=_int_or(rate_seconds, settings.default_rate_limit_seconds),
        )

    async def last_sequence(self, course_id: str) -> int:
        """The course's current sequence (0 when it has none yet)."""
        key = CourseKeys(course_id).seq
        value = await self._redis.command(key, "GET", key)
        return int(value) if value else 0
