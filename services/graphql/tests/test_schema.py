"""The schema and its resolvers without aiohttp: graphql-core executes them with a request
context that talks to a real chat server."""

from __future__ import annotations

from pathlib import Path

import orjson
from graphql import build_ast_schema, parse, print_schema

from nextcampus_common.auth import TokenVerifier
from nextcampus_common.chat_api import ChatApi
from nextcampus_graphql.context import RequestContext
from nextcampus_graphql.operations import OperationFactory, run_operation
from nextcampus_graphql.schema import build_schema, schema_sdl
from nextcampus_graphql.settings import GraphqlSettings

# DESIGN.md §2, field by field, and what was added since (previousMessageId: issue 11;
# conversations: replies, edits, reactions, pins and the event log, all additions).
PINNED = [
    "type ChatMessage {\n  courseId: ID!\n  messageId: ID!\n  userId: ID!\n  content: String!\n  timestamp: DateTime!\n  deleted: Boolean!\n",
    "  previousMessageId: ID\n",
    "messages(courseId: ID!, before: ID, after: ID, limit: Int = 50): MessagePage!",
    "message(courseId: ID!, messageId: ID!): ChatMessage",
    "coursePolicy(courseId: ID!): CoursePolicy!",
    "me: Viewer!",
    "messageDeleted(courseId: ID!): ChatMessage!",
    "type MessagePage {\n  messages: [ChatMessage!]!\n  hasMore: Boolean!\n",
    "  eventCursor: String\n}",
    "interface CourseEvent {",
    "): CourseEvent!",
    "type Reaction {\n  emoji: String!\n  count: Int!\n",
    "  editWindowSeconds: Int!\n",
]


def arguments(schema, root: str, field: str) -> dict[str, str]:
    fields = getattr(schema, f"{root}_type").fields
    return {name: str(arg.type) for name, arg in fields[field].args.items()}


def test_the_schema_is_the_pinned_one():
    sdl = print_schema(build_schema())
    for piece in PINNED:
        assert piece in sdl
    schema = build_schema()
    # The pinned arguments first, then optional ones: every older request stays valid.
    assert arguments(schema, "mutation", "sendMessage") == {
        "courseId": "ID!",
        "content": "String!",
        "clientMessageId": "ID",
        "replyTo": "ID",
        "kind": "MessageKind",
        "anonymous": "Boolean",
    }
    assert arguments(schema, "mutation", "deleteMessage") == {
        "courseId": "ID!",
        "messageId": "ID!",
        "clientMutationId": "ID",
    }
    assert arguments(schema, "subscription", "messageAdded") == {"courseId": "ID!", "after": "ID"}
    assert arguments(schema, "subscription", "courseEvents") == {
        "courseId": "ID!",
        "after": "String",
    }
    kinds = {t.name for t in schema.get_possible_types(schema.get_type("CourseEvent"))}
    assert kinds == {
        "MessageAddedEvent",
        "MessageEditedEvent",
        "MessageDeletedEvent",
        "ReactionAddedEvent",
        "ReactionRemovedEvent",
        "MessagePinnedEvent",
        "MessageUnpinnedEvent",
        "MessageRestoredEvent",
        "AnswerEndorsedEvent",
        "AnswerUnendorsedEvent",
        "QuestionResolvedEvent",
        "QuestionReopenedEvent",
    }
    assert parse(sdl)  # printable and parseable


SDL_FILE = Path(__file__).resolve().parents[1] / "schema.graphql"
REGENERATE = "make graphql-schema"


def test_the_committed_sdl_file_is_the_schema():
    """Clients generate code from services/graphql/schema.graphql, and reviews see API
    changes in it: it must be what the server serves."""
    assert SDL_FILE.is_file(), f"{SDL_FILE} is missing: create it with `{REGENERATE}`"
    committed = SDL_FILE.read_text()
    assert committed == schema_sdl(), f"{SDL_FILE} is stale: regenerate it with `{REGENERATE}`"
    # What a code generator reads from the file is the schema the server executes.
    assert print_schema(build_ast_schema(parse(committed))) == print_schema(build_schema())


async def test_resolvers_run_without_a_web_server(chat_server, make_token, jwt_secret, course_id):
    schema = build_schema()
    factory = OperationFactory(
        schema, max_query_bytes=4096, max_depth=6, max_cost=5000, page_limit=200
    )
    token = make_token("alice", [course_id])
    identity = await TokenVerifier(GraphqlSettings(jwt_secret=jwt_secret)).verify(token)
    chat = ChatApi(f"127.0.0.1:{chat_server.port}")
    try:
        context = RequestContext(chat=chat, identity=identity, token=token, history_page_limit=200)
        sent = await run_operation(
            schema,
            factory.prepare(
                {
                    "query": 'mutation($c: ID!) { sendMessage(courseId: $c, content: "hi") { content userId } }',
                    "variables": {"c": course_id},
                }
            ),
            context,
            max_response_bytes=65_536,
        )
        assert orjson.loads(sent.payload) == {
            "data": {"sendMessage": {"content": "hi", "userId": "alice"}}
        }
        anonymous = RequestContext(chat=chat, identity=None, token=None, history_page_limit=200)
        result = await run_operation(
            schema,
            factory.prepare({"query": "{ me { userId } }"}),
            anonymous,
            max_response_bytes=65_536,
        )
        refused = orjson.loads(result.payload)
        assert result.failed
        assert refused["data"] is None
        assert refused["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    finally:
        await chat.close()


async def test_a_transport_limit_is_internal_and_the_rate_limit_is_rate_limited(
    chat_server, make_token, cluster_client, course_id
):
    """gRPC's RESOURCE_EXHAUSTED means two things: the chat's rate limit (with retry-after-ms:
    RATE_LIMITED, wait and retry) and a message over a transport limit (a bug of ours, no
    use waiting: INTERNAL)."""
    import grpc
    import pytest

    from nextcampus_common.keys import CourseKeys
    from nextcampus_graphql.errors import Code, from_grpc

    token = make_token("alice", [course_id])
    target = f"ipv4:127.0.0.1:{chat_server.port}"
    sender = ChatApi(target, max_attempts=1)
    tiny = ChatApi(target, options=[("grpc.max_receive_message_length", 1024)])
    try:
        await sender.send(token, course_id, "x" * 2000)
        with pytest.raises(grpc.aio.AioRpcError) as too_large:
            await tiny.history(token, course_id, limit=10)
        assert too_large.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert from_grpc(too_large.value).code is Code.INTERNAL

        cluster_client.hset(
            CourseKeys(course_id).policy,
            mapping={"rate_limit_messages": 1, "rate_limit_seconds": 3600},
        )
        await sender.send(token, course_id, "the one allowed this hour")
        with pytest.raises(grpc.aio.AioRpcError) as limited:
            await sender.send(token, course_id, "one too many")
        error = from_grpc(limited.value)
        assert error.code is Code.RATE_LIMITED
        assert error.extensions["retryAfterMs"] > 0
    finally:
        await sender.close()
        await tiny.close()
