"""Bad input gets the right status code and a readable message, and nothing is stored."""

from __future__ import annotations

import time

import grpc
import pytest

from nextcampus_common.auth import issue_token
from nextcampus_common.chat_api import ChatClient
from nextcampus_common.keys import CourseKeys
from nextcampus_common.proto.chat.v1 import chat_pb2

INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def assert_rejected(call, code: grpc.StatusCode, words: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as rejected:
        await call
    assert rejected.value.code() == code, rejected.value.details()
    assert words in (rejected.value.details() or "")


def assert_nothing_stored(cluster_client, course_id: str) -> None:
    keys = CourseKeys(course_id)
    assert cluster_client.zcard(keys.messages) == 0
    assert cluster_client.get(keys.seq) is None


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("", "must not be empty"),
        ("   \n\t ", "must not be empty"),
        ("x" * 4001, "limit of 4000 characters"),
        # Characters, not bytes: 4000 three-byte characters fit, 4001 do not.
        ("€" * 4001, "limit of 4000 characters"),
        ("x" * 16_001, "longer than 16000 characters"),
    ],
)
async def test_bad_content_is_rejected_and_not_stored(
    client_for, course_id, cluster_client, content, words
):
    alice = client_for("alice", [course_id])
    await assert_rejected(alice.send(course_id, content), INVALID, words)
    assert_nothing_stored(cluster_client, course_id)


async def test_content_at_the_limit_is_accepted(client_for, course_id):
    alice = client_for("alice", [course_id])
    message = (await alice.send(course_id, "€" * 4000)).message
    assert message.content == "€" * 4000


@pytest.mark.parametrize(
    ("content", "code_point", "position"),
    [
        # Set the terminal's title, then wipe the line: what `chatctl tail` would have run.
        ("hello\x1b]0;pwned\x07", "U+001B", 5),
        ("line one\r\x1b[2Kfake line", "U+000D", 8),
        ("\x00", "U+0000", 0),
        ("bell\x07", "U+0007", 4),
        ("delete\x7f", "U+007F", 6),
        # C1: CSI, the one-character form of ESC [.
        ("c1 \x9b31m red", "U+009B", 3),
    ],
    ids=["esc", "carriage-return", "nul", "bel", "del", "c1-csi"],
)
async def test_control_characters_are_refused_naming_the_first(
    client_for, course_id, cluster_client, content, code_point, position
):
    alice = client_for("alice", [course_id])
    await assert_rejected(
        alice.send(course_id, content),
        INVALID,
        f"content contains the control character {code_point} at position {position}",
    )
    assert_nothing_stored(cluster_client, course_id)


async def test_newline_tab_and_bidi_controls_are_stored_as_sent(client_for, course_id):
    """Right-to-left text needs the bidi controls; newline and tab are text."""
    alice = client_for("alice", [course_id])
    content = "first line\n\tindented\n\u202bשלום\u202c and \u2067עברית\u2069 \u202eevil"
    assert (await alice.send(course_id, content)).message.content == content
    assert [m.content for m in (await alice.history(course_id)).messages] == [content]


async def test_course_not_in_the_token_is_forbidden(client_for, course_id, cluster_client):
    outsider = client_for("mallory", ["another-course"])
    denied = grpc.StatusCode.PERMISSION_DENIED
    await assert_rejected(outsider.send(course_id, "hi"), denied, "not in course")
    await assert_rejected(outsider.history(course_id), denied, "not in course")
    await assert_rejected(outsider.get(course_id, "1"), denied, "not in course")
    await assert_rejected(outsider.delete(course_id, "1"), denied, "not in course")
    stream = outsider.subscribe(course_id)
    await assert_rejected(stream.read(), denied, "not in course")
    assert_nothing_stored(cluster_client, course_id)


