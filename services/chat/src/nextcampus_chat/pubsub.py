"""Sharded pub/sub plumbing: the events channel of each course a process follows, on the
primary that owns the course's slot, over ONE connection per primary.

A course's channel is attached (SSUBSCRIBE on its owner, retried with a fresh slot map until
it works or nobody wants it), detached (SUNSUBSCRIBE; the connection closes with its last
channel) and re-homed when its connection fails or Redis drops it because the slot moved.
Each connection has one reader task, which hands every event and every (re)subscription
confirmation to the listener (the feed hub, `feed.py`): what the events mean, gap fills
and retractions, is the listener's business, not this module's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from redis.asyncio.client import PubSub

from nextcampus_chat.metrics import ChatMetrics
from nextcampus_common.events import ChangeNotice, CourseEvent, EphemeralNotice, decode_event
from nextcampus_common.keys import course_id_of
from nextcampus_common.logs import get_logger
from nextcampus_common.redis_cluster import RETRYABLE_ERRORS, ClusterClient, RedisUnavailable

log = get_logger(__name__)

# What a Redis call raises when Redis, not this process, failed: retried or re-homed.
REDIS_FAILURES: tuple[type[Exception], ...] = (*RETRYABLE_ERRORS, RedisUnavailable)
# How long closing a node's subscription waits for its reader at each step.
READER_STOP_SECONDS = 1.0


class CourseChannel(Protocol):
    """A course's events channel as the plumbing sees it: the course, and the primary whose
    connection carries it (None while it is carried by none)."""

    course_id: str
    node_name: str | None

    @property
    def channel(self) -> str: ...


Channel = TypeVar("Channel", bound=CourseChannel)


class ChannelListener(Protocol[Channel]):
    """Who gets the events (the feed hub), and says which channels are still wanted."""

    def current(self, course_id: str) -> Channel | None:
        """The course's channel in use (a course dropped and joined again gets a new one)."""
        ...

    def wanted(self, channel: Channel) -> bool: ...

    async def on_event(self, channel: Channel, event: CourseEvent) -> None: ...

    def on_notice(self, channel: Channel, notice: ChangeNotice | EphemeralNotice) -> None:
        """Some other change of the course went into its event log, or an ephemeral event
        (typing, presence) happened."""
        ...

    async def on_subscribed(self, channel: Channel) -> None:
        """Redis confirmed a (re)subscription: nothing published from now on is missed."""
        ...


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


class ShardedSubscriptions(Generic[Channel]):
    def __init__(
        self, redis: ClusterClient, metrics: ChatMetrics, listener: ChannelListener[Channel]
    ) -> None:
        self._redis = redis
        self._metrics = metrics
        self._listener = listener
        self._nodes: dict[str, NodeSubscriber] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    def attach_soon(self, channel: Channel) -> None:
        """Subscribe the channel in the background, until it works or is no longer wanted."""
        self._spawn(self._attach_until_done([channel]))

    def detach_soon(self, channel: Channel) -> None:
        """Unsubscribe the channel in the background. Not awaited by the caller: a cancelled
        stream (its client left) must not cut a Redis command in half and leave the shared
        connection in an unknown state."""
        self._spawn(self._detach(channel))

    async def close(self) -> None:
        """Stop every background attach and detach, and close every connection."""
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        for node in list(self._nodes.values()):
            await self._close_node(node)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _attach(self, channel: Channel) -> None:
        node = self._redis.node_for(channel.channel)
        subscriber = self._nodes.get(node.name)
        if subscriber is None:
            client = self._redis.new_node_client(node.host, int(node.port))
            subscriber = NodeSubscriber(node.name, client.pubsub())
            self._nodes[node.name] = subscriber
        subscriber.courses.add(channel.course_id)
        channel.node_name = node.name
        try:
            async with subscriber.lock:
                await subscriber.pubsub.ssubscribe(channel.channel)
        except BaseException:
            subscriber.courses.discard(channel.course_id)
            channel.node_name = None
            raise
        if subscriber.reader is None:
            subscriber.reader = asyncio.create_task(self._read(subscriber))

    async def _attach_until_done(self, channels: list[Channel]) -> None:
        """Subscribe each channel on the primary that owns its slot, retrying (with a fresh
        slot map) until it works or nobody wants the channel any more."""
        delay = 0.05
        pending = channels
        while True:
            failed = []
            for channel in pending:
                if not self._listener.wanted(channel):
                    continue
                try:
                    await self._attach(channel)
                except RETRYABLE_ERRORS as exc:
                    self._metrics.redis_errors.labels(type(exc).__name__).inc()
                    failed.append(channel)
            if not failed:
                return
            pending = failed
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            await self._redis.refresh_topology()

    def _subscribed_again(self, channel: Channel, subscriber: NodeSubscriber) -> bool:
        """A new stream of the course re-created its channel on this connection meanwhile:
        the old channel's detach must leave the subscription alone."""
        current = self._listener.current(channel.course_id)
        return (
            current is not None and current is not channel and current.node_name == subscriber.name
        )

    async def _detach(self, channel: Channel) -> None:
        subscriber = self._nodes.get(channel.node_name or "")
        if subscriber is None:
            return
        if self._subscribed_again(channel, subscriber):
            return
        subscriber.courses.discard(channel.course_id)
        if not subscriber.courses:
            await self._close_node(subscriber)
            return
        try:
            async with subscriber.lock:
                if self._subscribed_again(channel, subscriber):
                    subscriber.courses.add(channel.course_id)
                    return
                await subscriber.pubsub.sunsubscribe(channel.channel)
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
        listener = self._listener
        try:
            async for message in subscriber.pubsub.listen():
                kind = message["type"]
                course_id = course_id_of(message["channel"])
                channel = listener.current(course_id)
                if channel is None or channel.node_name != subscriber.name:
                    continue
                if kind == "smessage":
                    event = decode_event(message["data"])
                    if isinstance(event, ChangeNotice | EphemeralNotice):
                        listener.on_notice(channel, event)
                    else:
                        await listener.on_event(channel, event)
                elif kind == "ssubscribe":
                    await listener.on_subscribed(channel)
                elif kind == "sunsubscribe":
                    # Redis drops shard subscriptions of a slot that moved away: follow it.
                    subscriber.courses.discard(course_id)
                    channel.node_name = None
                    self._spawn(self._attach_until_done([channel]))
        except asyncio.CancelledError:
            raise
        except REDIS_FAILURES as exc:
            self._metrics.redis_errors.labels(type(exc).__name__).inc()
            log.warning("redis subscription lost; re-homing", node=subscriber.name, error=str(exc))
        except Exception:
            log.exception("subscription reader failed; re-homing", node=subscriber.name)
        await self._rehome(subscriber)

    async def _rehome(self, subscriber: NodeSubscriber) -> None:
        """The connection is gone (or in an unknown state): close it and move its courses
        to their owners now (each resubscription fills its gap from the index)."""
        orphans = [
            channel
            for course_id in subscriber.courses
            if (channel := self._listener.current(course_id)) is not None
            and channel.node_name == subscriber.name
        ]
        for channel in orphans:
            channel.node_name = None
        await self._close_node(subscriber)
        if orphans and not self._closing:
            await self._redis.refresh_topology()
            self._spawn(self._attach_until_done(orphans))
