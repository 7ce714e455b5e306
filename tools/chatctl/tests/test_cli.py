"""chatctl as a user runs it: `up` on free ports, then `token`, `send` and `tail` against it
through the gateway it starts, the page URL it prints, and Ctrl-C stops every process it
started."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import grpc
import pytest

from devstack.processes import port_is_free, stop_process
from devstack.topology import DEV_JWT_SECRET
from nextcampus_common.auth import TokenVerifier, issue_token
from nextcampus_common.chat_api import ChatClient
from nextcampus_common.keys import CourseKeys
from nextcampus_common.proto.chat.v1 import chat_pb2, chat_pb2_grpc
from nextcampus_common.settings import JwtSettings
from testing.exports import check_rich_course, parse, populate, read

CHATCTL = [sys.executable, "-m", "chatctl"]


def chatctl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CHATCTL, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


class Output:
    """What a process prints, line by line, read by a thread: every wait is bounded, even
    while the process prints nothing."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self.process = process
        self.seen: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(process.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """The first line from here on that matches `pattern`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {timeout} s") from None
            if line is None:
                self.process.wait(10)
                raise AssertionError(f"exited with {self.process.returncode} before {pattern!r}")
            self.seen.append(line)
            found = re.search(pattern, line)
            if found:
                return found


def start_up(root: Path) -> subprocess.Popen[str]:
    """`chatctl up` in a session of its own, as a terminal runs it."""
    return subprocess.Popen(
        [*CHATCTL, "up", "--free-ports", "--root", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


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
    up = start_up(tmp_path / "local")
    console = Output(up)
    tail = events = None
    try:
        page_url = console.wait_for(r"^open the chat: (\S+)$", timeout=90).group(1)
        target = console.wait_for(r"^gRPC: .* -t (\S+)", timeout=30).group(1)
        console.wait_for(r"^ready$")
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
        tailed = Output(tail)
        assert tailed.wait_for("hello from the cli").string.startswith(f"#{first_id} dev:")
        tailed.wait_for("retry me")

        # Every change with its cursor: a reply, then the thread's message as `tail` shows it.
        events = subprocess.Popen(
            [*CHATCTL, "tail", "-c", "demo", "-t", target, "--events"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        changes = Output(events)
        changes.wait_for(r"^live: every change of demo after \[\d+-\d+\]$", timeout=30)
        reply = chatctl("send", "-c", "demo", "-t", target, "--reply-to", first_id, "a reply")
        assert f"in the thread of #{first_id}" in reply.stdout, reply.stderr
        line = changes.wait_for(r"^#(\d+) ↳ #(\d+) dev: a reply  \[(\d+-\d+)\]$", timeout=30)
        assert line.group(2) == first_id
        assert f"↳ #{first_id} dev: a reply" in tailed.wait_for("a reply").string

        bad = chatctl("send", "-c", "demo", "-t", target, "   ")
        assert bad.returncode == 1
        assert "INVALID_ARGUMENT" in bad.stderr

        # The printed page URL opens the chat page through the gateway, and its token works.
        with urllib.request.urlopen(page_url, timeout=10) as page:  # noqa: S310 - loopback
            assert page.headers.get_content_type() == "text/html"
            assert b'data-i18n="app.name"' in page.read()
        token = urllib.parse.parse_qs(urllib.parse.urlsplit(page_url).query)["token"][0]
        me = urllib.request.Request(  # noqa: S310 - loopback
            urllib.parse.urljoin(page_url, "/graphql"),
            data=json.dumps(
                {"query": "{ me { userId courses { courseId unreadCount } } }"}
            ).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(me, timeout=10) as answer:  # noqa: S310 - loopback
            courses = json.load(answer)["data"]["me"]["courses"]
            assert [c["courseId"] for c in courses] == ["demo", "intro"]
    finally:
        for tailing in (tail, events):
            if tailing is not None:
                stop_process(tailing)  # type: ignore[arg-type]
        # Ctrl-C in a terminal: SIGINT to the foreground process group.
        os.killpg(up.pid, signal.SIGINT)
        up.wait(60)
    assert up.returncode == 0
    assert all(port_is_free(p) for p in redis_ports)
    leftovers = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert [p for p in leftovers if int(p) != os.getpid()] == []


def test_up_restarts_a_killed_chat_process_while_the_rest_keeps_serving(tmp_path: Path):
    """kill -9 of one chat process, as a crash: `up` says so, the gateway keeps serving
    sends through the other chat process, the killed one is started again and serves on
    its port, and Ctrl-C still stops every process, the restarted one too."""
    up = start_up(tmp_path / "local")
    console = Output(up)
    try:
        chat_line = console.wait_for(r"^chat gRPC on (.*); logs in ", timeout=90).group(1)
        chat_targets = chat_line.split(", ")
        target = console.wait_for(r"^gRPC: .* -t (\S+)").group(1)
        listed = console.wait_for(r"^processes \(pid\): (.*)$").group(1)
        pids = {name: int(pid) for name, pid in (entry.split() for entry in listed.split(", "))}
        assert {"chat-0", "chat-1", "graphql-0", "graphql-1", "envoy"} <= pids.keys()
        assert len([name for name in pids if name.startswith("redis-")]) == 6
        console.wait_for(r"^ready$")

        os.kill(pids["chat-0"], signal.SIGKILL)
        console.wait_for(
            r"^chat-0 exited \(code -9\); restarting in 1 s \(see \S*logs/chat-0\.log\)$"
        )
        sent = [chatctl("send", "-c", "demo", "-t", target, "sent while chat-0 was down")]
        back_pid = int(console.wait_for(r"^chat-0 is back \(pid (\d+)\)$").group(1))
        assert back_pid != pids["chat-0"]
        sent.append(chatctl("send", "-c", "demo", "-t", target, "sent after it came back"))
        # Its own port serves again.
        sent.append(chatctl("send", "-c", "demo", "-t", chat_targets[0], "sent to chat-0"))
        assert [result.returncode for result in sent] == [0, 0, 0], [r.stderr for r in sent]
        ids = [re.search(r"#(\d+)", result.stdout).group(1) for result in sent]  # type: ignore[union-attr]

        async def history_from_chat_0() -> list[str]:
            token = issue_token(DEV_JWT_SECRET, "dev", ["demo"])
            async with ChatClient(chat_targets[0], token) as client:
                page = await client.history("demo", after=str(int(ids[0]) - 1))
            return [message.content for message in page.messages]

        assert asyncio.run(history_from_chat_0()) == [
            "sent while chat-0 was down",
            "sent after it came back",
            "sent to chat-0",
        ]
        # Nothing else went down with it.
        assert [line for line in console.seen if " exited " in line] == [
            line for line in console.seen if line.startswith("chat-0 exited")
        ]
        assert all(running(pid) for name, pid in pids.items() if name != "chat-0")
    finally:
        os.killpg(up.pid, signal.SIGINT)
        up.wait(60)
    assert up.returncode == 0
    assert not any(running(pid) for pid in [*pids.values(), back_pid])


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


async def test_unread_shows_each_course_and_the_newest_mentions(
    client_for, make_token, chat_server, course_id
):
    other = f"{course_id}-b"
    alice = client_for("alice", [course_id, other])
    for i in range(3):
        await alice.send(course_id, f"news {i}")
    mention = (await alice.send(other, "@bob have a look")).message
    unread = await asyncio.create_subprocess_exec(
        *CHATCTL,
        "unread",
        "-t",
        f"127.0.0.1:{chat_server.port}",
        "--token",
        make_token("bob", [course_id, other]),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await unread.communicate()
    assert unread.returncode == 0, err
    rows = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in out.decode().splitlines()
        if line.startswith("│")
    ]
    assert [row[:3] for row in rows] == [[course_id, "3", "0"], [other, "1", "1"]]
    assert f"{other} #{mention.message_id} alice: @bob have a look" in out.decode()


@pytest.mark.parametrize("args", [["send", "-c", "bad course!", "hi"], ["tail"]])
def test_usage_errors_are_explained(args):
    result = chatctl(*args)
    assert result.returncode != 0
    assert result.stderr.strip()


async def run_chatctl(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *CHATCTL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_export_writes_the_course_to_a_file_and_reports_progress(
    client_for, make_token, chat_server, course_id, tmp_path
):
    course = await populate(
        client_for("stu", [course_id]), client_for("mod", [course_id], [course_id]), course_id
    )
    target = f"127.0.0.1:{chat_server.port}"
    moderator = make_token("mod", [course_id], [course_id])
    written = tmp_path / "course.ndjson"

    code, out, err = await run_chatctl(
        "export", course_id, "--output", str(written), "-t", target, "--token", moderator
    )

    assert code == 0, err
    assert out == ""
    check_rich_course(read(written), course)
    assert f"{course_id}: 6 messages so far" in err
    assert f"exported 6 messages of {course_id} to {written}" in err
    # Without --output: the NDJSON on stdout, the progress still on stderr only.
    code, out, err = await run_chatctl("export", course_id, "-t", target, "--token", moderator)
    assert code == 0, err
    check_rich_course(parse(out.splitlines()), course)


async def test_export_refused_says_why_and_writes_nothing(
    make_token, chat_server, course_id, tmp_path
):
    written = tmp_path / "course.ndjson"
    code, _, err = await run_chatctl(
        "export",
        course_id,
        "-o",
        str(written),
        "-t",
        f"127.0.0.1:{chat_server.port}",
        "--token",
        make_token("stu", [course_id]),
    )
    assert code == 1
    assert f"PERMISSION_DENIED: only moderators of course {course_id} may export it" in err
    assert not written.exists()


class CutShort(chat_pb2_grpc.ChatServiceServicer):
    """A chat service whose export stops after its header: once with an error, once as if
    it were complete (no end line either way)."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail

    async def ExportCourse(
        self, request: chat_pb2.ExportCourseRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chat_pb2.ExportChunk]:
        yield chat_pb2.ExportChunk(lines=[json.dumps({"type": "course", "courseId": "c"})])
        if self.fail:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "chat pod went away")


@pytest.mark.parametrize("fail", [True, False])
async def test_export_cut_short_exits_non_zero(tmp_path, fail):
    server = grpc.aio.server()
    chat_pb2_grpc.add_ChatServiceServicer_to_server(CutShort(fail), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    written = tmp_path / "course.ndjson"
    try:
        code, _, err = await run_chatctl(
            "export", "c", "-o", str(written), "-t", f"127.0.0.1:{port}"
        )
    finally:
        await server.stop(None)
    assert code == 1
    assert f"cut short after 0 messages (no end line): {written} is incomplete" in err
    if fail:
        assert "UNAVAILABLE: chat pod went away" in err
    assert read(written).end is None
