"""Presence and typing: who is online in a course (`presence`, `presenceChanged`) and who is
typing there now (`typing`, `typingChanged`). Nothing of either is in the course's event log;
the subscriptions' payloads are the same for every subscriber (ephemeral.py builds them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import graphene

from nextcampus_common.ids import InvalidId, check_user_id
from nextcampus_common.proto.chat.v1 import chat_pb2
from nextcampus_graphql.context import RequestContext, call_chat
from nextcampus_graphql.ephemeral import PresenceUpdate, TypingUpdate, Typist
from nextcampus_graphql.errors import ApiError, Code

MEMBERS_PAGE_DEFAULT = 50


class PresenceMember(graphene.ObjectType):
    """A member of the course who is online: they have a subscription of it open."""

    user_id = graphene.ID(required=True)
    since = graphene.DateTime(
        required=True, description="when they came online (their first subscription of it)"
    )

    @staticmethod
    def resolve_since(member: chat_pb2.PresenceMember, _info: Any) -> datetime:
        return datetime.fromtimestamp(member.since / 1000, tz=UTC)


@dataclass(frozen=True, slots=True)
class CoursePresence:
    """The root of `presence`: each field asks the chat service on its own."""

    course_id: str
    token: str


class Presence(graphene.ObjectType):
    """Who is online in a course: members with a subscription of it open on any server."""

    course_id = graphene.ID(required=True)
    online_count = graphene.Int(required=True)
    members = graphene.List(
        graphene.NonNull(PresenceMember),
        required=True,
        first=graphene.Int(default_value=MEMBERS_PAGE_DEFAULT),
        after=graphene.ID(description="the last `userId` of the previous page"),
        description="a page of the online members, ordered by user id",
    )

    @staticmethod
    async def resolve_online_count(root: CoursePresence, info: graphene.ResolveInfo) -> int:
        context: RequestContext = info.context
        page = await call_chat(context.chat.presence(root.token, root.course_id, limit=0))
        return page.online_count

    @staticmethod
    async def resolve_members(
        root: CoursePresence,
        info: graphene.ResolveInfo,
        first: int = MEMBERS_PAGE_DEFAULT,
        after: str | None = None,
    ) -> list[chat_pb2.PresenceMember]:
        context: RequestContext = info.context
        if not 1 <= first <= context.history_page_limit:
            raise ApiError(
                Code.BAD_USER_INPUT, f"first must be between 1 and {context.history_page_limit}"
            )
        if after is not None:
            try:
                check_user_id(after)
            except InvalidId as exc:
                raise ApiError(Code.BAD_USER_INPUT, f"after: {exc}") from exc
        page = await call_chat(
            context.chat.presence(root.token, root.course_id, after=after, limit=first)
        )
        return list(page.members)


class PresenceChange(graphene.ObjectType):
    """Who came online and who went offline since the previous update (each user once, with
    their latest state), and how many are online now."""

    course_id = graphene.ID(required=True)
    online_count = graphene.Int(required=True)
    joined = graphene.List(graphene.NonNull(PresenceMember), required=True)
    left = graphene.List(graphene.NonNull(graphene.ID), required=True, description="user ids")

    @staticmethod
    def resolve_joined(update: PresenceUpdate, _info: Any) -> list[chat_pb2.PresenceMember]:
        return update.joined


class TypingUser(graphene.ObjectType):
    user_id = graphene.ID(required=True)
    thread_id = graphene.ID(description="the thread's root they type in (null: the course)")
    expires_at = graphene.DateTime(
        required=True, description="when they stop counting as typing unless they renew it"
    )

    @staticmethod
    def resolve_expires_at(typist: Typist, _info: Any) -> datetime:
        return datetime.fromtimestamp(typist.expires_at, tz=UTC)


class TypingState(graphene.ObjectType):
    """Everyone typing in the course now."""

    course_id = graphene.ID(required=True)
    users = graphene.List(
        graphene.NonNull(TypingUser),
        required=True,
        description="the most recent first, at most 20 (an empty list: nobody types)",
    )
    typing_count = graphene.Int(required=True, description="all who type, beyond `users` too")

    @staticmethod
    def resolve_users(update: TypingUpdate, _info: Any) -> list[Typist]:
        return update.users


class TypingAck(graphene.ObjectType):
    """The answer to `typing`."""

    published = graphene.Boolean(
        required=True,
        description="true: the course's members see you typing (for 6 s unless renewed); "
        "false: throttled — your last `typing`, under 3 s ago, still stands and nothing was "
        "sent (no error: call it as you type, at most every 3 s is enough)",
    )
    retry_after_ms = graphene.Int(
        required=True, description="when throttled: ms until a call is published again; else 0"
    )
