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
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

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


# After GraphQL pods restarted: this many answers in a row through the gateway, and Envoy
# routes every request to a live pod again (a restarted container may come back under
# another address; until Envoy has re-resolved it, some requests time out with a 503).
SERVING_AGAIN_IN_A_ROW = 20


async def wait_serving_again(gateway: Gateway, token: str, within: float = 90) -> None:
    """Bounded: until the gateway answers SERVING_AGAIN_IN_A_ROW queries in a row."""
    in_a_row = 0
    async with asyncio.timeout(within), GraphqlHttp(gateway.graphql_url) as http:
        while in_a_row < SERVING_AGAIN_IN_A_ROW:
            response = await http.execute("{ me { userId } }", {}, token=token)
            in_a_row = in_a_row + 1 if response.status == 200 else 0
            if not in_a_row:
                await asyncio.sleep(0.2)


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
    # The wait in the largest unit it fills (Intl.RelativeTimeFormat): hours here.
    retry_after = re.search(r"sending too fast; try again in (\d+) hours\.", limited["error"])
    assert retry_after is not None, limited
    assert int(retry_after.group(1)) > 1, limited
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
            # The page found a live pod on its own; what follows (and the next test's page,
            # which loads several files) needs every request routed to one.
            await wait_serving_again(gateway, ada)
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


# What a page's own words may hold besides its language's script: the product's name, the
# keys of the composer's hint, a time zone (GMT+9), a pseudonym's tag (·1a2b: the viewer's own
# is in the anonymous note, whoever they are).
LATIN_IN_KOREAN = re.compile(r"Next Campus|Enter|Shift|GMT|·[0-9a-f]{4}")
HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
Words = list[list[str]]  # [where, language, text] (lib.mjs pageWords)


def without(text: str, user_content: Iterable[str]) -> str:
    for content in user_content:
        text = text.replace(content, "")
    return text


def assert_in_korean(words: Words, user_content: set[str]) -> None:
    """Every word of the page marked Korean is Korean; only the language menu's "English"
    is marked otherwise."""
    assert {(where, text) for where, lang, text in words if lang != "ko"} == {
        ("#language > option:nth-child(1)", "English")
    }
    for where, _, text in words:
        if where.startswith("#language >"):
            continue
        rest = LATIN_IN_KOREAN.sub("", without(text, user_content))
        assert not re.search("[A-Za-z]", rest), f"not Korean at {where}: {text!r}"


def assert_in_english(words: Words) -> None:
    assert {(where, text) for where, lang, text in words if lang != "en"} == {
        ("#language > option:nth-child(2)", "한국어")
    }
    for where, _, text in words:
        if not where.startswith("#language >"):
            assert not HANGUL.search(text), f"not English at {where}: {text!r}"


# A course button's badges (unread, mentions) come and go with the read state, which the page
# changes by itself (it marks read at the bottom): not the same parts before and after.
COURSE_BADGES = re.compile(r"^#courses > .* > span:nth-child\(2\)")


def transient(where: str) -> bool:
    """Words not compared before and after a switch: the language menu names each language
    in its own, and the badges may have gone meanwhile."""
    return where.startswith("#language >") or bool(COURSE_BADGES.match(where))


def assert_every_word_changed(before: Words, after: Words, user_content: set[str]) -> None:
    """The same parts of the page, each worded again: only the author's content (user ids,
    the course id) and each language's own name stay as they were."""
    old = {where: text for where, _, text in before if not transient(where)}
    new = {where: text for where, _, text in after if not transient(where)}
    assert old.keys() == new.keys()
    unchanged = {
        where: text
        for where, text in old.items()
        if new[where] == text and re.search(r"\w", without(text, user_content))
    }
    assert not unchanged, f"not worded again: {unchanged}"


def local_time(iso: str, zone: str) -> tuple[int, int]:
    """A message's hour on a 12-hour clock and minute in `zone`."""
    when = datetime.fromisoformat(iso).astimezone(ZoneInfo(zone))
    return (when.hour % 12 or 12, when.minute)


