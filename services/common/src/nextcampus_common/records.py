"""Messages as the Lua scripts return them (lua/lib/course.lua `read_message`), made into
ChatMessages: one copy for the chat service and the course export (export.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from nextcampus_common.proto.chat.v1.chat_pb2 import ChatMessage, MessageKind, Reaction


def message_from_record(course_id: str, record: Sequence[Any]) -> ChatMessage:
    """A record of the scripts (lua/lib/course.lua read_message): the id, MESSAGE_FIELDS, and
    the viewer's own reactions (space-separated; "" for no viewer)."""
    (
        message_id,
        user_id,
        content,
        timestamp,
        deleted,
        client_message_id,
        prev_id,
        reply_to,
        edited_at,
        reply_count,
        last_reply_at,
        participants,
        reactions,
        pinned_at,
        mentions,
        mentions_course,
        kind,
        resolved_at,
        endorsed_at,
        endorsed_count,
        anonymous,
        pseudonym,
        mine,
    ) = record
    own = set(mine.split(" ")) if mine else set()
    return ChatMessage(
        course_id=course_id,
        message_id=message_id,
        user_id=user_id,
        content=content,
        timestamp=int(timestamp),
        deleted=deleted == "1",
        client_message_id=client_message_id,
        previous_message_id=prev_id,
        reply_to_message_id=reply_to,
        edited_at=int(edited_at),
        reply_count=int(reply_count),
        last_reply_at=int(last_reply_at),
        participant_ids=participants.split(",") if participants else [],
        reactions=[
            Reaction(emoji=emoji, count=int(count), reacted_by_me=emoji in own)
            for emoji, count in (orjson.loads(reactions) if reactions else [])
        ],
        pinned_at=int(pinned_at),
        mention_ids=mentions.split(",") if mentions else [],
        mentions_course=mentions_course == "1",
        kind=MessageKind.MESSAGE_KIND_QUESTION
        if kind == "q"
        else MessageKind.MESSAGE_KIND_UNSPECIFIED,
        resolved_at=int(resolved_at),
        endorsed_at=int(endorsed_at),
        endorsed_answer_count=int(endorsed_count),
        anonymous=anonymous == "1",
        pseudonym=pseudonym,
    )
