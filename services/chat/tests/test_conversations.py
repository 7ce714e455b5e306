"""Conversations through gRPC on a real Redis Cluster: edits with their history, replies and
threads, reactions, pins — each change once in the course's event log, each rule refused
with an error a user can act on, retries with a client_mutation_id applied once."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from nextcampus_chat.store import MAX_PINS_PER_COURSE, MAX_REACTIONS_PER_MESSAGE
from nextcampus_common import scripts
from nextcampus_common.keys import MESSAGE_FIELDS, CourseKeys
from nextcampus_common.metadata import RETRY_AFTER_MS, metadata_value
from nextcampus_common.proto.chat.v1 import chat_pb2
from nextcampus_common.proto.chat.v1.chat_pb2 import CourseEventKind as Kind
from testing.grpc_calls import StubCalls, refused

COMMON_EMOJI = ["👍", "❤️", "😂", "🎉", "🤔", "👀", "🙏", "🔥", "✅", "💯", "😮", "😢"]


class User:
    """One user's calls to ChatService through the generated stub (a third-party client)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.call = StubCalls(client)

    async def send(self, course_id: str, content: str, reply_to: str = "") -> chat_pb2.ChatMessage:
        request = chat_pb2.SendMessageRequest(
            course_id=course_id, content=content, reply_to_message_id=reply_to
        )
        return (await self.call("SendMessage", request)).message

    async def edit(
        self, course_id: str, message_id: str, content: str, mutation_id: str = ""
    ) -> chat_pb2.ChatMessage:
        request = chat_pb2.EditMessageRequest(
            course_id=course_id,
            message_id=message_id,
            content=content,
            client_mutation_id=mutation_id,
        )
        return await self.call("EditMessage", request)

    async def edits(self, course_id: str, message_id: str) -> list[tuple[str, int]]:
        request = chat_pb2.GetEditHistoryRequest(course_id=course_id, message_id=message_id)
        history = await self.call("GetEditHistory", request)
        return [(v.content, v.written_at) for v in history.versions]

    async def react(
        self,
        course_id: str,
        message_id: str,
        emoji: str,
        *,
        add: bool = True,
        mutation_id: str = "",
    ) -> chat_pb2.ChatMessage:
        request = chat_pb2.ReactionRequest(
            course_id=course_id, message_id=message_id, emoji=emoji, client_mutation_id=mutation_id
        )
        return await self.call("AddReaction" if add else "RemoveReaction", request)

    async def pin(
        self, course_id: str, message_id: str, *, pin: bool = True, mutation_id: str = ""
    ) -> chat_pb2.ChatMessage:
        request = chat_pb2.PinRequest(
            course_id=course_id, message_id=message_id, client_mutation_id=mutation_id
        )
        return await self.call("PinMessage" if pin else "UnpinMessage", request)

    async def pinned(self, course_id: str) -> list[chat_pb2.ChatMessage]:
        request = chat_pb2.ListPinnedRequest(course_id=course_id)
        return list((await self.call("ListPinned", request)).messages)

    async def thread(self, course_id: str, root_id: str, **paging: Any) -> chat_pb2.ThreadPage:
        request = chat_pb2.GetThreadRequest(course_id=course_id, root_message_id=root_id, **paging)
        return await self.call("GetThread", request)

    async def get(self, course_id: str, message_id: str) -> chat_pb2.ChatMessage:
        return await self.client.get(course_id, message_id)

    async def events(self, course_id: str, after: str = "") -> list[chat_pb2.CourseEvent]:
        return await self.client.all_events(course_id, after=after)


@pytest.fixture
def user_for(client_for: Callable[..., Any]) -> Callable[..., User]:
    return lambda *args, **kw: User(client_for(*args, **kw))


def reactions(message: chat_pb2.ChatMessage) -> list[tuple[str, int, bool]]:
    return [(r.emoji, r.count, r.reacted_by_me) for r in message.reactions]