async def test_a_korean_and_an_english_page_chat_each_in_its_language(
    gateway: Gateway, browser_scripts: Path
) -> None:
    """minji's Chromium speaks Korean in Seoul (--lang=ko-KR, locale ko-KR, Asia/Seoul),
    alice's English in New York: each page speaks its browser's language, shows times in its
    locale and time zone, switches every word in place with its language control, remembers
    the choice after a reload, and passes axe-core in both languages."""
    course_id = f"browser-{uuid.uuid4().hex[:8]}"
    # One message a day: minji's second send is refused, with a wait of hours.
    await gateway.apply_policy(course_id, rateLimit={"messages": 1, "perSeconds": 86_400})
    minji = gateway.token("minji", [course_id])
    alice = gateway.token("alice", [course_id])
    for name in ("korean.png", "english.png"):
        (ARTIFACTS / name).unlink(missing_ok=True)

    summary = await run_script(
        browser_scripts / "page_languages.mjs",
        {
            "BASE_URL": gateway.url,
            "KO_TOKEN": minji,
            "EN_TOKEN": alice,
            "COURSE_ID": course_id,
            "SCREENSHOT_DIR": str(ARTIFACTS),
        },
    )

    assert summary["consoleProblems"] == []
    # No page asked for a key (or a plural form this browser's Intl needs) a catalogue lacks.
    assert summary["missingBeforeReload"] == summary["missing"] == {"minji": [], "alice": []}
    user_content = {"minji", "alice", course_id}

    # The Korean page, as minji's browser asked for.
    ko = summary["ko"]
    assert (ko["lang"], ko["languageChosen"], ko["title"]) == ("ko", "ko", "Next Campus 채팅")
    assert ko["languageOptions"] == [["en", "en", "English"], ["ko", "ko", "한국어"]]
    assert ko["status"] == "실시간 연결됨"
    assert ko["viewer"] == "minji 님으로 로그인했어요"
    assert (ko["send"], ko["composerLabel"]) == ("보내기", "메시지")
    assert ko["hint"] == "Enter 키를 누르면 보내지고, Shift+Enter 키를 누르면 줄이 바뀌어요."
    # Times in ko-KR and Seoul's time zone: "오후 3:04", with the full date as the title.
    korean_time = re.search(r"(오전|오후) (\d{1,2}):(\d{2})$", ko["time"]["text"])
    assert korean_time is not None, ko["time"]
    hour, minute = local_time(ko["time"]["dateTime"], "Asia/Seoul")
    assert (int(korean_time.group(2)), int(korean_time.group(3))) == (hour, minute)
    assert re.search(r"\d{4}년 \d{1,2}월 \d{1,2}일 .요일 (오전|오후) ", ko["time"]["title"])
    assert ko["time"]["title"].endswith("GMT+9"), ko["time"]
    assert re.fullmatch(
        r"minji 님이 (오전|오후) \d{1,2}:\d{2}에 보낸 메시지 삭제", ko["deleteLabel"]
    )
    # Refused by its code (RATE_LIMITED), worded in Korean with the wait in hours.
    assert re.fullmatch(
        r"메시지를 너무 빨리 보내고 있어요\. \d+시간 후 다시 시도해 주세요\.", ko["error"]
    ), ko["error"]
    assert summary["refused"]["composer"] == summary["refused"]["text"]
    assert summary["tombstones"]["ko"] == "삭제된 메시지예요"
    assert_in_korean(summary["words"]["ko"], user_content)

    # The English page, in New York's time zone: the same message at another hour.
    en = summary["en"]
    assert (en["lang"], en["languageChosen"], en["title"]) == ("en", "en", "Next Campus Chat")
    assert (en["status"], en["viewer"], en["send"]) == ("live", "Signed in as alice", "Send")
    english_time = re.search(r"(\d{1,2}):(\d{2})\s(AM|PM)$", en["time"]["text"])
    assert english_time is not None, en["time"]
    hour, minute = local_time(en["time"]["dateTime"], "America/New_York")
    assert (int(english_time.group(1)), int(english_time.group(2))) == (hour, minute)
    assert re.search(r"(Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day, ", en["time"]["title"])
    assert re.search(r" E[SD]T$", en["time"]["title"]), en["time"]
    assert summary["confirmations"] == ["Delete this message for everyone?"]
    assert summary["aliceDeleteLabel"].startswith("Delete message of alice at ")
    assert summary["tombstones"]["en"] == "message deleted"
    assert_in_english(summary["words"]["en"])

    # Switched on the page: every word, in place (no reload; minji's text stays typed and her
    # error line is worded again in English).
    switched = summary["switched"]
    assert switched["notReloaded"] == [True, True]
    assert switched["minjiComposer"] == summary["refused"]["text"]
    assert (switched["en"]["lang"], switched["ko"]["lang"]) == ("en", "ko")
    assert (switched["en"]["status"], switched["ko"]["status"]) == ("live", "실시간 연결됨")
    assert re.fullmatch(
        r"You are sending too fast; try again in \d+ hours\.", switched["en"]["error"]
    ), switched["en"]["error"]
    # minji's page keeps her time zone in English: "3:04 PM" in Seoul.
    assert re.search(r"\d:\d{2}\s(AM|PM)$", switched["en"]["time"]["text"])
    assert_in_english(switched["words"]["en"])
    assert_in_korean(switched["words"]["ko"], user_content)
    assert_every_word_changed(summary["words"]["ko"], switched["words"]["en"], user_content)
    assert_every_word_changed(summary["words"]["en"], switched["words"]["ko"], user_content)

    # Remembered: after a reload alice's page is still Korean, though her browser is English.
    reloaded = summary["reloaded"]
    assert (reloaded["stored"], reloaded["reloaded"]) == ("ko", False)
    assert (reloaded["ko"]["lang"], reloaded["ko"]["status"]) == ("ko", "실시간 연결됨")
    assert_in_korean(reloaded["words"], user_content)

    # axe-core: nothing against WCAG 2.x A/AA in either language, before and after a switch.
    assert summary["accessibility"] == {"ko": [], "en": []}
    assert switched["accessibility"] == {"ko": [], "en": []}
    for name in ("korean.png", "english.png"):
        assert_png(ARTIFACTS / name)

    # What the pages showed is what the server stored: the refused send is not there.
    hello, reply = summary["hello"], summary["reply"]
    assert await stored(gateway, alice, course_id) == [
        {"messageId": hello["id"], "userId": "minji", "content": hello["text"], "deleted": False},
        {"messageId": reply["id"], "userId": "alice", "content": "", "deleted": True},
    ]


THREAD = """query($c: ID!, $root: ID!) {
  thread(courseId: $c, rootId: $root) {
    root { messageId content deleted replyCount participants pinnedAt reactions { emoji count } }
    replies { messageId userId content replyTo }
  }
}"""


