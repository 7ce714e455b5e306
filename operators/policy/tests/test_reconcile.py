"""The reconcile module against a real Redis Cluster, with a real chat server sending by the
policies it writes: apply, TTL changes (existing messages re-timed, checked with PTTL),
read-only, rate limit, length, delete, drift repair, conflicts, policies from namespaces
that may not govern a course, bad specs, Redis away."""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog

from nextcampus_common.chat_api import ChatClient
from nextcampus_common.keys import CourseKeys
from nextcampus_common.proto.chat.v1.chat_pb2 import (
    ANONYMOUS_POSTING_DISABLED,
    ANONYMOUS_POSTING_TO_CLASSMATES,
)
from nextcampus_common.redis_cluster import ClusterClient
from nextcampus_policy.exports import ExportDirectory
from nextcampus_policy.metrics import OperatorMetrics
from nextcampus_policy.reconcile import (
    Outcome,
    PolicyReconciler,
    Trigger,
    event_for,
    export_event_for,
    status_for,
)
from nextcampus_policy.settings import PolicyOperatorSettings
from nextcampus_policy.spec import CourseGovernance, PolicyRef, Reason
from nextcampus_policy.store import PolicyStore
from testing.exports import check_rich_course, populate, read

DAY = 86_400


def ref(
    course_id: str,
    name: str = "policy",
    created: str = "2026-01-01T00:00:00Z",
    namespace: str = "courses",
) -> PolicyRef:
    return PolicyRef(created=created, namespace=namespace, name=name, course_id=course_id)


def ttl_seconds(cluster_client: Any, key: str) -> float:
    """What is left of a key's life (PTTL), in seconds; -2/1000 when it is gone."""
    return float(cluster_client.pttl(key)) / 1000


async def send_some(client: ChatClient, course_id: str, count: int) -> list[str]:
    return [(await client.send(course_id, f"message {n}")).message.message_id for n in range(count)]


async def test_apply_writes_the_policy_and_sends_follow_it(
    reconciler: PolicyReconciler,
    client_for: Callable[..., ChatClient],
    cluster_client: Any,
    course_id: str,
) -> None:
    spec = {
        "courseId": course_id,
        "messageTTLSeconds": 3600,
        "maxMessageLength": 20,
        "rateLimit": {"messages": 3, "perSeconds": 60},
    }
    outcome = await reconciler.reconcile(ref(course_id), spec)

    assert outcome.ready
    assert outcome.changed
    assert outcome.effective_ttl_seconds == 3600
    assert cluster_client.hgetall(CourseKeys(course_id).policy) == {
        "owner": "courses/policy",
        "ttl_seconds": "3600",
        "max_length": "20",
        "read_only": "0",
        "rate_limit_messages": "3",
        "rate_limit_seconds": "60",
    }
    assert "TTL 3600 s" in outcome.message

    # The chat service honours every field at once, on the next send.
    client = client_for("ada", [course_id])
    sent = await client.send(course_id, "short enough")
    assert (
        3500
        < ttl_seconds(cluster_client, CourseKeys(course_id).message(sent.message.message_id))
        <= 3600
    )
    with pytest.raises(grpc.aio.AioRpcError) as too_long:
        await client.send(course_id, "x" * 21)
    assert too_long.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "20" in (too_long.value.details() or "")
    await client.send(course_id, "two")
    await client.send(course_id, "three")
    with pytest.raises(grpc.aio.AioRpcError) as limited:
        await client.send(course_id, "four")
    assert limited.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED

    # The same spec again changes nothing.
    again = await reconciler.reconcile(ref(course_id), spec)
    assert again.ready
    assert not again.changed
    assert again.retimed is None


