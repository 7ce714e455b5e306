"""ChatService called through its generated stub, as any third-party gRPC client would: the
calls chatctl's ChatClient has no method for, with the client's token."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc
import pytest

from nextcampus_common.chat_api import ChatClient
from nextcampus_common.metadata import AUTHORIZATION
from nextcampus_common.proto.chat.v1 import chat_pb2_grpc


class StubCalls:
    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self._stub = chat_pb2_grpc.ChatServiceStub(client.api.channel)
        self._metadata = ((AUTHORIZATION, f"Bearer {client.token}"),)

    async def __call__(self, method: str, request: Any) -> Any:
        """`method` (its name in the proto) with `request`, within gRPC's deadline of 10 s."""
        return await getattr(self._stub, method)(request, metadata=self._metadata, timeout=10)


class RawCalls:
    """ChatService answers as the bytes on the wire (no deserializer): what a client gets,
    whatever the proto says, for tests that look for what must be in no byte of it."""

    def __init__(self, client: ChatClient) -> None:
        self._channel = client.api.channel
        self._metadata = ((AUTHORIZATION, f"Bearer {client.token}"),)

    def _callable(self, method: str, request: Any, kind: str) -> Any:
        make = getattr(self._channel, kind)
        return make(
            f"/chat.v1.ChatService/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=None,
        )

    async def __call__(self, method: str, request: Any) -> bytes:
        """The answer of unary `method` to `request`, within 10 s."""
        call = self._callable(method, request, "unary_unary")
        answer: bytes = await call(request, metadata=self._metadata, timeout=10)
        return answer

    def stream(self, method: str, request: Any) -> grpc.aio.UnaryStreamCall:
        """Server-streaming `method`: an iterator of each item's bytes."""
        call: grpc.aio.UnaryStreamCall = self._callable(method, request, "unary_stream")(
            request, metadata=self._metadata
        )
        return call


async def refused(call: Awaitable[Any], code: grpc.StatusCode, says: str) -> grpc.aio.AioRpcError:
    """Await `call`, which must fail with `code` and details saying `says`; the error."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    assert says in (caught.value.details() or ""), caught.value.details()
    return caught.value
