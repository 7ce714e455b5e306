"""One user cannot exhaust a GraphQL process: costly operations are refused before they run,
large responses are not sent, queries in flight per socket, sockets, subscriptions and the
per-event work of subscriptions per user are bounded — and every refusal is an error the
client can read, while the process and other users carry on. All with the default settings
unless a test says otherwise."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devstack.topology import Topology
from nextcampus_graphql.connection import LEGACY_WS, TRANSPORT_WS
from nextcampus_graphql.errors import ApiError
from nextcampus_graphql.limits import UserLimits
from nextcampus_graphql.settings import GraphqlSettings
from testing.ws import close_code, next_json, raw_socket, ready, still_serving

# The defaults these tests run with (checked against the settings class below).
DEFAULTS = {
    "max_query_bytes": 8192,
    "max_query_cost": 5000,
    "max_response_bytes": 4_194_304,
    "max_queries_per_socket": 8,
    "max_sockets_per_user": 16,
    "max_operations_per_socket": 100,
    "max_subscriptions_per_user": 100,
    "max_subscription_cost_per_user": 100,
}
PAGE = (
    "fragment P on MessagePage { messages { messageId userId content timestamp deleted } hasMore }"
)
# The query: 110 aliased pages of 200 messages, 5 KB of text.
ALIASED_PAGES = (
    "query($c: ID!) { "
    + " ".join(f"a{n}: messages(courseId: $c, limit: 200) {{ ...P }}" for n in range(110))
    + " } "
    + PAGE
)
# The web page's history query, at the largest page.
HISTORY = """query History($courseId: ID!, $before: ID, $limit: Int) {
  messages(courseId: $courseId, before: $before, limit: $limit) {
    messages { messageId userId content timestamp deleted } hasMore
  }
}"""
ADDED = "subscription($c: ID!) { messageAdded(courseId: $c) { messageId content } }"
ME = "{ me { userId } }"


def subscribe(operation_id: str, query: str, **variables: Any) -> dict[str, Any]:
    return {
        "id": operation_id,
        "type": "subscribe",
        "payload": {"query": query, "variables": variables},
    }


async def post(url: str, token: str, query: str, **variables: Any) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url,
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        return response.status, await response.json()


async def ws_request(
    url: str, token: str, protocol: str, query: str, **variables: Any
) -> dict[str, Any]:
    """One operation over a new socket; its `next`/`data` payload or its `error` message."""
    start = "subscribe" if protocol == TRANSPORT_WS else "start"
    async with raw_socket(url, protocol) as ws:
        await ws.send_json(
            {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
        )
        assert (await next_json(ws))["type"] == "connection_ack"
        await ws.send_json({**subscribe("q", query, **variables), "type": start})
        while True:
            message = await next_json(ws)
            if message["type"] in ("next", "data", "error"):
                return message


def test_the_defaults_these_tests_use():
    fields = GraphqlSettings.model_fields
    assert {name: fields[name].default for name in DEFAULTS} == DEFAULTS


def test_user_limits_count_and_release():
    limits = UserLimits(max_sockets=2, max_subscriptions=3, max_subscription_cost=10)
    first, second = limits.open_socket("ann"), limits.open_socket("ann")
    assert first is not None
    assert second is not None
    assert limits.open_socket("ann") is None
    assert limits.open_socket("bob") is not None  # per user
    first()
    first()  # twice is harmless
    assert limits.held("ann") == (1, 0, 0)
    key_a, key_b = ("a", None, b"{}"), ("b", None, b"{}")
    a1 = limits.add_subscription("ann", key_a, 6)
    a2 = limits.add_subscription("ann", key_a, 6)  # the same document: no more cost
    assert limits.held("ann") == (1, 2, 6)
    with pytest.raises(ApiError, match="would cost 11 per event; the limit is 10"):
        limits.add_subscription("ann", key_b, 5)
    b = limits.add_subscription("ann", key_b, 4)
    with pytest.raises(ApiError, match="holds 3 subscriptions"):
        limits.add_subscription("ann", key_a, 6)
    for release in (a1, a2, a2, b):
        release()
    assert limits.held("ann") == (1, 0, 0)
    second()
    assert limits.held("ann") == (0, 0, 0)
    assert limits.users() == 1  # bob's socket; ann is forgotten


@pytest.fixture
def token(make_token, course_id) -> str:
    return make_token("alice", [course_id])


@pytest.fixture
async def seeded(client_for, course_id) -> list[int]:
    """Three messages in the course."""
    client = client_for("seeder", [course_id])
    return [int((await client.send(course_id, f"m{n}")).message.message_id) for n in range(3)]


async def test_the_110_aliased_pages_are_refused_before_they_run(
    graphql_server, token, course_id, seeded
):
    assert len(ALIASED_PAGES.encode()) < DEFAULTS["max_query_bytes"]
    status, body = await post(graphql_server.url, token, ALIASED_PAGES, c=course_id)
    assert status == 400
    assert "data" not in body  # nothing ran
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["maxCost"] == DEFAULTS["max_query_cost"] == 5000
    # 110 × (1 + 200 × (1 + 5 + 1))
    assert error["extensions"]["cost"] == 154_110
    assert "costs 154110; the limit is 5000" in error["message"]
    for protocol in (TRANSPORT_WS, LEGACY_WS):
        message = await ws_request(
            graphql_server.ws_url, token, protocol, ALIASED_PAGES, c=course_id
        )
        assert message["type"] == "error"
        payload = message["payload"]
        first = payload[0] if protocol == TRANSPORT_WS else payload
        assert first["extensions"]["code"] == "BAD_USER_INPUT"
        assert "the limit is 5000" in first["message"]
    # The process still serves, and the web page's largest history page fits the cost.
    status, body = await post(graphql_server.url, token, HISTORY, courseId=course_id, limit=200)
    assert status == 200
    assert [int(m["messageId"]) for m in body["data"]["messages"]["messages"]] == seeded
    await still_serving(graphql_server.ws_url, token)


async def test_a_response_past_max_response_bytes_is_not_sent(
    graphql_server, wiring, token, course_id, client_for
):
    """Eight aliased pages of 200 messages of 3,000 characters: within the cost (8 × 601),
    4.8 MB of response — more than the 4 MiB cap."""
    client = client_for("seeder", [course_id])
    for n in range(200):
        await client.send(course_id, f"{n} " + "x" * 3000)
    pages = (
        "query($c: ID!) { "
        + " ".join(
            f"p{n}: messages(courseId: $c, limit: 200) {{ messages {{ content }} hasMore }}"
            for n in range(8)
        )
        + " }"
    )
    status, body = await post(graphql_server.url, token, pages, c=course_id)
    assert status == 200
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["maxResponseBytes"] == DEFAULTS["max_response_bytes"] == 4_194_304
    assert error["extensions"]["responseBytes"] > 4_194_304
    assert "the limit is 4194304" in error["message"]
    async with raw_socket(graphql_server.ws_url) as ws:
        await ready(ws, token)
        await ws.send_json(subscribe("big", pages, c=course_id))
        message = await next_json(ws)
        assert message["id"] == "big"
        assert message["payload"]["data"] is None
        assert message["payload"]["errors"][0]["extensions"]["maxResponseBytes"] == 4_194_304
        assert await next_json(ws) == {"id": "big", "type": "complete"}
        # The same socket goes on; one page is within the cap.
        await ws.send_json(subscribe("one", pages.split(" p1:")[0] + " }", c=course_id))
        message = await next_json(ws)
        assert len(message["payload"]["data"]["p0"]["messages"]) == 200
    metrics = wiring.metrics
    assert metrics.limit_refusals.labels("max_response_bytes")._value.get() == 2


@pytest.fixture
def one_of_each(tmp_path: Path) -> Iterator[Topology]:
    """Redis Cluster + one chat + one GraphQL process (default settings): the chat process
    can be frozen (SIGSTOP) while the GraphQL process waits on it."""
    stack = Topology.on_free_ports(
        tmp_path / "stack",
        chat_count=1,
        graphql_count=1,
        gateway=False,
        chat_overrides={"default_rate_limit_messages": 0},
        # A frozen chat process must not end the queries waiting on it during the test.
        graphql_overrides={"chat_deadline_seconds": 120},
    )
    stack.start()
    yield stack
    stack.stop()


async def test_queries_in_flight_per_socket_are_bounded(one_of_each, make_token, course_id):
    token = make_token("alice", [course_id])
    ws_url = one_of_each.graphql_urls[0].replace("http", "ws", 1)
    chat = one_of_each.chats[0].process
    assert chat is not None
    limit = DEFAULTS["max_queries_per_socket"]
    async with raw_socket(ws_url) as ws, raw_socket(ws_url) as other:
        await ready(ws, token)
        await ready(other, token)
        chat.send_signal(signal.SIGSTOP)  # every history query now waits for chat
        try:
            for n in range(limit):
                await ws.send_json(subscribe(f"h{n}", HISTORY, courseId=course_id))
            await ws.send_json(subscribe("one-more", ME))
            refused = await next_json(ws)
            assert refused["id"] == "one-more"
            assert refused["type"] == "error"
            assert refused["payload"][0]["extensions"]["code"] == "RATE_LIMITED"
            assert refused["payload"][0]["extensions"]["limit"] == "max_queries_per_socket"
            # Per socket: the user's other socket is not held up.
            await other.send_json(subscribe("me", ME))
            assert (await next_json(other))["payload"] == {"data": {"me": {"userId": "alice"}}}
        finally:
            chat.send_signal(signal.SIGCONT)
        answered = set()
        while len(answered) < limit:
            message = await next_json(ws)
            if message["type"] == "next":
                assert message["payload"]["data"]["messages"]["messages"] == []
                answered.add(message["id"])
        await ws.send_json(subscribe("after", ME))
        message = await next_json(ws)
        while message["type"] == "complete":
            message = await next_json(ws)
        assert message == {
            "id": "after",
            "type": "next",
            "payload": {"data": {"me": {"userId": "alice"}}},
        }


async def test_a_fragment_bomb_is_answered_and_the_process_serves_on(
    one_of_each, make_token, course_id
):
    """Fragments spreading the next one twice, 150 deep: 2^150 paths if walked naively."""
    token = make_token("alice", [course_id])
    depth = 150
    query = (
        "query { ...F0 } "
        + " ".join(f"fragment F{n} on Query {{ ...F{n + 1} ...F{n + 1} }}" for n in range(depth))
        + f" fragment F{depth} on Query {{ me {{ userId }} }}"
    )
    url = one_of_each.graphql_urls[0]
    async with asyncio.timeout(60):
        status, body = await post(url, token, query)
    assert status == 200
    assert body == {"data": {"me": {"userId": "alice"}}}
    async with asyncio.timeout(60):
        await still_serving(url.replace("http", "ws", 1), token)


async def test_sockets_per_user_are_bounded(graphql_server, make_token, course_id):
    alice = make_token("alice", [course_id])
    limit = DEFAULTS["max_sockets_per_user"]
    async with AsyncExitStack() as sockets:
        held = []
        for _ in range(limit):
            ws = await sockets.enter_async_context(raw_socket(graphql_server.ws_url))
            await ready(ws, alice)
            held.append(ws)
        for protocol in (TRANSPORT_WS, LEGACY_WS):
            async with raw_socket(graphql_server.ws_url, protocol) as extra:
                await extra.send_json(
                    {"type": "connection_init", "payload": {"authorization": f"Bearer {alice}"}}
                )
                if protocol == LEGACY_WS:
                    error = await next_json(extra)
                    assert error["type"] == "connection_error"
                    assert "Too many sockets" in error["payload"]["message"]
                code, reason = await close_code(extra)
                assert code == 4013
                assert reason == f"Too many sockets: user alice holds {limit} on this server"
        # Another user is not affected.
        await still_serving(graphql_server.ws_url, make_token("bob", [course_id]))
        # One of alice's sockets closes: a new one is accepted.
        await held.pop().close()
        for _ in range(100):
            async with raw_socket(graphql_server.ws_url) as again:
                await again.send_json(
                    {"type": "connection_init", "payload": {"authorization": f"Bearer {alice}"}}
                )
                message = await again.receive(timeout=20)
                if message.type is aiohttp.WSMsgType.TEXT:
                    assert message.json() == {"type": "connection_ack"}
                    break
            await asyncio.sleep(0.1)  # the server notices the closed socket asynchronously
        else:
            raise AssertionError("a socket closed, yet alice could not open another")


async def pong_next(ws: aiohttp.ClientWebSocketResponse) -> None:
    """The next message is the pong of a ping sent now: nothing (no error) came before it."""
    await ws.send_json({"type": "ping"})
    assert await next_json(ws) == {"type": "pong"}


async def test_subscriptions_per_user_are_bounded_across_sockets(
    graphql_server, wiring, make_token, course_id
):
    alice = make_token("alice", [course_id])
    limit = DEFAULTS["max_subscriptions_per_user"]
    assert limit <= DEFAULTS["max_operations_per_socket"]
    async with (
        raw_socket(graphql_server.ws_url) as first,
        raw_socket(graphql_server.ws_url) as second,
    ):
        await ready(first, alice)
        await ready(second, alice)
        for n in range(limit):
            await first.send_json(subscribe(str(n), ADDED, c=course_id))
        await pong_next(first)
        await second.send_json(subscribe("one-more", ADDED, c=course_id))
        refused = await next_json(second)
        assert refused["id"] == "one-more"
        extensions = refused["payload"][0]["extensions"]
        assert extensions == {"code": "RATE_LIMITED", "limit": "max_subscriptions_per_user"}
        # Another user is not affected.
        async with raw_socket(graphql_server.ws_url) as bob:
            await ready(bob, make_token("bob", [course_id]))
            await bob.send_json(subscribe("1", ADDED, c=course_id))
            await pong_next(bob)
        # Ending one subscription makes room for one.
        await first.send_json({"id": "0", "type": "complete"})
        await second.send_json(subscribe("one-more", ADDED, c=course_id))
        await pong_next(second)
        assert wiring.users.held("alice")[:2] == (2, limit)
    # Closed sockets give everything back (the server notices them asynchronously).
    users = wiring.users
    for _ in range(200):
        if not users.users():
            break
        await asyncio.sleep(0.1)
    assert users.users() == 0


def costly_document(n: int) -> str:
    """A subscription document of its own (aliases differ by `n`) costing 10 per event."""
    fields = " ".join(f"f{n}_{k}: messageId" for k in range(9))
    return f"subscription($c: ID!) {{ messageAdded(courseId: $c) {{ {fields} }} }}"


async def test_the_per_event_work_of_one_users_subscriptions_is_bounded(
    graphql_server, make_token, course_id
):
    """Documents that differ only by aliases are groups of their own, each executed once per
    event: their costs add up to at most max_subscription_cost_per_user (100) per user."""
    other_course = f"{course_id}-2"
    alice = make_token("alice", [course_id, other_course])
    assert DEFAULTS["max_subscription_cost_per_user"] == 100
    async with raw_socket(graphql_server.ws_url) as ws, raw_socket(graphql_server.ws_url) as more:
        await ready(ws, alice)
        await ready(more, alice)
        for n in range(10):
            await ws.send_json(subscribe(f"d{n}", costly_document(n), c=course_id))
        await pong_next(ws)
        await ws.send_json(subscribe("d10", costly_document(10), c=course_id))
        refused = await next_json(ws)
        assert refused["id"] == "d10"
        error = refused["payload"][0]
        assert error["extensions"] == {
            "code": "RATE_LIMITED",
            "limit": "max_subscription_cost_per_user",
        }
        assert "would cost 110 per event; the limit is 100" in error["message"]
        # A document alice already holds joins its group: allowed, on another socket and in
        # another course too.
        await more.send_json(subscribe("same", costly_document(0), c=course_id))
        await more.send_json(subscribe("same-elsewhere", costly_document(0), c=other_course))
        await pong_next(more)
        # Another user is not affected.
        async with raw_socket(graphql_server.ws_url) as bob:
            await ready(bob, make_token("bob", [course_id]))
            await bob.send_json(subscribe("b", costly_document(10), c=course_id))
            await pong_next(bob)
        # Alice ends one of her documents: a new one fits again.
        await ws.send_json({"id": "d9", "type": "complete"})
        await ws.send_json(subscribe("d11", costly_document(11), c=course_id))
        await pong_next(ws)
