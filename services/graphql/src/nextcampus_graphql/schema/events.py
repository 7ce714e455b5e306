"""`CourseEvent`: one change of a course from its event log (chat's CourseEvent), one object
type per kind, so that clients select what each kind carries with fragments and tell them
apart by `__typename`."""

from __future__ import annotations

from typing import Any

import graphene

from nextcampus_common.proto.chat.v1 import chat_pb2
from nextcampus_graphql.schema.types import ChatMessage

Kind = chat_pb2.CourseEventKind


class CourseEvent(graphene.Interface):
    """One change of a course, in the order of the course's event log."""

    cursor = graphene.String(
        required=True,
        description="subscribe `courseEvents(after: cursor)` to get every later change once, "
        "in order; opaque",
    )
    actor_id = graphene.ID(
        description="who made the change (the author, or the moderator who deleted or pinned); "
        "null only on MessageRestoredEvent, a change no one made"
    )
    message = graphene.Field(
        ChatMessage,
        required=True,
        description="the message as it is now (a tombstone once deleted)",
    )

    @classmethod
    def resolve_type(cls, event: chat_pb2.CourseEvent, _info: Any) -> type[graphene.ObjectType]:
        return TYPE_OF_KIND[event.kind]

    @staticmethod
    def resolve_actor_id(event: chat_pb2.CourseEvent, _info: Any) -> str | None:
        return event.actor_user_id or None


def _actor() -> graphene.ID:
    """`actorId` of a kind that always has one: non-null there (an implementation may narrow
    an interface's field)."""
    return graphene.ID(
        required=True,
        description="who made the change (the author, or the moderator who deleted or pinned)",
    )


def _root(event: chat_pb2.CourseEvent, _info: Any) -> chat_pb2.ChatMessage | None:
    return event.root if event.HasField("root") else None


class MessageAddedEvent(graphene.ObjectType):
    class Meta:
        interfaces = (CourseEvent,)

    actor_id = _actor()

    root = graphene.Field(
        ChatMessage,
        description="for a reply: its thread's root as it is now (replyCount and all)",
        resolver=_root,
    )


class MessageEditedEvent(graphene.ObjectType):
    class Meta:
        interfaces = (CourseEvent,)

    actor_id = _actor()


class MessageDeletedEvent(graphene.ObjectType):
    class Meta:
        interfaces = (CourseEvent,)

    actor_id = _actor()

    retracted = graphene.Boolean(
        required=True,
        description="true when no one deleted it: a Redis failover lost the message after it "
        "was seen (it was never acknowledged to its sender)",
    )

    @staticmethod
    def resolve_retracted(event: chat_pb2.CourseEvent, _info: Any) -> bool:
        return event.kind == Kind.MESSAGE_RETRACTED


class ReactionAddedEvent(graphene.ObjectType):
    class Meta:
        interfaces = (CourseEvent,)

    actor_id = _actor()

    emoji = graphene.String(required=True)


class ReactionRemovedEvent(graphene.ObjectType):
    class Meta:
        interfaces = (CourseEvent,)

    actor_id = _actor()

    emoji = graphene.String(required=True)


class MessagePinnedEvent(graphene.ObjectType):
    class Meta:
        interfaces = (CourseEvent,)

    actor_id = _actor()


class MessageUnpinnedEvent(graphene.ObjectType):
    class Meta:
        interfaces = (CourseEvent,)

    actor_id = _actor()


class MessageRestoredEvent(graphene.ObjectType):
    """A change of this message that you received was lost in a Redis failover (it was never
    acknowledged to whoever made it): `message` is the message as it is kept now, replacing
    what you have. No one made this change: `actorId` is null."""

    class Meta:
        interfaces = (CourseEvent,)


def _question() -> graphene.Field:
    return graphene.Field(
        ChatMessage,
        description="the answer's question as it is now (its endorsedAnswerCount changed too)",
        resolver=_root,
    )


class AnswerEndorsedEvent(graphene.ObjectType):
    """A moderator endorsed an answer: `message` is the answer, `question` its question."""

    class Meta:
        interfaces = (CourseEvent,)

    actor_id = _actor()
    question = _question()


class AnswerUnendorsedEvent(graphene.ObjectType):
    """A moderator took an endorsement back: `message` is the answer, `question` its
    question."""

    class Meta:
        interfaces = (CourseEvent,)

    actor_id = _actor()
    question = _question()


class QuestionResolvedEvent(graphene.ObjectType):
    """The question's author or a moderator marked it resolved: `message` is the question."""

    class Meta:
        interfaces = (CourseEvent,)

    actor_id = _actor()


class QuestionReopenedEvent(graphene.ObjectType):
    """A resolved question is open again: `message` is the question."""

    class Meta:
        interfaces = (CourseEvent,)

    actor_id = _actor()


TYPE_OF_KIND: dict[int, type[graphene.ObjectType]] = {
    Kind.MESSAGE_ADDED: MessageAddedEvent,
    Kind.MESSAGE_EDITED: MessageEditedEvent,
    Kind.MESSAGE_DELETED: MessageDeletedEvent,
    Kind.MESSAGE_RETRACTED: MessageDeletedEvent,
    Kind.REACTION_ADDED: ReactionAddedEvent,
    Kind.REACTION_REMOVED: ReactionRemovedEvent,
    Kind.MESSAGE_PINNED: MessagePinnedEvent,
    Kind.MESSAGE_UNPINNED: MessageUnpinnedEvent,
    Kind.MESSAGE_RESTORED: MessageRestoredEvent,
    Kind.ANSWER_ENDORSED: AnswerEndorsedEvent,
    Kind.ANSWER_UNENDORSED: AnswerUnendorsedEvent,
    Kind.QUESTION_RESOLVED: QuestionResolvedEvent,
    Kind.QUESTION_REOPENED: QuestionReopenedEvent,
}
EVENT_TYPES = tuple(dict.fromkeys(TYPE_OF_KIND.values()))
