"""The WebSocket protocols' rules over real sockets: every violation gets its close code,
bad operations get error messages on a socket that stays usable, and HTTP gets the same
guards. Nothing here may take the server down: each test ends by using it again."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import aiohttp
import pytest

from nextcampus_graphql.connection import LEGACY_WS, TRANSPORT_WS
from testing.plugin import start_graphql_server
from testing.ws import Subscriber, close_code, next_json, raw_socket, ready, still_serving

ADDED = "subscription($c: ID!) { messageAdded(courseId: $c) { messageId content } }"


@pytest.fixture
def token(make_token, course_id) -> str:
    return make_token("alice", [course_id])


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (["not json"], 4400),
        (["[1, 2]"], 4400),
        (['{"type": 7}'], 4400),
        (['{"type": "bogus"}'], 4400),
        ([b"\x00binary"], 4400),
        (['{"type": "subscribe", "id": "1", "payload": {"query": "{ me { userId } }"}}'], 4401),
        (['{"type": "connection_init", "payload": "token"}'], 4400),
    ],
    ids=["garbage", "array", "type-not-string", "unknown-type", "binary", "before-init", "payload"],
)
async def test_protocol_violations_close_with_their_code(graphql_server, token, frames, code):
    async with raw_socket(graphql_server.ws_url) as ws:
        for frame in frames:
            await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
        assert (await close_code(ws))[0] == code
    await still_serving(graphql_server.ws_url, token)


async def subscribed_twice(
    url: str, token: str, course_id: str, operation_id: str
) -> tuple[int | None, str]:
    """Subscribe twice under one operation id: the close code and reason that follow."""
    async with raw_socket(url) as ws:
        await ready(ws, token)
        subscribe = {
            "id": operation_id,
            "type": "subscribe",
            "payload": {"query": ADDED, "variables": {"c": course_id}},
        }
        await ws.send_json(subscribe)
        await ws.send_json(subscribe)
        return await close_code(ws)


async def test_second_init_and_duplicate_id(graphql_server, token, course_id):
    async with raw_socket(graphql_server.ws_url) as ws:
        await ready(ws, token)
        await ws.send_json({"type": "connection_init", "payload": {}})
        assert (await close_code(ws))[0] == 4429
    code, reason = await subscribed_twice(graphql_server.ws_url, token, course_id, "s1")
    assert code == 4409
    assert "s1" in reason


async def test_a_long_close_reason_is_cut_on_a_character_boundary(graphql_server, token, course_id):
    """The reason names the id (its first 40 characters); 40 emoji are 160 bytes, more than a
    close frame holds. Cut inside a character it would be invalid UTF-8, and the client would
    see 1007 instead of 4409."""
    emoji_id = "\N{GRINNING FACE}" * 40
    code, reason = await subscribed_twice(graphql_server.ws_url, token, course_id, emoji_id)
    assert code == 4409
    assert reason.startswith("Subscriber for \N{GRINNING FACE}")
    assert len(reason.encode()) <= 123
    assert reason == ("Subscriber for " + emoji_id)[: len(reason)]  # whole characters


SPREAD = """subscription($c: ID!) { ...Added }
fragment Added on Subscription { messageAdded(courseId: $c) { messageId content } }"""
INLINE = """subscription($c: ID!) {
  ... on Subscription { messageAdded(courseId: $c) { messageId content } }
}"""


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
@pytest.mark.parametrize("document", [SPREAD, INLINE], ids=["spread", "inline"])
async def test_subscriptions_through_fragments_deliver_and_share_a_group(
    graphql_server, wiring, make_token, course_id, protocol, document
):
    """Fragments at the root of a subscription are resolved as graphql-core's execution does;
    two such subscriptions in different courses still share their fan-out key."""
    start = "subscribe" if protocol == TRANSPORT_WS else "start"
    result = "next" if protocol == TRANSPORT_WS else "data"
    other_course = f"{course_id}-2"
    token = make_token("alice", [course_id, other_course])
    send = "mutation($c: ID!, $t: String!) { sendMessage(courseId: $c, content: $t) { messageId } }"
    async with (
        raw_socket(graphql_server.ws_url, protocol) as ws,
        raw_socket(graphql_server.ws_url, protocol) as elsewhere,
        aiohttp.ClientSession() as http,
    ):
        for socket_, course in ((ws, course_id), (elsewhere, other_course)):
            await socket_.send_json(
                {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
            )
            assert (await next_json(socket_))["type"] == "connection_ack"
            await socket_.send_json(
                {
                    "id": "f",
                    "type": start,
                    "payload": {"query": document, "variables": {"c": course}},
                }
            )

        async def post(course: str, text: str) -> str:
            async with http.post(
                graphql_server.url,
                json={"query": send, "variables": {"c": course, "t": text}},
                headers={"Authorization": f"Bearer {token}"},
            ) as response:
                return str((await response.json())["data"]["sendMessage"]["messageId"])

        async def added(socket_: aiohttp.ClientWebSocketResponse, within: float) -> dict[str, Any]:
            """The next result on `socket_` (skipping a legacy socket's `ka`)."""
            while True:
                message = (await socket_.receive(timeout=within)).json()
                if message["type"] != "ka":
                    assert message["type"] == result, message
                    return message

        for socket_, course in ((ws, course_id), (elsewhere, other_course)):
            for _ in range(60):  # probes until one arrives: the subscription is live
                await post(course, "probe")
                with contextlib.suppress(TimeoutError):
                    await added(socket_, within=0.5)
                    break
            else:
                raise AssertionError("the subscription never went live")
        sent = await post(course_id, "through a fragment")
        message = await added(ws, within=20)
        while message["payload"]["data"]["messageAdded"]["messageId"] != sent:  # late probes
            message = await added(ws, within=20)
        assert message == {
            "id": "f",
            "type": result,
            "payload": {
                "data": {"messageAdded": {"messageId": sent, "content": "through a fragment"}}
            },
        }
        # One fan-out group in each course's upstream, under one key.
        courses = wiring.upstream.courses()
        assert {course_id, other_course} <= set(courses)
        groups = [courses[course].groups for course in (course_id, other_course)]
        assert len(groups[0]) == len(groups[1]) == 1
        assert groups[0].keys() == groups[1].keys()


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ({}, "missing token"),
        ({"authorization": "Bearer not-a-token"}, "invalid token"),
    ],
)
@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_bad_tokens_are_refused_with_4403(graphql_server, protocol, payload, words):
    async with raw_socket(graphql_server.ws_url, protocol) as ws:
        await ws.send_json({"type": "connection_init", "payload": payload})
        if protocol == LEGACY_WS:
            error = await next_json(ws)
            assert error["type"] == "connection_error"
            assert words in error["payload"]["message"]
        code, reason = await close_code(ws)
        assert code == 4403
        assert words in reason


