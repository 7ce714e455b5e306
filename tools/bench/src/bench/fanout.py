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
processes, rate limit off, Envoy in front) with one token for every course the generator
uses. Every run measures ours twice: first straight to the GraphQL processes, as the peers
are measured (system `nextcampus`), then, on fresh chat and GraphQL processes, through the
Envoy gateway as deployed (`nextcampus-gateway`; `--no-gateway` skips it and starts no
gateway). The mixed-event sweeps run direct only. Before each scenario and each sweep step
the cluster's primaries are FLUSHALLed (`chatctl bench-fanout-flush`, which also waits,
bounded, for a quiet machine); our chat and GraphQL processes are fresh for every run
(`--runs`) and for the gateway's turn, not for every scenario and sweep step as the peers'
are. The peers run afterwards, with our stack stopped, through the harness's `run-peers.sh`
(its own install, Redis, restarts and PID handling).

The comparison table holds ours (direct and through the gateway), every peer, ours ÷ the
best peer, and the verdict of each of issue 17's targets (bench.stats.fanout_targets).

Everything this starts runs in its own process group and is stopped by PID / group id on
exit, timeout or Ctrl-C. Results: `bench-results/fanout-<UTC stamp>.json` (raw JSON lines of
every tool, the summary, the exact commands, machine info; in each of our runs the direct
scenarios under `scenarios`, those through the gateway under `gateway`) and the stack's
logs beside it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.text import Text

from bench import mixed, sends
from bench.measure import QUIET_SAMPLES, cpu_window, machine_info, wait_until_quiet
from bench.report import (
    ResultsFile,
    comparison_table,
    format_pct,
    hop_table,
    options_record,
    sigint_ignored,
    sweep_table,
)
from bench.stats import (
    COURSES,
    GATEWAY_PART,
    HOP_BUCKET,
    LATENCY_RATE,
    LATENCY_SECONDS,
    LATENCY_SUBSCRIBERS,
    MEMORY_CONNECTIONS,
    OURS,
    OURS_GATEWAY,
    SATURATION_SUBSCRIBERS,
    SLO_P99_MS,
    SWEEP_PRECISION,
    SWEEP_STEP_SECONDS,
    dig,
    run_label,
    summarize_fanout,
)
from devstack.gateway import UNLIMITED_BUDGET
from devstack.processes import (
    dies_with_parent,
    port_is_free,
    raise_open_files_limit,
    stop_process,
)
from devstack.redis_cluster import live_primaries, redis_cli
from devstack.scrape import scrape
from devstack.topology import Topology
from nextcampus_common.auth import issue_token
from nextcampus_common.ids import COURSE_ID

HARNESS_ENV = "NEXTCAMPUS_BENCH_HARNESS"
HARNESS_FILES = ("load/gen.js", "load/sweep.js", "load/memprobe.js", "run-peers.sh")
PEERS = ("socketio-py", "graphqlws-node")
# Fixed loopback ports of the harness's Redis and peer servers (its README).
PEER_PORTS = (26379, 27101, 27102, 27201, 27202)
PROTOCOL = "graphql-transport-ws"

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
    # Ours also through the Envoy gateway (as deployed), after the scenarios straight to the
    # GraphQL processes (as the peers are measured), on fresh processes.
    gateway: bool = True
    # The harness's scenarios (memory, latency, saturation), and ours of courseEvents with
    # mixed changes (bench/mixed.py; first rate of its sweeps).
    harness_scenarios: bool = True
    mixed: bool = True
    mixed_start: int = 25

    @property
    def through_gateway(self) -> bool:
        """Whether the harness's scenarios run through the gateway too (the mixed sweeps are
        direct only)."""
        return self.gateway and self.harness_scenarios


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
        # Stopped early (timeout, Ctrl-C), or something it started outlived it: its process
        # group (it leads its own session) is stopped; nothing is done if nothing is left.
        with sigint_ignored():
            stop_process(process, STOP_GRACE_SECONDS, group=True)
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


