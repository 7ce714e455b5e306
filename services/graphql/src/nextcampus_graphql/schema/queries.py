"""Query: history pages, one message, threads, pinned messages, the course policy, the
viewer with their courses' read state, their mentions."""

from __future__ import annotations

from typing import Any

import graphene

from nextcampus_common.proto.chat.v1 import chat_pb2
from nextcampus_graphql.context import (
    RequestContext,
    call_chat,
    message_id_arg,
    required_message_id,
)
from nextcampus_graphql.errors import ApiError, Code
from nextcampus_graphql.schema.presence import CoursePresence, Presence
from nextcampus_graphql.schema.types import (
    QUESTION_STATE_OF,
    ChatMessage,
    CoursePolicy,
    CourseState,
    MentionPage,
    MessagePage,
    QuestionPage,
    QuestionState,
    ReadStates,
    SimilarQuestion,
    ThreadPage,
    Viewer,
)


def _check_limit(context: RequestContext, limit: int) -> None:
    if not 1 <= limit <= context.history_page_limit:
        raise ApiError(
            Code.BAD_USER_INPUT, f"limit must be between 1 and {context.history_page_limit}"
        )


class Query(graphene.ObjectType):
    messages = graphene.Field(
        MessagePage,
        required=True,
        course_id=graphene.ID(required=True),
        before=graphene.ID(),
        after=graphene.ID(),
        limit=graphene.Int(default_value=50),
        description="a page of history, oldest to newest; `before` pages back, `after` forward",
    )
    message = graphene.Field(
        ChatMessage, course_id=graphene.ID(required=True), message_id=graphene.ID(required=True)
    )
    thread = graphene.Field(
        ThreadPage,
        required=True,
        course_id=graphene.ID(required=True),
        root_id=graphene.ID(required=True, description="a reply's id answers its root's thread"),
        before=graphene.ID(),
        after=graphene.ID(),
        limit=graphene.Int(default_value=50),
        description="a thread's root and a page of its replies, oldest to newest",
    )
    pinned_messages = graphene.List(
        graphene.NonNull(ChatMessage),
        required=True,
        course_id=graphene.ID(required=True),
        description="the course's pinned messages, the most recently pinned first",
    )
    course_policy = graphene.Field(
        CoursePolicy, required=True, course_id=graphene.ID(required=True)
    )
    questions = graphene.Field(
        QuestionPage,
        required=True,
        course_id=graphene.ID(required=True),
        state=graphene.Argument(QuestionState, default_value="ALL"),
        after=graphene.ID(description="a previous page's last question: the page after it"),
        limit=graphene.Int(default_value=50),
        description="the course's questions in a state, the newest first",
    )
    similar_questions = graphene.List(
        graphene.NonNull(SimilarQuestion),
        required=True,
        course_id=graphene.ID(required=True),
        text=graphene.String(required=True, description="the question being typed"),
        limit=graphene.Int(default_value=5, description="1..20"),
        description="earlier questions of the course that look like `text`, the most alike "
        "first (the newest 1,000 questions are compared)",
    )
    me = graphene.Field(Viewer, required=True)
    my_mentions = graphene.Field(
        MentionPage,
        required=True,
        after=graphene.String(description="a previous page's endCursor"),
        limit=graphene.Int(default_value=50),
        description="messages of all your courses that mention you or @course, newest first, "
        "kept as long as the messages are",
    )
    presence = graphene.Field(
        Presence,
        required=True,
        course_id=graphene.ID(required=True),
        description="who is online in the course: members with a subscription of it open",
    )

    @staticmethod
    async def resolve_messages(
        _root: Any,
        info: graphene.ResolveInfo,
        course_id: str,
        before: str | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> chat_pb2.ListMessagesResponse:
        context: RequestContext = info.context
        token = context.member(course_id)
        _check_limit(context, limit)
        return await call_chat(
            context.chat.history(
                token,
                course_id,
                before=message_id_arg(before, "before"),
                after=message_id_arg(after, "after"),
                limit=limit,
            )
        )

    @staticmethod
    async def resolve_message(
        _root: Any, info: graphene.ResolveInfo, course_id: str, message_id: str
    ) -> chat_pb2.ChatMessage | None:
        context: RequestContext = info.context
        token = context.member(course_id)
        checked = required_message_id(message_id, "messageId")
        try:
            return await call_chat(context.chat.get(token, course_id, checked))
        except ApiError as exc:
            if exc.code is Code.NOT_FOUND:
                return None
            raise

    @staticmethod
    async def resolve_thread(
        _root: Any,
        info: graphene.ResolveInfo,
        course_id: str,
        root_id: str,
        before: str | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> chat_pb2.ThreadPage:
        context: RequestContext = info.context
        token = context.member(course_id)
        _check_limit(context, limit)
        return await call_chat(
            context.chat.thread(
                token,
                course_id,
                required_message_id(root_id, "rootId"),
                before=message_id_arg(before, "before"),
                after=message_id_arg(after, "after"),
                limit=limit,
            )
        )

    @staticmethod
    async def resolve_pinned_messages(
        _root: Any, info: graphene.ResolveInfo, course_id: str
    ) -> list[chat_pb2.ChatMessage]:
        context: RequestContext = info.context
        token = context.member(course_id)
        response = await call_chat(context.chat.pinned(token, course_id))
        return list(response.messages)

    @staticmethod
    async def resolve_questions(
        _root: Any,
        info: graphene.ResolveInfo,
        course_id: str,
        state: str = "ALL",
        after: str | None = None,
        limit: int = 50,
    ) -> chat_pb2.ListQuestionsResponse:
        context: RequestContext = info.context
        token = context.member(course_id)
        _check_limit(context, limit)
        return await call_chat(
            context.chat.questions(
                token,
                course_id,
                state=QUESTION_STATE_OF[state],
                after=message_id_arg(after, "after"),
                limit=limit,
            )
        )

    @staticmethod
    async def resolve_similar_questions(
        _root: Any, info: graphene.ResolveInfo, course_id: str, text: str, limit: int = 5
    ) -> list[chat_pb2.SimilarQuestion]:
        context: RequestContext = info.context
        token = context.member(course_id)
        response = await call_chat(
            context.chat.similar_questions(token, course_id, text, limit=limit)
        )
        return list(response.questions)

    @staticmethod
    async def resolve_course_policy(
        _root: Any, info: graphene.ResolveInfo, course_id: str
    ) -> chat_pb2.CoursePolicy:
        context: RequestContext = info.context
        return await call_chat(context.chat.policy(context.member(course_id), course_id))

    @staticmethod
    def resolve_presence(_root: Any, info: graphene.ResolveInfo, course_id: str) -> CoursePresence:
        context: RequestContext = info.context
        return CoursePresence(course_id, context.member(course_id))

    @staticmethod
    def resolve_me(_root: Any, info: graphene.ResolveInfo) -> dict[str, object]:
        context: RequestContext = info.context
        identity, token = context.viewer()
        courses = sorted(identity.courses | identity.moderates)
        states = ReadStates(context, token)
        return {
            "user_id": identity.user_id,
            "course_ids": courses,
            "courses": [
                CourseState(course, identity.may_moderate(course), states) for course in courses
            ],
            "moderates": sorted(identity.moderates),
        }

    @staticmethod
    async def resolve_my_mentions(
        _root: Any, info: graphene.ResolveInfo, after: str | None = None, limit: int = 50
    ) -> chat_pb2.ListMyMentionsResponse:
        context: RequestContext = info.context
        _, token = context.viewer()
        _check_limit(context, limit)
        return await call_chat(context.chat.my_mentions(token, after=after, limit=limit))
