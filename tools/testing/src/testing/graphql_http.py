"""One user's GraphQL over plain HTTP (aiohttp): the queries and mutations tests use most."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

SEND = """mutation($c: ID!, $t: String!, $k: ID, $r: ID) {
  sendMessage(courseId: $c, content: $t, clientMessageId: $k, replyTo: $r) { messageId }
}"""
DELETE = """mutation($c: ID!, $m: ID!, $k: ID) {
  deleteMessage(courseId: $c, messageId: $m, clientMutationId: $k) { messageId deleted }
}"""
HISTORY = """query($c: ID!) {
  messages(courseId: $c, limit: 1) { messages { messageId } eventCursor }
}"""


class Api:
    """One user's GraphQL over HTTP."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str) -> None:
        self.http, self.url, self.token = http, url, token

    async def post(self, query: str, **variables: Any) -> dict[str, Any]:
        async with self.http.post(
            self.url,
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {self.token}"},
        ) as response:
            body: dict[str, Any] = await response.json()
        return body

    async def data(self, query: str, **variables: Any) -> dict[str, Any]:
        body = await self.post(query, **variables)
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data

    async def error_code(self, query: str, **variables: Any) -> str:
        """The code of the first error the operation answers (it must answer one)."""
        body = await self.post(query, **variables)
        assert body.get("errors"), body
        code: str = body["errors"][0]["extensions"]["code"]
        return code

    async def send(
        self, course_id: str, text: str, *, key: str | None = None, reply_to: int | None = None
    ) -> int:
        reply = None if reply_to is None else str(reply_to)
        data = await self.data(SEND, c=course_id, t=text, k=key, r=reply)
        return int(data["sendMessage"]["messageId"])

    async def delete(self, course_id: str, message_id: int) -> None:
        data = await self.data(DELETE, c=course_id, m=str(message_id), k=f"del-{message_id}")
        assert data["deleteMessage"]["deleted"]

    async def event_cursor(self, course_id: str) -> str:
        """Where a client that has just loaded the history subscribes `courseEvents` after."""
        cursor: str = (await self.data(HISTORY, c=course_id))["messages"]["eventCursor"]
        return cursor


@contextlib.asynccontextmanager
async def api(url: str, token: str) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        yield Api(http, url, token)