def kinds(events: list[chat_pb2.CourseEvent]) -> list[tuple[int, str, str]]:
    return [(e.kind, e.message.message_id, e.actor_user_id) for e in events]


# -- edits -------------------------------------------------------------------------------


async def test_the_author_edits_and_the_earlier_versions_are_kept_for_author_and_moderators(
    user_for, course_id
):
    alice, bob = user_for("alice", [course_id]), user_for("bob", [course_id])
    mod = user_for("mod", [course_id], [course_id])
    sent = await alice.send(course_id, "helo")
    assert sent.edited_at == 0
    first = await alice.edit(course_id, sent.message_id, "hello")
    second = await alice.edit(course_id, sent.message_id, "hello, all")
    assert (second.content, second.message_id, second.timestamp) == (
        "hello, all",
        sent.message_id,
        sent.timestamp,
    )
    assert sent.timestamp <= first.edited_at <= second.edited_at
    assert (await bob.get(course_id, sent.message_id)).content == "hello, all"
    expected = [("helo", sent.timestamp), ("hello", first.edited_at)]
    assert await alice.edits(course_id, sent.message_id) == expected
    assert await mod.edits(course_id, sent.message_id) == expected
    await refused(
        bob.edits(course_id, sent.message_id), grpc.StatusCode.PERMISSION_DENIED, "moderators"
    )
    await refused(
        bob.edit(course_id, sent.message_id, "mine now"),
        grpc.StatusCode.PERMISSION_DENIED,
        "only its author",
    )
    # Not even a moderator edits someone else's words (they delete).
    await refused(
        mod.edit(course_id, sent.message_id, "moderated"),
        grpc.StatusCode.PERMISSION_DENIED,
        "only its author",
    )
    events = await bob.events(course_id)
    assert kinds(events) == [
        (Kind.MESSAGE_ADDED, sent.message_id, "alice"),
        (Kind.MESSAGE_EDITED, sent.message_id, "alice"),
        (Kind.MESSAGE_EDITED, sent.message_id, "alice"),
    ]
    assert {e.message.content for e in events} == {"hello, all"}  # as it is now


async def test_an_edit_retried_with_its_mutation_id_is_applied_once(user_for, course_id):
    alice = user_for("alice", [course_id])
    sent = await alice.send(course_id, "draft")
    once = await alice.edit(course_id, sent.message_id, "final", mutation_id="edit-1")
    # The user edits again, then the first request's retry arrives: it changes nothing.
    await alice.edit(course_id, sent.message_id, "final!", mutation_id="edit-2")
    again = await alice.edit(course_id, sent.message_id, "final", mutation_id="edit-1")
    assert again.content == "final!"
    assert once.edited_at > 0
    assert [c for c, _ in await alice.edits(course_id, sent.message_id)] == ["draft", "final"]
    assert len([e for e in await alice.events(course_id) if e.kind == Kind.MESSAGE_EDITED]) == 2
    # The same content again is no change: no version, no event.
    await alice.edit(course_id, sent.message_id, "final!")
    assert len(await alice.edits(course_id, sent.message_id)) == 2


