"""The object types of DESIGN.md §2 and of conversations, resolved from the chat service's
protobuf messages."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import graphene
from graphql.pyutils import AwaitableOrValue

from nextcampus_common.ids import LOG_START_CURSOR
from nextcampus_common.keys import COUNT_CAP
from nextcampus_common.proto.chat.v1 import chat_pb2
from nextcampus_graphql.context import RequestContext, call_chat
from nextcampus_graphql.errors import ApiError, Code

T = TypeVar("T")

# What a field costs beyond 1 when its resolver makes a round trip of its own to the chat
# service: per message it resolves on (cost.py reads it from the field's extensions).
EDIT_HISTORY_COST = 25


def _time(milliseconds: int) -> datetime | None:
    """A protobuf time in ms (0: not set) as a DateTime."""
    return datetime.fromtimestamp(milliseconds / 1000, tz=UTC) if milliseconds else None


class Reaction(graphene.ObjectType):
    """One emoji on a message: how many users reacted with it."""

    emoji = graphene.String(required=True)
    count = graphene.Int(required=True)
    reacted_by_me = graphene.Boolean(
        required=True,
        description="whether the viewer is among them: set in queries and mutations, always "
        "false in subscriptions (their payload is the same for every subscriber)",
    )


class MessageVersion(graphene.ObjectType):
    """An earlier content of an edited message."""

    content = graphene.String(required=True)
    written_at = graphene.DateTime(
        required=True, description="when this content was sent or last edited to"
    )

    @staticmethod
    def resolve_written_at(version: chat_pb2.MessageVersion, _info: Any) -> datetime:
        return datetime.fromtimestamp(version.written_at / 1000, tz=UTC)


# The GraphQL enums' values are their names: operations.py coerces variables once and
# execution coerces the result again, which a name survives (an enum member does not).
class MessageKind(graphene.Enum):
    """What a message was sent as."""

    MESSAGE = "MESSAGE"
    QUESTION = "QUESTION"

    @property
    def description(self) -> str:
        if self == MessageKind.QUESTION:
            return "a question: its replies are its answers; open until resolved"
        return "a plain message"


class ChatMessage(graphene.ObjectType):
    course_id = graphene.ID(required=True)
    message_id = graphene.ID(required=True)
    user_id = graphene.ID(required=True)
    content = graphene.String(required=True)
    timestamp = graphene.DateTime(required=True)
    deleted = graphene.Boolean(required=True)
    previous_message_id = graphene.ID(
        description="the course's message before this one (null for the first): a gap in "
        "this chain is a message you missed; a deleted message whose id you resumed after "
        "was lost in a failover and this is the newest one that survived"
    )
    reply_to = graphene.ID(
        description="the root of the thread this message replies to (null: not a reply)"
    )
    edited_at = graphene.DateTime(description="when it was last edited (null: never)")
    reply_count = graphene.Int(
        required=True, description="on a thread's root: its replies, deleted ones included"
    )
    last_reply_at = graphene.DateTime(description="on a thread's root: its newest reply's time")
    participants = graphene.List(
        graphene.NonNull(graphene.ID),
        required=True,
        description="on a thread's root: up to 5 users who replied, the most recent first",
    )
    reactions = graphene.List(
        graphene.NonNull(Reaction),
        required=True,
        description="each distinct emoji, in the order it was first used",
    )
    pinned_at = graphene.DateTime(description="when it was pinned (null: not pinned)")
    mentions = graphene.List(
        graphene.NonNull(graphene.ID),
        required=True,
        description="the users its content mentions (`@user`), as parsed at the send",
    )
    mentions_course = graphene.Boolean(
        required=True, description="whether it mentions the whole course (`@course`)"
    )
    kind = graphene.Field(MessageKind, required=True)
    resolved_at = graphene.DateTime(
        description="on a question: when it was resolved (null: open, or not a question)"
    )
    endorsed_at = graphene.DateTime(
        description="on an answer: when a moderator endorsed it (null: not endorsed). An "
        "endorsed answer and its question do not expire while it is endorsed"
    )
    endorsed_answer_count = graphene.Int(
        required=True, description="on a question: how many of its answers are endorsed"
    )
    anonymous = graphene.Boolean(
        required=True,
        description="sent anonymously to classmates: unless you moderate the course, `userId` "
        "is the author's pseudonym (as here in `pseudonym`), and so is an event's "
        "`actorUserId` for what the author did",
    )
    pseudonym = graphene.String(
        description="of an anonymous message: its author's pseudonym in the course "
        "(`anonymous:` and 8 hex digits, never a user id; stable for the author and course)"
    )
    edit_history = graphene.List(
        graphene.NonNull(MessageVersion),
        description="earlier contents, oldest first (the current one is `content`): for the "
        "author and the course's moderators only (FORBIDDEN for others); in queries and "
        "mutations only, each one a round trip to the chat service",
    )

    @staticmethod
    def resolve_timestamp(message: chat_pb2.ChatMessage, _info: Any) -> datetime:
        return datetime.fromtimestamp(message.timestamp / 1000, tz=UTC)

    @staticmethod
    def resolve_previous_message_id(message: chat_pb2.ChatMessage, _info: Any) -> str | None:
        return message.previous_message_id or None

    @staticmethod
    def resolve_reply_to(message: chat_pb2.ChatMessage, _info: Any) -> str | None:
        return message.reply_to_message_id or None

    @staticmethod
    def resolve_edited_at(message: chat_pb2.ChatMessage, _info: Any) -> datetime | None:
        return _time(message.edited_at)

    @staticmethod
    def resolve_last_reply_at(message: chat_pb2.ChatMessage, _info: Any) -> datetime | None:
        return _time(message.last_reply_at)

    @staticmethod
    def resolve_participants(message: chat_pb2.ChatMessage, _info: Any) -> list[str]:
        return list(message.participant_ids)

    @staticmethod
    def resolve_pinned_at(message: chat_pb2.ChatMessage, _info: Any) -> datetime | None:
        return _time(message.pinned_at)

    @staticmethod
    def resolve_kind(message: chat_pb2.ChatMessage, _info: Any) -> str:
        return "QUESTION" if message.kind == chat_pb2.MESSAGE_KIND_QUESTION else "MESSAGE"

    @staticmethod
    def resolve_resolved_at(message: chat_pb2.ChatMessage, _info: Any) -> datetime | None:
        return _time(message.resolved_at)

    @staticmethod
    def resolve_endorsed_at(message: chat_pb2.ChatMessage, _info: Any) -> datetime | None:
        return _time(message.endorsed_at)

    @staticmethod
    def resolve_pseudonym(message: chat_pb2.ChatMessage, _info: Any) -> str | None:
        return message.pseudonym or None

    @staticmethod
    def resolve_mentions(message: chat_pb2.ChatMessage, _info: Any) -> list[str]:
        return list(message.mention_ids)

    @staticmethod
    def resolve_edit_history(
        message: chat_pb2.ChatMessage, info: graphene.ResolveInfo
    ) -> Awaitable[list[chat_pb2.MessageVersion]]:
        context: RequestContext | None = info.context
        if context is None:
            # A subscription's payload is rendered once for all its subscribers, without a
            # viewer (fanout.py): who may read the history is a question per viewer.
            raise ApiError(
                Code.BAD_USER_INPUT,
                "editHistory is not available in subscriptions: query the message for it",
            )
        token = context.member(message.course_id)

        async def versions() -> list[chat_pb2.MessageVersion]:
            history = await call_chat(
                context.chat.edit_history(token, message.course_id, message.message_id)
            )
            return list(history.versions)

        return versions()


class MessagePage(graphene.ObjectType):
    messages = graphene.List(graphene.NonNull(ChatMessage), required=True)
    has_more = graphene.Boolean(required=True)
    event_cursor = graphene.String(
        description="the course's newest change when this page was read: subscribe "
        "`courseEvents(after: eventCursor)` to get every change since, none missed"
    )

    @staticmethod
    def resolve_event_cursor(page: chat_pb2.ListMessagesResponse, _info: Any) -> str:
        # "" before the course's first change: then every change is one since.
        return page.event_cursor or LOG_START_CURSOR


class QuestionState(graphene.Enum):
    """Which of a course's questions to list."""

    OPEN = "OPEN"
    RESOLVED = "RESOLVED"
    ALL = "ALL"


