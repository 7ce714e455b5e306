"""Messages a Redis failover lost after subscribers had them, as GraphQL clients see it:
`messageDeleted` retracts them live, and `messageAdded(after:)` resumed after one of them
starts with its tombstone instead of failing or waiting for an id that never comes.

The loss is made directly in Redis (what the promoted replica holds: the lost messages and
their sequence never reached it); test_durability.py in the chat service makes a real one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gql import GraphQLRequest

from nextcampus_common.keys import CourseKeys

SEND = "mutation($c: ID!, $t: String!) { sendMessage(courseId: $c, content: $t) { messageId } }"
ADDED = """subscription($c: ID!, $after: ID) {
  messageAdded(courseId: $c, after: $after) { messageId previousMessageId content deleted }
}"""
DELETED = """subscription($c: ID!) {
  messageDeleted(courseId: $c) { messageId previousMessageId deleted }
}"""


def q(document: str, **variables: Any) -> GraphQLRequest:
    return GraphQLRequest(document, variable_values=variables)


class Events:
    """Results of one subscription, read in the background."""

    def __init__(self, session: Any, document: str, **variables: Any) -> None:
        self.results: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._read(session, q(document, **variables)))

    async def _read(self, session: Any, request: GraphQLRequest) -> None:
        async for result in session.subscribe(request):
            async with self._changed:
                self.results.append(next(iter(result.values())))
                self._changed.notify_all()

    async def until(self, count: int) -> list[dict[str, Any]]:
        async with asyncio.timeout(30), self._changed:
            await self._changed.wait_for(lambda: len(self.results) >= count)
        return self.results

    async def until_id(self, message_id: str) -> list[dict[str, Any]]:
        async with asyncio.timeout(30), self._changed:
            await self._changed.wait_for(
                lambda: any(r["messageId"] == message_id for r in self.results)
            )
        return list(self.results)

    def close(self) -> None:
        self._task.cancel()


async def test_lost_messages_are_retracted_to_graphql_subscribers(
    ws_session, cluster_client, course_id
):
    alice = await ws_session("alice", [course_id])
    bob = await ws_session("bob", [course_id])
    added = Events(bob, ADDED, c=course_id)
    deleted = Events(bob, DELETED, c=course_id)

    async def send(text: str) -> str:
        return (await alice.execute(q(SEND, c=course_id, t=text)))["sendMessage"]["messageId"]

    try:
        while not added.results:  # live once a probe arrives
            await send("probe")
            await asyncio.sleep(0.05)
        survivor = await send("survives")
        lost = [await send(f"lost {i}") for i in range(2)]
        seen = await added.until_id(lost[-1])
        assert [r["messageId"] for r in seen][-3:] == [survivor, *lost]

        keys = CourseKeys(course_id)
        for message_id in lost:
            cluster_client.delete(keys.message(message_id))
            cluster_client.zrem(keys.messages, message_id)
        cluster_client.set(keys.seq, survivor)

        # A client that had them resumes after the newest before anything else happened.
        carol = await ws_session("carol", [course_id])
        resumed = Events(carol, ADDED, c=course_id, after=lost[-1])
        (first,) = await resumed.until(1)
        assert first == {
            "messageId": lost[-1],
            "previousMessageId": survivor,
            "content": "",
            "deleted": True,
        }

        after = await send("after the failover")
        retractions = await deleted.until(2)
        assert [(r["messageId"], r["deleted"]) for r in retractions] == [(m, True) for m in lost]
        assert {r["previousMessageId"] for r in retractions} == {survivor}
        newest = (await added.until_id(after))[-1]
        assert newest["messageId"] == after
        assert int(after) > int(lost[-1])
        # carol's resumed subscription goes on live: the new message, nothing twice.
        await resumed.until(2)
        assert [r["messageId"] for r in resumed.results if not r["deleted"]] == [after]
        resumed.close()
    finally:
        added.close()
        deleted.close()
