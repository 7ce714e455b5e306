"""Rules of a send and a delete: idempotent retries, the per-user rate limit, the course
policy, and who may delete what (the tombstone reaches every stream)."""

from __future__ import annotations

import grpc
import pytest

from nextcampus_chat.server import build_server
from nextcampus_common.chat_api import ChatClient
from nextcampus_common.keys import CourseKeys
from nextcampus_common.metadata import RETRY_AFTER_MS, metadata_value
from testing.plugin import Collector, established


async def test_a_retried_send_returns_the_original_message(client_for, course_id, cluster_client):
    alice = client_for("alice", [course_id])
    first = await alice.send(course_id, "only once", "retry-1")
    again = await alice.send(course_id, "only once (edited by a buggy client)", "retry-1")
    assert not first.duplicate
    assert again.duplicate
    assert again.message == first.message
    assert again.message.content == "only once"
    assert cluster_client.zcard(CourseKeys(course_id).messages) == 1
    # The key is per user: bob's send with the same client id is his own message.
    bob = client_for("bob", [course_id])
    bobs = await bob.send(course_id, "mine", "retry-1")
    assert not bobs.duplicate
    assert bobs.message.message_id != first.message.message_id


async def test_policy_defaults_when_the_course_has_none(client_for, course_id):
    policy = await client_for("alice", [course_id]).policy(course_id)
    assert (policy.course_id, policy.ttl_seconds, policy.max_length) == (course_id, 86400, 4000)
    assert not policy.read_only
    # The test server runs without a default rate limit (chat_settings_factory).
    assert (policy.rate_limit_messages, policy.rate_limit_seconds) == (0, 10)


async def test_default_rate_limit_is_ten_messages_per_ten_seconds(
    chat_settings_factory, make_token, course_id, cluster_client
):
    server = build_server(chat_settings_factory(default_rate_limit_messages=10))
    await server.start()
    alice = ChatClient(f"127.0.0.1:{server.port}", make_token("alice", [course_id]))
    bob = ChatClient(f"127.0.0.1:{server.port}", make_token("bob", [course_id]))
    try:
        for i in range(10):
            await alice.send(course_id, f"m{i}")
        with pytest.raises(grpc.aio.AioRpcError) as limited:
            await alice.send(course_id, "one too many")
        assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "too many messages" in (limited.value.details() or "")
        retry_after = metadata_value(limited.value.trailing_metadata(), RETRY_AFTER_MS)
        assert retry_after is not None
        assert 0 < int(retry_after) <= 1000
        # Per user: bob is not limited by alice's burst.
        assert not (await bob.send(course_id, "bob is fine")).duplicate
        assert cluster_client.zcard(CourseKeys(course_id).messages) == 11
        assert server.metrics.sends.labels("rate_limited")._value.get() == 1
    finally:
        await alice.close()
        await bob.close()
        await server.stop()


async def test_course_policy_sets_rate_limit_max_length_and_ttl(
    client_for, course_id, cluster_client
):
    keys = CourseKeys(course_id)
    cluster_client.hset(
        keys.policy,
        mapping={
            "ttl_seconds": 600,
            "max_length": 5,
            "rate_limit_messages": 2,
            "rate_limit_seconds": 3600,
        },
    )
    alice = client_for("alice", [course_id])
    policy = await alice.policy(course_id)
    assert (policy.ttl_seconds, policy.max_length, policy.read_only) == (600, 5, False)
    assert (policy.rate_limit_messages, policy.rate_limit_seconds) == (2, 3600)
    message = (await alice.send(course_id, "12345")).message
    assert 590 <= cluster_client.ttl(keys.message(message.message_id)) <= 600
    with pytest.raises(grpc.aio.AioRpcError) as too_long:
        await alice.send(course_id, "123456")
    assert too_long.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "limit of 5 characters" in (too_long.value.details() or "")
    await alice.send(course_id, "two")
    with pytest.raises(grpc.aio.AioRpcError) as limited:
        await alice.send(course_id, "three")
    assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry_after = metadata_value(limited.value.trailing_metadata(), RETRY_AFTER_MS)
    assert retry_after is not None
    assert int(retry_after) > 1_000_000


async def test_delete_rules_and_the_tombstone_reaches_streams(client_for, course_id):
    alice = client_for("alice", [course_id])
    bob = client_for("bob", [course_id])
    moderator = client_for("teacher", [], moderates=[course_id])
    collector = Collector(bob.subscribe(course_id))
    try:
        await established(collector, lambda: alice.send(course_id, "probe"))
        own = (await alice.send(course_id, "mine")).message
        other = (await alice.send(course_id, "moderate me")).message

        with pytest.raises(grpc.aio.AioRpcError) as forbidden:
            await bob.delete(course_id, own.message_id)
        assert forbidden.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert (await bob.get(course_id, own.message_id)).content == "mine"

        deleted = await alice.delete(course_id, own.message_id)
        assert deleted.deleted
        assert deleted.content == ""
        moderated = await moderator.delete(course_id, other.message_id)
        assert moderated.deleted
        assert moderated.user_id == "alice"

        fetched = await bob.get(course_id, own.message_id)
        assert fetched.deleted
        assert fetched.content == ""
        history = await bob.history(course_id)
        assert [(m.message_id, m.deleted) for m in history.messages][-2:] == [
            (own.message_id, True),
            (other.message_id, True),
        ]
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await alice.delete(course_id, str(int(other.message_id) + 100))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND

        await collector.wait_for(lambda c: sum(m.deleted for m in c.messages) == 2)
        tombstones = [m for m in collector.messages if m.deleted]
        assert [m.message_id for m in tombstones] == [own.message_id, other.message_id]
        assert all(m.content == "" for m in tombstones)
    finally:
        await collector.close()


async def test_a_resumed_stream_replays_deleted_messages_as_tombstones(client_for, course_id):
    alice = client_for("alice", [course_id])
    first = (await alice.send(course_id, "first")).message
    second = (await alice.send(course_id, "second")).message
    await alice.delete(course_id, second.message_id)
    third = (await alice.send(course_id, "third")).message
    collector = Collector(alice.subscribe(course_id, first.message_id))
    try:
        await collector.wait_for(lambda c: len(c.messages) == 2)
        replayed = [(m.message_id, m.deleted, m.content) for m in collector.messages]
        assert replayed == [(second.message_id, True, ""), (third.message_id, False, "third")]
    finally:
        await collector.close()
