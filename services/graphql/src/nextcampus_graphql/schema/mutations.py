"""Mutation: send (idempotent with clientMessageId) and delete."""

from __future__ import annotations

from typing import Any

import graphene

from nextcampus_common.ids import InvalidId, check_client_message_id
from nextcampus_common.proto.chat.v1 import chat_pb2
from nextcampus_graphql.context import RequestContext, call_chat, message_id_arg
from nextcampus_graphql.errors import ApiError, Code
from nextcampus_graphql.schema.types import ChatMessage


class Mutation(graphene.ObjectType):
    send_message = graphene.Field(
        ChatMessage,
        required=True,
        course_id=graphene.ID(required=True),
        content=graphene.String(required=True),
        client_message_id=graphene.ID(
            description="retrying with the same id returns the first message, never a copy"
        ),
    )
    delete_message = graphene.Field(
        ChatMessage,
        required=True,
        course_id=graphene.ID(required=True),
        message_id=graphene.ID(required=True),
    )

    @staticmethod
    async def resolve_send_message(
        _root: Any,
        info: graphene.ResolveInfo,
        course_id: str,
        content: str,
        client_message_id: str | None = None,
    ) -> chat_pb2.ChatMessage:
        context: RequestContext = info.context
        token = context.member(course_id)
        if client_message_id is not None:
            try:
                check_client_message_id(client_message_id)
            except InvalidId as exc:
                raise ApiError(Code.BAD_USER_INPUT, f"clientMessageId: {exc}") from exc
        response = await call_chat(context.chat.send(token, course_id, content, client_message_id))
        return response.message

    @staticmethod
    async def resolve_delete_message(
        _root: Any, info: graphene.ResolveInfo, course_id: str, message_id: str
    ) -> chat_pb2.ChatMessage:
        context: RequestContext = info.context
        token = context.member(course_id)
        checked = message_id_arg(message_id, "messageId")
        assert checked is not None
        return await call_chat(context.chat.delete(token, course_id, checked))
