"""Acknowledged means replicated; an id is never given to two messages; a message a stream
saw and a failover then lost is retracted to it (README, "Delivery guarantees").

The failover tests use a Redis Cluster of their own (one replica per primary, nodes with
min-replicas-to-write 1 as the chart runs them) and an in-process chat server; what they
kill or pause they address by PID.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import grpc
import pytest
import redis

from devstack.processes import StackError
from devstack.redis_cluster import RedisCluster
from nextcampus_common.chat_api import ChatClient
from nextcampus_common.keys import CourseKeys
from nextcampus_common.metadata import RETRY_AFTER_MS, metadata_value
from nextcampus_common.proto.chat.v1 import chat_pb2
from nextcampus_common.proto.chat.v1.chat_pb2 import (
    ChatMessage,
    CourseEventKind,
    SendMessageResponse,
)
from testing.grpc_calls import StubCalls
from testing.plugin import Collector, EventCollector, assert_chain, established

WITHIN_SECONDS = 60.0


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `check` until it holds (bounded): for what a real cluster does in its own time."""
    deadline = time.monotonic() + WITHIN_SECONDS
    while not await check():
        assert time.monotonic() < deadline, f"not within {WITHIN_SECONDS:.0f} s: {what}"
        await asyncio.sleep(0.1)


async def send_until_acknowledged(
    client: ChatClient, course_id: str, content: str, client_message_id: str
) -> SendMessageResponse:
    """What every client does with UNAVAILABLE: retry with the same client_message_id."""
    deadline = time.monotonic() + WITHIN_SECONDS
    while True:
        try:
            return await client.send(course_id, content, client_message_id, deadline_seconds=5)
        except grpc.aio.AioRpcError as exc:
            retryable = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            if exc.code() not in retryable or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def primary_of(cluster: RedisCluster, course_id: str) -> int | None:
    """The port of the primary owning the course's slot (None while nobody does)."""
    try:
        return cluster.primary_for(CourseKeys(course_id).seq)
    except StackError:
        return None


async def test_a_send_no_replica_confirms_is_refused_and_a_failover_never_reuses_its_id(
    own_redis_cluster, chat_settings_factory, make_token, course_id
):
    """The issue's reproduction: the course primary's replica hangs (SIGSTOP) behind a full
    replication link, M2 is sent, the primary is killed and the replica takes over without
    M2. M2 must not have been acknowledged; the stream that saw M2 gets its tombstone; M3 and
    M2's retry get new ids; history and a resume after M2 say M2 is gone."""
    from nextcampus_chat.server import build_server

    cluster = own_redis_cluster
    server = build_server(chat_settings_factory(redis_nodes=cluster.nodes))
    await server.start()
    client = ChatClient(f"127.0.0.1:{server.port}", make_token("alice", [course_id]))
    collector = Collector(client.subscribe(course_id))
    primary = primary_of(cluster, course_id)
    assert primary is not None
    (replica,) = cluster.replica_ports_of(primary)
    try:
        assert server.redis.min_replicas == 1  # the cluster has replicas: sends wait for one
        m1 = await established(collector, lambda: client.send(course_id, "M1", "cm-1"))

        # The replica hangs; a large write fills the replication link's socket buffers, so
        # whatever the primary writes next stays in its own memory.
        cluster.pause_node(replica)
        primary_client = redis.Redis(port=primary)
        primary_client.set(CourseKeys(course_id).prefix + "ballast", b"x" * (48 << 20))
        primary_client.close()

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.send(course_id, "M2", "cm-2")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "retry" in (refused.value.details() or "")
        assert int(metadata_value(refused.value.trailing_metadata(), RETRY_AFTER_MS) or 0) > 0
        # Published before the wait (README): the stream saw M2 under its id.
        await collector.wait_for(lambda c: any(m.content == "M2" for m in c.messages))
        m2 = next(m for m in collector.messages if m.content == "M2")

        cluster.kill_node(primary)
        cluster.resume_node(replica)
        await eventually(
            lambda: asyncio.to_thread(lambda: primary_of(cluster, course_id) == replica),
            "the replica took over the course's slot",
        )
        # As Kubernetes restarts a pod: the old primary rejoins as a replica, and the shard
        # takes writes again (until then they are refused: it has no replica).
        await asyncio.to_thread(cluster.restart_replaced_node, primary)

        m3 = (await send_until_acknowledged(client, course_id, "M3", "cm-3")).message
        retried = await send_until_acknowledged(client, course_id, "M2", "cm-2")
        assert not retried.duplicate, "M2 survived the failover: the scenario did not happen"
        ids = {m2.message_id, m3.message_id, retried.message.message_id}
        assert len(ids) == 3, f"an id was given to two messages: {ids}"
        assert int(m3.message_id) > int(m2.message_id)

        # The stream: M2's tombstone before anything newer than M2, then M3 and M2's retry.
        await collector.has_ids([int(m3.message_id), int(retried.message.message_id)])
        events = [(m.message_id, m.deleted) for m in collector.messages]
        tombstone = events.index((m2.message_id, True))
        assert events.index((m3.message_id, False)) > tombstone
        assert [e for e in events if e[0] == m2.message_id] == [
            (m2.message_id, False),
            (m2.message_id, True),
        ]
        assert_chain(collector.messages)
        assert server.metrics.retracted_messages._value.get() == 1

        # Recorded for every reader: GetMessage, history, and a resume after M2.
        async def retracted_in_redis() -> bool:
            return (await client.get(course_id, m2.message_id)).deleted

        await eventually(retracted_in_redis, "M2's retraction is recorded")
        history = await client.history(course_id, after=str(m1), limit=50)
        assert [(m.message_id, m.deleted, m.content) for m in history.messages] == [
            (m2.message_id, True, ""),
            (m3.message_id, False, "M3"),
            (retried.message.message_id, False, "M2"),
        ]
        # The event log: M2's addition was lost with the failover (the retraction is
        # recorded when a process notices, after M3 perhaps), the sends after it are there.
        log = [(e.kind, e.message.message_id) for e in (await client.events(course_id)).events]
        assert log[0] == (CourseEventKind.MESSAGE_ADDED, str(m1))
        assert sorted(log[1:]) == sorted(
            [
                (CourseEventKind.MESSAGE_RETRACTED, m2.message_id),
                (CourseEventKind.MESSAGE_ADDED, m3.message_id),
                (CourseEventKind.MESSAGE_ADDED, retried.message.message_id),
            ]
        )
        resumed = Collector(client.subscribe(course_id, m2.message_id))
        try:
            await resumed.has_ids([int(retried.message.message_id)])
            first = resumed.messages[0]
            assert (first.message_id, first.deleted) == (m2.message_id, True)
            assert first.previous_message_id == str(m1)
            assert [m.message_id for m in resumed.messages[1:]] == [
                m3.message_id,
                retried.message.message_id,
            ]
        finally:
            await resumed.close()
    finally:
        cluster.resume_node(replica)
        await collector.close()
        await client.close()
        await server.stop()


