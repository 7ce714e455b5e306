"""The events of `course:{c}:events` survive encoding and decoding whole (what the Lua
scripts publish is checked against a real Redis Cluster in services/chat/tests)."""

from __future__ import annotations

import orjson
import pytest

from nextcampus_common.events import EVENT_OVERHEAD_BYTES, CourseEvent, decode_event, encode_event
from nextcampus_common.proto.chat.v1.chat_pb2 import ChatMessage

ADDED = ChatMessage(
    course_id="cs101",
    message_id="1764068523000002",
    user_id="ann",
    content="héllo",
    timestamp=1764068523000,
    client_message_id="cm-1",
    previous_message_id="1764068523000001",
)
TOMBSTONE = ChatMessage(
    course_id="cs101",
    message_id="1764068523000002",
    user_id="ann",
    timestamp=1764068523000,
    deleted=True,
    client_message_id="cm-1",
    previous_message_id="1764068523000001",
)


@pytest.mark.parametrize(
    "event",
    [
        CourseEvent.from_message(ADDED),
        CourseEvent.from_message(
            ChatMessage(course_id="c", message_id="1", user_id="u", content="x")
        ),
        CourseEvent.from_message(TOMBSTONE),
        CourseEvent.from_message(TOMBSTONE, retracted=True),
        # A writer from before `p`: no previous id at all.
        CourseEvent(
            ChatMessage(course_id="c", message_id="7", user_id="u", content="x"), prev=None
        ),
    ],
)
def test_decode_reads_what_encode_writes(event):
    assert decode_event(encode_event(event)) == event


def test_fields_of_a_retraction():
    fields = orjson.loads(encode_event(CourseEvent.from_message(TOMBSTONE, retracted=True)))
    assert fields == {
        "k": "d",
        "c": "cs101",
        "i": "1764068523000002",
        "u": "ann",
        "b": "",
        "t": "1764068523000",
        "m": "cm-1",
        "p": "1764068523000001",
        "r": 1,
    }


def test_an_event_costs_its_content_bytes_and_the_overhead():
    assert CourseEvent.from_message(ADDED).size_bytes == EVENT_OVERHEAD_BYTES + len(
        "héllo".encode()
    )