async def test_conversations_on_a_korean_and_an_english_page(
    gateway: Gateway, browser_scripts: Path
) -> None:
    """minji (a student, Korean page in Seoul) and alice (a moderator, English page in New
    York): replies in a thread, an edit and its history, reactions, pins, and a deleted
    root whose thread stays, each seen live on the other page (page_conversations.mjs)."""
    course_id = f"browser-{uuid.uuid4().hex[:8]}"
    minji = gateway.token("minji", [course_id])
    alice = gateway.token("alice", [course_id], moderates=[course_id])
    shots = [
        f"{feature}-{language}.png"
        for feature in ("thread", "edit", "reactions", "pins", "deleted-root")
        for language in ("ko", "en")
    ]
    for name in shots:
        (ARTIFACTS / name).unlink(missing_ok=True)

    summary = await run_script(
        browser_scripts / "page_conversations.mjs",
        {
            "BASE_URL": gateway.url,
            "KO_TOKEN": minji,
            "EN_TOKEN": alice,
            "COURSE_ID": course_id,
            "SCREENSHOT_DIR": str(ARTIFACTS),
        },
    )

    assert summary["consoleProblems"] == []
    assert summary["missing"] == {"minji": [], "alice": []}
    ids, texts = summary["ids"], summary["texts"]
    root_id = ids["root"]

    # Replies: the thread opens on Reply with the focus in its composer (on "View thread":
    # its heading); Escape closes it and gives the focus back to Reply.
    focus = summary["focus"]
    assert focus["threadOpenedByReply"]["id"] == "thread-composer"
    assert focus["threadOpenedByView"]["id"] == "thread-heading"
    assert (summary["replyExpanded"], summary["replyExpandedAfterClose"]) == ("true", "false")
    assert (focus["threadClosed"]["action"], focus["threadClosed"]["message"]) == ("reply", root_id)
    # The timeline shows roots only: each page lists the root alone.
    assert summary["repliesInTimeline"] == {"ko": 0, "en": 0}
    assert summary["timeline"] == {"ko": [root_id], "en": [root_id]}
    assert re.fullmatch(
        r"답글 1개마지막 답글 (오전|오후) \d{1,2}:\d{2}alice 님이 답글을 달았어요",
        summary["threadFacts"]["ko"],
    ), summary["threadFacts"]
    assert re.fullmatch(
        r"1 replylast reply \d{1,2}:\d{2}\s(AM|PM)Replies from alice", summary["threadFacts"]["en"]
    ), summary["threadFacts"]
    # The most recent first.
    assert summary["participants"] == {
        "ko": "minji 및 alice 님이 답글을 달았어요",
        "en": "Replies from minji and alice",
    }
    assert summary["threadRoot"] == texts["root"]

    # Edit: Escape cancels (nothing changed, focus back on Edit); Enter saves; the other page
    # shows the new text and the marker live; the author and the moderator read the history.
    assert focus["editorOpened"]["inEditor"] is True
    assert (focus["editorCancelled"]["action"], summary["textAfterCancel"]) == (
        "edit",
        texts["root"],
    )
    assert focus["editorSaved"]["action"] == "edit"
    assert summary["aliceEditButtons"] == 0  # a moderator deletes and pins, never edits
    assert summary["editedMarker"]["en"].startswith("Edited ")
    assert re.search(r"\d{4}년 .*에 수정됨$", summary["editedMarker"]["ko"]), summary[
        "editedMarker"
    ]
    history = summary["editHistory"]
    assert history["versionText"] == texts["root"]
    assert history["expanded"] == "true"
    assert history["ko"].startswith("이전 버전 1개")
    assert texts["root"] in history["ko"]
    assert history["en"].startswith("1 earlier version")
    assert "Written " in history["en"]
    user_content = {"minji", "alice", course_id, "👍"}
    assert_in_korean(summary["words"]["ko"], user_content)
    assert_in_english(summary["words"]["en"])

    # Reactions: the counts on both pages, each page pressing only its own.
    assert summary["focus"]["pickerOpened"]["inPicker"] is True
    assert summary["pickerExpanded"] == "true"
    reactions = summary["reactions"]
    assert reactions["afterAlice"] == {
        "en": {"count": "1", "pressed": "true"},
        "ko": {"count": "1", "pressed": "false"},
    }
    assert reactions["afterMinji"] == {
        "en": {"count": "2", "pressed": "true"},
        "ko": {"count": "2", "pressed": "true"},
    }
    assert reactions["afterAliceUndid"] == {
        "en": {"count": "1", "pressed": "false"},
        "ko": {"count": "1", "pressed": "true"},
    }
    assert reactions["label"] == {"en": "2 people reacted with 👍", "ko": "👍 반응 수: 2"}

    # Pins: only the moderator's page offers them; both panels follow live.
    assert summary["minjiPinButtons"] == 0
    assert summary["alicePinButtons"] == 1
    pins = summary["pins"]
    assert pins["expanded"] == "true"
    assert pins["markers"] == {"en": "pinned", "ko": "고정됨"}
    assert pins["panel"] == {"en": texts["edited"], "ko": texts["edited"]}
    assert pins["emptyAfterUnpin"] == {
        "en": "No pinned messages yet.",
        "ko": "아직 고정된 메시지가 없어요.",
        "toggle": "고정된 메시지 0개",
    }

    # A deleted root keeps its thread, which takes a third reply (sent to its newest reply).
    deleted = summary["deletedRoot"]
    assert deleted["en"] == "message deleted"
    assert deleted["replies"] == ids["replies"]
    assert deleted["reply"] == 0

    # axe-core: nothing against WCAG 2.x A/AA with the thread, the edit history, the pins
    # panel open, and after the delete, on both pages.
    for view in ("thread", "editHistory", "pins", "deletedRoot"):
        assert summary["accessibility"][view] == {"ko": [], "en": []}, view
    for name in shots:
        assert_png(ARTIFACTS / name)

    # What the pages showed is what the server stored.
    data = await graphql_as(gateway, alice, THREAD, {"c": course_id, "root": root_id})
    root = data["thread"]["root"]
    assert (root["deleted"], root["replyCount"], root["pinnedAt"]) == (True, 3, None)
    assert root["participants"][:2] == ["alice", "minji"]
    assert [
        (reply["messageId"], reply["userId"], reply["content"], reply["replyTo"])
        for reply in data["thread"]["replies"]
    ] == [
        (ids["replies"][0], "alice", texts["replies"][0], root_id),
        (ids["replies"][1], "minji", texts["replies"][1], root_id),
        (ids["replies"][2], "alice", texts["replies"][2], root_id),
    ]


async def test_a_page_back_from_offline_resumes_every_change_from_its_cursor(
    gateway: Gateway, browser_scripts: Path
) -> None:
    """minji's Korean page loses its socket while alice edits, reacts, deletes and sends;
    back online it resubscribes courseEvents after the last cursor it had seen and shows the
    final state, each message once, and is online again for alice (page_events_offline.mjs)."""
    course_id = f"browser-{uuid.uuid4().hex[:8]}"
    minji = gateway.token("minji", [course_id])
    alice = gateway.token("alice", [course_id])
    for name in ("offline-changes-en.png", "offline-resumed-ko.png"):
        (ARTIFACTS / name).unlink(missing_ok=True)

    summary = await run_script(
        browser_scripts / "page_events_offline.mjs",
        {
            "BASE_URL": gateway.url,
            "KO_TOKEN": minji,
            "EN_TOKEN": alice,
            "COURSE_ID": course_id,
            "SCREENSHOT_DIR": str(ARTIFACTS),
        },
    )

    assert summary["consoleProblems"] == []
    ids, texts = summary["ids"], summary["texts"]
    assert summary["offlineStatus"] == "오프라인 — 다시 연결하는 중…"
    assert summary["stillOffline"] == "offline"
    assert summary["shownWhileOffline"] == texts["edited"]
    # The first subscription went live after the history's eventCursor; the one after the
    # outage resumed after the last event seen.
    first, *resumed = summary["subscriptions"]
    assert isinstance(first, str)
    assert resumed == [summary["cursorWhenCut"]]
    assert summary["before"] == [ids["edited"], ids["reacted"], ids["deleted"]]
    assert summary["after"] == [*summary["before"], ids["added"]]
    assert summary["shown"] == {
        "edited": texts["editedTo"],
        "editedMarker": "수정됨",
        "reaction": "1",
        "reactionPressed": "false",
        "deleted": "삭제된 메시지예요",
    }
    assert summary["status"] == "실시간 연결됨"
    # Every subscription went with the socket and came back with it; presence is live only,
    # so the page asked for the online count again (alice saw minji leave and come back).
    operations = summary["operations"]
    resumed = operations["all"][len(operations["before"]) :]
    for name in ("Events", "MyUpdates", "PresenceChanged", "TypingChanged", "OnlineCount"):
        assert name in operations["before"], (name, operations)
        assert name in resumed, (name, operations)
    for name in ("offline-changes-en.png", "offline-resumed-ko.png"):
        assert_png(ARTIFACTS / name)


