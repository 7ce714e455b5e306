"""The web chat page in a real browser: headless Chromium (Debian's /usr/bin/chromium)
driven by the npm package playwright-core opens the page through the gateway as two users;
one sends, the other sees it, and back (e2e/browser/two_users.mjs does the clicking).

The screenshot of the second user's page is kept under `test-artifacts/browser/` of the
repository (ignored by git), so what the page looked like can be seen after a run.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest

from chatctl.testing import npm_ci, run_node

if TYPE_CHECKING:
    from e2e.conftest import Gateway

pytestmark = pytest.mark.browser

BROWSER = Path(__file__).parent / "browser"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "browser"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

SEND = """mutation($c: ID!, $text: String!) {
  sendMessage(courseId: $c, content: $text) { messageId }
}"""


@pytest.fixture(scope="session")
def two_users_script() -> Path:
    if not CHROMIUM.exists() or shutil.which("chromium") is None:
        pytest.fail("Chromium is required: `make deps` installs Debian's chromium")
    npm_ci(BROWSER, "playwright-core")
    return BROWSER / "two_users.mjs"


async def test_two_users_chat_through_the_page(gateway: Gateway, two_users_script: Path) -> None:
    course_id = f"browser-{uuid.uuid4().hex[:8]}"
    alice = gateway.token("alice", [course_id])
    bob = gateway.token("bob", [course_id])
    # A message from before the pages open: both must show it from history.
    earlier = f"sent before the pages opened {uuid.uuid4().hex[:6]}"
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gateway.graphql_url,
            json={"query": SEND, "variables": {"c": course_id, "text": earlier}},
            headers={"Authorization": f"Bearer {alice}"},
        ) as response,
    ):
        body = await response.json()
    assert not body.get("errors"), body
    earlier_id = body["data"]["sendMessage"]["messageId"]

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "two-users.png"
    screenshot.unlink(missing_ok=True)
    # Tokens in the environment, not in argv (`ps` shows argv to every user).
    output = await run_node(
        two_users_script,
        env={
            "BASE_URL": gateway.url,
            "ALICE_TOKEN": alice,
            "BOB_TOKEN": bob,
            "COURSE_ID": course_id,
            "SCREENSHOT": str(screenshot),
            "HISTORY_TEXT": earlier,
        },
        within=150,
    )
    summary = json.loads(output.strip().splitlines()[-1])

    assert summary["ok"] is True
    assert summary["status"] == "live"
    hello, reply = summary["hello"], summary["reply"]
    assert int(earlier_id) < int(hello["id"]) < int(reply["id"])
    # Each page shows the earlier message, alice's and bob's: three, nothing twice.
    assert summary["messages"] == {"alice": 3, "bob": 3}

    # What the pages showed is what the server stored.
    history = "query($c: ID!) { messages(courseId: $c) { messages { messageId userId content } } }"
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gateway.graphql_url,
            json={"query": history, "variables": {"c": course_id}},
            headers={"Authorization": f"Bearer {bob}"},
        ) as response,
    ):
        stored = (await response.json())["data"]["messages"]["messages"]
    assert stored == [
        {"messageId": earlier_id, "userId": "alice", "content": earlier},
        {"messageId": hello["id"], "userId": "alice", "content": hello["text"]},
        {"messageId": reply["id"], "userId": "bob", "content": reply["text"]},
    ]

    image = screenshot.read_bytes()
    assert image.startswith(PNG_SIGNATURE)
    assert len(image) > 10_000, "the screenshot is nearly empty"
