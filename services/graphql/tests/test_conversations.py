"""Conversations through GraphQL, on the real stack (Redis Cluster, chat, GraphQL): replies
and threads, edits and their history, reactions, pins; the `courseEvents` subscription —
every kind of change, live, resumed after a cursor, ONE upstream SubscribeEvents per course,
expired and malformed cursors — and what it all costs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from devstack.scrape import scrape
from nextcampus_common.ids import LOG_START_CURSOR, event_cursor_key
from nextcampus_common.keys import CourseKeys
from nextcampus_graphql.operations import OperationError, OperationFactory
from nextcampus_graphql.schema import build_schema
from testing.graphql_http import SEND, api
from testing.ws import Subscriber, next_json, raw_socket, ready

COURSE_EVENTS = """subscription Events($courseId: ID!, $after: String) {
  courseEvents(courseId: $courseId, after: $after) {
    __typename cursor actorId
    message { messageId userId content deleted }
    ... on MessageAddedEvent { root { messageId replyCount } }
    ... on MessageDeletedEvent { retracted }
    ... on ReactionAddedEvent { emoji }
    ... on ReactionRemovedEvent { emoji }
  }
}"""
ADDED = "subscription($c: ID!) { messageAdded(courseId: $c) { messageId content } }"

Change = tuple[str, int]  # (__typename, message id)


def course_events(url: str, token: str, course_id: str, after: str | None = None) -> Subscriber:
    return Subscriber(
        url, token, COURSE_EVENTS, {"courseId": course_id, "after": after}, name="events"
    )


def changes(subscriber: Subscriber) -> list[Change]:
    return [(e["__typename"], int(e["message"]["messageId"])) for e in subscriber.events]


async def has_changes(subscriber: Subscriber, wanted: list[Change], within: float = 30) -> None:
    await subscriber.wait_until(lambda s: set(wanted) <= set(changes(s)), within=within)


async def until_live(subscriber: Subscriber, send_probe: Callable[[], Awaitable[int]]) -> int:
    """Send probes until one arrives (a subscription without `after` is live from some
    moment on); the last probe's id."""
    for _ in range(100):
        probe = await send_probe()
        with contextlib.suppress(TimeoutError):
            await has_changes(subscriber, [("MessageAddedEvent", probe)], within=0.5)
            return probe
    raise AssertionError("the subscription never went live")


def after_probe(subscriber: Subscriber, probe: int) -> list[Change]:
    found = changes(subscriber)
    return found[found.index(("MessageAddedEvent", probe)) + 1 :]


def assert_ordered_once(subscriber: Subscriber, after: str | None = None) -> None:
    """Cursors strictly increase (and come after `after`): in order, nothing twice."""
    keys = [event_cursor_key(e["cursor"]) for e in subscriber.events]
    if after is not None:
        keys.insert(0, event_cursor_key(after))
    assert keys == sorted(set(keys)), keys


MESSAGE_FIELDS = """messageId userId content deleted replyTo editedAt replyCount lastReplyAt
  participants reactions { emoji count reactedByMe } pinnedAt"""
MESSAGE = (
    f"query($c: ID!, $m: ID!) {{ message(courseId: $c, messageId: $m) {{ {MESSAGE_FIELDS} }} }}"
)
EDIT = f"""mutation($c: ID!, $m: ID!, $t: String!, $k: ID) {{
  editMessage(courseId: $c, messageId: $m, content: $t, clientMutationId: $k) {{ {MESSAGE_FIELDS} }}
}}"""
EDIT_HISTORY = """query($c: ID!, $m: ID!) {
  message(courseId: $c, messageId: $m) { messageId editHistory { content writtenAt } }
}"""
REACT = f"""mutation($c: ID!, $m: ID!, $e: String!, $k: ID) {{
  addReaction(courseId: $c, messageId: $m, emoji: $e, clientMutationId: $k) {{ {MESSAGE_FIELDS} }}
}}"""
UNREACT = f"""mutation($c: ID!, $m: ID!, $e: String!, $k: ID) {{
  removeReaction(courseId: $c, messageId: $m, emoji: $e, clientMutationId: $k) {{ {MESSAGE_FIELDS} }}
}}"""
PIN = f"""mutation($c: ID!, $m: ID!, $k: ID) {{
  pinMessage(courseId: $c, messageId: $m, clientMutationId: $k) {{ {MESSAGE_FIELDS} }}
}}"""
UNPIN = f"""mutation($c: ID!, $m: ID!) {{
  unpinMessage(courseId: $c, messageId: $m) {{ {MESSAGE_FIELDS} }}
}}"""
PINNED = "query($c: ID!) { pinnedMessages(courseId: $c) { messageId pinnedAt } }"
THREAD = f"""query($c: ID!, $r: ID!, $before: ID, $after: ID, $limit: Int) {{
  thread(courseId: $c, rootId: $r, before: $before, after: $after, limit: $limit) {{
    root {{ {MESSAGE_FIELDS} }} replies {{ messageId replyTo content }} hasMore
  }}
}}"""
POLICY = "query($c: ID!) { coursePolicy(courseId: $c) { editWindowSeconds } }"


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    (error,) = body["errors"]
    return error


