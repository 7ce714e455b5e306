"""`chatctl bench-campus`: a simulated campus on this machine — what read state, myUpdates,
presence and typing cost at course scale, and how fast presence forgets a dead process.

20,000 users in 500 courses (each user in 6), 5,000 of them online, each with one socket as
the web page holds it (myUpdates for every course of the token; courseEvents,
presenceChanged and typingChanged of the course open), spread over the two GraphQL
processes; 20 sends/s (one in ten mentioning a member), 10 typing calls/s, the GraphQL
processes' presence heartbeats; and 10 `me { courses { unreadCount mentionCount } }` queries
per second for users of 8 courses (`tools/bench/load/campus.mjs` makes the load). Measured
over the steady window: Redis CPU and commands/s, GraphQL and chat CPU (per 1,000 online
users), delivery latency of the sends to courseEvents, and the `me` latency (p50/p99).
Then one GraphQL process is killed with SIGKILL: the time until `presence` through the
other process counts only the users still connected, in every course.

Everything this starts runs on free loopback ports and is stopped by PID on exit.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bench.measure import CpuWindow, machine_info
from bench.report import ResultsFile, options_record, sigint_ignored
from devstack.processes import dies_with_parent, raise_open_files_limit, stop_process
from devstack.redis_cluster import redis_cli
from devstack.topology import Topology
from nextcampus_common.auth import issue_token

STEADY_MARK = "steady phase"
DONE_MARK = "steady done"
PRESENCE_POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 15.0


class CampusBenchError(RuntimeError):
    """The campus benchmark could not run."""


@dataclass(frozen=True)
class CampusOptions:
    users: int = 20_000
    courses: int = 500
    courses_per_user: int = 6
    online: int = 5_000
    me_users: int = 20
    me_courses: int = 8
    rate: int = 20  # sends per second
    typing: int = 10  # typing calls per second
    me_rate: int = 10  # me queries per second
    duration: int = 60
    ramp: int = 250  # sockets opened per second
    presence_timeout: float = 120.0
    seed: int = 15
    output_dir: Path = Path("bench-results")
    root: Path | None = None
    command_line: str = ""
    graphql_overrides: dict[str, object] = field(default_factory=dict)
    chat_overrides: dict[str, object] = field(default_factory=dict)


def load_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "load"


def course_name(number: int) -> str:
    return f"k{number:04d}"


def population(options: CampusOptions, secret: str) -> dict[str, Any]:
    """The campus: users with their courses; tokens for the online ones and the me users."""
    rng = random.Random(options.seed)  # noqa: S311 - the same campus every run, not secrets
    courses = [course_name(i) for i in range(options.courses)]
    online = []
    for index in range(options.users):
        mine = rng.sample(courses, options.courses_per_user)
        if index < options.online:
            user = f"u{index:05d}"
            online.append(
                {
                    "user": user,
                    "courses": mine,
                    "open": mine[0],
                    "token": issue_token(secret, user, mine),
                }
            )
    me = []
    for index in range(options.me_users):
        user, mine = f"m{index:03d}", rng.sample(courses, options.me_courses)
        me.append({"user": user, "courses": mine, "token": issue_token(secret, user, mine)})
    return {"courses": courses, "online": online, "me": me}


def redis_commands(ports: list[int]) -> int:
    """Commands processed since start, over every node of the cluster."""
    total = 0
    for port in ports:
        for line in redis_cli(port, "info", "stats", timeout=10).splitlines():
            if line.startswith("total_commands_processed:"):
                total += int(line.split(":", 1)[1])
    return total


def presence_query(courses: list[str]) -> str:
    fields = " ".join(
        f'c{i}: presence(courseId: "{course}") {{ onlineCount }}'
        for i, course in enumerate(courses)
    )
    return "{ " + fields + " }"


def online_counts(url: str, token: str, courses: list[str]) -> dict[str, int] | None:
    """Each course's onlineCount through one GraphQL process (None: it did not answer)."""
    import urllib.request

    request = urllib.request.Request(  # noqa: S310 - loopback
        url,
        data=orjson.dumps({"query": presence_query(courses)}),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - loopback
            body = json.load(answer)
    except OSError:
        return None
    if body.get("errors") or not body.get("data"):
        return None
    return {course: body["data"][f"c{i}"]["onlineCount"] for i, course in enumerate(courses)}


def chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def presence_after_kill(
    url: str, token: str, expected: dict[str, int], timeout: float
) -> dict[str, Any]:
    """Poll `presence` of every course with online users until each count is what the
    surviving process's users make; how long that took."""
    started = time.monotonic()
    polls, unanswered = 0, 0
    wrong: int | None = None
    courses = sorted(expected)
    while time.monotonic() - started < timeout:
        polls += 1
        counts: dict[str, int] = {}
        for part in chunks(courses, 50):  # a query's resolvers run at once: a few at a time
            answer = online_counts(url, token, part)
            if answer is None:
                unanswered += 1
                break
            counts.update(answer)
        if len(counts) == len(courses):
            wrong = sum(counts[c] != expected[c] for c in courses)
            if wrong == 0:
                return {"accurate_after_s": round(time.monotonic() - started, 1), "polls": polls}
        time.sleep(PRESENCE_POLL_SECONDS)
    return {
        "accurate_after_s": None,
        "polls": polls,
        "unanswered_polls": unanswered,
        "courses_still_wrong": wrong,
    }


class Generator:
    """campus.mjs as a child: its stderr echoed as progress (marks noticed), stdout kept."""

    def __init__(self, argv: list[str], progress: Console) -> None:
        self.process = subprocess.Popen(
            dies_with_parent(argv),
            cwd=load_dir(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.steady = threading.Event()
        self.done = threading.Event()
        self.result: dict[str, Any] | None = None
        self._progress = progress
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        threading.Thread(target=self._stderr, args=(self.process.stderr,), daemon=True).start()
        threading.Thread(target=self._stdout, args=(self.process.stdout,), daemon=True).start()

    def _stderr(self, stream: IO[str]) -> None:
        for line in stream:
            line = line.rstrip("\n")
            if STEADY_MARK in line:
                self.steady.set()
            self._progress.print(Text("  [campus] ", style="dim") + Text(line), highlight=False)

    def _stdout(self, stream: IO[str]) -> None:
        for line in stream:
            if line.startswith("{"):
                self.result = json.loads(line)
                self.done.set()
        self.done.set()

    def wait(self, event: threading.Event, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not event.wait(0.5):
            if self.process.poll() is not None and not event.is_set():
                raise CampusBenchError(
                    f"campus.mjs exited ({self.process.returncode}) before {what}"
                )
            if time.monotonic() > deadline:
                raise CampusBenchError(f"campus.mjs: no {what} within {timeout:.0f} s")

    def stop(self) -> None:
        with sigint_ignored():
            if self.process.stdin is not None:
                self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                stop_process(self.process, STOP_GRACE_SECONDS, group=True)


def run_campus(options: CampusOptions, progress: Console, out: Console) -> Path:
    if shutil.which("node") is None:
        raise CampusBenchError("node is not installed: `make deps` installs it")
    from bench.fanout import ensure_node_modules

    ensure_node_modules(load_dir().parent, progress, folder="load")
    results = ResultsFile.start("campus", options.output_dir)
    root = options.root or Path(tempfile.mkdtemp(prefix="chatctl-bench-campus-"))
    stack = Topology.on_free_ports(
        root,
        chat_count=2,
        graphql_count=2,
        gateway=False,
        chat_overrides=dict(options.chat_overrides),
        graphql_overrides=dict(options.graphql_overrides),
    )
    record: dict[str, Any] = {
        **results.header(command_line=options.command_line),
        "options": options_record(options),
        "machine": machine_info("the generator (node), Redis, chat and GraphQL share it"),
        "open_files_limit": raise_open_files_limit(),
    }
    generator: Generator | None = None
    try:
        progress.print(f"starting Redis Cluster (6) + 2 chat + 2 GraphQL processes in {root} …")
        stack.start()
        assert stack.redis is not None
        campus = population(options, stack.jwt_secret)
        users_file = root / "campus-users.json"
        users_file.write_bytes(orjson.dumps(campus))
        argv = [
            "node",
            str(load_dir() / "campus.mjs"),
            *("--urls", ",".join("ws://" + u.removeprefix("http://") for u in stack.graphql_urls)),
            *("--http", ",".join(stack.graphql_urls)),
            *("--users", str(users_file)),
            *("--rate", str(options.rate)),
            *("--typing", str(options.typing)),
            *("--me-rate", str(options.me_rate)),
            *("--duration", str(options.duration)),
            *("--ramp", str(options.ramp)),
            *("--label", results.stamp),
        ]
        record["command"] = " ".join(argv)
        redis_ports = list(stack.redis_ports)
        window = CpuWindow(
            {
                "redis": lambda: [p.pid for p in stack.redis.processes.values()],  # type: ignore[union-attr]
                "graphql": lambda: [p.pid for p in stack.graphqls],
                "chat": lambda: [p.pid for p in stack.chats],
                "generator": lambda: [generator.process.pid] if generator else [],
            }
        )
        generator = Generator(argv, progress)
        ramp_seconds = options.online / options.ramp
        generator.wait(generator.steady, ramp_seconds + 240, "steady phase")
        commands_before, started = redis_commands(redis_ports), time.monotonic()
        window.start()
        generator.wait(generator.done, options.duration + 120, "result")
        window.stop()
        seconds = time.monotonic() - started
        commands = redis_commands(redis_ports) - commands_before
        result = generator.result or {}
        record["steady"] = {
            "result": result,
            "cpu_pct": window.percent,
            "redis_commands_per_s": round(commands / seconds),
            "window_s": round(seconds, 1),
        }
        record["presence"] = measure_presence_after_kill(stack, campus, result, options, progress)
    finally:
        with sigint_ignored():
            if generator is not None:
                generator.stop()
            progress.print("stopping the stack …")
            stack.stop()
            if options.root is None:
                shutil.rmtree(root, ignore_errors=True)
    summary = summarize(record)
    record["summary"] = summary
    path = results.write(record)
    out.print(campus_table(summary, options))
    out.print(f"results: {path}")
    return path


def measure_presence_after_kill(
    stack: Topology,
    campus: dict[str, Any],
    result: dict[str, Any],
    options: CampusOptions,
    progress: Console,
) -> dict[str, Any]:
    """Kill the second GraphQL process with SIGKILL; time until presence through the first
    counts exactly the users still connected to it, in every course with online users."""
    by_course: dict[str, list[int]] = result.get("online_by_course") or {}
    expected_both = {course: sum(row) for course, row in by_course.items()}
    expected_survivor = {course: row[0] for course, row in by_course.items()}
    monitor = issue_token(stack.jwt_secret, "campus-monitor", campus["courses"])
    survivor = stack.graphql_urls[0]
    before = presence_after_kill(survivor, monitor, expected_both, 30)
    victim = stack.graphqls[1]
    progress.print(f"kill -9 of GraphQL process {victim.pid}; watching presence …")
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    after = presence_after_kill(survivor, monitor, expected_survivor, options.presence_timeout)
    if after["accurate_after_s"] is not None:  # counted from the kill, not the first poll
        after["accurate_after_s"] = round(time.monotonic() - killed_at, 1)
    return {
        "courses_with_online_users": len(by_course),
        "accurate_before_kill": before,
        "after_kill": after,
    }


def summarize(record: dict[str, Any]) -> dict[str, Any]:
    steady = record.get("steady") or {}
    result = steady.get("result") or {}
    cpu = steady.get("cpu_pct") or {}
    online = result.get("ready") or 0

    def per_thousand(pct: float | None) -> float | None:
        return None if pct is None or not online else round(pct / online * 1000, 2)

    presence = record.get("presence") or {}
    return {
        "online_ready": online,
        "sockets": result.get("sockets"),
        "sends_per_s": round((result.get("sends") or 0) / (result.get("seconds") or 1), 1),
        "send_errors": result.get("send_errors"),
        "redis_cpu_pct": cpu.get("redis"),
        "redis_commands_per_s": steady.get("redis_commands_per_s"),
        "graphql_cpu_pct": cpu.get("graphql"),
        "graphql_cpu_pct_per_1000_online": per_thousand(cpu.get("graphql")),
        "chat_cpu_pct": cpu.get("chat"),
        "chat_cpu_pct_per_1000_online": per_thousand(cpu.get("chat")),
        "generator_cpu_pct": cpu.get("generator"),
        "delivery_ms": result.get("delivery_ms"),
        "me_ms": result.get("me_ms"),
        "me_errors": result.get("me_errors"),
        "subscription_errors": result.get("subscription_errors"),
        "subscriptions_failed": result.get("subscriptions_failed"),
        "presence_accurate_before_kill": (presence.get("accurate_before_kill") or {}).get(
            "accurate_after_s"
        )
        is not None,
        "presence_accurate_after_kill_s": (presence.get("after_kill") or {}).get(
            "accurate_after_s"
        ),
    }


def campus_table(summary: dict[str, Any], options: CampusOptions) -> Table:
    table = Table(
        title=f"simulated campus: {options.users:,} users in {options.courses} courses "
        f"({options.courses_per_user} each), {options.online:,} online over 2 GraphQL "
        f"processes, {options.rate} sends/s, {options.typing} typing/s, {options.duration} s"
    )
    table.add_column("figure")
    table.add_column("measured", justify="right")

    def ms(figure: dict[str, Any] | None) -> str:
        figure = figure or {}
        return f"{figure.get('p50')} / {figure.get('p99')} ms (n={figure.get('n')})"

    after_kill = summary["presence_accurate_after_kill_s"]
    rows = [
        ("online users ready (sockets)", f"{summary['online_ready']:,} ({summary['sockets']})"),
        ("sends/s acknowledged (errors)", f"{summary['sends_per_s']} ({summary['send_errors']})"),
        (
            "Redis CPU % (6 nodes) / commands/s",
            f"{summary['redis_cpu_pct']} / {summary['redis_commands_per_s']:,}",
        ),
        ("GraphQL CPU % (2 processes)", str(summary["graphql_cpu_pct"])),
        ("GraphQL CPU % per 1,000 online users", str(summary["graphql_cpu_pct_per_1000_online"])),
        (
            "chat CPU % (2 processes) / per 1,000 online",
            f"{summary['chat_cpu_pct']} / {summary['chat_cpu_pct_per_1000_online']}",
        ),
        ("send → courseEvents p50 / p99", ms(summary["delivery_ms"])),
        (
            f"me {{ courses {{ unreadCount }} }} ({options.me_courses} courses) p50 / p99",
            ms(summary["me_ms"]),
        ),
        (
            "presence exact after kill -9 of one GraphQL process",
            f"{after_kill} s" if after_kill is not None else "NOT within the timeout",
        ),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table