QUESTION_STATE_OF = {
    "OPEN": chat_pb2.QUESTION_STATE_OPEN,
    "RESOLVED": chat_pb2.QUESTION_STATE_RESOLVED,
    "ALL": chat_pb2.QUESTION_STATE_ALL,
}


class QuestionPage(graphene.ObjectType):
    questions = graphene.List(
        graphene.NonNull(ChatMessage),
        required=True,
        description="the newest first; kept and not deleted",
    )
    has_more = graphene.Boolean(
        required=True, description="older questions exist: ask again with `after` the last one"
    )


class SimilarQuestion(graphene.ObjectType):
    """An earlier question of the course that looks like the text."""

    question = graphene.Field(ChatMessage, required=True)
    score = graphene.Float(
        required=True,
        description="how alike, 0..1 (cosine similarity of character 2-3-gram TF-IDF vectors)",
    )


class ThreadPage(graphene.ObjectType):
    root = graphene.Field(
        ChatMessage, required=True, description="a tombstone when deleted: its thread stays"
    )
    replies = graphene.List(
        graphene.NonNull(ChatMessage), required=True, description="oldest to newest"
    )
    has_more = graphene.Boolean(required=True)


class CourseMode(graphene.Enum):
    """What a course takes now: its policy's own rules, nothing new (an archived course or
    a read-only window such as an exam), or one message per user per slowModeSeconds."""

    OPEN = "OPEN"
    READ_ONLY = "READ_ONLY"
    SLOW_MODE = "SLOW_MODE"