MY_READ_STATE = """{ me { courses { courseId unreadCount mentionCount lastReadMessageId } } }"""
MY_MENTIONS = """{ myMentions(limit: 10) { messages { courseId messageId userId } } }"""


async def test_unread_badges_the_new_messages_divider_and_mentions_on_both_pages(
    gateway: Gateway, browser_scripts: Path
) -> None:
    """jisoo (two courses, a Korean and an English page) and ben, who writes in one of them
    and mentions her: both pages count up live, show "new messages" and the mention when she
    opens the course; scrolling to the bottom marks it read and clears the badge;
    the mentions panel lists the mentions, live, and opens one by keyboard
    (page_read_state.mjs)."""
    one, two = (f"browser-{uuid.uuid4().hex[:8]}" for _ in range(2))
    jisoo = gateway.token("jisoo", [one, two])
    ben = gateway.token("ben", [two])
    # ben writes 14 messages within seconds: more than the default budget of 10 per 10 s.
    await gateway.apply_policy(two, rateLimit={"messages": 50, "perSeconds": 10})
    shots = [
        f"{name}-{language}.png" for name in ("read-state", "mentions") for language in ("ko", "en")
    ]
    for name in shots:
        (ARTIFACTS / name).unlink(missing_ok=True)

    summary = await run_script(
        browser_scripts / "page_read_state.mjs",
        {
            "BASE_URL": gateway.url,
            "JISOO_TOKEN": jisoo,
            "BEN_TOKEN": ben,
            "COURSE_ONE": one,
            "COURSE_TWO": two,
            "SCREENSHOT_DIR": str(ARTIFACTS),
        },
    )

    assert summary["consoleProblems"] == []
    assert summary["missing"] == {"jisoo-ko": [], "jisoo-en": [], "ben": []}
    ids, texts = summary["ids"], summary["texts"]
    news = ids["news"]
    mention_id = news[1]

    # Live badges: the unread count with the mention apart, named in words in each language;
    # the course open on the page and ben's own course have none.
    live = summary["badges"]["live"]
    assert live["en"] == "12 unread, 1 mention"
    assert live["ko"] == "안 읽은 메시지 12개, 멘션 1개"
    assert live["shown"] == ["12", "@1"]
    assert live["mentionsToggle"] == {"en": "1 mention", "ko": "멘션 1개"}
    assert live["courseOne"] == {"en": None, "ko": None}
    assert live["benCourseTwo"] is None
    # ben's page highlights the mention too, but not as his own.
    assert summary["benHighlighted"] == [{"text": "@jisoo", "me": False}]

    # Opened: the divider right above ben's first new message (the earlier one was read),
    # shown at the top of the view rather than scrolled past; the mention marked.
    for language, words in (("en", "New messages"), ("ko", "새 메시지")):
        opened = summary["opened"][language]
        assert opened["divider"] == words
        assert (opened["dividerAfter"], opened["dividerBefore"]) == (ids["earlier"], news[0])
        assert opened["dividerShown"] is True
        assert opened["atBottom"] is False
        assert opened["mentionsOfMe"] == [mention_id]
        assert opened["highlighted"] == ["@jisoo"]
        assert opened["current"] == two
    assert summary["opened"]["en"]["marker"] == "mentions you"
    assert summary["opened"]["ko"]["marker"] == "나를 언급함"
    assert summary["badges"]["opened"] == {
        "en": "12 unread, 1 mention",
        "ko": "안 읽은 메시지 12개, 멘션 1개",
    }
    assert_in_korean(summary["words"], {"jisoo", "ben", one, two})

    # Scrolled to the bottom: read; the divider stays where it was.
    assert summary["badges"]["read"] == {"ko": None, "mentionsToggle": 0}
    assert summary["dividerStays"] == news[0]

    # The panel: both mentions, newest first, each in its course and highlighted.
    for language, heading, origin in (
        ("en", "Mentions of you", "ben in " + two),
        ("ko", "나를 언급한 메시지", f"{two} 강의의 ben 님"),
    ):
        panel = summary["panel"][language]
        assert (panel["expanded"], panel["heading"]) == ("true", heading)
        assert [(e["course"], e["id"], e["from"]) for e in panel["entries"]] == [
            (two, ids["again"], origin),
            (two, mention_id, origin),
        ]
        assert [e["text"] for e in panel["entries"]] == [texts["again"], texts["news"][1]]
        assert all(e["highlighted"] == ["@jisoo"] for e in panel["entries"])

    # Keyboard: Enter on a mention opens its course and focuses the message; Escape closes
    # the panel and the focus returns to its toggle.
    keyboard = summary["keyboard"]
    assert keyboard["opened"]["message"] == mention_id
    assert keyboard["current"] == two
    assert keyboard["messageInView"] is True
    assert keyboard["closed"]["id"] == "mentions-toggle"
    assert keyboard["expanded"] == "false"

    for view in ("readState", "mentions"):
        assert summary["accessibility"][view] == {"ko": [], "en": []}, view
    for name in shots:
        assert_png(ARTIFACTS / name)

    # What the pages showed is what the server keeps: read up to ben's newest message (the
    # Korean page was at the bottom when it came), and both mentions.
    data = await graphql_as(gateway, jisoo, MY_READ_STATE, {})
    courses = {course["courseId"]: course for course in data["me"]["courses"]}
    assert courses[two] == {
        "courseId": two,
        "unreadCount": 0,
        "mentionCount": 0,
        "lastReadMessageId": ids["again"],
    }
    data = await graphql_as(gateway, jisoo, MY_MENTIONS, {})
    assert [
        (m["courseId"], m["messageId"], m["userId"]) for m in data["myMentions"]["messages"]
    ] == [
        (two, ids["again"], "ben"),
        (two, mention_id, "ben"),
    ]