async def test_a_message_lost_after_it_was_seen_is_retracted_not_replaced(
    client_for, cluster_client, course_id
):
    """What a failover that lost the newest writes leaves behind, made directly in Redis:
    the messages and the sequence as the promoted replica would hold them. Every stream
    that saw the lost ones gets their tombstones, live and on resume."""
    alice = client_for("alice", [course_id])
    collector = Collector(alice.subscribe(course_id))
    keys = CourseKeys(course_id)
    try:
        survivor = await established(collector, lambda: alice.send(course_id, "survives"))
        lost = [(await alice.send(course_id, f"lost {i}")).message for i in range(3)]
        await collector.has_ids([int(m.message_id) for m in lost])
        for message in lost:
            cluster_client.delete(keys.message(message.message_id))
            cluster_client.zrem(keys.messages, message.message_id)
        cluster_client.set(keys.seq, str(survivor))

        # A client that saw them resumes after the newest lost one before anything else
        # happened: it learns that it is gone, and is not refused as "ahead".
        early = Collector(alice.subscribe(course_id, lost[-1].message_id))
        await early.wait_for(lambda c: len(c.messages) >= 1)
        first = early.messages[0]
        assert (first.message_id, first.deleted, first.previous_message_id) == (
            lost[-1].message_id,
            True,
            str(survivor),
        )
        await early.close()

        after = (await alice.send(course_id, "after the failover")).message
        await collector.has_ids([int(after.message_id)])
        tombstones = [m.message_id for m in collector.messages if m.deleted]
        assert tombstones == [m.message_id for m in lost]
        assert collector.messages[-1].message_id == after.message_id
        assert_chain(collector.messages)

        async def all_recorded() -> bool:
            pages = await alice.history(course_id, after=str(survivor), limit=10)
            return [m.message_id for m in pages.messages if m.deleted] == [
                m.message_id for m in lost
            ]

        await eventually(all_recorded, "the retraction is in history")
        late = Collector(alice.subscribe(course_id, lost[1].message_id))
        try:
            await late.has_ids([int(after.message_id)])
            # The run retracted with lost[1], then what came after it (lost[2]'s tombstone).
            assert [(m.message_id, m.deleted) for m in late.messages] == [
                (lost[0].message_id, True),
                (lost[1].message_id, True),
                (lost[2].message_id, True),
                (after.message_id, False),
            ]
        finally:
            await late.close()
    finally:
        await collector.close()