def ensure_node_modules(harness: Path, progress: Console, folder: str = "load") -> None:
    """`npm ci` in `harness`/`folder` once (its lock file, not modified)."""
    load = harness / folder
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


# -- Redis between steps (`chatctl bench-fanout-flush`) -------------------------------------------

# The command sweep.js runs before every step (--before-step).
FLUSH_COMMAND = "bench-fanout-flush"


def flush_cluster(port: int) -> list[int]:
    """FLUSHALL every primary (replicas follow); the primaries flushed."""
    primaries = live_primaries(port)
    for primary in primaries:
        reply = redis_cli(primary, "flushall", timeout=30).strip()
        if reply != "OK":
            raise FanoutBenchError(f"FLUSHALL on 127.0.0.1:{primary}: {reply}")
    return primaries


def flush_command(redis_port: int, watch: str, quiet_below_pct: float, record: Path) -> list[str]:
    """sweep.js's --before-step: flush, wait for a quiet machine, then print the --watch
    spec as the last line; what it did is appended to `record` (sweep.js drops its stderr)."""
    return [
        sys.executable,
        "-m",
        "chatctl",
        FLUSH_COMMAND,
        *("--redis-port", str(redis_port)),
        *("--quiet-below", f"{quiet_below_pct:g}"),
        *("--quiet-wait", f"{QUIET_WAIT_STEP_SECONDS:g}"),
        *("--record", str(record)),
        *("--watch", watch),
    ]


def before_step(
    redis_port: int, quiet_below_pct: float, quiet_wait_seconds: float, record: Path | None
) -> str:
    """What `flush_command` does: FLUSHALL the primaries of the cluster of `redis_port`,
    wait (bounded) for a quiet machine, append both to `record`; a line saying so."""
    primaries = flush_cluster(redis_port)
    quiet = wait_until_quiet(quiet_below_pct, quiet_wait_seconds)
    if record is not None:
        line = {"ts": dt.datetime.now(dt.UTC).isoformat(), "flushed": primaries, **quiet}
        with record.open("a") as records:
            records.write(json.dumps(line) + "\n")
    return f"flushed primaries {','.join(map(str, primaries))}; {quiet}"


