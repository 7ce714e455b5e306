"""ONE upstream stream per course, kind and view per process, shared by every local
subscription of the course with that view (DESIGN.md §3, hop 2):

- `MessageUpstream`: `SubscribeMessages`, for `messageAdded` and `messageDeleted`;
- `EventUpstream`: `SubscribeEvents`, the course's event log (every change), for
  `courseEvents`.

Views (README, "Anonymous to classmates"): the chat service shows each caller the authors of
anonymous messages only in courses they moderate. So a course's moderators and its other
members share no stream, no fan-out group and no rendered payload: each view has streams of its
own, opened with the token of a subscriber of that view only, and the real author of an
anonymous message never reaches a member's stream, let alone their socket.

A stream is opened on first use with the token of a current subscriber of its view (any
member of a course may read it; chat checks) and remembers its position: the last message id, or event
cursor, it passed on. When it breaks — a chat pod restarting, a token expiring — it reopens,
round-robin on another pod, after that position; what comes again at or below it is
dropped, so every subscriber sees each event once, in order. It closes when the last
subscriber leaves.

A subscription with `after` catches up on its own: it joins the stream (buffering), reads
what came after `after` with its own token (ListMessages, ListEvents), drains the buffer
dropping what it already sent, and only then joins its fan-out group — in one step, so
nothing falls between.

Messages go to every fan-out group of the course marked as added (a new id) or not (a live
tombstone of an earlier message): `messageAdded` takes the added ones, `messageDeleted` the
tombstones. Every `courseEvents` group takes every event of the log.

`presenceChanged` and `typingChanged` ride the same `SubscribeEvents` stream (opened with
`ephemeral`): its events without a cursor are a course's typing and presence (never in the
log, never replayed), turned into updates by `ephemeral.py` and written as ephemeral frames,
which a socket with a backlog skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import grpc
from graphql import GraphQLSchema
from prometheus_client import Gauge

from nextcampus_common.chat_api import ChatApi, stream_live_after, stream_live_cursor
from nextcampus_common.ids import LOG_START_CURSOR, event_cursor_key
from nextcampus_common.logs import get_logger
from nextcampus_common.proto.chat.v1.chat_pb2 import ChatMessage, CourseEvent, CourseEventKind
from nextcampus_graphql.ephemeral import (
    PresenceCoalescer,
    PresenceUpdate,
    TypingBoard,
    TypingUpdate,
)
from nextcampus_graphql.errors import ApiError, Code, from_grpc, from_grpc_events
from nextcampus_graphql.fanout import Group, Member
from nextcampus_graphql.metrics import GraphqlMetrics
from nextcampus_graphql.operations import FanoutKey, Operation
from nextcampus_graphql.schema.events import TYPE_OF_KIND
from nextcampus_graphql.schema.subscriptions import (
    COURSE_EVENTS,
    EVENT_STREAM_FIELDS,
    MESSAGE_ADDED,
    MESSAGE_DELETED,
    MY_UPDATES,
    PRESENCE_CHANGED,
    TYPING_CHANGED,
)

log = get_logger(__name__)

# Codes after which reopening the stream (with another token, on another pod) can work.
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNAUTHENTICATED,  # the token expired: the next one is another's
}

Item = TypeVar("Item")  # what a catch-up buffers
# Where a stream is in its course's order: a message id, or an event cursor's key.
Position = TypeVar("Position", int, tuple[int, int])


@dataclass(eq=False)
class CatchUp(Generic[Item, Position]):
    """Events that arrive while one subscription replays what it missed."""

    member: Member
    buffer: list[Item] = field(default_factory=list)
    # What it replayed can be ahead of the live stream: the subscription joins its group only
    # once the stream has passed the last position it replayed, or that event would come
    # twice.
    until: Position | None = None
    caught_up: asyncio.Event = field(default_factory=asyncio.Event)


class Watch:
    """One socket's own listener on a course's SubscribeEvents stream (`myUpdates`, which is
    per viewer): every change of the log and every read-marker notice, unrendered, to
    `on_event`. It sits among the course's fan-out groups and is dispatched to like one."""

    field_name = MY_UPDATES

    def __init__(
        self,
        key: FanoutKey,
        member: Member,
        on_event: Callable[[CourseEvent], None],
        on_empty: Callable[[Watch], None],
    ) -> None:
        self.key = key
        self.members: dict[Member, None] = {member: None}
        self._on_event = on_event
        self._on_empty = on_empty

    def publish(self, event: Any, **_when: Any) -> None:
        self._on_event(
            event
        )  # only event streams have watches: a CourseEvent  # only SubscribeMessages streams have watches: a ChatMessage

    def remove(self, member: Member) -> None:
        self.members.pop(member, None)
        if not self.members:
            self._on_empty(self)