@pytest.mark.parametrize(
    ("token_for", "words"),
    [
        (lambda secret, course: "", "missing token"),
        (lambda secret, course: "not-a-jwt", "invalid token"),
        (
            lambda secret, course: issue_token(secret, "alice", [course], now=time.time() - 90_000),
            "expired",
        ),
        (
            lambda secret, course: issue_token(secret, "alice", [course], audience="other-app"),
            "another audience",
        ),
        (
            lambda secret, course: issue_token(secret, "alice", [course], issuer="someone-else"),
            "another issuer",
        ),
        (
            lambda secret, course: issue_token("x" * 40, "alice", [course]),
            "invalid token",
        ),
    ],
    ids=["missing", "garbage", "expired", "wrong-audience", "wrong-issuer", "wrong-key"],
)
async def test_bad_tokens_are_unauthenticated(
    chat_server, jwt_secret, course_id, cluster_client, token_for, words
):
    async with ChatClient(f"127.0.0.1:{chat_server.port}", token_for(jwt_secret, course_id)) as c:
        unauthenticated = grpc.StatusCode.UNAUTHENTICATED
        await assert_rejected(c.send(course_id, "hi"), unauthenticated, words)
        await assert_rejected(c.history(course_id), unauthenticated, words)
        await assert_rejected(c.subscribe(course_id).read(), unauthenticated, words)
    assert_nothing_stored(cluster_client, course_id)


async def test_oversized_and_malformed_ids_are_invalid(client_for, course_id, cluster_client):
    alice = client_for("alice", [course_id])
    await assert_rejected(alice.send("x" * 65, "hi"), INVALID, "course id")
    await assert_rejected(alice.send("bad course!", "hi"), INVALID, "course id")
    await assert_rejected(alice.send(course_id, "hi", "c" * 129), INVALID, "client message id")
    await assert_rejected(alice.send(course_id, "hi", "has space"), INVALID, "client message id")
    await assert_rejected(alice.get(course_id, "1" * 20), INVALID, "message id")
    await assert_rejected(alice.get(course_id, "abc"), INVALID, "message id")
    await assert_rejected(alice.history(course_id, before="-1"), INVALID, "message id")
    await assert_rejected(alice.history(course_id, limit=100_000), INVALID, "limit")
    await assert_rejected(alice.subscribe(course_id, "0x10").read(), INVALID, "message id")
    # Ids come from the Redis clock in microseconds: one past it was never handed out.
    past_the_clock = str(10**18)
    await assert_rejected(alice.subscribe(course_id, past_the_clock).read(), INVALID, "ahead of")
    await assert_rejected(alice.history(course_id, after=past_the_clock), INVALID, "ahead of")
    assert_nothing_stored(cluster_client, course_id)


async def test_oversized_request_is_refused_and_the_server_keeps_serving(client_for, course_id):
    alice = client_for("alice", [course_id])
    await assert_rejected(
        alice.send(course_id, "x" * 300_000), grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than"
    )
    assert (await alice.send(course_id, "still here")).message.content == "still here"


async def test_unknown_fields_are_ignored_and_malformed_bytes_are_rejected(
    chat_server, make_token, course_id
):
    """Raw bytes on the wire: a newer client's unknown field is skipped (proto3 rules);
    bytes that are not a message get INVALID_ARGUMENT, and the server goes on."""
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{chat_server.port}")
    metadata = (("authorization", f"Bearer {make_token('alice', [course_id])}"),)
    send = channel.unary_unary(
        "/chat.v1.ChatService/SendMessage",
        request_serializer=None,
        response_deserializer=chat_pb2.SendMessageResponse.FromString,
    )
    try:
        request = chat_pb2.SendMessageRequest(course_id=course_id, content="hi").SerializeToString()
        unknown_field_99 = b"\x9a\x06\x03abc"  # field 99, length-delimited "abc"
        response = await send(request + unknown_field_99, metadata=metadata, timeout=10)
        assert response.message.content == "hi"
        with pytest.raises(grpc.aio.AioRpcError) as broken:
            await send(b"\xff\xff\xff", metadata=metadata, timeout=10)
        assert broken.value.code() == INVALID
        assert "not a valid chat.v1.SendMessageRequest" in (broken.value.details() or "")
        stream = channel.unary_stream(
            "/chat.v1.ChatService/SubscribeMessages",
            request_serializer=None,
            response_deserializer=chat_pb2.ChatMessage.FromString,
        )
        await assert_rejected(
            stream(b"\x0a\xff", metadata=metadata, timeout=10).read(), INVALID, "not a valid"
        )
        response = await send(request, metadata=metadata, timeout=10)
        assert response.message.content == "hi"
    finally:
        await channel.close()


async def test_read_only_course_refuses_sends(client_for, course_id, cluster_client):
    cluster_client.hset(CourseKeys(course_id).policy, "read_only", "1")
    alice = client_for("alice", [course_id])
    await assert_rejected(
        alice.send(course_id, "hi"), grpc.StatusCode.FAILED_PRECONDITION, "read-only"
    )
    assert_nothing_stored(cluster_client, course_id)
    assert (await alice.history(course_id)).messages == []
