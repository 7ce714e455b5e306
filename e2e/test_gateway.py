"""Next Campus Chat as its users reach it: everything goes through the Envoy gateway (HTTP
POST, WebSocket subscriptions, gRPC), and each test checks what a user would notice.

On the local topology a few tests also look behind the gateway (each process's /metrics,
whether every process is still alive); against an external gateway those checks are skipped.
The chat's default rate limit (10 messages per user per 10 s) stays on, so tests spread their
sends over fresh users, except the rate-limit test.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import grpc
import pytest
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport

from devstack.gateway import UNLIMITED_BUDGET, ClientBudget
from devstack.processes import free_ports
from devstack.scrape import scrape
from devstack.topology import Topology
from nextcampus_common.auth import issue_token
from nextcampus_common.chat_api import ChatApi, ChatClient
from nextcampus_common.metadata import RETRY_AFTER_MS, metadata_value
from nextcampus_graphql.connection import TRANSPORT_WS
from testing.exports import check_rich_course, parse, populate
from testing.plugin import Collector, established
from testing.ws import Subscriber, close_code, next_json, raw_socket, ready

if TYPE_CHECKING:
    from e2e.conftest import Gateway

MAX_FRAME_BYTES = 262_144  # the GraphQL pods' default max_frame_bytes and max_body_bytes

SEND = """mutation($c: ID!, $text: String!) {
  sendMessage(courseId: $c, content: $text) { messageId userId content deleted }
}"""
DELETE = """mutation($c: ID!, $m: ID!) {
  deleteMessage(courseId: $c, messageId: $m) { messageId userId deleted }
}"""
HISTORY = """query($c: ID!, $before: ID, $after: ID, $limit: Int) {
  messages(courseId: $c, before: $before, after: $after, limit: $limit) {
    messages { messageId userId content deleted } hasMore
  }
}"""
ONE_MESSAGE = """query($c: ID!, $m: ID!) {
  message(courseId: $c, messageId: $m) { courseId messageId userId content timestamp deleted }
}"""
ADDED = "subscription($c: ID!) { messageAdded(courseId: $c) { messageId content } }"
DELETED = "subscription($c: ID!) { messageDeleted(courseId: $c) { messageId userId deleted } }"
ME = "{ me { userId courseIds } }"


def new_user(role: str = "user") -> str:
    return f"{role}-{uuid.uuid4().hex[:10]}"


def grpc_target(gateway: Gateway) -> str:
    """gRPC clients reach the gateway's host:port (Envoy speaks HTTP/2 there too)."""
    return urllib.parse.urlsplit(gateway.url).netloc


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def chat_api(gateway: Gateway) -> AsyncIterator[ChatApi]:
    """One gRPC channel to the gateway; each call carries its user's token."""
    api = ChatApi(grpc_target(gateway), max_attempts=1)
    yield api
    await api.close()


