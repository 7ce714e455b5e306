"""The property the course event log exists for, over random sequences of changes against a
real chat server on a real Redis Cluster: a client that resumes from ANY position of a mixed
log (sends, replies, edits, deletes, reactions, pins) ends in the same state as a client
that never disconnected, and both equal what the store holds.

A client keeps the messages by id, each as the newest event that carried it says (events
carry the message as it is when they are read, an added reply its root too); that is all a
client needs to do."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nextcampus_common.proto.chat.v1 import chat_pb2
from testing.grpc_calls import StubCalls

USERS = ("alice", "bob", "mod")
EMOJI = ("👍", "🎉", "❤️")
# Refusals a random sequence runs into (editing someone else's message, reacting to a
# deleted one, …): part of the property — a refused change must leave no event.
EXPECTED_REFUSALS = {
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
}

operation = st.one_of(
    st.tuples(st.just("send"), st.sampled_from(USERS), st.none()),
    st.tuples(st.just("reply"), st.sampled_from(USERS), st.integers(0, 30)),
    st.tuples(st.just("edit"), st.sampled_from(USERS), st.integers(0, 30)),
    st.tuples(st.just("delete"), st.sampled_from(USERS), st.integers(0, 30)),
    st.tuples(st.just("react"), st.sampled_from(USERS), st.integers(0, 30)),
    st.tuples(st.just("unreact"), st.sampled_from(USERS), st.integers(0, 30)),
    st.tuples(st.just("pin"), st.just("mod"), st.integers(0, 30)),
    st.tuples(st.just("unpin"), st.just("mod"), st.integers(0, 30)),
)


def as_seen(message: chat_pb2.ChatMessage) -> bytes:
    """A message as every reader sees it (without the caller's own reaction marks)."""
    copy = chat_pb2.ChatMessage()
    copy.CopyFrom(message)
    for reaction in copy.reactions:
        reaction.reacted_by_me = False
    return copy.SerializeToString(deterministic=True)


def apply(state: dict[str, bytes], events: list[chat_pb2.CourseEvent]) -> dict[str, bytes]:
    for event in events:
        state[event.message.message_id] = as_seen(event.message)
        if event.HasField("root"):
            state[event.root.message_id] = as_seen(event.root)
    return state


async def change(
    users: dict[str, StubCalls], course_id: str, sent: list[str], op: tuple[str, str, int | None]
) -> None:
    kind, user, pick = op
    call = users[user]
    target = sent[pick % len(sent)] if sent and pick is not None else None
    n = len(sent)
    try:
        if kind == "send" or (target is None and kind == "reply"):
            request = chat_pb2.SendMessageRequest(course_id=course_id, content=f"m{n} by {user}")
            sent.append((await call("SendMessage", request)).message.message_id)
        elif target is None:
            return
        elif kind == "reply":
            request = chat_pb2.SendMessageRequest(
                course_id=course_id, content=f"reply {n}", reply_to_message_id=target
            )
            sent.append((await call("SendMessage", request)).message.message_id)
        elif kind == "edit":
            request = chat_pb2.EditMessageRequest(
                course_id=course_id, message_id=target, content=f"edited at {n} by {user}"
            )
            await call("EditMessage", request)
        elif kind == "delete":
            request = chat_pb2.DeleteMessageRequest(course_id=course_id, message_id=target)
            await call("DeleteMessage", request)
        elif kind in ("react", "unreact"):
            reaction = chat_pb2.ReactionRequest(
                course_id=course_id, message_id=target, emoji=EMOJI[n % len(EMOJI)]
            )
            await call("AddReaction" if kind == "react" else "RemoveReaction", reaction)
        else:
            pin = chat_pb2.PinRequest(course_id=course_id, message_id=target)
            await call("PinMessage" if kind == "pin" else "UnpinMessage", pin)
    except grpc.aio.AioRpcError as exc:
        if exc.code() not in EXPECTED_REFUSALS:
            raise


@pytest.mark.timeout(600)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=st.lists(operation, min_size=1, max_size=25))
async def test_resuming_from_any_position_gives_the_state_of_a_client_that_never_left(
    client_for: Callable[..., Any], operations: list[tuple[str, str, int | None]]
) -> None:
    course_id = f"p-{uuid.uuid4().hex[:12]}"
    users = {
        name: StubCalls(client_for(name, [course_id], [course_id] if name == "mod" else []))
        for name in USERS
    }
    watcher = users["alice"]
    live = watcher.client.subscribe_events(course_id)
    await live.initial_metadata()  # every change from here on comes
    sent: list[str] = []
    for op in operations:
        await change(users, course_id, sent, op)
    logged = await watcher.client.all_events(course_id)
    seen: list[chat_pb2.CourseEvent] = []
    if logged:
        async for event in live:
            seen.append(event)
            if len(seen) == len(logged):
                break
    live.cancel()
    assert [e.cursor for e in seen] == [e.cursor for e in logged]

    never_left = apply({}, seen)
    history = await watcher.client.history(course_id, limit=200)
    assert never_left == {m.message_id: as_seen(m) for m in history.messages}
    for position in range(len(seen) + 1):
        after = seen[position - 1].cursor if position else ""
        resumed = apply(
            apply({}, seen[:position]), await watcher.client.all_events(course_id, after=after)
        )
        assert resumed == never_left, f"resumed after event {position} of {len(seen)}"