# -- replies, edits, reactions, pins --------------------------------------------------------


async def test_replies_make_a_thread(graphql_server, make_token, course_id):
    async with (
        api(graphql_server.url, make_token("alice", [course_id])) as alice,
        api(graphql_server.url, make_token("bob", [course_id])) as bob,
    ):
        root = await alice.send(course_id, "a question")
        first = await bob.send(course_id, "an answer", reply_to=root)
        # A reply to a reply belongs to the same root.
        second = await alice.send(course_id, "thanks", reply_to=first)
        page = (await alice.data(THREAD, c=course_id, r=str(root)))["thread"]
        assert page["root"]["messageId"] == str(root)
        assert page["root"]["replyTo"] is None
        assert page["root"]["replyCount"] == 2
        assert page["root"]["participants"] == ["alice", "bob"]  # the most recent first
        assert page["root"]["lastReplyAt"] is not None
        assert page["replies"] == [
            {"messageId": str(first), "replyTo": str(root), "content": "an answer"},
            {"messageId": str(second), "replyTo": str(root), "content": "thanks"},
        ]
        assert page["hasMore"] is False
        # A reply's id answers its root's thread; pages as history does: the newest first,
        # `before` back, `after` forward.
        by_reply = (await bob.data(THREAD, c=course_id, r=str(second), limit=1))["thread"]
        assert by_reply["root"]["messageId"] == str(root)
        assert [r["messageId"] for r in by_reply["replies"]] == [str(second)]
        assert by_reply["hasMore"] is True
        back = await bob.data(THREAD, c=course_id, r=str(root), before=str(second))
        assert [r["messageId"] for r in back["thread"]["replies"]] == [str(first)]
        forward = await bob.data(THREAD, c=course_id, r=str(root), after=str(first))
        assert [r["messageId"] for r in forward["thread"]["replies"]] == [str(second)]
        # The thread of a message that is not there.
        missing = await bob.post(THREAD, c=course_id, r="999")
        assert only_error(missing)["extensions"]["code"] == "NOT_FOUND"
        too_big = await bob.post(THREAD, c=course_id, r=str(root), limit=1000)
        assert only_error(too_big)["extensions"]["code"] == "BAD_USER_INPUT"


async def test_edits_keep_a_history_only_the_author_and_moderators_read(
    graphql_server, make_token, course_id
):
    async with (
        api(graphql_server.url, make_token("alice", [course_id])) as alice,
        api(graphql_server.url, make_token("bob", [course_id])) as bob,
        api(graphql_server.url, make_token("mod", [course_id], [course_id])) as moderator,
    ):
        assert (await alice.data(POLICY, c=course_id))["coursePolicy"] == {
            "editWindowSeconds": 3600
        }
        sent = await alice.send(course_id, "teh first")
        edited = (await alice.data(EDIT, c=course_id, m=str(sent), t="the first", k="e1"))[
            "editMessage"
        ]
        assert (edited["content"], edited["userId"]) == ("the first", "alice")
        assert edited["editedAt"] is not None
        # A retry with the same clientMutationId is applied once.
        again = await alice.data(EDIT, c=course_id, m=str(sent), t="the first", k="e1")
        assert again["editMessage"] == edited
        for reader in (alice, moderator):
            history = (await reader.data(EDIT_HISTORY, c=course_id, m=str(sent)))["message"]
            assert [v["content"] for v in history["editHistory"]] == ["teh first"]
            assert history["editHistory"][0]["writtenAt"].endswith("+00:00")
        # Another student: the message, but its history is FORBIDDEN, on that field only.
        refused = await bob.post(EDIT_HISTORY, c=course_id, m=str(sent))
        assert refused["data"] == {"message": {"messageId": str(sent), "editHistory": None}}
        error = only_error(refused)
        assert error["extensions"]["code"] == "FORBIDDEN"
        assert error["path"] == ["message", "editHistory"]
        # Only the author edits.
        not_theirs = await bob.post(EDIT, c=course_id, m=str(sent), t="mine now")
        assert only_error(not_theirs)["extensions"]["code"] == "FORBIDDEN"
        bad_key = await alice.post(EDIT, c=course_id, m=str(sent), t="x", k="not a key!")
        assert only_error(bad_key)["extensions"]["code"] == "BAD_USER_INPUT"
        assert "clientMutationId" in only_error(bad_key)["message"]