async def graphql(
    http: aiohttp.ClientSession,
    gateway: Gateway,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    token: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """POST one operation through the gateway: the status and the JSON body."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.post(
        gateway.graphql_url, json={"query": query, "variables": variables or {}}, headers=headers
    ) as response:
        body: dict[str, Any] = await response.json(content_type=None)
        return response.status, body


def data(status: int, body: dict[str, Any]) -> dict[str, Any]:
    assert status == 200, body
    assert not body.get("errors"), body
    result: dict[str, Any] = body["data"]
    return result


def error_code(body: dict[str, Any]) -> str:
    assert body.get("errors"), body
    code: str = body["errors"][0]["extensions"]["code"]
    return code


async def send_http(
    http: aiohttp.ClientSession, gateway: Gateway, token: str, course_id: str, content: str
) -> int:
    sent = data(*await graphql(http, gateway, SEND, {"c": course_id, "text": content}, token=token))
    return int(sent["sendMessage"]["messageId"])


async def history(
    http: aiohttp.ClientSession, gateway: Gateway, token: str, course_id: str, **bounds: Any
) -> tuple[list[dict[str, Any]], bool]:
    variables = {"c": course_id, **bounds}
    page = data(*await graphql(http, gateway, HISTORY, variables, token=token))["messages"]
    return page["messages"], page["hasMore"]


def ids_of(messages: list[dict[str, Any]]) -> list[int]:
    return [int(m["messageId"]) for m in messages]


# --- behind the gateway (local topology only) ------------------------------------------


def summed(samples: dict[str, float], prefix: str) -> float:
    return sum(value for name, value in samples.items() if name.startswith(prefix))


async def graphql_connections(topology: Topology) -> list[float]:
    """Open WebSockets per GraphQL process, from each process's own /metrics."""
    pages = await asyncio.gather(
        *(asyncio.to_thread(scrape, url) for url in topology.graphql_metrics_urls)
    )
    return [summed(page, "nextcampus_graphql_connections") for page in pages]


async def settled_graphql_connections(topology: Topology) -> list[float]:
    """The gauges once sockets of earlier tests have finished closing (two equal reads)."""
    previous = await graphql_connections(topology)
    for _ in range(50):
        await asyncio.sleep(0.05)
        current = await graphql_connections(topology)
        if current == previous:
            return current
        previous = current
    return previous


async def chat_sends(topology: Topology) -> list[float]:
    """Messages stored per chat process, from each process's own /metrics."""
    pages = await asyncio.gather(
        *(
            asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")
            for port in topology.chat_metrics_ports
        )
    )
    return [summed(page, "nextcampus_chat_sends_total{result=ok}") for page in pages]


def assert_every_process_alive(topology: Topology) -> None:
    down = [p.name for p in topology.all_processes if not p.alive()]
    assert topology.redis is not None
    down += [f"redis:{port}" for port in topology.redis.dead_nodes()]
    assert not down, f"processes died: {down}"


# --- the tests -------------------------------------------------------------------------


async def test_every_subscriber_gets_every_message_once_in_order(
    gateway: Gateway, http: aiohttp.ClientSession, chat_api: ChatApi, course_id: str
) -> None:
    senders = [gateway.token(new_user("sender"), [course_id]) for _ in range(4)]
    viewer = gateway.token(new_user("viewer"), [course_id])
    topology = gateway.topology
    connections_before = await settled_graphql_connections(topology) if topology else []
    sends_before = await chat_sends(topology) if topology else []

    # Subscribers resume after an anchor: whatever is sent while they connect is replayed.
    anchor = await send_http(http, gateway, senders[0], course_id, "anchor")
    subscribers = [
        Subscriber.message_added(gateway.ws_url, viewer, course_id, after=anchor) for _ in range(8)
    ]
    try:
        await asyncio.gather(*(s.start() for s in subscribers))
        if topology is not None:
            # Least-request balancing put subscribers on both GraphQL processes.
            after = await graphql_connections(topology)
            held = [now - before for now, before in zip(after, connections_before, strict=True)]
            assert sum(held) == len(subscribers), (connections_before, after)
            assert all(count >= 1 for count in held), held

        # Half through GraphQL (HTTP POST), half through gRPC, both via the gateway.
        sent: list[int] = []
        for n in range(12):
            token = senders[n % len(senders)]
            if n % 2 == 0:
                sent.append(await send_http(http, gateway, token, course_id, f"http {n}"))
            else:
                response = await chat_api.send(token, course_id, f"grpc {n}")
                sent.append(int(response.message.message_id))
        assert sent == sorted(sent)

        for subscriber in subscribers:
            await subscriber.has_ids(sent)
        for subscriber in subscribers:
            assert subscriber.ids == sent  # each once, in order, nothing else
    finally:
        await asyncio.gather(*(s.close() for s in subscribers))

    if topology is not None:
        stored = [
            now - before
            for now, before in zip(await chat_sends(topology), sends_before, strict=True)
        ]
        assert sum(stored) == 1 + len(sent)
        assert all(count >= 1 for count in stored), f"a chat process stored nothing: {stored}"


async def test_history_pages_and_single_messages(
    gateway: Gateway, http: aiohttp.ClientSession, course_id: str
) -> None:
    author = new_user("author")
    token = gateway.token(author, [course_id])
    sent = [await send_http(http, gateway, token, course_id, f"note {n}") for n in range(5)]

    newest, more = await history(http, gateway, token, course_id, limit=2)
    assert (ids_of(newest), more) == (sent[3:], True)
    assert [m["content"] for m in newest] == ["note 3", "note 4"]
    older, more = await history(http, gateway, token, course_id, before=str(sent[3]), limit=2)
    assert (ids_of(older), more) == (sent[1:3], True)
    oldest, more = await history(http, gateway, token, course_id, before=str(sent[1]), limit=2)
    assert (ids_of(oldest), more) == (sent[:1], False)
    forward, more = await history(http, gateway, token, course_id, after=str(sent[0]), limit=3)
    assert (ids_of(forward), more) == (sent[1:4], True)
    last, more = await history(http, gateway, token, course_id, after=str(sent[3]))
    assert (ids_of(last), more) == (sent[4:], False)

    variables = {"c": course_id, "m": str(sent[2])}
    message = data(*await graphql(http, gateway, ONE_MESSAGE, variables, token=token))["message"]
    assert message["courseId"] == course_id
    assert message["messageId"] == str(sent[2])
    assert (message["userId"], message["content"], message["deleted"]) == (author, "note 2", False)
    sent_at = datetime.datetime.fromisoformat(message["timestamp"])
    assert abs(datetime.datetime.now(datetime.UTC) - sent_at) < datetime.timedelta(hours=1)

    variables = {"c": course_id, "m": str(sent[-1] + 1000)}
    missing = data(*await graphql(http, gateway, ONE_MESSAGE, variables, token=token))
    assert missing["message"] is None


async def test_delete_own_forbidden_and_moderated(
    gateway: Gateway, http: aiohttp.ClientSession, course_id: str
) -> None:
    author, other, moderator = new_user("author"), new_user("other"), new_user("moderator")
    author_token = gateway.token(author, [course_id])
    other_token = gateway.token(other, [course_id])
    moderator_token = gateway.token(moderator, [course_id], moderates=[course_id])

    async def probe() -> int:
        prober = gateway.token(new_user("probe"), [course_id])
        probe_id = await send_http(http, gateway, prober, course_id, "probe")
        variables = {"c": course_id, "m": str(probe_id)}
        data(*await graphql(http, gateway, DELETE, variables, token=prober))
        return probe_id

    async with Subscriber(gateway.ws_url, other_token, DELETED, {"c": course_id}) as deletions:
        live = await deletions.until_live(probe)
        own = await send_http(http, gateway, author_token, course_id, "mine, to delete")
        kept = await send_http(http, gateway, author_token, course_id, "not yours")
        theirs = await send_http(http, gateway, other_token, course_id, "moderate me")

        deleted = data(
            *await graphql(
                http, gateway, DELETE, {"c": course_id, "m": str(own)}, token=author_token
            )
        )["deleteMessage"]
        assert deleted == {"messageId": str(own), "userId": author, "deleted": True}

        status, body = await graphql(
            http, gateway, DELETE, {"c": course_id, "m": str(kept)}, token=other_token
        )
        assert error_code(body) == "FORBIDDEN", (status, body)

        moderated = data(
            *await graphql(
                http, gateway, DELETE, {"c": course_id, "m": str(theirs)}, token=moderator_token
            )
        )["deleteMessage"]
        assert moderated == {"messageId": str(theirs), "userId": other, "deleted": True}

        await deletions.has_ids([theirs])
        after_probe = deletions.events[deletions.ids.index(live) + 1 :]
        assert after_probe == [
            {"messageId": str(own), "userId": author, "deleted": True},
            {"messageId": str(theirs), "userId": other, "deleted": True},
        ]

    page, _ = await history(http, gateway, other_token, course_id, after=str(live))
    assert [(int(m["messageId"]), m["deleted"]) for m in page] == [
        (own, True),
        (kept, False),
        (theirs, True),
    ]
    variables = {"c": course_id, "m": str(own)}
    one = data(*await graphql(http, gateway, ONE_MESSAGE, variables, token=author_token))
    assert one["message"]["deleted"] is True


def expired_token(gateway: Gateway, course_id: str) -> str:
    # Past Envoy's default 60 s clock skew, so the edge itself refuses it.
    return gateway.token(new_user(), [course_id], ttl_seconds=-3600)


def wrongly_signed_token(_gateway: Gateway, course_id: str) -> str:
    return issue_token("not-the-key-of-this-deployment-at-all", new_user(), [course_id])


def foreign_audience_token(gateway: Gateway, course_id: str) -> str:
    # Rightly signed, but for another service: not a token of this one (401, not 403).
    return issue_token(gateway.jwt_secret, new_user(), [course_id], audience="another-service")


BAD_TOKENS: dict[str, tuple[Callable[[Gateway, str], str], str]] = {
    "garbage": (lambda _gateway, _course: "not-a-jwt", "Jwt is not in the form"),
    "wrong-signature": (wrongly_signed_token, "Jwt verification fails"),
    "expired": (expired_token, "Jwt is expired"),
    "wrong-audience": (foreign_audience_token, "Audiences in Jwt are not allowed"),
}


def refused_by_envoy(status: int, headers: Any, body: str | None = None, words: str = "") -> None:
    """A 401 written by Envoy's jwt_authn, not by a pod: its challenge (which does not echo
    the request URL, where a token may be), no upstream time, and (where the client shows
    the body) its words."""
    assert status == 401, (status, body)
    challenge = headers.get("WWW-Authenticate", "")
    assert 'error="invalid_token"' in challenge, dict(headers)
    assert "access_token" not in challenge, challenge
    assert "x-envoy-upstream-service-time" not in headers, dict(headers)
    if body is not None:
        assert words in body


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
async def test_bad_tokens_are_refused_at_the_edge(
    gateway: Gateway, http: aiohttp.ClientSession, chat_api: ChatApi, course_id: str, kind: str
) -> None:
    make, words = BAD_TOKENS[kind]
    token = make(gateway, course_id)
    query = {"query": ME}

    async with http.post(
        gateway.graphql_url, json=query, headers={"Authorization": f"Bearer {token}"}
    ) as response:
        refused_by_envoy(response.status, response.headers, await response.text(), words)
    async with http.post(
        gateway.graphql_url, json=query, params={"access_token": token}
    ) as response:
        refused_by_envoy(response.status, response.headers, await response.text(), words)
    for upgrade in (
        {"params": {"access_token": token}},
        {"headers": {"Authorization": f"Bearer {token}"}},
    ):
        with pytest.raises(aiohttp.WSServerHandshakeError) as handshake:
            async with raw_socket(gateway.ws_url, **upgrade):
                pass
        refused_by_envoy(handshake.value.status, handshake.value.headers or {})

    with pytest.raises(grpc.aio.AioRpcError) as unary:
        await chat_api.send(token, course_id, "never stored")
    assert unary.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert words in (unary.value.details() or "")


async def test_missing_token_passes_the_edge_and_the_pod_refuses(
    gateway: Gateway, http: aiohttp.ClientSession, course_id: str
) -> None:
    status, body = await graphql(http, gateway, ME)
    assert status == 200
    assert error_code(body) == "UNAUTHENTICATED"
    status, body = await graphql(http, gateway, SEND, {"c": course_id, "text": "anonymous"})
    assert error_code(body) == "UNAUTHENTICATED"

    # Browsers send the token in connection_init: without one the pod closes with 4403.
    async with raw_socket(gateway.ws_url) as ws:
        await ws.send_json({"type": "connection_init", "payload": {}})
        assert (await close_code(ws))[0] == 4403


async def test_token_for_another_course_is_forbidden(
    gateway: Gateway, http: aiohttp.ClientSession, course_id: str
) -> None:
    own_course = f"{course_id}-own"
    token = gateway.token(new_user(), [own_course])

    status, body = await graphql(
        http, gateway, SEND, {"c": course_id, "text": "intruder"}, token=token
    )
    assert status == 200
    assert error_code(body) == "FORBIDDEN"
    status, body = await graphql(http, gateway, HISTORY, {"c": course_id}, token=token)
    assert error_code(body) == "FORBIDDEN"

    async with raw_socket(gateway.ws_url) as ws:
        await ready(ws, token)
        payload = {"query": ADDED, "variables": {"c": course_id}}
        await ws.send_json({"id": "other", "type": "subscribe", "payload": payload})
        error = await next_json(ws)
        assert error["type"] == "error"
        assert error["id"] == "other"
        assert error["payload"][0]["extensions"]["code"] == "FORBIDDEN"
        assert "not in course" in error["payload"][0]["message"]
        # The socket stays usable for the user's own course.
        await ws.send_json({"type": "ping"})
        assert await next_json(ws) == {"type": "pong"}


async def test_chat_rate_limit_through_the_gateway(
    gateway: Gateway, http: aiohttp.ClientSession, chat_api: ChatApi, course_id: str
) -> None:
    # Each user has a budget of its own; send until it runs out (bounded).
    token = gateway.token(new_user("chatty"), [course_id])
    for n in range(30):
        variables = {"c": course_id, "text": f"spam {n}"}
        status, body = await graphql(http, gateway, SEND, variables, token=token)
        if body.get("errors"):
            break
    assert n >= 1, "the very first message was refused"
    assert error_code(body) == "RATE_LIMITED", (status, body)
    assert body["errors"][0]["extensions"]["retryAfterMs"] > 0

    # gRPC clients get RESOURCE_EXHAUSTED and the same hint in the trailers.
    backend = gateway.token(new_user("chatty-backend"), [course_id])
    with pytest.raises(grpc.aio.AioRpcError) as limited:  # noqa: PT012 - sends until refused
        for n in range(30):
            await chat_api.send(backend, course_id, f"spam {n}")
    assert limited.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    retry_after = metadata_value(limited.value.trailing_metadata(), RETRY_AFTER_MS)
    assert retry_after is not None
    assert int(retry_after) > 0


def http_get(url: str) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


@contextlib.contextmanager
def second_gateway(topology: Topology, directory: Path, **overrides: Any) -> Iterator[str]:
    """Another Envoy in front of the same processes, from the same chart template with some
    values changed; its host:port."""
    listen_port, admin_port = free_ports(2)
    config = dataclasses.replace(
        topology.gateway_config, listen_port=listen_port, admin_port=admin_port, **overrides
    )
    envoy = config.process(directory, directory / "envoy.log", name="envoy-second")
    envoy.start()
    try:
        envoy.wait_ready()
        yield f"127.0.0.1:{listen_port}"
    finally:
        envoy.stop()


def test_envoy_local_rate_limit_answers_429(gateway: Gateway, tmp_path: Path) -> None:
    topology = gateway.local()
    # A budget of one request a second.
    with second_gateway(topology, tmp_path, requests_per_second=1, burst=2) as address:
        answers = [http_get(f"http://{address}/") for _ in range(6)]

    statuses = [status for status, _ in answers]
    assert statuses[0] == 200, statuses
    limited = [headers for status, headers in answers if status == 429]
    assert limited, statuses
    assert all(h.get("x-local-rate-limit") == "true" for h in limited), limited
    # The shared gateway has its own budget.
    assert http_get(f"{gateway.url}/")[0] == 200


# A budget no machine refills during a test: one token an hour.
HOURLY = ClientBudget(requests=1, every_seconds=3600, burst=5)


async def status_of(
    session: aiohttp.ClientSession, url: str, *, token: str | None = None, **kw: Any
) -> tuple[int, str | None]:
    """GET `url` (a POSTed `me` query when `token` is given): the status, and whether the
    answer was the gateway's rate limit."""
    if token is None:
        request = session.get(url, **kw)
    else:
        headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}
        request = session.post(url, json={"query": ME}, headers=headers, **kw)
    async with request as response:
        await response.read()
        return response.status, response.headers.get("x-local-rate-limit")