PRESENCE = """query($c: ID!) { presence(courseId: $c) { onlineCount members { userId } } }"""


async def test_who_is_online_and_who_types_on_a_korean_and_an_english_page(
    gateway: Gateway, browser_scripts: Path
) -> None:
    """alice (English page, New York) and minji (Korean page, Seoul): "N online" live, the
    member list on demand and by keyboard, "X is typing…" for the others only (written once
    while renewed, gone with the send), in the thread panel for a thread's typists, two and
    three typists worded as a list and as a count, and minji's closed page going offline
    (page_presence.mjs)."""
    course_id = f"browser-{uuid.uuid4().hex[:8]}"
    tokens = {
        f"{name.upper()}_TOKEN": gateway.token(name, [course_id])
        for name in ("minji", "alice", "carol", "dan", "eve", "frank")
    }
    shots = [
        f"{name}-{language}.png" for name in ("presence", "typing") for language in ("ko", "en")
    ]
    for name in shots:
        (ARTIFACTS / name).unlink(missing_ok=True)

    summary = await run_script(
        browser_scripts / "page_presence.mjs",
        {
            "BASE_URL": gateway.url,
            **tokens,
            "COURSE_ID": course_id,
            "SCREENSHOT_DIR": str(ARTIFACTS),
        },
    )

    assert summary["consoleProblems"] == []
    assert summary["missing"] == {"alice": [], "minji": []}

    # "N online", live, in each language; the member list only on demand.
    online = summary["online"]
    assert online["before"] == {"en": "2 online", "ko": "2명 접속 중"}
    assert online["listHiddenBefore"] is True
    members = summary["members"]
    assert [(m["id"], m["name"]) for m in members["en"]] == [
        ("alice", "alice (you)"),
        ("minji", "minji"),
    ]
    assert [(m["id"], m["name"]) for m in members["ko"]] == [
        ("alice", "alice"),
        ("minji", "minji (나)"),
    ]
    assert all(m["since"].startswith("online since ") for m in members["en"]), members
    assert all(m["since"].endswith("부터 접속 중") for m in members["ko"]), members
    # Enter opens the list with the focus on its heading; Escape closes it, focus back.
    assert summary["keyboard"] == {
        "opened": "presence-heading",
        "expanded": "true",
        "closed": "presence-toggle",
        "expandedAfter": "false",
    }

    # Typing: the others only, written once however often renewed, gone with the send.
    typing = summary["typing"]
    assert typing["typedForMs"] > 6000  # minji's page renewed `typing` meanwhile
    assert typing["shown"] == "minji is typing…"
    assert typing["ownPage"] == ""
    assert typing["writesWhileTyping"] == ["minji is typing…"]
    assert (typing["afterSend"], typing["writes"]) == ("", ["minji is typing…", ""])
    assert typing["composerAfterSend"] == ""
    assert (typing["ko"], typing["aliceOwnPage"]) == ("alice 님이 입력하고 있어요…", "")
    assert typing["thread"] == {"thread": "carol is typing…", "course": "", "minjiCourse": ""}
    assert typing["two"] == {
        "en": "dan and eve are typing…",
        "ko": "dan 및 eve 님이 입력하고 있어요…",
    }
    assert typing["three"] == {"en": "3 people are typing…", "ko": "3명이 입력하고 있어요…"}
    user_content = {"minji", "alice", course_id}
    assert_in_korean(summary["words"]["presence"], user_content)
    assert_in_korean(summary["words"]["typing"], user_content)

    # minji's page closed: offline for alice, in the count and the list.
    assert online["after"] == "1 online"
    assert [m["id"] for m in members["after"]] == ["alice"]

    for view in ("presence", "typing"):
        assert summary["accessibility"][view] == {"ko": [], "en": []}, view
    for name in shots:
        assert_png(ARTIFACTS / name)

    # Both pages closed: no one is online any more (the leaves are made as the sockets end).
    async with asyncio.timeout(10):
        while True:
            data = await graphql_as(gateway, tokens["ALICE_TOKEN"], PRESENCE, {"c": course_id})
            if data["presence"] == {"onlineCount": 0, "members": []}:
                break
            await asyncio.sleep(0.2)


ASK = """mutation($c: ID!, $text: String!) {
  sendMessage(courseId: $c, content: $text, kind: QUESTION) { messageId }
}"""
ANSWER = """mutation($c: ID!, $text: String!, $question: ID!) {
  sendMessage(courseId: $c, content: $text, replyTo: $question) { messageId }
}"""
QUESTION_THREAD = """query($c: ID!, $root: ID!) {
  thread(courseId: $c, rootId: $root) {
    root { messageId userId kind resolvedAt endorsedAnswerCount }
    replies { messageId userId endorsedAt }
  }
}"""
# The question the page must suggest while minji types a rewording of it, among others of
# the course (similarQuestions: character n-gram TF-IDF; the suggestion is the page's part).
SEEDED_QUESTION = "How do I submit homework 3 on the course portal?"
TYPED_QUESTION = "How can I hand in the third homework on the course portal?"
OTHER_QUESTIONS = [
    "When is the midterm exam, and which chapters does it cover?",
    "Is there a recording of the week 2 lecture?",
    "Can we work in pairs for the final project?",
]
# More open questions than one page of the list (20): "load more" has something to load.
FILLER_QUESTIONS = [f"Which pages of reading list {n} matter for seminar {n}?" for n in range(18)]


def window_in_force(mode: str, end: datetime, **extra: Any) -> dict[str, Any]:
    """A dated schedule window (UTC) from an hour ago until `end`: in force while the test
    runs, ending at a minute the pages show as "until …"."""
    minute = "%Y-%m-%dT%H:%M"
    start = datetime.now(UTC) - timedelta(hours=1)
    dated = {"start": start.strftime(minute), "end": end.strftime(minute)}
    return {"mode": mode, "timeZone": "UTC", "dated": dated, **extra}