async def test_a_resume_after_a_lost_message_nobody_retracted_learns_it_is_gone(
    client_for, cluster_client, course_id
):
    """No stream of this course was open, so no process retracted the lost message, and
    newer messages exist: a client that saw it still resumes after it with a tombstone."""
    alice = client_for("alice", [course_id])
    survivor = (await alice.send(course_id, "survives")).message
    lost = (await alice.send(course_id, "lost")).message
    keys = CourseKeys(course_id)
    cluster_client.delete(keys.message(lost.message_id))
    cluster_client.zrem(keys.messages, lost.message_id)
    cluster_client.set(keys.seq, survivor.message_id)
    newer = (await alice.send(course_id, "newer")).message

    page = await alice.history(course_id, after=lost.message_id, limit=10)
    assert [(m.message_id, m.deleted, m.previous_message_id) for m in page.messages] == [
        (lost.message_id, True, survivor.message_id),
        (newer.message_id, False, survivor.message_id),
    ]
    # Older than everything stored: expired, not lost — nothing made up.
    page = await alice.history(course_id, after=str(int(survivor.message_id) - 1), limit=10)
    assert [m.message_id for m in page.messages] == [survivor.message_id, newer.message_id]


async def without_replica(cluster: RedisCluster, course_id: str) -> int:
    """Kill the replica of the course's primary; the primary once it knows it has none."""
    primary = primary_of(cluster, course_id)
    assert primary is not None
    for replica in cluster.replica_ports_of(primary):
        cluster.kill_node(replica)
    await eventually(
        lambda: asyncio.to_thread(lambda: not cluster.replica_ports_of(primary)),
        "the primary lost its replica",
    )
    return primary


async def test_without_any_replica_sends_are_refused_and_nothing_is_stored(
    own_redis_cluster, chat_settings_factory, make_token, course_id, tmp_path
):
    from nextcampus_chat.server import build_server

    cluster = own_redis_cluster
    server = build_server(chat_settings_factory(redis_nodes=cluster.nodes))
    await server.start()
    client = ChatClient(f"127.0.0.1:{server.port}", make_token("alice", [course_id]))
    try:
        await client.send(course_id, "before")
        primary = await without_replica(cluster, course_id)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.send(course_id, "refused", "cm-refused")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert int(metadata_value(refused.value.trailing_metadata(), RETRY_AFTER_MS) or 0) > 0
        page = await client.history(course_id, limit=10)
        assert [m.content for m in page.messages] == ["before"]
        # The replica comes back: the same send goes through, once.
        cluster.start_node(next(p for p in cluster.dead_nodes()))
        await asyncio.to_thread(cluster.wait_healthy)
        sent = await send_until_acknowledged(client, course_id, "refused", "cm-refused")
        assert not sent.duplicate
        page = await client.history(course_id, limit=10)
        assert [m.content for m in page.messages] == ["before", "refused"]
        assert primary_of(cluster, course_id) == primary
    finally:
        await client.close()
        await server.stop()


async def test_accept_without_replicas_acknowledges_with_one_copy_and_says_so(
    own_redis_cluster, chat_settings_factory, make_token, course_id
):
    """`redis_without_replicas=accept` on nodes without min-replicas-to-write: a shard with
    no replica keeps taking messages, counted as writes without a replica."""
    from nextcampus_chat.server import build_server

    cluster = own_redis_cluster
    for port in cluster.ports:
        cluster.cli(port, "config", "set", "min-replicas-to-write", "0")
    server = build_server(
        chat_settings_factory(redis_nodes=cluster.nodes, redis_without_replicas="accept")
    )
    await server.start()
    client = ChatClient(f"127.0.0.1:{server.port}", make_token("alice", [course_id]))
    try:
        await without_replica(cluster, course_id)
        sent: list[ChatMessage] = [
            (await client.send(course_id, f"one copy {i}")).message for i in range(3)
        ]
        page = await client.history(course_id, limit=10)
        assert [m.message_id for m in page.messages] == [m.message_id for m in sent]
        counted = server.metrics.redis_errors.labels("write_without_replica")._value.get()
        assert counted >= 3
    finally:
        await client.close()
        await server.stop()


