"""ChatService for one user: the common client with a token bound to every call."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from nextcampus_common.chat_api import ChatApi, stream_live_after
from nextcampus_common.proto.chat.v1 import chat_pb2

__all__ = ["ChatClient", "stream_live_after"]


class ChatClient:
    def __init__(
        self,
        target: str,
        token: str,
        options: list[tuple[str, int | str]] | None = None,
        *,
        max_attempts: int = 1,
    ) -> None:
        # No automatic retries by default: tests and the CLI see each failure as it is.
        self.api = ChatApi(target, options=options, max_attempts=max_attempts)
        self.target = target
        self.token = token

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.api.close()

    async def send(
        self,
        course_id: str,
        content: str,
        client_message_id: str = "",
        deadline_seconds: float = 10.0,
    ) -> chat_pb2.SendMessageResponse:
        return await self.api.send(
            self.token,
            course_id,
            content,
            client_message_id or None,
            deadline_seconds=deadline_seconds,
        )

    async def history(
        self, course_id: str, *, before: str = "", after: str = "", limit: int = 0
    ) -> chat_pb2.ListMessagesResponse:
        return await self.api.history(
            self.token, course_id, before=before or None, after=after or None, limit=limit
        )

    async def get(self, course_id: str, message_id: str) -> chat_pb2.ChatMessage:
        return await self.api.get(self.token, course_id, message_id)

    async def delete(self, course_id: str, message_id: str) -> chat_pb2.ChatMessage:
        return await self.api.delete(self.token, course_id, message_id)

    async def policy(self, course_id: str) -> chat_pb2.CoursePolicy:
        return await self.api.policy(self.token, course_id)

    def subscribe(self, course_id: str, after: str = "") -> grpc.aio.UnaryStreamCall:
        return self.api.subscribe(self.token, course_id, after or None)

    async def messages(
        self, course_id: str, after: str = ""
    ) -> AsyncIterator[chat_pb2.ChatMessage]:
        async for message in self.subscribe(course_id, after):
            yield message
