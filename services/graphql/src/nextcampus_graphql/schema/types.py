"""The object types of DESIGN.md §2, resolved from the chat service's protobuf messages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import graphene

from nextcampus_common.proto.chat.v1 import chat_pb2


class ChatMessage(graphene.ObjectType):
    course_id = graphene.ID(required=True)
    message_id = graphene.ID(required=True)
    user_id = graphene.ID(required=True)
    content = graphene.String(required=True)
    timestamp = graphene.DateTime(required=True)
    deleted = graphene.Boolean(required=True)
    previous_message_id = graphene.ID(
        description="the course's message before this one (null for the first): a gap in "
        "this chain is a message you missed; a deleted message whose id you resumed after "
        "was lost in a failover and this is the newest one that survived"
    )

    @staticmethod
    def resolve_timestamp(message: chat_pb2.ChatMessage, _info: Any) -> datetime:
        return datetime.fromtimestamp(message.timestamp / 1000, tz=UTC)

    @staticmethod
    def resolve_previous_message_id(message: chat_pb2.ChatMessage, _info: Any) -> str | None:
        return message.previous_message_id or None


class MessagePage(graphene.ObjectType):
    messages = graphene.List(graphene.NonNull(ChatMessage), required=True)
    has_more = graphene.Boolean(required=True)


class CoursePolicy(graphene.ObjectType):
    """The effective policy of a course: its CourseChatPolicy over the service defaults."""

    course_id = graphene.ID(required=True)
    ttl_seconds = graphene.Int(required=True)
    max_length = graphene.Int(required=True)
    read_only = graphene.Boolean(required=True)
    rate_limit_messages = graphene.Int(required=True, description="per user; 0: no limit")
    rate_limit_seconds = graphene.Int(required=True)


class Viewer(graphene.ObjectType):
    user_id = graphene.ID(required=True)
    courses = graphene.List(graphene.NonNull(graphene.ID), required=True)
    moderates = graphene.List(graphene.NonNull(graphene.ID), required=True)