# -- measuring helpers ------------------------------------------------------------------------


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
    """The `nextcampus_*` samples of a local /metrics page (histogram buckets left out, but
    for the hop timing's: stats.hop_medians)."""
    try:
        samples = scrape(f"http://127.0.0.1:{port}/metrics", timeout=5)
    except OSError as exc:
        return f"unreachable: {exc}"
    return {
        name: value
        for name, value in samples.items()
        if name.startswith("nextcampus_")
        and ("_bucket" not in name or HOP_BUCKET.match(name))
        and "_created" not in name
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


def ws_urls(stack: Topology, *, through_gateway: bool) -> list[str]:
    """Where the generator connects: the gateway, or every GraphQL process."""
    if through_gateway:
        return [ws_url(f"{stack.gateway_url}/graphql")]
    return [ws_url(url) for url in stack.graphql_urls]


def run_ours(
    record: dict[str, Any], options: FanoutOptions, results_file: ResultsFile, progress: Console
) -> None:
    """Start our topology, run the scenarios against it `options.runs` times (fresh chat and
    GraphQL processes for every run), stop it; fills `record`."""
    root = (
        options.root.resolve()
        if options.root
        else Path(tempfile.mkdtemp(prefix="chatctl-bench-fanout-"))
    )
    stack = Topology.on_free_ports(
        root,
        chat_count=2,
        graphql_count=2,
        # The peers are measured without a proxy in front; so are we first, then through it.
        gateway=options.through_gateway,
        # One bench user makes every change: no send or change rate limit.
        # Hop timing: where the latency scenario's median goes (nextcampus_common.hops).
        chat_overrides={
            "default_rate_limit_messages": 0,
            "action_rate_limit_messages": 0,
            "hop_timing": True,
        },
        # Every generated socket carries the one bench token: one user holding thousands of
        # sockets, which the per-user limits exist to refuse.
        graphql_overrides={
            "max_sockets_per_user": 100_000,
            "max_subscriptions_per_user": 100_000,
            "hop_timing": True,
        },
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
        gateway = " + Envoy in front" if options.through_gateway else ""
        progress.print(
            f"starting Redis Cluster (6 nodes) + 2 chat + 2 GraphQL processes{gateway} "
            f"(state in {root}) …"
        )
        stack.start()
        assert all(COURSE_ID.match(course) for course in BENCH_COURSES)
        token = issue_token(stack.jwt_secret, BENCH_USER, BENCH_COURSES)
        record.update(
            urls=ws_urls(stack, through_gateway=False),
            **(
                {"gateway_urls": ws_urls(stack, through_gateway=True)}
                if options.through_gateway
                else {}
            ),
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
            kept = keep_logs(root, results_file.directory / f"fanout-{results_file.stamp}-logs")
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
    """One run against the running stack: the harness's scenarios straight to the GraphQL
    processes, then (with `options.gateway`) on fresh processes through the gateway, then the
    mixed sweeps (direct); fills `record`."""
    if options.harness_scenarios:
        run_harness_scenarios(record, stack, token, run, options, progress, through_gateway=False)
    if options.through_gateway:
        # Fresh processes again: the memory probe would see little growth after the sweep.
        progress.print(f"run {run}: fresh chat and GraphQL processes for the gateway's turn …")
        restart_services(stack)
        record[GATEWAY_PART] = {}
        run_harness_scenarios(
            record[GATEWAY_PART], stack, token, run, options, progress, through_gateway=True
        )
        # Fresh processes once more, as the peers get for every scenario: on the processes
        # the saturation sweep had used, sends through the gateway reached p99 63 ms at 312/s;
        # on fresh ones 6.8 ms at 400/s (what the sweep leaves behind is not yet known).
        progress.print(f"run {run}: fresh chat and GraphQL processes for the sends sweep …")
        restart_services(stack)
        run_gateway_sends(record[GATEWAY_PART], stack, token, run, options, progress)
    if options.mixed:
        run_mixed(record, stack, token, run, options, progress)


def watched_pids(stack: Topology, *, through_gateway: bool) -> dict[str, list[int]]:
    """Our processes by group, as they run now (a restart gives them new PIDs); the gateway's
    only where the traffic goes through it."""
    assert stack.redis is not None
    pids = {
        "graphql": [p.pid for p in stack.graphqls],
        "chat": [p.pid for p in stack.chats],
        "redis": [p.pid for p in stack.redis.processes.values()],
    }
    if stack.gateway is not None and through_gateway:
        pids["gateway"] = [stack.gateway.pid]
    return pids


def watch_spec(pids: dict[str, list[int]]) -> str:
    """gen.js's `--watch`: every named group is reported (sweep.js's step summary only
    `server` and `redis`); the GraphQL processes are the peers' `server`."""
    return ";".join(
        f"{'server' if group == 'graphql' else group}={','.join(map(str, members))}"
        for group, members in pids.items()
    )


def run_harness_scenarios(
    record: dict[str, Any],
    stack: Topology,
    token: str,
    run: int,
    options: FanoutOptions,
    progress: Console,
    *,
    through_gateway: bool,
) -> None:
    """One run of the three scenarios against the running stack, the generator connecting
    through the gateway (results labelled OURS_GATEWAY) or to every GraphQL process (OURS);
    fills `record`."""
    assert stack.redis is not None
    system = OURS_GATEWAY if through_gateway else OURS
    urls = ws_urls(stack, through_gateway=through_gateway)
    harness, load = options.harness, options.harness / "load"
    pids = watched_pids(stack, through_gateway=through_gateway)
    watch = watch_spec(pids)
    redis_port = stack.redis_ports[0]
    metrics_ports = {
        **{f"graphql-{i}": port for i, port in enumerate(stack.graphql_metrics_ports)},
        **{f"chat-{i}": port for i, port in enumerate(stack.chat_metrics_ports)},
    }
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
    steps_log = stack.root / f"sweep-steps-{system}-{run}.jsonl"
    between_steps = stack.root / f"between-steps-{system}-{run}.jsonl"
    common = ["--proto", PROTOCOL, "--urls", ",".join(urls)]
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
                *("--pids", ",".join(map(str, pids["graphql"]))),
                *("--token", token, "--label", run_label("memory", run, system)),
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
                *("--token", token, "--watch", watch),
                *("--label", run_label("latency", run, system)),
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
                *("--token", token, "--watch", watch),
                *("--label", run_label("saturation", run, system)),
                *("--log", str(steps_log)),
            ],
            SWEEP_TIMEOUT_SECONDS,
            f"sweep S={SATURATION_SUBSCRIBERS} C={COURSES} from R={options.sweep_start}, "
            f"{SWEEP_STEP_SECONDS} s steps (a few minutes)",
        ),
    ]
    for name, argv, timeout, what in scenarios:
        flushed = flush_cluster(redis_port)
        quiet = settle(progress, options.quiet_below_pct, f"{system}'s {name} scenario")
        progress.print(
            f"[bold]{system}, run {run}: {name}[/bold] — {what}; Redis primaries flushed"
        )
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
                f"[yellow]{system}: {name} ended with {child.returncode}"
                f"{' (timed out)' if child.timed_out else ''}; see the JSON[/yellow]"
            )
        check_alive(stack, record, f"{system}'s {name}")


