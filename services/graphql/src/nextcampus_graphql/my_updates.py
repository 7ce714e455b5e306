"""`myUpdates`: one viewer's news across every course of their token (README, "Read state,
unread counts and mentions").

A subscription watches each of its courses' shared SubscribeEvents stream (the ONE stream
per course per process that `courseEvents`, `presenceChanged` and `typingChanged` use:
upstream.py `watch`), starting from its counts as the store has them (GetMyCourses). A new
message is counted here, as the store counts it: another's adds one unread (and one mention
when it mentions the viewer or @course), the viewer's own marks the course read; one the
counts already hold (its id at or below their newest message) adds nothing. What cannot be
counted here — a deletion, a retraction, a restored message, the viewer's own read marker
moving (an ephemeral notice naming the user, made by MarkRead through any process) — makes
the next update read the course's counts from the store again. A changed course is sent at
most once per `interval` seconds, with the mentions since its previous update; the courses
due together that must be read again are read in one GetMyCourses.

Resuming loses no mention. Each update's `cursor` says, per course, the id up to which every
mention was delivered (or came before the subscription); `myUpdates(after: cursor)` first
sends the mentions above those ids (ListMyMentions), then goes on live, nothing twice.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import time
from dataclasses import dataclass, field
from inspect import isawaitable

import grpc
import orjson
from graphql import ExecutionResult, GraphQLSchema

from nextcampus_common.auth import Identity
from nextcampus_common.chat_api import ChatApi
from nextcampus_common.ids import InvalidId, check_course_id
from nextcampus_common.keys import COUNT_CAP
from nextcampus_common.logs import get_logger
from nextcampus_common.proto.chat.v1.chat_pb2 import ChatMessage, CourseEvent, CourseReadState
from nextcampus_common.proto.chat.v1.chat_pb2 import CourseEventKind as Kind
from nextcampus_graphql.errors import ApiError, Code, from_grpc
from nextcampus_graphql.fanout import Member
from nextcampus_graphql.operations import Operation, execute_event, format_result
from nextcampus_graphql.schema.types import CourseState
from nextcampus_graphql.upstream import Joined, UpstreamHub

log = get_logger(__name__)

# Resuming replays at most this many pages of mentions (ListMyMentions' largest): older ones
# are in `myMentions`.
MAX_REPLAY_PAGES = 10


def encode_cursor(positions: dict[str, int]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(positions)).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, int]:
    """{course id: message id} of a cursor an update gave; BAD_USER_INPUT for anything else."""
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(raw, dict):
            raise TypeError
        return {
            check_course_id(course): int(position)
            for course, position in raw.items()
            if isinstance(position, int) and position >= 0
        }
    except (ValueError, TypeError, binascii.Error, InvalidId):
        raise ApiError(
            Code.BAD_USER_INPUT, "after must be the cursor of an update myUpdates sent"
        ) from None


def mentions(message: ChatMessage, user_id: str) -> bool:
    return message.user_id != user_id and (
        message.mentions_course or user_id in message.mention_ids
    )


@dataclass(eq=False)
class CourseNews:
    """What one course has to tell the viewer since its last update."""

    # Every mention of the course up to this id was sent (or came before the subscription).
    position: int = 0
    newest: int = 0  # the newest message id the watch passed on
    # Mentions a resume replayed from the store: the stream may bring them again.
    replayed: set[int] = field(default_factory=set)
    changed: bool = False
    # The counts as last known (None before the first read), and whether they must be read
    # from the store again before the next update.
    state: CourseReadState | None = None
    stale: bool = False
    mentions: dict[int, ChatMessage] = field(default_factory=dict)  # by id, oldest first
    sent_at: float = float("-inf")  # monotonic
    timer: asyncio.TimerHandle | None = None


@dataclass(frozen=True, slots=True)
class Update:
    """The root value of one `myUpdates` payload."""

    course: CourseState
    mentions: list[ChatMessage]
    cursor: str


class MyUpdates:
    """One `myUpdates` subscription of one socket."""

    def __init__(
        self,
        hub: UpstreamHub,
        schema: GraphQLSchema,
        operation: Operation,
        member: Member,
        identity: Identity,
        token: str,
        interval: float,
    ) -> None:
        self._hub = hub
        self._chat: ChatApi = hub.chat
        self._schema = schema
        self._operation = operation
        self._member = member
        self._identity = identity
        self._token = token
        self._interval = interval
        self._courses: dict[str, CourseNews] = {}
        self._joined: list[Joined] = []
        self._due: set[str] = set()
        self._reading: set[str] = set()  # taken for an update whose counts are being read
        self._sending: asyncio.Task[None] | None = None
        self._started = False  # every course's first update sent
        self._ended = False

    @property
    def user_id(self) -> str:
        return self._identity.user_id

    async def start(self, after: dict[str, int] | None) -> None:
        """Watch every course, then send each course's state (with the mentions since
        `after`, when resuming)."""
        course_ids = sorted(self._identity.courses | self._identity.moderates)
        for course_id in course_ids:
            self._courses[course_id] = CourseNews()
        try:
            watched = await asyncio.gather(
                *(
                    self._hub.watch(
                        c,
                        self._member,
                        functools.partial(self._on_event, c),
                        moderator=self._identity.may_moderate(c),
                    )
                    for c in course_ids
                ),
                return_exceptions=True,
            )
            self._joined += [w for w in watched if isinstance(w, Joined)]  # stop() leaves them
            for failed in watched:
                if isinstance(failed, BaseException):
                    raise failed
            if after is not None:
                await self._replay(after)
            states = await self._read_states(course_ids)
        except BaseException:
            self.stop()
            raise
        for course_id in course_ids:
            # Mentions up to the newest message now were replayed, have come live since the
            # watch began (they are in this first update), or came before the subscription.
            news, state = self._courses[course_id], states[course_id]
            news.position = max(news.position, int(state.last_message_id or 0))
            news.state = state
            # A change while starting may or may not be in these counts: the update after
            # the first reads them again.
            stale, news.stale = news.stale, False
            await self._send(course_id, self._take(course_id)[1])
            news.stale = news.stale or stale
        self._started = True
        for course_id, news in self._courses.items():
            if news.stale or news.changed:
                self.changed(course_id)

    def stop(self) -> None:
        self._ended = True
        for joined in self._joined:
            joined.leave()
        self._joined.clear()
        for news in self._courses.values():
            if news.timer is not None:
                news.timer.cancel()
        if self._sending is not None:
            self._sending.cancel()

    async def _replay(self, after: dict[str, int]) -> None:
        """The mentions above the cursor's ids, from the store (the newest pages only)."""
        floor = min((after[c] for c in self._courses if c in after), default=None)
        if floor is None:
            return
        cursor = ""
        for _ in range(MAX_REPLAY_PAGES):
            try:
                page = await self._chat.my_mentions(
                    self._token, after=cursor or None, limit=self._hub.page_limit
                )
            except grpc.aio.AioRpcError as exc:
                raise from_grpc(exc) from None
            for message in page.messages:
                news = self._courses.get(message.course_id)
                message_id = int(message.message_id)
                if news is not None and message_id > after.get(message.course_id, message_id):
                    news.mentions[message_id] = message
                    news.replayed.add(message_id)
            if not page.has_more or not page.messages or int(page.messages[-1].message_id) <= floor:
                break
            cursor = page.end_cursor

    async def _read_states(self, course_ids: list[str]) -> dict[str, CourseReadState]:
        try:
            answer = await self._chat.my_courses(self._token, course_ids)
        except grpc.aio.AioRpcError as exc:
            raise from_grpc(exc) from None
        return {state.course_id: state for state in answer.courses}

    # -- live ------------------------------------------------------------------------------

    def _on_event(self, course_id: str, event: CourseEvent) -> None:
        news = self._courses[course_id]
        kind, message = event.kind, event.message
        if kind == Kind.MESSAGE_ADDED:
            message_id = int(message.message_id)
            news.newest = max(news.newest, message_id)
            fresh = message_id not in news.replayed
            if fresh and not message.deleted and mentions(message, self.user_id):
                news.mentions[message_id] = message
            if message.anonymous and message.user_id == message.pseudonym:
                # Its author is hidden from this view: it may be the viewer's own (which
                # marks the course read), so the store counts it.
                news.stale = True
            else:
                self._count(news, message)
        elif kind in (Kind.MESSAGE_DELETED, Kind.MESSAGE_RETRACTED):
            news.mentions.pop(int(message.message_id), None)  # gone before its update
            news.stale = True
        elif kind == Kind.READ_STATE_CHANGED:
            if event.actor_user_id != self.user_id:
                return
            news.stale = True
        elif kind == Kind.MESSAGE_RESTORED:
            news.stale = True
        else:
            return  # edits, reactions, pins: no count changes
        if course_id in self._reading:
            news.stale = True  # the counts being read may or may not hold it: read again
        self.changed(course_id)

    def _count(self, news: CourseNews, message: ChatMessage) -> None:
        """A new message, counted as the store counts it (lua/lib/course.lua read_state)."""
        state = news.state
        if state is None:  # before the first read, which may or may not hold it
            news.stale = True
            return
        if int(message.message_id) <= int(state.last_message_id or 0):
            return  # the counts hold it already
        state.last_message_id = message.message_id
        state.last_message_at = message.timestamp
        if message.user_id == self.user_id:  # sending marks the course read
            state.last_read_message_id = message.message_id
            state.unread_count = state.mention_count = 0
        elif not message.deleted:
            state.unread_count = min(COUNT_CAP, state.unread_count + 1)
            if mentions(message, self.user_id):
                state.mention_count = min(COUNT_CAP, state.mention_count + 1)

    def changed(self, course_id: str) -> None:
        """The course's counts may have changed: send it once its interval since the last
        update has passed."""
        news = self._courses[course_id]
        news.changed = True
        if self._ended or not self._started:
            return  # every course's first update comes first: `start` looks again then
        if news.timer is not None or course_id in self._due or course_id in self._reading:
            return  # already on its way; one being read is looked at again once sent
        delay = news.sent_at + self._interval - time.monotonic()
        loop = asyncio.get_running_loop()
        news.timer = loop.call_later(max(0.0, delay), self._make_due, course_id)

    def _make_due(self, course_id: str) -> None:
        self._courses[course_id].timer = None
        self._due.add(course_id)
        if self._sending is None or self._sending.done():
            self._sending = asyncio.create_task(self._send_due(), name="myUpdates")

    async def _send_due(self) -> None:
        """Send every course that is due; those whose counts must be read again are read in
        one call."""
        while self._due and not self._ended:
            due = sorted(self._due)
            self._due.clear()
            # What the updates will say they delivered, fixed before the read.
            taken = {c: self._take(c) for c in due}
            stale = [c for c in due if self._courses[c].stale]
            if stale:
                for course_id in stale:
                    self._courses[course_id].stale = False
                self._reading.update(stale)
                try:
                    states = await self._read_states(stale)
                except ApiError as exc:
                    log.info("myUpdates: counts unavailable; trying again", error=exc.message)
                    self._reading.clear()
                    for course_id, (_, found) in taken.items():
                        news = self._courses[course_id]
                        news.mentions = {int(m.message_id): m for m in found} | news.mentions
                        news.stale = course_id in stale or news.stale
                        news.sent_at = time.monotonic()
                        self.changed(course_id)
                    return
                self._reading.clear()
                for course_id in stale:
                    self._courses[course_id].state = states[course_id]
            for course_id, (newest, found) in taken.items():
                news = self._courses[course_id]
                news.position = max(news.position, newest)
                await self._send(course_id, found)
                if news.changed:  # more came meanwhile: the next update, an interval on
                    self.changed(course_id)

    def _take(self, course_id: str) -> tuple[int, list[ChatMessage]]:
        """The course's news so far (its newest message id, the mentions, oldest first),
        taken for an update."""
        news = self._courses[course_id]
        found, news.mentions = news.mentions, {}
        news.changed = False
        return news.newest, [found[i] for i in sorted(found)]

    async def _send(self, course_id: str, found: list[ChatMessage]) -> None:
        news = self._courses[course_id]
        news.sent_at = time.monotonic()
        assert news.state is not None
        state = CourseReadState()
        state.CopyFrom(news.state)  # as it is now: later messages change news.state
        cursor = encode_cursor({c: n.position for c, n in self._courses.items()})
        update = Update(
            CourseState(course_id, self._identity.may_moderate(course_id), known=state),
            found,
            cursor,
        )
        result = execute_event(self._schema, self._operation, update)
        if isawaitable(result):
            result = await result
        assert isinstance(result, ExecutionResult)
        if not self._ended:
            payload = orjson.dumps(format_result(result))
            self._member.sink.write_frame(self._member.frame(payload))


class ViewerUpdates:
    """Starts each `myUpdates` subscription of this process and ends them all at shutdown."""

    def __init__(self, hub: UpstreamHub, schema: GraphQLSchema, *, interval: float) -> None:
        self._hub = hub
        self._schema = schema
        self._interval = interval
        self._running: set[MyUpdates] = set()

    async def subscribe(
        self,
        operation: Operation,
        member: Member,
        identity: Identity,
        token: str,
        after: str | None,
    ) -> Joined:
        positions = decode_cursor(after) if after else None
        updates = MyUpdates(
            self._hub, self._schema, operation, member, identity, token, self._interval
        )
        await updates.start(positions)
        self._running.add(updates)

        def leave() -> None:
            updates.stop()
            self._running.discard(updates)

        return Joined(leave)

    def close(self) -> None:
        for updates in list(self._running):
            updates.stop()
        self._running.clear()