async def test_a_new_ttl_re_times_existing_messages(
    reconciler: PolicyReconciler,
    client_for: Callable[..., ChatClient],
    cluster_client: Any,
    course_id: str,
    metric_value: Callable[..., float],
) -> None:
    keys = CourseKeys(course_id)
    client = client_for("ada", [course_id])
    ids = await send_some(client, course_id, 5)
    for message_id in ids:
        assert ttl_seconds(cluster_client, keys.message(message_id)) > DAY - 60

    # A week: every message, its retry key and the index live a week from when it was sent.
    week = 7 * DAY
    outcome = await reconciler.reconcile(
        ref(course_id), {"courseId": course_id, "messageTTLSeconds": week}
    )
    assert outcome.retimed is not None
    assert (outcome.retimed.retimed, outcome.retimed.removed) == (5, 0)
    assert outcome.retimed.batches == 3  # 2 per round trip in these tests
    for message_id in ids:
        assert week - 60 < ttl_seconds(cluster_client, keys.message(message_id)) <= week
    assert week - 60 < ttl_seconds(cluster_client, keys.messages) <= week
    # The retry key of a send (its client message id) expires with its message.
    user, client_message_id = cluster_client.hmget(
        keys.message(ids[0]), "user_id", "client_message_id"
    )
    retry_key = keys.client(user, client_message_id)
    assert week - 60 < ttl_seconds(cluster_client, retry_key) <= week
    assert metric_value("nextcampus_operator_messages_retimed_total") == 5

    # Shorter than a message's age: it goes now, with its index entry.
    old = ids[0]
    two_hours_ago = int((time.time() - 2 * 3600) * 1000)
    cluster_client.hset(keys.message(old), "timestamp", str(two_hours_ago))
    outcome = await reconciler.reconcile(
        ref(course_id), {"courseId": course_id, "messageTTLSeconds": 3600}
    )
    assert outcome.retimed is not None
    assert (outcome.retimed.retimed, outcome.retimed.removed) == (4, 1)
    assert "1 past the new TTL removed" in outcome.message
    assert cluster_client.exists(keys.message(old)) == 0
    assert cluster_client.zrange(keys.messages, 0, -1) == ids[1:]
    history = await client.history(course_id)
    assert [m.message_id for m in history.messages] == ids[1:]
    for message_id in ids[1:]:
        assert 3500 < ttl_seconds(cluster_client, keys.message(message_id)) <= 3600


async def test_a_re_time_cut_short_is_finished_by_the_next_reconcile(
    reconciler: PolicyReconciler,
    client_for: Callable[..., ChatClient],
    cluster_client: Any,
    course_id: str,
) -> None:
    keys = CourseKeys(course_id)
    client = client_for("ada", [course_id])
    ids = await send_some(client, course_id, 4)
    policy, spec = ref(course_id), {"courseId": course_id, "messageTTLSeconds": 3600}
    await reconciler.reconcile(policy, spec)
    assert "retime_pending" not in cluster_client.hgetall(keys.policy)

    # What an operator killed after the policy write and the first batch leaves behind:
    # the new policy, half the messages still on the old TTL, the marker.
    for message_id in ids[2:]:
        cluster_client.pexpire(keys.message(message_id), DAY * 1000)
    cluster_client.hset(keys.policy, "retime_pending", "1")

    finished = await reconciler.reconcile(policy, spec, trigger=Trigger.RESYNC)
    assert finished.ready
    assert not finished.changed  # the policy itself was right
    assert finished.retimed is not None
    assert finished.retimed.retimed == 4
    for message_id in ids:
        assert 3500 < ttl_seconds(cluster_client, keys.message(message_id)) <= 3600
    assert "retime_pending" not in cluster_client.hgetall(keys.policy)


async def test_read_only_keeps_history_and_refuses_sends(
    reconciler: PolicyReconciler, client_for: Callable[..., ChatClient], course_id: str
) -> None:
    client = client_for("ada", [course_id])
    ids = await send_some(client, course_id, 2)
    outcome = await reconciler.reconcile(ref(course_id), {"courseId": course_id, "readOnly": True})
    assert outcome.ready
    assert "read-only yes" in outcome.message

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.send(course_id, "after the archive")
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert [m.message_id for m in (await client.history(course_id)).messages] == ids
    policy = await client.policy(course_id)
    assert policy.read_only

    # Opened again: sends go through.
    await reconciler.reconcile(ref(course_id), {"courseId": course_id, "readOnly": False})
    await client.send(course_id, "back again")


