"""Presence and typing as users see them: real GraphQL and chat servers on the real Redis
Cluster, real WebSocket clients.

- Who is online: a member with any subscription of the course open is online (the others see
  the join, the count, the member list) until their socket closes (the leave).
- presenceChanged coalesces: a burst of joins reaches a subscriber as fewer updates carrying
  all of them.
- typingChanged: the typist shows, with their thread, and is gone once they stop renewing
  (a short TTL here) or send a message; a second `typing` within the throttle is answered
  `published: false`; nothing of it is in the course's event log.
- Non-members get FORBIDDEN, bad input BAD_USER_INPUT, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from testing.graphql_http import api
from testing.ws import Subscriber, raw_socket, ready, still_serving

PRESENCE_CHANGED = (
    "subscription($c: ID!) { presenceChanged(courseId: $c)"
    " { courseId onlineCount joined { userId since } left } }"
)
TYPING_CHANGED = (
    "subscription($c: ID!) { typingChanged(courseId: $c)"
    " { courseId typingCount users { userId threadId expiresAt } } }"
)
MESSAGE_ADDED = "subscription($c: ID!) { messageAdded(courseId: $c) { messageId } }"
PRESENCE = """query($c: ID!, $first: Int, $after: ID) {
  presence(courseId: $c) { courseId onlineCount members(first: $first, after: $after) { userId since } }
}"""
TYPING = (
    "mutation($c: ID!, $t: ID) { typing(courseId: $c, threadId: $t) { published retryAfterMs } }"
)
SEND = "mutation($c: ID!, $b: String!) { sendMessage(courseId: $c, content: $b) { messageId } }"
EVENTS = "query($c: ID!) { messages(courseId: $c, limit: 5) { messages { messageId } } }"


@pytest.fixture
def chat_settings_factory(chat_settings_factory: Callable[..., Any]) -> Callable[..., Any]:
    """Typing with a short TTL and throttle, so a test sees it go."""

    def make(**overrides: Any) -> Any:
        return chat_settings_factory(
            **{"typing_ttl_seconds": 1.0, "typing_throttle_seconds": 2.0, **overrides}
        )

    return make


def joined(subscriber: Subscriber) -> list[str]:
    return [m["userId"] for e in subscriber.events for m in e["joined"]]


def left(subscriber: Subscriber) -> list[str]:
    return [user for e in subscriber.events for user in e["left"]]


async def until(condition: Callable[[], Any], within: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, f"{what} did not hold within {within} s"
        await asyncio.sleep(0.05)


async def test_a_member_with_a_subscription_is_online_until_their_socket_closes(
    graphql_server, make_token, course_id
):
    url = graphql_server.ws_url
    ann_token, bob_token = make_token("ann", [course_id]), make_token("bob", [course_id])
    async with (
        Subscriber(url, ann_token, PRESENCE_CHANGED, {"c": course_id}, name="ann") as ann,
        api(graphql_server.url, ann_token) as ann_api,
    ):
        # Ann's own subscription makes her online: her first update says so.
        await ann.wait_until(lambda s: "ann" in joined(s), within=20)
        assert ann.events[-1]["onlineCount"] == 1
        assert ann.events[-1]["courseId"] == course_id

        bob = await Subscriber(url, bob_token, MESSAGE_ADDED, {"c": course_id}).start()
        await ann.wait_until(lambda s: "bob" in joined(s), within=20)
        assert ann.events[-1]["onlineCount"] == 2
        page = (await ann_api.data(PRESENCE, c=course_id, first=10))["presence"]
        assert page["onlineCount"] == 2
        assert [m["userId"] for m in page["members"]] == ["ann", "bob"]
        assert all(m["since"] for m in page["members"])
        second = (await ann_api.data(PRESENCE, c=course_id, first=1, after="ann"))["presence"]
        assert [m["userId"] for m in second["members"]] == ["bob"]

        # Bob's second subscription (another socket) and its end change nothing.
        extra = await Subscriber(url, bob_token, PRESENCE_CHANGED, {"c": course_id}).start()
        await extra.close()
        await bob.close()  # his last socket: he leaves
        await ann.wait_until(lambda s: "bob" in left(s), within=20)
        assert ann.events[-1]["onlineCount"] == 1
        assert left(ann) == ["bob"], "bob left once, when his last socket closed"
        page = (await ann_api.data(PRESENCE, c=course_id, first=10))["presence"]
        assert [m["userId"] for m in page["members"]] == ["ann"]


async def test_a_burst_of_joins_arrives_as_fewer_coalesced_updates(
    graphql_settings_factory, make_token, course_id
):
    from testing.plugin import start_graphql_server

    interval = 2.0
    server = await start_graphql_server(
        graphql_settings_factory(presence_coalesce_seconds=interval)
    )
    url = server.ws_url
    users = [f"user{i:02d}" for i in range(20)]
    try:
        async with Subscriber(
            url, make_token("ann", [course_id]), PRESENCE_CHANGED, {"c": course_id}
        ) as ann:
            await ann.wait_until(lambda s: "ann" in joined(s), within=20)
            count_before = len(ann.events)
            burst = [
                Subscriber(url, make_token(user, [course_id]), MESSAGE_ADDED, {"c": course_id})
                for user in users
            ]
            await asyncio.gather(*(s.start() for s in burst))

            def all_joined(s: Subscriber) -> bool:
                return set(users) <= set(joined(s))

            await ann.wait_until(all_joined, within=30)
            updates = ann.events[count_before:]
            assert len(updates) < len(users), f"{len(updates)} updates for {len(users)} joins"
            assert updates[-1]["onlineCount"] == len(users) + 1
            # Each user once per update: the joins, not the member list.
            for update in updates:
                names = [m["userId"] for m in update["joined"]]
                assert len(names) == len(set(names))
                assert "ann" not in names
            await asyncio.gather(*(s.close() for s in burst))
            await ann.wait_until(lambda s: set(users) <= set(left(s)), within=30)
            assert ann.events[-1]["onlineCount"] == 1
    finally:
        await server.runner.cleanup()


async def test_typing_shows_with_its_thread_and_goes_when_not_renewed(
    graphql_server, make_token, course_id
):
    url = graphql_server.ws_url
    ann_token, bob_token = make_token("ann", [course_id]), make_token("bob", [course_id])
    async with (
        Subscriber(url, ann_token, TYPING_CHANGED, {"c": course_id}, name="ann") as ann,
        api(graphql_server.url, bob_token) as bob,
    ):
        # Ann's stream is live once her presence is in (it rides the same upstream).
        await until(
            lambda: _online(graphql_server, course_id, "ann"), what="ann's subscription live"
        )
        first = (await bob.data(TYPING, c=course_id, t="42"))["typing"]
        assert first == {"published": True, "retryAfterMs": 0}
        await ann.wait_until(lambda s: bool(s.events), within=20)
        (typist,) = ann.events[0]["users"]
        assert (typist["userId"], typist["threadId"]) == ("bob", "42")
        assert ann.events[0]["typingCount"] == 1
        # Within the throttle: accepted, not published, and said so.
        throttled = (await bob.data(TYPING, c=course_id, t="42"))["typing"]
        assert throttled["published"] is False
        assert 0 < throttled["retryAfterMs"] <= 2000
        # Not renewed: gone after its TTL.
        await ann.wait_until(lambda s: s.events[-1]["users"] == [], within=20)

        # Typing again, then sending: the message ends it at once.
        async def published() -> bool:
            return bool((await bob.data(TYPING, c=course_id, t=None))["typing"]["published"])

        await until(published, what="typing after the throttle")
        await ann.wait_until(
            lambda s: [u["userId"] for u in s.events[-1]["users"]] == ["bob"], within=20
        )
        assert ann.events[-1]["users"][0]["threadId"] is None
        # Sending ends it (the test: ephemeral tests; here its short TTL may end it first).
        events_before = len(ann.events)
        await bob.data(SEND, c=course_id, b="here it is")
        await ann.wait_until(lambda s: len(s.events) > events_before, within=20)
        assert ann.events[events_before]["users"] == []
        # Nothing of it in the course's log: one change, the message.
        log = await graphql_server.wiring.chat.events(bob_token, course_id)
        assert len(log.events) == 1


async def _online(server: Any, course_id: str, user: str) -> bool:
    return user in server.wiring.presence.online_here(course_id) and all(
        course.syncing is None for course in server.wiring.presence.courses.values()
    )


async def test_non_members_are_refused_and_bad_input_is_named(graphql_server, make_token):
    token = make_token("ann", ["mine"])
    async with api(graphql_server.url, token) as ann:
        assert await ann.error_code(PRESENCE, c="theirs") == "FORBIDDEN"
        assert await ann.error_code(TYPING, c="theirs") == "FORBIDDEN"
        assert await ann.error_code(PRESENCE, c="bad course!") == "BAD_USER_INPUT"
        assert await ann.error_code(PRESENCE, c="mine", first=0) == "BAD_USER_INPUT"
        assert await ann.error_code(PRESENCE, c="mine", first=100_000) == "BAD_USER_INPUT"
        assert await ann.error_code(PRESENCE, c="mine", after="no spaces") == "BAD_USER_INPUT"
        assert await ann.error_code(TYPING, c="mine", t="not-an-id") == "BAD_USER_INPUT"
        assert await ann.error_code(TYPING, c="x" * 65) == "BAD_USER_INPUT"
    for document in (PRESENCE_CHANGED, TYPING_CHANGED):
        subscriber = Subscriber(graphql_server.ws_url, token, document, {"c": "theirs"})
        async with subscriber:
            with pytest.raises(AssertionError, match="FORBIDDEN"):
                await subscriber.wait_until(lambda s: bool(s.events), within=20)
    # Nobody came online through a refused subscription.
    assert graphql_server.wiring.presence.online_here("theirs") == set()
    await still_serving(graphql_server.ws_url, token)


async def test_the_new_fields_have_a_cost(graphql_server):
    operations = graphql_server.wiring.operations
    query = operations.prepare({"query": PRESENCE, "variables": {"c": "c1", "first": 200}})
    # presence, courseId, onlineCount, members (1 + 200 × (userId + since))
    assert query.cost == 1 + 1 + 1 + 1 + 200 * 2
    subscription = operations.prepare({"query": TYPING_CHANGED, "variables": {"c": "c1"}})
    assert subscription.cost == 1 + 2 + 1 + 3


def small_receive_buffer() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


COURSE_EVENTS = (
    "subscription($c: ID!) { courseEvents(courseId: $c) { cursor message { content } } }"
)


async def test_a_slow_socket_drops_typing_before_any_real_event(
    graphql_settings_factory, make_token, course_id
):
    """A socket that stops reading skips typing updates once it has a backlog, while its
    courseEvents frames are still written: typing never adds to what cuts it off (4008),
    and a socket that reads gets every update."""
    from testing.plugin import start_graphql_server

    server = await start_graphql_server(graphql_settings_factory(socket_buffer_bytes=65_536))
    metrics = server.wiring.metrics
    slow_token, fast_token = make_token("slow", [course_id]), make_token("fast", [course_id])
    connector = aiohttp.TCPConnector(socket_factory=lambda _addr: small_receive_buffer())
    try:
        async with (
            Subscriber(server.ws_url, fast_token, TYPING_CHANGED, {"c": course_id}) as fast,
            raw_socket(server.ws_url, connector=connector) as slow,
            api(server.url, fast_token) as sender,
        ):
            await ready(slow, slow_token)
            for operation_id, document in (("1", COURSE_EVENTS), ("2", TYPING_CHANGED)):
                payload = {"query": document, "variables": {"c": course_id}}
                await slow.send_json({"id": operation_id, "type": "subscribe", "payload": payload})
            await until(lambda: _online(server, course_id, "slow"), what="slow subscribed")
            await until(lambda: _online(server, course_id, "fast"), what="fast subscribed")
            # Real events fill its backlog; a typing update after each few of them.
            typists = 0
            while not metrics.ephemeral_dropped._value.get():
                assert typists < 1000, "no typing update was ever dropped"
                await asyncio.gather(
                    *(
                        sender.data(SEND, c=course_id, b=f"{typists}.{i} " + "x" * 3000)
                        for i in range(5)
                    )
                )
                async with api(server.url, make_token(f"t{typists}", [course_id])) as typist:
                    assert (await typist.data(TYPING, c=course_id))["typing"]["published"]
                typists += 1
            # Dropped while the real events were still written to it.
            assert metrics.slow_consumer_closes._value.get() == 0
            last = f"t{typists - 1}"
            await fast.wait_until(
                lambda s: bool(s.events) and s.events[-1]["users"][0]["userId"] == last,
                within=20,
            )
    finally:
        await server.runner.cleanup()
