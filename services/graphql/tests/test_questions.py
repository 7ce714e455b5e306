"""Questions and endorsed answers through GraphQL on the real stack (Redis Cluster, chat,
GraphQL): `sendMessage(kind: QUESTION)`, endorsing and resolving with each rule's code,
`questions` by state and page, `similarQuestions`, and every change on `courseEvents`."""

from __future__ import annotations

from typing import Any

from testing.graphql_http import Api, api
from testing.ws import Subscriber

ASK = """mutation($c: ID!, $t: String!, $r: ID) {
  sendMessage(courseId: $c, content: $t, kind: QUESTION, replyTo: $r) {
    messageId kind resolvedAt endorsedAnswerCount
  }
}"""
CHANGE = """mutation($c: ID!, $m: ID!) {{
  {field}(courseId: $c, messageId: $m) {{
    messageId kind resolvedAt endorsedAt endorsedAnswerCount
  }}
}}"""
QUESTIONS = """query($c: ID!, $s: QuestionState, $a: ID, $l: Int) {
  questions(courseId: $c, state: $s, after: $a, limit: $l) {
    questions { messageId content kind resolvedAt endorsedAnswerCount } hasMore
  }
}"""
SIMILAR = """query($c: ID!, $t: String!) {
  similarQuestions(courseId: $c, text: $t, limit: 3) { question { messageId content } score }
}"""
EVENTS = """subscription($courseId: ID!, $after: String) {
  courseEvents(courseId: $courseId, after: $after) {
    __typename actorId message { messageId kind resolvedAt endorsedAt endorsedAnswerCount }
    ... on AnswerEndorsedEvent { question { messageId endorsedAnswerCount } }
    ... on AnswerUnendorsedEvent { question { messageId endorsedAnswerCount } }
  }
}"""


async def ask(user: Api, course_id: str, text: str) -> dict[str, Any]:
    question: dict[str, Any] = (await user.data(ASK, c=course_id, t=text))["sendMessage"]
    return question


async def change(user: Api, field: str, course_id: str, message_id: Any) -> dict[str, Any]:
    data = await user.data(CHANGE.format(field=field), c=course_id, m=str(message_id))
    result: dict[str, Any] = data[field]
    return result


async def refused_with(user: Api, field: str, course_id: str, message_id: Any) -> str:
    return await user.error_code(CHANGE.format(field=field), c=course_id, m=str(message_id))


async def test_questions_are_asked_answered_endorsed_resolved_and_reopened(
    graphql_server, make_token, course_id
):
    alice_token = make_token("alice", [course_id])
    async with (
        api(graphql_server.url, alice_token) as alice,
        api(graphql_server.url, make_token("bob", [course_id])) as bob,
        api(graphql_server.url, make_token("mod", [course_id], [course_id])) as moderator,
        api(graphql_server.url, make_token("eve", ["other"], ["other"])) as outsider,
    ):
        start = await alice.event_cursor(course_id)
        events = Subscriber(
            graphql_server.ws_url,
            alice_token,
            EVENTS,
            {"courseId": course_id, "after": start},
            name="events",
        )
        async with events:
            question = await ask(alice, course_id, "When is homework 3 due?")
            assert question["kind"] == "QUESTION"
            assert (question["resolvedAt"], question["endorsedAnswerCount"]) == (None, 0)
            answer = await bob.send(course_id, "Friday", reply_to=int(question["messageId"]))
            q = question["messageId"]

            assert await refused_with(alice, "endorseAnswer", course_id, answer) == "FORBIDDEN"
            assert await refused_with(bob, "resolveQuestion", course_id, q) == "FORBIDDEN"
            assert await refused_with(outsider, "resolveQuestion", course_id, q) == "FORBIDDEN"
            assert (
                await refused_with(moderator, "endorseAnswer", course_id, q)
                == "FAILED_PRECONDITION"
            )
            assert await refused_with(moderator, "resolveQuestion", course_id, "x") == (
                "BAD_USER_INPUT"
            )
            code = await alice.error_code(ASK, c=course_id, t="in a thread?", r=str(answer))
            assert code == "BAD_USER_INPUT"

            endorsed = await change(moderator, "endorseAnswer", course_id, answer)
            assert endorsed["endorsedAt"] is not None
            resolved = await change(alice, "resolveQuestion", course_id, q)
            assert (resolved["resolvedAt"] is not None, resolved["endorsedAnswerCount"]) == (
                True,
                1,
            )
            assert (await change(moderator, "reopenQuestion", course_id, q))["resolvedAt"] is None
            unendorsed = await change(moderator, "unendorseAnswer", course_id, answer)
            assert unendorsed["endorsedAt"] is None

            wanted = [
                ("MessageAddedEvent", q, "alice"),
                ("MessageAddedEvent", str(answer), "bob"),
                ("AnswerEndorsedEvent", str(answer), "mod"),
                ("QuestionResolvedEvent", q, "alice"),
                ("QuestionReopenedEvent", q, "mod"),
                ("AnswerUnendorsedEvent", str(answer), "mod"),
            ]

            def seen(s: Subscriber) -> list[tuple[str, str, str]]:
                return [
                    (e["__typename"], e["message"]["messageId"], e["actorId"]) for e in s.events
                ]

            await events.wait_until(lambda s: len(seen(s)) >= len(wanted), within=30)
            assert seen(events) == wanted
            assert events.events[0]["message"]["kind"] == "QUESTION"
            assert events.events[3]["message"]["resolvedAt"] is not None
            # An endorsement names the question as it is after it: no second round trip.
            assert events.events[2]["question"] == {"messageId": q, "endorsedAnswerCount": 1}
            assert events.events[5]["question"] == {"messageId": q, "endorsedAnswerCount": 0}


async def test_questions_by_state_and_similar_questions(graphql_server, make_token, course_id):
    async with (
        api(graphql_server.url, make_token("alice", [course_id])) as alice,
        api(graphql_server.url, make_token("eve", ["other"])) as outsider,
    ):
        asked = [
            await ask(alice, course_id, text)
            for text in (
                "과제 2 제출 마감이 언제인가요?",
                "Can we use numpy in the project?",
                "중간고사 범위가 어디까지인가요?",
            )
        ]
        await change(alice, "resolveQuestion", course_id, asked[1]["messageId"])

        async def listed(**variables: Any) -> tuple[list[str], bool]:
            page = (await alice.data(QUESTIONS, c=course_id, **variables))["questions"]
            return [q["messageId"] for q in page["questions"]], page["hasMore"]

        ids = [q["messageId"] for q in asked]
        assert await listed(s="OPEN") == ([ids[2], ids[0]], False)
        assert await listed(s="RESOLVED") == ([ids[1]], False)
        assert await listed(l=2) == ([ids[2], ids[1]], True)
        assert await listed(a=ids[1], l=2) == ([ids[0]], False)
        assert await alice.error_code(QUESTIONS, c=course_id, l=0) == "BAD_USER_INPUT"
        assert await outsider.error_code(QUESTIONS, c=course_id) == "FORBIDDEN"

        found = (
            await alice.data(SIMILAR, c=course_id, t="두 번째 과제는 언제까지 제출해야 하나요?")
        )["similarQuestions"]
        assert found[0]["question"]["messageId"] == ids[0]
        assert 0 < found[0]["score"] <= 1
        assert await outsider.error_code(SIMILAR, c=course_id, t="과제") == "FORBIDDEN"
        assert await alice.error_code(SIMILAR, c=course_id, t=" ") == "BAD_USER_INPUT"
