"""This process's part of presence (README, "Data model"): which users hold a subscription of
which course here, told to the chat service once per change and kept alive by a heartbeat per
course, never per user.

- A user's first subscription of a course on this process joins (`JoinPresence` with their
  own token); their last one's end leaves (`LeavePresence`, same token: a socket closed at its
  token's expiry is still inside the verifier's leeway). A leave that cannot be made with the
  user's token goes with the course's next heartbeat (`departed_user_ids`).
- Changes of one course are made in batches, one call per user at a time, so a join and the
  leave right after it reach the store in that order.
- Every `presence_heartbeat_seconds` each course with users here gets ONE `PresenceHeartbeat`
  with the token of a current subscriber. Its answer says how many users the store holds for
  this process; should that differ from what was confirmed (Redis lost writes in a failover,
  or this process was paused past the TTL and reaped), every user here joins again.
- The instance id is random per process and never leaves the cluster: a process that dies
  without a goodbye is simply never renewed, and the store reaps its users after the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from nextcampus_common.chat_api import MAX_DEPARTED_PER_HEARTBEAT, ChatApi
from nextcampus_common.logs import get_logger
from nextcampus_graphql.metrics import GraphqlMetrics
from nextcampus_graphql.upstream import Joined

log = get_logger(__name__)

# Users of one course whose joins or leaves are made at once.
SYNC_BATCH = 32
# Courses whose heartbeats are sent at once.
HEARTBEAT_BATCH = 32
# How long a shutdown waits for the last leaves to be made.
CLOSE_SECONDS = 2.0
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
}


class Holder(Protocol):
    """The socket a subscription lives on, as presence sees it."""

    token: str
    expires_at: float


@dataclass(slots=True)
class LocalUser:
    subscriptions: int
    token: str
    expires_at: float


@dataclass(eq=False)
class CoursePresence:
    course_id: str
    users: dict[str, LocalUser] = field(default_factory=dict)  # subscribed here now
    confirmed: set[str] = field(default_factory=set)  # joined in the store
    dirty: set[str] = field(default_factory=set)  # to join or leave
    leave_tokens: dict[str, str] = field(default_factory=dict)  # of users who just left
    departed: set[str] = field(default_factory=set)  # leaves for the next heartbeat
    retry: set[str] = field(default_factory=set)  # joins that failed: with the next heartbeat
    syncing: asyncio.Task[None] | None = None

    def is_idle(self) -> bool:
        return not (self.users or self.confirmed or self.dirty or self.departed or self.retry)

    def token(self) -> str | None:
        """The current subscriber's token that lives longest."""
        now = time.time()
        best = max(
            (u for u in self.users.values() if u.expires_at > now),
            key=lambda u: u.expires_at,
            default=None,
        )
        return best.token if best is not None else None


