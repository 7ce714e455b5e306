"""ONE upstream `SubscribeMessages` stream per course per process, shared by every local
subscription of the course (DESIGN.md §3, hop 2).

The stream is opened on first use with the token of a current subscriber (any member of a
course may read it; chat checks), remembers the last message id it passed on, and when it
breaks — a chat pod restarting, a token expiring — reopens, round-robin on another pod,
with `after_message_id` = that id. Ids at or below it are dropped, so every subscriber sees
each message once, in order. It closes when the last subscriber leaves.

A subscription with `after` catches up on its own: it joins the stream (buffering), reads
the history after `after` with its own token, drains the buffer dropping ids it already
sent, and only then joins its fan-out group — in one step, so nothing falls between.

Every event goes to every fan-out group of the course, marked as added (a new id) or not (a
live tombstone of an earlier message): each group takes the events its field stands for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from graphql import GraphQLSchema

from nextcampus_common.chat_api import ChatApi, stream_live_after
from nextcampus_common.logs import get_logger
from nextcampus_common.proto.chat.v1.chat_pb2 import ChatMessage
from nextcampus_graphql.errors import ApiError, Code, from_grpc
from nextcampus_graphql.fanout import Group, Member
from nextcampus_graphql.metrics import GraphqlMetrics
from nextcampus_graphql.operations import Operation

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


@dataclass(eq=False)
class CatchUp:
    """Events that arrive while one subscription replays history."""

    member: Member
    buffer: list[tuple[ChatMessage, bool]] = field(default_factory=list)
    # History can be ahead of the live stream: the subscription joins its group only once
    # stream has passed the last id it replayed, or that message would come twice.
    until: int | None = None
    caught_up: asyncio.Event = field(default_factory=asyncio.Event)


class CourseUpstream:
    """The upstream stream of one course and every local subscription of it: in fan-out
    groups, catching up on history, or waiting for the stream to be live."""

    def __init__(self, hub: UpstreamHub, course_id: str) -> None:
        self.hub = hub
        self.course_id = course_id
        self.groups: dict[tuple[str, str | None, bytes], Group] = {}
        self.catching_up: set[CatchUp] = set()
        self.waiting: set[Member] = set()  # joined, waiting for the stream to be live
        self.last_id: int | None = None
        self.live = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

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

    def dispatch(self, message: ChatMessage) -> None:
        message_id = int(message.message_id)
        if self.last_id is None or message_id > self.last_id:
            # A new id: an added message (one deleted meanwhile arrives as its tombstone).
            self.last_id = message_id
            added = True
        elif message.deleted:
            added = False  # a live tombstone of an earlier message
        else:
            return  # replayed after a reopen: already passed on
        for catch_up in self.catching_up:
            catch_up.buffer.append((message, added))
            if catch_up.until is not None and self.last_id >= catch_up.until:
                catch_up.caught_up.set()
        for group in list(self.groups.values()):
            group.publish(message, added=added)

    async def run(self) -> None:
        metrics = self.hub.metrics
        metrics.upstream_streams.inc()
        backoff = 0.05
        try:
            while not self.is_empty():
                token = self._token()
                if token is None:
                    await asyncio.sleep(0.1)
                    continue
                after = str(self.last_id) if self.last_id is not None else None
                call = self.hub.chat.subscribe(token, self.course_id, after)
                try:
                    live_after = await stream_live_after(call)
                    if self.last_id is None:
                        self.last_id = live_after
                    self.live.set()
                    backoff = 0.05
                    async for message in call:
                        self.dispatch(message)
                    code = grpc.StatusCode.OK  # chat never ends a stream on its own
                except grpc.aio.AioRpcError as exc:
                    code = exc.code()
                    if code not in RETRYABLE:
                        self.fail(from_grpc(exc))
                        return
                finally:
                    call.cancel()
                metrics.upstream_reconnects.labels(code.name).inc()
                log.info(
                    "upstream stream ended; reopening", course_id=self.course_id, code=code.name
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
        finally:
            metrics.upstream_streams.dec()

    def fail(self, error: ApiError) -> None:
        """The course cannot be streamed (chat refused it): end every subscription of it."""
        formatted = [{"message": error.message, "extensions": error.extensions}]
        for member in self.members():
            member.sink.operation_failed(member.operation_id, formatted)
        self.groups.clear()
        self.catching_up.clear()
        self.waiting.clear()
        self.hub.drop(self)


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
    ) -> None:
        self.chat = chat
        self.schema = schema
        self.metrics = metrics
        self._page_limit = history_page_limit
        self._live_timeout = live_timeout_seconds
        self.courses: dict[str, CourseUpstream] = {}

    def _course(self, course_id: str) -> CourseUpstream:
        course = self.courses.get(course_id)
        if course is None:
            course = self.courses[course_id] = CourseUpstream(self, course_id)
        return course

    def drop(self, course: CourseUpstream) -> None:
        if self.courses.get(course.course_id) is course:
            del self.courses[course.course_id]
        if course.task is not None and course.task is not asyncio.current_task():
            course.task.cancel()

    def _leave_if_empty(self, course: CourseUpstream) -> None:
        if course.is_empty():
            self.drop(course)

    def _group(self, course: CourseUpstream, operation: Operation) -> Group:
        key = operation.fanout_key()
        group = course.groups.get(key)
        if group is None:

            def on_empty(empty: Group) -> None:
                if course.groups.get(empty.key) is empty:
                    del course.groups[empty.key]
                self._leave_if_empty(course)

            group = Group(key, operation, self.schema, self.metrics, on_empty)
            course.groups[key] = group
        return group

    async def join(
        self,
        operation: Operation,
        member: Member,
        course_id: str,
        after: str | None,
    ) -> Joined:
        """Add one subscription to its course's fan-out; with `after`, replay first."""
        course = self._course(course_id)
        course.waiting.add(member)
        if course.task is None:
            course.task = asyncio.create_task(course.run(), name=f"upstream {course_id}")
        catch_up: CatchUp | None = None
        group: Group | None = None
        joined = False
        try:
            try:
                await asyncio.wait_for(course.live.wait(), self._live_timeout)
            except TimeoutError:
                raise ApiError(Code.UNAVAILABLE, "the chat service is unreachable") from None
            if self.courses.get(course_id) is not course:  # failed meanwhile
                raise ApiError(Code.UNAVAILABLE, "the course stream ended; subscribe again")
            group = self._group(course, operation)
            if after is not None:
                catch_up = CatchUp(member)
                course.catching_up.add(catch_up)
                course.waiting.discard(member)
                await self._replay(course, catch_up, group, int(after))
                course.catching_up.discard(catch_up)
            course.waiting.discard(member)
            group.add(member)  # no await since the replay's last step: nothing falls between
            joined = True
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

    async def _replay(
        self,
        course: CourseUpstream,
        catch_up: CatchUp,
        group: Group,
        after: int,
    ) -> None:
        member = catch_up.member

        def send(message: ChatMessage) -> None:
            member.sink.write_frame(member.frame(group.render(message)))

        assert course.last_id is not None
        last_sent = after
        # Join only once the stream has passed this id: what it dispatches from then on is new.
        # A page that starts with tombstones at or below `after` retracts messages a Redis
        # failover lost (`after` among them): they will never pass the stream, so wait only
        # for the newest message that survived (their previous id).
        wait_for = after
        token = catch_up.member.sink.token
        while True:
            try:
                page = await self.chat.history(
                    token, course.course_id, after=str(last_sent), limit=self._page_limit
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
        while course.last_id < min(wait_for, last_sent):
            catch_up.until = min(wait_for, last_sent)
            catch_up.caught_up.clear()
            try:
                await asyncio.wait_for(catch_up.caught_up.wait(), self._live_timeout)
            except TimeoutError:
                raise ApiError(Code.UNAVAILABLE, "the course stream fell behind") from None
            last_sent = drain(last_sent)

    async def close(self) -> None:
        for course in list(self.courses.values()):
            self.drop(course)
            if course.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await course.task
