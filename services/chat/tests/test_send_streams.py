"""SendMessages: many users' sends on one stream (what a GraphQL process sends for its
sockets), called through the generated stub as a third-party client would. Each send is
its own sender's, checked and answered exactly as SendMessage would be; a bad send is
refused alone and the stream goes on; bytes that do not parse end the stream with a clear
error and nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import grpc
import pytest

from nextcampus_chat.server import build_server
from nextcampus_common.chat_api import ChatApi
from nextcampus_common.keys import CourseKeys
from nextcampus_common.metadata import PROBLEM, RETRY_AFTER_MS, metadata_value
from nextcampus_common.proto.chat.v1 import chat_pb2, chat_pb2_grpc
from nextcampus_common.send_streams import failure_as_error


def streamed(
    sequence: int, token: str, course_id: str, content: str, **kw
) -> chat_pb2.StreamedSend:
    return chat_pb2.StreamedSend(
        sequence=sequence,
        authorization=f"Bearer {token}",
        send=chat_pb2.SendMessageRequest(course_id=course_id, content=content, **kw),
    )


async def send_all(
    port: int, sends: Iterable[chat_pb2.StreamedSend]
) -> dict[int, chat_pb2.StreamedSendResult]:
    """Every send on one stream (with no credentials of its own); the answers by sequence."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = chat_pb2_grpc.ChatServiceStub(channel).SendMessages(iter(list(sends)), timeout=20)
        answers = [result async for result in call]
    by_sequence = {answer.sequence: answer for answer in answers}
    assert len(by_sequence) == len(answers), "one answer per send"
    return by_sequence


async def test_one_stream_carries_many_users_sends_each_as_its_own_sender(
    chat_server, make_token, client_for, course_id
):
    tokens = {user: make_token(user, [course_id]) for user in ("alice", "bob")}
    sends = [
        streamed(i, tokens[user], course_id, f"{user} {i}")
        for i, user in enumerate(["alice", "bob"] * 20, start=1)
    ]
    answers = await send_all(chat_server.port, sends)

    assert sorted(answers) == list(range(1, 41))
    for send in sends:
        answer = answers[send.sequence]
        assert answer.WhichOneof("result") == "sent", answer
        assert answer.sent.message.content == send.send.content
        assert answer.sent.message.user_id == send.send.content.split()[0]
    page = await client_for("carol", [course_id]).history(course_id, limit=100)
    stored = {(m.user_id, m.content) for m in page.messages}
    assert stored == {(s.send.content.split()[0], s.send.content) for s in sends}


async def test_a_bad_send_is_refused_alone_as_send_message_refuses_it(
    chat_server, make_token, client_for, course_id, cluster_client
):
    """Each refusal is that send's answer, with the status, text and `chat-problem` a unary
    SendMessage call ends with; the sends around it are stored."""
    alice = make_token("alice", [course_id])
    outsider = make_token("mallory", ["another-course"])
    bad = {
        2: ("Bearer not-a-jwt", course_id, "hello"),
        3: (f"Bearer {outsider}", course_id, "let me in"),
        4: (f"Bearer {alice}", course_id, "   "),
        5: (f"Bearer {alice}", "NOT A COURSE", "hello"),
        6: ("", course_id, "no credentials"),
    }
    sends = [
        streamed(1, alice, course_id, "first"),
        *(
            chat_pb2.StreamedSend(
                sequence=sequence,
                authorization=authorization,
                send=chat_pb2.SendMessageRequest(course_id=course, content=content),
            )
            for sequence, (authorization, course, content) in bad.items()
        ),
        streamed(7, alice, course_id, "last"),
    ]
    answers = await send_all(chat_server.port, sends)

    assert answers[1].WhichOneof("result") == answers[7].WhichOneof("result") == "sent"
    assert cluster_client.zcard(CourseKeys(course_id).messages) == 2
    stub = chat_pb2_grpc.ChatServiceStub(client_for("alice", [course_id]).api.channel)
    for sequence, (authorization, course, content) in bad.items():
        failure = answers[sequence]
        assert failure.WhichOneof("result") == "failed", failure
        streamed_error = failure_as_error(failure.failed)
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            await stub.SendMessage(
                chat_pb2.SendMessageRequest(course_id=course, content=content),
                metadata=(("authorization", authorization),) if authorization else (),
                timeout=10,
            )
        assert streamed_error.code() == unary.value.code()
        assert streamed_error.details() == unary.value.details()
        assert metadata_value(streamed_error.trailing_metadata(), PROBLEM) == metadata_value(
            unary.value.trailing_metadata(), PROBLEM
        )
    codes = {sequence: failure_as_error(answers[sequence].failed).code() for sequence in bad}
    assert codes == {
        2: grpc.StatusCode.UNAUTHENTICATED,
        3: grpc.StatusCode.PERMISSION_DENIED,
        4: grpc.StatusCode.INVALID_ARGUMENT,
        5: grpc.StatusCode.INVALID_ARGUMENT,
        6: grpc.StatusCode.UNAUTHENTICATED,
    }