async def test_release_restores_the_defaults(
    reconciler: PolicyReconciler,
    client_for: Callable[..., ChatClient],
    cluster_client: Any,
    course_id: str,
    operator_settings: PolicyOperatorSettings,
) -> None:
    keys = CourseKeys(course_id)
    client = client_for("ada", [course_id])
    policy = ref(course_id)
    await reconciler.reconcile(
        policy, {"courseId": course_id, "messageTTLSeconds": 600, "maxMessageLength": 12}
    )
    ids = await send_some(client, course_id, 3)
    assert ttl_seconds(cluster_client, keys.message(ids[0])) <= 600

    outcome = await reconciler.release(policy, [policy])

    assert outcome.ready
    assert outcome.changed
    assert outcome.effective_ttl_seconds == operator_settings.default_ttl_seconds == DAY
    assert f"back on the defaults (TTL {DAY} s)" in outcome.message
    assert cluster_client.exists(keys.policy) == 0
    for message_id in ids:
        assert DAY - 60 < ttl_seconds(cluster_client, keys.message(message_id)) <= DAY
    effective = await client.policy(course_id)
    assert (effective.ttl_seconds, effective.max_length) == (DAY, 4000)
    await client.send(course_id, "longer than twelve characters")


async def test_a_resync_repairs_drift(
    reconciler: PolicyReconciler,
    cluster_client: Any,
    course_id: str,
    metric_value: Callable[..., float],
) -> None:
    keys = CourseKeys(course_id)
    policy = ref(course_id)
    spec = {"courseId": course_id, "messageTTLSeconds": 1800, "readOnly": True}
    await reconciler.reconcile(policy, spec)
    written = cluster_client.hgetall(keys.policy)

    quiet = await reconciler.reconcile(policy, spec, trigger=Trigger.RESYNC)
    assert (quiet.ready, quiet.changed) == (True, False)
    assert metric_value("nextcampus_operator_drift_repairs_total") == 0

    # Redis restarted without its data: the hash is gone.
    cluster_client.delete(keys.policy)
    repaired = await reconciler.reconcile(policy, spec, trigger=Trigger.RESYNC)
    assert (repaired.ready, repaired.changed) == (True, True)
    assert "drifted" in repaired.message
    assert cluster_client.hgetall(keys.policy) == written

    # Edited by hand.
    cluster_client.hset(keys.policy, mapping={"read_only": "0", "max_length": "1"})
    await reconciler.reconcile(policy, spec, trigger=Trigger.RESYNC)
    assert cluster_client.hgetall(keys.policy) == written
    assert metric_value("nextcampus_operator_drift_repairs_total") == 2
    assert (
        metric_value("nextcampus_operator_reconciles_total", result="applied", trigger="resync")
        == 2
    )
    assert (
        metric_value("nextcampus_operator_reconciles_total", result="unchanged", trigger="resync")
        == 1
    )


async def test_the_older_of_two_policies_governs_a_course(
    reconciler: PolicyReconciler, cluster_client: Any, course_id: str
) -> None:
    keys = CourseKeys(course_id)
    older = ref(course_id, "older", created="2026-03-01T10:00:00Z")
    newer = ref(course_id, "newer", created="2026-03-02T10:00:00Z")
    older_spec = {"courseId": course_id, "messageTTLSeconds": 7200}
    newer_spec = {"courseId": course_id, "messageTTLSeconds": 60, "readOnly": True}
    both = [older, newer]

    # Whatever order they are seen in.
    conflict = await reconciler.reconcile(newer, newer_spec, both)
    assert conflict.reason is Reason.CONFLICT
    assert "governed by the older policy courses/older" in conflict.message
    assert cluster_client.exists(keys.policy) == 0
    assert (await reconciler.reconcile(older, older_spec, both)).ready
    assert (await reconciler.reconcile(newer, newer_spec, both)).reason is Reason.CONFLICT
    assert cluster_client.hget(keys.policy, "owner") == "courses/older"
    assert cluster_client.hget(keys.policy, "ttl_seconds") == "7200"

    # Deleting the newer one changes nothing; deleting the older hands the course over.
    untouched = await reconciler.release(newer, both, {older: older_spec, newer: newer_spec})
    assert (untouched.ready, untouched.changed) == (True, False)
    assert cluster_client.hget(keys.policy, "owner") == "courses/older"
    handed = await reconciler.release(older, both, {older: older_spec, newer: newer_spec})
    assert handed.ready
    assert "handed over to courses/newer" in handed.message
    assert cluster_client.hget(keys.policy, "owner") == "courses/newer"
    assert cluster_client.hget(keys.policy, "read_only") == "1"
    assert (await reconciler.reconcile(newer, newer_spec, [newer])).ready


