"""Presence across GraphQL processes (real processes: Redis Cluster, two chat, two GraphQL):
a user online through one process is seen from the other, and when a GraphQL process is
killed with SIGKILL (no goodbye) its users drop out within the bound — the chat service's
presence TTL (short here) plus a heartbeat of the surviving process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devstack.topology import Topology
from testing.ws import Subscriber

# Short for the test, yet ten heartbeats long: a loaded machine's late heartbeat is no death.
PRESENCE_TTL_SECONDS = 5.0
HEARTBEAT_SECONDS = 0.5
PRESENCE_CHANGED = (
    "subscription($c: ID!) { presenceChanged(courseId: $c) { onlineCount joined { userId } left } }"
)
MESSAGE_ADDED = "subscription($c: ID!) { messageAdded(courseId: $c) { messageId } }"
PRESENCE = "query($c: ID!) { presence(courseId: $c) { onlineCount members { userId } } }"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Topology]:
    topology = Topology.on_free_ports(
        tmp_path / "stack",
        gateway=False,
        chat_overrides={"presence_ttl_seconds": PRESENCE_TTL_SECONDS},
        graphql_overrides={"presence_heartbeat_seconds": HEARTBEAT_SECONDS},
    )
    topology.start()
    yield topology
    topology.stop()


async def presence(url: str, token: str, course_id: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url,
            json={"query": PRESENCE, "variables": {"c": course_id}},
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        body: dict[str, Any] = await response.json()
    assert "errors" not in body, body
    result: dict[str, Any] = body["data"]["presence"]
    return result


def ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://", 1)


async def test_a_killed_graphql_process_drops_its_users_within_the_bound(stack, make_token):
    course_id = "presence-kill"
    ann_token, bob_token = make_token("ann", [course_id]), make_token("bob", [course_id])
    survivor, doomed = stack.graphql_urls
    # Bob is online through the other process only.
    async with (
        Subscriber(ws_url(survivor), ann_token, PRESENCE_CHANGED, {"c": course_id}) as ann,
        Subscriber(ws_url(doomed), bob_token, MESSAGE_ADDED, {"c": course_id}),
    ):
        await ann.wait_until(
            lambda s: any(m["userId"] == "bob" for e in s.events for m in e["joined"]), within=30
        )
        seen = await presence(doomed, bob_token, course_id)
        assert sorted(m["userId"] for m in seen["members"]) == ["ann", "bob"]
        assert seen["onlineCount"] == 2

        stack.graphqls[1].kill()  # SIGKILL: no leave, no goodbye
        # The bound: the TTL, then a survivor's heartbeat (with room for a loaded machine).
        await ann.wait_until(
            lambda s: any("bob" in e["left"] for e in s.events),
            within=PRESENCE_TTL_SECONDS + HEARTBEAT_SECONDS + 15,
        )
        assert ann.events[-1]["onlineCount"] == 1
        seen = await presence(survivor, ann_token, course_id)
        assert [m["userId"] for m in seen["members"]] == ["ann"]