async def test_edits_follow_the_send_rules_and_the_course_edit_window(
    user_for, course_id, cluster_client
):
    alice = user_for("alice", [course_id])
    keys = CourseKeys(course_id)
    sent = await alice.send(course_id, "text")
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    await refused(alice.edit(course_id, sent.message_id, "  "), invalid, "must not be empty")
    await refused(alice.edit(course_id, sent.message_id, "a\x1bb"), invalid, "U+001B")
    await refused(alice.edit(course_id, "12x", "b"), invalid, "message id")
    await refused(
        alice.edit(course_id, sent.message_id, "b", mutation_id="no spaces"),
        invalid,
        "client mutation id",
    )
    await refused(
        alice.edit(course_id, "999", "b"), grpc.StatusCode.NOT_FOUND, "message 999 not found"
    )
    cluster_client.hset(keys.policy, "max_length", "5")
    await refused(alice.edit(course_id, sent.message_id, "too long"), invalid, "limit of 5")
    # The window: the message was sent two hours ago, the course allows one.
    cluster_client.hset(keys.policy, "edit_window_seconds", "3600")
    message_key = keys.message(sent.message_id)
    two_hours_ago = int(time.time() * 1000) - 7_200_000
    cluster_client.hset(message_key, "timestamp", two_hours_ago)
    await refused(
        alice.edit(course_id, sent.message_id, "late"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "allows edits for 3600 s after a send",
    )
    cluster_client.hset(keys.policy, "edit_window_seconds", "0")
    fresh = await alice.send(course_id, "new")
    await refused(
        alice.edit(course_id, fresh.message_id, "now"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "does not allow edits",
    )
    assert (await alice.client.policy(course_id)).edit_window_seconds == 0
    await alice.client.delete(course_id, sent.message_id)
    await refused(
        alice.edit(course_id, sent.message_id, "x"), grpc.StatusCode.FAILED_PRECONDITION, "deleted"
    )
    # Nothing of it was stored.
    assert (await alice.get(course_id, fresh.message_id)).content == "new"
    assert await alice.edits(course_id, fresh.message_id) == []


async def test_a_deleted_message_keeps_no_earlier_versions_or_reactions(user_for, course_id):
    alice, mod = user_for("alice", [course_id]), user_for("mod", [course_id], [course_id])
    sent = await alice.send(course_id, "my phone number is 555")
    await alice.edit(course_id, sent.message_id, "oops")
    await mod.react(course_id, sent.message_id, "👀")
    tombstone = await mod.client.delete(course_id, sent.message_id)
    assert (tombstone.deleted, tombstone.content, list(tombstone.reactions)) == (True, "", [])
    assert await mod.edits(course_id, sent.message_id) == []
    assert tombstone.edited_at == 0


# -- replies and threads ------------------------------------------------------------------


async def test_replies_form_one_thread_per_root_with_counts_and_participants(user_for, course_id):
    alice, bob = user_for("alice", [course_id]), user_for("bob", [course_id])
    carol = user_for("carol", [course_id])
    root = await alice.send(course_id, "Is exercise 3 due Friday?")
    first = await bob.send(course_id, "yes", reply_to=root.message_id)
    # A reply to a reply belongs to the same root.
    second = await carol.send(course_id, "I think so too", reply_to=first.message_id)
    third = await bob.send(course_id, "confirmed in the slides", reply_to=root.message_id)
    assert {first.reply_to_message_id, second.reply_to_message_id} == {root.message_id}
    now = await alice.get(course_id, root.message_id)
    assert (now.reply_count, now.last_reply_at) == (3, third.timestamp)
    assert list(now.participant_ids) == ["bob", "carol"]  # the most recent first
    page = await carol.thread(course_id, root.message_id)
    assert page.root.message_id == root.message_id
    assert [m.message_id for m in page.replies] == [
        first.message_id,
        second.message_id,
        third.message_id,
    ]
    assert not page.has_more
    # Asked by a reply's id: the same thread. Paged backwards and forwards.
    by_reply = await carol.thread(course_id, second.message_id, limit=2)
    assert [m.message_id for m in by_reply.replies] == [second.message_id, third.message_id]
    assert by_reply.has_more
    older = await carol.thread(course_id, root.message_id, before_message_id=second.message_id)
    assert [m.message_id for m in older.replies] == [first.message_id]
    newer = await carol.thread(course_id, root.message_id, after_message_id=first.message_id)
    assert [m.message_id for m in newer.replies] == [second.message_id, third.message_id]
    # Replies are messages of the course, in its one order, and events of its log with the
    # root as it is now.
    history = await alice.client.history(course_id, limit=10)
    assert [m.message_id for m in history.messages][-3:] == [
        first.message_id,
        second.message_id,
        third.message_id,
    ]
    added = [e for e in await alice.events(course_id) if e.message.reply_to_message_id]
    assert [e.message.message_id for e in added] == [
        first.message_id,
        second.message_id,
        third.message_id,
    ]
    assert added[-1].root.reply_count == 3
    assert not (await alice.events(course_id))[0].HasField("root")


async def test_a_deleted_root_keeps_its_thread_and_replies_are_refused_where_they_cannot_go(
    user_for, course_id
):
    alice, bob = user_for("alice", [course_id]), user_for("bob", [course_id])
    other_course = f"{course_id}-other"
    both = user_for("dana", [course_id, other_course])
    root = await alice.send(course_id, "question")
    reply = await bob.send(course_id, "answer", reply_to=root.message_id)
    await alice.client.delete(course_id, root.message_id)
    page = await bob.thread(course_id, root.message_id)
    assert (page.root.deleted, page.root.content, page.root.reply_count) == (True, "", 1)
    assert [m.content for m in page.replies] == ["answer"]
    # The thread goes on under a reply; the deleted message itself takes none.
    more = await bob.send(course_id, "still here", reply_to=reply.message_id)
    assert more.reply_to_message_id == root.message_id
    await refused(
        bob.send(course_id, "x", reply_to=root.message_id),
        grpc.StatusCode.FAILED_PRECONDITION,
        "deleted",
    )
    await refused(
        bob.send(course_id, "x", reply_to="999"), grpc.StatusCode.NOT_FOUND, "999 (replied to)"
    )
    elsewhere = await both.send(other_course, "in the other course")
    await refused(
        both.send(course_id, "x", reply_to=elsewhere.message_id),
        grpc.StatusCode.NOT_FOUND,
        "another course",
    )
    await refused(
        bob.send(course_id, "x", reply_to="-1"), grpc.StatusCode.INVALID_ARGUMENT, "message id"
    )
    await refused(bob.thread(course_id, "999"), grpc.StatusCode.NOT_FOUND, "message 999 not found")
    await refused(
        bob.thread(other_course, root.message_id),
        grpc.StatusCode.PERMISSION_DENIED,
        "not in course",
    )


# -- reactions -----------------------------------------------------------------------------


async def test_reactions_count_once_per_user_and_emoji_and_mark_the_viewers_own(
    user_for, course_id
):
    alice, bob = user_for("alice", [course_id]), user_for("bob", [course_id])
    carol = user_for("carol", [course_id])
    sent = await alice.send(course_id, "exam moved to Monday")
    assert reactions(await bob.react(course_id, sent.message_id, "👍")) == [("👍", 1, True)]
    await carol.react(course_id, sent.message_id, "👍")
    # The text-style heart is the same reaction as the emoji-style one.
    await carol.react(course_id, sent.message_id, "❤")
    assert reactions(await bob.react(course_id, sent.message_id, "❤️")) == [
        ("👍", 2, True),
        ("❤️", 2, True),
    ]
    # Twice is once.
    again = await bob.react(course_id, sent.message_id, "👍")
    assert reactions(again) == [("👍", 2, True), ("❤️", 2, True)]
    assert reactions(await alice.get(course_id, sent.message_id)) == [
        ("👍", 2, False),
        ("❤️", 2, False),
    ]
    page = await carol.client.history(course_id, limit=5)
    assert reactions(page.messages[-1]) == [("👍", 2, True), ("❤️", 2, True)]
    removed = await carol.react(course_id, sent.message_id, "👍", add=False)
    assert reactions(removed) == [("👍", 1, False), ("❤️", 2, True)]
    # Removing what one never added changes nothing.
    await alice.react(course_id, sent.message_id, "👍", add=False)
    await bob.react(course_id, sent.message_id, "❤️", add=False)
    await carol.react(course_id, sent.message_id, "❤️", add=False)
    assert reactions(await alice.get(course_id, sent.message_id)) == [("👍", 1, False)]
    events = [e for e in await alice.events(course_id) if e.kind != Kind.MESSAGE_ADDED]
    assert [(e.kind, e.actor_user_id, e.emoji) for e in events] == [
        (Kind.REACTION_ADDED, "bob", "👍"),
        (Kind.REACTION_ADDED, "carol", "👍"),
        (Kind.REACTION_ADDED, "carol", "❤️"),
        (Kind.REACTION_ADDED, "bob", "❤️"),
        (Kind.REACTION_REMOVED, "carol", "👍"),
        (Kind.REACTION_REMOVED, "bob", "❤️"),
        (Kind.REACTION_REMOVED, "carol", "❤️"),
    ]
    # An event is everyone's: no viewer's own marks in it.
    assert not any(r.reacted_by_me for e in events for r in e.message.reactions)


async def test_bad_reactions_are_refused_and_a_message_holds_at_most_twenty_emoji(
    user_for, course_id
):
    alice, bob = user_for("alice", [course_id]), user_for("bob", [course_id])
    sent = await alice.send(course_id, "react!")
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    for bad in ["", "a", ":)", "👍👍", "👍 ", "x" * 10_000, "\x1b[31m"]:
        await refused(bob.react(course_id, sent.message_id, bad), invalid, "not a single emoji")
    await refused(
        bob.react(course_id, "999", "👍"), grpc.StatusCode.NOT_FOUND, "message 999 not found"
    )
    emoji = [chr(0x1F600 + n) for n in range(MAX_REACTIONS_PER_MESSAGE + 1)]
    for one in emoji[:-1]:
        await bob.react(course_id, sent.message_id, one)
    await refused(
        alice.react(course_id, sent.message_id, emoji[-1]),
        grpc.StatusCode.FAILED_PRECONDITION,
        f"at most {MAX_REACTIONS_PER_MESSAGE} distinct reactions",
    )
    # One more of an emoji already there is fine.
    counted = await alice.react(course_id, sent.message_id, emoji[0])
    assert len(counted.reactions) == MAX_REACTIONS_PER_MESSAGE
    assert counted.reactions[0].count == 2
    await alice.client.delete(course_id, sent.message_id)
    await refused(
        bob.react(course_id, sent.message_id, "👍"), grpc.StatusCode.FAILED_PRECONDITION, "deleted"
    )


async def test_a_reaction_retried_after_the_user_undid_it_is_not_applied_again(user_for, course_id):
    alice = user_for("alice", [course_id])
    sent = await alice.send(course_id, "hi")
    await alice.react(course_id, sent.message_id, "🎉", mutation_id="r-1")
    await alice.react(course_id, sent.message_id, "🎉", add=False, mutation_id="r-2")
    late_retry = await alice.react(course_id, sent.message_id, "🎉", mutation_id="r-1")
    assert reactions(late_retry) == []


# -- pins ----------------------------------------------------------------------------------


async def test_moderators_pin_and_a_pinned_message_does_not_expire_until_unpinned(
    user_for, course_id, cluster_client
):
    alice, mod = user_for("alice", [course_id]), user_for("mod", [course_id], [course_id])
    keys = CourseKeys(course_id)
    sent = await alice.send(course_id, "Office hours: Tuesday 10:00")
    other = await alice.send(course_id, "later")
    await refused(
        alice.pin(course_id, sent.message_id), grpc.StatusCode.PERMISSION_DENIED, "moderators"
    )
    pinned = await mod.pin(course_id, sent.message_id)
    assert pinned.pinned_at >= sent.timestamp
    await mod.pin(course_id, other.message_id)
    assert [m.message_id for m in await alice.pinned(course_id)] == [
        other.message_id,
        sent.message_id,
    ]
    message_key = keys.message(sent.message_id)
    assert cluster_client.pttl(message_key) == -1
    # A TTL change of the course (the operator's re-time) leaves it pinned.
    cluster_client.eval(
        scripts.RETIME.source,
        3,
        keys.messages,
        keys.pins,
        keys.endorsed,
        *[keys.prefix, keys.client_prefix, 60_000, "-inf", 100],
    )
    assert cluster_client.pttl(message_key) == -1
    assert cluster_client.pttl(keys.messages) == -1
    # Unpinned, it gets the course TTL from then on (86,400 s by default).
    unpinned = await mod.pin(course_id, sent.message_id, pin=False)
    assert unpinned.pinned_at == 0
    remaining_ms = cluster_client.pttl(message_key)
    assert 86_000_000 < remaining_ms <= 86_400_000
    assert [m.message_id for m in await alice.pinned(course_id)] == [other.message_id]
    # Deleting a pinned message unpins it.
    await alice.client.delete(course_id, other.message_id)
    assert await alice.pinned(course_id) == []
    assert cluster_client.pttl(keys.messages) > 0
    events = [e for e in await alice.events(course_id) if e.kind != Kind.MESSAGE_ADDED]
    assert [(e.kind, e.message.message_id, e.actor_user_id) for e in events] == [
        (Kind.MESSAGE_PINNED, sent.message_id, "mod"),
        (Kind.MESSAGE_PINNED, other.message_id, "mod"),
        (Kind.MESSAGE_UNPINNED, sent.message_id, "mod"),
        (Kind.MESSAGE_DELETED, other.message_id, "alice"),
    ]


async def test_a_course_holds_at_most_fifty_pins(user_for, course_id):
    mod = user_for("mod", [course_id], [course_id])
    sent = [await mod.send(course_id, f"notice {n}") for n in range(MAX_PINS_PER_COURSE + 1)]
    for message in sent[:-1]:
        await mod.pin(course_id, message.message_id)
    # Pinning one that is pinned already changes nothing, and is no error.
    await mod.pin(course_id, sent[0].message_id)
    await refused(
        mod.pin(course_id, sent[-1].message_id),
        grpc.StatusCode.FAILED_PRECONDITION,
        f"at most {MAX_PINS_PER_COURSE} pinned messages",
    )
    await mod.pin(course_id, sent[0].message_id, pin=False)
    await mod.pin(course_id, sent[-1].message_id)
    assert len(await mod.pinned(course_id)) == MAX_PINS_PER_COURSE


# -- rules common to every change ----------------------------------------------------------


async def test_changes_are_rate_limited_per_user_and_course(
    chat_settings_factory, make_token, course_id
):
    from nextcampus_chat.server import build_server
    from nextcampus_common.chat_api import ChatClient

    server = build_server(
        chat_settings_factory(action_rate_limit_messages=3, action_rate_limit_seconds=3600)
    )
    await server.start()
    try:
        async with ChatClient(
            f"127.0.0.1:{server.port}", make_token("alice", [course_id])
        ) as client:
            alice = User(client)
            sent = await alice.send(course_id, "hi")
            await alice.react(course_id, sent.message_id, "👍")
            await alice.edit(course_id, sent.message_id, "hello")
            await alice.react(course_id, sent.message_id, "👍", add=False)
            error = await refused(
                alice.react(course_id, sent.message_id, "🎉"),
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "too many changes",
            )
            retry_after = metadata_value(error.trailing_metadata(), RETRY_AFTER_MS)
            assert retry_after is not None
            assert int(retry_after) > 0
            # Sends have their own limit (the course policy's), untouched by this one.
            await alice.send(course_id, "still sending")
    finally:
        await server.stop()


async def test_read_only_courses_take_no_edits_or_reactions(user_for, course_id, cluster_client):
    alice = user_for("alice", [course_id])
    mod = user_for("mod", [course_id], [course_id])
    sent = await alice.send(course_id, "before the archive")
    keys = CourseKeys(course_id)
    cluster_client.hset(keys.policy, "read_only", "1")
    read_only = grpc.StatusCode.FAILED_PRECONDITION
    await refused(alice.edit(course_id, sent.message_id, "after"), read_only, "read-only")
    await refused(alice.react(course_id, sent.message_id, "👍"), read_only, "read-only")
    # Moderators still pin what matters in an archived course.
    assert (await mod.pin(course_id, sent.message_id)).pinned_at > 0


async def test_members_only_on_every_new_call(user_for, course_id):
    alice = user_for("alice", [course_id])
    sent = await alice.send(course_id, "members only")
    outsider = user_for("eve", ["another-course"], ["another-course"])
    denied = grpc.StatusCode.PERMISSION_DENIED
    for call in [
        outsider.edit(course_id, sent.message_id, "x"),
        outsider.edits(course_id, sent.message_id),
        outsider.react(course_id, sent.message_id, "👍"),
        outsider.pin(course_id, sent.message_id),
        outsider.pinned(course_id),
        outsider.thread(course_id, sent.message_id),
        outsider.send(course_id, "x", reply_to=sent.message_id),
    ]:
        await refused(call, denied, "not in course")


async def test_a_live_event_stream_carries_every_kind_of_change_once_in_order(user_for, course_id):
    alice, mod = user_for("alice", [course_id]), user_for("mod", [course_id], [course_id])
    stream = alice.client.subscribe_events(course_id)
    await stream.initial_metadata()  # live from here
    sent = await alice.send(course_id, "first")
    reply = await mod.send(course_id, "a reply", reply_to=sent.message_id)
    await alice.edit(course_id, sent.message_id, "first, edited")
    await mod.react(course_id, sent.message_id, "👍")
    await mod.pin(course_id, sent.message_id)
    await mod.pin(course_id, sent.message_id, pin=False)
    await mod.react(course_id, sent.message_id, "👍", add=False)
    await mod.client.delete(course_id, reply.message_id)
    expected = [
        (Kind.MESSAGE_ADDED, sent.message_id, "alice"),
        (Kind.MESSAGE_ADDED, reply.message_id, "mod"),
        (Kind.MESSAGE_EDITED, sent.message_id, "alice"),
        (Kind.REACTION_ADDED, sent.message_id, "mod"),
        (Kind.MESSAGE_PINNED, sent.message_id, "mod"),
        (Kind.MESSAGE_UNPINNED, sent.message_id, "mod"),
        (Kind.REACTION_REMOVED, sent.message_id, "mod"),
        (Kind.MESSAGE_DELETED, reply.message_id, "mod"),
    ]
    received: list[chat_pb2.CourseEvent] = []
    async for event in stream:
        received.append(event)
        if len(received) == len(expected):
            break
    stream.cancel()
    assert kinds(received) == expected
    assert received[1].root.message_id == sent.message_id
    # The same cursors as the log (each event's message as it was when the stream read it).
    logged = await alice.events(course_id)
    assert [(e.cursor, e.kind) for e in received] == [(e.cursor, e.kind) for e in logged]


def test_the_scripts_and_python_read_the_same_message_fields():
    """lua/lib/course.lua's record layout is what the store parses (keys.MESSAGE_FIELDS)."""
    library = scripts.load_script("history").source
    found = re.search(r"local MESSAGE_FIELDS = \{(.*?)\}", library, re.S)
    assert found is not None
    assert tuple(re.findall(r"'([a-z_]+)'", found.group(1))) == MESSAGE_FIELDS
    defaults = re.search(r"local MESSAGE_DEFAULTS = \{(.*?)\}", library, re.S)
    assert defaults is not None
    assert len(re.findall(r"'[^']*'", defaults.group(1))) == len(MESSAGE_FIELDS)
