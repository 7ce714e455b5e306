"""Timetable modes at send time, on the real Redis Cluster: the send script reads the
schedule's segments (as the operator writes them) with Redis's own clock. The windows are
written relative to Redis TIME, so no test waits for a window's edge."""

from __future__ import annotations

import json
from typing import Any

import grpc

from nextcampus_common.keys import CourseKeys
from nextcampus_common.metadata import RETRY_AFTER_MS, metadata_value
from nextcampus_common.proto.chat.v1 import chat_pb2
from testing.grpc_calls import refused

MINUTE_MS = 60_000


def redis_now_ms(cluster_client: Any, key: str) -> int:
    """The clock of the primary that runs the course's scripts."""
    node = cluster_client.get_node_from_key(key)
    seconds, micros = cluster_client.execute_command("TIME", target_nodes=node)
    return int(seconds) * 1000 + int(micros) // 1000


def write_segments(cluster_client: Any, course_id: str, *spans: tuple[int, int, str]) -> int:
    """Segments from Redis's now: (start offset ms, end offset ms, 'r' | 'sN'); returns now."""
    key = CourseKeys(course_id).policy
    now = redis_now_ms(cluster_client, key)
    text = ";".join(f"{now + start}-{now + end}:{code}" for start, end, code in spans)
    cluster_client.hset(key, mapping={"schedule_segments": text})
    return now


async def test_a_read_only_window_refuses_sends_edits_reactions_and_typing(
    client_for, course_id, cluster_client
):
    alice = client_for("alice", [course_id])
    sent = (await alice.send(course_id, "before the exam")).message
    # The exam started a minute ago and ends in ten.
    now = write_segments(cluster_client, course_id, (-MINUTE_MS, 10 * MINUTE_MS, "r"))
    read_only = grpc.StatusCode.FAILED_PRECONDITION
    error = await refused(alice.send(course_id, "during"), read_only, "read-only by its schedule")
    assert "until 20" in (error.details() or "")  # an RFC 3339 instant
    api, token = alice.api, alice.token
    await refused(api.edit(token, course_id, sent.message_id, "edited"), read_only, "read-only")
    await refused(
        api.react(token, course_id, sent.message_id, "👍", add=True), read_only, "read-only"
    )
    await refused(alice.api.typing(alice.token, course_id), read_only, "read-only")
    assert cluster_client.zcard(CourseKeys(course_id).messages) == 1

    policy = await alice.policy(course_id)
    assert policy.mode == chat_pb2.COURSE_MODE_READ_ONLY
    assert abs(policy.mode_ends_at - (now + 10 * MINUTE_MS)) <= 1
    assert policy.next_mode == chat_pb2.COURSE_MODE_OPEN
    assert not policy.read_only  # the archive flag is not the window


async def test_outside_a_window_the_course_is_open(client_for, course_id, cluster_client):
    alice = client_for("alice", [course_id])
    # One window is over, the next begins in a minute.
    now = write_segments(
        cluster_client,
        course_id,
        (-20 * MINUTE_MS, -MINUTE_MS, "r"),
        (MINUTE_MS, 15 * MINUTE_MS, "r"),
    )
    assert not (await alice.send(course_id, "between the exams")).duplicate
    policy = await alice.policy(course_id)
    assert policy.mode == chat_pb2.COURSE_MODE_OPEN
    assert abs(policy.mode_ends_at - (now + MINUTE_MS)) <= 1
    assert policy.next_mode == chat_pb2.COURSE_MODE_READ_ONLY


async def test_slow_mode_refuses_a_second_message_within_its_seconds_but_not_moderators(
    client_for, course_id, cluster_client
):
    write_segments(cluster_client, course_id, (-MINUTE_MS, 30 * MINUTE_MS, "s30"))
    alice = client_for("alice", [course_id])
    bob = client_for("bob", [course_id])
    teacher = client_for("teacher", [course_id], [course_id])
    assert not (await alice.send(course_id, "one")).duplicate
    error = await refused(
        alice.send(course_id, "two"), grpc.StatusCode.RESOURCE_EXHAUSTED, "slow mode"
    )
    retry_after = int(metadata_value(error.trailing_metadata(), RETRY_AFTER_MS) or 0)
    assert 29_000 < retry_after <= 30_000
    # Per user: bob has his own message; the moderator is exempt.
    assert not (await bob.send(course_id, "mine")).duplicate
    for i in range(3):
        assert not (await teacher.send(course_id, f"moderating {i}")).duplicate
    # Once alice's wait is over (its key expires: here, at once) she may send again.
    slow = CourseKeys(course_id).slow("alice")
    cluster_client.delete(slow)
    assert not (await alice.send(course_id, "three", "cm-3")).duplicate
    assert 29_000 < cluster_client.pttl(slow) <= 30_000
    # A retry of that send is the same message, not a second one: slow mode lets it by.
    assert (await alice.send(course_id, "three", "cm-3")).duplicate

    policy = await alice.policy(course_id)
    assert (policy.mode, policy.slow_mode_seconds) == (chat_pb2.COURSE_MODE_SLOW, 30)


async def test_the_policy_lists_the_schedule_windows(client_for, course_id, cluster_client):
    windows = [
        {
            "mode": "SlowMode",
            "slowModeSeconds": 20,
            "timeZone": "Europe/Berlin",
            "weekly": {"days": ["Mon", "Wed"], "startTime": "09:00", "endTime": "11:00"},
        },
        {
            "mode": "ReadOnly",
            "timeZone": "UTC",
            "dated": {"start": "2027-02-15T08:00", "end": "2027-02-15T12:00"},
        },
    ]
    cluster_client.hset(CourseKeys(course_id).policy, "schedule", json.dumps(windows))
    policy = await client_for("alice", [course_id]).policy(course_id)
    weekly, dated = policy.schedule
    assert (weekly.mode, weekly.slow_mode_seconds, weekly.time_zone) == (
        chat_pb2.COURSE_MODE_SLOW,
        20,
        "Europe/Berlin",
    )
    assert (list(weekly.days), weekly.start_time, weekly.end_time) == (
        ["Mon", "Wed"],
        "09:00",
        "11:00",
    )
    assert (dated.mode, dated.start, dated.end) == (
        chat_pb2.COURSE_MODE_READ_ONLY,
        "2027-02-15T08:00",
        "2027-02-15T12:00",
    )
    assert policy.mode == chat_pb2.COURSE_MODE_OPEN
