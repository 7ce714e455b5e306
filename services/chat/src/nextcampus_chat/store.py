"""Messages in Redis: send, history, get, delete, edit, react, pin and threads through the
scripts of DESIGN.md §2 (README, "Data model")."""

from __future__ import annotations

import datetime
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from nextcampus_chat.errors import ChatError, Problem
from nextcampus_chat.settings import ChatSettings
from nextcampus_common import export, scripts
from nextcampus_common.course_policy import read_course_policy
from nextcampus_common.keys import CourseKeys
from nextcampus_common.proto.chat.v1.chat_pb2 import (
    ChatMessage,
    CourseEvent,
    CourseEventKind,
    CoursePolicy,
    CourseReadState,
    MessageKind,
    MessageVersion,
    PresenceMember,
)
from nextcampus_common.records import message_from_record
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
    # The cursor asked after is not in the log: a failover lost it (or it never was one).
    after_lost: bool = False


@dataclass(frozen=True, slots=True)
class PresencePage:
    online_count: int
    members: list[PresenceMember]
    has_more: bool


@dataclass(frozen=True, slots=True)
class Typing:
    published: bool
    retry_after_ms: int


@dataclass(frozen=True, slots=True)
class ThreadPage:
    root: ChatMessage
    replies: list[ChatMessage]
    has_more: bool


# The log's kinds (send.lua 'a', delete.lua 'd', retract.lua 'r', edit.lua 'e', react.lua
# 'x' added / 'y' removed, pin.lua 'p' pinned / 'q' unpinned).
EVENT_KINDS = {
    "a": CourseEventKind.MESSAGE_ADDED,
    "d": CourseEventKind.MESSAGE_DELETED,
    "r": CourseEventKind.MESSAGE_RETRACTED,
    "e": CourseEventKind.MESSAGE_EDITED,
    "x": CourseEventKind.REACTION_ADDED,
    "y": CourseEventKind.REACTION_REMOVED,
    "p": CourseEventKind.MESSAGE_PINNED,
    "q": CourseEventKind.MESSAGE_UNPINNED,
    "c": CourseEventKind.MESSAGE_RESTORED,  # relog.lua
    # question.lua
    "g": CourseEventKind.ANSWER_ENDORSED,
    "h": CourseEventKind.ANSWER_UNENDORSED,
    "s": CourseEventKind.QUESTION_RESOLVED,
    "o": CourseEventKind.QUESTION_REOPENED,
}
# What question.lua changes (its ARGV 4).
QuestionChange = Literal["endorse", "unendorse", "resolve", "reopen"]
# At most this many distinct emoji on one message, and pinned messages in one course.
MAX_REACTIONS_PER_MESSAGE = 20
MAX_PINS_PER_COURSE = 50


def _read_state(course_id: str, state: Sequence[Any]) -> CourseReadState:
    """A read state of the scripts (lua/lib/course.lua read_state)."""
    marker, unread, mentions, last_at, last_id, pseudonym = state
    return CourseReadState(
        course_id=course_id,
        last_read_message_id=marker,
        unread_count=int(unread),
        mention_count=int(mentions),
        last_message_at=int(last_at),
        last_message_id=last_id,
        pseudonym=pseudonym,
    )


def _mention_order(message: ChatMessage) -> tuple[int, str]:
    """Where a mention is in the newest-first list of all courses (ids are the primaries'
    clocks in µs; the course breaks a tie)."""
    return int(message.message_id), message.course_id


def mention_cursor(message: ChatMessage) -> str:
    return f"{message.message_id}:{message.course_id}"


def parse_mention_cursor(cursor: str) -> tuple[int, str]:
    """(message id, course id) of a ListMyMentions cursor; ValueError when it is not one."""
    message_id, sep, course_id = cursor.partition(":")
    if not sep or not message_id.isdigit() or not course_id:
        raise ValueError(cursor)
    return int(message_id), course_id