def flushed_and_quiet(redis_port: int, options: FanoutOptions) -> dict[str, Any]:
    """Before a step of our own sweeps: the cluster's primaries flushed, a quiet machine."""
    return {
        "flushed": flush_cluster(redis_port),
        **wait_until_quiet(options.quiet_below_pct, QUIET_WAIT_STEP_SECONDS),
    }


def check_alive(stack: Topology, record: dict[str, Any], during: str) -> None:
    """Stop the bench when one of our processes exited: its numbers would be of the rest."""
    dead = [p.name for p in stack.all_processes if not p.alive()]
    if dead:
        record["exited"] = dead
        raise FanoutBenchError(f"{', '.join(dead)} exited during {during}; see its log")


def run_mixed(
    record: dict[str, Any],
    stack: Topology,
    token: str,
    run: int,
    options: FanoutOptions,
    progress: Console,
) -> None:
    """The mixed-event scenario (bench/mixed.py): two courseEvents sweeps, messages only and
    the issue's mix, against the running stack; fills `record["scenarios"]["mixed"]`."""
    assert stack.redis is not None
    redis_port = stack.redis_ports[0]
    urls = ws_urls(stack, through_gateway=False)
    ensure_node_modules(mixed.load_dir().parent, progress, folder="load")

    def before_step() -> dict[str, Any]:
        return flushed_and_quiet(redis_port, options)

    def run_step(mix: str, rate: int, label: str) -> dict[str, Any] | None:
        argv = mixed.mix_argv(urls, token, BENCH_COURSES, mix, rate, label)
        child = run_child(
            argv,
            cwd=mixed.load_dir(),
            timeout_seconds=mixed.STEP_TIMEOUT_SECONDS,
            progress=progress,
            prefix="[mixed]",
            shown_command=_shown(argv, token),
        )
        check_alive(stack, record, "the mixed scenario")
        return mixed.parse_result(child.stdout) if child.returncode == 0 else None

    progress.print(
        f"[bold]ours, run {run}: mixed[/bold] — courseEvents sweeps, messages only then "
        f"{mixed.MIXES['mixed']} (a few minutes)"
    )
    sweeps = mixed.MixedSweeps(run_step, before_step, options.mixed_start, progress)
    record.setdefault("scenarios", {})["mixed"] = sweeps.run(run)