_MODES = {
    chat_pb2.COURSE_MODE_OPEN: CourseMode.OPEN,
    chat_pb2.COURSE_MODE_READ_ONLY: CourseMode.READ_ONLY,
    chat_pb2.COURSE_MODE_SLOW: CourseMode.SLOW_MODE,
}


def _mode(mode: int) -> Any:
    return _MODES.get(chat_pb2.CourseMode.ValueType(mode))


class ScheduleWindow(graphene.ObjectType):
    """A window of the course's schedule: weekly (days, startTime-endTime) or dated
    (start-end), in the local time of timeZone."""

    mode = graphene.Field(CourseMode, required=True, description="READ_ONLY or SLOW_MODE")
    slow_mode_seconds = graphene.Int(description="SLOW_MODE only")
    time_zone = graphene.String(required=True, description="IANA, such as Europe/Berlin")
    days = graphene.List(
        graphene.NonNull(graphene.String), required=True, description="weekly: Mon … Sun"
    )
    start_time = graphene.String(description="weekly: local HH:MM")
    end_time = graphene.String(description="weekly: local HH:MM or 24:00")
    start = graphene.String(description="dated: local YYYY-MM-DDTHH:MM")
    end = graphene.String(description="dated: local YYYY-MM-DDTHH:MM")

    @staticmethod
    def resolve_mode(window: chat_pb2.ScheduleWindow, _info: Any) -> Any:
        return _mode(window.mode)

    @staticmethod
    def resolve_slow_mode_seconds(window: chat_pb2.ScheduleWindow, _info: Any) -> int | None:
        return window.slow_mode_seconds or None

    @staticmethod
    def resolve_start_time(window: chat_pb2.ScheduleWindow, _info: Any) -> str | None:
        return window.start_time or None

    @staticmethod
    def resolve_end_time(window: chat_pb2.ScheduleWindow, _info: Any) -> str | None:
        return window.end_time or None

    @staticmethod
    def resolve_start(window: chat_pb2.ScheduleWindow, _info: Any) -> str | None:
        return window.start or None

    @staticmethod
    def resolve_end(window: chat_pb2.ScheduleWindow, _info: Any) -> str | None:
        return window.end or None


class AnonymousPosting(graphene.Enum):
    """Whether a course's members may send anonymously (its CourseChatPolicy's
    `anonymousPosting`)."""

    DISABLED = "DISABLED"
    TO_CLASSMATES = "TO_CLASSMATES"

    @property
    def description(self) -> str:
        if self == AnonymousPosting.TO_CLASSMATES:
            return (
                "members may send anonymously: other students see a pseudonym, the course's "
                "moderators see the author"
            )
        return "every message shows its author"