class MessageStore:
    def __init__(
        self,
        redis: ClusterClient,
        settings: ChatSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._settings = settings
        # What `policy` reports the schedule's mode for (the send script uses Redis's TIME).
        self._clock = clock

    def _now_ms(self) -> int:
        return round(self._clock() * 1000)

    async def send(
        self,
        course_id: str,
        user_id: str,
        content: str,
        client_message_id: str | None,
        *,
        reply_to: str | None = None,
        mentions: Sequence[str] = (),
        mentions_course: bool = False,
        moderator: bool = False,
        question: bool = False,
        anonymous: bool = False,
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
                keys.prefix,
                user_id,
                content,
                client_message_id,
                settings.default_ttl_seconds,
                settings.default_max_length,
                settings.default_rate_limit_messages,
                settings.default_rate_limit_seconds,
                course_id,
                reply_to or "",
                ",".join(mentions),
                "1" if mentions_course else "",
                "1" if moderator else "",
                "q" if question else "",
                "1" if anonymous else "",
                # The course's pseudonym salt, should this be its first anonymous message.
                secrets.token_hex(16) if anonymous else "",
            ],
            replicated=True,
        )
        outcome = reply[0]
        if outcome == "ok":
            _, message_id, timestamp, prev_id, root, pseudonym = reply
            message = ChatMessage(
                course_id=course_id,
                message_id=message_id,
                user_id=user_id,
                content=content,
                timestamp=int(timestamp),
                client_message_id=client_message_id,
                previous_message_id=prev_id,
                reply_to_message_id=root,
                mention_ids=mentions,
                mentions_course=mentions_course,
                kind=MessageKind.MESSAGE_KIND_QUESTION
                if question
                else MessageKind.MESSAGE_KIND_UNSPECIFIED,
                anonymous=bool(pseudonym),
                pseudonym=pseudonym,
            )
            return SendResult(message, duplicate=False)
        if outcome == "dup":
            return SendResult(message_from_record(course_id, reply[1]), duplicate=True)
        if outcome == "reply_not_found":
            raise ChatError(
                Problem.NOT_FOUND,
                f"message {reply_to} (replied to) not found in {course_id}: it may have "
                "expired, or belong to another course",
            )
        if outcome == "anonymous_disabled":
            raise ChatError(
                Problem.FAILED_PRECONDITION,
                f"course {course_id} does not allow anonymous messages (its policy's "
                "anonymousPosting is Disabled): send it under your name, or not at all",
            )
        if outcome == "reply_deleted":
            raise ChatError(
                Problem.FAILED_PRECONDITION, f"message {reply_to} was deleted: it takes no replies"
            )
        _raise_refusal(reply, course_id, "send")
        raise AssertionError("unreachable")

    async def history(
        self,
        course_id: str,
        *,
        after: str | None = None,
        before: str | None = None,
        limit: int,
        viewer: str = "",
    ) -> Page:
        """A page of the course's messages (replies too: every message is in the course's
        order); `viewer`'s own reactions marked."""
        keys = CourseKeys(course_id)
        reply = await self._redis.script(
            scripts.HISTORY,
            [keys.messages, keys.seq, keys.log],
            [
                keys.prefix,
                after or "",
                before or "",
                limit,
                self._settings.history_page_bytes,
                viewer,
            ],
            replicated=False,
        )
        if reply[0] == "ahead":
            raise ChatError(
                Problem.INVALID_ARGUMENT,
                f"after_message_id {after} is ahead of the newest message of {course_id}",
            )
        messages = [message_from_record(course_id, record) for record in reply[2:]]
        return Page(messages, reply[0] == 1, reply[1])

    async def events(self, course_id: str, *, after: str | None, limit: int) -> EventPage:
        """The course's changes after a cursor, each with its message as it is now."""
        keys = CourseKeys(course_id)
        reply = await self._redis.script(
            scripts.EVENTS,
            [keys.log],
            [keys.prefix, after or "", limit, self._settings.history_page_bytes],
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
        events = [
            CourseEvent(
                cursor=cursor,
                kind=EVENT_KINDS[kind],
                actor_user_id=actor,
                emoji=emoji,
                message=message_from_record(course_id, record),
                root=message_from_record(course_id, root) if root else None,
            )
            for cursor, kind, actor, emoji, record, root in reply[2:]
        ]
        return EventPage(events, reply[0] == 1, reply[1] == 1)

    async def relog(self, course_id: str, passed_on: Sequence[tuple[str, str]]) -> int:
        """Restore the messages of entries (cursor, message id) that streams carried and a
        failover then lost (relog.lua); returns how many MESSAGE_RESTORED entries it added."""
        keys = CourseKeys(course_id)
        flat = [value for entry in passed_on for value in entry]
        added = await self._redis.script(
            scripts.RELOG,
            [keys.log, keys.relogged],
            [keys.prefix, course_id, *flat],
            replicated=True,
        )
        return int(added)

    async def newest_event_cursor(self, course_id: str) -> str:
        """The cursor of the course's newest change ("" when its log is empty)."""
        key = CourseKeys(course_id).log
        newest = await self._redis.command(key, "XREVRANGE", key, "+", "-", "COUNT", 1)
        return str(newest[0][0]) if newest else ""

    async def get(self, course_id: str, message_id: str, *, viewer: str = "") -> ChatMessage:
        found = await self._read(course_id, message_id, viewer)
        if not found:
            raise ChatError(Problem.NOT_FOUND, f"message {message_id} not found in {course_id}")
        return found[0]

    async def pinned(self, course_id: str, *, viewer: str) -> list[ChatMessage]:
        """The course's pinned messages, the most recently pinned first."""
        return await self._read(course_id, "", viewer)

    async def _read(self, course_id: str, message_id: str, viewer: str) -> list[ChatMessage]:
        keys = CourseKeys(course_id)
        records = await self._redis.script(
            scripts.READ, [keys.pins], [keys.prefix, viewer, message_id], replicated=False
        )
        return [message_from_record(course_id, record) for record in records]

    async def thread(
        self,
        course_id: str,
        root_id: str,
        *,
        after: str | None,
        before: str | None,
        limit: int,
        viewer: str,
    ) -> ThreadPage:
        """A page of the thread of `root_id` (or of the root of the reply `root_id`)."""
        keys = CourseKeys(course_id)
        reply = await self._redis.script(
            scripts.THREAD,
            [keys.thread(root_id)],
            [
                keys.prefix,
                root_id,
                after or "",
                before or "",
                limit,
                self._settings.history_page_bytes,
                viewer,
            ],
            replicated=False,
        )
        if reply[0] == "not_found":
            raise ChatError(Problem.NOT_FOUND, f"message {root_id} not found in {course_id}")
        replies = [message_from_record(course_id, record) for record in reply[2:]]
        return ThreadPage(message_from_record(course_id, reply[1]), replies, reply[0] == 1)

    async def delete(
        self, course_id: str, message_id: str, user_id: str, *, moderator: bool
    ) -> tuple[ChatMessage, bool]:
        """Tombstone a message; returns it and whether this call changed it."""
        keys = CourseKeys(course_id)
        reply = await self._redis.script(
            scripts.DELETE,
            [keys.message(message_id), keys.events, keys.log, keys.pins, keys.policy],
            [
                user_id,
                "1" if moderator else "0",
                course_id,
                message_id,
                keys.prefix,
                self._settings.default_ttl_seconds,
            ],
            replicated=True,
        )
        if reply[0] == "forbidden":
            raise ChatError(
                Problem.PERMISSION_DENIED,
                "only the author or a moderator of the course may delete this message",
            )
        if reply[0] != "ok":
            _raise_refusal(reply, course_id, "delete", message_id)
        return message_from_record(course_id, reply[2]), reply[1] == "1"

    async def edit(
        self, course_id: str, message_id: str, user_id: str, content: str, mutation_id: str
    ) -> tuple[ChatMessage, bool]:
        """Replace the content of the author's message (edit.lua); returns the message as it
        is now and whether this call changed it."""
        keys = CourseKeys(course_id)
        settings = self._settings
        reply = await self._redis.script(
            scripts.EDIT,
            [
                keys.message(message_id),
                keys.policy,
                keys.events,
                keys.log,
                keys.edits(message_id),
                keys.action_rate(user_id),
            ],
            [
                keys.prefix,
                message_id,
                user_id,
                content,
                mutation_id,
                settings.default_edit_window_seconds,
                settings.default_max_length,
                settings.action_rate_limit_messages,
                settings.action_rate_limit_seconds,
                course_id,
            ],
            replicated=True,
        )
        return self._changed(reply, course_id, "edit", message_id)

    def export_lines(self, course_id: str) -> AsyncIterator[str]:
        """The course's export, line by line (nextcampus_common.export)."""
        settings = self._settings
        return export.export_lines(
            self._redis,
            course_id,
            settings,
            batch_size=settings.export_batch_size,
            batch_bytes=settings.history_page_bytes,
        )

    async def edit_history(self, course_id: str, message_id: str) -> list[MessageVersion]:
        key = CourseKeys(course_id).edits(message_id)
        return [
            MessageVersion(content=version["b"], written_at=int(version["t"]))
            for version in map(orjson.loads, await self._redis.command(key, "LRANGE", key, 0, -1))
        ]

    async def react(
        self,
        course_id: str,
        message_id: str,
        user_id: str,
        emoji: str,
        *,
        add: bool,
        mutation_id: str,
    ) -> tuple[ChatMessage, bool]:
        """Add or remove the user's `emoji` on a message (react.lua)."""
        keys = CourseKeys(course_id)
        settings = self._settings
        reply = await self._redis.script(
            scripts.REACT,
            [
                keys.message(message_id),
                keys.policy,
                keys.events,
                keys.log,
                keys.reactors(message_id),
                keys.action_rate(user_id),
            ],
            [
                keys.prefix,
                message_id,
                user_id,
                emoji,
                "1" if add else "0",
                mutation_id,
                MAX_REACTIONS_PER_MESSAGE,
                settings.action_rate_limit_messages,
                settings.action_rate_limit_seconds,
                course_id,
            ],
            replicated=True,
        )
        return self._changed(reply, course_id, "react", message_id)

    async def pin(
        self, course_id: str, message_id: str, user_id: str, *, pin: bool, mutation_id: str
    ) -> tuple[ChatMessage, bool]:
        """Pin or unpin a message (pin.lua); the caller moderates the course."""
        keys = CourseKeys(course_id)
        reply = await self._redis.script(
            scripts.PIN,
            [
                keys.message(message_id),
                keys.policy,
                keys.events,
                keys.log,
                keys.pins,
                keys.messages,
            ],
            [
                keys.prefix,
                message_id,
                user_id,
                "1" if pin else "0",
                mutation_id,
                MAX_PINS_PER_COURSE,
                self._settings.default_ttl_seconds,
                course_id,
            ],
            replicated=True,
        )
        return self._changed(reply, course_id, "pin", message_id)

    async def change_question(
        self,
        course_id: str,
        message_id: str,
        user_id: str,
        *,
        change: QuestionChange,
        moderator: bool,
        mutation_id: str,
    ) -> tuple[ChatMessage, bool]:
        """Endorse or un-endorse an answer, resolve or reopen a question (question.lua)."""
        keys = CourseKeys(course_id)
        settings = self._settings
        reply = await self._redis.script(
            scripts.QUESTION,
            [
                keys.message(message_id),
                keys.policy,
                keys.events,
                keys.log,
                keys.action_rate(user_id),
            ],
            [
                keys.prefix,
                message_id,
                user_id,
                change,
                mutation_id,
                settings.action_rate_limit_messages,
                settings.action_rate_limit_seconds,
                settings.default_ttl_seconds,
                course_id,
                "1" if moderator else "0",
            ],
            replicated=True,
        )
        if reply[0] == "not_answer":
            raise ChatError(
                Problem.FAILED_PRECONDITION,
                f"message {message_id} is not an answer: only replies to a question can be "
                "endorsed",
            )
        if reply[0] == "not_question":
            raise ChatError(
                Problem.FAILED_PRECONDITION,
                f"message {message_id} is not a question: only questions are resolved and reopened",
            )
        if reply[0] == "question_deleted":
            raise ChatError(
                Problem.FAILED_PRECONDITION,
                f"question {reply[1]} was deleted: its answers take no new endorsements",
            )
        if reply[0] == "forbidden":
            raise ChatError(
                Problem.PERMISSION_DENIED,
                f"only the question's author and the moderators of course {course_id} may "
                f"{change} it",
            )
        return self._changed(reply, course_id, change, message_id)

    async def questions(
        self, course_id: str, *, state: str, after: str | None, limit: int, viewer: str
    ) -> tuple[list[ChatMessage], bool]:
        """A page of the course's questions in `state` ('open', 'resolved', 'all'), the
        newest first, after the question `after`."""
        keys = CourseKeys(course_id)
        reply = await self._redis.script(
            scripts.QUESTIONS,
            [keys.open_questions, keys.resolved_questions],
            [keys.prefix, viewer, "page", state, after or "", limit],
            replicated=False,
        )
        return [message_from_record(course_id, record) for record in reply[1:]], reply[0] == 1

    async def question_texts(self, course_id: str, count: int) -> list[tuple[str, str]]:
        """(id, content) of the course's newest `count` questions, kept and not deleted."""
        keys = CourseKeys(course_id)
        flat = await self._redis.script(
            scripts.QUESTIONS,
            [keys.open_questions, keys.resolved_questions],
            [keys.prefix, "", "texts", count],
            replicated=False,
        )
        return list(zip(flat[::2], flat[1::2], strict=True))

    async def questions_by_id(
        self, course_id: str, ids: Sequence[str], *, viewer: str
    ) -> list[ChatMessage]:
        """These questions as they are now (those still kept), in this order."""
        if not ids:
            return []
        keys = CourseKeys(course_id)
        records = await self._redis.script(
            scripts.QUESTIONS,
            [keys.open_questions, keys.resolved_questions],
            [keys.prefix, viewer, "records", *ids],
            replicated=False,
        )
        return [message_from_record(course_id, record) for record in records]

    @staticmethod
    def _changed(
        reply: list[Any], course_id: str, action: str, message_id: str
    ) -> tuple[ChatMessage, bool]:
        if reply[0] == "ok":
            return message_from_record(course_id, reply[2]), reply[1] == "1"
        if reply[0] == "dup":
            return message_from_record(course_id, reply[1]), False
        _raise_refusal(reply, course_id, action, message_id)
        raise AssertionError("unreachable")

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
                message.pseudonym if message.anonymous else "",
            ]
        reply = await self._redis.script(
            scripts.RETRACT,
            [keys.messages, keys.events, keys.policy, keys.seq, keys.log],
            args,
            replicated=True,
        )
        return int(reply[0]), list(reply[1:])

    async def mark_read(self, course_id: str, user_id: str, message_id: str) -> CourseReadState:
        keys = CourseKeys(course_id)
        reply = await self._redis.script(
            scripts.MARK_READ,
            [keys.reads, keys.events],
            [keys.prefix, user_id, message_id, self._settings.default_ttl_seconds, course_id],
            replicated=True,
        )
        if reply[0] == "not_found":
            raise ChatError(
                Problem.NOT_FOUND,
                f"message {message_id} not found in {course_id}: it may have expired",
            )
        return _read_state(course_id, reply[1])

    async def read_states(self, course_ids: Sequence[str], user_id: str) -> list[CourseReadState]:
        """The user's read state in each course: one round trip per Redis node."""
        calls = []
        for course_id in course_ids:
            keys = CourseKeys(course_id)
            calls.append(([keys.reads], [keys.prefix, user_id]))
        replies = await self._redis.scripts_by_node(scripts.UNREAD, calls)
        return [_read_state(c, state) for c, state in zip(course_ids, replies, strict=True)]

    async def mentions(
        self,
        course_ids: Sequence[str],
        user_id: str,
        *,
        after: tuple[int, str] | None,
        limit: int,
    ) -> tuple[list[ChatMessage], bool]:
        """The newest messages of these courses mentioning the user (or @course) after the
        cursor `after` (newest first), and whether more exist: one round trip per node. Each
        course answers limit + 2 per index: one of them may be the cursor's own message."""
        high = str(after[0]) if after else ""
        calls = []
        for course_id in course_ids:
            keys = CourseKeys(course_id)
            calls.append(
                (
                    [keys.mentioned(user_id), keys.mentioned_course],
                    [keys.prefix, user_id, high, limit + 2],
                )
            )
        replies = await self._redis.scripts_by_node(scripts.MENTIONS, calls)
        found: dict[tuple[int, str], ChatMessage] = {}
        for course_id, indexes in zip(course_ids, replies, strict=True):
            for records in indexes:
                for record in records:
                    message = message_from_record(course_id, record)
                    found[_mention_order(message)] = message
        ordered = sorted(
            (m for key, m in found.items() if after is None or key < after),
            key=_mention_order,
            reverse=True,
        )
        return ordered[:limit], len(ordered) > limit

    async def policy(self, course_id: str) -> CoursePolicy:
        """The effective policy: the course's policy hash over the service's defaults (the
        same precedence as the send script)."""
        return await read_course_policy(self._redis, course_id, self._settings, self._now_ms())

    # -- presence and typing (presence.lua, typing.lua): not replicated-waited, short-lived --

    async def _presence(self, course_id: str, op: str, instance_id: str, *extra: str) -> Any:
        keys = CourseKeys(course_id)
        ttl_ms = round(self._settings.presence_ttl_seconds * 1000)
        return await self._redis.script(
            scripts.PRESENCE,
            [keys.presence_instances, keys.online, keys.online_since, keys.events],
            [op, keys.prefix, course_id, instance_id, ttl_ms, *extra],
            replicated=False,
        )

    async def join_presence(
        self, course_id: str, instance_id: str, user_id: str
    ) -> tuple[bool, int]:
        """`user_id` has a subscription of the course on `instance_id`: (they came online
        course-wide with it, how many are online)."""
        changed, count = await self._presence(course_id, "join", instance_id, user_id)
        return changed == 1, int(count)

    async def leave_presence(
        self, course_id: str, instance_id: str, user_id: str
    ) -> tuple[bool, int]:
        """`user_id` has no subscription of the course on `instance_id` any more: (they went
        offline course-wide with it, how many are online)."""
        changed, count = await self._presence(course_id, "leave", instance_id, user_id)
        return changed == 1, int(count)

    async def presence_heartbeat(
        self, course_id: str, instance_id: str, departed: Sequence[str]
    ) -> tuple[int, int]:
        """Keep the instance alive in the course (and reap dead ones): (users it holds, how
        many are online)."""
        held, count = await self._presence(course_id, "heartbeat", instance_id, *departed)
        return int(held), int(count)

    async def presence(self, course_id: str, *, after: str, limit: int) -> PresencePage:
        reply = await self._presence(course_id, "read", "", after, str(limit))
        pairs = reply[2:]
        members = [
            PresenceMember(user_id=pairs[i], since=int(pairs[i + 1]))
            for i in range(0, len(pairs), 2)
        ]
        return PresencePage(int(reply[0]), members, reply[1] == 1)

    async def typing(self, course_id: str, user_id: str, thread_id: str) -> Typing:
        keys = CourseKeys(course_id)
        settings = self._settings
        published, retry_after_ms = await self._redis.script(
            scripts.TYPING,
            [keys.typing(user_id), keys.events, keys.policy],
            [
                course_id,
                user_id,
                thread_id,
                round(settings.typing_throttle_seconds * 1000),
                round(settings.typing_ttl_seconds * 1000),
            ],
            replicated=False,
        )
        if published == -1:
            raise ChatError(Problem.READ_ONLY, f"course {course_id} is read-only")
        return Typing(published == 1, max(0, int(retry_after_ms)))

    async def last_sequence(self, course_id: str) -> int:
        """The course's current sequence (0 when it has none yet)."""
        key = CourseKeys(course_id).seq
        value = await self._redis.command(key, "GET", key)
        return int(value) if value else 0