async def test_a_change_lost_after_streams_carried_it_is_restored_to_what_the_store_keeps(
    client_for, cluster_client, course_id
):
    """What a failover that lost the newest change leaves behind, made directly in Redis: an
    edit the streams carried is gone from the message and the log. The log tail notices that
    its cursor is no longer in the log and restores the message (MESSAGE_RESTORED), once,
    for live streams and for readers that resume."""
    alice = client_for("alice", [course_id])
    calls = StubCalls(alice)
    keys = CourseKeys(course_id)
    sent = (await alice.send(course_id, "v1")).message
    stream = EventCollector(alice.subscribe_events(course_id))
    try:
        await stream.call.initial_metadata()
        edit = chat_pb2.EditMessageRequest(
            course_id=course_id, message_id=sent.message_id, content="v2"
        )
        await calls("EditMessage", edit)
        await stream.wait_for(lambda c: len(c.events) == 1)
        assert stream.events[0].message.content == "v2"
        # The promoted replica never had the edit.
        cluster_client.xdel(keys.log, stream.events[0].cursor)
        message_key = keys.message(sent.message_id)
        cluster_client.hset(message_key, "content", "v1")
        cluster_client.hdel(message_key, "edited_at")
        cluster_client.delete(keys.edits(sent.message_id))

        after = (await alice.send(course_id, "after the failover")).message
        await stream.wait_for(lambda c: len(c.events) == 3)
        assert sorted(
            (e.kind, e.message.message_id, e.message.content) for e in stream.events[1:]
        ) == sorted(
            [
                (CourseEventKind.MESSAGE_ADDED, after.message_id, "after the failover"),
                (CourseEventKind.MESSAGE_RESTORED, sent.message_id, "v1"),
            ]
        )
        restored = next(e for e in stream.events if e.kind == CourseEventKind.MESSAGE_RESTORED)
        assert (restored.message.edited_at, restored.actor_user_id) == (0, "")
        # Recorded once, in the log: a reader that saw the edit and resumes after it gets it.
        resumed = (await alice.events(course_id, after=stream.events[0].cursor)).events
        assert [e.kind for e in resumed].count(CourseEventKind.MESSAGE_RESTORED) == 1
        # Nothing more comes: the next change is the next event.
        await alice.send(course_id, "one more")
        await stream.wait_for(lambda c: len(c.events) == 4)
        assert stream.events[-1].message.content == "one more"
    finally:
        await stream.close()


async def test_an_edit_no_replica_confirmed_is_undone_by_the_failover_and_streams_learn_it(
    own_redis_cluster, chat_settings_factory, make_token, course_id
):
    """A real failover: the course primary's replica hangs behind a full replication link,
    an edit is refused (not acknowledged) after the event stream carried it, the primary is
    killed and the replica takes over without the edit. The stream then gets the message as
    the store keeps it (MESSAGE_RESTORED), and ends in the store's state."""
    from nextcampus_chat.server import build_server

    cluster = own_redis_cluster
    server = build_server(chat_settings_factory(redis_nodes=cluster.nodes))
    await server.start()
    client = ChatClient(f"127.0.0.1:{server.port}", make_token("alice", [course_id]))
    calls = StubCalls(client)
    stream = EventCollector(client.subscribe_events(course_id))
    primary = primary_of(cluster, course_id)
    assert primary is not None
    (replica,) = cluster.replica_ports_of(primary)
    try:
        await stream.call.initial_metadata()
        sent = (await send_until_acknowledged(client, course_id, "v1", "cm-1")).message
        await stream.wait_for(lambda c: len(c.events) == 1)

        cluster.pause_node(replica)
        primary_client = redis.Redis(port=primary)
        primary_client.set(CourseKeys(course_id).prefix + "ballast", b"x" * (48 << 20))
        primary_client.close()
        edit = chat_pb2.EditMessageRequest(
            course_id=course_id, message_id=sent.message_id, content="v2", client_mutation_id="e-1"
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await calls("EditMessage", edit)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        await stream.wait_for(lambda c: any(e.message.content == "v2" for e in c.events))

        cluster.kill_node(primary)
        cluster.resume_node(replica)
        await eventually(
            lambda: asyncio.to_thread(lambda: primary_of(cluster, course_id) == replica),
            "the replica took over the course's slot",
        )
        await asyncio.to_thread(cluster.restart_replaced_node, primary)
        later = (await send_until_acknowledged(client, course_id, "after", "cm-2")).message

        await stream.wait_for(
            lambda c: (
                any(e.kind == CourseEventKind.MESSAGE_RESTORED for e in c.events)
                and any(e.message.message_id == later.message_id for e in c.events)
            )
        )
        restored = next(e for e in stream.events if e.kind == CourseEventKind.MESSAGE_RESTORED)
        assert (restored.message.content, restored.message.edited_at) == ("v1", 0)
        stored = await client.get(course_id, sent.message_id)
        assert stored.content == "v1", "the edit survived the failover: the scenario did not happen"
        final: dict[str, str] = {}
        for event in stream.events:
            final[event.message.message_id] = event.message.content
        assert final == {sent.message_id: "v1", later.message_id: "after"}
        assert server.metrics.restored_messages._value.get() == 1
    finally:
        cluster.resume_node(replica)
        await stream.close()
        await client.close()
        await server.stop()
