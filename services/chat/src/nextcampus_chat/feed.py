"""Fan-out: ONE sharded Redis subscription per course per process, shared by every stream.

Pub/sub is at-most-once, so each course remembers the last id it passed on, and every event
and stored message names the id before it (`prev`):
- every (re)subscription confirmation from Redis (first subscribe, redis-py reconnect,
  re-homing after a failover) reads the index after that id before going on;
- an event whose `prev` is newer than that id first reads the gap from the index;
- an event at or below it is a duplicate and dropped;
- an event (or the index) whose `prev` is OLDER than that id means a failover lost the
  newest messages after they were passed on: they are retracted — every stream gets their
  tombstones, and retract.lua records them once for all processes.
So every stream sees each message of the course once and in order, whatever Redis did, and
never a lost message silently replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.client import PubSub

from nextcampus_chat.errors import ChatError, Problem
from nextcampus_chat.metrics import ChatMetrics
from nextcampus_chat.store import MessageStore
from nextcampus_common.events import CourseEvent, decode_event
from nextcampus_common.keys import CourseKeys
from nextcampus_common.logs import get_logger
from nextcampus_common.proto.chat.v1.chat_pb2 import ChatMessage
from nextcampus_common.redis_cluster import RETRYABLE_ERRORS, ClusterClient, RedisUnavailable

log = get_logger(__name__)

READER_ERRORS: tuple[type[Exception], ...] = (*RETRYABLE_ERRORS, RedisUnavailable)
# Added messages each course remembers, to retract them should a failover lose them: more
# than the writes a primary can take between its last replicated one and its death.
RECENT_MESSAGES = 1000
# Ids retracted here, so the published retraction of another process is not passed on twice.
RETRACTED_IDS_KEPT = 10_000
# How long a retraction keeps trying to be recorded while its shard has no replica.
RETRACTION_RETRY_SECONDS = 120.0
# How long closing a node's subscription waits for its reader at each step.
READER_STOP_SECONDS = 1.0


class Subscription:
    """One stream's queue of a course's events, bounded in events and in bytes."""

    def __init__(self, course_id: str, max_events: int, max_bytes: int) -> None:
        self.course_id = course_id
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._events: deque[CourseEvent] = deque()
        self._bytes = 0
        self._wakeup = asyncio.Event()
        self.closed: ChatError | None = None
        # The course's last sequence when this subscription joined the live feed: every
        # later message reaches the queue. Set by the hub once the feed is ready.
        self.baseline: int | None = None

    def push(self, event: CourseEvent) -> bool:
        """Queue an event; False (and the subscription closed) when the queue is full."""
        if self.closed is not None:
            return False
        if (
            len(self._events) >= self._max_events
            or self._bytes + event.size_bytes > self._max_bytes
        ):
            self.close(
                ChatError(
                    Problem.SLOW_CONSUMER,
                    "stream fell behind and was cut off; resubscribe with after_message_id",
                )
            )
            return False
        self._events.append(event)
        self._bytes += event.size_bytes
        self._wakeup.set()
        return True

    def close(self, error: ChatError) -> None:
        if self.closed is None:
            self.closed = error
            self._events.clear()
            self._bytes = 0
            self._wakeup.set()

    async def get(self) -> CourseEvent:
        while not self._events:
            if self.closed is not None:
                raise self.closed
            self._wakeup.clear()
            await self._wakeup.wait()
        event = self._events.popleft()
        self._bytes -= event.size_bytes
        return event


@dataclass(eq=False)
class CourseFeed:
    course_id: str
    subscriptions: set[Subscription] = field(default_factory=set)
    last_sequence: int | None = None  # None until the first subscription confirmation
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    node_name: str | None = None
    # The newest added messages passed on, oldest first (what a rollback may retract).
    recent: OrderedDict[int, ChatMessage] = field(default_factory=OrderedDict)
    retracted: OrderedDict[int, None] = field(default_factory=OrderedDict)

    def passed_on(self, message: ChatMessage) -> None:
        self.recent[int(message.message_id)] = message
        if len(self.recent) > RECENT_MESSAGES:
            self.recent.popitem(last=False)

    def mark_retracted(self, sequence: int) -> None:
        self.retracted[sequence] = None
        self.recent.pop(sequence, None)
        if len(self.retracted) > RETRACTED_IDS_KEPT:
            self.retracted.popitem(last=False)

    @property
    def channel(self) -> str:
        return CourseKeys(self.course_id).events


@dataclass(eq=False)
class NodeSubscriber:
    """The pub/sub connection to one primary, carrying the channels of its courses."""

    name: str
    pubsub: PubSub
    courses: set[str] = field(default_factory=set)
    reader: asyncio.Task[None] | None = None
    # redis-py's PubSub opens its connection lazily on the first command: two concurrent
    # first (un)subscribes would open two, and the channels of the one replaced would be
    # silently lost. One command at a time per node.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class FeedHub:
    def __init__(
        self,
        redis: ClusterClient,
        store: MessageStore,
        metrics: ChatMetrics,
        *,
        queue_size: int,
        queue_bytes: int,
        page_limit: int,
    ) -> None:
        self._redis = redis
        self._store = store
        self._metrics = metrics
        self._queue_size = queue_size
        self._queue_bytes = queue_bytes
        self._page_limit = page_limit
        self._feeds: dict[str, CourseFeed] = {}
        self._nodes: dict[str, NodeSubscriber] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    # -- streams ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def subscribe(self, course_id: str) -> AsyncIterator[Subscription]:
        """Join the course's live feed; the feed has its baseline when this yields."""
        if self._closing:
            raise ChatError(Problem.SHUTTING_DOWN, "server is shutting down; retry elsewhere")
        subscription = Subscription(course_id, self._queue_size, self._queue_bytes)
        feed = self._feeds.get(course_id)
        if feed is None:
            feed = self._feeds[course_id] = CourseFeed(course_id)
            self._metrics.courses_subscribed.set(len(self._feeds))
            self._spawn(self._attach_until_done([feed]))
        feed.subscriptions.add(subscription)
        if feed.ready.is_set():
            subscription.baseline = feed.last_sequence
        self._metrics.active_streams.inc()
        try:
            await feed.ready.wait()
            if subscription.closed is not None:
                raise subscription.closed
            yield subscription
        finally:
            self._metrics.active_streams.dec()
            feed.subscriptions.discard(subscription)
            if not feed.subscriptions and self._feeds.get(course_id) is feed:
                del self._feeds[course_id]
                self._metrics.courses_subscribed.set(len(self._feeds))
                # Not awaited: a cancelled stream (its client left) must not cut a Redis
                # command in half and leave the shared connection in an unknown state.
                self._spawn(self._detach(feed))

    async def close(self) -> None:
        """End every stream (they resume elsewhere) and drop the Redis subscriptions."""
        self._closing = True
        for feed in self._feeds.values():
            feed.ready.set()  # wake streams still waiting for their first subscription
            for subscription in feed.subscriptions:
                subscription.close(
                    ChatError(
                        Problem.SHUTTING_DOWN,
                        "server is shutting down; resubscribe with after_message_id",
                    )
                )
        for task in list(self._tasks):
            task.cancel()
        for node in list(self._nodes.values()):
            await self._close_node(node)

    # -- events ----------------------------------------------------------------------------

    def _deliver(self, feed: CourseFeed, event: CourseEvent) -> None:
        delivered = 0
        for subscription in list(feed.subscriptions):
            if subscription.push(event):
                delivered += 1
            elif (
                subscription.closed is not None
                and subscription.closed.problem is Problem.SLOW_CONSUMER
            ):
                self._metrics.slow_consumers.inc()
                feed.subscriptions.discard(subscription)
        self._metrics.deliveries.inc(delivered)

    async def _on_event(self, feed: CourseFeed, event: CourseEvent) -> None:
        sequence = event.sequence
        if event.message.deleted:
            if event.retracted:
                if sequence in feed.retracted:
                    return  # retracted here already
                feed.mark_retracted(sequence)
            self._deliver(feed, event)
            return
        last = feed.last_sequence
        if last is None:  # cannot happen: the confirmation precedes events on a connection
            feed.last_sequence = sequence
        elif sequence <= last:
            return  # already passed on (by a gap fill)
        elif event.prev is None:  # an older writer's event: ids were contiguous then
            if sequence > last + 1:
                await self._fill(feed, "gap", before=sequence)
        elif event.prev > last:
            await self._fill(feed, "gap", before=sequence)
        elif event.prev < last:
            await self._roll_back(feed, event.prev)
        if feed.last_sequence is not None and sequence <= feed.last_sequence:
            return
        feed.last_sequence = sequence
        feed.passed_on(event.message)
        self._deliver(feed, event)

    async def _on_subscribed(self, feed: CourseFeed) -> None:
        """A (re)subscription was confirmed: nothing published from now on is missed, so
        establish the baseline or read whatever was published while we were away."""
        if feed.last_sequence is None:
            feed.last_sequence = await self._store.last_sequence(feed.course_id)
            for subscription in feed.subscriptions:
                subscription.baseline = feed.last_sequence
            feed.ready.set()
        else:
            await self._fill(feed, "resubscribe", before=None)

    async def _fill(self, feed: CourseFeed, reason: str, *, before: int | None) -> None:
        self._metrics.gap_fills.labels(reason).inc()
        while True:
            assert feed.last_sequence is not None
            page = await self._store.history(
                feed.course_id,
                after=str(feed.last_sequence),
                before=str(before) if before is not None else None,
                limit=self._page_limit,
            )
            for message in page.messages:
                sequence = int(message.message_id)
                prev = int(message.previous_message_id or 0)
                if sequence in feed.retracted:
                    continue  # its tombstone went out already
                if sequence <= feed.last_sequence:
                    # The page starts with tombstones: the newest message we passed on was
                    # lost in a failover (history.lua); their prev is what survived.
                    await self._roll_back(feed, prev)
                    continue
                if (
                    not message.deleted
                    and message.previous_message_id
                    and prev < feed.last_sequence
                ):
                    # The first message after ours follows an older one: ours was lost.
                    await self._roll_back(feed, prev)
                feed.last_sequence = sequence
                self._metrics.gap_filled_messages.inc()
                if not message.deleted:
                    feed.passed_on(message)
                self._deliver(feed, CourseEvent.from_message(message))
            if not page.has_more:
                return

    async def _roll_back(self, feed: CourseFeed, survivor: int) -> None:
        """A failover lost the messages after `survivor` that this feed passed on: every
        stream gets their tombstones now, and they are recorded once for all (retract.lua)."""
        assert feed.last_sequence is not None
        lost = [
            message
            for sequence, message in feed.recent.items()
            if sequence > survivor and sequence not in feed.retracted
        ]
        feed.last_sequence = min(feed.last_sequence, survivor)
        if not lost:
            return
        log.warning(
            "messages lost in a Redis failover; retracting them",
            course_id=feed.course_id,
            ids=[m.message_id for m in lost],
            survivor=survivor,
        )
        for message in lost:
            tombstone = ChatMessage(
                course_id=message.course_id,
                message_id=message.message_id,
                user_id=message.user_id,
                timestamp=message.timestamp,
                deleted=True,
                client_message_id=message.client_message_id,
                previous_message_id=str(survivor) if survivor else "",
            )
            feed.mark_retracted(int(message.message_id))
            self._deliver(feed, CourseEvent.from_message(tombstone, retracted=True))
        self._metrics.retracted_messages.inc(len(lost))
        self._spawn(self._record_retraction(feed.course_id, survivor, lost))

    async def _record_retraction(
        self, course_id: str, survivor: int, lost: list[ChatMessage]
    ) -> None:
        """retract.lua until it is on a replica: right after a failover the new primary may
        have none until the old one rejoins."""
        deadline = time.monotonic() + RETRACTION_RETRY_SECONDS
        delay = 0.2
        while True:
            try:
                _, collisions = await self._store.retract(course_id, survivor, lost)
            except READER_ERRORS as exc:
                self._metrics.redis_errors.labels(type(exc).__name__).inc()
                if time.monotonic() + delay > deadline:
                    log.error(
                        "could not record a retraction",
                        course_id=course_id,
                        ids=[m.message_id for m in lost],
                        error=str(exc),
                    )
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if collisions:
                log.error(
                    "a lost message's id was given to another message: the Redis nodes' "
                    "clocks differ by more than a failover takes",
                    course_id=course_id,
                    ids=collisions,
                )
            return

    # -- Redis subscriptions ----------------------------------------------------------------

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _wanted(self, feed: CourseFeed) -> bool:
        return not self._closing and self._feeds.get(feed.course_id) is feed

    async def _attach(self, feed: CourseFeed) -> None:
        node = self._redis.node_for(feed.channel)
        subscriber = self._nodes.get(node.name)
        if subscriber is None:
            client = self._redis.new_node_client(node.host, int(node.port))
            subscriber = NodeSubscriber(node.name, client.pubsub())
            self._nodes[node.name] = subscriber
        subscriber.courses.add(feed.course_id)
        feed.node_name = node.name
        try:
            async with subscriber.lock:
                await subscriber.pubsub.ssubscribe(feed.channel)
        except BaseException:
            subscriber.courses.discard(feed.course_id)
            feed.node_name = None
            raise
        if subscriber.reader is None:
            subscriber.reader = asyncio.create_task(self._read(subscriber))

    async def _attach_until_done(self, feeds: list[CourseFeed]) -> None:
        """Subscribe each feed on the primary that owns its slot, retrying (with a fresh slot
        map) until it works or nobody wants the feed any more."""
        delay = 0.05
        pending = feeds
        while True:
            failed = []
            for feed in pending:
                if not self._wanted(feed):
                    continue
                try:
                    await self._attach(feed)
                except RETRYABLE_ERRORS as exc:
                    self._metrics.redis_errors.labels(type(exc).__name__).inc()
                    failed.append(feed)
            if not failed:
                return
            pending = failed
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            await self._redis.refresh_topology()

    def _subscribed_again(self, feed: CourseFeed, subscriber: NodeSubscriber) -> bool:
        """A new stream of the course re-created its feed on this connection meanwhile: the
        old feed's detach must leave the channel alone."""
        current = self._feeds.get(feed.course_id)
        return current is not None and current is not feed and current.node_name == subscriber.name

    async def _detach(self, feed: CourseFeed) -> None:
        subscriber = self._nodes.get(feed.node_name or "")
        if subscriber is None:
            return
        if self._subscribed_again(feed, subscriber):
            return
        subscriber.courses.discard(feed.course_id)
        if not subscriber.courses:
            await self._close_node(subscriber)
            return
        try:
            async with subscriber.lock:
                if self._subscribed_again(feed, subscriber):
                    subscriber.courses.add(feed.course_id)
                    return
                await subscriber.pubsub.sunsubscribe(feed.channel)
        except Exception as exc:
            self._metrics.redis_errors.labels(type(exc).__name__).inc()
            log.warning("unsubscribe failed; re-homing", node=subscriber.name, error=repr(exc))
            await self._rehome(subscriber)

    async def _close_node(self, subscriber: NodeSubscriber) -> None:
        if self._nodes.get(subscriber.name) is subscriber:
            del self._nodes[subscriber.name]
        reader = subscriber.reader
        if reader is asyncio.current_task():
            reader = None
        if reader is not None:
            reader.cancel()
            # redis-py's read can miss a cancellation (seen when another one raced it) and go
            # on waiting for a message that may never come: closing the connection under it
            # ends the read for sure, so a shutdown never hangs on a quiet channel.
            await asyncio.wait({reader}, timeout=READER_STOP_SECONDS)
        with contextlib.suppress(*RETRYABLE_ERRORS):
            await subscriber.pubsub.aclose()  # type: ignore[no-untyped-call]
        if reader is not None and not reader.done():
            await asyncio.wait({reader}, timeout=READER_STOP_SECONDS)
            if not reader.done():
                log.error("a subscription reader did not stop", node=subscriber.name)

    async def _read(self, subscriber: NodeSubscriber) -> None:
        try:
            async for message in subscriber.pubsub.listen():
                kind = message["type"]
                channel = message["channel"]
                course_id = channel[len("course:{") : channel.index("}")]
                feed = self._feeds.get(course_id)
                if feed is None or feed.node_name != subscriber.name:
                    continue
                if kind == "smessage":
                    await self._on_event(feed, decode_event(message["data"]))
                elif kind == "ssubscribe":
                    await self._on_subscribed(feed)
                elif kind == "sunsubscribe":
                    # Redis drops shard subscriptions of a slot that moved away: follow it.
                    subscriber.courses.discard(course_id)
                    feed.node_name = None
                    self._spawn(self._attach_until_done([feed]))
        except asyncio.CancelledError:
            raise
        except READER_ERRORS as exc:
            self._metrics.redis_errors.labels(type(exc).__name__).inc()
            log.warning("redis subscription lost; re-homing", node=subscriber.name, error=str(exc))
        except Exception:
            log.exception("subscription reader failed; re-homing", node=subscriber.name)
        await self._rehome(subscriber)

    async def _rehome(self, subscriber: NodeSubscriber) -> None:
        """The connection is gone (or in an unknown state): close it and move its courses
        to their owners now (each resubscription fills its gap from the index)."""
        orphans = [
            feed
            for course_id in subscriber.courses
            if (feed := self._feeds.get(course_id)) is not None
            and feed.node_name == subscriber.name
        ]
        for feed in orphans:
            feed.node_name = None
        await self._close_node(subscriber)
        if orphans and not self._closing:
            await self._redis.refresh_topology()
            self._spawn(self._attach_until_done(orphans))


