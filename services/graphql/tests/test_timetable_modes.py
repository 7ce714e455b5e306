"""Timetable modes through GraphQL, on the real stack: `coursePolicy` says the mode, when
it ends, what follows and the schedule's windows (what the page's banner shows), and a
send refused by slow mode is RATE_LIMITED with retryAfterMs. The segments are written
relative to Redis TIME, as the operator would have written them: no waiting."""

from __future__ import annotations

import datetime
import json
from typing import Any

from nextcampus_common.keys import CourseKeys
from testing.graphql_http import SEND, api

POLICY = """query($c: ID!) {
  coursePolicy(courseId: $c) {
    readOnly mode modeEndsAt slowModeSeconds nextMode
    schedule { mode slowModeSeconds timeZone days startTime endTime start end }
  }
}"""
WINDOWS = [
    {
        "mode": "SlowMode",
        "slowModeSeconds": 45,
        "timeZone": "Europe/Berlin",
        "weekly": {"days": ["Tue"], "startTime": "14:00", "endTime": "16:00"},
    },
    {
        "mode": "ReadOnly",
        "timeZone": "Europe/Berlin",
        "dated": {"start": "2027-02-15T08:00", "end": "2027-02-15T12:00"},
    },
]


def redis_now_ms(cluster_client: Any, key: str) -> int:
    node = cluster_client.get_node_from_key(key)
    seconds, micros = cluster_client.execute_command("TIME", target_nodes=node)
    return int(seconds) * 1000 + int(micros) // 1000


async def test_course_policy_shows_the_mode_its_end_and_the_schedule(
    graphql_server, make_token, course_id, cluster_client
):
    key = CourseKeys(course_id).policy
    now = redis_now_ms(cluster_client, key)
    ends = now + 600_000
    cluster_client.hset(
        key,
        mapping={
            "schedule": json.dumps(WINDOWS),
            "schedule_segments": f"{now - 60_000}-{ends}:s45;{ends + 60_000}-{ends + 120_000}:r",
        },
    )
    async with api(graphql_server.url, make_token("alice", [course_id])) as alice:
        policy = (await alice.data(POLICY, c=course_id))["coursePolicy"]
        assert (policy["readOnly"], policy["mode"], policy["slowModeSeconds"]) == (
            False,
            "SLOW_MODE",
            45,
        )
        ends_at = datetime.datetime.fromisoformat(policy["modeEndsAt"])
        assert abs(ends_at.timestamp() * 1000 - ends) <= 1
        assert policy["nextMode"] == "OPEN"
        assert policy["schedule"] == [
            {
                "mode": "SLOW_MODE",
                "slowModeSeconds": 45,
                "timeZone": "Europe/Berlin",
                "days": ["Tue"],
                "startTime": "14:00",
                "endTime": "16:00",
                "start": None,
                "end": None,
            },
            {
                "mode": "READ_ONLY",
                "slowModeSeconds": None,
                "timeZone": "Europe/Berlin",
                "days": [],
                "startTime": None,
                "endTime": None,
                "start": "2027-02-15T08:00",
                "end": "2027-02-15T12:00",
            },
        ]
        await alice.send(course_id, "first")
        (error,) = (await alice.post(SEND, c=course_id, t="second"))["errors"]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert 44_000 < error["extensions"]["retryAfterMs"] <= 45_000
        assert "slow mode" in error["message"]
        assert error["extensions"]["reason"] == "SLOW_MODE"  # told apart from the rate limit


async def test_without_a_schedule_the_course_is_open_for_good(
    graphql_server, make_token, course_id
):
    async with api(graphql_server.url, make_token("alice", [course_id])) as alice:
        policy = (await alice.data(POLICY, c=course_id))["coursePolicy"]
        assert policy == {
            "readOnly": False,
            "mode": "OPEN",
            "modeEndsAt": None,
            "slowModeSeconds": None,
            "nextMode": None,
            "schedule": [],
        }