def from_address(address: str) -> aiohttp.ClientSession:
    """A client whose connections come from `address` (any of 127.0.0.0/8 on loopback)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


async def test_a_flood_of_bad_tokens_costs_a_valid_user_nothing(
    gateway: Gateway, course_id: str, tmp_path: Path
) -> None:
    """Tokens are checked before any budget is charged: an anonymous flood of bad tokens
    gets 401s, and the gateway's shared budget (5 requests) is all there for a real user."""
    topology = gateway.local()
    token = gateway.token(new_user(), [course_id])
    with second_gateway(topology, tmp_path, requests_per_second=1, burst=5) as address:
        url = f"http://{address}/graphql"
        async with aiohttp.ClientSession() as session:
            flood = [
                await status_of(session, url, token=wrongly_signed_token(gateway, course_id))
                for _ in range(30)
            ]
            user = [await status_of(session, url, token=token) for _ in range(3)]
    assert {status for status, _ in flood} == {401}, flood
    assert [status for status, _ in user] == [200, 200, 200], user


async def test_one_user_over_budget_leaves_other_users_alone(
    gateway: Gateway, course_id: str, tmp_path: Path
) -> None:
    """Each user has a bucket of their own, even behind one address (a campus NAT): one
    that floods gets 429 (gRPC: RESOURCE_EXHAUSTED), the others are served."""
    topology = gateway.local()
    greedy, modest = (gateway.token(new_user(), [course_id]) for _ in range(2))
    with second_gateway(
        topology,
        tmp_path,
        per_user=HOURLY,
        requests_per_second=1_000_000,
        burst=1_000_000,
        per_address=UNLIMITED_BUDGET,
    ) as address:
        url = f"http://{address}/graphql"
        async with aiohttp.ClientSession() as session:
            greedy_answers = [await status_of(session, url, token=greedy) for _ in range(8)]
            modest_answers = [await status_of(session, url, token=modest) for _ in range(3)]
            anonymous = await status_of(session, f"http://{address}/")
        api = ChatApi(address, max_attempts=1)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as limited:
                await api.send(greedy, course_id, "over budget")
        finally:
            await api.close()
    assert greedy_answers[:5] == [(200, None)] * 5, greedy_answers
    assert greedy_answers[5:] == [(429, "true")] * 3, greedy_answers
    assert modest_answers == [(200, None)] * 3, modest_answers
    assert anonymous == (200, None)
    # Envoy's answer, not the chat's own per-course budget: gRPC clients wait, not retry.
    assert limited.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    metadata = [
        *(limited.value.initial_metadata() or ()),
        *(limited.value.trailing_metadata() or ()),
    ]
    assert metadata_value(metadata, "x-local-rate-limit") == "true", metadata


