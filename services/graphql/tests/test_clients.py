"""The API through real third-party clients: gql over HTTP and over both WebSocket
subprotocols (the npm graphql-ws client is in test_graphql_ws_npm.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from gql import GraphQLRequest
from gql.transport.exceptions import TransportQueryError

from nextcampus_graphql.connection import LEGACY_WS, TRANSPORT_WS

SEND = """mutation Send($c: ID!, $t: String!, $k: ID) {
  sendMessage(courseId: $c, content: $t, clientMessageId: $k) {
    courseId messageId userId content timestamp deleted
  }
}"""
DELETE = """mutation Delete($c: ID!, $m: ID!) {
  deleteMessage(courseId: $c, messageId: $m) { messageId deleted content }
}"""
ADDED = """subscription Added($c: ID!, $after: ID) {
  messageAdded(courseId: $c, after: $after) { messageId userId content deleted }
}"""
DELETED = "subscription($c: ID!) { messageDeleted(courseId: $c) { messageId deleted } }"
HISTORY = """query($c: ID!, $before: ID, $after: ID, $limit: Int) {
  messages(courseId: $c, before: $before, after: $after, limit: $limit) {
    messages { messageId content } hasMore
  }
}"""


def q(document: str, **variables: Any) -> GraphQLRequest:
    return GraphQLRequest(document, variable_values=variables or None)


async def test_queries_and_mutations_over_http(http_client, course_id):
    async with http_client("alice", [course_id]) as alice:
        sent = (await alice.execute(q(SEND, c=course_id, t="hi")))["sendMessage"]
        assert (sent["courseId"], sent["userId"], sent["content"]) == (course_id, "alice", "hi")
        assert sent["timestamp"].endswith("+00:00")
        assert not sent["deleted"]
        again = await alice.execute(q(SEND, c=course_id, t="second", k="key-1"))
        retried = await alice.execute(q(SEND, c=course_id, t="second", k="key-1"))
        assert retried == again  # the same message, not a copy

        page = await alice.execute(q(HISTORY, c=course_id))
        ids = [m["messageId"] for m in page["messages"]["messages"]]
        assert ids == [sent["messageId"], again["sendMessage"]["messageId"]]
        older = await alice.execute(q(HISTORY, c=course_id, before=ids[1], limit=1))
        assert older["messages"] == {
            "messages": [{"messageId": ids[0], "content": "hi"}],
            "hasMore": False,
        }

        one = "query($c: ID!, $m: ID!) { message(courseId: $c, messageId: $m) { content } }"
        assert await alice.execute(q(one, c=course_id, m=ids[0])) == {"message": {"content": "hi"}}
        assert await alice.execute(q(one, c=course_id, m="999")) == {"message": None}

        me = await alice.execute(q("{ me { userId courseIds moderates } }"))
        assert me == {"me": {"userId": "alice", "courseIds": [course_id], "moderates": []}}
        policy = "query($c: ID!) { coursePolicy(courseId: $c) { ttlSeconds maxLength readOnly } }"
        assert await alice.execute(q(policy, c=course_id)) == {
            "coursePolicy": {"ttlSeconds": 86400, "maxLength": 4000, "readOnly": False}
        }

        deleted = await alice.execute(q(DELETE, c=course_id, m=ids[0]))
        assert deleted == {"deleteMessage": {"messageId": ids[0], "deleted": True, "content": ""}}


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_subscription_query_and_mutation_over_websocket(ws_session, course_id, protocol):
    alice = await ws_session("alice", [course_id], protocol)
    bob = await ws_session("bob", [course_id], protocol)
    received: list[dict[str, Any]] = []
    deleted: list[dict[str, Any]] = []

    async def collect(document: str, into: list[dict[str, Any]], count: int) -> None:
        async for result in bob.subscribe(q(document, c=course_id)):
            into.append(result)
            if len(into) == count:
                return

    watching = asyncio.create_task(collect(ADDED, received, 4))
    watching_deletes = asyncio.create_task(collect(DELETED, deleted, 1))
    # The subscription is live once a probe sent after it arrives.
    while not received:
        await alice.execute(q(SEND, c=course_id, t="probe"))
        await asyncio.sleep(0.05)
    first = int(received[0]["messageAdded"]["messageId"])
    sent = [(await alice.execute(q(SEND, c=course_id, t=f"m{i}")))["sendMessage"] for i in range(3)]
    await asyncio.wait_for(watching, 20)
    ids = [int(r["messageAdded"]["messageId"]) for r in received]
    assert ids == sorted(set(ids))  # in order, none twice
    assert ids[0] == first
    assert ids[-3:] == [int(m["messageId"]) for m in sent]
    assert [r["messageAdded"]["content"] for r in received[-3:]] == ["m0", "m1", "m2"]
    assert {r["messageAdded"]["userId"] for r in received} == {"alice"}

    await alice.execute(q(DELETE, c=course_id, m=sent[0]["messageId"]))
    await asyncio.wait_for(watching_deletes, 20)
    assert deleted == [{"messageDeleted": {"messageId": sent[0]["messageId"], "deleted": True}}]

    history = await bob.execute(q(HISTORY, c=course_id))
    assert [m["content"] for m in history["messages"]["messages"]][-2:] == ["m1", "m2"]


async def test_errors_carry_codes(http_client, course_id):
    async with http_client("mallory", ["elsewhere"]) as mallory:
        with pytest.raises(TransportQueryError) as forbidden:
            await mallory.execute(q(SEND, c=course_id, t="hi"))
        assert forbidden.value.errors[0]["extensions"]["code"] == "FORBIDDEN"
    async with http_client("alice", [course_id]) as alice:
        for variables, code in [
            ({"c": course_id, "t": "   "}, "BAD_USER_INPUT"),
            ({"c": course_id, "t": "x" * 4001}, "BAD_USER_INPUT"),
            ({"c": "bad course!", "t": "hi"}, "BAD_USER_INPUT"),
            ({"c": course_id, "t": "hi", "k": "has space"}, "BAD_USER_INPUT"),
        ]:
            with pytest.raises(TransportQueryError) as failed:
                await alice.execute(q(SEND, **variables))
            assert failed.value.errors[0]["extensions"]["code"] == code, variables


async def test_control_characters_are_bad_user_input_and_nothing_is_stored(http_client, course_id):
    async with http_client("alice", [course_id]) as alice:
        with pytest.raises(TransportQueryError) as refused:
            await alice.execute(q(SEND, c=course_id, t="title\x1b]0;pwned\x07"))
        (error,) = refused.value.errors
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert "control character U+001B at position 5" in error["message"]
        page = await alice.execute(q(HISTORY, c=course_id))
        assert page["messages"]["messages"] == []
        # Bidi controls are right-to-left text's, and stored.
        rtl = "\u202bמה נשמע?\u202c"
        assert (await alice.execute(q(SEND, c=course_id, t=rtl)))["sendMessage"]["content"] == rtl


async def test_mutations_of_one_socket_are_stored_in_the_order_sent(graphql_server, token_for):
    """Sent without waiting for each answer, a socket's messages keep their order."""
    import aiohttp

    course_id, token = token_for("alice")
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(graphql_server.ws_url, protocols=[TRANSPORT_WS]) as ws,
    ):
        await ws.send_json({"type": "connection_init", "payload": {"authorization": token}})
        assert (await ws.receive_json(timeout=20))["type"] == "connection_ack"
        for n in range(50):
            await ws.send_json(
                {
                    "id": str(n),
                    "type": "subscribe",
                    "payload": {"query": SEND, "variables": {"c": course_id, "t": str(n)}},
                }
            )
        ids: dict[str, int] = {}
        while len(ids) < 50:
            message = await ws.receive_json(timeout=20)
            if message["type"] == "next":
                ids[message["id"]] = int(message["payload"]["data"]["sendMessage"]["messageId"])
    assert [ids[str(n)] for n in range(50)] == sorted(ids.values())