async def test_a_closed_edit_window_and_a_read_only_course_have_their_own_codes(
    graphql_server, make_token, course_id, cluster_client
):
    """The chat service answers both with FAILED_PRECONDITION; its trailing metadata says
    which, so a client sees FAILED_PRECONDITION (do not retry) apart from READ_ONLY."""
    async with api(graphql_server.url, make_token("alice", [course_id])) as alice:
        sent = await alice.send(course_id, "final")
        policy = CourseKeys(course_id).policy
        cluster_client.hset(policy, "edit_window_seconds", 0)
        closed = await alice.post(EDIT, c=course_id, m=str(sent), t="changed")
        assert only_error(closed)["extensions"]["code"] == "FAILED_PRECONDITION"
        cluster_client.hset(policy, "read_only", 1)
        for body in (
            await alice.post(SEND, c=course_id, t="more"),
            await alice.post(REACT, c=course_id, m=str(sent), e="👍"),
        ):
            assert only_error(body)["extensions"]["code"] == "READ_ONLY"


async def test_reactions_say_reacted_by_me_to_each_viewer(graphql_server, make_token, course_id):
    async with (
        api(graphql_server.url, make_token("alice", [course_id])) as alice,
        api(graphql_server.url, make_token("bob", [course_id])) as bob,
    ):
        sent = str(await alice.send(course_id, "react to me"))
        mine = (await alice.data(REACT, c=course_id, m=sent, e="👍", k="r1"))["addReaction"]
        assert mine["reactions"] == [{"emoji": "👍", "count": 1, "reactedByMe": True}]
        retried = (await alice.data(REACT, c=course_id, m=sent, e="👍", k="r1"))["addReaction"]
        assert retried["reactions"] == mine["reactions"]  # applied once
        seen_by_bob = (await bob.data(MESSAGE, c=course_id, m=sent))["message"]
        assert seen_by_bob["reactions"] == [{"emoji": "👍", "count": 1, "reactedByMe": False}]
        both = (await bob.data(REACT, c=course_id, m=sent, e="👍"))["addReaction"]
        assert both["reactions"] == [{"emoji": "👍", "count": 2, "reactedByMe": True}]
        await bob.data(REACT, c=course_id, m=sent, e="🎉")
        gone = (await alice.data(UNREACT, c=course_id, m=sent, e="👍"))["removeReaction"]
        assert gone["reactions"] == [
            {"emoji": "👍", "count": 1, "reactedByMe": False},
            {"emoji": "🎉", "count": 1, "reactedByMe": False},
        ]
        history = (await bob.data(HISTORY_REACTIONS, c=course_id))["messages"]["messages"]
        assert history[-1]["reactions"] == [
            {"emoji": "👍", "count": 1, "reactedByMe": True},
            {"emoji": "🎉", "count": 1, "reactedByMe": True},
        ]
        not_an_emoji = await bob.post(REACT, c=course_id, m=sent, e="nope")
        assert only_error(not_an_emoji)["extensions"]["code"] == "BAD_USER_INPUT"


HISTORY_REACTIONS = """query($c: ID!) {
  messages(courseId: $c) { messages { messageId reactions { emoji count reactedByMe } } }
}"""


async def test_moderators_pin_and_everyone_reads_the_pins(graphql_server, make_token, course_id):
    async with (
        api(graphql_server.url, make_token("alice", [course_id])) as alice,
        api(graphql_server.url, make_token("mod", [course_id], [course_id])) as moderator,
    ):
        first, second = [str(await alice.send(course_id, f"notice {i}")) for i in range(2)]
        refused = await alice.post(PIN, c=course_id, m=first)
        assert only_error(refused)["extensions"]["code"] == "FORBIDDEN"
        pinned = (await moderator.data(PIN, c=course_id, m=first, k="p1"))["pinMessage"]
        assert pinned["pinnedAt"] is not None
        await moderator.data(PIN, c=course_id, m=second)
        pins = (await alice.data(PINNED, c=course_id))["pinnedMessages"]
        assert [p["messageId"] for p in pins] == [second, first]  # the most recent first
        unpinned = (await moderator.data(UNPIN, c=course_id, m=second))["unpinMessage"]
        assert unpinned["pinnedAt"] is None
        pins = (await alice.data(PINNED, c=course_id))["pinnedMessages"]
        assert [p["messageId"] for p in pins] == [first]
        missing = await moderator.post(PIN, c=course_id, m="999")
        assert only_error(missing)["extensions"]["code"] == "NOT_FOUND"