async def test_one_address_over_budget_leaves_other_addresses_alone(
    gateway: Gateway, course_id: str, tmp_path: Path
) -> None:
    """Requests without a token (the page, WebSocket upgrades) are counted per client
    address. X-Forwarded-For is not believed (no trusted proxy in front), so a client cannot
    borrow another address's budget; a user with a token is counted as that user."""
    topology = gateway.local()
    with second_gateway(
        topology,
        tmp_path,
        per_address=HOURLY,
        requests_per_second=1_000_000,
        burst=1_000_000,
        per_user=UNLIMITED_BUDGET,
    ) as address:
        page = f"http://{address}/"
        async with from_address("127.0.0.1") as first, from_address("127.0.0.2") as second:
            flood = [await status_of(first, page) for _ in range(8)]
            spoofed = await status_of(first, page, headers={"X-Forwarded-For": "10.1.2.3"})
            other = [await status_of(second, page) for _ in range(3)]
            token = gateway.token(new_user(), [course_id])
            with_token = await status_of(first, f"http://{address}/graphql", token=token)
    assert flood[:5] == [(200, None)] * 5, flood
    assert flood[5:] == [(429, "true")] * 3, flood
    assert spoofed == (429, "true")
    assert other == [(200, None)] * 3, other
    assert with_token == (200, None)


