"""chatctl as a user runs it: `up` on free ports, then `token`, `send` and `tail` against it
through the gateway it starts, the page URL it prints, and Ctrl-C stops every process it
started."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from chatctl.localstack import port_is_free, stop_process
from chatctl.topology import DEV_JWT_SECRET
from nextcampus_common.auth import TokenVerifier
from nextcampus_common.keys import CourseKeys
from nextcampus_common.settings import JwtSettings

CHATCTL = [sys.executable, "-m", "chatctl"]


def chatctl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CHATCTL, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def wait_for_line(process: subprocess.Popen[str], pattern: str, timeout: float = 60) -> str:
    """Lines of stdout until one matches (the stream is read line by line)."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if re.search(pattern, line):
            return line
        if not line and process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode} before {pattern!r}")
    raise AssertionError(f"no line matching {pattern!r} within {timeout} s")


def test_token_prints_a_verifiable_dev_token():
    result = chatctl("token", "--user", "ann", "--course", "c1", "--moderator", "c2")
    assert result.returncode == 0, result.stderr
    identity = TokenVerifier(JwtSettings(jwt_secret=DEV_JWT_SECRET)).verify(result.stdout.strip())
    assert identity.user_id == "ann"
    assert identity.is_member("c1")
    assert identity.may_moderate("c2")


def test_send_to_nothing_says_what_failed():
    result = chatctl("send", "-c", "c1", "hi", "-t", "127.0.0.1:1", timeout=60)
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr


def test_up_send_tail_and_clean_stop(tmp_path: Path):
    up = subprocess.Popen(
        [*CHATCTL, "up", "--free-ports", "--root", str(tmp_path / "local")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    tail = None
    try:
        page_line = wait_for_line(up, r"^open the chat: ", timeout=90)
        page_url = page_line.split(": ", 1)[1].strip()
        output = wait_for_line(up, r"^gRPC:", timeout=30)
        target = re.search(r"-t (\S+)", output).group(1)  # type: ignore[union-attr]
        wait_for_line(up, r"^ready$")
        redis_ports = [
            int(p.name) for p in (tmp_path / "local" / "redis").iterdir() if p.name.isdigit()
        ]
        assert len(redis_ports) == 6

        first = chatctl("send", "-c", "demo", "-t", target, "hello from the cli")
        assert first.returncode == 0, first.stderr
        first_id = re.search(r"#(\d+)", first.stdout).group(1)  # type: ignore[union-attr]
        again = chatctl("send", "-c", "demo", "-t", target, "--client-message-id", "k1", "retry me")
        repeated = chatctl(
            "send", "-c", "demo", "-t", target, "--client-message-id", "k1", "retry me"
        )
        assert "duplicate" in repeated.stdout
        assert again.stdout.split()[1] in repeated.stdout

        tail = subprocess.Popen(
            [*CHATCTL, "tail", "-c", "demo", "-t", target, "--after", str(int(first_id) - 1)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert wait_for_line(tail, "hello from the cli").startswith(f"#{first_id} dev:")
        wait_for_line(tail, "retry me")

        bad = chatctl("send", "-c", "demo", "-t", target, "   ")
        assert bad.returncode == 1
        assert "INVALID_ARGUMENT" in bad.stderr

        # The printed page URL opens the chat page through the gateway, and its token works.
        with urllib.request.urlopen(page_url, timeout=10) as page:  # noqa: S310 - loopback
            assert page.headers.get_content_type() == "text/html"
            assert b"Next Campus Chat" in page.read()
        token = urllib.parse.parse_qs(urllib.parse.urlsplit(page_url).query)["token"][0]
        me = urllib.request.Request(  # noqa: S310 - loopback
            urllib.parse.urljoin(page_url, "/graphql"),
            data=json.dumps({"query": "{ me { userId courses } }"}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(me, timeout=10) as answer:  # noqa: S310 - loopback
            assert json.load(answer)["data"]["me"]["courses"] == ["demo", "intro"]
    finally:
        if tail is not None:
            stop_process(tail)  # type: ignore[arg-type]
        # Ctrl-C in a terminal: SIGINT to the foreground process group.
        os.killpg(up.pid, signal.SIGINT)
        up.wait(60)
    assert up.returncode == 0
    assert all(port_is_free(p) for p in redis_ports)
    leftovers = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert [p for p in leftovers if int(p) != os.getpid()] == []


async def test_tail_prints_hostile_stored_content_without_acting_on_the_terminal(
    client_for, make_token, chat_server, course_id, cluster_client
):
    """A message stored before the chat service refused control characters (written here
    straight into Redis) reaches `chatctl tail` as visible escapes: no ESC to retitle the
    window, no carriage return or erase-line to forge a line, no bidi override to reorder
    the text, and its second line cannot pass for a message of its own."""
    sent = await client_for("mallory", [course_id]).send(course_id, "harmless, for now")
    message_id = sent.message.message_id
    hostile = "title\x1b]0;pwned\x07 \u202eevil\r\x1b[2K#2 admin: fake\n#3 admin: forged\x9b"
    cluster_client.hset(CourseKeys(course_id).message(message_id), "content", hostile)

    tail = await asyncio.create_subprocess_exec(
        *CHATCTL,
        "tail",
        "-c",
        course_id,
        "-t",
        f"127.0.0.1:{chat_server.port}",
        "--after",
        str(int(message_id) - 1),
        "--token",
        make_token("reader", [course_id]),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert tail.stdout is not None
    try:
        async with asyncio.timeout(60):
            printed = [await tail.stdout.readline(), await tail.stdout.readline()]
    finally:
        tail.kill()
        await tail.wait()

    text = b"".join(printed)
    for raw in ("\x1b", "\x07", "\r", "\u202e", "\x9b"):
        assert raw.encode() not in text, (raw, text)
    assert [line.decode() for line in printed] == [
        f"#{message_id} mallory: title\\x1b]0;pwned\\x07 \\u202eevil\\x0d\\x1b[2K#2 admin: fake\n",
        "    #3 admin: forged\\x9b\n",
    ]


@pytest.mark.parametrize("args", [["send", "-c", "bad course!", "hi"], ["tail"]])
def test_usage_errors_are_explained(args):
    result = chatctl(*args)
    assert result.returncode != 0
    assert result.stderr.strip()
