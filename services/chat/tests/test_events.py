"""The event format of `course:{c}:events` (nextcampus_common.events) is what the Lua scripts
publish: each script's event, read from a real Redis Cluster, decodes to the message the
store returned, and `encode_event` builds the very same JSON object."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from nextcampus_common.events import CourseEvent, decode_event, encode_event
from nextcampus_common.keys import CourseKeys
from nextcampus_common.proto.chat.v1.chat_pb2 import ChatMessage, MessageKind


@pytest.fixture
async def published(chat_server: Any, course_id: str) -> AsyncIterator[AsyncIterator[bytes]]:
    """The raw payloads published on the course's events channel, as a sharded subscriber
    on the primary that owns the channel reads them."""
    redis = chat_server.redis
    channel = CourseKeys(course_id).events
    node = redis.node_for(channel)
    pubsub = redis.new_node_client(node.host, int(node.port)).pubsub()
    await pubsub.ssubscribe(channel)

    async def payloads() -> AsyncIterator[bytes]:
        async for message in pubsub.listen():
            if message["type"] == "smessage":
                yield message["data"]

    yield payloads()
    await pubsub.aclose()


async def next_event(published: AsyncIterator[bytes]) -> tuple[CourseEvent, dict[str, Any]]:
    async with asyncio.timeout(20):
        payload = await anext(published)
    return decode_event(payload), orjson.loads(payload)


def assert_encodes_like_lua(event: CourseEvent, lua_json: dict[str, Any]) -> None:
    assert orjson.loads(encode_event(event)) == lua_json


async def test_send_delete_and_retract_publish_what_decode_event_reads(
    chat_server, course_id, published
):
    store = chat_server.store
    # The subscription is confirmed once a send from before it would have been read.
    first = (
        await store.send(
            course_id, "ann", "hello @bob @course", "cm-1", mentions=["bob"], mentions_course=True
        )
    ).message
    event, lua_json = await next_event(published)
    assert event == CourseEvent.from_message(first)
    assert (event.prev, event.retracted) == (0, False)  # the course's first message
    assert lua_json["k"] == "a"
    assert_encodes_like_lua(event, lua_json)

    content = 'zwei "Zeilen"\nmit ✓ und \u202e/'
    second = (await store.send(course_id, "bob", content, "cm-2")).message
    event, lua_json = await next_event(published)
    assert event == CourseEvent.from_message(second)
    assert event.message.content == content
    assert event.prev == int(first.message_id)
    assert_encodes_like_lua(event, lua_json)

    tombstone, changed = await store.delete(course_id, second.message_id, "bob", moderator=False)
    assert changed
    event, lua_json = await next_event(published)
    assert event == CourseEvent.from_message(tombstone)
    assert (event.message.deleted, event.message.content) == (True, "")
    assert (lua_json["k"], event.retracted) == ("d", False)
    assert_encodes_like_lua(event, lua_json)

    survivor = int(second.message_id)
    lost = ChatMessage(
        course_id=course_id,
        message_id=str(survivor + 1),
        user_id="ann",
        content="lost in a failover",
        timestamp=int(time.time() * 1000),
        client_message_id="cm-3",
    )
    retracted, collisions = await store.retract(course_id, survivor, [lost])
    assert (retracted, collisions) == (1, [])
    event, lua_json = await next_event(published)
    expected = ChatMessage(
        course_id=course_id,
        message_id=lost.message_id,
        user_id="ann",
        timestamp=lost.timestamp,
        deleted=True,
        client_message_id="cm-3",
        previous_message_id=str(survivor),
    )
    assert event == CourseEvent.from_message(expected, retracted=True)
    assert lua_json["r"] == 1
    assert_encodes_like_lua(event, lua_json)

    question = (await store.send(course_id, "ann", "a question?", "cm-4", question=True)).message
    event, lua_json = await next_event(published)
    assert event == CourseEvent.from_message(question)
    assert (lua_json["y"], event.message.kind) == ("q", MessageKind.MESSAGE_KIND_QUESTION)
    assert_encodes_like_lua(event, lua_json)