async def test_tokens_never_reach_the_access_log(
    gateway: Gateway, http: aiohttp.ClientSession, course_id: str
) -> None:
    """Browsers put their token in the URL (`?access_token=`); Envoy logs each request's
    path, and its log is kept and shipped like any other: without the query."""
    topology = gateway.local()
    token = gateway.token(new_user(), [course_id])
    refused = wrongly_signed_token(gateway, course_id)
    marker = f"/static/{uuid.uuid4().hex}.js"
    async with http.post(
        gateway.graphql_url, json={"query": ME}, params={"access_token": token}
    ) as response:
        assert response.status == 200
    async with raw_socket(gateway.ws_url, params={"access_token": token}) as ws:
        await ready(ws, token)
    async with http.get(gateway.graphql_url, params={"access_token": refused}) as response:
        assert response.status == 401
    async with http.get(f"{gateway.url}{marker}", params={"access_token": token}) as response:
        assert response.status == 404
    log = topology.root / "logs" / "envoy.log"
    for _ in range(300):  # Envoy flushes its access log about once a second
        text = log.read_text()
        if marker in text:
            break
        await asyncio.sleep(0.1)
    assert f'"path":"{marker}"' in text, "the access log is on by default"
    assert token not in text
    assert refused not in text
    assert "access_token" not in text


