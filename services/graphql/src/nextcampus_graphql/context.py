"""What every resolver gets as `info.context`: who is asking, and the way to the chat pods."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from nextcampus_common.auth import Identity
from nextcampus_common.chat_api import ChatApi
from nextcampus_common.ids import (
    InvalidId,
    check_client_message_id,
    check_course_id,
    check_event_cursor,
    check_message_id,
)
from nextcampus_graphql.errors import ApiError, Code, from_grpc

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RequestContext:
    chat: ChatApi
    identity: Identity | None
    token: str | None
    history_page_limit: int

    def viewer(self) -> tuple[Identity, str]:
        if self.identity is None or self.token is None:
            raise ApiError(Code.UNAUTHENTICATED, "a valid token is required")
        return self.identity, self.token

    def member(self, course_id: str) -> str:
        """The caller's token once the course id is well formed and the caller is in it."""
        identity, token = self.viewer()
        try:
            check_course_id(course_id)
        except InvalidId as exc:
            raise ApiError(Code.BAD_USER_INPUT, str(exc)) from exc
        if not identity.is_member(course_id):
            raise ApiError(Code.FORBIDDEN, f"user {identity.user_id} is not in course {course_id}")
        return token

    def moderator(self, course_id: str, action: str) -> str:
        """The caller's token once the caller moderates the course (`action`: what only
        moderators may do, for the refusal)."""
        token = self.member(course_id)
        identity, _ = self.viewer()
        if not identity.may_moderate(course_id):
            raise ApiError(Code.FORBIDDEN, f"only moderators of course {course_id} may {action}")
        return token


def message_id_arg(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    try:
        return check_message_id(str(value))
    except InvalidId as exc:
        raise ApiError(Code.BAD_USER_INPUT, f"{name}: {exc}") from exc


def required_message_id(value: str, name: str) -> str:
    checked = message_id_arg(value, name)
    assert checked is not None
    return checked


def client_id_arg(value: str | None, name: str) -> str | None:
    """A client's idempotency key of a change (`clientMessageId`, `clientMutationId`)."""
    if value is None:
        return None
    try:
        return check_client_message_id(str(value))
    except InvalidId as exc:
        raise ApiError(Code.BAD_USER_INPUT, f"{name}: {exc}") from exc


def event_cursor_arg(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    try:
        return check_event_cursor(value)
    except InvalidId as exc:
        raise ApiError(Code.BAD_USER_INPUT, f"{name}: {exc}") from exc


async def call_chat(call: Awaitable[T]) -> T:
    """Await a chat call; its gRPC failure becomes a GraphQL error with a code."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        raise from_grpc(exc) from None
