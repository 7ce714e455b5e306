"""The course's event log through gRPC `ListEvents`, on a real Redis Cluster: every change
(added, deleted) once and in order after any cursor, each with its message as it is now; a
delete made while a reader was away reaches it; the log keeps what the TTL keeps and a
cursor older than that is refused with what to do; bad cursors and other courses refused."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest

from nextcampus_common.keys import CourseKeys
from nextcampus_common.metadata import STREAM_AFTER_CURSOR
from nextcampus_common.proto.chat.v1.chat_pb2 import CourseEvent, CourseEventKind
from testing.plugin import Collector

ADDED, DELETED = CourseEventKind.MESSAGE_ADDED, CourseEventKind.MESSAGE_DELETED


def summary(events: Any) -> list[tuple[int, str, str, bool]]:
    return [(e.kind, e.message.message_id, e.actor_user_id, e.message.deleted) for e in events]


async def all_events(
    client: Any, course_id: str, after: str = "", limit: int = 2
) -> list[CourseEvent]:
    """Every event after `after`, in pages of `limit`."""
    events: list[CourseEvent] = await client.all_events(course_id, after=after, page_limit=limit)
    return events


async def test_every_change_once_in_order_with_the_message_as_it_is_now(client_for, course_id):
    alice = client_for("alice", [course_id])
    mod = client_for("mod", [course_id], [course_id])
    first = (await alice.send(course_id, "first")).message
    second = (await alice.send(course_id, "second")).message
    await mod.delete(course_id, first.message_id)

    events = (await alice.events(course_id)).events
    assert summary(events) == [
        (ADDED, first.message_id, "alice", True),  # added, and deleted since: a tombstone now
        (ADDED, second.message_id, "alice", False),
        (DELETED, first.message_id, "mod", True),
    ]
    assert events[1].message.content == "second"
    assert events[0].message.content == ""
    cursors = [e.cursor for e in events]
    assert cursors == sorted(cursors, key=lambda c: tuple(map(int, c.split("-"))))
    assert len(set(cursors)) == 3
    # Resumed after each cursor: exactly what came after it, in pages or not.
    for n, event in enumerate(events):
        assert summary(await all_events(alice, course_id, event.cursor, limit=1)) == summary(
            events[n + 1 :]
        )
    assert (await alice.events(course_id, after=cursors[-1])).events == []


async def test_a_delete_made_while_the_reader_was_away_reaches_it(client_for, course_id):
    alice = client_for("alice", [course_id])
    bob = client_for("bob", [course_id])
    sent = [(await alice.send(course_id, f"m{i}")).message for i in range(3)]
    # Bob reads the history, then goes away; its page tells where the log stood.
    page = await bob.history(course_id, limit=10)
    assert [m.message_id for m in page.messages] == [m.message_id for m in sent]
    assert page.event_cursor
    await alice.delete(course_id, sent[1].message_id)
    later = (await alice.send(course_id, "while bob was away")).message
    missed = await bob.events(course_id, after=page.event_cursor)
    assert summary(missed.events) == [
        (DELETED, sent[1].message_id, "alice", True),
        (ADDED, later.message_id, "alice", False),
    ]


async def test_a_retried_send_and_a_repeated_delete_are_one_change_each(client_for, course_id):
    alice = client_for("alice", [course_id])
    message = (await alice.send(course_id, "once", client_message_id="cm-1")).message
    again = await alice.send(course_id, "once", client_message_id="cm-1")
    assert again.duplicate
    await alice.delete(course_id, message.message_id)
    await alice.delete(course_id, message.message_id)
    assert summary((await alice.events(course_id)).events) == [
        (ADDED, message.message_id, "alice", True),
        (DELETED, message.message_id, "alice", True),
    ]


async def test_the_log_keeps_what_the_ttl_keeps_and_an_older_cursor_is_refused(
    client_for, course_id, cluster_client
):
    """With a one-minute TTL, a send trims what is older than a minute from the log (an
    entry written two minutes ago stands in for time passing); a cursor from before that is
    FAILED_PRECONDITION, saying how to recover. The log expires with its newest message."""
    keys = CourseKeys(course_id)
    cluster_client.hset(keys.policy, "ttl_seconds", 60)
    old_ms = int(time.time() * 1000) - 120_000
    cluster_client.xadd(keys.log, {"k": "a", "i": "1", "u": "ghost"}, id=f"{old_ms}-0")
    alice = client_for("alice", [course_id])
    message = (await alice.send(course_id, "kept")).message
    assert cluster_client.xlen(keys.log) == 1  # the old entry is gone
    assert 0 < cluster_client.pttl(keys.log) <= 60_000
    assert cluster_client.pttl(keys.log) >= cluster_client.pttl(keys.message(message.message_id))

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await alice.events(course_id, after=f"{old_ms - 1}-0")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "older than what" in refused.value.details()
    assert "reload the history" in refused.value.details()
    # From the start, or from the history's cursor, is always answered.
    assert summary((await alice.events(course_id)).events) == [
        (ADDED, message.message_id, "alice", False)
    ]


@pytest.mark.parametrize(
    ("after", "code", "says"),
    [
        ("42", grpc.StatusCode.INVALID_ARGUMENT, "event cursor '42' is invalid"),
        ("1-0; FLUSHALL", grpc.StatusCode.INVALID_ARGUMENT, "event cursor"),
        ("99999999999999-0", grpc.StatusCode.INVALID_ARGUMENT, "ahead of"),
    ],
)
async def test_bad_cursors_are_refused_with_the_reason(client_for, course_id, after, code, says):
    alice = client_for("alice", [course_id])
    await alice.send(course_id, "something")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await alice.events(course_id, after=after)
    assert refused.value.code() == code
    assert says in refused.value.details()


async def test_another_courses_log_is_not_readable(client_for, course_id):
    alice = client_for("alice", [course_id])
    await alice.send(course_id, "private")
    mallory = client_for("mallory", ["elsewhere"])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mallory.events(course_id)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as bad_limit:
        await alice.events(course_id, limit=100_000)
    assert bad_limit.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- SubscribeEvents: the log, then live ---------------------------------------------------


def kinds_and_ids(events: Any) -> list[tuple[int, str]]:
    return [(e.kind, e.message.message_id) for e in events]


async def test_a_stream_from_now_carries_every_later_change_once_in_order(client_for, course_id):
    alice = client_for("alice", [course_id])
    before = (await alice.send(course_id, "before the stream")).message
    stream = Collector(alice.subscribe_events(course_id))
    try:
        # Live once the stream says from which cursor on (the newest change: the send before).
        live = dict(await stream.call.initial_metadata())
        assert live[STREAM_AFTER_CURSOR] == (await alice.events(course_id)).events[-1].cursor
        # Live only: nothing from before, then each change as it happens.
        first = (await alice.send(course_id, "first")).message
        await stream.wait_for(lambda c: len(c.messages) >= 1)
        await alice.delete(course_id, before.message_id)
        second = (await alice.send(course_id, "second")).message
        await stream.wait_for(lambda c: len(c.messages) >= 3)
        assert kinds_and_ids(stream.messages) == [
            (ADDED, first.message_id),
            (DELETED, before.message_id),
            (ADDED, second.message_id),
        ]
        assert stream.messages[1].actor_user_id == "alice"
        # The same as the log says, cursor for cursor.
        logged = (await alice.events(course_id, after=stream.messages[0].cursor)).events
        assert [e.cursor for e in logged] == [e.cursor for e in stream.messages[1:]]
    finally:
        await stream.close()


async def test_a_resumed_stream_gets_what_it_missed_then_goes_live(client_for, course_id):
    """Resumed after a cursor while sends go on: the changes it missed (a delete among
    them), then the live ones, none twice, none missing, in the log's order."""
    alice = client_for("alice", [course_id])
    sent = [(await alice.send(course_id, f"m{i}")).message for i in range(5)]
    cursor = (await alice.events(course_id)).events[1].cursor  # after m1's addition
    await alice.delete(course_id, sent[0].message_id)
    stream = Collector(alice.subscribe_events(course_id, after=cursor))
    try:
        more = [(await alice.send(course_id, f"n{i}")).message for i in range(5)]
        await stream.wait_for(lambda c: len(c.messages) >= 9)
        expected = (await alice.events(course_id, after=cursor, limit=50)).events
        assert [e.cursor for e in stream.messages] == [e.cursor for e in expected]
        assert kinds_and_ids(stream.messages) == [
            *[(ADDED, m.message_id) for m in sent[2:]],
            (DELETED, sent[0].message_id),
            *[(ADDED, m.message_id) for m in more],
        ]
    finally:
        await stream.close()


