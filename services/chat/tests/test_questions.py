"""Questions and endorsed answers through gRPC on a real Redis Cluster (README, "Questions
and endorsed answers"): sent, answered, endorsed, resolved and reopened with each rule
refused clearly; every change once in the course's event log; the question lists by state;
endorsed answers and their questions kept past the course TTL; similar questions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from nextcampus_common import scripts
from nextcampus_common.keys import CourseKeys
from nextcampus_common.proto.chat.v1 import chat_pb2
from nextcampus_common.proto.chat.v1.chat_pb2 import CourseEventKind as Kind
from testing.grpc_calls import StubCalls, refused

QUESTION = chat_pb2.MESSAGE_KIND_QUESTION
OPEN, RESOLVED, ALL = (
    chat_pb2.QUESTION_STATE_OPEN,
    chat_pb2.QUESTION_STATE_RESOLVED,
    chat_pb2.QUESTION_STATE_ALL,
)


class Asker:
    """One user's calls through the generated stub (a third-party client)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.call = StubCalls(client)

    async def ask(self, course_id: str, content: str, **extra: Any) -> chat_pb2.ChatMessage:
        request = chat_pb2.SendMessageRequest(
            course_id=course_id, content=content, kind=QUESTION, **extra
        )
        return (await self.call("SendMessage", request)).message

    async def send(self, course_id: str, content: str, reply_to: str = "") -> chat_pb2.ChatMessage:
        request = chat_pb2.SendMessageRequest(
            course_id=course_id, content=content, reply_to_message_id=reply_to
        )
        return (await self.call("SendMessage", request)).message

    async def change(
        self, method: str, course_id: str, message_id: str, mutation_id: str = ""
    ) -> chat_pb2.ChatMessage:
        request = chat_pb2.QuestionChangeRequest(
            course_id=course_id, message_id=message_id, client_mutation_id=mutation_id
        )
        return await self.call(method, request)

    async def questions(
        self, course_id: str, state: int = ALL, after: str = "", limit: int = 0
    ) -> chat_pb2.ListQuestionsResponse:
        request = chat_pb2.ListQuestionsRequest(
            course_id=course_id, state=state, after=after, limit=limit
        )
        return await self.call("ListQuestions", request)

    async def similar(self, course_id: str, text: str, limit: int = 0) -> list[tuple[str, float]]:
        request = chat_pb2.SimilarQuestionsRequest(course_id=course_id, text=text, limit=limit)
        found = (await self.call("SimilarQuestions", request)).questions
        return [(q.question.content, q.score) for q in found]


@pytest.fixture
def user_for(client_for: Callable[..., Any]) -> Callable[..., Asker]:
    return lambda *args, **kw: Asker(client_for(*args, **kw))


def ids(messages: Any) -> list[str]:
    return [m.message_id for m in messages]


