"""chatctl as a user runs it: `up` on free ports, then `token`, `send` and `tail` against it
through the gateway it starts, the page URL it prints, and Ctrl-C stops every process it
started."""

from __future__ import annotations

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


async def test_token_prints_a_verifiable_dev_token():
    result = chatctl("token", "--user", "ann", "--course", "c1", "--moderator", "c2")
    assert result.returncode == 0, result.stderr
    verifier = TokenVerifier(JwtSettings(jwt_secret=DEV_JWT_SECRET))
    identity = await verifier.verify(result.stdout.strip())
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


@pytest.mark.parametrize("args", [["send", "-c", "bad course!", "hi"], ["tail"]])
def test_usage_errors_are_explained(args):
    result = chatctl(*args)
    assert result.returncode != 0
    assert result.stderr.strip()
