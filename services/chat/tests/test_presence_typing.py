"""Presence and typing in the chat service, on the real Redis Cluster: joins and leaves per
GraphQL instance, the union across instances, a dead instance reaped without a goodbye, a page
of members, typing throttled and never in the log, and both as ephemeral events of
SubscribeEvents streams that asked for them (and of no other)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest

from nextcampus_chat.server import build_server
from nextcampus_common.chat_api import ChatClient, stream_live_cursor
from nextcampus_common.keys import CourseKeys
from nextcampus_common.proto.chat.v1.chat_pb2 import CourseEventKind
from testing.plugin import EventCollector

Kind = CourseEventKind


def presence_events(collector: EventCollector) -> list[Any]:
    return [e.presence for e in collector.events if e.kind == Kind.PRESENCE_CHANGED]


async def until(condition: Any, within: float = 20.0, what: str = "condition") -> None:
    """Poll `condition` (an async callable) until it holds, bounded."""
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, f"{what} did not hold within {within} s"
        await asyncio.sleep(0.1)


async def test_joins_and_leaves_count_each_user_once_across_instances(client_for, course_id):
    ann = client_for("ann", [course_id])
    bob = client_for("bob", [course_id])
    watcher = EventCollector(ann.subscribe_events(course_id, ephemeral=True))
    plain = EventCollector(bob.subscribe_events(course_id))
    try:
        await stream_live_cursor(watcher.call)
        await stream_live_cursor(plain.call)
        first = await ann.api.join_presence(ann.token, course_id, "gql-a")
        assert (first.changed, first.online_count) == (True, 1)
        # Ann on a second instance too: still one of her, no change course-wide.
        again = await ann.api.join_presence(ann.token, course_id, "gql-b")
        assert (again.changed, again.online_count) == (False, 1)
        joined = await bob.api.join_presence(bob.token, course_id, "gql-b")
        assert (joined.changed, joined.online_count) == (True, 2)

        page = await ann.api.presence(ann.token, course_id, limit=1)
        assert page.online_count == 2
        assert page.has_more
        assert [m.user_id for m in page.members] == ["ann"]
        assert page.members[0].since > 0
        rest = await ann.api.presence(ann.token, course_id, after="ann", limit=5)
        assert [m.user_id for m in rest.members] == ["bob"]
        assert not rest.has_more

        # Leaving one instance while another holds her: she stays online.
        left = await ann.api.leave_presence(ann.token, course_id, "gql-a")
        assert (left.changed, left.online_count) == (False, 2)
        left = await ann.api.leave_presence(ann.token, course_id, "gql-b")
        assert (left.changed, left.online_count) == (True, 1)

        await watcher.wait_for(lambda c: len(presence_events(c)) == 3)
        changes = presence_events(watcher)
        assert [[m.user_id for m in p.joined] for p in changes] == [["ann"], ["bob"], []]
        assert [list(p.left_user_ids) for p in changes] == [[], [], ["ann"]]
        assert [p.online_count for p in changes] == [1, 2, 1]
        assert all(e.cursor == "" for e in watcher.events)
        # A stream that did not ask for ephemeral events gets none, and the log has none.
        await bob.send(course_id, "a real change")
        await plain.wait_for(lambda c: len(c.events) == 1)
        assert plain.events[0].kind == Kind.MESSAGE_ADDED
        assert [e.kind for e in await ann.all_events(course_id)] == [Kind.MESSAGE_ADDED]
    finally:
        await watcher.close()
        await plain.close()


async def test_an_instance_that_stops_heartbeating_is_reaped(
    chat_settings_factory, make_token, course_id
):
    server = build_server(chat_settings_factory(presence_ttl_seconds=2))
    await server.start()
    ann = ChatClient(f"127.0.0.1:{server.port}", make_token("ann", [course_id]))
    bob = ChatClient(f"127.0.0.1:{server.port}", make_token("bob", [course_id]))
    try:
        await ann.api.join_presence(ann.token, course_id, "dies")
        await bob.api.join_presence(bob.token, course_id, "lives")
        beat = await bob.api.presence_heartbeat(bob.token, course_id, "lives")
        assert (beat.instance_online, beat.online_count, beat.ttl_seconds) == (1, 2, 2)

        async def only_bob_left() -> bool:
            # The live instance keeps renewing (a join renews too, and is idempotent); the
            # dead one ("dies") never does again.
            await bob.api.join_presence(bob.token, course_id, "lives")
            page = await bob.api.presence(bob.token, course_id, limit=10)
            return [m.user_id for m in page.members] == ["bob"] and page.online_count == 1

        await until(only_bob_left, within=10, what="the dead instance's users gone")
        # Nothing of the dead instance is left behind in Redis.
        redis = server.redis
        key = CourseKeys(course_id)
        assert await redis.command(key.presence("dies"), "EXISTS", key.presence("dies")) == 0
        instances = await redis.command(
            key.presence_instances, "ZRANGE", key.presence_instances, 0, -1
        )
        assert "dies" not in instances
        # A heartbeat carrying a user whose own leave failed drops them from that instance.
        beat = await bob.api.presence_heartbeat(bob.token, course_id, "lives", ["bob"])
        assert (beat.instance_online, beat.online_count) == (0, 0)
    finally:
        await ann.close()
        await bob.close()
        await server.stop()


async def test_typing_is_throttled_ephemeral_and_never_logged(
    chat_settings_factory, make_token, course_id
):
    server = build_server(chat_settings_factory(typing_throttle_seconds=3, typing_ttl_seconds=2))
    await server.start()
    ann = ChatClient(f"127.0.0.1:{server.port}", make_token("ann", [course_id]))
    watcher = EventCollector(ann.subscribe_events(course_id, ephemeral=True))
    try:
        await stream_live_cursor(watcher.call)
        first = await ann.api.typing(ann.token, course_id, "12")
        assert (first.published, first.retry_after_ms) == (True, 0)
        throttled = await ann.api.typing(ann.token, course_id)
        assert not throttled.published
        assert 0 < throttled.retry_after_ms <= 3000
        await watcher.wait_for(lambda c: len(c.events) == 1)
        (event,) = watcher.events
        assert event.kind == Kind.TYPING
        assert event.actor_user_id == "ann"
        assert (event.typing.thread_id, event.typing.ttl_ms, event.cursor) == ("12", 2000, "")

        async def published_again() -> bool:
            return (await ann.api.typing(ann.token, course_id)).published

        await until(published_again, within=15, what="typing after the throttle")
        await watcher.wait_for(lambda c: len(c.events) == 2)
        assert watcher.events[1].typing.thread_id == ""
        assert await ann.all_events(course_id) == []
        # An archived (read-only) course: nobody sends there, so nobody types.
        policy = CourseKeys(course_id).policy
        await server.redis.command(policy, "HSET", policy, "read_only", "1")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ann.api.typing(ann.token, course_id)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await watcher.close()
        await ann.close()
        await server.stop()


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda c, t: c.api.join_presence(t, "other", "gql-a"), grpc.StatusCode.PERMISSION_DENIED),
        (lambda c, t: c.api.presence(t, "other"), grpc.StatusCode.PERMISSION_DENIED),
        (lambda c, t: c.api.typing(t, "other"), grpc.StatusCode.PERMISSION_DENIED),
        (lambda c, t: c.api.presence_heartbeat(t, "other", "x"), grpc.StatusCode.PERMISSION_DENIED),
        (lambda c, t: c.api.join_presence(t, "c1", "bad id!"), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda c, t: c.api.join_presence(t, "c1", "x" * 65), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda c, t: c.api.presence(t, "c1", limit=10_000), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda c, t: c.api.presence(t, "c1", after="no spaces"), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda c, t: c.api.typing(t, "c1", "not-an-id"), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda c, t: c.api.typing(t, "bad course!"), grpc.StatusCode.INVALID_ARGUMENT),
        (
            lambda c, t: c.api.presence_heartbeat(t, "c1", "x", ["ok"] * 1001),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ],
)
async def test_refused_for_non_members_and_bad_input(client_for, call, code):
    client = client_for("ann", ["c1"])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(client, client.token)
    assert refused.value.code() == code, refused.value.details()