async def test_questions_endorsed_answers_and_the_mode_banner_on_two_pages(
    gateway: Gateway, browser_scripts: Path
) -> None:
    """minji (a student, Korean page, Seoul) and mia (a moderator, English page, New York):
    a question like one asked before is suggested while typed; a new one shows live as an
    open question, mia endorses its answer and minji sees it live and marks it resolved;
    the questions list filters open/resolved and pages; the mode banner of a read-only and
    a slow-mode course, the composer disabled or waiting as the server enforces
    (page_questions.mjs)."""
    course_id, read_only, slow = (f"browser-{uuid.uuid4().hex[:8]}" for _ in range(3))
    courses = [course_id, read_only, slow]
    # Seeded by three users, none past the default rate limit (10 per 10 s).
    seeders = [gateway.token(f"seeder-{n}", [course_id]) for n in range(3)]
    seeded_texts = [*OTHER_QUESTIONS[:1], SEEDED_QUESTION, *OTHER_QUESTIONS[1:], *FILLER_QUESTIONS]
    seeded = []
    for n, text in enumerate(seeded_texts):
        data = await graphql_as(gateway, seeders[n % 3], ASK, {"c": course_id, "text": text})
        seeded.append(data["sendMessage"]["messageId"])
    similar_id = seeded[1]
    await graphql_as(
        gateway,
        seeders[0],
        ANSWER,
        {"c": course_id, "text": "Upload a PDF under Assignments.", "question": similar_id},
    )
    # Both windows end tomorrow, at a whole minute.
    end = (datetime.now(UTC) + timedelta(days=1)).replace(second=0, microsecond=0)
    await gateway.apply_policy(read_only, schedule=[window_in_force("ReadOnly", end)])
    # An hour: nothing the page does is slow enough to reach the end of minji's wait.
    await gateway.apply_policy(
        slow, schedule=[window_in_force("SlowMode", end, slowModeSeconds=3600)]
    )
    minji = gateway.token("minji", courses)
    mia = gateway.token("mia", courses, moderates=courses)
    shots = [
        "questions-similar-ko.png",
        "questions-endorsed-en.png",
        "questions-resolved-ko.png",
        "questions-list-ko.png",
        "questions-list-en.png",
        "mode-read-only-ko.png",
        "mode-read-only-en.png",
        "mode-slow-ko.png",
        "mode-slow-en.png",
    ]
    for name in shots:
        (ARTIFACTS / name).unlink(missing_ok=True)

    summary = await run_script(
        browser_scripts / "page_questions.mjs",
        {
            "BASE_URL": gateway.url,
            "STUDENT_TOKEN": minji,
            "MODERATOR_TOKEN": mia,
            "COURSE_ID": course_id,
            "READ_ONLY_COURSE": read_only,
            "SLOW_COURSE": slow,
            "TYPED_QUESTION": TYPED_QUESTION,
            "SIMILAR_ID": similar_id,
            "SCREENSHOT_DIR": str(ARTIFACTS),
        },
    )

    assert summary["consoleProblems"] == []
    assert summary["missing"] == {"mia": [], "minji": []}
    question_id, answer_id = summary["ids"]["question"], summary["ids"]["answer"]
    user_content = {"minji", "mia", "seeder-0", "seeder-1", "seeder-2", *courses}

    # Asking: the question asked before is suggested (a few at most), and opens its thread
    # by keyboard; Escape closes it, the focus back on the suggestion.
    similar = summary["similar"]
    assert similar_id in similar["ids"], similar
    assert len(similar["ids"]) <= 3, similar
    assert similar["heading"] == "먼저 올라온 비슷한 질문 — 답변이 이미 있을 수 있어요"
    assert (similar["threadFocus"], similar["focusBack"]) == ("thread-heading", similar_id)
    # Asked: an open question on both pages, live on mia's; the toggle is off again.
    asked = summary["asked"]
    assert (asked["askAfterSend"], asked["similarHidden"]) == (False, True)
    assert (asked["minji"], asked["mia"]) == (["미해결 질문"], ["open question"])

    # Endorsing: mia's, not minji's; the answer marked and the question counted, live.
    endorse = summary["endorse"]
    assert (endorse["minjiButtons"], endorse["miaResolveOnAnswer"]) == (0, 0)
    assert endorse["miaLabel"].startswith("Endorse the answer of mia at "), endorse
    assert endorse["minji"] == {"answer": ["추천됨"], "question": ["미해결 질문", "추천 답변 1개"]}
    # Resolved by its author, seen live by mia.
    resolve = summary["resolve"]
    assert re.fullmatch(r"minji 님이 .+에 올린 질문을 해결됨으로 표시", resolve["label"]), resolve
    assert resolve["minji"] == ["해결된 질문", "추천 답변 1개"]
    assert resolve["mia"] == ["resolved question", "1 endorsed answer"]

    # The list: newest first, a page of 20 then the rest; Open, Resolved, All.
    newest_first = seeded[::-1]
    listed = summary["list"]
    assert listed["opened"] == "questions-heading"
    assert (listed["open"], listed["moreShown"]) == (newest_first[:20], True)
    assert listed["openAll"] == newest_first
    assert listed["resolved"] == [question_id]
    assert listed["all"] == [question_id, *newest_first]
    assert listed["focusAfterThread"] == similar_id
    # mia reopened it: back under "Open" on minji's page, live; Escape closed the list.
    assert listed["reopened"] == question_id
    assert listed["closed"] == "questions-toggle"
    assert summary["english"] == {
        "toggle": "Questions",
        "heading": "Questions in this course",
        "filters": ["Open", "Resolved", "All"],
        "similarHeading": "Asked before — the answer may be there already",
    }

    # Read-only: the banner with the window's end in each page's locale and time zone, and
    # no composer, for the moderator too (the chat service refuses everyone).
    ro = summary["readOnly"]
    for who in ("minji", "mia"):
        state = ro[who]
        assert (state["composer"], state["send"], state["ask"], state["bannerHidden"]) == (
            True,
            True,
            True,
            False,
        ), state
    korean = re.fullmatch(
        r"이 강의 채팅은 (.+)까지 읽기 전용이에요\. 그때까지는 메시지를 보낼 수 없어요\.",
        ro["minji"]["banner"],
    )
    assert korean is not None, ro["minji"]
    english = re.fullmatch(
        r"This course chat is read-only until (.+): nothing can be sent until then\.",
        ro["mia"]["banner"],
    )
    assert english is not None, ro["mia"]
    # "until" the window's end, at its hour and minute in Seoul and in New York.
    korean_end = re.search(r"(오전|오후) (\d{1,2}):(\d{2})$", korean.group(1))
    assert korean_end is not None, korean.group(1)
    assert (int(korean_end.group(2)), int(korean_end.group(3))) == local_time(
        end.isoformat(), "Asia/Seoul"
    )
    english_end = re.search(r"(\d{1,2}):(\d{2})\s(AM|PM)$", english.group(1))
    assert english_end is not None, english.group(1)
    assert (int(english_end.group(1)), int(english_end.group(2))) == local_time(
        end.isoformat(), "America/New_York"
    )
    assert ro["minji"]["bannerTitle"].endswith("GMT+9"), ro["minji"]
    assert re.search(r" E[SD]T$", ro["mia"]["bannerTitle"]), ro["mia"]

    # Slow mode: open to type; after minji's send the page says how long until her next
    # (the course's slowModeSeconds), mia is exempt; after a reload the server's refusal
    # says it (its retry-after), the text stays in the box.
    slow_mode = summary["slow"]
    assert re.fullmatch(
        r"\d{4}\. \d{1,2}\. \d{1,2}\. (오전|오후) \d{1,2}:\d{2}까지 슬로우 모드예요\. "
        r"한 사람당 1시간에 메시지를 하나만 보낼 수 있어요\.|"
        r"(오전|오후) \d{1,2}:\d{2}까지 슬로우 모드예요\. 한 사람당 1시간에 메시지를 하나만 보낼 수 있어요\.",
        slow_mode["before"]["banner"],
    ), slow_mode["before"]
    assert slow_mode["mia"]["banner"].endswith(
        ": one message per person every 1 hour. Moderators are exempt."
    ), slow_mode["mia"]
    assert (slow_mode["before"]["composer"], slow_mode["before"]["send"]) == (False, False)
    # A whole hour from the send, as the page's and Redis's clocks put it: worded in the
    # largest unit it fills, "1 hour" or (a few ms less) "60 minutes".
    assert re.fullmatch(
        r"슬로우 모드라서 다음 메시지는 (60분|1시간) 후 보낼 수 있어요\.", slow_mode["wait"]
    ), slow_mode
    assert (slow_mode["after"]["composer"], slow_mode["after"]["send"]) == (False, True)
    assert slow_mode["miaWait"] is True
    assert slow_mode["afterReload"]["send"] is False
    refused = slow_mode["refused"]
    assert slow_mode["refusedAccepted"] is False
    assert re.fullmatch(r"슬로우 모드라서 다음 메시지는 \d+분 후 보낼 수 있어요\.", refused["wait"])
    assert refused["composer"].startswith("또 보내요 ")
    assert refused["state"]["send"] is True

    for name, words in summary["words"].items():
        if name in ("endorsed", "english"):
            assert_in_english(words)
        else:
            assert_in_korean(words, user_content)
    for name, found in summary["accessibility"].items():
        assert found in ([], {"ko": [], "en": []}), (name, found)
    for name in shots:
        assert_png(ARTIFACTS / name)

    # What the pages showed is what the server stored: the answer endorsed, the question
    # reopened with its count; the slow course has minji's one message and mia's two.
    data = await graphql_as(gateway, minji, QUESTION_THREAD, {"c": course_id, "root": question_id})
    root, replies = data["thread"]["root"], data["thread"]["replies"]
    assert (root["userId"], root["kind"], root["resolvedAt"]) == ("minji", "QUESTION", None)
    assert root["endorsedAnswerCount"] == 1
    assert [(r["messageId"], r["userId"], r["endorsedAt"] is not None) for r in replies] == [
        (answer_id, "mia", True)
    ]
    assert [m["userId"] for m in await stored(gateway, mia, slow)] == ["minji", "mia", "mia"]