# The chart's operator.governedCourses: the release namespace governs every course, the
# archive namespace only courses named cs-*.
GOVERNED = {"chat": ["*"], "archive": ["cs-*"]}


@pytest.fixture
def governed(
    reconciler: PolicyReconciler,
    operator_settings: PolicyOperatorSettings,
    metrics: OperatorMetrics,
) -> PolicyReconciler:
    return PolicyReconciler(
        reconciler.store, operator_settings, metrics, governance=CourseGovernance.of(GOVERNED)
    )


async def test_a_policy_from_a_namespace_that_may_not_govern_the_course_changes_nothing(
    governed: PolicyReconciler,
    client_for: Callable[..., ChatClient],
    cluster_client: Any,
    course_id: str,
    metric_value: Callable[..., float],
) -> None:
    keys = CourseKeys(course_id)
    client = client_for("ada", [course_id])
    ids = await send_some(client, course_id, 3)
    # Two hours old: a 60 s TTL, if applied, would delete it at once.
    two_hours_ago = int((time.time() - 2 * 3600) * 1000)
    cluster_client.hset(keys.message(ids[0]), "timestamp", str(two_hours_ago))

    # Anyone who may create a policy in some other namespace tries to wipe the course.
    wipe = {"courseId": course_id, "messageTTLSeconds": 60, "readOnly": True}
    outcome = await governed.reconcile(ref(course_id, "wipe", namespace="sandbox"), wipe)

    assert outcome.reason is Reason.NOT_PERMITTED
    assert not outcome.ready
    assert outcome.effective_ttl_seconds is None
    assert f"namespace sandbox may not govern course {course_id}" in outcome.message
    assert "no course" in outcome.message
    assert cluster_client.exists(keys.policy) == 0
    assert [m.message_id for m in (await client.history(course_id)).messages] == ids
    for message_id in ids:
        assert DAY - 60 < ttl_seconds(cluster_client, keys.message(message_id)) <= DAY
    await client.send(course_id, "still open")  # not read-only either
    assert (
        metric_value(
            "nextcampus_operator_reconciles_total", result="not_permitted", trigger="change"
        )
        == 1
    )

    # A namespace with patterns: only the courses they match, and the message names them.
    archive = await governed.reconcile(ref(course_id, namespace="archive"), wipe)
    assert archive.reason is Reason.NOT_PERMITTED
    assert "only courses matching cs-*" in archive.message
    assert cluster_client.exists(keys.policy) == 0
    cs_course = f"cs-{course_id}"
    allowed = await governed.reconcile(
        ref(cs_course, namespace="archive"), {"courseId": cs_course, "readOnly": True}
    )
    assert allowed.ready
    assert cluster_client.hget(CourseKeys(cs_course).policy, "owner") == "archive/policy"

    # Deleting the refused policy does not restore anything either: it governed nothing.
    governing_policy = ref(course_id, "rules", namespace="chat")
    await governed.reconcile(governing_policy, {"courseId": course_id, "maxMessageLength": 50})
    released = await governed.release(
        ref(course_id, "wipe", namespace="sandbox"),
        [governing_policy, ref(course_id, "wipe", namespace="sandbox")],
    )
    assert (released.ready, released.changed) == (True, False)
    assert cluster_client.hget(keys.policy, "owner") == "chat/rules"


async def test_a_policy_that_may_not_govern_never_counts_as_the_older_one(
    governed: PolicyReconciler, cluster_client: Any, course_id: str
) -> None:
    keys = CourseKeys(course_id)
    foreign = ref(course_id, "wipe", created="2026-03-01T10:00:00Z", namespace="sandbox")
    permitted = ref(course_id, "rules", created="2026-03-02T10:00:00Z", namespace="chat")
    foreign_spec = {"courseId": course_id, "messageTTLSeconds": 60}
    permitted_spec = {"courseId": course_id, "messageTTLSeconds": 7200}
    both = [foreign, permitted]
    specs = {foreign: foreign_spec, permitted: permitted_spec}

    # Older, but refused: the permitted policy governs, no Conflict.
    assert (await governed.reconcile(foreign, foreign_spec, both)).reason is Reason.NOT_PERMITTED
    applied = await governed.reconcile(permitted, permitted_spec, both)
    assert applied.ready, applied.message
    assert cluster_client.hget(keys.policy, "ttl_seconds") == "7200"

    # The permitted one goes: the course returns to the defaults, not to the refused one.
    released = await governed.release(permitted, both, specs)
    assert released.ready
    assert "back on the defaults" in released.message
    assert cluster_client.exists(keys.policy) == 0