async def test_the_gateway_routes_only_what_is_public(
    gateway: Gateway, http: aiohttp.ClientSession, course_id: str
) -> None:
    """The page, its files, /graphql and the gRPC API go through; the pods' probes and
    metrics do not (GraphQL's /metrics is on its metrics port only)."""
    for path in ("/", "/static/app.js"):
        async with http.get(f"{gateway.url}{path}") as response:
            assert response.status == 200, path
    token = gateway.token(new_user(), [course_id])
    assert data(*await graphql(http, gateway, ME, token=token))["me"]["courseIds"] == [course_id]
    for path in ("/metrics", "/healthz", "/readyz", "/graphql/extra", "/stats/prometheus"):
        async with http.get(f"{gateway.url}{path}") as response:
            assert response.status == 404, path
            assert "nextcampus_" not in await response.text()
    if gateway.topology is not None:
        for url in gateway.topology.graphql_metrics_urls:
            samples = await asyncio.to_thread(scrape, url)
            assert "nextcampus_graphql_subscriptions" in samples


async def test_bad_input_leaves_every_process_serving(
    gateway: Gateway, http: aiohttp.ClientSession, course_id: str
) -> None:
    token = gateway.token(new_user(), [course_id])
    oversized = '{"type": "ping", "payload": {"x": "' + "x" * (MAX_FRAME_BYTES + 10) + '"}}'
    subscribe = {"id": "1", "type": "subscribe", "payload": {"query": ME}}
    frames = {
        # name: (connection_init first, frame, close code)
        "malformed-json": (False, "{not json", 4400),
        "malformed-json-after-init": (True, "[1, 2", 4400),
        "unknown-type": (True, '{"type": "bogus"}', 4400),
        "subscribe-before-init": (False, json.dumps(subscribe), 4401),
        "oversized-frame": (True, oversized, 1009),
    }
    codes = {}
    for name, (init, frame, _) in frames.items():
        async with raw_socket(gateway.ws_url) as ws:
            if init:
                await ready(ws, token)
            await ws.send_str(frame)
            codes[name], _ = await close_code(ws)
    # The pod closes with 1009 once the frame's header says it is too large, while the rest
    # of the frame (256 KiB) is still on its way: through the gateway the close can arrive
    # as a reset of the connection (1006). Either way that socket ends, and only that one.
    if codes["oversized-frame"] == 1006:
        codes["oversized-frame"] = 1009
    assert codes == {name: code for name, (_, _, code) in frames.items()}

    auth = {"Authorization": f"Bearer {token}"}
    big = b"x" * (MAX_FRAME_BYTES + 10)
    async with http.post(gateway.graphql_url, data=big, headers=auth) as response:
        assert response.status == 413
    async with http.post(gateway.graphql_url, data=b"{not json", headers=auth) as response:
        assert response.status == 400
        assert error_code(await response.json()) == "BAD_USER_INPUT"

    if gateway.topology is not None:
        assert_every_process_alive(gateway.topology)
    # And the chat still works end to end.
    anchor = await send_http(http, gateway, token, course_id, "still here?")
    subscriber = await Subscriber.message_added(
        gateway.ws_url, token, course_id, after=anchor
    ).start()
    try:
        after = await send_http(http, gateway, token, course_id, "yes")
        await subscriber.has_ids([after])
        assert subscriber.ids == [after]
    finally:
        await subscriber.close()


