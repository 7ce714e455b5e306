"""Send → list/get round trips against a real Redis Cluster, and the stored data model."""

from __future__ import annotations

import redis

from nextcampus_common.keys import CourseKeys
from testing.plugin import assert_chain


async def test_send_then_get_and_list(client_for, course_id, redis_cluster):
    alice = client_for("alice", [course_id])
    sent = await alice.send(course_id, "hello, class")
    assert not sent.duplicate
    message = sent.message
    assert (message.course_id, message.user_id, message.content) == (
        course_id,
        "alice",
        "hello, class",
    )
    assert message.timestamp > 1_700_000_000_000  # milliseconds

    fetched = await alice.get(course_id, message.message_id)
    assert fetched.content == "hello, class"
    assert not fetched.deleted

    page = await alice.history(course_id)
    assert [m.message_id for m in page.messages] == [message.message_id]
    assert not page.has_more


async def test_stored_hash_is_the_seed_model_with_the_policy_ttl(
    client_for, course_id, redis_cluster
):
    alice = client_for("alice", [course_id])
    message = (await alice.send(course_id, "stored")).message
    keys = CourseKeys(course_id)
    rc = redis.RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0], decode_responses=True)
    try:
        stored = rc.hgetall(keys.message(message.message_id))
        assert stored["user_id"] == "alice"
        assert stored["content"] == "stored"
        assert stored["timestamp"] == str(message.timestamp)
        ttl = rc.ttl(keys.message(message.message_id))
        assert 86_390 <= ttl <= 86_400
        slots = {
            rc.keyslot(k)
            for k in (
                keys.message(message.message_id),
                keys.messages,
                keys.seq,
                keys.policy,
                keys.events,
                keys.client("alice", message.client_message_id),
                keys.rate("alice"),
                keys.log,
            )
        }
        assert len(slots) == 1
    finally:
        rc.close()


async def test_ids_increase_and_each_names_the_one_before(client_for, course_id):
    alice = client_for("alice", [course_id])
    sent = [(await alice.send(course_id, f"m{i}")).message for i in range(5)]
    assert sent[0].previous_message_id == ""  # the course's first message
    assert_chain(sent)
    history = await alice.history(course_id, limit=10)
    assert [m.previous_message_id for m in history.messages] == [
        m.previous_message_id for m in sent
    ]


async def test_an_id_is_never_handed_out_twice_after_the_sequence_rolls_back(
    client_for, course_id, cluster_client
):
    """A failover that loses the newest writes leaves the new primary with an older `seq`:
    the next message must still get an id above every id handed out before (the clock)."""
    alice = client_for("alice", [course_id])
    first = (await alice.send(course_id, "survives")).message
    lost = [(await alice.send(course_id, f"lost {i}")).message for i in range(3)]
    keys = CourseKeys(course_id)
    # What the promoted replica would hold: the lost messages never reached it.
    for message in lost:
        cluster_client.delete(keys.message(message.message_id))
        cluster_client.zrem(keys.messages, message.message_id)
    cluster_client.set(keys.seq, first.message_id)
    after = (await alice.send(course_id, "after the failover")).message
    assert int(after.message_id) > max(int(m.message_id) for m in lost)
    assert after.previous_message_id == first.message_id


async def test_history_pagination(client_for, course_id):
    alice = client_for("alice", [course_id])
    ids = [(await alice.send(course_id, f"m{i}")).message.message_id for i in range(7)]

    newest = await alice.history(course_id, limit=3)
    assert [m.message_id for m in newest.messages] == ids[4:]  # oldest → newest
    assert newest.has_more

    older = await alice.history(course_id, before=ids[4], limit=3)
    assert [m.message_id for m in older.messages] == ids[1:4]
    assert older.has_more
    oldest = await alice.history(course_id, before=ids[1], limit=3)
    assert [m.message_id for m in oldest.messages] == ids[:1]
    assert not oldest.has_more

    forward = await alice.history(course_id, after=ids[1], limit=2)
    assert [m.message_id for m in forward.messages] == ids[2:4]
    assert forward.has_more
    window = await alice.history(course_id, after=ids[1], before=ids[5], limit=10)
    assert [m.message_id for m in window.messages] == ids[2:5]
    assert not window.has_more
