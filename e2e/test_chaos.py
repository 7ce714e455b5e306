"""Chaos: a process of the local topology, or a container of the container topology
(`make e2e-containers`: `podman kill` for kill -9), dies mid-traffic, and still no change is
lost, none arrives twice, none out of order (DESIGN.md §3).

Each test drives one busy course through the gateway with a mixed workload
(e2e.clients.MixedWorkload): 300 changes at 50/s — 70 % sends (some of them replies), 15 %
reactions (added, sometimes taken back), 10 % edits, 5 % deletes — each with a fixed client
id, retried until acknowledged. 16 resuming subscribers (the gateway spreads them over both
GraphQL processes) follow it: 12 on `courseEvents`, 4 on `messageAdded` (the older path).
The fault strikes after 100 acknowledgements and traffic goes on after it. Then:
- the store holds exactly what was acknowledged (e2e.changes.store_problem);
- every `courseEvents` subscriber saw every acknowledged change once, in order, as its event,
  nothing else but what a failover undid, and ends where the store is
  (e2e.changes.course_events_problem);
- every `messageAdded` subscriber holds every acknowledged send: ids strictly increasing,
  none missing (a deleted one may come as its tombstone), none that nobody sent, each with
  the content acknowledged (or its acknowledged edit).

What is killed:
- `kill -9` of the chat process holding the course's upstream streams, restarted later
  (GraphQL reopens its upstream on the other one with `after_message_id`);
- `kill -9` of the GraphQL process holding the most subscribers, restarted later (its
  sockets resume through the gateway with `after`; some subscribers must have reconnected);
- `kill -9` of the Redis primary owning the course's slot (its replica takes over); once
  replaced it restarts and rejoins as a replica, as Kubernetes restarts a pod. Until then
  the promoted replica has no replica of its own and the course's sends are refused
  (UNAVAILABLE, retried by the sender): acknowledged means on a replica;
- a failover that loses changes (local topology only: it pauses a Redis process): the
  course primary's replica hangs behind a full replication link, the changes in flight are
  applied on the primary only, carried by the streams and refused (UNAVAILABLE), then the
  primary is killed and the replica takes over without them. Subscribers must get them
  undone (a retraction, a MessageRestoredEvent) and the retries applied once;
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
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
import redis

from devstack.containers import ContainerTopology
from devstack.redis_cluster import RedisCluster
from devstack.scrape import scrape
from devstack.topology import Topology
from e2e.changes import is_undoing, store_problem
from e2e.clients import (
    GraphqlHttp,
    MixedWorkload,
    ReliableSender,
    check_course_events,
    check_delivery,
    event_cursor,
    read_store,
    start_subscribers,
    wait_all_received,
)
from nextcampus_common.keys import CourseKeys
from testing.ws import Subscriber

if TYPE_CHECKING:
    from e2e.conftest import Gateway

pytestmark = pytest.mark.chaos

EVENT_SUBSCRIBERS = 12  # on courseEvents
MESSAGE_SUBSCRIBERS = 4  # on messageAdded
CHANGES = 300
PER_SECOND = 50
# The default limits are 10 messages and 30 edits and reactions per user per 10 s: 60 users
# at 50/s make 5 changes each, never limited.
USERS = 60
FAULT_AT = 100  # acknowledged changes before the fault
SECOND_STEP_AT = 200  # … before the restart of what was killed (or the second restart)
WITHIN_SECONDS = 30.0  # bound of every wait for a condition
BALLAST = b"x" * (48 << 20)  # fills a replication link's socket buffers
LOSSY_SECONDS = 2.0  # how long the replica hangs before its primary dies (past the wait's 1 s)


# -- one busy course ---------------------------------------------------------------------------


@dataclass
class BusyCourse:
    course_id: str
    http: GraphqlHttp
    reader_token: str
    workload: MixedWorkload
    event_subscribers: list[Subscriber]
    message_subscribers: list[Subscriber]
    baseline: int  # the last message before the traffic: subscribers start after it
    traffic: asyncio.Task[None]

    @property
    def subscribers(self) -> list[Subscriber]:
        return self.event_subscribers + self.message_subscribers

    async def reached(self, acknowledged: int) -> None:
        """Wait until `acknowledged` changes of the traffic are acknowledged."""
        waiter = asyncio.ensure_future(
            self.workload.wait_acknowledged(acknowledged, within=WITHIN_SECONDS)
        )
        await asyncio.wait({waiter, self.traffic}, return_when=asyncio.FIRST_COMPLETED)
        if self.traffic.done() and self.traffic.exception() is not None:
            waiter.cancel()
            await self.traffic  # raises the workload's failure
        await waiter

    async def finish(self) -> None:
        """Traffic done, every acknowledged change everywhere, and the invariants hold."""
        await asyncio.wait_for(self.traffic, 2 * WITHIN_SECONDS)
        workload = self.workload
        assert len(workload.acknowledged) + len(workload.refused) == CHANGES
        sent, deleted, edits = workload.sent, workload.deleted_ids, workload.edits
        await wait_all_received(
            self.message_subscribers, [m for m, _ in sent], within=WITHIN_SECONDS, deleted=deleted
        )
        check_delivery(
            self.message_subscribers, sent, sole_sender=True, deleted=deleted, edits=edits
        )
        store = await read_store(self.http, self.course_id, self.reader_token, after=self.baseline)
        problem = store_problem(workload.acknowledged, store)
        assert problem is None, f"the store is not what was acknowledged: {problem}"
        await check_course_events(
            self.event_subscribers, workload.acknowledged, store, within=WITHIN_SECONDS
        )

    def summary(self) -> str:
        reconnects = sorted(s.reconnects for s in self.subscribers)
        received = sorted(len(s.events) for s in self.event_subscribers)
        undone = Counter(
            e["__typename"] for s in self.event_subscribers for e in s.events if is_undoing(e)
        )
        return (
            f"{self.course_id}: {self.workload.summary()}; courseEvents received "
            f"{received[0]}-{received[-1]}, failover corrections {dict(undone)}; reconnects "
            f"per subscriber {reconnects}"
        )


def new_course_id() -> str:
    return f"chaos-{uuid.uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def busy_course(gateway: Gateway, course_id: str | None = None) -> AsyncIterator[BusyCourse]:
    """Subscribers live on a course and the traffic running; everything closed on exit."""
    course_id = course_id or new_course_id()
    users = [
        (f"chaos-user-{n}", gateway.token(f"chaos-user-{n}", [course_id])) for n in range(USERS)
    ]
    moderator = ("chaos-moderator", gateway.token("chaos-moderator", [course_id], [course_id]))
    tokens = [token for _, token in users]
    run_id = uuid.uuid4().hex[:8]
    async with GraphqlHttp(gateway.graphql_url) as http:
        workload = MixedWorkload(http, course_id, users, moderator, run_id=run_id)
        baseline = await ReliableSender(http, course_id, tokens, run_id=f"{run_id}-b").send(0)
        start = await event_cursor(http, course_id, tokens[0])
        subscribers: list[Subscriber] = []
        traffic: asyncio.Task[None] | None = None
        course: BusyCourse | None = None
        try:
            for course_events, count, after in (
                (True, EVENT_SUBSCRIBERS, start),
                (False, MESSAGE_SUBSCRIBERS, baseline),
            ):
                subscribers += await start_subscribers(
                    gateway.ws_url,
                    tokens,
                    course_id,
                    after=after,
                    count=count,
                    within=WITHIN_SECONDS,
                    course_events=course_events,
                )
            traffic = asyncio.create_task(workload.run(CHANGES, per_second=PER_SECOND))
            course = BusyCourse(
                course_id,
                http,
                tokens[0],
                workload,
                subscribers[:EVENT_SUBSCRIBERS],
                subscribers[EVENT_SUBSCRIBERS:],
                baseline,
                traffic,
            )
            # Every socket carries the live stream before anything is killed.
            for subscriber in subscribers:
                await subscriber.wait_until(lambda s: bool(s.events), within=WITHIN_SECONDS)
            yield course
        finally:
            if traffic is not None:
                traffic.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await traffic
            if course is not None:
                # What the run went through, passed or failed (pytest shows it on failure).
                print(course.summary())
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


async def test_a_failover_that_loses_unacknowledged_changes(
    gateway: Gateway, stack: Topology | ContainerTopology
) -> None:
    cluster = stack.redis
    if not isinstance(cluster, RedisCluster):
        pytest.skip("pauses a Redis process of the local topology")
    keys = CourseKeys(new_course_id())
    async with busy_course(gateway, keys.course_id) as course:
        await course.reached(FAULT_AT)
        victim = cluster.primary_for(keys.seq)
        (replica,) = cluster.replica_ports_of(victim)
        try:
            async with course.workload.held(within=WITHIN_SECONDS):
                cluster.pause_node(replica)
                # A large write fills the replication link's socket buffers, so that whatever
                # the primary writes next stays in its own memory (as the chat service's
                # test_durability does); no change of the workload comes before it.
                with redis.Redis(port=victim) as primary:
                    await asyncio.to_thread(primary.set, keys.prefix + "ballast", BALLAST)
            # The changes made now are applied on the primary only and carried by the streams:
            # refused after the replication wait, retried with their client ids (by GraphQL,
            # or by the workload) until the failover.
            await asyncio.sleep(LOSSY_SECONDS)
            cluster.kill_node(victim)
        finally:
            cluster.resume_node(replica)
        await asyncio.to_thread(cluster.restart_replaced_node, victim)
        await course.reached(SECOND_STEP_AT)
        await course.finish()
        untold = [s.name for s in course.event_subscribers if not any(map(is_undoing, s.events))]
        assert not untold, f"the failover lost nothing these subscribers saw: {untold}"


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
        # A socket the last restart closed may have had everything already and still be in
        # its backoff: each is waited for (bounded), not assumed back by now.
        for subscriber in course.subscribers:
            await subscriber.wait_until(lambda s: s.reconnects > 0, within=WITHIN_SECONDS)
        assert all(s.reconnects for s in course.subscribers)
