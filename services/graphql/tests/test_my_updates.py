"""`myUpdates` on the real stack (Redis Cluster, chat, GraphQL) over real WebSockets: one
viewer's counts in every course, then a course's whenever they change, coalesced; mentions
of the viewer in the updates; resumed after a cursor with no mention lost or repeated; the
viewer's own markRead on another socket; bad cursors."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from testing.graphql_http import api
from testing.plugin import start_graphql_server
from testing.ws import Subscriber, next_json, raw_socket, ready

MY_UPDATES = """subscription($after: String) {
  myUpdates(after: $after) {
    course { courseId unreadCount mentionCount lastReadMessageId }
    mentions { courseId messageId userId content }
    cursor
  }
}"""
SEND = """mutation($c: ID!, $t: String!) { sendMessage(courseId: $c, content: $t) { messageId } }"""
MARK_READ = """mutation($c: ID!, $m: ID!) {
  markRead(courseId: $c, messageId: $m) { unreadCount }
}"""


def my_updates(url: str, token: str, after: str | None = None, name: str = "me") -> Subscriber:
    return Subscriber(url, token, MY_UPDATES, {"after": after}, name=name)


def latest(subscriber: Subscriber, course_id: str) -> dict[str, Any] | None:
    """The newest state of a course the subscriber was sent."""
    for event in reversed(subscriber.events):
        if event["course"]["courseId"] == course_id:
            course: dict[str, Any] = event["course"]
            return course
    return None


def counts(subscriber: Subscriber, course_id: str) -> tuple[int, int] | None:
    course = latest(subscriber, course_id)
    return None if course is None else (course["unreadCount"], course["mentionCount"])


def mention_ids(subscriber: Subscriber) -> list[str]:
    return [m["messageId"] for e in subscriber.events for m in e["mentions"]]


def new_course() -> str:
    return f"c-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def courses() -> list[str]:
    return sorted(new_course() for _ in range(3))


async def send(http: Any, course_id: str, text: str) -> str:
    message_id: str = (await http.data(SEND, c=course_id, t=text))["sendMessage"]["messageId"]
    return message_id


async def test_every_course_first_then_changes_coalesced_with_the_mentions(
    graphql_server, make_token, courses
):
    url = graphql_server.url
    busy, quiet, mentioned = courses
    async with (
        api(url, make_token("alice", courses)) as alice,
        my_updates(url, make_token("bob", courses)) as bob,
    ):
        await bob.wait_until(lambda s: len(s.events) == 3, within=30)
        assert [e["course"]["courseId"] for e in bob.events] == courses
        assert {counts(bob, c) for c in courses} == {(0, 0)}

        # 30 messages at once: a few updates (at most one per course per second), the last
        # with every one of them counted.
        sent = [await send(alice, busy, f"news {i}") for i in range(30)]
        await bob.wait_until(lambda s: counts(s, busy) == (30, 0), within=30)
        busy_updates = [e for e in bob.events[3:] if e["course"]["courseId"] == busy]
        assert len(busy_updates) < 30
        assert all(e["mentions"] == [] for e in busy_updates)

        first = await send(alice, mentioned, "@bob could you look?")
        second = await send(alice, mentioned, "and again, @bob")
        await send(alice, mentioned, "not for bob")
        await bob.wait_until(lambda s: counts(s, mentioned) == (3, 2), within=30)
        assert mention_ids(bob) == [first, second]
        assert latest(bob, quiet) == {
            "courseId": quiet,
            "unreadCount": 0,
            "mentionCount": 0,
            "lastReadMessageId": None,
        }
        # A deletion is counted by the store (the next update reads the counts again).
        await alice.data(
            "mutation($c: ID!, $m: ID!) { deleteMessage(courseId: $c, messageId: $m) { deleted } }",
            c=busy,
            m=sent[0],
        )
        await bob.wait_until(lambda s: counts(s, busy) == (29, 0), within=30)
        # Bob's own message marks the course read, here as in the store.
        async with api(url, make_token("bob", courses)) as bob_api:
            own = await send(bob_api, busy, "read them all")
        await bob.wait_until(lambda s: counts(s, busy) == (0, 0), within=30)
        assert latest(bob, busy)["lastReadMessageId"] == own  # type: ignore[index]


async def test_resuming_after_a_cursor_brings_each_missed_mention_once(
    graphql_server, make_token, courses
):
    url = graphql_server.url
    one, two, _ = courses
    token = make_token("bob", courses)
    async with api(url, make_token("alice", courses)) as alice:
        async with my_updates(url, token) as bob:
            # Live once every course's first update came.
            await bob.wait_until(lambda s: len(s.events) == 3, within=30)
            early = await send(alice, one, "@bob early")
            await bob.wait_until(lambda s: early in mention_ids(s), within=30)
            cursor = bob.events[-1]["cursor"]
        # Away: mentions in two courses, one of them deleted meanwhile, and plain messages.
        missed = [await send(alice, one, "@bob while away"), await send(alice, two, "@bob here")]
        gone = await send(alice, two, "@bob never mind")
        await alice.data(
            """mutation($c: ID!, $m: ID!) { deleteMessage(courseId: $c, messageId: $m) {
              deleted } }""",
            c=two,
            m=gone,
        )
        await send(alice, one, "no mention")
        async with my_updates(url, token, after=cursor, name="resumed") as back:
            await back.wait_until(lambda s: len(s.events) >= 3, within=30)
            assert sorted(mention_ids(back)) == sorted(missed)
            assert counts(back, one) == (3, 2)
            assert counts(back, two) == (1, 1)
            live = await send(alice, two, "@bob welcome back")
            await back.wait_until(lambda s: live in mention_ids(s), within=30)
            assert sorted(mention_ids(back)) == sorted([*missed, live])
            resumed_cursor = back.events[-1]["cursor"]
        # Resuming from the newest cursor: nothing again.
        async with my_updates(url, token, after=resumed_cursor, name="again") as again:
            await again.wait_until(lambda s: len(s.events) >= 3, within=30)
            assert mention_ids(again) == []


async def test_marking_read_through_another_process_reaches_the_viewers_socket(
    graphql_server, graphql_settings_factory, make_token, courses
):
    """The phone marks read through a second GraphQL process: the laptop's socket on the
    first hears of it (the ephemeral read notice), not only at the course's next message."""
    url = graphql_server.url
    course = courses[0]
    token = make_token("bob", courses)
    other = await start_graphql_server(graphql_settings_factory())
    try:
        async with (
            api(url, make_token("alice", courses)) as alice,
            api(other.url, token) as bob_phone,
            my_updates(url, token, name="laptop") as laptop,
        ):
            await laptop.wait_until(lambda s: len(s.events) == 3, within=30)
            last = ""
            for i in range(3):
                last = await send(alice, course, f"m{i}")
            await laptop.wait_until(lambda s: counts(s, course) == (3, 0), within=30)
            answer = await bob_phone.data(MARK_READ, c=course, m=last)
            assert answer["markRead"]["unreadCount"] == 0
            await laptop.wait_until(lambda s: counts(s, course) == (0, 0), within=30)
            assert latest(laptop, course)["lastReadMessageId"] == last  # type: ignore[index]
    finally:
        await other.runner.cleanup()


async def test_a_bad_cursor_is_bad_input_and_the_socket_stays_usable(graphql_server, make_token):
    token = make_token("bob", [new_course()])
    async with raw_socket(graphql_server.url) as ws:
        await ready(ws, token)
        for bad in ("not base64 at all!", "e30", "WzEsMl0"):  # "{}" is fine; [1,2] is not
            payload = {"query": MY_UPDATES, "variables": {"after": bad}}
            await ws.send_json({"id": bad, "type": "subscribe", "payload": payload})
            answer = await next_json(ws)
            if bad == "e30":
                assert answer["type"] == "next", answer
                await ws.send_json({"id": bad, "type": "complete"})
                continue
            assert answer["type"] == "error", answer
            assert answer["payload"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        await ws.send_json({"type": "ping"})
        while (message := await next_json(ws))["type"] != "pong":
            assert message["type"] in ("next", "complete"), message
