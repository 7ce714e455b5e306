"""`chatctl bench-fanout`: our GraphQL fan-out side by side with the peers of the shared
bench harness (python-socketio + Redis, Node graphql-ws + Redis), in one run: same load
generator, same scenarios, same machine.

The harness is not part of this repository: `--harness`, `$NEXTCAMPUS_BENCH_HARNESS`, or
`../shared/bench` beside the repository root. Its own tools do the measuring:

- latency (`load/gen.js`): S=200 subscribers, C=10 courses, R=200 msgs/s for 20 s, i.e.
  4,000 deliveries/s; loss, duplicates, per-course order, latency, CPU of the watched PIDs;
- saturation (`load/sweep.js`): S=1000, C=10, R doubled from `--sweep-start` then bisected
  to 10 %, 10 s steps; a step passes with zero loss, p99 < 100 ms, no disconnects;
- memory (`load/memprobe.js`): 2,000 idle subscribed sockets, KB of GraphQL RSS per socket
  (run first, on the fresh processes: the peers' processes are fresh for every scenario).

Our side is the local topology on free ports (Redis Cluster of 6, 2 chat and 2 GraphQL
processes, rate limit off) with one token for every course the generator uses. Before each
scenario and each sweep step the cluster's primaries are FLUSHALLed
(`python -m bench.fanout flush`, which also waits, bounded, for a quiet machine); our
chat and GraphQL processes are fresh for every run (`--runs`), not for every scenario and
sweep step as the peers' are. The peers run afterwards, with our stack stopped, through the
harness's `run-peers.sh` (its own install, Redis, restarts and PID handling).

Everything this starts runs in its own process group and is stopped by PID / group id on
exit, timeout or Ctrl-C. Results: `bench-results/fanout-<UTC stamp>.json` (raw JSON lines of
every tool, the summary, the exact commands, machine info) and the stack's logs beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, TypeGuard

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bench.chat import (
    CLOCK_TICKS,
    CpuWindow,
    format_ms,
    format_pct,
    machine_info,
    sigint_ignored,
)
from devstack.gateway import UNLIMITED_BUDGET
from devstack.processes import dies_with_parent, port_is_free, raise_open_files_limit
from devstack.scrape import scrape
from devstack.topology import Topology
from nextcampus_common.auth import issue_token
from nextcampus_common.ids import COURSE_ID

HARNESS_ENV = "NEXTCAMPUS_BENCH_HARNESS"
HARNESS_FILES = ("load/gen.js", "load/sweep.js", "load/memprobe.js", "run-peers.sh")
OURS = "nextcampus"
PEERS = ("socketio-py", "graphqlws-node")
# Fixed loopback ports of the harness's Redis and peer servers (its README).
PEER_PORTS = (26379, 27101, 27102, 27201, 27202)
PROTOCOL = "graphql-transport-ws"

# The harness README's scenarios, unchanged, so the numbers line up with the peers'.
COURSES = 10
LATENCY_SUBSCRIBERS = 200
LATENCY_RATE = 200
LATENCY_SECONDS = 20
SATURATION_SUBSCRIBERS = 1000
SWEEP_STEP_SECONDS = 10
SLO_P99_MS = 100.0
SWEEP_PRECISION = 0.1
MEMORY_CONNECTIONS = 2000

# The issue's targets.
TARGET_DELIVERIES_PER_SECOND = 75_000
TARGET_KB_PER_IDLE_SOCKET = 30.0

# Upper bounds of each phase (each tool also bounds itself).
LATENCY_TIMEOUT_SECONDS = 300.0
SWEEP_TIMEOUT_SECONDS = 1800.0
MEMORY_TIMEOUT_SECONDS = 300.0
PEERS_TIMEOUT_SECONDS = 3600.0
NPM_TIMEOUT_SECONDS = 300.0
IDLE_WINDOW_SECONDS = 5.0
STOP_GRACE_SECONDS = 15.0
# Before each scenario and sweep step: wait (bounded) until the machine is below this busy %
# (of 200) for QUIET_SAMPLES seconds in a row. sweep.js gives --before-step 120 s in all.
QUIET_BELOW_PCT = 30.0
QUIET_SAMPLES = 3
QUIET_WAIT_STEP_SECONDS = 60.0
QUIET_WAIT_SCENARIO_SECONDS = 180.0

BENCH_USER = "bench-fanout"
# gen.js and memprobe.js use the course numbers 0 … C-1 as course ids.
BENCH_COURSES = [str(course) for course in range(COURSES)]
REDACTED = "__REDACTED__"
# structlog's console levels, tracebacks, and Redis closing a client that fell behind.
LOG_FINDING = re.compile(
    r"\[\s*(warning|error|critical|exception)\s*\]|Traceback|Error:|output buffer limits", re.I
)


class FanoutBenchError(RuntimeError):
    """The benchmark could not run (a prerequisite is missing, a tool failed to start, …)."""


class HarnessMissing(FanoutBenchError):
    """The shared bench harness is not where it was looked for."""


@dataclass(frozen=True)
class FanoutOptions:
    harness: Path
    peers: bool = True
    runs: int = 1  # of every scenario, ours and each peer's
    peers_quick: bool = False
    sweep_start: int = 100
    quiet_below_pct: float = QUIET_BELOW_PCT  # 0: do not wait for a quiet machine
    output_dir: Path = Path("bench-results")
    root: Path | None = None
    command_line: str = ""
    # Ours through the Envoy gateway (as deployed) instead of straight to the GraphQL
    # processes (as the peers are measured).
    gateway: bool = False


# -- the harness --------------------------------------------------------------------------


def repo_root() -> Path:
    """The workspace root: the nearest parent of this file holding `uv.lock`."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "uv.lock").is_file():
            return parent
    return Path.cwd()


def default_harness() -> Path:
    return repo_root().parent / "shared" / "bench"


def find_harness(explicit: Path | None) -> Path:
    """The harness directory (`explicit`, else `../shared/bench` beside the repository)."""
    candidate = (explicit or default_harness()).expanduser()
    missing = [name for name in HARNESS_FILES if not (candidate / name).is_file()]
    if missing:
        raise HarnessMissing(
            f"no bench harness at {candidate} (missing {', '.join(missing)}); pass "
            f"--harness PATH or set {HARNESS_ENV}"
        )
    return candidate.resolve()


def _tool_version(argv: Sequence[str]) -> str | None:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (result.stdout or result.stderr).strip() or None


def require_node() -> str:
    missing = [tool for tool in ("node", "npm", "redis-cli") if shutil.which(tool) is None]
    if missing:
        raise FanoutBenchError(
            f"{', '.join(missing)} not found: the harness needs node ≥ 20 and npm (make deps)"
        )
    return _tool_version(["node", "--version"]) or "?"


