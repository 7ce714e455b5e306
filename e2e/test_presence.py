"""Who is here, through the gateway: two users with several sockets spread over the GraphQL
processes (least-request balancing), one watching presenceChanged and typingChanged. The
other's sockets make them online once (whichever process holds them), their typing shows and
goes, and closing their last socket is a leave that reaches the watcher.

presenceChanged is live only, and a subscribe has no answer to say when it is live: the watcher
is first shown live by a probe user who comes and goes until the watcher sees them (as
`Subscriber.until_live` does with messages), so that bob's join cannot fall before it."""

from __future__ import annotations

import contextlib
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


def is_probe(user_id: str) -> bool:
    return user_id.startswith("presence-probe-")


def joined(subscriber: Subscriber, user_id: str) -> bool:
    return any(m["userId"] == user_id for e in subscriber.events for m in e["joined"])


async def until_presence_live(gateway: Gateway, course_id: str, presence: Subscriber) -> None:
    """Probe users, a new one each try, subscribe until `presence` sees one join (bounded);
    then that one leaves and `presence` sees it go: it is live, every later join reaches it."""
    for attempt in range(30):
        probe = f"presence-probe-{attempt}"
        token = gateway.token(probe, [course_id])
        async with Subscriber(gateway.ws_url, token, MESSAGE_ADDED, {"c": course_id}):
            with contextlib.suppress(TimeoutError):
                await presence.wait_until(lambda s, p=probe: joined(s, p), within=2)
        if joined(presence, probe):
            await presence.wait_until(
                lambda s, p=probe: any(p in e["left"] for e in s.events), within=30
            )
            return
    raise AssertionError("presenceChanged never went live")


async def test_presence_and_typing_through_the_gateway(gateway: Gateway, course_id: str) -> None:
    ann = gateway.token("ann", [course_id])
    bob = gateway.token("bob", [course_id])
    url = gateway.ws_url
    async with (
        Subscriber(url, ann, PRESENCE_CHANGED, {"c": course_id}, name="presence") as presence,
        Subscriber(url, ann, TYPING_CHANGED, {"c": course_id}, name="typing") as typing,
    ):
        await until_presence_live(gateway, course_id, presence)
        # Bob on several sockets: one user online, however many processes hold him.
        bobs = [Subscriber(url, bob, MESSAGE_ADDED, {"c": course_id}) for _ in range(4)]
        for subscriber in bobs:
            await subscriber.start()
        await presence.wait_until(
            lambda s: any(m["userId"] == "bob" for e in s.events for m in e["joined"]), within=30
        )
        seen = (await post(gateway, ann, PRESENCE, c=course_id))["presence"]
        # A probe that was not seen may still be leaving (its process ends it after its socket).
        members = [m["userId"] for m in seen["members"]]
        assert sorted(u for u in members if not is_probe(u)) == ["ann", "bob"]
        assert seen["onlineCount"] == len(members)

        assert (await post(gateway, bob, TYPING, c=course_id))["typing"]["published"]
        await typing.wait_until(
            lambda s: any(u["userId"] == "bob" for e in s.events for u in e["users"]), within=30
        )
        await typing.wait_until(lambda s: s.events[-1]["users"] == [], within=30)

        for subscriber in bobs:
            await subscriber.close()
        await presence.wait_until(lambda s: any("bob" in e["left"] for e in s.events), within=30)
        assert presence.events[-1]["onlineCount"] == 1
        left = [user for e in presence.events for user in e["left"] if not is_probe(user)]
        assert left == ["bob"], "one leave, after his last socket"