class CoursePolicy(graphene.ObjectType):
    """The effective policy of a course: its CourseChatPolicy over the service defaults."""

    course_id = graphene.ID(required=True)
    ttl_seconds = graphene.Int(required=True)
    max_length = graphene.Int(required=True)
    read_only = graphene.Boolean(required=True)
    rate_limit_messages = graphene.Int(required=True, description="per user; 0: no limit")
    rate_limit_seconds = graphene.Int(required=True)
    edit_window_seconds = graphene.Int(
        required=True, description="how long after a send its author may edit it; 0: never"
    )
    mode = graphene.Field(
        CourseMode, required=True, description="the mode now, readOnly and schedule applied"
    )
    mode_ends_at = graphene.DateTime(
        description="when the schedule ends the current mode (null: it does not, within the "
        "days the schedule is known ahead)"
    )
    slow_mode_seconds = graphene.Int(description="in SLOW_MODE: seconds between two messages")
    next_mode = graphene.Field(CourseMode, description="the mode from modeEndsAt on")
    schedule = graphene.List(
        graphene.NonNull(ScheduleWindow),
        required=True,
        description="the windows of the course's CourseChatPolicy schedule",
    )
    anonymous_posting = graphene.Field(
        AnonymousPosting,
        required=True,
        description="whether members may send anonymously to classmates",
    )

    @staticmethod
    def resolve_anonymous_posting(policy: chat_pb2.CoursePolicy, _info: Any) -> Any:
        if policy.anonymous_posting == chat_pb2.ANONYMOUS_POSTING_TO_CLASSMATES:
            return AnonymousPosting.TO_CLASSMATES
        return AnonymousPosting.DISABLED

    @staticmethod
    def resolve_mode(policy: chat_pb2.CoursePolicy, _info: Any) -> Any:
        return _mode(policy.mode) or CourseMode.OPEN

    @staticmethod
    def resolve_mode_ends_at(policy: chat_pb2.CoursePolicy, _info: Any) -> datetime | None:
        return _time(policy.mode_ends_at)

    @staticmethod
    def resolve_slow_mode_seconds(policy: chat_pb2.CoursePolicy, _info: Any) -> int | None:
        return policy.slow_mode_seconds or None

    @staticmethod
    def resolve_next_mode(policy: chat_pb2.CoursePolicy, _info: Any) -> Any:
        return _mode(policy.next_mode)


class MentionPage(graphene.ObjectType):
    messages = graphene.List(
        graphene.NonNull(ChatMessage),
        required=True,
        description="messages of all your courses that mention you or @course, newest first",
    )
    has_more = graphene.Boolean(required=True)
    end_cursor = graphene.String(description="pass as `after` for the next (older) page")

    @staticmethod
    def resolve_end_cursor(page: chat_pb2.ListMyMentionsResponse, _info: Any) -> str | None:
        return page.end_cursor or None


def _count_description(what: str) -> str:
    return (
        f"{what} after your read marker (kept, not deleted, not your own): exact below "
        f"{COUNT_CAP}; {COUNT_CAP} means {COUNT_CAP} or more"
    )