async def test_grpc_through_the_gateway(
    gateway: Gateway, chat_api: ChatApi, course_id: str
) -> None:
    token = gateway.token(new_user("backend"), [course_id])
    collector = Collector(chat_api.subscribe(token, course_id))
    try:
        probe = await established(collector, lambda: chat_api.send(token, course_id, "probe"))
        sent = []
        for n in range(3):
            response = await chat_api.send(token, course_id, f"from a backend {n}")
            assert not response.duplicate
            sent.append(int(response.message.message_id))
        await collector.has_ids(sent)
        assert collector.ids == [probe, *sent]
        assert [m.content for m in collector.messages[1:]] == [
            f"from a backend {n}" for n in range(3)
        ]
    finally:
        await collector.close()

    refused = Collector(chat_api.subscribe("not-a-jwt", course_id))
    try:
        await refused.wait_for(lambda c: c.error is not None)
    finally:
        await refused.close()
    assert refused.error is not None
    assert refused.error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "Jwt" in (refused.error.details() or "")


async def test_a_quiet_grpc_stream_outlives_the_idle_timeout(
    gateway: Gateway, course_id: str, tmp_path: Path
) -> None:
    """A backend tailing a quiet course through the gateway keeps its stream: gRPC streams
    carry no data while nothing is sent (HTTP/2 PINGs are not stream activity), so Envoy's
    idle timeout must not apply to them."""
    topology = gateway.local()
    idle_seconds = 1
    token = gateway.token(new_user("backend"), [course_id])
    with second_gateway(topology, tmp_path, idle_timeout_seconds=idle_seconds) as address:
        api = ChatApi(address, max_attempts=1)
        collector = Collector(api.subscribe(token, course_id))
        try:
            probe = await established(collector, lambda: api.send(token, course_id, "probe"))
            await asyncio.sleep(3 * idle_seconds)  # the course stays quiet
            later = int(
                (await api.send(token, course_id, "after a quiet while")).message.message_id
            )
            await collector.has_ids([later])
            assert collector.ids == [probe, later]
            assert collector.error is None
        finally:
            await collector.close()
            await api.close()


ENVOY_DEFAULT_UPSTREAM_LIMIT = 1024  # connections and requests per cluster, unless configured


