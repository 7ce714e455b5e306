"""ExportCourse through gRPC on a real Redis Cluster (README, "Exporting a course"): a
moderator gets everything the course keeps as NDJSON in chunks, read from Redis in batches;
everyone else is refused clearly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from nextcampus_chat.server import build_server
from nextcampus_common.chat_api import ChatClient
from nextcampus_common.keys import CourseKeys
from nextcampus_common.metadata import AUTHORIZATION
from nextcampus_common.proto.chat.v1 import chat_pb2, chat_pb2_grpc
from testing.exports import check_rich_course, parse, populate
from testing.grpc_calls import refused


async def exported(client: ChatClient, course_id: str) -> tuple[list[list[str]], list[str]]:
    """The chunks of a course's export, and its lines."""
    chunks = [list(chunk.lines) async for chunk in client.export(course_id)]
    return chunks, [line for chunk in chunks for line in chunk]


async def drain(call: Any) -> None:
    async for _ in call:
        pass


async def test_a_moderator_exports_everything_the_course_keeps(client_for, course_id):
    student = client_for("stu", [course_id])
    moderator = client_for("mod", [course_id], [course_id])
    course = await populate(student, moderator, course_id)

    _, lines = await exported(moderator, course_id)

    export = parse(lines)
    check_rich_course(export, course)
    # A message line says what GetMessage says (but nobody's own reactions: no viewer).
    for message_id in course.ids:
        stored = await moderator.get(course_id, message_id)
        for reaction in stored.reactions:
            reaction.reacted_by_me = False
        assert export.message(message_id) == stored


async def test_an_empty_course_is_a_header_and_an_end(client_for, course_id):
    moderator = client_for("mod", [course_id], [course_id])
    chunks, lines = await exported(moderator, course_id)
    assert len(chunks) == 1
    export = parse(lines)
    assert export.messages == []
    assert export.end == {"type": "end", "messages": 0}
    assert int(export.header["policy"]["ttlSeconds"]) == 86400  # int64: a JSON string


async def test_only_moderators_of_the_course_may_export_it(client_for, course_id, make_token):
    student = client_for("stu", [course_id])
    await student.send(course_id, "hello")
    other_moderator = client_for("mod2", [course_id, "other"], ["other"])
    stranger = client_for("out", ["other"], ["other"])

    await refused(
        drain(student.export(course_id)),
        grpc.StatusCode.PERMISSION_DENIED,
        f"only moderators of course {course_id} may export it",
    )
    await refused(
        drain(other_moderator.export(course_id)),
        grpc.StatusCode.PERMISSION_DENIED,
        "may export it",
    )
    await refused(
        drain(stranger.export(course_id)),
        grpc.StatusCode.PERMISSION_DENIED,
        f"user out is not in course {course_id}",
    )


async def test_bad_course_ids_and_missing_tokens_are_refused(chat_server, client_for):
    moderator = client_for("mod", ["ok"], ["ok"])
    await refused(
        drain(moderator.export("bad course!")), grpc.StatusCode.INVALID_ARGUMENT, "course id"
    )
    # No token at all, through the generated stub as any client would call it.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{chat_server.port}") as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        call = stub.ExportCourse(chat_pb2.ExportCourseRequest(course_id="ok"))
        await refused(drain(call), grpc.StatusCode.UNAUTHENTICATED, "token")
        call = stub.ExportCourse(
            chat_pb2.ExportCourseRequest(course_id="ok"),
            metadata=((AUTHORIZATION, "Bearer not-a-jwt"),),
        )
        await refused(drain(call), grpc.StatusCode.UNAUTHENTICATED, "")


async def test_a_course_larger_than_a_batch_comes_in_many_chunks_in_order(
    chat_settings_factory: Callable[..., Any],
    make_token,
    course_id,
    cluster_client,
) -> None:
    """Batches of 3 messages from Redis, chunks of about 1 KiB: 40 messages arrive in many
    chunks, oldest first, each once; ids whose messages expired are passed over."""
    server = build_server(chat_settings_factory(export_batch_size=3, export_chunk_bytes=1024))
    await server.start()
    try:
        target = f"127.0.0.1:{server.port}"
        async with ChatClient(target, make_token("mod", [course_id], [course_id])) as moderator:
            sent = [
                (await moderator.send(course_id, f"message {i:02d} " + "x" * 100)).message
                for i in range(40)
            ]
            # Expired while still listed in the index (the sends trim it only at its old end).
            for gone in sent[10:17]:
                cluster_client.delete(CourseKeys(course_id).message(gone.message_id))
            chunks, lines = await exported(moderator, course_id)
    finally:
        await server.stop()

    assert len(chunks) >= 4
    assert all(sum(len(line.encode()) for line in chunk) <= 1024 for chunk in chunks)
    export = parse(lines)
    kept = [m.message_id for m in sent[:10] + sent[17:]]
    assert [line["message"]["messageId"] for line in export.messages] == kept
    assert export.end == {"type": "end", "messages": 33}