async def test_a_rate_limited_streamed_send_says_when_to_retry(
    chat_settings_factory, make_token, course_id
):
    server = build_server(chat_settings_factory(default_rate_limit_messages=1))
    await server.start()
    try:
        alice = make_token("alice", [course_id])
        answers = await send_all(
            server.port,
            [streamed(1, alice, course_id, "one"), streamed(2, alice, course_id, "two")],
        )
        failed = [a.failed for a in answers.values() if a.WhichOneof("result") == "failed"]
        assert len(failed) == 1, answers
        error = failure_as_error(failed[0])
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert metadata_value(error.trailing_metadata(), PROBLEM) == "rate_limited"
        assert int(metadata_value(error.trailing_metadata(), RETRY_AFTER_MS) or 0) > 0
    finally:
        await server.stop()


async def test_a_retried_streamed_send_is_stored_once(chat_server, make_token, course_id):
    alice = make_token("alice", [course_id])
    first = await send_all(
        chat_server.port, [streamed(1, alice, course_id, "once", client_message_id="cm-once")]
    )
    again = await send_all(
        chat_server.port, [streamed(1, alice, course_id, "once", client_message_id="cm-once")]
    )
    assert not first[1].sent.duplicate
    assert again[1].sent.duplicate
    assert again[1].sent.message.message_id == first[1].sent.message.message_id


async def test_bytes_that_do_not_parse_end_the_stream_with_invalid_argument(
    chat_server, client_for, course_id
):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{chat_server.port}") as channel:
        raw = channel.stream_stream(
            "/chat.v1.ChatService/SendMessages",
            request_serializer=None,
            response_deserializer=chat_pb2.StreamedSendResult.FromString,
        )
        call = raw(iter([b"\xff\xff\xff"]), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async for _ in call:
                pass
    assert ended.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid chat.v1.StreamedSend" in (ended.value.details() or "")
    # The process is fine: the next send is stored.
    assert not (await client_for("alice", [course_id]).send(course_id, "still here")).duplicate


async def test_sends_over_streams_answer_as_unary_calls_do(chat_server, make_token, course_id):
    """ChatApi with send streams (the GraphQL processes') and without: the same message
    stored, and the same error raised for a refusal, whichever way it went."""
    target = f"127.0.0.1:{chat_server.port}"
    token = make_token("alice", [course_id])
    streams, unary = ChatApi(target, send_streams=2), ChatApi(target)
    try:
        sent = await asyncio.gather(
            *(streams.send(token, course_id, f"streamed {i}") for i in range(10))
        )
        assert [s.message.content for s in sent] == [f"streamed {i}" for i in range(10)]
        errors = []
        for api in (streams, unary):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await api.send(token, course_id, "x" * 16_001)
            errors.append(refused.value)
        assert errors[0].code() == errors[1].code() == grpc.StatusCode.INVALID_ARGUMENT
        assert errors[0].details() == errors[1].details()
    finally:
        await streams.close()
        await unary.close()


async def test_a_send_after_its_stream_broke_goes_on_a_new_one(
    chat_settings_factory, make_token, course_id
):
    """The chat process behind a stream restarts: the next send finds the stream broken and
    goes on a new one (to the new process) instead of failing."""
    first = build_server(chat_settings_factory())
    await first.start()
    port = first.port
    api = ChatApi(f"127.0.0.1:{port}", send_streams=1, max_attempts=4)
    second = None
    try:
        token = make_token("alice", [course_id])
        assert (await api.send(token, course_id, "before")).message.content == "before"
        await first.stop()
        second = build_server(chat_settings_factory(grpc_port=port))
        await second.start()
        # Connected again first, so that the sends' retries need not outlast gRPC's
        # reconnect backoff on a busy machine: the stream is stale either way.
        await asyncio.wait_for(api.channel.channel_ready(), 20)
        after = await api.send(token, course_id, "after", deadline_seconds=20)
        assert after.message.content == "after"
    finally:
        await api.close()
        if second is not None:
            await second.stop()


async def test_a_chat_service_without_send_messages_gets_unary_sends(
    chat_server, make_token, course_id
):
    """A chat service of an older version (mid-upgrade) answers SendMessages UNIMPLEMENTED:
    ChatApi with send streams falls back to SendMessage calls, and the sends are stored. The
    older service is a gRPC server that has SendMessage only, forwarding it to the real one."""
    upstream = grpc.aio.insecure_channel(f"127.0.0.1:{chat_server.port}")
    send_message = upstream.unary_unary(
        "/chat.v1.ChatService/SendMessage", request_serializer=None, response_deserializer=None
    )

    async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        answer: bytes = await send_message(request, metadata=context.invocation_metadata())
        return answer

    older = grpc.aio.server()
    older.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "chat.v1.ChatService", {"SendMessage": grpc.unary_unary_rpc_method_handler(forward)}
            ),
        )
    )
    port = older.add_insecure_port("127.0.0.1:0")
    await older.start()
    # One attempt: the fallback is not a retry, it must not need a second one.
    api = ChatApi(f"127.0.0.1:{port}", send_streams=2, max_attempts=1)
    try:
        token = make_token("alice", [course_id])
        first = await api.send(token, course_id, "through the older service")
        second = await api.send(token, course_id, "and again")
        assert [first.message.content, second.message.content] == [
            "through the older service",
            "and again",
        ]
        assert int(second.message.message_id) > int(first.message.message_id)
    finally:
        await api.close()
        await older.stop(None)
        await upstream.close()