async def test_every_kind_of_change_arrives_on_course_events(graphql_server, make_token, course_id):
    alice_token = make_token("alice", [course_id])
    async with (
        api(graphql_server.url, alice_token) as alice,
        api(graphql_server.url, make_token("mod", [course_id], [course_id])) as moderator,
    ):
        start = await alice.event_cursor(course_id)
        async with course_events(graphql_server.ws_url, alice_token, course_id, start) as events:
            root = await alice.send(course_id, "root")
            reply = await moderator.send(course_id, "reply", reply_to=root)
            await alice.data(EDIT, c=course_id, m=str(root), t="root, edited")
            await alice.data(REACT, c=course_id, m=str(reply), e="👍")
            await alice.data(UNREACT, c=course_id, m=str(reply), e="👍")
            await moderator.data(PIN, c=course_id, m=str(root))
            await moderator.data(UNPIN, c=course_id, m=str(root))
            await moderator.delete(course_id, reply)
            wanted = [
                ("MessageAddedEvent", root),
                ("MessageAddedEvent", reply),
                ("MessageEditedEvent", root),
                ("ReactionAddedEvent", reply),
                ("ReactionRemovedEvent", reply),
                ("MessagePinnedEvent", root),
                ("MessageUnpinnedEvent", root),
                ("MessageDeletedEvent", reply),
            ]
            await has_changes(events, wanted)
            assert changes(events) == wanted
            assert_ordered_once(events, after=start)
            added_reply, edited, reacted, unreacted, pinned = events.events[1:6]
            assert added_reply["actorId"] == "mod"
            assert added_reply["root"]["messageId"] == str(root)
            assert added_reply["root"]["replyCount"] == 1
            assert edited["message"]["content"] == "root, edited"
            assert (reacted["emoji"], reacted["actorId"]) == ("👍", "alice")
            assert unreacted["emoji"] == "👍"
            assert pinned["actorId"] == "mod"
            assert events.events[-1]["retracted"] is False


async def test_a_change_a_failover_lost_is_restored_on_course_events(
    graphql_server, make_token, course_id, cluster_client
):
    """What a failover that lost an edit after streams carried it leaves behind, made in
    Redis (as the chat service's own test does): subscribers get the message as it is kept
    (MessageRestoredEvent, no actor) and end where the store is."""
    token = make_token("alice", [course_id])
    keys = CourseKeys(course_id)
    hub = graphql_server.wiring.upstream

    async def through_the_upstream(cursor: str) -> None:
        """Wait until the process's SubscribeEvents stream carried the change at `cursor`
        (the subscriber may have read it in its catch-up first)."""
        for _ in range(200):
            upstream = hub.course_logs().get(course_id)
            if upstream is not None and upstream.position >= event_cursor_key(cursor):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"the upstream stream never carried {cursor}")

    async with api(graphql_server.url, token) as alice:
        sent = await alice.send(course_id, "v1")
        start = await alice.event_cursor(course_id)
        async with course_events(graphql_server.ws_url, token, course_id, start) as events:
            probe = await alice.send(course_id, "probe")
            await has_changes(events, [("MessageAddedEvent", probe)])
            await through_the_upstream(events.events[-1]["cursor"])  # the stream is live
            await alice.data(EDIT, c=course_id, m=str(sent), t="v2")
            await has_changes(events, [("MessageEditedEvent", sent)])
            edit_cursor = events.events[-1]["cursor"]
            await through_the_upstream(edit_cursor)
            # The promoted replica never had the edit.
            cluster_client.xdel(keys.log, edit_cursor)
            cluster_client.hset(keys.message(str(sent)), "content", "v1")
            cluster_client.hdel(keys.message(str(sent)), "edited_at")
            cluster_client.delete(keys.edits(str(sent)))
            after = await alice.send(course_id, "after the failover")
            wanted = [("MessageAddedEvent", after), ("MessageRestoredEvent", sent)]
            await has_changes(events, wanted)
            assert sorted(changes(events)[2:]) == sorted(wanted)
            restored = next(e for e in events.events if e["__typename"] == "MessageRestoredEvent")
            assert restored["actorId"] is None
            assert restored["message"]["content"] == "v1"
            assert_ordered_once(events, after=start)