ANONYMOUS_THREAD = """query($c: ID!, $root: ID!) {
  thread(courseId: $c, rootId: $root) {
    root { messageId userId content kind anonymous pseudonym }
    replies { messageId userId content anonymous pseudonym }
  }
}"""


async def test_anonymous_to_classmates_on_three_pages(
    gateway: Gateway, browser_scripts: Path
) -> None:
    """An author (a student, English page) ticks "Post anonymously" and sends a question and
    an answer: a classmate (Korean page) sees "익명 수강생 ·<tag>" and the author's id is in
    nothing her page received or shows; a moderator sees the author, marked; the author sees
    her own. No `typing` while anonymous. The policy switched to Disabled: the author's next
    anonymous send is refused in words, her text kept, the control gone on every page, and
    the earlier messages still anonymous to the classmate (page_anonymous.mjs)."""
    course_id = f"browser-{uuid.uuid4().hex[:8]}"
    # A user id that occurs in nothing the pages load but what names her.
    author = f"sora-{uuid.uuid4().hex[:8]}"
    classmate = "jun"
    await gateway.apply_policy(course_id, anonymousPosting="ToClassmates")
    author_token = gateway.token(author, [course_id])
    classmate_token = gateway.token(classmate, [course_id])
    mia = gateway.token("mia", [course_id], moderates=[course_id])
    shots = [
        "anonymous-ticked-en.png",
        "anonymous-author-en.png",
        "anonymous-classmate-ko.png",
        "anonymous-moderator-en.png",
        "anonymous-refused-en.png",
        "anonymous-disabled-ko.png",
    ]
    for name in shots:
        (ARTIFACTS / name).unlink(missing_ok=True)
    env = {
        "BASE_URL": gateway.url,
        "AUTHOR": author,
        "CLASSMATE": classmate,
        "AUTHOR_TOKEN": author_token,
        "CLASSMATE_TOKEN": classmate_token,
        "MODERATOR_TOKEN": mia,
        "COURSE_ID": course_id,
        "SCREENSHOT_DIR": str(ARTIFACTS),
    }
    async with HandInHand.run(browser_scripts / "page_anonymous.mjs", env) as page:
        sent = await page.event("anonymous-sent")
        # Applied again, changed: an update of the resource, in force once the operator's
        # status names its new generation (the containers topology), or written by the
        # operator's reconcile code (the local stack).
        await gateway.apply_policy(course_id, anonymousPosting="Disabled")
        await page.answer()
        summary = await page.summary()

    assert summary["consoleProblems"] == []
    assert summary["missing"] == {"author": [], "classmate": [], "mia": []}
    question_id, answer_id = sent["questionId"], sent["answerId"]
    # What the server keeps, as each sees it: the classmate the pseudonym, mia the author.
    seen_by_classmate = await graphql_as(
        gateway, classmate_token, ANONYMOUS_THREAD, {"c": course_id, "root": question_id}
    )
    seen_by_mia = await graphql_as(
        gateway, mia, ANONYMOUS_THREAD, {"c": course_id, "root": question_id}
    )
    pseudonym = seen_by_classmate["thread"]["root"]["userId"]
    assert re.fullmatch(r"anonymous:[0-9a-f]{8}", pseudonym), pseudonym
    tag = pseudonym[-4:]
    for seen, user_id in ((seen_by_classmate, pseudonym), (seen_by_mia, author)):
        root, replies = seen["thread"]["root"], seen["thread"]["replies"]
        assert (root["messageId"], root["userId"], root["anonymous"]) == (
            question_id,
            user_id,
            True,
        )
        assert [(r["messageId"], r["userId"], r["anonymous"]) for r in replies] == [
            (answer_id, user_id, True)
        ]
    assert seen_by_mia["thread"]["root"]["pseudonym"] == pseudonym

    # Offered on every page while the policy allows it, off by default; ticked (by
    # keyboard), the note says exactly who sees the name, and that typing is not shown.
    for who in ("author", "classmate"):
        before = summary["before"][who]
        assert (before["rowHidden"], before["checked"], before["noteHidden"]) == (
            False,
            False,
            True,
        )
    ticked = summary["ticked"]
    assert ticked["label"] == "Post anonymously"
    assert (ticked["checked"], ticked["noteHidden"]) == (True, False)
    assert ticked["note"] == (
        "Other students see “Anonymous classmate” and a short tag instead of your name, the "
        "same tag on all your anonymous posts in this course. The course's moderators "
        "(teachers and TAs) see your name. While this is on, no one sees you typing: tick it "
        "before you start."
    )
    # Once a send told the page her pseudonym, the note names it.
    assert f"Yours: “Anonymous classmate ·{tag}”." in summary["noteAfterSend"]
    assert (summary["questionLeft"], summary["answerLeft"]) == ("", "")

    # The author: both hers, anonymously; typed key by key, and no `typing` sent.
    written = summary["author"]
    for shown in (written["question"], written["answer"]):
        assert (shown["user"], shown["own"], shown["faceless"]) == ("You, anonymously", True, True)
    assert written["typingSent"] == 0
    # After a reload too: the page learns her pseudonym from her course state.
    again = summary["authorAfterReload"]
    assert (again["user"], again["own"]) == ("You, anonymously", True)

    # The classmate: one anonymous classmate with one tag, in every place that names
    # someone; the author's id nowhere, nor a raw pseudonym.
    korean_name = f"익명 수강생 ·{tag}"
    seen = summary["classmate"]
    for shown in (seen["question"], seen["root"], seen["answer"]):
        assert (shown["user"], shown["own"], shown["faceless"], shown["markerTitles"]) == (
            korean_name,
            False,
            True,
            [],
        )
    assert seen["participants"] == f"{korean_name} 님이 답글을 달았어요"
    assert seen["listed"] == korean_name
    assert seen["replyLabel"].startswith(f"{korean_name} 님이 "), seen["replyLabel"]
    assert seen["rawPseudonym"] is False
    assert seen["authorFound"] == []
    # What was searched: the page's frames and bodies (index.html, scripts, catalogues, css).
    assert seen["received"]["frames"] > 10, seen["received"]
    assert seen["received"]["bodies"] >= 5, seen["received"]
    assert seen["typing"] == ""

    # mia: the author's name, marked, the marker saying what the students see.
    for shown in (summary["mia"]["question"], summary["mia"]["answer"]):
        assert (shown["user"], shown["faceless"]) == (author, False)
        assert "anonymous to classmates" in shown["markers"]
        assert shown["markerTitles"] == [f"Other students see “Anonymous classmate ·{tag}”"]
    assert summary["mia"]["endorseLabel"].startswith(f"Endorse the answer of {author} at ")

    # Disabled: the author's anonymous send refused in words, her text kept, the control
    # gone from both composers; mia's page, back in view, says what sending now means.
    refused = summary["refused"]
    assert refused["accepted"] is False
    assert refused["composer"] == refused["text"]
    assert (refused["rowHidden"], refused["checked"], refused["threadRowHidden"]) == (
        True,
        False,
        True,
    )
    assert refused["error"] == (
        "Not sent: this course no longer allows anonymous posts. Your text is still in the "
        "box; sent now, it shows your name."
    )
    switched_off = summary["switchedOff"]
    assert (switched_off["rowHidden"], switched_off["checked"]) == (True, False)
    assert switched_off["error"] == (
        "This course no longer allows anonymous posts: what you send now shows your name."
    )
    # The classmate, reloaded: no control; what was anonymous stays anonymous.
    after = summary["afterReload"]
    assert after["rowHidden"] is True
    assert (after["question"]["user"], after["answer"]["user"]) == (korean_name, korean_name)
    assert after["authorFound"] == []
    # The control: unticked, the author's page sends `typing` again.
    assert summary["control"]["after"] > summary["control"]["before"] == 0

    user_content = {classmate, course_id, tag}
    for name, words in summary["words"].items():
        if name in ("classmate", "afterReload"):
            assert_in_korean(words, user_content)
        else:
            assert_in_english(words)
    for name, found in summary["accessibility"].items():
        assert found == [], (name, found)
    for name in shots:
        assert_png(ARTIFACTS / name)
    # Nothing else was stored: the refused send left no message.
    contents = [m["content"] for m in await stored(gateway, mia, course_id)]
    assert refused["text"] not in contents