async def test_the_gateway_holds_more_sockets_than_envoys_default_limit(
    gateway: Gateway, http: aiohttp.ClientSession, course_id: str
) -> None:
    """A gateway pod must carry as many WebSockets as its GraphQL pods hold, not the 1,024
    upstream connections Envoy allows a cluster by default: every socket is acknowledged,
    and a message sent afterwards reaches the newest of them."""
    count = ENVOY_DEFAULT_UPSTREAM_LIMIT + 76
    # A user of their own per socket, as that many browsers would be (a GraphQL pod holds at
    # most max_sockets_per_user sockets of one user).
    tokens = [gateway.token(new_user("crowd"), [course_id]) for _ in range(count)]
    crowd, token = tokens[:-1], tokens[-1]
    topology = gateway.topology
    before = sum(await settled_graphql_connections(topology)) if topology else 0.0
    opened: list[aiohttp.ClientWebSocketResponse] = []
    connecting = asyncio.Semaphore(64)

    async def open_one(session: aiohttp.ClientSession, token: str) -> None:
        async with connecting:
            ws = await session.ws_connect(gateway.ws_url, protocols=[TRANSPORT_WS])
            opened.append(ws)
            await ready(ws, token)

    # One client connection per socket, as that many browsers would have.
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            async with asyncio.timeout(120):
                await asyncio.gather(*(open_one(session, t) for t in crowd))
            # The newest socket, opened while all the others are held, subscribes.
            async with Subscriber(gateway.ws_url, token, ADDED, {"c": course_id}) as newest:
                if topology is not None:
                    held = sum(await graphql_connections(topology)) - before
                    assert held >= count, f"GraphQL processes hold {held} of {count} sockets"
                await newest.until_live(
                    lambda: send_http(http, gateway, token, course_id, "to the crowd")
                )
        finally:
            await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)


def raw_response_head(address: str, request: bytes) -> bytes:
    """The status line and headers exactly as they came over the wire."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = connection.recv(65536)
            if not chunk:
                break
            received += chunk
    return received.split(b"\r\n\r\n", 1)[0]


def test_header_names_keep_their_case_through_the_gateway(gateway: Gateway) -> None:
    """Envoy lowercases header names unless told otherwise; some HTTP/1.1 clients match
    them case-sensitively. The pods' names arrive as the pods wrote them."""
    address = urllib.parse.urlsplit(gateway.url).netloc
    page = raw_response_head(address, b"GET / HTTP/1.1\r\nHost: chat\r\nConnection: close\r\n\r\n")
    assert page.startswith(b"HTTP/1.1 200"), page
    for name in (
        b"Content-Type",
        b"Cache-Control",
        b"Content-Security-Policy",
        b"X-Content-Type-Options",
    ):
        assert b"\r\n" + name + b": " in page, page

    upgrade = raw_response_head(
        address,
        b"GET /graphql HTTP/1.1\r\nHost: chat\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n",
    )
    assert upgrade.startswith(b"HTTP/1.1 101"), upgrade
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in upgrade, upgrade
    assert b"\r\nSec-WebSocket-Protocol: graphql-transport-ws" in upgrade, upgrade


async def test_a_course_export_through_the_gateway(gateway: Gateway, course_id: str) -> None:
    """ExportCourse (gRPC) and exportCourse (a GraphQL subscription) pass the gateway: the
    moderator gets the whole course, a student is refused."""
    target = grpc_target(gateway)
    student_token = gateway.token(new_user("student"), [course_id])
    moderator_token = gateway.token(new_user("moderator"), [course_id], [course_id])
    async with (
        ChatClient(target, student_token) as student,
        ChatClient(target, moderator_token) as moderator,
    ):
        course = await populate(student, moderator, course_id)
        lines = [line async for chunk in moderator.export(course_id) for line in chunk.lines]
        check_rich_course(parse(lines), course)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            [chunk async for chunk in student.export(course_id)]
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED

    transport = WebsocketsTransport(
        url=gateway.ws_url,
        init_payload={"authorization": f"Bearer {moderator_token}"},
        subprotocols=[TRANSPORT_WS],
    )
    async with Client(transport=transport) as session:
        request = GraphQLRequest(
            "subscription($c: ID!) { exportCourse(courseId: $c) { lines } }",
            variable_values={"c": course_id},
        )
        chunks = [result["exportCourse"]["lines"] async for result in session.subscribe(request)]
    check_rich_course(parse(line for chunk in chunks for line in chunk), course)
