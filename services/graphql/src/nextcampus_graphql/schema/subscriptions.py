"""Subscription fields. Their events come from the fan-out engine (`fanout.py`), which
executes each subscription document once per event for every socket that shares it; here
an event (a ChatMessage) is simply the field's value."""

from __future__ import annotations

from typing import Any

import graphene

from nextcampus_common.proto.chat.v1 import chat_pb2
from nextcampus_graphql.schema.types import ChatMessage

MESSAGE_ADDED = "messageAdded"
MESSAGE_DELETED = "messageDeleted"


def _event(root: chat_pb2.ChatMessage, _info: Any, **_args: Any) -> chat_pb2.ChatMessage:
    return root


class Subscription(graphene.ObjectType):
    message_added = graphene.Field(
        ChatMessage,
        required=True,
        course_id=graphene.ID(required=True),
        after=graphene.ID(description="replay every message after this id first, then live"),
        resolver=_event,
        description="every message of the course once, in order (deleted ones as tombstones)",
    )
    message_deleted = graphene.Field(
        ChatMessage,
        required=True,
        course_id=graphene.ID(required=True),
        resolver=_event,
        description="tombstones of messages deleted from now on",
    )
