"""Anonymous to classmates (README, "Anonymous to classmates"), on the real Redis Cluster and
real gRPC: a classmate receives the author's pseudonym and never the author — checked on the
bytes of every answer and stream item they get — while the course's moderators get the author.
The policy field is written into the policy hash as the operator writes it (the operator's
own tests cover the CRD → hash step)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc

from nextcampus_common.chat_api import ChatClient, stream_live_after, stream_live_cursor
from nextcampus_common.keys import CourseKeys
from nextcampus_common.proto.chat.v1 import chat_pb2
from testing.grpc_calls import RawCalls, StubCalls, refused
from testing.plugin import StreamCollector
from testing.policy_hash import allow_anonymous

# Distinctive, so that finding it in bytes means it was there, and only there.
AUTHOR = "hidden-author-7f3q"


class Received:
    """Every byte one client received from the service."""

    def __init__(self, client: ChatClient) -> None:
        self.raw = RawCalls(client)
        self.chunks: list[bytes] = []

    async def __call__(self, method: str, request: Any) -> bytes:
        answer = await self.raw(method, request)
        self.chunks.append(answer)
        return answer

    def holds(self, text: str) -> bool:
        return any(text.encode() in chunk for chunk in self.chunks)


async def test_a_classmate_gets_the_pseudonym_and_a_moderator_the_author_on_every_rpc(
    client_for: Callable[..., ChatClient], course_id: str, cluster_client: Any
) -> None:
    allow_anonymous(cluster_client, course_id)
    author = client_for(AUTHOR, [course_id])
    bob = client_for("bob", [course_id])
    prof = client_for("prof", [], [course_id])
    bob_bytes = Received(bob)

    # Bob's live streams, from before anything happens.
    message_call = bob_bytes.raw.stream(
        "SubscribeMessages", chat_pb2.SubscribeMessagesRequest(course_id=course_id)
    )
    event_call = bob_bytes.raw.stream(
        "SubscribeEvents", chat_pb2.SubscribeEventsRequest(course_id=course_id, ephemeral=True)
    )
    await stream_live_after(message_call)
    await stream_live_cursor(event_call)
    streamed_messages: StreamCollector[bytes] = StreamCollector(message_call)
    streamed_events: StreamCollector[bytes] = StreamCollector(event_call)

    # Bob asks; the author answers anonymously, asks anonymously (mentioning bob), edits,
    # reacts to their own question, resolves it; the moderator pins it and endorses the answer.
    question = (await bob.send(course_id, "How do I start lab 3?", question=True)).message
    answer = await author.send(
        course_id, "Run make lab3 first", reply_to=question.message_id, anonymous=True
    )
    asked = await author.send(
        course_id, "@bob is the deadline Friday?", question=True, anonymous=True
    )
    mine = asked.message
    pseudonym = mine.pseudonym
    assert mine.anonymous
    assert pseudonym.startswith("anonymous:")
    assert len(pseudonym) == len("anonymous:") + 8
    assert mine.user_id == pseudonym  # the author is no moderator: their own answer too
    author_calls, prof_calls = StubCalls(author), StubCalls(prof)
    await author_calls(
        "EditMessage",
        chat_pb2.EditMessageRequest(
            course_id=course_id, message_id=mine.message_id, content="@bob is it due Friday?"
        ),
    )
    await author_calls(
        "AddReaction",
        chat_pb2.ReactionRequest(course_id=course_id, message_id=mine.message_id, emoji="👀"),
    )
    await author_calls(
        "ResolveQuestion",
        chat_pb2.QuestionChangeRequest(course_id=course_id, message_id=mine.message_id),
    )
    await prof_calls(
        "PinMessage", chat_pb2.PinRequest(course_id=course_id, message_id=mine.message_id)
    )
    await prof_calls(
        "EndorseAnswer",
        chat_pb2.QuestionChangeRequest(course_id=course_id, message_id=answer.message.message_id),
    )

    # Everything bob can ask for, as bytes.
    pages = {
        "ListMessages": chat_pb2.ListMessagesRequest(course_id=course_id),
        "GetMessage": chat_pb2.GetMessageRequest(course_id=course_id, message_id=mine.message_id),
        "GetThread": chat_pb2.GetThreadRequest(
            course_id=course_id, root_message_id=question.message_id
        ),
        "ListPinned": chat_pb2.ListPinnedRequest(course_id=course_id),
        "ListQuestions": chat_pb2.ListQuestionsRequest(course_id=course_id),
        "SimilarQuestions": chat_pb2.SimilarQuestionsRequest(
            course_id=course_id, text="is the deadline on Friday"
        ),
        "ListMyMentions": chat_pb2.ListMyMentionsRequest(),
        # A change's answer (the message after it) too.
        "AddReaction": chat_pb2.ReactionRequest(
            course_id=course_id, message_id=mine.message_id, emoji="👍"
        ),
        "ListEvents": chat_pb2.ListEventsRequest(course_id=course_id),
    }
    answers = {method: await bob_bytes(method, request) for method, request in pages.items()}
    for method, answer_bytes in answers.items():
        # Each answer holds the anonymous message under its pseudonym (so the check below
        # looks where the author would be).
        assert pseudonym.encode() in answer_bytes, method
    # The streams carried every change: the three messages, and each event of the log.
    events = chat_pb2.ListEventsResponse.FromString(answers["ListEvents"]).events

    def in_log(collector: StreamCollector[bytes]) -> int:
        return sum(1 for item in collector.items if chat_pb2.CourseEvent.FromString(item).cursor)

    await streamed_messages.wait_for(lambda c: len(c.items) >= 3)
    await streamed_events.wait_for(lambda c: in_log(c) >= len(events))
    for collector in (streamed_messages, streamed_events):
        await collector.close()
        bob_bytes.chunks += collector.items

    assert not bob_bytes.holds(AUTHOR), "the author reached a classmate"
    # What bob read says who did what, under the pseudonym.
    actors = {(e.kind, e.actor_user_id) for e in events}
    for kind in (
        chat_pb2.MESSAGE_ADDED,
        chat_pb2.MESSAGE_EDITED,
        chat_pb2.REACTION_ADDED,
        chat_pb2.QUESTION_RESOLVED,
    ):
        assert (kind, pseudonym) in actors
    assert (chat_pb2.MESSAGE_PINNED, "prof") in actors  # moderators are never anonymous
    thread = chat_pb2.ThreadPage.FromString(answers["GetThread"])
    assert thread.root.participant_ids == [pseudonym]
    assert [r.user_id for r in thread.replies] == [pseudonym]

    # The moderator sees the author, marked anonymous, with the pseudonym beside.
    seen = await prof_calls(
        "GetMessage", chat_pb2.GetMessageRequest(course_id=course_id, message_id=mine.message_id)
    )
    assert (seen.user_id, seen.anonymous, seen.pseudonym) == (AUTHOR, True, pseudonym)
    logged = (await prof.events(course_id)).events
    assert {(e.kind, e.actor_user_id) for e in logged if e.message.anonymous} >= {
        (chat_pb2.MESSAGE_ADDED, AUTHOR),
        (chat_pb2.QUESTION_RESOLVED, AUTHOR),
    }
    # The moderators' export names the author too (only moderators may export).
    lines = [json.loads(line) async for chunk in prof.export(course_id) for line in chunk.lines]
    exported = {m["message"]["messageId"]: m["message"] for m in lines if m["type"] == "message"}
    assert exported[mine.message_id]["userId"] == AUTHOR
    assert exported[mine.message_id]["anonymous"] is True
    assert exported[mine.message_id]["pseudonym"] == pseudonym


async def test_anonymous_posting_is_refused_unless_the_policy_allows_it_and_stays_anonymous(
    client_for: Callable[..., ChatClient], course_id: str, cluster_client: Any
) -> None:
    author = client_for(AUTHOR, [course_id])
    bob = client_for("bob", [course_id])
    await refused(
        author.send(course_id, "who am I", anonymous=True),
        grpc.StatusCode.FAILED_PRECONDITION,
        "does not allow anonymous messages",
    )
    assert (await bob.history(course_id)).messages == []  # nothing stored

    allow_anonymous(cluster_client, course_id)
    policy = await bob.policy(course_id)
    assert policy.anonymous_posting == chat_pb2.ANONYMOUS_POSTING_TO_CLASSMATES
    sent = (await author.send(course_id, "now anonymous", anonymous=True)).message

    # Switched off again (after abuse): no new anonymous message, the old one stays so.
    allow_anonymous(cluster_client, course_id, allowed=False)
    assert (await bob.policy(course_id)).anonymous_posting == chat_pb2.ANONYMOUS_POSTING_DISABLED
    await refused(
        author.send(course_id, "again", anonymous=True),
        grpc.StatusCode.FAILED_PRECONDITION,
        "anonymousPosting is Disabled",
    )
    (kept,) = (await bob.history(course_id)).messages
    assert (kept.message_id, kept.user_id, kept.anonymous) == (
        sent.message_id,
        sent.pseudonym,
        True,
    )


async def test_a_pseudonym_is_stable_per_author_and_course_and_names_nobody_else(
    client_for: Callable[..., ChatClient], course_id: str, cluster_client: Any
) -> None:
    other_course = f"{course_id}-b"
    for course in (course_id, other_course):
        allow_anonymous(cluster_client, course)
    author = client_for(AUTHOR, [course_id, other_course])
    carol = client_for("carol", [course_id])

    async def pseudonym(client: ChatClient, course: str, text: str) -> str:
        return (await client.send(course, text, anonymous=True)).message.pseudonym

    (before,) = (await author.my_courses(course_id)).courses
    assert before.pseudonym == ""  # no anonymous message in the course yet
    first = await pseudonym(author, course_id, "one")
    # The author can ask for their own (a client shows their anonymous messages as theirs).
    (state,) = (await author.my_courses(course_id)).courses
    assert state.pseudonym == first
    assert await pseudonym(author, course_id, "two") == first
    assert await pseudonym(carol, course_id, "three") != first
    assert await pseudonym(author, other_course, "four") != first  # not linkable across
    # A named message of the same author shows the author, not the pseudonym.
    named = (await author.send(course_id, "signed")).message
    assert (named.user_id, named.anonymous, named.pseudonym) == (AUTHOR, False, "")


async def test_rate_limits_and_moderation_apply_to_anonymous_messages(
    client_for: Callable[..., ChatClient], course_id: str, cluster_client: Any
) -> None:
    allow_anonymous(cluster_client, course_id)
    key = CourseKeys(course_id).policy
    cluster_client.hset(key, mapping={"rate_limit_messages": "2", "rate_limit_seconds": "3600"})
    author = client_for(AUTHOR, [course_id])
    bob = client_for("bob", [course_id])
    prof = client_for("prof", [], [course_id])
    await author.send(course_id, "named")
    spam = (await author.send(course_id, "anonymous spam", anonymous=True)).message
    # One budget per user, whatever name a message shows.
    await refused(
        author.send(course_id, "more", anonymous=True),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "",
    )
    events = bob.subscribe_events(course_id)
    cursor = await stream_live_cursor(events)
    assert cursor is not None
    await prof.delete(course_id, spam.message_id)
    async for event in events:
        assert event.kind == chat_pb2.MESSAGE_DELETED
        # The moderator who deleted it is named; its author is still not.
        assert (event.actor_user_id, event.message.user_id) == ("prof", spam.pseudonym)
        assert event.message.deleted
        break
    events.cancel()
