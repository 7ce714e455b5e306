"""Mutation: send (idempotent with clientMessageId, optionally a reply in a thread), delete,
edit, react and pin (each idempotent with clientMutationId). Each answers the message as it
is after the change; the chat service decides who may change what (author, moderators)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

import graphene

from nextcampus_common.proto.chat.v1 import chat_pb2
from nextcampus_graphql.context import (
    RequestContext,
    call_chat,
    client_id_arg,
    message_id_arg,
    required_message_id,
)
from nextcampus_graphql.schema.presence import TypingAck
from nextcampus_graphql.schema.types import ChatMessage, CourseState, MessageKind, MyCourse


def _change(description: str, **arguments: graphene.Argument) -> graphene.Field:
    """A mutation of one message: it answers the message as it is after the change. Its
    arguments in this order: the message, what changes, the client's id."""
    return graphene.Field(
        ChatMessage,
        required=True,
        # `args` keeps this order (keyword arguments are ordered by when they were created).
        args={
            "course_id": graphene.Argument(graphene.ID, required=True),
            "message_id": graphene.Argument(graphene.ID, required=True),
            **arguments,
            "client_mutation_id": graphene.Argument(
                graphene.ID,
                description="retrying with the same id applies the change once (kept for a day)",
            ),
        },
        description=description,
    )


class Mutation(graphene.ObjectType):
    send_message = graphene.Field(
        ChatMessage,
        required=True,
        course_id=graphene.ID(required=True),
        content=graphene.String(required=True),
        client_message_id=graphene.ID(
            description="retrying with the same id returns the first message, never a copy"
        ),
        reply_to=graphene.ID(
            description="reply in the thread of this message (a reply's id: its root's thread)"
        ),
        kind=graphene.Argument(
            MessageKind,
            default_value="MESSAGE",
            description="QUESTION: its replies are answers; a question is never a reply",
        ),
        anonymous=graphene.Boolean(
            default_value=False,
            description="send anonymously to classmates: other students see your pseudonym, "
            "the course's moderators see you (FAILED_PRECONDITION unless the course's "
            "`anonymousPosting` is TO_CLASSMATES)",
        ),
    )
    delete_message = _change("by its author or a moderator of the course: it becomes a tombstone")
    edit_message = _change(
        "by its author, within the course policy's `editWindowSeconds` of the send; the "
        "earlier content goes to `editHistory`",
        content=graphene.Argument(graphene.String, required=True),
    )
    add_reaction = _change(
        "the viewer's reaction (one per user and emoji)",
        emoji=graphene.Argument(graphene.String, required=True),
    )
    remove_reaction = _change(
        "take the viewer's reaction back", emoji=graphene.Argument(graphene.String, required=True)
    )
    mark_read = graphene.Field(
        MyCourse,
        required=True,
        course_id=graphene.ID(required=True),
        message_id=graphene.ID(required=True),
        description="everything up to this message is read (a marker never moves back: an "
        "older message changes nothing); answers your read state in the course",
    )
    pin_message = _change("by a moderator of the course; a pinned message does not expire")
    unpin_message = _change("by a moderator of the course")
    endorse_answer = _change(
        "by a moderator of the course: `messageId` is a reply to a question; the answer and "
        "its question do not expire while it is endorsed"
    )
    unendorse_answer = _change(
        "by a moderator of the course; the answer and its question get the course TTL back "
        "from now (unless pinned or another endorsement keeps them)"
    )
    resolve_question = _change("by the question's author or a moderator of the course")
    reopen_question = _change("by the question's author or a moderator of the course")
    typing = graphene.Field(
        TypingAck,
        required=True,
        course_id=graphene.ID(required=True),
        thread_id=graphene.ID(description="the root of the thread you type in (null: the course)"),
        description="you are typing: `typingChanged` subscribers of the course see it for 6 s "
        "unless renewed. At most one per user and course every 3 s is published; a call "
        "within that answers `published: false` (no error). Never stored, not in the course's "
        "event log",
    )

    @staticmethod
    async def resolve_typing(
        _root: Any, info: graphene.ResolveInfo, course_id: str, thread_id: str | None = None
    ) -> chat_pb2.SendTypingResponse:
        context: RequestContext = info.context
        token = context.member(course_id)
        return await call_chat(
            context.chat.typing(token, course_id, message_id_arg(thread_id, "threadId"))
        )

    @staticmethod
    async def resolve_send_message(
        _root: Any,
        info: graphene.ResolveInfo,
        course_id: str,
        content: str,
        client_message_id: str | None = None,
        reply_to: str | None = None,
        kind: str = "MESSAGE",
        anonymous: bool = False,
    ) -> chat_pb2.ChatMessage:
        context: RequestContext = info.context
        token = context.member(course_id)
        response = await call_chat(
            context.chat.send(
                token,
                course_id,
                content,
                client_id_arg(client_message_id, "clientMessageId"),
                reply_to=message_id_arg(reply_to, "replyTo"),
                question=kind == "QUESTION",
                anonymous=anonymous,
            )
        )
        return response.message

    @staticmethod
    async def resolve_mark_read(
        _root: Any, info: graphene.ResolveInfo, course_id: str, message_id: str
    ) -> CourseState:
        context: RequestContext = info.context
        token = context.member(course_id)
        identity, _ = context.viewer()
        state = await call_chat(
            context.chat.mark_read(token, course_id, required_message_id(message_id, "messageId"))
        )
        return CourseState(course_id, identity.may_moderate(course_id), known=state)

    @staticmethod
    async def resolve_delete_message(
        _root: Any,
        info: graphene.ResolveInfo,
        course_id: str,
        message_id: str,
        client_mutation_id: str | None = None,
    ) -> chat_pb2.ChatMessage:
        context: RequestContext = info.context
        token = context.member(course_id)
        return await call_chat(
            context.chat.delete(
                token,
                course_id,
                required_message_id(message_id, "messageId"),
                client_id_arg(client_mutation_id, "clientMutationId"),
            )
        )

    @staticmethod
    async def resolve_edit_message(
        _root: Any,
        info: graphene.ResolveInfo,
        course_id: str,
        message_id: str,
        content: str,
        client_mutation_id: str | None = None,
    ) -> chat_pb2.ChatMessage:
        context: RequestContext = info.context
        token = context.member(course_id)
        return await call_chat(
            context.chat.edit(
                token,
                course_id,
                required_message_id(message_id, "messageId"),
                content,
                client_id_arg(client_mutation_id, "clientMutationId"),
            )
        )

    @staticmethod
    async def resolve_add_reaction(
        _root: Any, info: graphene.ResolveInfo, **arguments: Any
    ) -> chat_pb2.ChatMessage:
        return await _react(info, add=True, **arguments)

    @staticmethod
    async def resolve_remove_reaction(
        _root: Any, info: graphene.ResolveInfo, **arguments: Any
    ) -> chat_pb2.ChatMessage:
        return await _react(info, add=False, **arguments)

    @staticmethod
    async def resolve_pin_message(
        _root: Any, info: graphene.ResolveInfo, **arguments: Any
    ) -> chat_pb2.ChatMessage:
        return await _pin(info, pin=True, **arguments)

    @staticmethod
    async def resolve_unpin_message(
        _root: Any, info: graphene.ResolveInfo, **arguments: Any
    ) -> chat_pb2.ChatMessage:
        return await _pin(info, pin=False, **arguments)

    @staticmethod
    async def resolve_endorse_answer(
        _root: Any, info: graphene.ResolveInfo, **arguments: Any
    ) -> chat_pb2.ChatMessage:
        return await _change_question(info, "endorse", **arguments)

    @staticmethod
    async def resolve_unendorse_answer(
        _root: Any, info: graphene.ResolveInfo, **arguments: Any
    ) -> chat_pb2.ChatMessage:
        return await _change_question(info, "unendorse", **arguments)

    @staticmethod
    async def resolve_resolve_question(
        _root: Any, info: graphene.ResolveInfo, **arguments: Any
    ) -> chat_pb2.ChatMessage:
        return await _change_question(info, "resolve", **arguments)

    @staticmethod
    async def resolve_reopen_question(
        _root: Any, info: graphene.ResolveInfo, **arguments: Any
    ) -> chat_pb2.ChatMessage:
        return await _change_question(info, "reopen", **arguments)


