"""The reference JavaScript client: npm `graphql-ws` (installed here with `npm ci` from the
committed lock) runs a query, a mutation and a subscription against a real GraphQL process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testing.plugin import npm_ci, run_node

JS = Path(__file__).parent / "js"


@pytest.fixture(scope="session")
def graphql_ws_client() -> Path:
    npm_ci(JS, "graphql-ws")
    return JS / "client.mjs"


async def client_steps(script: Path, *args: str) -> dict[str, object]:
    """The reference client's run: one JSON line per step."""
    steps = [json.loads(line) for line in (await run_node(script, *args)).splitlines()]
    return {step["step"]: step["value"] for step in steps}


async def test_graphql_ws_npm_client(graphql_ws_client, graphql_server, make_token, course_id):
    token = make_token("ada", [course_id])
    steps = await client_steps(graphql_ws_client, graphql_server.ws_url, token, course_id)
    assert steps["me"] == {"data": {"me": {"userId": "ada", "courseIds": [course_id]}}}
    sent = steps["sent"]
    assert [m["messageId"] for m in steps["received"]] == sent
    assert [m["content"] for m in steps["received"]] == ["one", "two", "last"]
    assert steps["forbidden"]["errors"][0]["extensions"]["code"] == "FORBIDDEN"