def git_state() -> dict[str, Any]:
    """The code that was measured: HEAD and the files changed on top of it."""
    root = repo_root()
    head = _tool_version(["git", "-C", str(root), "rev-parse", "HEAD"])
    status = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return {"head": head, "changed": status.stdout.splitlines()}


def file_digests(harness: Path) -> dict[str, str]:
    """sha256 of the harness's tools: which version of the harness measured."""
    return {
        name: hashlib.sha256((harness / name).read_bytes()).hexdigest()[:16]
        for name in (*HARNESS_FILES, "load/lib/clients.js", "load/lib/proc.js")
        if (harness / name).is_file()
    }


# -- child processes ------------------------------------------------------------------------


@dataclass
class ChildRun:
    """One finished (or stopped) tool run: what ran, how it ended, what it printed."""

    command: str
    cwd: str
    returncode: int | None = None
    seconds: float = 0.0
    timed_out: bool = False
    stdout: str = ""
    stderr: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("stdout")
        return data


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(process: subprocess.Popen[str], grace_seconds: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM the child's process group (it leads its own session), then SIGKILL what is
    left. The group id is the child's PID: only what we started is signalled."""
    pgid = process.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None and not _group_alive(pgid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


def run_child(
    argv: Sequence[str],
    *,
    cwd: Path,
    timeout_seconds: float,
    progress: Console,
    prefix: str,
    shown_command: str | None = None,
    keep_stderr_lines: int = 2000,
    die_with_us: bool = True,
) -> ChildRun:
    """Run a tool in its own session (Ctrl-C reaches only us; we stop it), echo its stderr
    as progress, keep its stdout. Bounded by `timeout_seconds`. With `die_with_us`, the
    kernel kills it if this process is killed -9 (not for a script whose exit trap cleans up)."""
    run = ChildRun(command=shown_command or shlex.join(argv), cwd=str(cwd))
    started = time.monotonic()
    process = subprocess.Popen(
        dies_with_parent(list(argv)) if die_with_us else list(argv),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    stdout_parts: list[str] = []
    stderr_lines: deque[str] = deque(maxlen=keep_stderr_lines)

    def pump_stdout(stream: IO[str]) -> None:
        stdout_parts.append(stream.read())

    def pump_stderr(stream: IO[str]) -> None:
        for line in stream:
            line = line.rstrip("\n")
            stderr_lines.append(line)
            progress.print(Text(f"  {prefix} ", style="dim") + Text(line), highlight=False)

    assert process.stdout is not None
    assert process.stderr is not None
    readers = [
        threading.Thread(target=pump_stdout, args=(process.stdout,), daemon=True),
        threading.Thread(target=pump_stderr, args=(process.stderr,), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        deadline = started + timeout_seconds
        while process.poll() is None:
            if time.monotonic() > deadline:
                run.timed_out = True
                progress.print(
                    f"[red]{prefix} still running after {timeout_seconds:.0f} s: stopped"
                )
                break
            time.sleep(0.2)
    finally:
        if process.poll() is None or _group_alive(process.pid):
            # Stopped early (timeout, Ctrl-C), or something it started outlived it.
            with sigint_ignored():
                stop_group(process)
        for reader in readers:
            reader.join(10)
        run.returncode = process.returncode
        run.seconds = round(time.monotonic() - started, 1)
        run.stdout = "".join(stdout_parts)
        run.stderr = list(stderr_lines)
    return run


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects of a tool's output, one per line (other lines skipped)."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(line)
                if isinstance(value, dict):
                    found.append(value)
    return found


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    return json_lines(path.read_text()) if path.is_file() else []


def ensure_node_modules(harness: Path, progress: Console) -> None:
    """`npm ci` in the harness's load/ once (their lock file, not modified)."""
    load = harness / "load"
    if (load / "node_modules").is_dir():
        return
    progress.print(f"installing the load generator's packages (npm ci in {load}) …")
    run = run_child(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=load,
        timeout_seconds=NPM_TIMEOUT_SECONDS,
        progress=progress,
        prefix="[npm]",
    )
    if run.returncode != 0:
        raise FanoutBenchError(f"npm ci in {load} failed: {' / '.join(run.stderr[-5:])}")


# -- Redis between steps (`python -m bench.fanout flush`) ---------------------------


def cluster_primaries(port: int) -> list[int]:
    """Ports of the live primaries of the cluster that the node on `port` belongs to."""
    result = subprocess.run(
        ["redis-cli", "-p", str(port), "cluster", "nodes"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if result.returncode != 0 or not result.stdout.strip():
        raise FanoutBenchError(f"redis-cli -p {port} cluster nodes: {result.stderr.strip()}")
    primaries = []
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        flags = parts[2].split(",")
        if "master" in flags and not {"fail", "fail?", "noaddr"} & set(flags):
            primaries.append(int(parts[1].split("@")[0].rsplit(":", 1)[1]))
    if not primaries:
        raise FanoutBenchError(f"no live primary in the cluster of 127.0.0.1:{port}")
    return sorted(primaries)


def flush_cluster(port: int) -> list[int]:
    """FLUSHALL every primary (replicas follow); the primaries flushed."""
    primaries = cluster_primaries(port)
    for primary in primaries:
        result = subprocess.run(
            ["redis-cli", "-p", str(primary), "flushall"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0 or result.stdout.strip() != "OK":
            raise FanoutBenchError(
                f"FLUSHALL on 127.0.0.1:{primary}: {(result.stdout + result.stderr).strip()}"
            )
    return primaries


def flush_command(redis_port: int, watch: str, quiet_below_pct: float, record: Path) -> list[str]:
    """sweep.js's --before-step: flush, wait for a quiet machine, then print the --watch
    spec as the last line; what it did is appended to `record` (sweep.js drops its stderr)."""
    return [
        sys.executable,
        "-m",
        "bench.fanout",
        "flush",
        *("--redis-port", str(redis_port)),
        *("--quiet-below", f"{quiet_below_pct:g}"),
        *("--quiet-wait", f"{QUIET_WAIT_STEP_SECONDS:g}"),
        *("--record", str(record)),
        *("--watch", watch),
    ]


# -- measuring helpers ------------------------------------------------------------------------


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:9]]
    idle = values[3] + values[4]
    total = sum(values)
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def _fixed(pids: Sequence[int]) -> Callable[[], Sequence[int]]:
    frozen = tuple(pids)
    return lambda: frozen


def cpu_window(groups: Mapping[str, Sequence[int]], seconds: float) -> dict[str, Any]:
    """CPU % (100 = one core) of the groups and of the whole machine over `seconds`."""
    window = CpuWindow({name: _fixed(pids) for name, pids in groups.items()})
    busy_before, _ = machine_cpu_seconds()
    started = time.monotonic()
    window.start()
    time.sleep(seconds)
    window.stop()
    busy_after, _ = machine_cpu_seconds()
    elapsed = time.monotonic() - started
    return {
        "seconds": seconds,
        "cpu_pct": dict(window.percent),
        "machine_busy_pct": round((busy_after - busy_before) / elapsed * 100, 1),
        "load_average_1m": os.getloadavg()[0],
    }


def wait_until_quiet(below_pct: float, max_wait_seconds: float) -> dict[str, Any]:
    """Wait until the whole machine is below `below_pct` busy (100 = one core) for
    QUIET_SAMPLES one-second samples in a row, at most `max_wait_seconds`. On a shared
    2-core box another engineer's test suite would otherwise land in the next measurement
    (it still can, during one: see `cpu.other_pct` of every run)."""
    started = time.monotonic()
    samples: list[float] = []
    quiet_in_a_row = 0
    while below_pct > 0:
        busy_before, _ = machine_cpu_seconds()
        sampled = time.monotonic()
        time.sleep(1.0)
        busy_after, _ = machine_cpu_seconds()
        samples.append(round((busy_after - busy_before) / (time.monotonic() - sampled) * 100, 1))
        quiet_in_a_row = quiet_in_a_row + 1 if samples[-1] < below_pct else 0
        if quiet_in_a_row >= QUIET_SAMPLES or time.monotonic() - started >= max_wait_seconds:
            break
    return {
        "below_pct": below_pct,
        "quiet": quiet_in_a_row >= QUIET_SAMPLES,
        "waited_s": round(time.monotonic() - started, 1),
        "busy_pct_samples": samples[-10:],
    }


def settle(progress: Console, below_pct: float, what: str) -> dict[str, Any]:
    waited = wait_until_quiet(below_pct, QUIET_WAIT_SCENARIO_SECONDS)
    if waited["waited_s"] > QUIET_SAMPLES + 1:
        verdict = "quiet" if waited["quiet"] else "[yellow]still busy, going on[/yellow]"
        progress.print(
            f"waited {waited['waited_s']:.0f} s for other load to settle before {what}: "
            f"{verdict} (machine busy % per s: {waited['busy_pct_samples'][-5:]})"
        )
    return waited


def background_load(progress: Console, when: str) -> dict[str, Any]:
    """The machine's busy % while nothing of this benchmark runs: other work skews results."""
    measured = cpu_window({}, IDLE_WINDOW_SECONDS)
    measured["when"] = when
    busy = measured["machine_busy_pct"]
    note = "  [yellow](other work is running on this machine)[/yellow]" if busy > 20 else ""
    progress.print(f"background load {when}: machine {busy:.0f}% busy of 200%{note}")
    return measured


def scrape_metrics(port: int) -> dict[str, float] | str:
    """The `nextcampus_*` samples of a local /metrics page (histogram buckets left out)."""
    try:
        samples = scrape(f"http://127.0.0.1:{port}/metrics", timeout=5)
    except OSError as exc:
        return f"unreachable: {exc}"
    return {
        name: value
        for name, value in samples.items()
        if name.startswith("nextcampus_") and "_bucket" not in name and "_created" not in name
    }


def scan_logs(logs: Path, keep: int = 40) -> dict[str, Any]:
    """Warnings, errors and tracebacks in each log file: count, first and last lines."""
    findings: dict[str, Any] = {}
    for path in sorted(logs.rglob("*.log")):
        lines = [
            line.rstrip()
            for line in path.read_text(errors="replace").splitlines()
            if LOG_FINDING.search(line)
        ]
        if lines:
            findings[str(path.relative_to(logs))] = {
                "count": len(lines),
                "first": lines[:keep],
                "last": lines[-10:] if len(lines) > keep else [],
            }
    return findings


# -- our stack --------------------------------------------------------------------------------


def _shown(argv: Sequence[str], token: str) -> str:
    """The command as recorded: the token replaced by "$TOKEN" (see `token_recipe`)."""
    text = shlex.join(REDACTED if arg == token else arg for arg in argv)
    return text.replace(REDACTED, '"$TOKEN"')


def token_recipe() -> str:
    courses = " ".join(f"-c {course}" for course in BENCH_COURSES)
    return f"TOKEN=$(chatctl token --user {BENCH_USER} {courses})"


def ws_url(http_url: str) -> str:
    return "ws://" + http_url.removeprefix("http://")


def _label(kind: str, run: int) -> str:
    return f"{kind}:{OURS}:{run}"


def restart_services(stack: Topology) -> None:
    """Fresh chat and GraphQL processes (Redis stays): what the peers get before every
    scenario. Front to back, as `Topology.stop` does."""
    for graphql in stack.graphqls:
        graphql.stop()
    for index in range(len(stack.chats)):
        stack.restart_chat(index)
    stack.graphqls = [stack.new_graphql_process(i) for i in range(len(stack.graphql_ports))]
    for graphql in stack.graphqls:
        graphql.start()
    for graphql in stack.graphqls:
        graphql.wait_ready()
    if stack.gateway is not None:
        stack.gateway.wait_ready()  # its health checks see the new processes


def ws_urls(stack: Topology) -> list[str]:
    """Where the generator connects: the gateway, or every GraphQL process."""
    if stack.gateway is not None:
        return [ws_url(f"{stack.gateway_url}/graphql")]
    return [ws_url(url) for url in stack.graphql_urls]


def run_ours(record: dict[str, Any], options: FanoutOptions, stamp: str, progress: Console) -> None:
    """Start our topology, run the scenarios against it `options.runs` times (fresh chat and
    GraphQL processes for every run), stop it; fills `record`."""
    root = (
        options.root.resolve()
        if options.root
        else Path(tempfile.mkdtemp(prefix="chatctl-bench-fanout-"))
    )
    results_dir = options.output_dir.resolve()
    stack = Topology.on_free_ports(
        root,
        chat_count=2,
        graphql_count=2,
        # The peers are measured without a proxy in front; so are we, unless asked.
        gateway=options.gateway,
        chat_overrides={"default_rate_limit_messages": 0},
        # Every generated socket carries the one bench token: one user holding thousands of
        # sockets, which the per-user limits exist to refuse.
        graphql_overrides={"max_sockets_per_user": 100_000, "max_subscriptions_per_user": 100_000},
        # The gateway's request budget must not be what is measured.
        gateway_overrides={
            "requests_per_second": 1_000_000,
            "burst": 1_000_000,
            "per_user": UNLIMITED_BUDGET,
            "per_address": UNLIMITED_BUDGET,
        },
    )
    record.update(root=str(root), open_files_limit=raise_open_files_limit(), runs=[])
    failed = True
    try:
        gateway = " + Envoy in front" if options.gateway else ""
        progress.print(
            f"starting Redis Cluster (6 nodes) + 2 chat + 2 GraphQL processes{gateway} "
            f"(state in {root}) …"
        )
        stack.start()
        assert all(COURSE_ID.match(course) for course in BENCH_COURSES)
        token = issue_token(stack.jwt_secret, BENCH_USER, BENCH_COURSES)
        record.update(
            urls=ws_urls(stack),
            token={"user": BENCH_USER, "courses": BENCH_COURSES, "recipe": token_recipe()},
        )
        for run in range(1, options.runs + 1):
            if run > 1:
                progress.print(f"run {run}: fresh chat and GraphQL processes …")
                restart_services(stack)
            run_record: dict[str, Any] = {"run": run}
            record["runs"].append(run_record)
            run_scenarios(run_record, stack, token, run, options, progress)
        failed = False
    finally:
        with sigint_ignored():
            progress.print("stopping our stack …")
            stack.stop()
            kept = keep_logs(root, results_dir / f"fanout-{stamp}-logs")
            record["logs"] = str(kept)
            record["log_findings"] = scan_logs(kept)
            if options.root is None and not failed:
                shutil.rmtree(root, ignore_errors=True)
            elif failed:
                progress.print(f"stack state kept in {root}")


def run_scenarios(
    record: dict[str, Any],
    stack: Topology,
    token: str,
    run: int,
    options: FanoutOptions,
    progress: Console,
) -> None:
    """One run of the three scenarios against the running stack; fills `record`."""
    assert stack.redis is not None
    harness, load = options.harness, options.harness / "load"
    graphql_pids = [p.pid for p in stack.graphqls]
    chat_pids = [p.pid for p in stack.chats]
    redis_pids = [p.pid for p in stack.redis.processes.values()]
    gateway_pids = [stack.gateway.pid] if stack.gateway is not None else []
    # gen.js reports every named group; sweep.js's step summary only `server` and `redis`.
    watch = (
        f"server={','.join(map(str, graphql_pids))};chat={','.join(map(str, chat_pids))};"
        f"redis={','.join(map(str, redis_pids))}"
        + (f";gateway={','.join(map(str, gateway_pids))}" if gateway_pids else "")
    )
    urls = ",".join(ws_urls(stack))
    redis_port = stack.redis_ports[0]
    metrics_ports = {
        **{f"graphql-{i}": port for i, port in enumerate(stack.graphql_metrics_ports)},
        **{f"chat-{i}": port for i, port in enumerate(stack.chat_metrics_ports)},
    }
    pids = {"graphql": graphql_pids, "chat": chat_pids, "redis": redis_pids}
    if gateway_pids:
        pids["gateway"] = gateway_pids
    idle = cpu_window(pids, IDLE_WINDOW_SECONDS)
    record.update(
        watch=watch,
        pids=pids,
        idle=idle,
        scenarios={},
        metrics={},
    )
    progress.print(
        "idle CPU %: graphql {graphql} / chat {chat} / redis {redis}; machine {busy:.0f}% busy".format(
            **{k: format_pct(v) for k, v in idle["cpu_pct"].items()}, busy=idle["machine_busy_pct"]
        )
    )
    steps_log = stack.root / f"sweep-steps-{run}.jsonl"
    between_steps = stack.root / f"between-steps-{run}.jsonl"
    common = ["--proto", PROTOCOL, "--urls", urls]
    # Memory first, on fresh processes (as the peers' are): a Python process keeps the
    # memory of sockets it has closed, so after the sweep the probe would see little growth.
    scenarios: list[tuple[str, list[str], float, str]] = [
        (
            "memory",
            [
                "node",
                str(load / "memprobe.js"),
                *common,
                *("--conns", str(MEMORY_CONNECTIONS), "--courses", str(COURSES)),
                *("--pids", ",".join(map(str, graphql_pids))),
                *("--token", token, "--label", _label("memory", run)),
            ],
            MEMORY_TIMEOUT_SECONDS,
            f"{MEMORY_CONNECTIONS} idle sockets (≈ 40 s)",
        ),
        (
            "latency",
            [
                "node",
                str(load / "gen.js"),
                *common,
                *("--subs", str(LATENCY_SUBSCRIBERS), "--courses", str(COURSES)),
                *("--rate", str(LATENCY_RATE), "--duration", str(LATENCY_SECONDS)),
                *("--token", token, "--watch", watch, "--label", _label("latency", run)),
            ],
            LATENCY_TIMEOUT_SECONDS,
            f"S={LATENCY_SUBSCRIBERS} C={COURSES} R={LATENCY_RATE} for {LATENCY_SECONDS} s "
            f"(≈ {LATENCY_SECONDS + 15} s)",
        ),
        (
            "saturation",
            [
                "node",
                str(load / "sweep.js"),
                "--before-step",
                shlex.join(
                    flush_command(redis_port, watch, options.quiet_below_pct, between_steps)
                ),
                *common,
                *("--subs", str(SATURATION_SUBSCRIBERS), "--courses", str(COURSES)),
                *("--start", str(options.sweep_start)),
                *("--step-duration", str(SWEEP_STEP_SECONDS)),
                *("--slo-p99", f"{SLO_P99_MS:g}", "--precision", f"{SWEEP_PRECISION:g}"),
                *("--token", token, "--watch", watch, "--label", _label("saturation", run)),
                *("--log", str(steps_log)),
            ],
            SWEEP_TIMEOUT_SECONDS,
            f"sweep S={SATURATION_SUBSCRIBERS} C={COURSES} from R={options.sweep_start}, "
            f"{SWEEP_STEP_SECONDS} s steps (a few minutes)",
        ),
    ]
    for name, argv, timeout, what in scenarios:
        flushed = flush_cluster(redis_port)
        quiet = settle(progress, options.quiet_below_pct, f"our {name} scenario")
        progress.print(f"[bold]ours, run {run}: {name}[/bold] — {what}; Redis primaries flushed")
        child = run_child(
            argv,
            cwd=harness,
            timeout_seconds=timeout,
            progress=progress,
            prefix=f"[{name}]",
            shown_command=_shown(argv, token),
        )
        lines = json_lines(child.stdout)
        scenario: dict[str, Any] = {
            **child.record(),
            "flushed_primaries": flushed,
            "quiet_wait": quiet,
            "raw": lines[-1] if lines else None,
        }
        if name == "saturation":
            scenario["steps"] = read_json_lines(steps_log)
            scenario["between_steps"] = read_json_lines(between_steps)
        record["scenarios"][name] = scenario
        record["metrics"][f"after {name}"] = {
            process: scrape_metrics(port) for process, port in metrics_ports.items()
        }
        if scenario["raw"] is None or child.returncode != 0:
            progress.print(
                f"[yellow]ours: {name} ended with {child.returncode}"
                f"{' (timed out)' if child.timed_out else ''}; see the JSON[/yellow]"
            )
        dead = [p.name for p in stack.all_processes if not p.alive()]
        if dead:
            record["exited"] = dead
            raise FanoutBenchError(f"{', '.join(dead)} exited during {name}; see its log")


def keep_logs(root: Path, destination: Path) -> Path:
    """The services' logs and every Redis node's log, next to the results."""
    destination.mkdir(parents=True, exist_ok=True)
    if (root / "logs").is_dir():
        shutil.copytree(root / "logs", destination, dirs_exist_ok=True)
    for redis_log in sorted((root / "redis").glob("*/redis.log")):
        shutil.copy2(redis_log, destination / f"redis-{redis_log.parent.name}.log")
    return destination


# -- the peers ----------------------------------------------------------------------------------


def run_peers(record: dict[str, Any], options: FanoutOptions, progress: Console) -> None:
    """`run-peers.sh` for the latency, saturation and memory scenarios; fills `record`."""
    harness = options.harness
    busy = [port for port in PEER_PORTS if not port_is_free(port)]
    if busy:
        record["error"] = (
            f"ports {', '.join(map(str, busy))} are in use (another run-peers.sh?): peers skipped"
        )
        progress.print(f"[red]{record['error']}[/red]")
        return
    argv = [
        "bash",
        "run-peers.sh",
        *("--runs", str(options.runs)),
        *("--only", "latency,saturation,memory"),
        *(["--quick"] if options.peers_quick else []),
    ]
    progress.print(
        f"[bold]peers[/bold] ({', '.join(PEERS)}): {shlex.join(argv)} in {harness} "
        + (
            "(quick: 1 run, 5 s latency, 4 s steps, 500 sockets)"
            if options.peers_quick
            else f"(~{6 * options.runs} min)"
        )
    )
    record["quiet_wait"] = settle(progress, options.quiet_below_pct, "the peers")
    started = time.time()
    run = run_child(
        argv,
        cwd=harness,
        timeout_seconds=PEERS_TIMEOUT_SECONDS,
        progress=progress,
        prefix="",
        die_with_us=False,  # its EXIT trap stops the peers; SIGKILL would skip it
    )
    record.update(run.record())
    record["report_markdown"] = run.stdout
    raw_path: Path | None = None
    for line in reversed(run.stderr):
        match = re.search(r"raw results: (\S+\.jsonl)", line)
        if match:
            raw_path = harness / match.group(1)
            break
    if raw_path is None:  # it did not get to the end: the newest raw file of this run
        fresh = [
            p for p in (harness / "results").glob("raw-*.jsonl") if p.stat().st_mtime >= started
        ]
        raw_path = max(fresh, key=lambda p: p.stat().st_mtime, default=None)
    if raw_path is None:
        record["error"] = f"run-peers.sh wrote no raw results (exit {run.returncode})"
        return
    run_stamp = raw_path.stem.removeprefix("raw-")
    machine_path = harness / "results" / f"machine-{run_stamp}.json"
    record.update(
        raw_file=str(raw_path),
        raw=read_json_lines(raw_path),
        sweep_steps_file=str(harness / "results" / f"sweep-steps-{run_stamp}.jsonl"),
        sweep_steps=read_json_lines(harness / "results" / f"sweep-steps-{run_stamp}.jsonl"),
        machine=json.loads(machine_path.read_text()) if machine_path.is_file() else None,
    )


# -- summary ----------------------------------------------------------------------------------


def dig(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _cpu(line: Any, group: str) -> Any:
    return dig(line, "cpu", group, "cpu_pct")


def summarize_latency(line: dict[str, Any]) -> dict[str, Any]:
    return {
        "error": line.get("error"),
        "offered_deliveries_per_s": LATENCY_RATE * LATENCY_SUBSCRIBERS // COURSES,
        "deliveries_per_s": line.get("delivered_per_s"),
        "published": line.get("published"),
        "publish_errors": line.get("publish_errors"),
        "p50_ms": dig(line, "latency_ms", "p50"),
        "p99_ms": dig(line, "latency_ms", "p99"),
        "max_ms": dig(line, "latency_ms", "max"),
        "publish_ack_p99_ms": dig(line, "publish_ack_ms", "p99"),
        "lost": line.get("lost"),
        "duplicates": line.get("duplicates"),
        "out_of_order": line.get("out_of_order"),
        "disconnects": line.get("disconnects"),
        "subs_not_ready": line.get("subs_not_ready"),
        "server_cpu_pct": _cpu(line, "server"),
        "chat_cpu_pct": _cpu(line, "chat"),
        "redis_cpu_pct": _cpu(line, "redis"),
        "gateway_cpu_pct": _cpu(line, "gateway"),
        "generator_cpu_pct": dig(line, "gen", "cpu_pct_total"),
        "machine_busy_pct": dig(line, "cpu", "machine_busy_pct"),
        "other_cpu_pct": dig(line, "cpu", "other_pct"),
    }


def step_passes(step: dict[str, Any], rate: float) -> bool:
    """sweep.js's rule, for a sweep that did not get to print its summary."""
    p99 = dig(step, "latency_ms", "p99")
    ready = step.get("ready") or {}
    return (
        not step.get("error")
        and step.get("lost") == 0
        and step.get("publish_errors") == 0
        and p99 is not None
        and p99 < SLO_P99_MS
        and (step.get("publish_rate_achieved") or 0) >= 0.98 * rate
        and not step.get("subs_not_ready")
        and ready.get("subs", 0) >= ready.get("of", 0)
        and not step.get("disconnects")
    )


def sweep_from_steps(steps: Sequence[dict[str, Any]], label: str) -> dict[str, Any]:
    """A sweep summary rebuilt from its step log (the sweep was stopped before the end)."""
    # A step's rate comes from its label: a step that failed outright carries nothing else.
    rates: dict[int, float] = {}
    for step in steps:
        prefix, _, rate = str(step.get("label", "")).rpartition("@")
        with contextlib.suppress(ValueError):
            if prefix == label:
                rates[id(step)] = float(rate)
    mine = [s for s in steps if id(s) in rates]
    passed = [s for s in mine if step_passes(s, rates[id(s)])]
    failed = [rates[id(s)] for s in mine if s not in passed]
    best = max(passed, key=lambda s: rates[id(s)], default=None)
    return {
        "label": label,
        "error": "the sweep did not finish: summary rebuilt from its steps",
        "max_rate_pass": rates[id(best)] if best else None,
        "first_rate_fail": min(failed, default=None),
        "at_max_full": best,
        "steps": [{"rate": rates[id(s)], "pass": s in passed, "reasons": []} for s in mine],
    }


def per_thousand(cpu_pct: Sequence[Any], deliveries_per_s: Any) -> float | None:
    """CPU % (100 = one core) per 1,000 deliveries/s: what one delivery costs, comparable
    across systems and rates."""
    if not isinstance(deliveries_per_s, int | float) or deliveries_per_s <= 0:
        return None
    known = [v for v in cpu_pct if isinstance(v, int | float)]
    return round(sum(known) / deliveries_per_s * 1000, 2) if known else None


def summarize_saturation(line: dict[str, Any]) -> dict[str, Any]:
    at = line.get("at_max_full") or {}
    rate = line.get("max_rate_pass")
    steps = line.get("steps") or []
    first_fail = line.get("first_rate_fail")
    fail_reasons = next((s.get("reasons") for s in steps if s.get("rate") == first_fail), None)
    return {
        "error": line.get("error"),
        "max_rate_pass": rate,
        "first_rate_fail": first_fail,
        "first_fail_reasons": fail_reasons,
        "nominal_deliveries_per_s": (
            rate * SATURATION_SUBSCRIBERS // COURSES if isinstance(rate, int | float) else None
        ),
        "deliveries_per_s": at.get("delivered_per_s"),
        "p50_ms": dig(at, "latency_ms", "p50"),
        "p99_ms": dig(at, "latency_ms", "p99"),
        "max_ms": dig(at, "latency_ms", "max"),
        "lost": at.get("lost"),
        "duplicates": at.get("duplicates"),
        "out_of_order": at.get("out_of_order"),
        "server_cpu_pct": _cpu(at, "server"),
        "chat_cpu_pct": _cpu(at, "chat"),
        "redis_cpu_pct": _cpu(at, "redis"),
        "gateway_cpu_pct": _cpu(at, "gateway"),
        "generator_cpu_pct": dig(at, "gen", "cpu_pct_total"),
        "machine_busy_pct": dig(at, "cpu", "machine_busy_pct"),
        "other_cpu_pct": dig(at, "cpu", "other_pct"),
        "server_cpu_pct_per_1k_deliveries": per_thousand(
            [_cpu(at, "server"), _cpu(at, "chat")], at.get("delivered_per_s")
        ),
        "generator_cpu_pct_per_1k_deliveries": per_thousand(
            [dig(at, "gen", "cpu_pct_total")], at.get("delivered_per_s")
        ),
        "steps": len(steps),
    }


def summarize_memory(line: dict[str, Any]) -> dict[str, Any]:
    return {
        "error": line.get("error"),
        "conns": line.get("conns"),
        "opened": line.get("opened"),
        "open_failed": line.get("open_failed"),
        "all_verified": line.get("all_verified"),
        "disconnects": line.get("disconnects"),
        "kb_per_conn": line.get("kb_per_conn"),
        "kb_per_conn_2s_later": line.get("kb_per_conn_2s_later"),
        "kb_per_conn_per_pid": line.get("kb_per_conn_per_pid"),
    }


SUMMARIZERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "latency": summarize_latency,
    "saturation": summarize_saturation,
    "memory": summarize_memory,
}


def combine_runs(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One summary of several runs: the median of every number (and its [min, max] under
    `range`), else the first run's value."""
    combined: dict[str, Any] = {"runs": len(runs)}
    ranges: dict[str, list[float]] = {}
    for key in runs[0]:
        values = [run.get(key) for run in runs]
        numbers: list[float] = [v for v in values if _is_number(v)]
        if len(runs) > 1 and numbers:
            combined[key] = statistics.median(numbers)
            ranges[key] = [min(numbers), max(numbers)]
        else:
            combined[key] = values[0]
    if len(runs) > 1:
        combined["range"] = ranges
        combined["per_run"] = list(runs)
    return combined


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def summarize_system(lines_by_kind: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        kind: combine_runs([SUMMARIZERS[kind](line) for line in lines])
        for kind, lines in lines_by_kind.items()
        if lines
    }


def group_peer_lines(raw: Iterable[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """run-peers.sh's raw lines by peer and scenario (labels `<scenario>:<peer>:<run>`)."""
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for line in raw:
        kind, _, rest = str(line.get("label", "")).partition(":")
        peer = rest.partition(":")[0]
        if kind in SUMMARIZERS and peer:
            grouped.setdefault(peer, {}).setdefault(kind, []).append(line)
    return grouped


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    systems: dict[str, Any] = {}
    ours_lines: dict[str, list[dict[str, Any]]] = {}
    for run in dig(results, "ours", "runs") or []:
        for kind, scenario in (run.get("scenarios") or {}).items():
            raw = scenario.get("raw")
            if raw is None and kind == "saturation":
                label = _label("saturation", run["run"])
                raw = sweep_from_steps(scenario.get("steps") or [], label)
            if raw is None:
                raw = {"error": f"no result (exit {scenario.get('returncode')})"}
            ours_lines.setdefault(kind, []).append(raw)
    if ours_lines:
        systems[OURS] = summarize_system(ours_lines)
    peers = results.get("peers") or {}
    for peer, lines_by_kind in group_peer_lines(peers.get("raw") or []).items():
        systems[peer] = summarize_system(lines_by_kind)
    return {
        "systems": systems,
        "targets": target_verdicts(systems),
        "ours_through_gateway": bool(dig(results, "options", "gateway")),
    }


def target_verdicts(systems: dict[str, Any]) -> dict[str, Any]:
    ours = systems.get(OURS) or {}
    deliveries = dig(ours, "saturation", "deliveries_per_s")
    p99 = dig(ours, "latency", "p99_ms")
    kb = dig(ours, "memory", "kb_per_conn")
    peer_p99 = {
        name: dig(summary, "latency", "p99_ms")
        for name, summary in systems.items()
        if name != OURS and dig(summary, "latency", "p99_ms") is not None
    }
    return {
        "deliveries_per_s_at_slo": {
            "target": f"≥ {TARGET_DELIVERIES_PER_SECOND:,} deliveries/s with zero loss and "
            f"p99 < {SLO_P99_MS:g} ms (S={SATURATION_SUBSCRIBERS}, C={COURSES})",
            "ours": deliveries,
            "met": None if deliveries is None else deliveries >= TARGET_DELIVERIES_PER_SECOND,
        },
        "latency_p99_vs_peers": {
            "target": f"p99 at {LATENCY_RATE * LATENCY_SUBSCRIBERS // COURSES:,} deliveries/s "
            "no worse than every peer's",
            "ours": p99,
            "peers": peer_p99,
            "met": None if p99 is None or not peer_p99 else p99 <= min(peer_p99.values()),
        },
        "kb_per_idle_socket": {
            "target": f"≤ {TARGET_KB_PER_IDLE_SOCKET:g} KB of RSS per idle subscribed socket "
            f"({MEMORY_CONNECTIONS:,} sockets)",
            "ours": kb,
            "met": None if kb is None else kb <= TARGET_KB_PER_IDLE_SOCKET,
        },
    }


# -- tables -------------------------------------------------------------------------------------


def _n(value: Any, digits: int = 0) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}"
    return str(value)


def _slash(*values: str) -> str:
    return " / ".join(values)


def _verdict(met: bool | None) -> str:
    if met is None:
        return "[dim]unknown[/dim]"
    return "[green]met[/green]" if met else "[red]not met[/red]"


def comparison_table(summary: dict[str, Any]) -> Table:
    systems = summary["systems"]
    names = [OURS, *[n for n in systems if n != OURS]]
    targets = summary["targets"]
    table = Table(
        title="Chat fan-out, 2 server processes + Redis, everything on one 2-core machine "
        "(harness gen.js / sweep.js / memprobe.js)",
        title_justify="left",
    )
    table.add_column("measure")
    for name in names:
        ours = "ours, via Envoy" if summary.get("ours_through_gateway") else "ours"
        table.add_column(f"{name} ({ours})" if name == OURS else name, justify="right")
    table.add_column("target (ours)")

    def row(label: str, render: Callable[[dict[str, Any]], str], target: str = "") -> None:
        table.add_row(label, *[render(systems.get(n) or {}) for n in names], target)

    def sat(key: str) -> Any:
        return lambda s: dig(s, "saturation", key)

    def spread(kind: str, key: str, digits: int = 0) -> Callable[[dict[str, Any]], str]:
        """The median, and [min–max] over the runs when there are several."""

        def render(s: dict[str, Any]) -> str:
            low_high = dig(s, kind, "range", key)
            median = _n(dig(s, kind, key), digits)
            if not low_high or low_high[0] == low_high[1]:
                return median
            return f"{median} [{_n(low_high[0], digits)}–{_n(low_high[1], digits)}]"

        return render

    def lat(key: str) -> Any:
        return lambda s: dig(s, "latency", key)

    # The gateway's share, where ours ran behind it (the peers have none).
    groups = ["server", "chat", "redis"]
    if summary.get("ours_through_gateway"):
        groups.append("gateway")
    groups += ["generator", "other"]

    def cpu_row(kind: str, of: Callable[[str], Any]) -> None:
        row(
            f"{kind}: CPU % {' / '.join(groups)}",
            lambda s: _slash(*(format_pct(of(f"{group}_cpu_pct")(s)) for group in groups)),
        )

    row(
        "saturation: max R passing, msgs/s (first failing R)",
        lambda s: f"{spread('saturation', 'max_rate_pass')(s)} ({_n(sat('first_rate_fail')(s))})",
    )
    row(
        f"saturation: deliveries/s at the SLO (loss 0, p99 < {SLO_P99_MS:g} ms)",
        spread("saturation", "deliveries_per_s"),
        f"≥ {TARGET_DELIVERIES_PER_SECOND:,}: "
        + _verdict(targets["deliveries_per_s_at_slo"]["met"]),
    )
    row(
        "saturation: p50 / p99 ms at that point",
        lambda s: _slash(format_ms(sat("p50_ms")(s)), format_ms(sat("p99_ms")(s))),
    )
    cpu_row("saturation", sat)
    row(
        "saturation: CPU % per 1,000 deliveries/s, server (+ chat) / generator",
        lambda s: _slash(
            _n(sat("server_cpu_pct_per_1k_deliveries")(s), 2),
            _n(sat("generator_cpu_pct_per_1k_deliveries")(s), 2),
        ),
    )
    row(
        "saturation: why the first failing step failed",
        lambda s: "; ".join(sat("first_fail_reasons")(s) or []) or "—",
    )
    row(
        f"latency (S={LATENCY_SUBSCRIBERS}, R={LATENCY_RATE}): deliveries/s "
        f"(offered {LATENCY_RATE * LATENCY_SUBSCRIBERS // COURSES:,})",
        lambda s: _n(lat("deliveries_per_s")(s)),
    )
    row(
        "latency: p50 / p99 / max ms",
        lambda s: _slash(
            format_ms(lat("p50_ms")(s)),
            spread("latency", "p99_ms", 1)(s),
            format_ms(lat("max_ms")(s)),
        ),
        "p99 ≤ every peer's: " + _verdict(targets["latency_p99_vs_peers"]["met"]),
    )
    row(
        "latency: lost / duplicates / out-of-order / disconnects",
        lambda s: _slash(
            _n(lat("lost")(s)),
            _n(lat("duplicates")(s)),
            _n(lat("out_of_order")(s)),
            _n(lat("disconnects")(s)),
        ),
        "0 / 0 / 0 / 0",
    )
    cpu_row("latency", lat)
    row(
        f"memory: KB RSS per idle socket ({MEMORY_CONNECTIONS:,}; 2 s later)",
        lambda s: (
            f"{spread('memory', 'kb_per_conn', 1)(s)} "
            f"({_n(dig(s, 'memory', 'kb_per_conn_2s_later'), 1)})"
        ),
        f"≤ {TARGET_KB_PER_IDLE_SOCKET:g}: " + _verdict(targets["kb_per_idle_socket"]["met"]),
    )
    row(
        "memory: sockets opened / all verified / disconnects",
        lambda s: _slash(
            _n(dig(s, "memory", "opened")),
            _n(dig(s, "memory", "all_verified")),
            _n(dig(s, "memory", "disconnects")),
        ),
    )
    table.caption = (
        "With several runs: medians, and \\[min–max] where shown. "
        "server = the WebSocket processes (ours: the 2 GraphQL processes; chat = our 2 gRPC "
        "chat processes, which the peers do not have); redis = ours 6 cluster nodes, peers 1. "
        "CPU % of one core; the machine has 200; other = machine busy minus everything "
        "watched (kernel, and other work on the machine)."
    )
    return table


def sweep_table(results: dict[str, Any]) -> Table:
    """Every sweep step of every system: where each one stopped passing, and why."""
    table = Table(title="Saturation sweep steps (S=1000, C=10)", title_justify="left")
    for name in ("system", "R msgs/s", "pass", "deliveries/s", "p50 ms", "p99 ms", "lost"):
        table.add_column(name, justify="left" if name in ("system", "pass") else "right")
    table.add_column("CPU % server / chat / redis / gen / other", justify="right")
    table.add_column("why it failed")
    ours_steps: dict[str, dict[str, Any]] = {}
    sweeps: list[tuple[str, dict[str, Any]]] = []
    for run in dig(results, "ours", "runs") or []:
        ours_sweep = dig(run, "scenarios", "saturation") or {}
        ours_steps.update({str(s.get("label", "")): s for s in ours_sweep.get("steps") or []})
        sweeps.append((f"{OURS} #{run['run']}", ours_sweep.get("raw") or {}))
    sweeps += [
        (f"{label.split(':')[1]} #{label.split(':')[2]}", line)
        for line in dig(results, "peers", "raw") or []
        if (label := str(line.get("label", ""))).startswith("saturation:") and label.count(":") == 2
    ]
    for system, sweep in sweeps:
        for step in sweep.get("steps") or []:
            full = ours_steps.get(f"{sweep.get('label')}@{step.get('rate')}", {})
            table.add_row(
                system,
                _n(step.get("rate")),
                "[green]pass[/green]" if step.get("pass") else "[red]fail[/red]",
                _n(step.get("delivered_per_s")),
                format_ms(step.get("p50")),
                format_ms(step.get("p99")),
                _n(step.get("lost")),
                _slash(
                    format_pct(step.get("server_cpu_pct")),
                    format_pct(_cpu(full, "chat")),
                    format_pct(step.get("redis_cpu_pct")),
                    format_pct(step.get("gen_cpu_pct")),
                    format_pct(step.get("other_pct")),
                ),
                "; ".join(step.get("reasons") or []),
            )
    return table


# -- the run --------------------------------------------------------------------------------


def run_fanout_bench(options: FanoutOptions, progress: Console, out: Console) -> Path:
    """Ours, then the peers; print the comparison; write the JSON. Returns its path."""
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    results_dir = options.output_dir.resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"fanout-{stamp}.json"
    node = require_node()
    results: dict[str, Any] = {
        "benchmark": "fanout",
        "started_at": started.isoformat(),
        "command": options.command_line,
        "harness": {"path": str(options.harness), "sha256_16": file_digests(options.harness)},
        "code": git_state(),
        "machine": {
            **machine_info(),
            "node": node,
            "redis": _tool_version(["redis-server", "--version"]),
            "note": "generator, servers and Redis share this machine",
        },
        "scenarios": {
            "latency": {
                "subs": LATENCY_SUBSCRIBERS,
                "courses": COURSES,
                "rate": LATENCY_RATE,
                "duration_s": LATENCY_SECONDS,
            },
            "saturation": {
                "subs": SATURATION_SUBSCRIBERS,
                "courses": COURSES,
                "start": options.sweep_start,
                "step_duration_s": SWEEP_STEP_SECONDS,
                "slo_p99_ms": SLO_P99_MS,
                "precision": SWEEP_PRECISION,
                "between_steps": "ours: FLUSHALL of the cluster primaries, processes kept; "
                "peers: processes restarted + FLUSHALL",
            },
            "memory": {"conns": MEMORY_CONNECTIONS, "courses": COURSES},
        },
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "background_load": [],
    }
    finished = False
    try:
        ensure_node_modules(options.harness, progress)
        results["background_load"].append(background_load(progress, "before our stack"))
        results["ours"] = {}
        run_ours(results["ours"], options, stamp, progress)
        if options.peers:
            results["background_load"].append(background_load(progress, "before the peers"))
            results["peers"] = {}
            run_peers(results["peers"], options, progress)
        finished = True
    except KeyboardInterrupt:
        results["interrupted"] = True
        raise
    finally:
        with sigint_ignored():
            results["finished_at"] = dt.datetime.now(dt.UTC).isoformat()
            results["summary"] = summarize(results)
            path.write_text(json.dumps(results, indent=2) + "\n")
            progress.print(f"results{'' if finished else ' (partial)'}: {path}")
    out.print(sweep_table(results))
    out.print(comparison_table(results["summary"]))
    findings = dig(results, "ours", "log_findings") or {}
    for name, found in findings.items():
        out.print(f"[yellow]{name}: {found['count']} warning/error lines[/yellow], e.g.")
        headlines = [line for line in found["first"] if re.match(r"\d{4}-\d\d-\d\dT", line)]
        for line in (headlines or found["first"])[:4]:
            out.print(Text(f"  {line}"), highlight=False)
    out.print(f"results: {path}  (our stack's logs: {dig(results, 'ours', 'logs')})")
    return path


# -- `python -m bench.fanout flush` (sweep.js runs it before every step) -------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout",
        description="helpers of `chatctl bench-fanout` that the harness's tools run",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    flush = commands.add_parser(
        "flush",
        help="FLUSHALL every primary of a local Redis Cluster, then print --watch as the last "
        "line (sweep.js's --before-step passes it on to gen.js)",
    )
    flush.add_argument("--redis-port", type=int, required=True, help="any node of the cluster")
    flush.add_argument("--watch", default="", help='e.g. "server=PID,PID;redis=PID"')
    flush.add_argument(
        "--quiet-below",
        type=float,
        default=0.0,
        help="then wait until the machine is below this busy %% (100 = one core); 0: no wait",
    )
    flush.add_argument("--quiet-wait", type=float, default=QUIET_WAIT_STEP_SECONDS)
    flush.add_argument("--record", type=Path, help="append what was done as a JSON line")
    args = parser.parse_args(argv)
    try:
        primaries = flush_cluster(args.redis_port)
    except (FanoutBenchError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"flush failed: {exc}", file=sys.stderr)
        return 1
    quiet = wait_until_quiet(args.quiet_below, args.quiet_wait)
    print(f"flushed primaries {','.join(map(str, primaries))}; {quiet}", file=sys.stderr)
    if args.record is not None:
        line = {"ts": dt.datetime.now(dt.UTC).isoformat(), "flushed": primaries, **quiet}
        with args.record.open("a") as record:
            record.write(json.dumps(line) + "\n")
    if args.watch:
        print(args.watch, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