class MyCourse(graphene.ObjectType):
    """One course of the viewer, with where the viewer is in it."""

    course_id = graphene.ID(required=True)
    moderator = graphene.Boolean(required=True, description="whether you moderate it")
    unread_count = graphene.Int(required=True, description=_count_description("messages"))
    mention_count = graphene.Int(
        required=True, description=_count_description("messages mentioning you or @course")
    )
    last_read_message_id = graphene.ID(
        description="your read marker (null before your first markRead or send)"
    )
    last_message_id = graphene.ID(description="the course's newest kept message")
    last_message_at = graphene.DateTime(description="its time (null: no message kept)")
    pseudonym = graphene.String(
        description="your own pseudonym in the course: how your anonymous messages show to "
        "those who do not moderate it (null while the course has had no anonymous message)"
    )

    @staticmethod
    def resolve_moderator(course: CourseState, _info: Any) -> bool:
        return course.moderator

    # Each answers at once from a state already known (markRead, myUpdates: no coroutine to
    # run for every field of every update), or once the viewer's read states are fetched.
    @staticmethod
    def resolve_unread_count(course: CourseState, _info: Any) -> AwaitableOrValue[int]:
        return course.of_state(lambda state: state.unread_count)

    @staticmethod
    def resolve_mention_count(course: CourseState, _info: Any) -> AwaitableOrValue[int]:
        return course.of_state(lambda state: state.mention_count)

    @staticmethod
    def resolve_last_read_message_id(
        course: CourseState, _info: Any
    ) -> AwaitableOrValue[str | None]:
        return course.of_state(lambda state: state.last_read_message_id or None)

    @staticmethod
    def resolve_last_message_id(course: CourseState, _info: Any) -> AwaitableOrValue[str | None]:
        return course.of_state(lambda state: state.last_message_id or None)

    @staticmethod
    def resolve_last_message_at(
        course: CourseState, _info: Any
    ) -> AwaitableOrValue[datetime | None]:
        return course.of_state(lambda state: _time(state.last_message_at))

    @staticmethod
    def resolve_pseudonym(course: CourseState, _info: Any) -> AwaitableOrValue[str | None]:
        return course.of_state(lambda state: state.pseudonym or None)


class ReadStates:
    """The viewer's read state in every course, fetched once, on the first field that needs
    it (GetMyCourses: one round trip to Redis per node, however many courses)."""

    def __init__(self, context: RequestContext, token: str) -> None:
        self._context = context
        self._token = token
        self._fetched: asyncio.Task[dict[str, chat_pb2.CourseReadState]] | None = None

    async def _fetch(self) -> dict[str, chat_pb2.CourseReadState]:
        answer = await call_chat(self._context.chat.my_courses(self._token))
        return {state.course_id: state for state in answer.courses}

    async def of(self, course_id: str) -> chat_pb2.CourseReadState:
        if self._fetched is None:
            self._fetched = asyncio.ensure_future(self._fetch())
        states = await self._fetched
        return states.get(course_id) or chat_pb2.CourseReadState(course_id=course_id)


@dataclass(frozen=True, slots=True)
class CourseState:
    """What MyCourse resolves from: a course of the token and where to get its read state."""

    course_id: str
    moderator: bool
    states: ReadStates | None = None
    known: chat_pb2.CourseReadState | None = None  # already fetched (markRead answers it)

    def of_state(self, field: Callable[[chat_pb2.CourseReadState], T]) -> AwaitableOrValue[T]:
        """`field` of the course's read state: now when it is known, else once fetched."""
        if self.known is not None:
            return field(self.known)
        states = self.states
        assert states is not None

        async def fetched() -> T:
            return field(await states.of(self.course_id))

        return fetched()


class MyUpdate(graphene.ObjectType):
    """News of one of your courses (`myUpdates`)."""

    course = graphene.Field(MyCourse, required=True, description="your read state in it now")
    mentions = graphene.List(
        graphene.NonNull(ChatMessage),
        required=True,
        description="messages mentioning you (or @course) since the course's previous "
        "update, oldest first",
    )
    cursor = graphene.String(
        required=True,
        description="resume with `myUpdates(after:)` and the cursor of the last update you "
        "received: every mention since comes first, none twice",
    )


class Viewer(graphene.ObjectType):
    user_id = graphene.ID(required=True)
    course_ids = graphene.List(
        graphene.NonNull(graphene.ID), required=True, description="the token's courses, sorted"
    )
    courses = graphene.List(
        graphene.NonNull(MyCourse),
        required=True,
        description="the token's courses with your read state in each: the counts of all of "
        "them in one round trip",
    )
    moderates = graphene.List(graphene.NonNull(graphene.ID), required=True)


class ExportChunk(graphene.ObjectType):
    """Consecutive lines of a course's export (`exportCourse`; README, "Exporting a
    course"): each line one JSON object, the first the course's header, the last
    `{"type":"end","messages":N}`."""

    lines = graphene.List(
        graphene.NonNull(graphene.String),
        required=True,
        description="NDJSON lines without their newlines, in order",
    )