def test_governed_courses_come_from_json_and_bad_ones_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEXTCAMPUS_GOVERNED_COURSES", '{"chat": ["*"], "archive": ["cs-*"]}')
    assert PolicyOperatorSettings().governed_courses == GOVERNED
    monkeypatch.delenv("NEXTCAMPUS_GOVERNED_COURSES")
    assert PolicyOperatorSettings().governed_courses is None  # every namespace, every course
    for bad, words in (
        ("{}", "at least one namespace"),
        ('{"Chat!": ["*"]}', "not a namespace name"),
        ('{"chat": ["a b"]}', "not a course-id pattern"),
        ('["*"]', "governed_courses"),
    ):
        monkeypatch.setenv("NEXTCAMPUS_GOVERNED_COURSES", bad)
        with pytest.raises(ValueError, match="governed_courses") as refused:
            PolicyOperatorSettings()
        assert words in str(refused.value), bad


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"courseId": "bad course!"}, "courseId"),
        ({"courseId": "c1", "messageTTLSeconds": 5}, "messageTTLSeconds"),
        ({"courseId": "c1", "maxMessageLength": 0}, "maxMessageLength"),
        ({"courseId": "c1", "rateLimit": {"messages": 3}}, "rateLimit.perSeconds"),
        ({"courseId": "c1", "readOnly": "maybe"}, "readOnly"),
        ({"courseId": "c1", "colour": "blue"}, "colour"),
        ({}, "courseId"),
    ],
)
async def test_an_invalid_spec_is_reported_and_nothing_is_written(
    reconciler: PolicyReconciler, cluster_client: Any, spec: dict[str, Any], words: str
) -> None:
    outcome = await reconciler.reconcile(ref("c1"), spec)
    assert outcome.reason is Reason.INVALID_SPEC
    assert words in outcome.message
    assert cluster_client.exists(CourseKeys("c1").policy) == 0


async def test_redis_away_is_reported_not_raised(
    operator_settings: PolicyOperatorSettings, course_id: str
) -> None:
    away = operator_settings.model_copy(
        update={"redis_nodes": ["127.0.0.1:1"], "redis_retry_seconds": 0.3}
    )
    store = PolicyStore(ClusterClient(away))
    try:
        reconciler = PolicyReconciler(store, away)
        outcome = await reconciler.reconcile(ref(course_id), {"courseId": course_id})
        released = await reconciler.release(ref(course_id), [ref(course_id)])
    finally:
        await store.close()
    assert outcome.reason is Reason.REDIS_UNAVAILABLE
    assert "could not apply the policy" in outcome.message
    assert released.reason is Reason.REDIS_UNAVAILABLE


# -- status and events -------------------------------------------------------------------


def test_status_keeps_the_transition_time_until_ready_changes() -> None:
    t0 = datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.UTC)
    t1 = t0 + datetime.timedelta(minutes=5)
    applied = Outcome(Reason.APPLIED, "TTL 60 s", effective_ttl_seconds=60, changed=True)
    first = status_for(applied, 1, None, now=t0)
    assert first == {
        "observedGeneration": 1,
        "effectiveTTLSeconds": 60,
        # No schedule's mode known (an Outcome without one): removed from the status.
        "mode": None,
        "nextMode": None,
        "nextModeChange": None,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "PolicyApplied",
                "message": "TTL 60 s",
                "lastTransitionTime": "2026-05-01T12:00:00Z",
                "observedGeneration": 1,
            }
        ],
    }
    second = status_for(applied, 2, first, now=t1)
    assert second["conditions"][0]["lastTransitionTime"] == "2026-05-01T12:00:00Z"
    assert second["observedGeneration"] == 2

    away = Outcome(Reason.REDIS_UNAVAILABLE, "could not apply")
    third = status_for(away, 2, second, now=t1)
    assert third["conditions"][0]["status"] == "False"
    assert third["conditions"][0]["lastTransitionTime"] == "2026-05-01T12:05:00Z"
    assert third["effectiveTTLSeconds"] is None  # removed: not known to be in force


