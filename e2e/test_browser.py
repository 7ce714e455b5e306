"""The web chat page in a real browser: headless Chromium (Debian's /usr/bin/chromium)
driven by the npm package playwright-core, through the gateway. The scripts in e2e/browser/
do the clicking and report what the pages showed; these tests set up the course, check the
report, and compare it with what the server stored.

Screenshots are kept under `test-artifacts/browser/` of the repository (ignored by git), so
what the pages looked like can be seen after a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from devstack.containers import ContainerTopology
from devstack.topology import Topology
from e2e.clients import GraphqlHttp
from nextcampus_common.chat_api import ChatApi
from nextcampus_common.keys import CourseKeys
from testing.plugin import npm_ci, run_node

if TYPE_CHECKING:
    from e2e.conftest import Gateway

pytestmark = pytest.mark.browser

BROWSER = Path(__file__).parent / "browser"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "browser"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HISTORY_PAGE_SIZE = 50  # what the page loads at a time (app.js)

SEND = """mutation($c: ID!, $text: String!) {
  sendMessage(courseId: $c, content: $text) { messageId }
}"""
HISTORY = """query($c: ID!, $limit: Int) {
  messages(courseId: $c, limit: $limit) { messages { messageId userId content deleted } }
}"""


@pytest.fixture(scope="session")
def browser_scripts() -> Path:
    if not CHROMIUM.exists() or shutil.which("chromium") is None:
        pytest.fail("Chromium is required: `make deps` installs Debian's chromium")
    npm_ci(BROWSER, "playwright-core")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return BROWSER


async def graphql_as(
    gateway: Gateway, token: str, query: str, variables: dict[str, Any]
) -> dict[str, Any]:
    async with GraphqlHttp(gateway.graphql_url) as http:
        response = await http.execute(query, variables, token=token)
    assert response.status == 200, response.describe()
    assert not response.errors, response.describe()
    assert response.data is not None
    return response.data


async def send_as(gateway: Gateway, token: str, course_id: str, text: str) -> str:
    data = await graphql_as(gateway, token, SEND, {"c": course_id, "text": text})
    message_id: str = data["sendMessage"]["messageId"]
    return message_id


async def stored(gateway: Gateway, token: str, course_id: str) -> list[dict[str, Any]]:
    """The course's messages as the server keeps them, oldest first."""
    data = await graphql_as(gateway, token, HISTORY, {"c": course_id, "limit": 200})
    messages: list[dict[str, Any]] = data["messages"]["messages"]
    return messages


