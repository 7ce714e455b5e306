"""Read state through GraphQL on the real stack (Redis Cluster, chat, GraphQL), with the
third-party client `gql` where a student's app would use one: `me { courses { … } }` for all
courses at once, `markRead`, mentions on messages and `myMentions`, and the errors."""

from __future__ import annotations

import uuid
from typing import Any

from gql import Client, GraphQLRequest
from gql.transport.aiohttp import AIOHTTPTransport
from gql.transport.exceptions import TransportQueryError

from nextcampus_common.keys import COUNT_CAP
from testing.graphql_http import api

MY_COURSES = """{ me { userId courseIds courses {
      courseId moderator unreadCount mentionCount lastReadMessageId lastMessageId lastMessageAt
    } } }"""
MARK_READ = """mutation($c: ID!, $m: ID!) {
      markRead(courseId: $c, messageId: $m) { courseId unreadCount mentionCount lastReadMessageId }
    }"""
SEND = """mutation($c: ID!, $t: String!) {
      sendMessage(courseId: $c, content: $t) { messageId mentions mentionsCourse }
    }"""
MY_MENTIONS = """query($after: String, $limit: Int) {
      myMentions(after: $after, limit: $limit) {
        messages { courseId messageId userId content mentions } hasMore endCursor
      }
    }"""


def client(url: str, token: str) -> Client:
    return Client(
        transport=AIOHTTPTransport(url=url, headers={"Authorization": f"Bearer {token}"}),
        fetch_schema_from_transport=False,
    )


async def run(gql_client: Client, document: str, **variables: Any) -> dict[str, Any]:
    async with gql_client as session:
        request = GraphQLRequest(document, variable_values=variables or None)
        result: dict[str, Any] = await session.execute(request)
        return result


async def refused_with(gql_client: Client, document: str, code: str, **variables: Any) -> str:
    try:
        await run(gql_client, document, **variables)
    except TransportQueryError as exc:
        (error,) = exc.errors or []
        assert error["extensions"]["code"] == code, error
        message: str = error["message"]
        return message
    raise AssertionError("not refused")


async def test_me_answers_every_course_with_counts_and_mark_read_moves_them(
    graphql_server, make_token, course_id
):
    other = f"c-{uuid.uuid4().hex[:12]}"
    courses = sorted([course_id, other])
    alice = client(graphql_server.url, make_token("alice", courses, [other]))
    bob = client(graphql_server.url, make_token("bob", courses))
    sent = [(await run(alice, SEND, c=course_id, t=f"hi {i}"))["sendMessage"] for i in range(3)]
    mention = (await run(alice, SEND, c=other, t="@bob see this"))["sendMessage"]
    assert mention["mentions"] == ["bob"]
    assert mention["mentionsCourse"] is False

    me = (await run(bob, MY_COURSES))["me"]
    assert me["courseIds"] == courses
    by_course = {c["courseId"]: c for c in me["courses"]}
    assert [c["courseId"] for c in me["courses"]] == courses
    assert by_course[course_id]["unreadCount"] == 3
    assert by_course[course_id]["mentionCount"] == 0
    assert by_course[course_id]["lastReadMessageId"] is None
    assert by_course[course_id]["lastMessageId"] == sent[-1]["messageId"]
    assert by_course[course_id]["lastMessageAt"] is not None
    assert (by_course[other]["unreadCount"], by_course[other]["mentionCount"]) == (1, 1)
    assert not any(c["moderator"] for c in me["courses"])
    assert {c["courseId"]: c["moderator"] for c in (await run(alice, MY_COURSES))["me"]["courses"]}[
        other
    ]

    marked = (await run(bob, MARK_READ, c=course_id, m=sent[1]["messageId"]))["markRead"]
    assert marked == {
        "courseId": course_id,
        "unreadCount": 1,
        "mentionCount": 0,
        "lastReadMessageId": sent[1]["messageId"],
    }
    # Never back.
    again = (await run(bob, MARK_READ, c=course_id, m=sent[0]["messageId"]))["markRead"]
    assert again["lastReadMessageId"] == sent[1]["messageId"]
    await run(bob, MARK_READ, c=other, m=mention["messageId"])
    me = (await run(bob, MY_COURSES))["me"]
    counts = {c["courseId"]: (c["unreadCount"], c["mentionCount"]) for c in me["courses"]}
    assert counts == {course_id: (1, 0), other: (0, 0)}


async def test_my_mentions_pages_across_courses_and_at_course_is_for_moderators(
    graphql_server, make_token, course_id
):
    other = f"c-{uuid.uuid4().hex[:12]}"
    teacher = client(graphql_server.url, make_token("teacher", [course_id], [course_id]))
    alice = client(graphql_server.url, make_token("alice", [course_id, other]))
    bob = client(graphql_server.url, make_token("bob", [course_id, other]))
    message = await refused_with(alice, SEND, "FORBIDDEN", c=course_id, t="@course hello all")
    assert "@course" in message
    everyone = (await run(teacher, SEND, c=course_id, t="@course quiz tomorrow"))["sendMessage"]
    assert everyone["mentionsCourse"] is True
    direct = (await run(alice, SEND, c=other, t="@bob, your turn"))["sendMessage"]

    page = (await run(bob, MY_MENTIONS))["myMentions"]
    assert [m["messageId"] for m in page["messages"]] == [
        direct["messageId"],
        everyone["messageId"],
    ]
    assert page["hasMore"] is False
    first = (await run(bob, MY_MENTIONS, limit=1))["myMentions"]
    assert [m["messageId"] for m in first["messages"]] == [direct["messageId"]]
    assert first["hasMore"] is True
    rest = (await run(bob, MY_MENTIONS, after=first["endCursor"], limit=1))["myMentions"]
    assert [m["messageId"] for m in rest["messages"]] == [everyone["messageId"]]
    assert rest["hasMore"] is False
    # The teacher's own @course message is no mention of the teacher.
    assert (await run(teacher, MY_MENTIONS))["myMentions"]["messages"] == []


async def test_read_state_errors_are_clear_and_never_about_another_user(
    graphql_server, make_token, course_id
):
    alice = client(graphql_server.url, make_token("alice", [course_id]))
    stranger = client(graphql_server.url, make_token("mallory", ["elsewhere"]))
    sent = (await run(alice, SEND, c=course_id, t="hello"))["sendMessage"]
    await refused_with(stranger, MARK_READ, "FORBIDDEN", c=course_id, m=sent["messageId"])
    await refused_with(alice, MARK_READ, "BAD_USER_INPUT", c=course_id, m="12ab")
    await refused_with(alice, MARK_READ, "BAD_USER_INPUT", c="no such course!", m="1")
    await refused_with(alice, MARK_READ, "NOT_FOUND", c=course_id, m="999")
    await refused_with(alice, MY_MENTIONS, "BAD_USER_INPUT", after="not-a-cursor")
    await refused_with(alice, MY_MENTIONS, "BAD_USER_INPUT", limit=COUNT_CAP * 100)
    # No argument names a user: a viewer reads their own state, and without a token nothing.
    anonymous = client(graphql_server.url, "")
    await refused_with(anonymous, MY_COURSES, "UNAUTHENTICATED")
    async with api(graphql_server.url, make_token("mallory", ["elsewhere"])) as raw:
        body = await raw.post(
            '{ me { courses(userId: "alice") { courseId } } }',
        )
        (error,) = body["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert "Unknown argument 'userId'" in error["message"]