def test_an_event_for_each_new_outcome_only() -> None:
    applied = Outcome(Reason.APPLIED, "TTL 60 s", effective_ttl_seconds=60, changed=True)
    first = event_for(applied, None)
    assert first is not None
    assert (first.type, first.reason) == ("Normal", "PolicyApplied")
    shown = status_for(applied, 1, None)
    assert event_for(Outcome(Reason.APPLIED, "TTL 60 s", 60, changed=False), shown) is None
    assert event_for(applied, shown) is not None  # changed again (drift repaired)
    conflict = event_for(Outcome(Reason.CONFLICT, "governed by x"), shown)
    assert conflict is not None
    assert (conflict.type, conflict.reason) == ("Warning", "Conflict")
    assert (
        event_for(
            Outcome(Reason.CONFLICT, "governed by x"),
            status_for(Outcome(Reason.CONFLICT, "x"), 1, None),
        )
        is None
    )


async def test_the_edit_window_reaches_the_chat_service(
    reconciler: PolicyReconciler, client_for: Callable[..., ChatClient], course_id: str
) -> None:
    client = client_for("ada", [course_id])
    outcome = await reconciler.reconcile(
        ref(course_id), {"courseId": course_id, "editWindowSeconds": 0}
    )
    assert outcome.ready
    assert "no edits" in outcome.message
    assert (await client.policy(course_id)).edit_window_seconds == 0
    outcome = await reconciler.reconcile(
        ref(course_id), {"courseId": course_id, "editWindowSeconds": 300}
    )
    assert "edits for 300 s" in outcome.message
    assert (await client.policy(course_id)).edit_window_seconds == 300
    # Left out: the chat service's default.
    await reconciler.reconcile(ref(course_id), {"courseId": course_id})
    assert (await client.policy(course_id)).edit_window_seconds == 3600


async def test_anonymous_posting_reaches_the_chat_service_and_goes_when_switched_off(
    reconciler: PolicyReconciler, client_for: Callable[..., ChatClient], course_id: str
) -> None:
    client = client_for("ada", [course_id])
    outcome = await reconciler.reconcile(
        ref(course_id), {"courseId": course_id, "anonymousPosting": "ToClassmates"}
    )
    assert outcome.ready
    assert "anonymous to classmates" in outcome.message
    assert (await client.policy(course_id)).anonymous_posting == ANONYMOUS_POSTING_TO_CLASSMATES
    sent = (await client.send(course_id, "nobody knows", anonymous=True)).message
    assert sent.anonymous
    # Switched off after abuse (or left out: the default): no anonymous message any more.
    await reconciler.reconcile(
        ref(course_id), {"courseId": course_id, "anonymousPosting": "Disabled"}
    )
    assert (await client.policy(course_id)).anonymous_posting == ANONYMOUS_POSTING_DISABLED
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.send(course_id, "again", anonymous=True)
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION


# -- timetable modes ------------------------------------------------------------------------

LECTURES = {
    "mode": "SlowMode",
    "slowModeSeconds": 30,
    "timeZone": "Europe/Berlin",
    "weekly": {"days": ["Mon"], "startTime": "09:00", "endTime": "11:00"},
}


def utc(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC)


def ms(text: str) -> int:
    return round(utc(text).timestamp() * 1000)


