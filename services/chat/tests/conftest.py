from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from chatctl.client import ChatClient


@pytest.fixture
async def client_for(
    chat_server: Any, make_token: Callable[..., str]
) -> AsyncIterator[Callable[..., ChatClient]]:
    """Clients of the in-process chat server, one per (user, courses)."""
    clients: list[ChatClient] = []

    def make(
        user: str, courses: list[str], moderates: list[str] | None = None, **kw: Any
    ) -> ChatClient:
        client = ChatClient(
            f"127.0.0.1:{chat_server.port}", make_token(user, courses, moderates, **kw)
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
