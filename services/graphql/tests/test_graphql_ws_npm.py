"""The reference JavaScript client: npm `graphql-ws` (installed here with `npm ci` from the
committed lock) runs a query, a mutation and a subscription against a real GraphQL process."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).parent / "js"


@pytest.fixture(scope="session")
def graphql_ws_client() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are required: apt-get install nodejs npm")
    if not (JS / "node_modules" / "graphql-ws").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=JS,
            check=True,
            timeout=300,
        )
    return JS / "client.mjs"


async def run_node(*args: str) -> dict[str, object]:
    import asyncio

    process = await asyncio.create_subprocess_exec(
        "node", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, stderr.decode()
    steps = [json.loads(line) for line in stdout.decode().splitlines()]
    return {step["step"]: step["value"] for step in steps}


async def test_graphql_ws_npm_client(graphql_ws_client, graphql_server, make_token, course_id):
    token = make_token("ada", [course_id])
    steps = await run_node(str(graphql_ws_client), graphql_server.ws_url, token, course_id)
    assert steps["me"] == {"data": {"me": {"userId": "ada", "courses": [course_id]}}}
    sent = steps["sent"]
    assert [m["messageId"] for m in steps["received"]] == sent
    assert [m["content"] for m in steps["received"]] == ["one", "two", "last"]
    assert steps["forbidden"]["errors"][0]["extensions"]["code"] == "FORBIDDEN"