async def test_the_schedule_is_written_as_segments_and_the_mode_follows_a_test_clock(
    reconciler: PolicyReconciler, cluster_client: Any, course_id: str, metric_value: Any
) -> None:
    spec = {"courseId": course_id, "schedule": [LECTURES]}
    # Monday 2027-03-29, the day after Berlin went to summer time: 09:00 local is 07:00 UTC.
    reconciler.clock = lambda: utc("2027-03-29T06:59:59")
    outcome = await reconciler.reconcile(ref(course_id), spec)
    assert outcome.ready
    assert outcome.mode is not None
    assert outcome.next_mode is not None
    assert (outcome.mode.mode, outcome.mode.until_ms) == ("Open", ms("2027-03-29T07:00"))
    assert (outcome.next_mode.mode, outcome.next_mode.slow_mode_seconds) == ("SlowMode", 30)
    stored = cluster_client.hgetall(CourseKeys(course_id).policy)
    first = stored["schedule_segments"].split(";")[0]
    assert first == f"{ms('2027-03-29T07:00')}-{ms('2027-03-29T09:00')}:s30"
    assert "Europe/Berlin" in stored["schedule"]
    assert "1 schedule window" in outcome.message
    status = status_for(outcome, 1, None)
    assert (status["mode"], status["nextMode"], status["nextModeChange"]) == (
        "Open",
        "SlowMode",
        "2027-03-29T07:00:00Z",
    )

    # The window's edge, one second later: the re-check reports slow mode until 09:00 UTC.
    reconciler.clock = lambda: utc("2027-03-29T07:00:00")
    outcome = await reconciler.reconcile(ref(course_id), spec, trigger=Trigger.RESYNC)
    assert outcome.mode is not None
    assert (outcome.mode.mode, outcome.mode.until_ms) == ("SlowMode", ms("2027-03-29T09:00"))
    assert not outcome.changed

    # A day later the segments start a day later: a refresh, not drift.
    reconciler.clock = lambda: utc("2027-03-30T00:00:01")
    outcome = await reconciler.reconcile(ref(course_id), spec, trigger=Trigger.RESYNC)
    assert outcome.changed
    assert "drifted" not in outcome.message
    assert metric_value("nextcampus_operator_drift_repairs_total") == 0
    segments = cluster_client.hget(CourseKeys(course_id).policy, "schedule_segments")
    assert segments.split(";")[0].startswith(str(ms("2027-04-05T07:00")))