async def run_script(script: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run a browser script (tokens in its environment, not in argv, which `ps` shows to
    every user); its JSON summary."""
    output = await run_node(script, env=env, within=150)
    summary: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    assert summary["ok"] is True
    return summary


class HandInHand:
    """A browser script that reports events on stdout and waits for the test's answer on
    stdin (lib.mjs `handOver`): the test does what a browser cannot, such as killing the
    processes behind the page, between the script's steps."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    @contextlib.asynccontextmanager
    async def run(cls, script: Path, env: dict[str, str]) -> AsyncIterator[HandInHand]:
        process = await asyncio.create_subprocess_exec(
            "node",
            str(script),
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            yield cls(process)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    async def _line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 90)
        if not line:
            await self.process.wait()
            assert self.process.stderr is not None
            stderr = (await self.process.stderr.read()).decode()
            raise AssertionError(f"the browser script exited {self.process.returncode}:\n{stderr}")
        event: dict[str, Any] = json.loads(line)
        return event

    async def event(self, name: str) -> dict[str, Any]:
        event = await self._line()
        assert event.get("event") == name, event
        return event

    async def answer(self, **data: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(data).encode() + b"\n")
        await self.process.stdin.drain()

    async def summary(self) -> dict[str, Any]:
        summary = await self._line()
        assert summary.get("ok") is True, summary
        await asyncio.wait_for(self.process.wait(), 30)
        return summary


def assert_png(path: Path) -> None:
    image = path.read_bytes()
    assert image.startswith(PNG_SIGNATURE), path
    assert len(image) > 10_000, f"{path} is nearly empty"


async def test_two_users_chat_through_the_page(gateway: Gateway, browser_scripts: Path) -> None:
    course_id = f"browser-{uuid.uuid4().hex[:8]}"
    alice = gateway.token("alice", [course_id])
    bob = gateway.token("bob", [course_id])
    # A message from before the pages open: both must show it from history.
    earlier = f"sent before the pages opened {uuid.uuid4().hex[:6]}"
    earlier_id = await send_as(gateway, alice, course_id, earlier)

    screenshot = ARTIFACTS / "two-users.png"
    screenshot.unlink(missing_ok=True)
    summary = await run_script(
        browser_scripts / "two_users.mjs",
        {
            "BASE_URL": gateway.url,
            "ALICE_TOKEN": alice,
            "BOB_TOKEN": bob,
            "COURSE_ID": course_id,
            "SCREENSHOT": str(screenshot),
            "HISTORY_TEXT": earlier,
        },
    )

    assert summary["status"] == "live"
    assert summary["consoleProblems"] == []
    hello, reply = summary["hello"], summary["reply"]
    assert int(earlier_id) < int(hello["id"]) < int(reply["id"])
    # Each page shows the earlier message, alice's and bob's: three, nothing twice.
    assert summary["messages"] == {"alice": 3, "bob": 3}
    # What the pages showed is what the server stored.
    assert await stored(gateway, bob, course_id) == [
        {"messageId": earlier_id, "userId": "alice", "content": earlier, "deleted": False},
        {"messageId": hello["id"], "userId": "alice", "content": hello["text"], "deleted": False},
        {"messageId": reply["id"], "userId": "bob", "content": reply["text"], "deleted": False},
    ]
    assert_png(screenshot)


async def test_history_moderation_rate_limit_and_expired_token(
    gateway: Gateway, browser_scripts: Path
) -> None:
    course_id = f"browser-{uuid.uuid4().hex[:8]}"
    seeded = HISTORY_PAGE_SIZE + 7
    # Seeded by several users, so none of them passes the default rate limit (10 per 10 s).
    seeders = [gateway.token(f"seeder-{n}", [course_id]) for n in range(8)]
    # One of them leaves a right-to-left override open: it must not reorder the next message.
    override_at = seeded - 3
    seeded_texts = [
        f"seeded {n}" + (" \u202eright-to-left, never closed" if n == override_at else "")
        for n in range(seeded)
    ]
    seeded_ids = [
        await send_as(gateway, seeders[n % len(seeders)], course_id, text)
        for n, text in enumerate(seeded_texts)
    ]
    # Three messages a day: nothing the page does is fast or slow enough to change whether
    # bob's fourth is refused (the bucket refills one message every 8 hours).
    budget = 3
    await gateway.apply_policy(course_id, rateLimit={"messages": budget, "perSeconds": 86_400})
    bob = gateway.token("bob", [course_id])
    for name in ("moderator.png", "rate-limited.png", "signed-out.png"):
        (ARTIFACTS / name).unlink(missing_ok=True)

    summary = await run_script(
        browser_scripts / "page_features.mjs",
        {
            "BASE_URL": gateway.url,
            "MODERATOR_TOKEN": gateway.token("mia", [course_id], moderates=[course_id]),
            "USER_TOKEN": bob,
            # Long expired: the pod refuses it at connection_init (Envoy lets a socket
            # without a token in the URL through).
            "EXPIRED_TOKEN": gateway.token("late", [course_id], ttl_seconds=-3600),
            "COURSE_ID": course_id,
            "SEEDED": str(seeded),
            "OVERRIDE_ID": seeded_ids[override_at],
            "SCREENSHOT_DIR": str(ARTIFACTS),
        },
    )

    # axe-core finds nothing against WCAG 2.x A/AA: the chat with a moderator's buttons,
    # an error shown, the sign-in form.
    assert summary["accessibility"] == {"moderatorView": [], "rateLimited": [], "signIn": []}
    # The newest page first, then everything with "load older", each once, in order.
    assert summary["firstPage"] == HISTORY_PAGE_SIZE
    assert summary["afterLoadOlder"] == seeded_ids
    # Bob moderates nothing and wrote none of these.
    assert summary["bobDeleteButtons"] == 0
    assert summary["deleted"] == {"id": seeded_ids[-1], "text": "message deleted"}

    # Each message is its own bidi paragraph: the override shows as stored and reverses only
    # the rest of its own message.
    bidi = summary["bidi"]
    assert bidi["overrideText"] == seeded_texts[override_at]
    assert bidi["nextText"] == seeded_texts[override_at + 1]
    assert bidi["nextFirstLeft"] < bidi["nextLastLeft"], bidi

    # Past the course's budget, bob is refused with a hint (the wait until the bucket has a
    # message again: hours), and the text stays in the box to be sent again.
    accepted = summary["accepted"]
    assert len(accepted) == budget, summary
    limited = summary["limited"]
    retry_after = re.search(r"sending too fast; try again in (\d+) s", limited["error"])
    assert retry_after is not None, limited
    assert int(retry_after.group(1)) > 3600, limited
    assert limited["composer"] == limited["text"] == f"bob says {budget}"
    assert summary["miaSeesAfterLimit"] == [*seeded_ids, *accepted]

    assert "invalid or expired" in summary["signIn"]["reason"]
    assert summary["signIn"]["status"].startswith("signed out")
    assert summary["signedInAgain"][-len(accepted) :] == accepted

    messages = await stored(gateway, bob, course_id)
    assert [m["messageId"] for m in messages] == [*seeded_ids, *accepted]
    assert messages[seeded - 1]["deleted"] is True
    assert sum(m["deleted"] for m in messages) == 1
    assert [m["content"] for m in messages[seeded:]] == [
        f"bob says {n}" for n in range(len(accepted))
    ]
    for name in ("moderator.png", "rate-limited.png", "signed-out.png"):
        assert_png(ARTIFACTS / name)
    assert summary["consoleProblems"] == []


async def test_page_goes_offline_and_resumes_after_every_graphql_process_died(
    gateway: Gateway, stack: Topology | ContainerTopology, browser_scripts: Path
) -> None:
    course_id = f"browser-{uuid.uuid4().hex[:8]}"
    ada = gateway.token("ada", [course_id])
    ben = gateway.token("ben", [course_id])
    seeded = [await send_as(gateway, ben, course_id, f"before the outage {n}") for n in range(2)]
    (ARTIFACTS / "offline.png").unlink(missing_ok=True)
    env = {
        "BASE_URL": gateway.url,
        "TOKEN": ada,
        "COURSE_ID": course_id,
        "SCREENSHOT_DIR": str(ARTIFACTS),
    }
    # gRPC backends reach the chat service through the gateway while no GraphQL pod runs.
    api = ChatApi(urllib.parse.urlsplit(gateway.url).netloc, max_attempts=1)
    try:
        async with HandInHand.run(browser_scripts / "page_outage.mjs", env) as page:
            assert (await page.event("live"))["ids"] == seeded
            for graphql in stack.graphqls:
                graphql.kill()
            await page.answer()
            offline = await page.event("offline")
            assert offline["status"] == "offline — reconnecting…"
            texts = [f"sent during the outage {n}" for n in range(3)]
            sent = [(await api.send(ben, course_id, text)).message.message_id for text in texts]
            for index in range(len(stack.graphqls)):
                await asyncio.to_thread(stack.restart_graphql, index)
            await page.answer(texts=texts)
            summary = await page.summary()
    finally:
        await api.close()

    # Resumed with `after`: what was sent meanwhile shows once, in order, after the rest;
    # what ada wrote while offline waited ("Sending…") and was sent once, when back.
    assert summary["arrived"] == sent
    assert summary["sendingWhileOffline"] == "Sending…"
    written = summary["writtenOffline"]
    assert summary["after"] == [*seeded, *sent, written["id"]]
    assert summary["composerAfter"] == ""
    assert summary["status"] == "live"
    # Offline through the whole outage, however many reconnects failed, then live.
    assert summary["statusesShown"] == ["offline", "live"], summary["statusesShown"]
    assert summary["consoleProblems"] == []
    messages = await stored(gateway, ada, course_id)
    assert [m["messageId"] for m in messages] == [*seeded, *sent, written["id"]]
    assert (messages[-1]["userId"], messages[-1]["content"]) == ("ada", written["text"])
    assert_png(ARTIFACTS / "offline.png")


async def test_a_send_the_shard_cannot_confirm_is_retried_by_the_page_and_stored_once(
    gateway: Gateway, stack: Topology | ContainerTopology, browser_scripts: Path
) -> None:
    """The course's Redis primary loses its replica (as it is after a failover, until the
    old primary rejoins): sends are not acknowledged. The page says so, keeps sending with
    the same clientMessageId, and the message is stored and shown once when the replica is
    back (README, "Delivery guarantees")."""
    redis = stack.redis
    assert redis is not None
    course_id = f"browser-{uuid.uuid4().hex[:8]}"
    ada = gateway.token("ada", [course_id])
    seeded = [await send_as(gateway, ada, course_id, "before")]
    primary = redis.primary_for(CourseKeys(course_id).seq)
    env = {
        "BASE_URL": gateway.url,
        "TOKEN": ada,
        "COURSE_ID": course_id,
        "SCREENSHOT_DIR": str(ARTIFACTS),
    }
    async with HandInHand.run(browser_scripts / "page_unconfirmed.mjs", env) as page:
        assert (await page.event("live"))["ids"] == seeded
        (replica,) = redis.replicas_of(primary)
        redis.kill_node(replica)
        await page.answer()
        retrying = await page.event("retrying")
        assert retrying == {
            "event": "retrying",
            "hint": "Not confirmed yet; sending again…",
            "sendLabel": "Sending…",
        }
        redis.start_node(replica)
        await asyncio.to_thread(redis.wait_healthy)
        await page.answer()
        summary = await page.summary()

    assert summary["composerAfter"] == ""
    assert summary["errorAfter"] == ""
    assert summary["after"] == [*seeded, summary["shownId"]]
    messages = await stored(gateway, ada, course_id)
    assert [(m["messageId"], m["content"]) for m in messages] == [
        (seeded[0], "before"),
        (summary["shownId"], summary["text"]),
    ]
    assert summary["consoleProblems"] == []
    assert_png(ARTIFACTS / "unconfirmed.png")