def run_gateway_sends(
    record: dict[str, Any],
    stack: Topology,
    token: str,
    run: int,
    options: FanoutOptions,
    progress: Console,
) -> None:
    """The sends scenario (bench/sends.py) through the gateway; fills
    `record["scenarios"]["sends"]` (`record`: the gateway's part of the run)."""
    redis_port = stack.redis_ports[0]
    load = options.harness / "load"
    # The processes were restarted for the sweep: their PIDs, not the scenarios' before.
    watch = watch_spec(watched_pids(stack, through_gateway=True))

    def before_step() -> dict[str, Any]:
        return flushed_and_quiet(redis_port, options)

    def run_step(rate: int, label: str) -> dict[str, Any] | None:
        argv = [
            "node",
            str(load / "gen.js"),
            *("--proto", PROTOCOL, "--urls", ",".join(ws_urls(stack, through_gateway=True))),
            *("--subs", str(sends.SENDS_SUBSCRIBERS), "--courses", str(COURSES)),
            *("--rate", str(rate), "--duration", str(sends.SENDS_STEP_SECONDS)),
            *("--token", token, "--watch", watch, "--label", label),
        ]
        child = run_child(
            argv,
            cwd=options.harness,
            timeout_seconds=LATENCY_TIMEOUT_SECONDS,
            progress=progress,
            prefix="[sends]",
            shown_command=_shown(argv, token),
        )
        check_alive(stack, record, "the sends scenario")
        lines = json_lines(child.stdout)
        return lines[-1] if lines and child.returncode == 0 else None

    progress.print(
        f"[bold]ours, run {run}: sends[/bold] — sendMessage through the gateway, "
        f"{sends.SENDS_STEP_SECONDS} s steps from R={sends.SENDS_START_RATE} (a few minutes)"
    )
    sweep = sends.SendsSweep(run_step, before_step, progress)
    record.setdefault("scenarios", {})["sends"] = sweep.run(run)


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


# -- the run --------------------------------------------------------------------------------


def run_fanout_bench(options: FanoutOptions, progress: Console, out: Console) -> Path:
    """Ours, then the peers; print the comparison; write the JSON. Returns its path."""
    results_file = ResultsFile.start("fanout", options.output_dir)
    node = require_node()
    results = results_file.header(
        command=options.command_line,
        harness={"path": str(options.harness), "sha256_16": file_digests(options.harness)},
        code=git_state(),
        machine={
            **machine_info("generator, servers and Redis share this machine"),
            "node": node,
            "redis": _tool_version(["redis-server", "--version"]),
        },
        scenarios={
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
        options=options_record(options),
        background_load=[],
    )
    finished = False
    try:
        ensure_node_modules(options.harness, progress)
        results["background_load"].append(background_load(progress, "before our stack"))
        results["ours"] = {}
        run_ours(results["ours"], options, results_file, progress)
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
            results["summary"] = summarize_fanout(results)
            path = results_file.write(results)
            progress.print(f"results{'' if finished else ' (partial)'}: {path}")
    if options.harness_scenarios:
        out.print(sweep_table(results))
        out.print(comparison_table(results["summary"]))
        hops = hop_table(results["summary"])
        if hops is not None:
            out.print(hops)
        for run_record in dig(results, "ours", "runs") or []:
            sends_record = dig(run_record, GATEWAY_PART, "scenarios", "sends")
            if sends_record:
                out.print(sends.sends_table(sends_record))
    for run_record in dig(results, "ours", "runs") or []:
        mixed_record = dig(run_record, "scenarios", "mixed")
        if mixed_record:
            out.print(mixed.mixed_table(mixed_record))
    findings = dig(results, "ours", "log_findings") or {}
    for name, found in findings.items():
        out.print(f"[yellow]{name}: {found['count']} warning/error lines[/yellow], e.g.")
        headlines = [line for line in found["first"] if re.match(r"\d{4}-\d\d-\d\dT", line)]
        for line in (headlines or found["first"])[:4]:
            out.print(Text(f"  {line}"), highlight=False)
    out.print(f"results: {path}  (our stack's logs: {dig(results, 'ours', 'logs')})")
    return path