async def test_expired_token_is_refused(graphql_server, make_token, course_id):
    expired = make_token("alice", [course_id], ttl_seconds=-60)
    async with raw_socket(graphql_server.ws_url) as ws:
        await ws.send_json({"type": "connection_init", "payload": {"authorization": expired}})
        code, reason = await close_code(ws)
        assert code == 4403
        assert "expired" in reason


async def test_token_from_the_upgrade_request(graphql_server, token):
    for kw in (
        {"headers": {"Authorization": f"Bearer {token}"}},
        {"params": {"access_token": token}},
    ):
        async with raw_socket(graphql_server.ws_url, **kw) as ws:
            await ws.send_json({"type": "connection_init"})
            assert await next_json(ws) == {"type": "connection_ack"}


async def test_a_token_that_expires_ends_the_socket(graphql_server, make_token, course_id):
    short = make_token("alice", [course_id], ttl_seconds=2)
    async with raw_socket(graphql_server.ws_url) as ws:
        await ready(ws, short)
        await ws.send_json(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": ADDED, "variables": {"c": course_id}},
            }
        )
        code, reason = await close_code(ws)
        assert code == 4403
        assert "expired" in reason


async def test_no_subprotocol_is_refused(graphql_server):
    async with raw_socket(graphql_server.ws_url, protocol=None) as ws:
        assert (await close_code(ws))[0] == 4406


async def test_oversized_frame_closes_with_1009(graphql_server, wiring, token):
    async with raw_socket(graphql_server.ws_url) as ws:
        await ready(ws, token)
        too_large = wiring.settings.max_frame_bytes + 10
        await ws.send_str('{"type": "ping", "payload": {"x": "' + "x" * too_large + '"}}')
        assert (await close_code(ws))[0] == 1009
    await still_serving(graphql_server.ws_url, token)