async def test_a_question_is_answered_endorsed_resolved_and_reopened_with_each_rule_refused(
    user_for, course_id
):
    alice, bob = user_for("alice", [course_id]), user_for("bob", [course_id])
    mod = user_for("mod", [course_id], [course_id])
    outsider = user_for("eve", ["other"], ["other"])
    question = await alice.ask(course_id, "When is homework 3 due?")
    assert question.kind == QUESTION
    assert (question.resolved_at, question.endorsed_answer_count) == (0, 0)
    answer = await bob.send(course_id, "Friday, 23:59", reply_to=question.message_id)
    plain = await bob.send(course_id, "hello")
    aside = await alice.send(course_id, "thanks", reply_to=plain.message_id)

    denied, bad = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION
    await refused(alice.change("EndorseAnswer", course_id, answer.message_id), denied, "moderators")
    await refused(mod.change("EndorseAnswer", course_id, question.message_id), bad, "not an answer")
    await refused(mod.change("EndorseAnswer", course_id, aside.message_id), bad, "not an answer")
    await refused(mod.change("ResolveQuestion", course_id, plain.message_id), bad, "not a question")
    await refused(
        bob.change("ResolveQuestion", course_id, question.message_id), denied, "question's author"
    )
    await refused(
        mod.change("ResolveQuestion", course_id, "123"), grpc.StatusCode.NOT_FOUND, "not found"
    )
    await refused(
        alice.ask(course_id, "a question in a thread?", reply_to_message_id=plain.message_id),
        grpc.StatusCode.INVALID_ARGUMENT,
        "cannot be a reply",
    )
    await refused(
        alice.call(
            "SendMessage", chat_pb2.SendMessageRequest(course_id=course_id, content="x", kind=7)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown message kind",
    )
    for call in [
        outsider.ask(course_id, "x"),
        outsider.change("EndorseAnswer", course_id, answer.message_id),
        outsider.change("ResolveQuestion", course_id, question.message_id),
        outsider.questions(course_id),
        outsider.similar(course_id, "homework"),
    ]:
        await refused(call, denied, "not in course")

    endorsed = await mod.change("EndorseAnswer", course_id, answer.message_id, "m1")
    assert endorsed.endorsed_at >= answer.timestamp
    # A retry with the same mutation id, and endorsing again, change nothing.
    assert (await mod.change("EndorseAnswer", course_id, answer.message_id, "m1")) == endorsed
    assert (await mod.change("EndorseAnswer", course_id, answer.message_id)) == endorsed
    assert (await bob.client.get(course_id, question.message_id)).endorsed_answer_count == 1
    resolved = await alice.change("ResolveQuestion", course_id, question.message_id)
    assert resolved.resolved_at > 0
    reopened = await mod.change("ReopenQuestion", course_id, question.message_id)
    assert reopened.resolved_at == 0
    await mod.change("ResolveQuestion", course_id, question.message_id)
    unendorsed = await mod.change("UnendorseAnswer", course_id, answer.message_id)
    assert unendorsed.endorsed_at == 0
    assert (await bob.client.get(course_id, question.message_id)).endorsed_answer_count == 0

    events = await alice.client.all_events(course_id)
    assert [(e.kind, e.message.message_id, e.actor_user_id) for e in events] == [
        (Kind.MESSAGE_ADDED, question.message_id, "alice"),
        (Kind.MESSAGE_ADDED, answer.message_id, "bob"),
        (Kind.MESSAGE_ADDED, plain.message_id, "bob"),
        (Kind.MESSAGE_ADDED, aside.message_id, "alice"),
        (Kind.ANSWER_ENDORSED, answer.message_id, "mod"),
        (Kind.QUESTION_RESOLVED, question.message_id, "alice"),
        (Kind.QUESTION_REOPENED, question.message_id, "mod"),
        (Kind.QUESTION_RESOLVED, question.message_id, "mod"),
        (Kind.ANSWER_UNENDORSED, answer.message_id, "mod"),
    ]
    assert events[0].message.kind == QUESTION
    # An endorsement's event carries the question too, as it is now (the page's count of
    # endorsed answers needs no second round trip).
    endorsements = [e for e in events if e.kind in (Kind.ANSWER_ENDORSED, Kind.ANSWER_UNENDORSED)]
    assert [e.root.message_id for e in endorsements] == [question.message_id] * 2
    assert all(e.root.kind == QUESTION for e in endorsements)


async def test_a_live_stream_says_a_message_is_a_question(user_for, course_id):
    alice = user_for("alice", [course_id])
    stream = alice.client.subscribe(course_id)
    await stream.initial_metadata()
    question = await alice.ask(course_id, "Is the lab open on Sunday?")
    received = await stream.read()
    stream.cancel()
    assert (received.message_id, received.kind) == (question.message_id, QUESTION)


async def test_questions_are_listed_newest_first_by_state_page_by_page(user_for, course_id):
    alice, mod = user_for("alice", [course_id]), user_for("mod", [course_id], [course_id])
    asked = [await alice.ask(course_id, f"question {n}?") for n in range(5)]
    await alice.send(course_id, "not a question")
    for question in (asked[1], asked[3]):
        await mod.change("ResolveQuestion", course_id, question.message_id)
    await alice.client.delete(course_id, asked[4].message_id)  # a deleted one leaves the lists

    assert ids((await alice.questions(course_id, OPEN)).questions) == ids([asked[2], asked[0]])
    assert ids((await alice.questions(course_id, RESOLVED)).questions) == ids([asked[3], asked[1]])
    first = await alice.questions(course_id, ALL, limit=2)
    assert (ids(first.questions), first.has_more) == (ids([asked[3], asked[2]]), True)
    rest = await alice.questions(course_id, ALL, after=first.questions[-1].message_id, limit=2)
    assert (ids(rest.questions), rest.has_more) == (ids([asked[1], asked[0]]), False)
    unspecified = await alice.questions(course_id, chat_pb2.QUESTION_STATE_UNSPECIFIED)
    assert ids(unspecified.questions) == ids(asked[3::-1])
    await mod.change("ReopenQuestion", course_id, asked[1].message_id)
    assert ids((await alice.questions(course_id, OPEN)).questions) == ids(
        [asked[2], asked[1], asked[0]]
    )
    await refused(
        alice.questions(course_id, OPEN, limit=1000),
        grpc.StatusCode.INVALID_ARGUMENT,
        "limit must be between",
    )
    await refused(
        alice.questions(course_id, 9), grpc.StatusCode.INVALID_ARGUMENT, "unknown question state"
    )


async def test_an_endorsed_answer_and_its_question_outlive_the_course_ttl_until_unendorsed(
    user_for, course_id, cluster_client
):
    alice, bob = user_for("alice", [course_id]), user_for("bob", [course_id])
    mod = user_for("mod", [course_id], [course_id])
    keys = CourseKeys(course_id)
    question = await alice.ask(course_id, "과제 2 제출 마감이 언제인가요?")
    answer = await bob.send(course_id, "금요일 자정입니다", reply_to=question.message_id)
    other_answer = await alice.send(course_id, "저도 궁금해요", reply_to=question.message_id)
    other_question = await bob.ask(course_id, "중간고사 범위는?")
    noise = await alice.send(course_id, "ㅋㅋ")
    await mod.change("EndorseAnswer", course_id, answer.message_id)
    kept = [keys.message(question.message_id), keys.message(answer.message_id)]
    for key in [*kept, keys.messages, keys.open_questions, keys.thread(question.message_id)]:
        assert cluster_client.execute_command("PEXPIRETIME", key) == -1, key

    # The operator re-times the course to a TTL that every message is past already: all
    # else goes, the endorsed answer and its question stay, and so do the lists.
    cluster_client.hset(keys.policy, "ttl_seconds", "1")
    cluster_client.eval(
        scripts.RETIME.source,
        3,
        keys.messages,
        keys.pins,
        keys.endorsed,
        *[keys.prefix, keys.client_prefix, 1, "-inf", 100],
    )
    for gone in (other_answer, other_question, noise):
        assert cluster_client.exists(keys.message(gone.message_id)) == 0
    for key in [*kept, keys.messages, keys.open_questions]:
        assert cluster_client.execute_command("PEXPIRETIME", key) == -1, key
    assert ids((await alice.questions(course_id)).questions) == [question.message_id]
    thread = await alice.call(
        "GetThread",
        chat_pb2.GetThreadRequest(course_id=course_id, root_message_id=question.message_id),
    )
    assert ids(thread.replies) == [answer.message_id]

    # Un-endorsed, both get the course's TTL (1 s here) from now, and so do the lists.
    unendorsed = await mod.change("UnendorseAnswer", course_id, answer.message_id)
    now_ms = unendorsed.timestamp  # a lower bound for "now"
    for key in [*kept, keys.messages, keys.open_questions]:
        expires = cluster_client.execute_command("PEXPIRETIME", key)
        assert now_ms < expires, key
        assert cluster_client.pttl(key) <= 1000, key


async def test_a_pinned_endorsed_answer_stays_until_both_are_undone(
    user_for, course_id, cluster_client
):
    alice, mod = user_for("alice", [course_id]), user_for("mod", [course_id], [course_id])
    keys = CourseKeys(course_id)
    question = await alice.ask(course_id, "Which chapters are on the final?")
    answer = await mod.send(course_id, "1-7", reply_to=question.message_id)
    await mod.change("EndorseAnswer", course_id, answer.message_id)
    await mod.call(
        "PinMessage", chat_pb2.PinRequest(course_id=course_id, message_id=answer.message_id)
    )
    await mod.call(
        "UnpinMessage", chat_pb2.PinRequest(course_id=course_id, message_id=answer.message_id)
    )
    assert cluster_client.pttl(keys.message(answer.message_id)) == -1
    assert cluster_client.pttl(keys.messages) == -1
    # Deleting an endorsed answer un-endorses it: it and its question get the TTL back.
    await mod.client.delete(course_id, answer.message_id)
    assert cluster_client.pttl(keys.message(answer.message_id)) > 0
    assert cluster_client.pttl(keys.message(question.message_id)) > 0
    assert (await alice.client.get(course_id, question.message_id)).endorsed_answer_count == 0
    assert cluster_client.zcard(keys.endorsed) == 0


async def test_an_endorsement_of_a_deleted_question_can_be_taken_back(
    user_for, course_id, cluster_client
):
    alice, mod = user_for("alice", [course_id]), user_for("mod", [course_id], [course_id])
    keys = CourseKeys(course_id)
    question = await alice.ask(course_id, "Is the exam open book?")
    answer = await mod.send(course_id, "No", reply_to=question.message_id)
    late = await alice.send(course_id, "thanks", reply_to=question.message_id)
    await mod.change("EndorseAnswer", course_id, answer.message_id)
    await alice.client.delete(course_id, question.message_id)
    await refused(
        mod.change("EndorseAnswer", course_id, late.message_id),
        grpc.StatusCode.FAILED_PRECONDITION,
        f"question {question.message_id} was deleted",
    )
    assert (await mod.change("UnendorseAnswer", course_id, answer.message_id)).endorsed_at == 0
    assert cluster_client.pttl(keys.message(answer.message_id)) > 0
    assert cluster_client.pttl(keys.message(question.message_id)) > 0


async def test_similar_questions_suggest_earlier_questions_of_the_course(user_for, course_id):
    alice, bob = user_for("alice", [course_id]), user_for("bob", [course_id])
    await alice.ask(course_id, "과제 2 제출 마감이 언제인가요?")
    await alice.ask(course_id, "When is homework 3 due?")
    await alice.ask(course_id, "Can we use numpy in the project?")
    await alice.send(course_id, "When is homework 3 due? (not a question: never suggested)")
    found = await bob.similar(course_id, "두 번째 과제는 언제까지 제출해야 하나요?", limit=2)
    assert found[0][0] == "과제 2 제출 마감이 언제인가요?"
    found = await bob.similar(course_id, "what is the due date for homework 3")
    assert next(content for content, _ in found) == "When is homework 3 due?"
    assert all(0 < score <= 1 for _, score in found)
    assert await bob.similar(course_id, "zebra xylophone") == []
    await refused(bob.similar(course_id, "  "), grpc.StatusCode.INVALID_ARGUMENT, "empty")
    await refused(
        bob.similar(course_id, "homework", limit=50),
        grpc.StatusCode.INVALID_ARGUMENT,
        "limit must be between 1 and 20",
    )


async def test_question_changes_are_rate_limited_as_other_changes(
    chat_settings_factory, make_token, course_id
):
    from nextcampus_chat.server import build_server
    from nextcampus_common.chat_api import ChatClient

    server = build_server(
        chat_settings_factory(action_rate_limit_messages=2, action_rate_limit_seconds=3600)
    )
    await server.start()
    try:
        async with ChatClient(
            f"127.0.0.1:{server.port}", make_token("alice", [course_id])
        ) as client:
            alice = Asker(client)
            question = await alice.ask(course_id, "anyone?")
            await alice.change("ResolveQuestion", course_id, question.message_id)
            await alice.change("ReopenQuestion", course_id, question.message_id)
            await refused(
                alice.change("ResolveQuestion", course_id, question.message_id),
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "too many changes",
            )
    finally:
        await server.stop()
