"""A small gRPC client of ChatService with the token in the `authorization` metadata."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from nextcampus_common.metadata import AUTHORIZATION, STREAM_AFTER_MESSAGE_ID, metadata_value
from nextcampus_common.proto.chat.v1 import chat_pb2, chat_pb2_grpc


async def stream_live_after(call: grpc.aio.UnaryStreamCall) -> int:
    """Wait until a SubscribeMessages stream is live; the id it carries every message after."""
    value = metadata_value(await call.initial_metadata(), STREAM_AFTER_MESSAGE_ID)
    if value is None:
        raise RuntimeError(f"the server sent no {STREAM_AFTER_MESSAGE_ID} header")
    return int(value)


class ChatClient:
    def __init__(
        self, target: str, token: str, options: list[tuple[str, int | str]] | None = None
    ) -> None:
        self.target = target
        self.channel = grpc.aio.insecure_channel(target, options=options)
        self.stub = chat_pb2_grpc.ChatServiceStub(self.channel)
        self.metadata = ((AUTHORIZATION, f"Bearer {token}"),)

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def send(
        self,
        course_id: str,
        content: str,
        client_message_id: str = "",
        deadline_seconds: float = 10.0,
    ) -> chat_pb2.SendMessageResponse:
        request = chat_pb2.SendMessageRequest(
            course_id=course_id, content=content, client_message_id=client_message_id
        )
        response: chat_pb2.SendMessageResponse = await self.stub.SendMessage(
            request, metadata=self.metadata, timeout=deadline_seconds
        )
        return response

    async def history(
        self, course_id: str, *, before: str = "", after: str = "", limit: int = 0
    ) -> chat_pb2.ListMessagesResponse:
        request = chat_pb2.ListMessagesRequest(
            course_id=course_id, before_message_id=before, after_message_id=after, limit=limit
        )
        response: chat_pb2.ListMessagesResponse = await self.stub.ListMessages(
            request, metadata=self.metadata, timeout=10
        )
        return response

    async def get(self, course_id: str, message_id: str) -> chat_pb2.ChatMessage:
        request = chat_pb2.GetMessageRequest(course_id=course_id, message_id=message_id)
        message: chat_pb2.ChatMessage = await self.stub.GetMessage(
            request, metadata=self.metadata, timeout=10
        )
        return message

    async def delete(self, course_id: str, message_id: str) -> chat_pb2.ChatMessage:
        request = chat_pb2.DeleteMessageRequest(course_id=course_id, message_id=message_id)
        message: chat_pb2.ChatMessage = await self.stub.DeleteMessage(
            request, metadata=self.metadata, timeout=10
        )
        return message

    def subscribe(self, course_id: str, after: str = "") -> grpc.aio.UnaryStreamCall:
        request = chat_pb2.SubscribeMessagesRequest(course_id=course_id, after_message_id=after)
        return self.stub.SubscribeMessages(request, metadata=self.metadata)

    async def messages(
        self, course_id: str, after: str = ""
    ) -> AsyncIterator[chat_pb2.ChatMessage]:
        async for message in self.subscribe(course_id, after):
            yield message