async def test_connection_init_timeout(graphql_settings_factory, token):
    server = await start_graphql_server(
        graphql_settings_factory(connection_init_timeout_seconds=0.3)
    )
    try:
        async with raw_socket(server.ws_url) as ws:
            code, reason = await close_code(ws)
            assert code == 4408
            assert "timeout" in reason
    finally:
        await server.runner.cleanup()


@pytest.mark.parametrize(
    ("query", "variables", "words"),
    [
        ("subscription { messageAdded(courseId: ", {}, "Syntax Error"),
        ("{ nope }", {}, "Cannot query field 'nope'"),
        ("subscription { messageAdded { messageId } }", {}, "courseId"),
        (ADDED, {"c": "someone-elses-course"}, "not in course"),
        (ADDED, {"c": "bad course!"}, "course id"),
        ("{ me { userId } " + " " * 9000 + "}", {}, "larger than"),
        (
            'subscription { messageAdded(courseId: "c") @skip(if: true) { messageId } }',
            {},
            "exactly one field",
        ),
        (
            'subscription($s: Boolean!) { messageAdded(courseId: "c") @skip(if: $s) '
            "{ messageId } }",
            {"s": False},
            "runtime value",
        ),
        (
            "query { me { ...A } } fragment A on Viewer { ...B } fragment B on Viewer { ...A }",
            {},
            "cannot spread fragment",
        ),
    ],
    ids=[
        "syntax",
        "unknown-field",
        "missing-arg",
        "forbidden",
        "bad-course",
        "too-big",
        "skipped-root",
        "skip-variable-at-root",
        "cycle",
    ],
)
async def test_bad_operations_get_errors_and_the_socket_stays(
    graphql_server, token, course_id, query, variables, words
):
    async with raw_socket(graphql_server.ws_url) as ws:
        await ready(ws, token)
        await ws.send_json(
            {"id": "bad", "type": "subscribe", "payload": {"query": query, "variables": variables}}
        )
        error = await next_json(ws)
        assert error["type"] == "error"
        assert error["id"] == "bad"
        assert words.lower() in error["payload"][0]["message"].lower()
        assert error["payload"][0]["extensions"]["code"] in ("BAD_USER_INPUT", "FORBIDDEN")
        # The id is free again and the socket works.
        await ws.send_json(
            {"id": "bad", "type": "subscribe", "payload": {"query": "{ me { userId } }"}}
        )
        assert await next_json(ws) == {
            "id": "bad",
            "type": "next",
            "payload": {"data": {"me": {"userId": "alice"}}},
        }
        assert await next_json(ws) == {"id": "bad", "type": "complete"}


async def test_query_depth_limit(graphql_settings_factory, token):
    server = await start_graphql_server(graphql_settings_factory(max_query_depth=2))
    try:
        async with raw_socket(server.ws_url) as ws:
            await ready(ws, token)
            deep = "query($c: ID!) { messages(courseId: $c) { messages { messageId } } }"
            await ws.send_json(
                {
                    "id": "d",
                    "type": "subscribe",
                    "payload": {"query": deep, "variables": {"c": "x"}},
                }
            )
            error = await next_json(ws)
            assert "nested 3 levels deep; the limit is 2" in error["payload"][0]["message"]
    finally:
        await server.runner.cleanup()


async def test_operations_per_socket_are_limited(graphql_settings_factory, token, course_id):
    server = await start_graphql_server(graphql_settings_factory(max_operations_per_socket=3))
    try:
        async with raw_socket(server.ws_url) as ws:
            await ready(ws, token)
            for n in range(4):
                await ws.send_json(
                    {
                        "id": str(n),
                        "type": "subscribe",
                        "payload": {"query": ADDED, "variables": {"c": course_id}},
                    }
                )
            error = await next_json(ws)
            assert error["id"] == "3"
            assert error["payload"][0]["extensions"]["code"] == "RATE_LIMITED"
            await ws.send_json({"id": "0", "type": "complete"})
            await ws.send_json(
                {
                    "id": "4",
                    "type": "subscribe",
                    "payload": {"query": ADDED, "variables": {"c": course_id}},
                }
            )
            await ws.send_json({"type": "ping"})
            assert await next_json(ws) == {"type": "pong"}  # "4" was accepted: no error first
    finally:
        await server.runner.cleanup()


