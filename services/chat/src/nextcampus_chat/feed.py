"""Delivery of each course's events to its streams: ONE sharded Redis subscription per
course per process (its plumbing is `pubsub.py`), shared by every stream of the course.

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
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from nextcampus_chat.errors import ChatError, Problem
from nextcampus_chat.metrics import ChatMetrics
from nextcampus_chat.pubsub import REDIS_FAILURES, ShardedSubscriptions
from nextcampus_chat.store import MessageStore
from nextcampus_common.events import ChangeNotice, CourseEvent, EphemeralNotice
from nextcampus_common.ids import event_cursor_key
from nextcampus_common.keys import CourseKeys
from nextcampus_common.logs import get_logger
from nextcampus_common.proto.chat.v1 import chat_pb2
from nextcampus_common.proto.chat.v1.chat_pb2 import ChatMessage
from nextcampus_common.redis_cluster import ClusterClient

log = get_logger(__name__)

# Added messages each course remembers, to retract them should a failover lose them: more
# than the writes a primary can take between its last replicated one and its death.
RECENT_MESSAGES = 1000
# Ids retracted here, so the published retraction of another process is not passed on twice.
RETRACTED_IDS_KEPT = 10_000
# How long a retraction keeps trying to be recorded while its shard has no replica.
RETRACTION_RETRY_SECONDS = 120.0


class Sized(Protocol):
    @property
    def size_bytes(self) -> int: ...


Item = TypeVar("Item", bound=Sized)


def deliver(queues: set[StreamQueue[Item]], item: Item, metrics: ChatMetrics) -> None:
    """`item` to every queue; a queue that fell too far behind is cut off and dropped."""
    delivered = 0
    for queue in list(queues):
        if queue.push(item):
            delivered += 1
        elif queue.closed is not None and queue.closed.problem is Problem.SLOW_CONSUMER:
            metrics.slow_consumers.inc()
            queues.discard(queue)
    metrics.deliveries.inc(delivered)


class StreamQueue(Generic[Item]):
    """One stream's queue of a course's events, bounded in events and in bytes."""

    def __init__(self, course_id: str, max_events: int, max_bytes: int) -> None:
        self.course_id = course_id
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._events: deque[Item] = deque()
        self._bytes = 0
        self._wakeup = asyncio.Event()
        self.closed: ChatError | None = None
        # The course's last sequence when this queue joined the live feed: every later
        # message reaches it. Set by the hub once the feed is ready.
        self.baseline: int | None = None

    def push(self, event: Item) -> bool:
        """Queue an event; False (and the queue closed) when it is full."""
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

    def offer(self, event: Item) -> bool:
        """Queue an event that may be dropped (an ephemeral one): only while the queue is
        less than half full, so a stream falling behind loses these first and is never cut
        off for them."""
        if (
            self.closed is not None
            or len(self._events) >= self._max_events // 2
            or self._bytes + event.size_bytes > self._max_bytes // 2
        ):
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

    async def get(self) -> Item:
        while not self._events:
            if self.closed is not None:
                raise self.closed
            self._wakeup.clear()
            await self._wakeup.wait()
        event = self._events.popleft()
        self._bytes -= event.size_bytes
        return event

    def discard_pending(self) -> None:
        """Drop what is queued (a reader that only needs to know that something came)."""
        self._events.clear()
        self._bytes = 0


@dataclass(eq=False)
class CourseFeed:
    """A course followed by this process: its streams' queues, and what delivery remembers."""

    course_id: str
    queues: set[StreamQueue[CourseEvent]] = field(default_factory=set)
    # Queues that want to know of every change (the log tails): its events and its notices.
    watchers: set[StreamQueue[CourseEvent | ChangeNotice]] = field(default_factory=set)
    last_sequence: int | None = None  # None until the first subscription confirmation
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    node_name: str | None = None  # the primary whose connection carries the channel
    # The newest added messages passed on, oldest first (what a rollback may retract).
    recent: OrderedDict[int, ChatMessage] = field(default_factory=OrderedDict)
    retracted: OrderedDict[int, None] = field(default_factory=OrderedDict)

    def all_queues(self) -> list[StreamQueue[Any]]:
        return [*self.queues, *self.watchers]

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
        self._store = store
        self._metrics = metrics
        self._queue_size = queue_size
        self._queue_bytes = queue_bytes
        self._page_limit = page_limit
        self._feeds: dict[str, CourseFeed] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # retractions being recorded
        self._tails: dict[str, CourseLogTail] = {}
        self._closing = False
        self._subscriptions = ShardedSubscriptions(redis, metrics, self)

    # -- streams ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def subscribe(self, course_id: str) -> AsyncIterator[StreamQueue[CourseEvent]]:
        """Join the course's live feed; the queue has its baseline when this yields."""
        queue: StreamQueue[CourseEvent] = StreamQueue(
            course_id, self._queue_size, self._queue_bytes
        )
        async with self._joined(course_id, queue, lambda feed: feed.queues):
            yield queue

    @contextlib.asynccontextmanager
    async def watch(self, course_id: str) -> AsyncIterator[StreamQueue[CourseEvent | ChangeNotice]]:
        """Join the course's live feed to hear of every change: its events, and a notice of
        each other change (edits, reactions, pins) that only its event log describes."""
        queue: StreamQueue[CourseEvent | ChangeNotice] = StreamQueue(
            course_id, self._queue_size, self._queue_bytes
        )
        async with self._joined(course_id, queue, lambda feed: feed.watchers):
            yield queue

    @contextlib.asynccontextmanager
    async def _joined(
        self,
        course_id: str,
        queue: StreamQueue[Item],
        queues_of: Callable[[CourseFeed], set[StreamQueue[Item]]],
    ) -> AsyncIterator[None]:
        if self._closing:
            raise ChatError(Problem.SHUTTING_DOWN, "server is shutting down; retry elsewhere")
        feed = self._feeds.get(course_id)
        if feed is None:
            feed = self._feeds[course_id] = CourseFeed(course_id)
            self._metrics.courses_subscribed.set(len(self._feeds))
            self._subscriptions.attach_soon(feed)
        queues_of(feed).add(queue)
        if feed.ready.is_set():
            queue.baseline = feed.last_sequence
        self._metrics.active_streams.inc()
        try:
            await feed.ready.wait()
            if queue.closed is not None:
                raise queue.closed
            yield
        finally:
            self._metrics.active_streams.dec()
            queues_of(feed).discard(queue)
            if not (feed.queues or feed.watchers) and self._feeds.get(course_id) is feed:
                del self._feeds[course_id]
                self._metrics.courses_subscribed.set(len(self._feeds))
                self._subscriptions.detach_soon(feed)

    @contextlib.asynccontextmanager
    async def follow_log(
        self, course_id: str, *, ephemeral: bool = False
    ) -> AsyncIterator[tuple[StreamQueue[LogEntry], str]]:
        """Join the course's log tail (one per course per process, shared by every event
        stream of the course): the queue gets every entry of the course's event log after
        the cursor yielded with it ("" when the log was empty), and with `ephemeral` the
        course's typing and presence events (no cursor) as they come, dropped first."""
        if self._closing:
            raise ChatError(Problem.SHUTTING_DOWN, "server is shutting down; retry elsewhere")
        tail = self._tails.get(course_id)
        if tail is None:
            tail = self._tails[course_id] = CourseLogTail(
                self, self._store, self._metrics, self._page_limit, course_id
            )
            tail.task = asyncio.create_task(tail.run())
        queue: StreamQueue[LogEntry] = StreamQueue(course_id, self._queue_size, self._queue_bytes)
        tail.queues.add(queue)
        if ephemeral:
            tail.ephemeral_queues.add(queue)
        self._metrics.active_streams.inc()
        try:
            await tail.ready.wait()
            if queue.closed is not None:
                raise queue.closed
            yield queue, tail.cursor or ""
        finally:
            self._metrics.active_streams.dec()
            tail.queues.discard(queue)
            tail.ephemeral_queues.discard(queue)
            if not tail.queues and self._tails.get(course_id) is tail:
                del self._tails[course_id]
                if tail.task is not None:
                    tail.task.cancel()

    async def close(self) -> None:
        """End every stream (they resume elsewhere) and drop the Redis subscriptions."""
        self._closing = True
        for tail in self._tails.values():
            tail.close(ChatError(Problem.SHUTTING_DOWN, "server is shutting down; resume"))
        for feed in self._feeds.values():
            feed.ready.set()  # wake streams still waiting for their first subscription
            for queue in feed.all_queues():
                queue.close(
                    ChatError(
                        Problem.SHUTTING_DOWN,
                        "server is shutting down; resubscribe with after_message_id",
                    )
                )
        for task in list(self._tasks):
            task.cancel()
        await self._subscriptions.close()

    # -- events: the ChannelListener of pubsub.py ------------------------------------------

    def current(self, course_id: str) -> CourseFeed | None:
        return self._feeds.get(course_id)

    def wanted(self, feed: CourseFeed) -> bool:
        return not self._closing and self._feeds.get(feed.course_id) is feed

    def _deliver(self, feed: CourseFeed, event: CourseEvent) -> None:
        deliver(feed.queues, event, self._metrics)
        deliver(feed.watchers, event, self._metrics)

    def on_notice(self, feed: CourseFeed, notice: ChangeNotice | EphemeralNotice) -> None:
        if isinstance(notice, EphemeralNotice):
            # Not a change of the log: straight to the event streams that asked for these.
            tail = self._tails.get(feed.course_id)
            if tail is not None:
                tail.offer(notice.event, self._metrics)
            return
        deliver(feed.watchers, notice, self._metrics)

    async def on_event(self, feed: CourseFeed, event: CourseEvent) -> None:
        self._metrics.hops.passed("chat_feed", event.message.content)
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

    async def on_subscribed(self, feed: CourseFeed) -> None:
        """A (re)subscription was confirmed: nothing published from now on is missed, so
        establish the baseline or read whatever was published while we were away."""
        if feed.last_sequence is None:
            feed.last_sequence = await self._store.last_sequence(feed.course_id)
            for queue in feed.all_queues():
                queue.baseline = feed.last_sequence
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
                anonymous=message.anonymous,
                pseudonym=message.pseudonym,
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
            except REDIS_FAILURES as exc:
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

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


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
    async with hub.subscribe(course_id) as queue:
        assert queue.baseline is not None
        last_sent = queue.baseline
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
            event = await queue.get()
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