async def test_a_change_whose_publication_was_lost_still_reaches_the_stream(
    client_for, course_id, cluster_client
):
    """Pub/sub only says when to look: a log entry that no publication announced (as when a
    pub/sub message is dropped) reaches a quiet course's stream too."""
    alice = client_for("alice", [course_id])
    message = (await alice.send(course_id, "quiet course")).message
    stream = Collector(alice.subscribe_events(course_id))
    try:
        await stream.call.initial_metadata()  # live
        keys = CourseKeys(course_id)
        # The delete as delete.lua makes it, minus its SPUBLISH.
        cluster_client.hset(keys.message(message.message_id), mapping={"deleted": 1, "content": ""})
        cluster_client.xadd(keys.log, {"k": "d", "i": message.message_id, "u": "alice"})
        await stream.wait_for(lambda c: len(c.messages) >= 1)
        assert kinds_and_ids(stream.messages) == [(DELETED, message.message_id)]
    finally:
        await stream.close()


async def test_a_stream_after_a_cursor_the_log_no_longer_keeps_is_refused(
    client_for, course_id, cluster_client
):
    keys = CourseKeys(course_id)
    cluster_client.hset(keys.policy, "ttl_seconds", 60)
    old_ms = int(time.time() * 1000) - 120_000
    cluster_client.xadd(keys.log, {"k": "a", "i": "1", "u": "ghost"}, id=f"{old_ms}-0")
    alice = client_for("alice", [course_id])
    await alice.send(course_id, "trims the old entry")
    stream = Collector(alice.subscribe_events(course_id, after=f"{old_ms - 1}-0"))
    try:
        await stream.wait_for(lambda c: c.error is not None)
        assert stream.error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "reload the history" in stream.error.details()
    finally:
        await stream.close()
