"""Read markers, unread and mention counts, mentions — through gRPC on a real Redis Cluster,
as a student of several courses sees them: what is new where, who mentioned me, and only my
own read state."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from nextcampus_chat.mentions import MAX_MENTIONED_USERS, parse_mentions
from nextcampus_common.chat_api import stream_live_cursor
from nextcampus_common.keys import COUNT_CAP, CourseKeys
from nextcampus_common.proto.chat.v1 import chat_pb2
from nextcampus_common.proto.chat.v1.chat_pb2 import CourseEventKind as Kind
from testing.grpc_calls import refused
from testing.plugin import EventCollector


def states(courses: chat_pb2.MyCourses) -> dict[str, tuple[str, int, int]]:
    return {
        c.course_id: (c.last_read_message_id, c.unread_count, c.mention_count)
        for c in courses.courses
    }


async def state(client: Any, course_id: str) -> tuple[str, int, int]:
    return states(await client.my_courses(course_id))[course_id]


def new_course() -> str:
    return f"c-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def no_rate_limit(cluster_client: Any) -> Callable[[str], None]:
    return lambda course: cluster_client.hset(CourseKeys(course).policy, "rate_limit_messages", 0)


def test_mentions_are_user_ids_after_an_at_sign_not_inside_words_or_addresses() -> None:
    parsed = parse_mentions("@kim, ask @lee.park. and @kim again; mail kim@uni.example @course!")
    assert parsed.user_ids == ("kim", "lee.park")
    assert parsed.course
    assert parse_mentions("a@b @ c @-x").user_ids == ()
    assert parse_mentions("@ada@uni.example?").user_ids == ("ada@uni.example",)


async def test_unread_counts_follow_the_read_marker_which_never_moves_back(client_for, course_id):
    alice, bob = client_for("alice", [course_id]), client_for("bob", [course_id])
    assert await state(bob, course_id) == ("", 0, 0)
    sent = [(await alice.send(course_id, f"m{i}")).message for i in range(4)]
    courses = await bob.my_courses()
    (only,) = courses.courses
    assert (only.unread_count, only.last_message_id, only.last_message_at) == (
        4,
        sent[-1].message_id,
        sent[-1].timestamp,
    )
    # Her own messages are not news to her: sending marks read.
    assert await state(alice, course_id) == (sent[-1].message_id, 0, 0)

    marked = await bob.mark_read(course_id, sent[1].message_id)
    assert (marked.last_read_message_id, marked.unread_count) == (sent[1].message_id, 2)
    # An older message (another device, late) does not move the marker back; again: no change.
    for message in (sent[0], sent[1]):
        again = await bob.mark_read(course_id, message.message_id)
        assert (again.last_read_message_id, again.unread_count) == (sent[1].message_id, 2)
    # A deleted message is not unread any more.
    await alice.delete(course_id, sent[3].message_id)
    assert await state(bob, course_id) == (sent[1].message_id, 1, 0)
    # Sending marks everything before it read.
    reply = (await bob.send(course_id, "caught up")).message
    assert await state(bob, course_id) == (reply.message_id, 0, 0)
    assert (await state(alice, course_id))[1] == 1


async def test_counts_are_exact_below_the_cap_and_say_cap_above_it(
    client_for, course_id, no_rate_limit
):
    no_rate_limit(course_id)
    alice, bob = client_for("alice", [course_id]), client_for("bob", [course_id])
    for i in range(COUNT_CAP - 1):
        await alice.send(course_id, f"@bob {i}")
    assert await state(bob, course_id) == ("", COUNT_CAP - 1, COUNT_CAP - 1)
    for i in range(3):
        await alice.send(course_id, f"@bob more {i}")
    assert await state(bob, course_id) == ("", COUNT_CAP, COUNT_CAP)


async def test_one_call_answers_every_course_of_the_token(client_for, cluster_client):
    courses = sorted(new_course() for _ in range(8))
    alice, bob = client_for("alice", courses), client_for("bob", courses)
    # The courses' slots are spread over the three primaries.
    assert len({cluster_client.keyslot(CourseKeys(c).reads) // 5462 for c in courses}) > 1
    for n, course in enumerate(courses):
        for i in range(n):
            await alice.send(course, f"{course} {i}" + (" @bob" if i == 0 else ""))
    answer = await bob.my_courses()
    assert [c.course_id for c in answer.courses] == courses
    assert [(c.unread_count, c.mention_count) for c in answer.courses] == [
        (n, min(n, 1)) for n in range(8)
    ]
    # Named courses, in the order asked.
    picked = await bob.my_courses(courses[3], courses[1])
    assert [(c.course_id, c.unread_count) for c in picked.courses] == [
        (courses[3], 3),
        (courses[1], 1),
    ]


async def test_mentions_are_parsed_counted_and_listed_across_courses(client_for, course_id):
    other = new_course()
    alice = client_for("alice", [course_id, other])
    bob = client_for("bob", [course_id, other])
    mod = client_for("mod", [course_id], [course_id])
    first = (await alice.send(course_id, "@bob, can you check? cc @carol.")).message
    assert (list(first.mention_ids), first.mentions_course) == (["bob", "carol"], False)
    assert list((await bob.get(course_id, first.message_id)).mention_ids) == ["bob", "carol"]
    await alice.send(course_id, "write to bob@uni.example")  # not a mention
    await refused(
        alice.send(course_id, "@course exam moved!"),
        grpc.StatusCode.PERMISSION_DENIED,
        "only moderators of course",
    )
    everyone = (await mod.send(course_id, "@course exam moved, @bob too")).message
    assert (list(everyone.mention_ids), everyone.mentions_course) == (["bob"], True)
    elsewhere = (await alice.send(other, "@bob over here")).message
    # The @course message mentions bob twice and counts once.
    assert await state(bob, course_id) == ("", 3, 2)
    assert (await state(alice, course_id))[2] == 1  # @course reaches her too
    assert await state(bob, other) == ("", 1, 1)

    listed = await bob.my_mentions()
    assert [m.message_id for m in listed.messages] == [
        elsewhere.message_id,
        everyone.message_id,
        first.message_id,
    ]
    assert not listed.has_more
    # Page by page, newest first, nothing twice.
    seen, after = [], ""
    while True:
        page = await bob.my_mentions(after=after, limit=1)
        seen += [m.message_id for m in page.messages]
        if not page.has_more:
            break
        after = page.end_cursor
    assert seen == [m.message_id for m in listed.messages]

    # Read up to the @course message: one mention left in that course, none after deleting it.
    await bob.mark_read(course_id, everyone.message_id)
    assert await state(bob, course_id) == (everyone.message_id, 0, 0)
    await alice.delete(other, elsewhere.message_id)
    assert await state(bob, other) == ("", 0, 0)
    assert [m.message_id for m in (await bob.my_mentions()).messages] == [
        everyone.message_id,
        first.message_id,
    ]
    # A mention of yourself is no news.
    await bob.send(course_id, "note to self @bob")
    assert (await state(bob, course_id))[2] == 0


async def test_the_live_streams_carry_the_mentions(client_for, course_id):
    alice = client_for("alice", [course_id])
    stream = alice.subscribe(course_id)
    await stream.initial_metadata()
    sent = (await alice.send(course_id, "hi @bob")).message
    async for message in stream:
        assert (message.message_id, list(message.mention_ids)) == (sent.message_id, ["bob"])
        break
    stream.cancel()


async def test_read_state_refuses_bad_input_and_other_users_courses(client_for, course_id):
    alice = client_for("alice", [course_id])
    stranger = client_for("mallory", [new_course()])
    sent = (await alice.send(course_id, "hello")).message
    denied = grpc.StatusCode.PERMISSION_DENIED
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    await refused(stranger.mark_read(course_id, sent.message_id), denied, "not in course")
    await refused(stranger.my_courses(course_id), denied, "not in course")
    await refused(alice.mark_read(course_id, "12ab"), invalid, "message id")
    await refused(alice.mark_read(course_id, "999"), grpc.StatusCode.NOT_FOUND, "not found")
    await refused(alice.my_courses("bad course!"), invalid, "course id")
    await refused(alice.my_mentions(after="yesterday"), invalid, "end_cursor")
    await refused(alice.my_mentions(limit=100_000), invalid, "limit")
    too_many = " ".join(f"@u{i}" for i in range(MAX_MENTIONED_USERS + 1))
    await refused(alice.send(course_id, too_many), invalid, "at most")
    # The stranger's own answer is about the stranger's course only.
    assert [c.course_id for c in (await stranger.my_courses()).courses] != [course_id]


async def test_a_moved_marker_is_told_to_ephemeral_streams_naming_the_user_only(
    client_for, course_id
):
    alice, bob = client_for("alice", [course_id]), client_for("bob", [course_id])
    watcher = EventCollector(alice.subscribe_events(course_id, ephemeral=True))
    try:
        await stream_live_cursor(watcher.call)
        first, second = [(await alice.send(course_id, f"m{i}")).message for i in range(2)]
        await bob.mark_read(course_id, second.message_id)
        await bob.mark_read(course_id, first.message_id)  # no move: nothing told
        await bob.mark_read(course_id, second.message_id)  # again: nothing told
        # Typing goes out on the same channel after them: once it is here, so are they.
        await bob.api.typing(bob.token, course_id)
        await watcher.wait_for(lambda c: any(e.kind == Kind.TYPING for e in c.events))
        reads = [e for e in watcher.events if e.kind == Kind.READ_STATE_CHANGED]
        assert [(e.actor_user_id, e.cursor, e.message.message_id) for e in reads] == [
            ("bob", "", "")
        ]
        assert {e.kind for e in await alice.all_events(course_id)} == {Kind.MESSAGE_ADDED}
    finally:
        await watcher.close()