# How long a log tail waits for a wake-up before it reads the log anyway: a change whose
# publication was lost (pub/sub is at-most-once) reaches its streams within this.
LOG_IDLE_READ_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class LogEntry:
    """An event of the log, queued for a stream (its size bounds the queue)."""

    event: chat_pb2.CourseEvent
    size_bytes: int


@dataclass(eq=False)
class CourseLogTail:
    """Follows one course's event log for this process: reads it after its cursor whenever
    the course's live feed says something happened (its own subscription of the hub), and at
    least every LOG_IDLE_READ_SECONDS, and passes each entry to every stream of the course.
    The log is the record; the feed only says when to look, so nothing it drops is lost.

    A failover can lose the newest entries after the tail passed them on (changes that were
    never acknowledged): the log then no longer holds the tail's cursor, and the tail has
    the messages of the entries it remembers and the log lost restored (relog.lua), so every
    stream ends with the messages as the store keeps them."""

    hub: FeedHub  # whose live feed of the course wakes the tail
    store: MessageStore
    metrics: ChatMetrics
    page_limit: int
    course_id: str
    queues: set[StreamQueue[LogEntry]] = field(default_factory=set)
    # Those of `queues` whose streams take the course's ephemeral events too.
    ephemeral_queues: set[StreamQueue[LogEntry]] = field(default_factory=set)
    cursor: str | None = None  # the newest entry passed on; None until started
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    # The newest entries passed on (cursor -> message id): what a failover may have lost.
    recent: OrderedDict[str, str] = field(default_factory=OrderedDict)

    async def run(self) -> None:
        delay = 0.2
        while True:
            try:
                async with self.hub.watch(self.course_id) as wake:
                    if self.cursor is None:
                        self.cursor = await self.store.newest_event_cursor(self.course_id)
                        self.ready.set()
                    while True:
                        await self._read()
                        delay = 0.2
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(LOG_IDLE_READ_SECONDS):
                                await wake.get()
                        wake.discard_pending()
            except ChatError as exc:
                if exc.problem is not Problem.SLOW_CONSUMER:  # fell behind: look again
                    self.close(exc)
                    return
            except REDIS_FAILURES as exc:
                self.metrics.redis_errors.labels(type(exc).__name__).inc()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _read(self) -> None:
        while True:
            page = await self.store.events(
                self.course_id, after=self.cursor or None, limit=self.page_limit
            )
            if page.after_lost and self.recent:
                await self._restore()
                self.recent.clear()  # restored (or found in the log after all)
                continue
            for event in page.events:
                deliver(self.queues, LogEntry(event, event.ByteSize()), self.metrics)
                self.cursor = event.cursor
                self.recent[event.cursor] = event.message.message_id
                if len(self.recent) > RECENT_MESSAGES:
                    self.recent.popitem(last=False)
            if not page.has_more:
                return

    async def _restore(self) -> None:
        added = await self.store.relog(self.course_id, list(self.recent.items()))
        if added:
            log.warning(
                "event log entries lost in a Redis failover; their messages restored",
                course_id=self.course_id,
                restored=added,
            )
            self.metrics.restored_messages.inc(added)

    def offer(self, event: chat_pb2.CourseEvent, metrics: ChatMetrics) -> None:
        """An ephemeral event to the streams that take them; a stream more than half full
        drops it (typing and presence must never cost a stream its real events)."""
        entry = LogEntry(event, event.ByteSize())
        for queue in self.ephemeral_queues:
            if queue.offer(entry):
                metrics.deliveries.inc()
            else:
                metrics.ephemeral_dropped.inc()

    def close(self, error: ChatError) -> None:
        self.ready.set()
        for queue in self.queues:
            queue.close(error)