async def test_reactions_in_events_are_the_same_for_every_subscriber(
    graphql_server, make_token, course_id
):
    """reactedByMe is a viewer's: in a subscription's payload (the same bytes for all) it is
    false, for the reactor too."""
    document = """subscription($c: ID!, $a: String) {
      courseEvents(courseId: $c, after: $a) {
        __typename message { messageId reactions { emoji count reactedByMe } }
      }
    }"""
    tokens = {user: make_token(user, [course_id]) for user in ("alice", "bob")}
    async with api(graphql_server.url, tokens["alice"]) as alice:
        sent = str(await alice.send(course_id, "hi"))
        start = await alice.event_cursor(course_id)
        subscribers = [
            Subscriber(graphql_server.ws_url, token, document, {"c": course_id, "a": start})
            for token in tokens.values()
        ]
        try:
            for subscriber in subscribers:
                await subscriber.start()
            await alice.data(REACT, c=course_id, m=sent, e="👍")
            for subscriber in subscribers:
                await subscriber.wait_until(lambda s: len(s.events) == 1, within=30)
            assert subscribers[0].events == subscribers[1].events
            assert subscribers[0].events[0] == {
                "__typename": "ReactionAddedEvent",
                "message": {
                    "messageId": sent,
                    "reactions": [{"emoji": "👍", "count": 1, "reactedByMe": False}],
                },
            }
        finally:
            for subscriber in subscribers:
                await subscriber.close()


# -- live, and resumed -----------------------------------------------------------------------


async def test_history_then_course_events_brings_every_change_since(
    graphql_server, make_token, course_id
):
    """The client's way: load the history, subscribe after its eventCursor. Before the
    course's first change the cursor names the log's start, so nothing is missed either."""
    token = make_token("alice", [course_id])
    async with api(graphql_server.url, token) as alice:
        cursor = await alice.event_cursor(course_id)
        assert cursor == LOG_START_CURSOR
        # A change between the history and the subscription: it must come too.
        first = await alice.send(course_id, "before the subscription")
        async with course_events(graphql_server.ws_url, token, course_id, cursor) as events:
            sent = [await alice.send(course_id, f"m{i}") for i in range(3)]
            await alice.delete(course_id, sent[1])
            wanted = [("MessageAddedEvent", first)]
            wanted += [("MessageAddedEvent", m) for m in sent]
            wanted += [("MessageDeletedEvent", sent[1])]
            await has_changes(events, wanted)
            assert changes(events) == wanted
            assert_ordered_once(events, after=cursor)
            by_kind = {(e["__typename"], e["message"]["messageId"]): e for e in events.events}
            added = by_kind[("MessageAddedEvent", str(sent[0]))]
            assert added["actorId"] == "alice"
            assert added["message"] == {
                "messageId": str(sent[0]),
                "userId": "alice",
                "content": "m0",
                "deleted": False,
            }
            assert added["root"] is None  # not a reply
            deleted = by_kind[("MessageDeletedEvent", str(sent[1]))]
            assert deleted["retracted"] is False
            assert deleted["message"]["deleted"] is True
            assert deleted["message"]["content"] == ""
        # The next history page's cursor is the newest change's.
        assert await alice.event_cursor(course_id) == events.events[-1]["cursor"]


async def test_live_course_events_without_after(graphql_server, make_token, course_id):
    token = make_token("alice", [course_id])
    async with (
        api(graphql_server.url, token) as alice,
        course_events(graphql_server.ws_url, token, course_id) as events,
    ):
        probe = await until_live(events, lambda: alice.send(course_id, "probe"))
        sent = await alice.send(course_id, "live")
        await alice.delete(course_id, probe)
        wanted = [("MessageAddedEvent", sent), ("MessageDeletedEvent", probe)]
        await has_changes(events, wanted)
        assert after_probe(events, probe) == wanted
        assert_ordered_once(events)


async def test_resuming_after_a_cursor_replays_exactly_what_was_missed(
    graphql_server, make_token, course_id
):
    token = make_token("alice", [course_id])
    async with api(graphql_server.url, token) as alice:
        start = await alice.event_cursor(course_id)
        seen = [await alice.send(course_id, f"a{i}") for i in range(3)]
        async with course_events(graphql_server.ws_url, token, course_id, start) as first:
            await has_changes(first, [("MessageAddedEvent", m) for m in seen])
            last_cursor = first.events[-1]["cursor"]
        # Away: new messages, a deletion of one seen before, a deletion of one missed.
        missed = [await alice.send(course_id, f"b{i}") for i in range(2)]
        await alice.delete(course_id, seen[1])
        await alice.delete(course_id, missed[0])
        async with course_events(graphql_server.ws_url, token, course_id, last_cursor) as resumed:
            later = await alice.send(course_id, "c0")
            wanted = [
                ("MessageAddedEvent", missed[0]),
                ("MessageAddedEvent", missed[1]),
                ("MessageDeletedEvent", seen[1]),
                ("MessageDeletedEvent", missed[0]),
                ("MessageAddedEvent", later),
            ]
            await has_changes(resumed, wanted)
            assert changes(resumed) == wanted
            assert_ordered_once(resumed, after=last_cursor)
            # The added event of a message deleted since carries it as it is now.
            assert resumed.events[0]["message"]["deleted"] is True


