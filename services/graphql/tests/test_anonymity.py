"""Anonymous to classmates through GraphQL on the real stack (Redis Cluster, chat, GraphQL):
a student's and a moderator's sockets subscribe with the SAME documents on the same GraphQL
process, and the student's raw WebSocket frames never hold the author while the moderator's
do — the course's upstream streams, fan-out groups and rendered payloads are split by role.
Every query a student can ask is checked on its raw HTTP body too. The policy field is
written into the policy hash as the operator writes it."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from testing.graphql_http import Api, api
from testing.policy_hash import allow_anonymous
from testing.ws import next_json, raw_socket, ready

AUTHOR = "hidden-author-7f3q"  # distinctive: found in bytes only where it was sent
SEND = """mutation($c: ID!, $t: String!, $k: MessageKind, $a: Boolean, $r: ID) {
  sendMessage(courseId: $c, content: $t, kind: $k, anonymous: $a, replyTo: $r) {
    messageId userId anonymous pseudonym
  }
}"""
EDIT = """mutation($c: ID!, $m: ID!, $t: String!) {
  editMessage(courseId: $c, messageId: $m, content: $t) { messageId }
}"""
RESOLVE = (
    """mutation($c: ID!, $m: ID!) { resolveQuestion(courseId: $c, messageId: $m) { messageId } }"""
)
PIN = """mutation($c: ID!, $m: ID!) { pinMessage(courseId: $c, messageId: $m) { messageId } }"""
POLICY = """query($c: ID!) { coursePolicy(courseId: $c) { anonymousPosting } }"""
EVENTS = """subscription($c: ID!, $after: String) {
  courseEvents(courseId: $c, after: $after) { __typename actorId message { messageId userId anonymous pseudonym participants } }
}"""
ADDED = """subscription($c: ID!, $after: ID) {
  messageAdded(courseId: $c, after: $after) { messageId userId pseudonym }
}"""
# What a student can read, each holding the anonymous messages.
READS = {
    "thread": """query($c: ID!, $m: ID!) {
      thread(courseId: $c, rootId: $m) { root { userId } replies { userId } }
    }""",
    "messages": """query($c: ID!) {
      messages(courseId: $c) { messages { messageId userId pseudonym participants } }
    }""",
    "message": """query($c: ID!, $m: ID!) { message(courseId: $c, messageId: $m) { userId } }""",
    "questions": """query($c: ID!) {
      questions(courseId: $c) { questions { messageId userId } }
    }""",
    "similarQuestions": """query($c: ID!) {
      similarQuestions(courseId: $c, text: "is the deadline Friday") { question { userId } }
    }""",
    "pinnedMessages": """query($c: ID!) { pinnedMessages(courseId: $c) { userId } }""",
    "myMentions": """query { myMentions { messages { messageId userId } } }""",
}


async def send(user: Api, course_id: str, text: str, **kw: Any) -> dict[str, Any]:
    data = await user.data(SEND, c=course_id, t=text, **kw)
    message: dict[str, Any] = data["sendMessage"]
    return message


class Frames:
    """One raw socket with two subscriptions: every frame's text as it came."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.texts: list[str] = []

    async def subscribe(self, operation_id: str, query: str, course_id: str, after: str) -> None:
        """With `after`: everything after it comes, however soon the subscription is live."""
        await self.ws.send_json(
            {
                "id": operation_id,
                "type": "subscribe",
                "payload": {"query": query, "variables": {"c": course_id, "after": after}},
            }
        )

    async def until(self, count: int, text: str) -> None:
        """Read until `count` frames hold `text` (bounded: keepalives never end the wait)."""
        async with asyncio.timeout(60):
            while sum(text in frame for frame in self.texts) < count:
                message = await next_json(self.ws)
                self.texts.append(str(message))


