"""Chaos: a process of the local topology, or a container of the container topology
(`make e2e-containers`: `podman kill` for kill -9), dies mid-traffic, and still no message is
lost, none arrives twice, none out of order (DESIGN.md §3).

Each test drives one busy course through the gateway: 16 resuming subscribers (the gateway
spreads them over both GraphQL processes) and a sender of 300 messages at 50/s, each with a
fixed clientMessageId, retried until acknowledged. The fault strikes after 100
acknowledgements and traffic goes on after it. Then every subscriber must hold every
acknowledged message: ids strictly increasing (in order, none twice), none missing, none
that nobody sent, each with the content that was acknowledged.

What is killed:
- `kill -9` of the chat process holding the course's upstream streams, restarted later
  (GraphQL reopens its upstream on the other one with `after_message_id`);
- `kill -9` of the GraphQL process holding the most subscribers, restarted later (its
  sockets resume through the gateway with `after`; some subscribers must have reconnected);
- `kill -9` of the Redis primary owning the course's slot (its replica takes over); once
  replaced it restarts and rejoins as a replica, as Kubernetes restarts a pod. Until then
  the promoted replica has no replica of its own and the course's sends are refused
  (UNAVAILABLE, retried by the sender): acknowledged means on a replica;
- a rolling graceful restart of both GraphQL processes (every subscriber sees 1012 and
  resumes).

Whatever happens, the `stack` fixture (conftest.py) restarts what a test killed and waits
until the Redis Cluster and the gateway's upstreams are healthy, so later tests see a whole
stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from devstack.containers import ContainerTopology
from devstack.scrape import scrape
from devstack.topology import Topology
from e2e.clients import (
    GraphqlHttp,
    ReliableSender,
    check_delivery,
    start_subscribers,
    wait_all_received,
)
from nextcampus_common.keys import CourseKeys
from testing.ws import Subscriber

if TYPE_CHECKING:
    from e2e.conftest import Gateway

pytestmark = pytest.mark.chaos

SUBSCRIBERS = 16
MESSAGES = 300
PER_SECOND = 50
# The default limit is 10 messages per user per 10 s (bursts of 10): 60 users at 50/s send
# 5 messages each, never limited.
USERS = 60
FAULT_AT = 100  # acknowledged messages before the fault
SECOND_STEP_AT = 200  # … before the restart of what was killed (or the second restart)
WITHIN_SECONDS = 30.0  # bound of every wait for a condition


# -- one busy course ---------------------------------------------------------------------------


@dataclass
class BusyCourse:
    course_id: str
    sender: ReliableSender
    subscribers: list[Subscriber]
    baseline: int  # the subscribers' first `after`: every later message must reach them
    traffic: asyncio.Task[None]

    async def reached(self, acknowledged: int) -> None:
        """Wait until `acknowledged` messages of the traffic are acknowledged."""
        waiter = asyncio.ensure_future(
            self.sender.wait_acknowledged(acknowledged + 1, within=WITHIN_SECONDS)
        )
        await asyncio.wait({waiter, self.traffic}, return_when=asyncio.FIRST_COMPLETED)
        if self.traffic.done() and self.traffic.exception() is not None:
            waiter.cancel()
            await self.traffic  # raises the sender's failure
        await waiter

    @property
    def expected(self) -> list[tuple[int, str]]:
        return [(m, content) for m, content in self.sender.acknowledged if m != self.baseline]

    async def finish(self) -> None:
        """Traffic done, every acknowledged message everywhere, and the invariant holds."""
        await asyncio.wait_for(self.traffic, 2 * WITHIN_SECONDS)
        assert len(self.expected) == MESSAGES
        await wait_all_received(
            self.subscribers, [m for m, _ in self.expected], within=WITHIN_SECONDS
        )
        check_delivery(self.subscribers, self.expected, sole_sender=True)

    def summary(self) -> str:
        reconnects = sorted(s.reconnects for s in self.subscribers)
        return (
            f"{self.course_id}: {len(self.expected)} messages, send retries "
            f"{dict(self.sender.retries)}, reconnects per subscriber {reconnects}"
        )


def new_course_id() -> str:
    return f"chaos-{uuid.uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def busy_course(gateway: Gateway, course_id: str | None = None) -> AsyncIterator[BusyCourse]:
    """Subscribers live on a course and the traffic running; everything closed on exit."""
    course_id = course_id or new_course_id()
    tokens = [gateway.token(f"chaos-user-{n}", [course_id]) for n in range(USERS)]
    async with GraphqlHttp(gateway.graphql_url) as http:
        sender = ReliableSender(http, course_id, tokens, run_id=uuid.uuid4().hex[:8])
        baseline = await sender.send(0)
        subscribers = await start_subscribers(
            gateway.ws_url,
            tokens,
            course_id,
            after=baseline,
            count=SUBSCRIBERS,
            within=WITHIN_SECONDS,
        )
        traffic: asyncio.Task[None] | None = None
        try:
            traffic = asyncio.create_task(sender.run(MESSAGES, per_second=PER_SECOND, start=1))
            course = BusyCourse(course_id, sender, subscribers, baseline, traffic)
            # Every socket carries the live stream before anything is killed.
            for subscriber in subscribers:
                await subscriber.wait_until(lambda s: bool(s.received), within=WITHIN_SECONDS)
            yield course
            print(course.summary())
        finally:
            if traffic is not None:
                traffic.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await traffic
            await asyncio.gather(*(s.close() for s in subscribers))


def upstream_reconnects(topology: Topology | ContainerTopology) -> float:
    """GraphQL upstream streams reopened, over every GraphQL process."""
    return sum(
        value
        for url in topology.graphql_metrics_urls
        for name, value in scrape(url).items()
        if name.startswith("nextcampus_graphql_upstream_reconnects_total")
    )


# -- the faults --------------------------------------------------------------------------------


async def test_kill_9_of_the_chat_process_holding_the_upstream_streams(
    gateway: Gateway, stack: Topology | ContainerTopology
) -> None:
    async with busy_course(gateway) as course:
        await course.reached(FAULT_AT)
        streams = [scrape(url)["nextcampus_chat_active_streams"] for url in stack.chat_metrics_urls]
        victim = streams.index(max(streams))
        reopened_before = upstream_reconnects(stack)
        stack.chats[victim].kill()
        await course.reached(SECOND_STEP_AT)
        await asyncio.to_thread(stack.restart_chat, victim)
        await course.finish()
        assert upstream_reconnects(stack) > reopened_before, "no upstream stream was cut"


async def test_kill_9_of_a_graphql_process(
    gateway: Gateway, stack: Topology | ContainerTopology
) -> None:
    async with busy_course(gateway) as course:
        await course.reached(FAULT_AT)
        held = [
            scrape(url)["nextcampus_graphql_subscriptions"] for url in stack.graphql_metrics_urls
        ]
        victim = held.index(max(held))
        stack.graphqls[victim].kill()
        await course.reached(SECOND_STEP_AT)
        await asyncio.to_thread(stack.restart_graphql, victim)
        await course.finish()
        resumed = [s for s in course.subscribers if s.reconnects]
        assert resumed, f"no subscriber reconnected although graphql-{victim} held {held}"


async def test_kill_9_of_the_redis_primary_of_the_course(
    gateway: Gateway, stack: Topology | ContainerTopology
) -> None:
    redis = stack.redis
    assert redis is not None
    course_id = new_course_id()
    seq_key = CourseKeys(course_id).seq
    async with busy_course(gateway, course_id) as course:
        await course.reached(FAULT_AT)
        victim = redis.primary_for(seq_key)
        redis.kill_node(victim)
        await asyncio.to_thread(redis.restart_replaced_node, victim)
        await course.reached(SECOND_STEP_AT)
        await course.finish()
        assert redis.primary_for(seq_key) != victim
        await asyncio.to_thread(redis.wait_healthy)
        assert "role:slave" in redis.cli(victim, "info", "replication")


async def test_rolling_graceful_restart_of_the_graphql_processes(
    gateway: Gateway, stack: Topology | ContainerTopology
) -> None:
    assert stack.gateway is not None
    async with busy_course(gateway) as course:
        for index, step in enumerate((FAULT_AT, SECOND_STEP_AT)):
            await course.reached(step)
            await asyncio.to_thread(stack.restart_graphql, index)
            # A rolling update waits for readiness before the next pod.
            await asyncio.to_thread(stack.gateway.wait_ready)
        await course.finish()
        unclosed = [s.name for s in course.subscribers if 1012 not in s.close_codes]
        assert not unclosed, f"never closed with 1012: {unclosed}"
        assert all(s.reconnects for s in course.subscribers)