async def stream_messages(
    hub: FeedHub,
    store: MessageStore,
    course_id: str,
    after: str | None,
    *,
    page_limit: int,
    on_live: Callable[[int], Awaitable[None]] | None = None,
) -> AsyncIterator[ChatMessage]:
    """A course's messages for one stream: replay after `after`, then live — no gap, no
    duplicate (DESIGN.md §3). Joins the live feed first, buffers, reads history, then drains
    the buffer dropping ids already sent.

    `on_live(n)` runs once the stream is sure to carry every message after `n` (the client's
    `after`, or the course's newest message when it joined): a client whose stream breaks
    before any message arrives resumes from `n` without a gap."""
    async with hub.subscribe(course_id) as subscription:
        assert subscription.baseline is not None
        last_sent = subscription.baseline
        page = None
        retracted: set[int] = set()
        if after is not None:
            last_sent = int(after)
            # Before going live: an `after` past the clock is refused here (history.lua).
            page = await store.history(course_id, after=after, limit=page_limit)
        if on_live is not None:
            await on_live(last_sent)
        while page is not None:
            for message in page.messages:
                sequence = int(message.message_id)
                if sequence <= last_sent:
                    # Tombstones of what a failover lost, `after` among them (history.lua).
                    retracted.add(sequence)
                last_sent = max(last_sent, sequence)
                yield message
            if not page.has_more:
                break
            page = await store.history(course_id, after=str(last_sent), limit=page_limit)
        while True:
            event = await subscription.get()
            message = event.message
            sequence = event.sequence
            if message.deleted:
                if event.retracted and sequence in retracted:
                    continue  # sent from history already
            elif sequence <= last_sent:
                continue
            else:
                last_sent = sequence
            yield message
