"""Who is here, through the gateway: two users with several sockets spread over the GraphQL
processes (least-request balancing), one watching presenceChanged and typingChanged. The
other's sockets make them online once (whichever process holds them), their typing shows and
goes, and closing their last socket is a leave that reaches the watcher."""

from __future__ import annotations

from typing import Any

import aiohttp

from e2e.conftest import Gateway
from testing.ws import Subscriber

PRESENCE_CHANGED = (
    "subscription($c: ID!) { presenceChanged(courseId: $c) { onlineCount joined { userId } left } }"
)
TYPING_CHANGED = (
    "subscription($c: ID!) { typingChanged(courseId: $c) { users { userId threadId } } }"
)
MESSAGE_ADDED = "subscription($c: ID!) { messageAdded(courseId: $c) { messageId } }"
PRESENCE = "query($c: ID!) { presence(courseId: $c) { onlineCount members { userId } } }"
TYPING = "mutation($c: ID!) { typing(courseId: $c) { published } }"


async def post(gateway: Gateway, token: str, query: str, **variables: Any) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gateway.graphql_url,
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        body: dict[str, Any] = await response.json()
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


async def test_presence_and_typing_through_the_gateway(gateway: Gateway, course_id: str) -> None:
    ann = gateway.token("ann", [course_id])
    bob = gateway.token("bob", [course_id])
    url = gateway.ws_url
    async with (
        Subscriber(url, ann, PRESENCE_CHANGED, {"c": course_id}, name="presence") as presence,
        Subscriber(url, ann, TYPING_CHANGED, {"c": course_id}, name="typing") as typing,
    ):
        # Bob on several sockets: one user online, however many processes hold him.
        bobs = [Subscriber(url, bob, MESSAGE_ADDED, {"c": course_id}) for _ in range(4)]
        for subscriber in bobs:
            await subscriber.start()
        await presence.wait_until(
            lambda s: any(m["userId"] == "bob" for e in s.events for m in e["joined"]), within=30
        )
        seen = (await post(gateway, ann, PRESENCE, c=course_id))["presence"]
        assert sorted(m["userId"] for m in seen["members"]) == ["ann", "bob"]
        assert seen["onlineCount"] == 2

        assert (await post(gateway, bob, TYPING, c=course_id))["typing"]["published"]
        await typing.wait_until(
            lambda s: any(u["userId"] == "bob" for e in s.events for u in e["users"]), within=30
        )
        await typing.wait_until(lambda s: s.events[-1]["users"] == [], within=30)

        for subscriber in bobs:
            await subscriber.close()
        await presence.wait_until(lambda s: any("bob" in e["left"] for e in s.events), within=30)
        assert presence.events[-1]["onlineCount"] == 1
        left = [user for e in presence.events for user in e["left"]]
        assert left == ["bob"], "one leave, after his last socket"