def _read_only_message(course_id: str, reply: list[Any]) -> str:
    until = reply[1] if len(reply) > 1 else ""
    if not until:
        return f"course {course_id} is read-only"
    moment = datetime.datetime.fromtimestamp(int(until) / 1000, datetime.UTC)
    return (
        f"course {course_id} is read-only by its schedule until "
        f"{moment.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    )


def _raise_refusal(
    reply: list[Any], course_id: str, action: str, message_id: str | None = None
) -> None:
    """The refusals the scripts answer with, as ChatErrors a user can act on."""
    outcome = reply[0]
    if outcome == "not_found":
        raise ChatError(Problem.NOT_FOUND, f"message {message_id} not found in {course_id}")
    if outcome == "deleted":
        raise ChatError(
            Problem.FAILED_PRECONDITION,
            f"message {message_id} is deleted: a deleted message takes no changes",
        )
    if outcome == "forbidden":
        raise ChatError(Problem.PERMISSION_DENIED, f"only its author may {action} this message")
    if outcome == "read_only":
        raise ChatError(Problem.READ_ONLY, _read_only_message(course_id, reply))
    if outcome == "edits_disabled":
        raise ChatError(Problem.FAILED_PRECONDITION, f"course {course_id} does not allow edits")
    if outcome == "too_late":
        raise ChatError(
            Problem.FAILED_PRECONDITION,
            f"message {message_id} can no longer be edited: the course allows edits for "
            f"{reply[1]} s after a send",
        )
    if outcome == "too_long":
        raise ChatError(
            Problem.INVALID_ARGUMENT,
            f"content is longer than the course's limit of {reply[1]} characters",
        )
    if outcome == "too_many":
        what = "distinct reactions per message" if action == "react" else "pinned messages"
        raise ChatError(
            Problem.FAILED_PRECONDITION, f"at most {reply[1]} {what} in course {course_id}"
        )
    if outcome == "rate_limited":
        retry_after_ms = int(reply[1])
        what = "messages" if action == "send" else "changes"
        why, problem = f"too many {what}", Problem.RATE_LIMITED
        if len(reply) > 2:
            why = f"course {course_id} is in slow mode: one message per {reply[2]} s"
            problem = Problem.SLOW_MODE
        raise ChatError(
            problem,
            f"{why}; retry in {retry_after_ms / 1000:.1f} s",
            retry_after_ms=retry_after_ms,
        )
    raise RuntimeError(f"unexpected {action} script reply {reply!r}")