class CourseUpstream(ABC, Generic[Item, Position]):
    """The upstream stream of one course and every local subscription of it: in fan-out
    groups, catching up, or waiting for the stream to be live."""

    rpc: ClassVar[str]

    def __init__(self, hub: UpstreamHub, course_id: str, moderators: bool) -> None:
        self.hub = hub
        self.course_id = course_id
        self.moderators = moderators  # the view: its subscribers moderate the course, or not
        self.groups: dict[FanoutKey, Group | Watch] = {}
        self.catching_up: set[CatchUp[Item, Position]] = set()
        self.waiting: set[Member] = set()  # joined, waiting for the stream to be live
        self.position: Position | None = None  # the last one passed on
        self.live = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    # -- what a kind of stream does its own way --------------------------------------------

    @abstractmethod
    def open(self, token: str) -> grpc.aio.UnaryStreamCall:
        """The stream: after `position` once there is one, else live only."""

    @abstractmethod
    async def went_live(self, call: grpc.aio.UnaryStreamCall) -> Position:
        """Wait until `call` is live: the position it carries everything after."""

    @abstractmethod
    def dispatch(self, item: Any) -> None:
        """Pass one item of the stream on: to the catch-ups' buffers and the groups."""

    @abstractmethod
    def error(self, exc: grpc.aio.AioRpcError) -> ApiError:
        """The GraphQL error of a call of this kind."""

    @abstractmethod
    async def replay(self, catch_up: CatchUp[Item, Position], group: Group, after: str) -> None:
        """Send one subscription what came after `after`, until it can join `group` live."""

    @abstractmethod
    def streams_gauge(self) -> Gauge:
        """The metric that counts streams of this kind."""

    def welcome(self, group: Group, member: Member) -> None:
        """A subscription just joined `group` live: what it should have at once."""

    def closed(self) -> None:
        """The stream is dropped: stop whatever it keeps running."""

    # -- members ---------------------------------------------------------------------------

    def members(self) -> list[Member]:
        found = [m for g in self.groups.values() for m in g.members]
        found += [c.member for c in self.catching_up]
        found += list(self.waiting)
        return found

    def is_empty(self) -> bool:
        return not (self.groups or self.catching_up or self.waiting)

    def _token(self) -> str | None:
        """The token of the member whose token lives longest (None when nobody is left)."""
        now = time.time()
        best = max(
            (m for m in self.members() if m.sink.expires_at > now),
            key=lambda m: m.sink.expires_at,
            default=None,
        )
        return best.sink.token if best is not None else None

    # -- events ----------------------------------------------------------------------------

    def _buffer(self, item: Item | None) -> None:
        """Keep `item` (None: nothing to pass on, the position moved) for every catch-up, and
        wake those the stream has now caught up with."""
        assert self.position is not None
        for catch_up in self.catching_up:
            if item is not None:
                catch_up.buffer.append(item)
            if catch_up.until is not None and self.position >= catch_up.until:
                catch_up.caught_up.set()

    async def _until_passed(self, catch_up: CatchUp[Item, Position], position: Position) -> None:
        """Wait (bounded) until the stream has passed `position`; the caller drains the
        buffer then."""
        catch_up.until = position
        catch_up.caught_up.clear()
        try:
            await asyncio.wait_for(catch_up.caught_up.wait(), self.hub.live_timeout_seconds)
        except TimeoutError:
            raise ApiError(Code.UNAVAILABLE, "the course stream fell behind") from None

    async def run(self) -> None:
        metrics = self.hub.metrics
        gauge = self.streams_gauge()
        gauge.inc()
        backoff = 0.05
        try:
            while not self.is_empty():
                token = self._token()
                if token is None:
                    await asyncio.sleep(0.1)
                    continue
                call = self.open(token)
                try:
                    live_after = await self.went_live(call)
                    if self.position is None:
                        self.position = live_after
                    self.live.set()
                    backoff = 0.05
                    async for item in call:
                        self.dispatch(item)
                    code = grpc.StatusCode.OK  # chat never ends a stream on its own
                except grpc.aio.AioRpcError as exc:
                    code = exc.code()
                    if code not in RETRYABLE:
                        self.fail(self.error(exc))
                        return
                finally:
                    call.cancel()
                metrics.upstream_reconnects.labels(code.name).inc()
                log.info(
                    "upstream stream ended; reopening",
                    rpc=self.rpc,
                    course_id=self.course_id,
                    code=code.name,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
        finally:
            gauge.dec()

    def fail(self, error: ApiError) -> None:
        """The course cannot be streamed (chat refused it): end every subscription of it."""
        formatted = [{"message": error.message, "extensions": error.extensions}]
        for member in self.members():
            member.sink.operation_failed(member.operation_id, formatted)
        self.groups.clear()
        self.catching_up.clear()
        self.waiting.clear()
        self.hub.drop(self)


def _takes(group: Group | Watch, message: ChatMessage, *, added: bool) -> bool:
    """`added`: the message is new to the course's stream (not a later tombstone of one it
    passed on before). `messageAdded` takes every new message (a tombstone when it was
    deleted before it came), `messageDeleted` every tombstone."""
    if group.field_name == MESSAGE_ADDED:
        return added
    return group.field_name == MESSAGE_DELETED and message.deleted


class MessageUpstream(CourseUpstream[tuple[ChatMessage, bool], int]):
    """`SubscribeMessages` of one course: new messages and tombstones, by message id."""

    rpc = "SubscribeMessages"

    def streams_gauge(self) -> Gauge:
        return self.hub.metrics.upstream_streams

    def open(self, token: str) -> grpc.aio.UnaryStreamCall:
        after = str(self.position) if self.position is not None else None
        return self.hub.chat.subscribe(token, self.course_id, after)

    async def went_live(self, call: grpc.aio.UnaryStreamCall) -> int:
        return await stream_live_after(call)

    def error(self, exc: grpc.aio.AioRpcError) -> ApiError:
        return from_grpc(exc)

    def dispatch(self, item: Any) -> None:
        message: ChatMessage = item
        hops = self.hub.metrics.hops
        hops.passed("graphql_upstream", message.content)
        message_id = int(message.message_id)
        if self.position is None or message_id > self.position:
            # A new id: an added message (one deleted meanwhile arrives as its tombstone).
            self.position = message_id
            added = True
        elif message.deleted:
            added = False  # a live tombstone of an earlier message
        else:
            return  # replayed after a reopen: already passed on
        self._buffer((message, added))
        for group in list(self.groups.values()):
            if group.members and _takes(group, message, added=added):
                group.publish(message, occurred_at_ms=message.timestamp)
        hops.passed("graphql_written", message.content)

    async def replay(
        self, catch_up: CatchUp[tuple[ChatMessage, bool], int], group: Group, after: str
    ) -> None:
        member = catch_up.member

        def send(message: ChatMessage) -> None:
            member.sink.write_frame(member.frame(group.render(message)))

        assert self.position is not None
        last_sent = int(after)
        # Join only once the stream has passed this id: what it dispatches from then on is new.
        # A page that starts with tombstones at or below `after` retracts messages a Redis
        # failover lost (`after` among them): they will never pass the stream, so wait only
        # for the newest message that survived (their previous id).
        wait_for = last_sent
        token = member.sink.token
        while True:
            try:
                page = await self.hub.chat.history(
                    token, self.course_id, after=str(last_sent), limit=self.hub.page_limit
                )
            except grpc.aio.AioRpcError as exc:
                raise from_grpc(exc) from None
            for message in page.messages:
                send(message)
                message_id = int(message.message_id)
                if message_id <= last_sent:
                    wait_for = min(wait_for, int(message.previous_message_id or 0))
                else:
                    last_sent = wait_for = message_id
            if not page.has_more:
                break

        def drain(last_sent: int) -> int:
            buffered, catch_up.buffer = catch_up.buffer, []
            for message, added in buffered:
                if added and int(message.message_id) > last_sent:
                    send(message)
                    last_sent = int(message.message_id)
            return last_sent

        last_sent = drain(last_sent)
        while self.position < min(wait_for, last_sent):
            await self._until_passed(catch_up, min(wait_for, last_sent))
            last_sent = drain(last_sent)


def _known(event: CourseEvent) -> bool:
    """Whether the schema has a type for the event's kind: a newer chat service may log kinds
    this process does not know yet (a rolling update); those are skipped, logged."""
    if event.kind in TYPE_OF_KIND:
        return True
    log.warning("course event of an unknown kind skipped", kind=event.kind, cursor=event.cursor)
    return False


class EventUpstream(CourseUpstream[CourseEvent, tuple[int, int]]):
    """`SubscribeEvents` of one course: every change of its event log, by cursor."""

    rpc = "SubscribeEvents"

    def __init__(self, hub: UpstreamHub, course_id: str, moderators: bool) -> None:
        super().__init__(hub, course_id, moderators)
        self.cursor: str | None = None  # the last cursor passed on ("": none, the log was empty)
        self.presence = PresenceCoalescer(
            course_id, hub.presence_coalesce_seconds, self._publish_presence
        )
        self.typing = TypingBoard(course_id, self._publish_typing)

    def streams_gauge(self) -> Gauge:
        return self.hub.metrics.upstream_event_streams

    def open(self, token: str) -> grpc.aio.UnaryStreamCall:
        # Reopened after an empty log: from its start, since "" would mean live only.
        after = None if self.cursor is None else self.cursor or LOG_START_CURSOR
        return self.hub.chat.subscribe_events(token, self.course_id, after, ephemeral=True)

    async def went_live(self, call: grpc.aio.UnaryStreamCall) -> tuple[int, int]:
        cursor = await stream_live_cursor(call)
        if self.cursor is None:
            self.cursor = cursor
        return event_cursor_key(cursor)

    def error(self, exc: grpc.aio.AioRpcError) -> ApiError:
        return from_grpc_events(exc)

    def dispatch(self, item: Any) -> None:
        event: CourseEvent = item
        if not event.cursor:
            self._ephemeral(event)
            return
        position = event_cursor_key(event.cursor)
        if self.position is not None and position <= self.position:
            return  # again after a reopen: already passed on
        self.position, self.cursor = position, event.cursor
        if not _known(event):
            self._buffer(None)
            return
        self._buffer(event)
        if event.kind == CourseEventKind.MESSAGE_ADDED:
            self.typing.stopped(event.actor_user_id)  # what they typed is here
        for group in list(self.groups.values()):
            if group.field_name in (COURSE_EVENTS, MY_UPDATES):
                group.publish(event, occurred_at_ms=position[0])  # the log's clock at it

    def _ephemeral(self, event: CourseEvent) -> None:
        if event.kind == CourseEventKind.TYPING:
            self.typing.typing(event.actor_user_id, event.typing.thread_id, event.typing.ttl_ms)
        elif event.kind == CourseEventKind.PRESENCE_CHANGED:
            self.presence.add(event.presence)
        elif event.kind == CourseEventKind.READ_STATE_CHANGED:
            for group in list(self.groups.values()):
                if group.field_name == MY_UPDATES:
                    group.publish(event)
        # Another kind: a newer chat service's; nothing here knows what to make of it.

    def _publish_ephemeral(self, field_name: str, update: Any) -> None:
        for group in list(self.groups.values()):
            if group.field_name == field_name:
                group.publish(update, ephemeral=True)

    def _publish_presence(self, update: PresenceUpdate) -> None:
        self._publish_ephemeral(PRESENCE_CHANGED, update)

    def _publish_typing(self, update: TypingUpdate) -> None:
        self._publish_ephemeral(TYPING_CHANGED, update)

    def welcome(self, group: Group, member: Member) -> None:
        """A `typingChanged` subscriber learns at once who is typing (when anyone is)."""
        if group.field_name == TYPING_CHANGED and self.typing.typists:
            frame = member.frame(group.render(self.typing.update()))
            if not member.sink.write_ephemeral(frame):
                self.hub.metrics.ephemeral_dropped.inc()

    def closed(self) -> None:
        self.presence.close()
        self.typing.close()

    async def replay(
        self, catch_up: CatchUp[CourseEvent, tuple[int, int]], group: Group, after: str
    ) -> None:
        member = catch_up.member

        def send(event: CourseEvent) -> None:
            member.sink.write_frame(member.frame(group.render(event)))

        cursor = after
        token = member.sink.token
        while True:
            try:
                page = await self.hub.chat.events(
                    token, self.course_id, after=cursor, limit=self.hub.page_limit
                )
            except grpc.aio.AioRpcError as exc:
                raise from_grpc_events(exc) from None
            for event in page.events:
                cursor = event.cursor
                if _known(event):
                    send(event)
            if not page.has_more:
                break

        def drain(last_sent: tuple[int, int]) -> tuple[int, int]:
            buffered, catch_up.buffer = catch_up.buffer, []
            for event in buffered:
                position = event_cursor_key(event.cursor)
                if position > last_sent:
                    send(event)
                    last_sent = position
            return last_sent

        last_sent = drain(event_cursor_key(cursor))
        assert self.position is not None
        while self.position < last_sent:
            await self._until_passed(catch_up, last_sent)
            last_sent = drain(last_sent)


class Joined:
    """What a socket holds for one subscription operation: `leave()` ends it."""

    def __init__(self, leave: Callable[[], None]) -> None:
        self.leave = leave


class UpstreamHub:
    def __init__(
        self,
        chat: ChatApi,
        schema: GraphQLSchema,
        metrics: GraphqlMetrics,
        *,
        history_page_limit: int,
        live_timeout_seconds: float,
        presence_coalesce_seconds: float = 1.0,
    ) -> None:
        self.chat = chat
        self.presence_coalesce_seconds = presence_coalesce_seconds
        self.schema = schema
        self.metrics = metrics
        self.page_limit = history_page_limit
        self.live_timeout_seconds = live_timeout_seconds
        # (rpc, course id, moderators' view) → its stream
        self.streams: dict[tuple[str, str, bool], CourseUpstream[Any, Any]] = {}

    def _of_kind(self, rpc: str, moderators: bool) -> dict[str, CourseUpstream[Any, Any]]:
        return {c: s for (r, c, m), s in self.streams.items() if r == rpc and m == moderators}

    def courses(self, *, moderators: bool = False) -> dict[str, CourseUpstream[Any, Any]]:
        """The courses' SubscribeMessages streams of one view, by course id."""
        return self._of_kind(MessageUpstream.rpc, moderators)

    def course_logs(self, *, moderators: bool = False) -> dict[str, CourseUpstream[Any, Any]]:
        """The courses' SubscribeEvents streams of one view, by course id."""
        return self._of_kind(EventUpstream.rpc, moderators)

    def _course(
        self, kind: type[CourseUpstream[Any, Any]], course_id: str, moderators: bool
    ) -> CourseUpstream[Any, Any]:
        key = (kind.rpc, course_id, moderators)
        course = self.streams.get(key)
        if course is None:
            course = self.streams[key] = kind(self, course_id, moderators)
        return course

    @staticmethod
    def _key(course: CourseUpstream[Any, Any]) -> tuple[str, str, bool]:
        return (course.rpc, course.course_id, course.moderators)

    def drop(self, course: CourseUpstream[Any, Any]) -> None:
        key = self._key(course)
        if self.streams.get(key) is course:
            del self.streams[key]
        course.closed()
        if course.task is not None and course.task is not asyncio.current_task():
            course.task.cancel()

    def _leave_if_empty(self, course: CourseUpstream[Any, Any]) -> None:
        if course.is_empty():
            self.drop(course)

    def _group(self, course: CourseUpstream[Any, Any], operation: Operation) -> Group:
        key = operation.fanout_key()
        group = course.groups.get(key)
        assert not isinstance(group, Watch)  # a watch's key is no operation's
        if group is None:

            def on_empty(empty: Group) -> None:
                if course.groups.get(empty.key) is empty:
                    del course.groups[empty.key]
                self._leave_if_empty(course)

            group = Group(key, operation, self.schema, self.metrics, on_empty)
            course.groups[key] = group
        return group

    async def _until_live(self, course: CourseUpstream[Any, Any], member: Member) -> None:
        """Wait (bounded) until the course's stream is live, `member` among those waiting
        (its token may open the stream); the caller takes it out of `waiting`."""
        course.waiting.add(member)
        if course.task is None:
            course.task = asyncio.create_task(
                course.run(),
                name=f"upstream {course.rpc} {course.course_id}"
                + (" moderators" if course.moderators else ""),
            )
        try:
            await asyncio.wait_for(course.live.wait(), self.live_timeout_seconds)
        except TimeoutError:
            raise ApiError(Code.UNAVAILABLE, "the chat service is unreachable") from None
        if self.streams.get(self._key(course)) is not course:  # failed meanwhile
            raise ApiError(Code.UNAVAILABLE, "the course stream ended; subscribe again")

    async def watch(
        self,
        course_id: str,
        member: Member,
        on_event: Callable[[CourseEvent], None],
        *,
        moderator: bool,
    ) -> Joined:
        """Pass every change of the course's shared SubscribeEvents stream (of the member's
        view: `moderator` of the course or not), and its read-marker notices, to `on_event`,
        from the moment this returns."""
        course = self._course(EventUpstream, course_id, moderator)
        key: FanoutKey = (MY_UPDATES, course_id, str(id(member)).encode())
        try:
            await self._until_live(course, member)
        except BaseException:
            course.waiting.discard(member)
            self._leave_if_empty(course)
            raise
        course.waiting.discard(member)

        def on_empty(empty: Watch) -> None:
            if course.groups.get(empty.key) is empty:
                del course.groups[empty.key]
            self._leave_if_empty(course)

        watch = course.groups[key] = Watch(key, member, on_event, on_empty)
        return Joined(lambda: watch.remove(member))

    async def join(
        self,
        operation: Operation,
        member: Member,
        course_id: str,
        after: str | None,
        *,
        moderator: bool,
    ) -> Joined:
        """Add one subscription to its course's fan-out of its view (`moderator` of the course
        or not); with `after` (a message id, or for `courseEvents` an event cursor), replay
        first."""
        kind = (
            EventUpstream
            if operation.root_field.name.value in EVENT_STREAM_FIELDS
            else MessageUpstream
        )
        course = self._course(kind, course_id, moderator)
        catch_up: CatchUp[Any, Any] | None = None
        group: Group | None = None
        joined = False
        try:
            await self._until_live(course, member)
            group = self._group(course, operation)
            if after is not None:
                catch_up = CatchUp(member)
                course.catching_up.add(catch_up)
                course.waiting.discard(member)
                await course.replay(catch_up, group, after)
                course.catching_up.discard(catch_up)
            course.waiting.discard(member)
            group.add(member)  # no await since the replay's last step: nothing falls between
            joined = True
            course.welcome(group, member)
        finally:
            if not joined:
                course.waiting.discard(member)
                if catch_up is not None:
                    course.catching_up.discard(catch_up)
                if (
                    group is not None
                    and not group.members
                    and course.groups.get(group.key) is group
                ):
                    del course.groups[group.key]
                self._leave_if_empty(course)

        self.metrics.subscriptions.inc()

        def leave() -> None:
            assert group is not None
            self.metrics.subscriptions.dec()
            group.remove(
                member
            )  # an empty group removes itself (and then an empty course's stream)

        return Joined(leave)

    async def close(self) -> None:
        for course in list(self.streams.values()):
            self.drop(course)
            if course.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await course.task