# The chat call of one change of a message: (token, course, message id, client mutation id).
MessageChange = Callable[[str, str, str, str | None], Awaitable[chat_pb2.ChatMessage]]


async def _change_message(
    info: graphene.ResolveInfo,
    call: MessageChange,
    *,
    course_id: str,
    message_id: str,
    client_mutation_id: str | None = None,
) -> chat_pb2.ChatMessage:
    """A mutation of one message: the caller a member, the ids well formed, then the call."""
    context: RequestContext = info.context
    token = context.member(course_id)
    return await call_chat(
        call(
            token,
            course_id,
            required_message_id(message_id, "messageId"),
            client_id_arg(client_mutation_id, "clientMutationId"),
        )
    )


async def _change_question(
    info: graphene.ResolveInfo,
    change: Literal["endorse", "unendorse", "resolve", "reopen"],
    **arguments: Any,
) -> chat_pb2.ChatMessage:
    chat = info.context.chat
    return await _change_message(
        info,
        lambda token, course, message, key: chat.change_question(
            token, course, message, change=change, client_mutation_id=key
        ),
        **arguments,
    )


async def _react(
    info: graphene.ResolveInfo, *, add: bool, emoji: str, **arguments: Any
) -> chat_pb2.ChatMessage:
    chat = info.context.chat
    return await _change_message(
        info,
        lambda token, course, message, key: chat.react(
            token, course, message, emoji, add=add, client_mutation_id=key
        ),
        **arguments,
    )


async def _pin(info: graphene.ResolveInfo, *, pin: bool, **arguments: Any) -> chat_pb2.ChatMessage:
    chat = info.context.chat
    return await _change_message(
        info,
        lambda token, course, message, key: chat.pin(
            token, course, message, pin=pin, client_mutation_id=key
        ),
        **arguments,
    )