async def test_a_catch_up_during_sends_joins_without_gap_or_duplicate(
    graphql_server, make_token, course_id
):
    """A subscription replays the log while changes keep coming live: it joins the shared
    stream with every change once, in the order of a subscriber that was there all along."""
    token = make_token("alice", [course_id])
    async with api(graphql_server.url, token) as alice:
        start = await alice.event_cursor(course_id)
        async with course_events(graphql_server.ws_url, token, course_id, start) as witness:
            early = [await alice.send(course_id, f"early{i}") for i in range(20)]
            await has_changes(witness, [("MessageAddedEvent", m) for m in early])

            async def keep_sending() -> list[int]:
                return [await alice.send(course_id, f"during{i}") for i in range(30)]

            sending = asyncio.create_task(keep_sending())
            async with course_events(graphql_server.ws_url, token, course_id, start) as late:
                during = await sending
                wanted = [("MessageAddedEvent", m) for m in early + during]
                await has_changes(late, wanted)
                await has_changes(witness, wanted)
                assert changes(late) == changes(witness) == wanted
                assert_ordered_once(late, after=start)


async def test_subscribers_of_a_course_share_one_upstream_event_stream(
    graphql_server, make_token, course_id
):
    wiring = graphql_server.wiring
    tokens = [make_token(user, [course_id]) for user in ("alice", "bob")]

    def event_streams() -> float | None:
        return wiring.metrics.registry.get_sample_value("nextcampus_graphql_upstream_event_streams")

    async with api(graphql_server.url, tokens[0]) as alice:
        start = await alice.event_cursor(course_id)
        subscribers = [
            course_events(graphql_server.ws_url, tokens[0], course_id, start),
            course_events(graphql_server.ws_url, tokens[1], course_id),  # live only
        ]
        try:
            for subscriber in subscribers:
                await subscriber.start()
            await until_live(subscribers[1], lambda: alice.send(course_id, "probe"))
            sent = await alice.send(course_id, "to both")
            for subscriber in subscribers:
                await has_changes(subscriber, [("MessageAddedEvent", sent)])
            assert list(wiring.upstream.course_logs()) == [course_id]
            assert event_streams() == 1
            # Both in one fan-out group: the same document renders the same bytes for both.
            assert len(wiring.upstream.course_logs()[course_id].groups) == 1
        finally:
            for subscriber in subscribers:
                await subscriber.close()
    for _ in range(200):  # the server notices the closed sockets asynchronously
        if event_streams() == 0:
            break
        await asyncio.sleep(0.05)
    assert event_streams() == 0
    assert course_id not in wiring.upstream.course_logs()


async def test_message_added_is_unchanged_beside_course_events(
    graphql_server, make_token, course_id
):
    token = make_token("alice", [course_id])
    async with (
        api(graphql_server.url, token) as alice,
        raw_socket(graphql_server.ws_url) as ws,
    ):
        await ready(ws, token)
        start = await alice.event_cursor(course_id)
        variables = {"c": course_id, "courseId": course_id, "after": start}
        await ws.send_json(
            {"id": "m", "type": "subscribe", "payload": {"query": ADDED, "variables": variables}}
        )
        await ws.send_json(
            {
                "id": "e",
                "type": "subscribe",
                "payload": {"query": COURSE_EVENTS, "variables": variables},
            }
        )
        # Both subscriptions are live once a probe came through messageAdded.
        got: dict[str, list[dict[str, Any]]] = {"m": [], "e": []}

        async def next_payload() -> tuple[str, dict[str, Any]]:
            message = await next_json(ws)
            assert message["type"] == "next", message
            return message["id"], message["payload"]

        for _ in range(100):
            probe = await alice.send(course_id, "probe")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    while not got["m"] or got["m"][-1]["messageId"] != str(probe):
                        operation, payload = await next_payload()
                        (field,) = payload["data"].values()
                        got[operation].append(field)
                break
        sent = await alice.send(course_id, "both")
        async with asyncio.timeout(20):
            while not (
                got["m"]
                and got["m"][-1]["messageId"] == str(sent)
                and got["e"]
                and got["e"][-1]["message"]["messageId"] == str(sent)
            ):
                operation, payload = await next_payload()
                assert "errors" not in payload, payload
                (field,) = payload["data"].values()
                got[operation].append(field)
        assert got["m"][-1] == {"messageId": str(sent), "content": "both"}
        assert got["e"][-1]["__typename"] == "MessageAddedEvent"