async def stream_events(
    hub: FeedHub,
    store: MessageStore,
    course_id: str,
    after: str | None,
    *,
    page_limit: int,
    on_live: Callable[[str], Awaitable[None]] | None = None,
    ephemeral: bool = False,
) -> AsyncIterator[chat_pb2.CourseEvent]:
    """A course's changes for one stream: the log after `after` (None: from now on), then
    live — each once, in order. Joins the log tail first, reads the log after `after`, then
    passes on what the tail brings past the last cursor sent. `on_live(cursor)` runs once the
    stream is sure to carry every change after `cursor`. With `ephemeral`, typing and
    presence events (no cursor) come in between as they happen."""
    async with hub.follow_log(course_id, ephemeral=ephemeral) as (queue, joined_at):
        last = joined_at
        if on_live is not None and after is None:
            await on_live(joined_at)
        if after is not None:
            last = after
            while True:
                # Before going live: a stale or bad cursor is refused here (events.lua).
                page = await store.events(course_id, after=last, limit=page_limit)
                if on_live is not None and last == after:
                    await on_live(after)
                for event in page.events:
                    last = event.cursor
                    yield event
                if not page.has_more:
                    break
        while True:
            entry = await queue.get()
            if not entry.event.cursor:  # ephemeral: not of the log's order
                yield entry.event
                continue
            if last and event_cursor_key(entry.event.cursor) <= event_cursor_key(last):
                continue
            last = entry.event.cursor
            yield entry.event
