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


async def refused(call: Awaitable[Any], code: grpc.StatusCode, says: str) -> grpc.aio.AioRpcError:
    """Await `call`, which must fail with `code` and details saying `says`; the error."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    assert says in (caught.value.details() or ""), caught.value.details()
    return caught.value