async def test_a_students_socket_never_gets_the_author_a_moderators_does(
    graphql_server: Any, make_token: Any, course_id: str, cluster_client: Any
) -> None:
    allow_anonymous(cluster_client, course_id)
    student_token = make_token("bob", [course_id])
    moderator_token = make_token("prof", [course_id], [course_id])
    async with (
        api(graphql_server.url, make_token(AUTHOR, [course_id])) as author,
        api(graphql_server.url, student_token) as bob,
        api(graphql_server.url, moderator_token) as prof,
        raw_socket(graphql_server.ws_url) as student_ws,
        raw_socket(graphql_server.ws_url) as moderator_ws,
    ):
        # Subscribed after a first message, each from where it stands: no probe, no race.
        first = await send(bob, course_id, "hello")
        cursor = await bob.event_cursor(course_id)
        sockets = {"student": Frames(student_ws), "moderator": Frames(moderator_ws)}
        for frames, token in (
            (sockets["student"], student_token),
            (sockets["moderator"], moderator_token),
        ):
            await ready(frames.ws, token)
            await frames.subscribe("events", EVENTS, course_id, cursor)
            await frames.subscribe("added", ADDED, course_id, first["messageId"])

        question = await send(bob, course_id, "How do I start lab 3?", k="QUESTION")
        answer = await send(author, course_id, "Run make lab3", a=True, r=question["messageId"])
        asked = await send(author, course_id, "@bob is the deadline Friday?", k="QUESTION", a=True)
        pseudonym = asked["pseudonym"]
        assert asked["anonymous"] is True
        assert asked["userId"] == pseudonym  # the author moderates nothing: their answer too
        assert answer["pseudonym"] == pseudonym
        await author.data(EDIT, c=course_id, m=asked["messageId"], t="@bob is it due Friday?")
        await author.data(RESOLVE, c=course_id, m=asked["messageId"])
        await prof.data(PIN, c=course_id, m=asked["messageId"])
        # question, answer, asked: added (each on both subscriptions); edited, resolved, pinned.
        for frames in sockets.values():
            await frames.until(3, "'id': 'added'")
            await frames.until(3, "MessageAddedEvent")
            await frames.until(1, "MessagePinnedEvent")
            await frames.until(1, "QuestionResolvedEvent")

        student, moderator = sockets["student"].texts, sockets["moderator"].texts
        assert not any(AUTHOR in text for text in student), "the author reached a student"
        assert any(pseudonym in text for text in student)
        # The moderator's frames name the author (the same documents, another payload).
        assert any(AUTHOR in text for text in moderator)

        # Every query a student can ask, as raw HTTP bodies.
        for name, query in READS.items():
            given = {"c": course_id, "m": asked["messageId"]}
            async with bob.http.post(
                bob.url,
                # Only the variables the query declares (an unused one is an error).
                json={
                    "query": query,
                    "variables": {k: v for k, v in given.items() if f"${k}:" in query},
                },
                headers={"Authorization": f"Bearer {student_token}"},
            ) as response:
                body = await response.text()
            assert '"errors"' not in body, (name, body)
            assert pseudonym in body, (name, body)
            assert AUTHOR not in body, name
        seen = await prof.data(READS["message"], c=course_id, m=asked["messageId"])
        assert seen["message"]["userId"] == AUTHOR


async def test_sending_anonymously_needs_the_policy_and_says_so(
    graphql_server: Any, make_token: Any, course_id: str, cluster_client: Any
) -> None:
    async with api(graphql_server.url, make_token(AUTHOR, [course_id])) as author:
        assert (await author.data(POLICY, c=course_id))["coursePolicy"] == {
            "anonymousPosting": "DISABLED"
        }
        body = await author.post(SEND, c=course_id, t="who am I", a=True)
        (error,) = body["errors"]
        assert error["extensions"]["code"] == "FAILED_PRECONDITION"
        assert "does not allow anonymous messages" in error["message"]

        allow_anonymous(cluster_client, course_id)
        assert (await author.data(POLICY, c=course_id))["coursePolicy"] == {
            "anonymousPosting": "TO_CLASSMATES"
        }
        sent = await send(author, course_id, "now I am nobody", a=True)
        assert sent["anonymous"] is True
        # Not a boolean: refused before anything is sent.
        body = await author.post(SEND, c=course_id, t="x", a="yes")
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