# -- cursors a client cannot resume from ----------------------------------------------------


def expire_log_start(cluster_client: Any, course_id: str) -> str:
    """A one-minute TTL and a log entry two minutes old stand in for time passing: the next
    send trims it, and a cursor from before it is expired. Returns that cursor."""
    import time

    keys = CourseKeys(course_id)
    cluster_client.hset(keys.policy, "ttl_seconds", 60)
    old_ms = int(time.time() * 1000) - 120_000
    cluster_client.xadd(keys.log, {"k": "a", "i": "1", "u": "ghost"}, id=f"{old_ms}-0")
    return f"{old_ms - 1}-0"


async def subscribe(ws: aiohttp.ClientWebSocketResponse, operation_id: str, **variables: Any):
    payload = {"query": COURSE_EVENTS, "variables": variables}
    await ws.send_json({"id": operation_id, "type": "subscribe", "payload": payload})


async def test_an_expired_cursor_says_reload_and_the_socket_stays_usable(
    graphql_server, make_token, course_id, cluster_client
):
    token = make_token("alice", [course_id])
    expired = expire_log_start(cluster_client, course_id)
    async with api(graphql_server.url, token) as alice, raw_socket(graphql_server.ws_url) as ws:
        await alice.send(course_id, "trims the old entry")
        await ready(ws, token)
        await subscribe(ws, "1", courseId=course_id, after=expired)
        error = await next_json(ws)
        assert error["type"] == "error", error
        (problem,) = error["payload"]
        assert problem["extensions"]["code"] == "CURSOR_EXPIRED"
        assert "reload the history" in problem["message"]
        assert "eventCursor" in problem["message"]
        # The same socket, the same operation id: subscribe again after the history's cursor.
        await subscribe(ws, "1", courseId=course_id, after=await alice.event_cursor(course_id))
        sent = await alice.send(course_id, "after reloading")
        message = await next_json(ws)
        assert message["type"] == "next", message
        event = message["payload"]["data"]["courseEvents"]
        assert (event["__typename"], event["message"]["messageId"]) == (
            "MessageAddedEvent",
            str(sent),
        )


@pytest.mark.parametrize(
    ("after", "says"),
    [
        ("42", "after: event cursor '42' is invalid"),
        ("1-0; FLUSHALL", "event cursor"),
        ("99999999999999-0", "ahead of"),
    ],
)
async def test_a_malformed_cursor_is_bad_input_and_the_socket_stays_usable(
    graphql_server, make_token, course_id, after, says
):
    token = make_token("alice", [course_id])
    async with raw_socket(graphql_server.ws_url) as ws:
        await ready(ws, token)
        await subscribe(ws, "1", courseId=course_id, after=after)
        error = await next_json(ws)
        assert error["type"] == "error", error
        (problem,) = error["payload"]
        assert problem["extensions"]["code"] == "BAD_USER_INPUT"
        assert says in problem["message"]
        await ws.send_json({"type": "ping"})
        assert await next_json(ws) == {"type": "pong"}


async def test_edit_history_is_refused_in_a_subscription_payload(
    graphql_server, make_token, course_id
):
    """A subscription's payload is the same bytes for every subscriber: a field whose answer
    depends on the viewer has no place in it."""
    token = make_token("alice", [course_id])
    document = """subscription($c: ID!, $a: String) {
      courseEvents(courseId: $c, after: $a) { message { messageId editHistory { content } } }
    }"""
    async with api(graphql_server.url, token) as alice, raw_socket(graphql_server.ws_url) as ws:
        await ready(ws, token)
        variables = {"c": course_id, "a": await alice.event_cursor(course_id)}
        payload = {"query": document, "variables": variables}
        await ws.send_json({"id": "1", "type": "subscribe", "payload": payload})
        sent = await alice.send(course_id, "hi")
        message = await next_json(ws)
        assert message["type"] == "next"
        result = message["payload"]
        assert result["data"]["courseEvents"]["message"] == {
            "messageId": str(sent),
            "editHistory": None,
        }
        (problem,) = result["errors"]
        assert problem["extensions"]["code"] == "BAD_USER_INPUT"
        assert "not available in subscriptions" in problem["message"]


# -- across processes, and a chat process killed -------------------------------------------