class PresenceTracker:
    def __init__(
        self,
        chat: ChatApi,
        metrics: GraphqlMetrics,
        *,
        heartbeat_seconds: float,
        instance_id: str | None = None,
    ) -> None:
        self.chat = chat
        self.metrics = metrics
        self.heartbeat_seconds = heartbeat_seconds
        self.instance_id = instance_id or uuid.uuid4().hex
        self.courses: dict[str, CoursePresence] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._checked_ttl = False  # against the chat service's TTL, at the first heartbeat

    # -- subscriptions ---------------------------------------------------------------------

    def holding(self, joined: Joined, course_id: str, user_id: str, holder: Holder) -> Joined:
        """`joined` (a subscription of the course) counted for the user's presence until it
        leaves."""
        self.enter(course_id, user_id, holder.token, holder.expires_at)
        left = False

        def leave() -> None:
            nonlocal left
            joined.leave()
            if not left:
                left = True
                self.exit(course_id, user_id)

        return Joined(leave)

    def enter(self, course_id: str, user_id: str, token: str, expires_at: float) -> None:
        course = self.courses.get(course_id)
        if course is None:
            course = self.courses[course_id] = CoursePresence(course_id)
            self.metrics.presence_courses.set(len(self.courses))
        local = course.users.get(user_id)
        if local is None:
            course.users[user_id] = LocalUser(1, token, expires_at)
            course.leave_tokens.pop(user_id, None)
            self._changed(course, user_id)
            return
        local.subscriptions += 1
        if expires_at > local.expires_at:
            local.token, local.expires_at = token, expires_at

    def exit(self, course_id: str, user_id: str) -> None:
        course = self.courses.get(course_id)
        local = course.users.get(user_id) if course is not None else None
        if course is None or local is None:
            return
        local.subscriptions -= 1
        if local.subscriptions > 0:
            return
        del course.users[user_id]
        course.leave_tokens[user_id] = local.token
        self._changed(course, user_id)

    def online_here(self, course_id: str) -> set[str]:
        course = self.courses.get(course_id)
        return set(course.users) if course is not None else set()

    # -- telling the store -----------------------------------------------------------------

    def _changed(self, course: CoursePresence, user_id: str) -> None:
        course.dirty.add(user_id)
        if course.syncing is None:
            course.syncing = asyncio.get_running_loop().create_task(
                self._sync(course), name=f"presence {course.course_id}"
            )

    async def _sync(self, course: CoursePresence) -> None:
        try:
            while course.dirty:
                batch = [course.dirty.pop() for _ in range(min(SYNC_BATCH, len(course.dirty)))]
                await asyncio.gather(*(self._sync_user(course, user) for user in batch))
        finally:
            course.syncing = None
            self._forget_if_idle(course)

    async def _sync_user(self, course: CoursePresence, user_id: str) -> None:
        local = course.users.get(user_id)
        if local is not None and user_id not in course.confirmed:
            try:
                await self.chat.join_presence(local.token, course.course_id, self.instance_id)
            except grpc.aio.AioRpcError as exc:
                self._failed("join", course, user_id, exc)
                if exc.code() in RETRYABLE:
                    course.retry.add(user_id)
                return
            course.confirmed.add(user_id)
            self.metrics.presence_calls.labels("join", "ok").inc()
        elif local is None and user_id in course.confirmed:
            course.confirmed.discard(user_id)
            token = course.leave_tokens.pop(user_id, None)
            try:
                if token is None:
                    raise RuntimeError("no token")  # not expected: exit keeps it
                await self.chat.leave_presence(token, course.course_id, self.instance_id)
            except (grpc.aio.AioRpcError, RuntimeError) as exc:
                # Their token is gone or refused: the next heartbeat removes them here.
                self._failed("leave", course, user_id, exc)
                course.departed.add(user_id)
                return
            self.metrics.presence_calls.labels("leave", "ok").inc()
        else:
            course.leave_tokens.pop(user_id, None)

    def _failed(self, call: str, course: CoursePresence, user_id: str, exc: Exception) -> None:
        code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
        self.metrics.presence_calls.labels(call, code).inc()
        log.info(
            "presence call failed",
            call=call,
            course_id=course.course_id,
            user_id=user_id,
            code=code,
        )

    def _forget_if_idle(self, course: CoursePresence) -> None:
        if course.is_idle() and self.courses.get(course.course_id) is course:
            del self.courses[course.course_id]
            self.metrics.presence_courses.set(len(self.courses))

    # -- heartbeats ------------------------------------------------------------------------

    def start(self) -> None:
        self._heartbeat = asyncio.get_running_loop().create_task(
            self._beat_forever(), name="presence heartbeat"
        )

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            await self.beat()

    async def beat(self) -> None:
        """One heartbeat for every course with users here (a test calls it directly)."""
        courses = list(self.courses.values())
        for start in range(0, len(courses), HEARTBEAT_BATCH):
            batch = courses[start : start + HEARTBEAT_BATCH]
            await asyncio.gather(*(self._beat(course) for course in batch))

    async def _beat(self, course: CoursePresence) -> None:
        if course.retry:
            for user_id in course.retry:
                self._changed(course, user_id)
            course.retry.clear()
        if not (course.confirmed or course.departed):
            return
        token = course.token()
        if token is None:
            if not course.users and course.syncing is None:
                # Only leaves no token can carry are left: without heartbeats the store
                # forgets this process's users of the course after its TTL.
                course.departed.clear()
                self._forget_if_idle(course)
            return  # else: every subscriber's token expired; their sockets close now
        departed = sorted(course.departed)[:MAX_DEPARTED_PER_HEARTBEAT]
        in_flight = course.syncing is not None
        try:
            answer = await self.chat.presence_heartbeat(
                token, course.course_id, self.instance_id, departed
            )
        except grpc.aio.AioRpcError as exc:
            self._failed("heartbeat", course, "", exc)
            return
        self.metrics.presence_calls.labels("heartbeat", "ok").inc()
        if not self._checked_ttl and answer.ttl_seconds:
            self._checked_ttl = True
            if self.heartbeat_seconds * 2 > answer.ttl_seconds:
                log.warning(
                    "presence heartbeats are too rare for the chat service's presence TTL: "
                    "a missed one drops this process's users",
                    presence_heartbeat_seconds=self.heartbeat_seconds,
                    presence_ttl_seconds=answer.ttl_seconds,
                )
        course.departed.difference_update(departed)
        if (
            not in_flight
            and course.syncing is None
            and answer.instance_online != len(course.confirmed)
        ):
            log.warning(
                "presence of this process lost in the store; joining its users again",
                course_id=course.course_id,
                stored=answer.instance_online,
                here=len(course.confirmed),
            )
            course.confirmed.clear()
            for user_id in course.users:
                self._changed(course, user_id)
        self._forget_if_idle(course)

    async def close(self) -> None:
        """Stop beating; give the last leaves (sockets closed at shutdown) a moment."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        pending = [c.syncing for c in self.courses.values() if c.syncing is not None]
        if pending:
            await asyncio.wait(pending, timeout=CLOSE_SECONDS)
        for task in pending:
            task.cancel()