async def test_http_guards(graphql_server, wiring, token, make_token):
    url = graphql_server.url
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=b"{not json", headers=auth) as response:
            assert response.status == 400
            assert (await response.json())["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        too_large = wiring.settings.max_body_bytes + 10
        async with http.post(url, data=b"x" * too_large, headers=auth) as response:
            assert response.status == 413
        async with http.post(
            url, json={"query": "{ me { userId } }"}, headers={"Authorization": "Bearer bad"}
        ) as response:
            assert response.status == 401
            assert (await response.json())["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        async with http.post(url, json={"query": "{ me { userId } }"}) as response:
            body = await response.json()
            assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        async with http.post(
            url, json={"query": ADDED, "variables": {"c": "x"}}, headers=auth
        ) as response:
            assert response.status == 400
            assert "WebSocket" in (await response.json())["errors"][0]["message"]
        async with http.post(
            url, json={"query": "{ me { userId } }", "variables": [1]}, headers=auth
        ) as response:
            assert response.status == 400
        async with http.get(url) as response:
            assert response.status == 405
        async with http.post(url, json={"query": "{ me { userId } }"}, headers=auth) as response:
            assert await response.json() == {"data": {"me": {"userId": "alice"}}}
        for path, expected in (("/healthz", 200), ("/readyz", 200)):
            async with http.get(url.replace("/graphql", path)) as response:
                assert response.status == expected


def small_receive_buffer() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


async def test_slow_consumer_is_cut_with_4008_while_a_fast_one_keeps_up(
    graphql_settings_factory, token, course_id
):
    server = await start_graphql_server(graphql_settings_factory(socket_buffer_bytes=65_536))
    fast = await Subscriber.message_added(server.ws_url, token, course_id).start()
    connector = aiohttp.TCPConnector(socket_factory=lambda _addr: small_receive_buffer())
    send = "mutation($c: ID!, $t: String!) { sendMessage(courseId: $c, content: $t) { messageId } }"
    try:
        async with raw_socket(server.ws_url, connector=connector) as slow:
            await ready(slow, token)
            await slow.send_json(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": ADDED, "variables": {"c": course_id}},
                }
            )
            sent: list[int] = []
            async with aiohttp.ClientSession() as http:

                async def probe() -> int:
                    async with http.post(
                        server.url,
                        json={"query": send, "variables": {"c": course_id, "t": "probe"}},
                        headers={"Authorization": f"Bearer {token}"},
                    ) as response:
                        return int((await response.json())["data"]["sendMessage"]["messageId"])

                await fast.until_live(probe)
            # The slow socket never reads: once its unsent bytes pass 64 KiB it is cut.
            async with aiohttp.ClientSession() as http:
                while not server.wiring.metrics.slow_consumer_closes._value.get():
                    assert len(sent) < 5000, "the slow socket was never cut off"
                    async with http.post(
                        server.url,
                        json={
                            "query": send,
                            "variables": {"c": course_id, "t": f"{len(sent)} " + "x" * 3000},
                        },
                        headers={"Authorization": f"Bearer {token}"},
                    ) as response:
                        sent.append(
                            int((await response.json())["data"]["sendMessage"]["messageId"])
                        )
            await fast.has_ids(sent)
            assert fast.ids[-len(sent) :] == sent
            code, reason = await close_code(slow)
            assert code == 4008
            assert "after" in reason
            assert server.wiring.metrics.slow_consumer_closes._value.get() == 1
    finally:
        await fast.close()
        await server.runner.cleanup()


async def test_graceful_shutdown_closes_sockets_with_1012(
    graphql_settings_factory, token, course_id
):
    server = await start_graphql_server(graphql_settings_factory())
    subscriber = await Subscriber.message_added(server.ws_url, token, course_id).start()
    try:
        await server.runner.cleanup()
        await subscriber.ended(within=10)
        assert subscriber.close_code == 1012
    finally:
        await subscriber.close()


@pytest.mark.parametrize(("protocol", "keepalive"), [(TRANSPORT_WS, "ping"), (LEGACY_WS, "ka")])
async def test_keepalive_messages(graphql_settings_factory, token, protocol, keepalive):
    server = await start_graphql_server(graphql_settings_factory(keepalive_seconds=0.2))
    try:
        async with raw_socket(server.ws_url, protocol) as ws:
            await ws.send_json(
                {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
            )
            assert await next_json(ws) == {"type": "connection_ack"}
            seen = {(await next_json(ws, keepalives=True))["type"] for _ in range(3)}
            assert seen == {keepalive}
    finally:
        await server.runner.cleanup()