@pytest.mark.chaos
async def test_kill_9_of_the_chat_process_under_course_events(topology, make_token, course_id):
    """The upstream SubscribeEvents reopens on the other chat process after the last cursor
    it passed on: the subscriber sees every acknowledged change once, in order."""
    token = make_token("alice", [course_id])
    urls = topology.graphql_urls
    async with api(urls[1], token) as alice:
        start = await alice.event_cursor(course_id)
        events = course_events(urls[0].replace("http", "ws", 1), token, course_id, start)
        async with events:
            acked = [await alice.send(course_id, "first")]
            await has_changes(events, [("MessageAddedEvent", acked[0])])
            streaming = [
                index
                for index, port in enumerate(topology.chat_metrics_ports)
                if scrape(f"http://127.0.0.1:{port}/metrics")["nextcampus_chat_active_streams"]
            ]
            assert len(streaming) == 1
            deleted: list[int] = []

            async def retried(change: Callable[[], Awaitable[Any]]) -> Any:
                """A change retried (same client id) until it is acknowledged."""
                for _attempt in range(100):
                    try:
                        return await change()
                    except AssertionError:  # UNAVAILABLE while the chat process is gone
                        await asyncio.sleep(0.1)
                raise AssertionError("never acknowledged")

            for n in range(60):
                if n == 20:
                    topology.chats[streaming[0]].kill()
                acked.append(await retried(lambda n=n: alice.send(course_id, f"m{n}", key=f"k{n}")))
                if n % 10 == 5:
                    await retried(lambda: alice.delete(course_id, acked[-1]))
                    deleted.append(acked[-1])
            wanted = [("MessageAddedEvent", m) for m in acked]
            wanted += [("MessageDeletedEvent", m) for m in deleted]
            await has_changes(events, wanted, within=60)
            assert sorted(changes(events)) == sorted(wanted)  # each once, nothing else
            assert_ordered_once(events, after=start)
        reopened = sum(
            value
            for name, value in scrape(topology.graphql_metrics_urls[0]).items()
            if name.startswith("nextcampus_graphql_upstream_reconnects_total")
        )
        assert reopened >= 1


# -- costs -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def factory() -> OperationFactory:
    return OperationFactory(
        build_schema(), max_query_bytes=4096, max_depth=6, max_cost=5000, page_limit=200
    )


def test_course_events_cost_like_message_added(factory):
    added = factory.prepare(
        {"query": 'subscription { messageAdded(courseId: "c") { messageId content } }'}
    )
    events = factory.prepare(
        {
            "query": 'subscription { courseEvents(courseId: "c") '
            "{ message { messageId content } ... on ReactionAddedEvent { emoji } } }"
        }
    )
    # One more level (the event around the message), and each kind's fields: the costliest.
    assert added.cost == 3
    assert events.cost == 1 + (1 + 2) + 1


def test_edit_history_costs_a_round_trip_per_message(factory):
    page = 'query($l: Int) {{ messages(courseId: "c", limit: $l) {{ messages {{ {} }} }} }}'
    plain = factory.prepare({"query": page.format("messageId"), "variables": {"l": 50}})
    history = "messageId editHistory { content }"
    with_history = factory.prepare({"query": page.format(history), "variables": {"l": 50}})
    assert plain.cost == 1 + 50 * (1 + 1)
    assert with_history.cost == 1 + 50 * (1 + 1 + 25 + 1)
    with pytest.raises(OperationError) as refused:
        factory.prepare({"query": page.format(history), "variables": {"l": 200}})
    assert refused.value.errors[0].extensions["limit"] == "max_query_cost"
    # A thread's page costs as a history page does.
    thread = factory.prepare(
        {
            "query": 'query { thread(courseId: "c", rootId: "1", limit: 10) '
            "{ root { messageId } replies { messageId } hasMore } }"
        }
    )
    assert thread.cost == 1 + 10 * ((1 + 1) + (1 + 1) + 1)


async def test_an_upstream_refused_before_it_is_live_raises_its_status(
    client_for, course_id, cluster_client
):
    """What an upstream reopened after an expired cursor meets: the refusal itself, which
    ends its subscribers with CURSOR_EXPIRED (not a missing header)."""
    import grpc

    from nextcampus_common.chat_api import stream_live_cursor
    from nextcampus_graphql.errors import Code, from_grpc_events

    expired = expire_log_start(cluster_client, course_id)
    alice = client_for("alice", [course_id])
    await alice.send(course_id, "trims the old entry")
    call = alice.subscribe_events(course_id, after=expired)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stream_live_cursor(call)
        assert from_grpc_events(refused.value).code is Code.CURSOR_EXPIRED
    finally:
        call.cancel()
    live = alice.subscribe_events(course_id, after=(await alice.history(course_id)).event_cursor)
    try:
        assert event_cursor_key(await stream_live_cursor(live)) > event_cursor_key(expired)
    finally:
        live.cancel()
