"""History and resume at the CRD's maximum message length: 16,000 characters of 4-byte
UTF-8 (64 KB a message). 70 of them are more than gRPC's default 4 MiB limit, so a page of
200 must be cut by bytes and the reader pages on — over gRPC and GraphQL, for history and
for `after` replays."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from nextcampus_common.chat_api import ChatClient
from nextcampus_common.keys import CourseKeys
from testing.plugin import Collector

MAX_LENGTH = 16_000  # the CRD's largest maxMessageLength
COUNT = 70
PAGE_BYTES = 1_048_576  # history_page_bytes' default


def content(n: int) -> str:
    return f"{n:03d}" + "😀" * (MAX_LENGTH - 3)


@pytest.fixture
async def large_course(client_for, cluster_client, course_id) -> tuple[ChatClient, list[str]]:
    """The course's policy allows the CRD's maximum length; 70 such messages sent."""
    cluster_client.hset(CourseKeys(course_id).policy, "max_length", MAX_LENGTH)
    alice = client_for("alice", [course_id])
    ids = []
    for n in range(COUNT):
        ids.append((await alice.send(course_id, content(n))).message.message_id)
    return alice, ids


async def test_history_pages_are_cut_by_bytes_and_page_on(large_course, course_id):
    alice, ids = large_course
    largest = len(content(0).encode())

    # Newest first, paging back with `before`, as the web page loads older messages.
    backward: list[str] = []
    before = None
    while True:
        page = await alice.history(course_id, before=before, limit=200)
        assert page.messages
        assert sum(len(m.content.encode()) for m in page.messages) <= PAGE_BYTES + largest
        backward = [m.message_id for m in page.messages] + backward
        if not page.has_more:
            break
        before = page.messages[0].message_id
    assert backward == ids

    # Forward with `after`, as a resume reads.
    forward: list[str] = []
    after = ids[0]
    while True:
        page = await alice.history(course_id, after=after, limit=200)
        assert sum(len(m.content.encode()) for m in page.messages) <= PAGE_BYTES + largest
        forward += [m.message_id for m in page.messages]
        if not page.has_more:
            break
        after = page.messages[-1].message_id
    assert forward == ids[1:]
    assert [
        m.content for m in (await alice.history(course_id, after=ids[-2], limit=5)).messages
    ] == [content(COUNT - 1)]


async def test_resuming_after_the_first_replays_all_of_them(large_course, course_id):
    alice, ids = large_course
    collector = Collector(alice.subscribe(course_id, ids[0]))
    try:
        await collector.has_ids([int(i) for i in ids[1:]], within=60)
        assert [m.message_id for m in collector.messages] == ids[1:]
        assert collector.messages[-1].content == content(COUNT - 1)
    finally:
        await collector.close()


HISTORY = """query($c: ID!, $after: ID) {
  messages(courseId: $c, after: $after, limit: 200) { messages { messageId content } hasMore }
}"""
SEND = "mutation($c: ID!, $t: String!) { sendMessage(courseId: $c, content: $t) { messageId } }"
ADDED = """subscription($c: ID!, $after: ID) {
  messageAdded(courseId: $c, after: $after) { messageId }
}"""


async def test_graphql_history_and_replay_of_the_largest_messages(
    large_course, graphql_server, make_token, course_id
):
    _, ids = large_course
    headers = {"Authorization": f"Bearer {make_token('bob', [course_id])}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        # Sending one at the maximum length works over HTTP (a body of 64 KB and more).
        async with http.post(
            graphql_server.url,
            json={"query": SEND, "variables": {"c": course_id, "t": content(99)}},
        ) as response:
            body = await response.json()
        assert "errors" not in body, body
        ids.append(body["data"]["sendMessage"]["messageId"])

        seen: list[str] = []
        after = ids[0]
        while True:
            variables = {"c": course_id, "after": after}
            async with http.post(
                graphql_server.url, json={"query": HISTORY, "variables": variables}
            ) as response:
                body = await response.json()
            assert "errors" not in body, body["errors"]
            page = body["data"]["messages"]
            seen += [m["messageId"] for m in page["messages"]]
            if not page["hasMore"]:
                break
            after = seen[-1]
        assert seen == ids[1:]

        async with http.ws_connect(graphql_server.ws_url, protocols=["graphql-transport-ws"]) as ws:
            await ws.send_json({"type": "connection_init", "payload": headers})
            assert (await ws.receive_json(timeout=20))["type"] == "connection_ack"
            await ws.send_json(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": ADDED, "variables": {"c": course_id, "after": ids[0]}},
                }
            )
            replayed: list[str] = []
            async with asyncio.timeout(60):
                while len(replayed) < len(ids) - 1:
                    message = await ws.receive_json()
                    assert message["type"] in ("next", "ping"), message
                    if message["type"] == "next":
                        replayed.append(message["payload"]["data"]["messageAdded"]["messageId"])
            assert replayed == ids[1:]