async def test_a_read_only_window_the_operator_writes_stops_sends_at_once(
    reconciler: PolicyReconciler,
    client_for: Callable[..., ChatClient],
    course_id: str,
) -> None:
    """The operator's segments, enforced by a real chat server on Redis's clock (the
    window is around the real now: Redis TIME is the machine's)."""
    now = datetime.datetime.now(datetime.UTC)
    exam = {
        "mode": "ReadOnly",
        "timeZone": "UTC",
        "dated": {
            "start": (now - datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
            "end": (now + datetime.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"),
        },
    }
    alice = client_for("alice", [course_id])
    outcome = await reconciler.reconcile(
        ref(course_id), {"courseId": course_id, "schedule": [exam]}
    )
    assert outcome.mode is not None
    assert outcome.mode.mode == "ReadOnly"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await alice.send(course_id, "during the exam")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "read-only by its schedule until" in (refused.value.details() or "")
    # The schedule goes: sends work again at once.
    await reconciler.reconcile(ref(course_id), {"courseId": course_id})
    assert not (await alice.send(course_id, "after the exam")).duplicate


async def test_a_bad_schedule_is_an_invalid_spec_that_names_the_field(
    reconciler: PolicyReconciler, course_id: str
) -> None:
    bad = {**LECTURES, "timeZone": "Europe/Atlantis"}
    outcome = await reconciler.reconcile(ref(course_id), {"courseId": course_id, "schedule": [bad]})
    assert outcome.reason is Reason.INVALID_SPEC
    assert "schedule.0.timeZone" in outcome.message
    assert "Europe/Atlantis is not an IANA time zone" in outcome.message


# -- exports before a TTL change shortens history (exportBeforeTTLChange) ------------------


async def test_a_shortening_ttl_change_exports_the_course_first_when_opted_in(
    reconciler: PolicyReconciler,
    operator_settings: PolicyOperatorSettings,
    metrics: OperatorMetrics,
    client_for: Callable[..., ChatClient],
    cluster_client: Any,
    course_id: str,
    tmp_path: Path,
) -> None:
    course = await populate(
        client_for("stu", [course_id]), client_for("mod", [course_id], [course_id]), course_id
    )
    exporting = PolicyReconciler(
        reconciler.store, operator_settings, metrics, exports=ExportDirectory(tmp_path)
    )
    spec = {"courseId": course_id, "exportBeforeTTLChange": True, "messageTTLSeconds": 7 * DAY}
    # Longer than the default's day: nothing is lost, nothing exported.
    assert (await exporting.reconcile(ref(course_id), spec)).export is None

    outcome = await exporting.reconcile(ref(course_id), {**spec, "messageTTLSeconds": 3600})

    assert outcome.ready
    export = outcome.export
    assert export is not None
    assert export.path is not None
    assert export.messages == len(course.ids)
    assert os.listdir(tmp_path) == [export.path.name]  # no partial file left
    assert export.path.name.startswith(f"{course_id}-")
    assert export.path.name.endswith(".ndjson")
    written = read(export.path)
    check_rich_course(written, course)
    assert int(written.header["policy"]["ttlSeconds"]) == 7 * DAY  # as it was before
    assert f"exported 6 messages to {export.path} before shortening the TTL" in outcome.message
    assert cluster_client.hget(CourseKeys(course_id).policy, "ttl_seconds") == "3600"
    assert status_for(outcome, 2, None)["lastExport"] == {
        "result": "Exported",
        "time": export.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "file": str(export.path),
        "messages": 6,
    }
    event = export_event_for(outcome)
    assert event is not None
    assert (event.type, event.reason) == ("Normal", "CourseExported")
    assert (
        metrics.registry.get_sample_value(
            "nextcampus_operator_course_exports_total", {"result": "exported"}
        )
        == 1
    )

    # Applied again (a re-check), or lengthened: nothing to export.
    assert (
        await exporting.reconcile(ref(course_id), {**spec, "messageTTLSeconds": 3600})
    ).export is None
    assert (await exporting.reconcile(ref(course_id), spec)).export is None
    assert len(os.listdir(tmp_path)) == 1


@pytest.mark.parametrize("directory", [None, "missing"])
async def test_without_a_writable_export_directory_the_export_is_refused_and_the_ttl_applied(
    reconciler: PolicyReconciler,
    operator_settings: PolicyOperatorSettings,
    metrics: OperatorMetrics,
    client_for: Callable[..., ChatClient],
    cluster_client: Any,
    course_id: str,
    tmp_path: Path,
    directory: str | None,
) -> None:
    await send_some(client_for("ada", [course_id]), course_id, 3)
    exports = ExportDirectory(tmp_path / directory if directory else None)
    refusing = PolicyReconciler(reconciler.store, operator_settings, metrics, exports=exports)
    spec = {"courseId": course_id, "exportBeforeTTLChange": True, "messageTTLSeconds": 3600}

    with structlog.testing.capture_logs() as logged:
        outcome = await refusing.reconcile(ref(course_id), spec)

    assert outcome.ready  # the TTL is applied all the same
    assert cluster_client.hget(CourseKeys(course_id).policy, "ttl_seconds") == "3600"
    export = outcome.export
    assert export is not None
    assert export.refused
    why = "no export directory is configured" if directory is None else "No such file or directory"
    assert why in export.refusal
    assert "the export before shortening the TTL was refused" in outcome.message
    (warning,) = [entry for entry in logged if entry["log_level"] == "warning"]
    assert warning["event"] == "export before a TTL change refused; applying the TTL anyway"
    assert (warning["course_id"], warning["ttl_seconds"]) == (course_id, 3600)
    assert why in warning["reason"]
    last = status_for(outcome, 1, None)["lastExport"]
    assert (last["result"], last["reason"]) == ("Refused", export.refusal)
    event = export_event_for(outcome)
    assert event is not None
    assert (event.type, event.reason) == ("Warning", "ExportRefused")
    assert "the TTL was applied" in event.message
    assert (
        metrics.registry.get_sample_value(
            "nextcampus_operator_course_exports_total", {"result": "refused"}
        )
        == 1
    )
    assert not (tmp_path / "missing").exists()


async def test_no_export_without_the_opt_in_or_without_history(
    reconciler: PolicyReconciler,
    operator_settings: PolicyOperatorSettings,
    metrics: OperatorMetrics,
    client_for: Callable[..., ChatClient],
    course_id: str,
    tmp_path: Path,
) -> None:
    exporting = PolicyReconciler(
        reconciler.store, operator_settings, metrics, exports=ExportDirectory(tmp_path)
    )
    empty = f"{course_id}-empty"
    outcome = await exporting.reconcile(
        ref(empty), {"courseId": empty, "exportBeforeTTLChange": True, "messageTTLSeconds": 600}
    )
    assert outcome.export is None
    await send_some(client_for("ada", [course_id]), course_id, 2)
    outcome = await exporting.reconcile(
        ref(course_id), {"courseId": course_id, "messageTTLSeconds": 600}
    )
    assert outcome.export is None
    assert export_event_for(outcome) is None
    assert "lastExport" not in status_for(outcome, 1, None)
    assert os.listdir(tmp_path) == []
