"""`chatctl bench`: acknowledged sends/s, send latency and fan-out deliveries/s of ONE chat
process against a real local Redis Cluster (DESIGN.md §4: measure with the benchmark, never
with a timed test).

The driver (this process) starts the topology and coordinates; the load runs in separate
client processes (multiprocessing, spawn) so no client shares an event loop with the driver
or the server. The clients, the chat process and the six redis-servers share this machine:
the numbers are a floor for the server, and the CPU columns say who used the cores.

Scenarios:
- sends: N concurrent SendMessage loops over several courses and users, per concurrency step;
- fanout: S SubscribeMessages streams over C courses, a publisher at a fixed rate whose
  content carries the send time; deliveries/s, end-to-end latency, loss and duplicates;
- profile (`--profile`): the sends step at the highest concurrency once more, with
  `py-spy record` attached to the chat process for the measured window; a flame graph SVG,
  the collapsed stacks and the top frames.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import math
import multiprocessing
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console

from bench.measure import CpuWindow, machine_info, thread_cpu_seconds
from bench.report import (
    ResultsFile,
    describe_fanout,
    describe_send_step,
    fanout_table,
    flamegraph_svg,
    options_record,
    profile_tables,
    sends_table,
    sends_target_line,
    sigint_ignored,
)
from bench.stats import (
    Latency,
    SendStep,
    read_folded,
    samples,
    sends_target,
    summarize_profile,
)
from devstack.processes import stop_process
from devstack.scrape import scrape
from devstack.topology import Topology
from nextcampus_common.auth import issue_token
from nextcampus_common.chat_api import ChatApi, stream_live_after
from nextcampus_common.metadata import AUTHORIZATION
from nextcampus_common.proto.chat.v1 import chat_pb2, chat_pb2_grpc

SCENARIOS = ("sends", "fanout")
SEND_DURATION_METRIC = "nextcampus_chat_send_duration_seconds"
# Distinct client connections: grpc shares one connection between channels of equal
# target and options unless each channel has its own subchannel pool.
OWN_CONNECTION = ("grpc.use_local_subchannel_pool", 1)


class BenchError(RuntimeError):
    """The benchmark could not run (a client process failed, a step timed out, …)."""


@dataclass(frozen=True)
class BenchOptions:
    scenarios: tuple[str, ...] = SCENARIOS
    concurrencies: tuple[int, ...] = (1, 8, 32, 64, 128)
    duration_seconds: float = 5.0
    warmup_seconds: float = 1.0
    send_courses: int = 16
    users: int = 64
    content_bytes: int = 64
    streams: int = 1000
    fanout_courses: int = 10
    publish_rate: float = 200.0
    drain_seconds: float = 10.0
    streams_per_connection: int = 100
    # Open one stream per course, one at a time, before the rest: the chat server loses
    # the first subscription of concurrent first subscriptions to one Redis node (see the
    # bench report); priming keeps the fan-out numbers measurable until that is fixed.
    prime_feeds: bool = True
    client_processes: int = 0  # 0: 1 below concurrency 8, else 2
    # Per client process: its sends go over this many SendMessages streams, as a GraphQL
    # process sends its users' messages; 0: one SendMessage call each, as other clients do.
    send_streams: int = 2
    deadline_seconds: float = 10.0
    profile: bool = False
    profile_rate: int = 200
    output_dir: Path = Path("bench-results")
    root: Path | None = None
    command_line: str = ""


def parse_int_list(text: str) -> tuple[int, ...]:
    """`1,8,32` → (1, 8, 32); every value positive."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise BenchError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise BenchError(f"expected positive integers, got {text!r}")
    return values


def parse_scenarios(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in SCENARIOS]
    if not names or unknown:
        raise BenchError(f"scenarios are {', '.join(SCENARIOS)}; got {text!r}")
    return names


# -- measurements ---------------------------------------------------------------------------


def send_duration_totals(metrics_port: int) -> tuple[float, float] | None:
    """(sum seconds, count) of the chat process's SendMessage histogram, or None."""
    try:
        samples = scrape(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2)
    except OSError:
        return None
    return (
        samples.get(f"{SEND_DURATION_METRIC}_sum", 0.0),
        samples.get(f"{SEND_DURATION_METRIC}_count", 0.0),
    )


# -- client processes -----------------------------------------------------------------------


@dataclass(frozen=True)
class SendWorkerSpec:
    target: str
    worker_index: int
    first_task: int
    tokens: list[str]  # one per task
    courses: list[str]
    content: str
    warmup_seconds: float
    duration_seconds: float
    deadline_seconds: float
    send_streams: int


@dataclass
class SendWorkerResult:
    acknowledged: int
    errors: dict[str, int]
    latencies: bytes  # array('d') of seconds, sends acknowledged inside the window


@dataclass(frozen=True)
class SubscriberSpec:
    target: str
    worker_index: int
    streams: list[tuple[str, str]]  # (course, token)
    streams_per_connection: int
    open_timeout_seconds: float


@dataclass
class SubscriberLive:
    live: int
    open_errors: dict[str, int]
    seconds: float


@dataclass
class SubscriberResult:
    streams: int
    complete_streams: int
    expected: int
    received: int
    missing: int
    duplicates: int
    unexpected: int
    stream_errors: dict[str, int]
    latencies: bytes
    last_receive_wall: float | None


@dataclass(frozen=True)
class PublisherSpec:
    target: str
    token: str
    courses: list[str]
    rate: float
    duration_seconds: float
    deadline_seconds: float


@dataclass
class PublisherResult:
    acknowledged: dict[str, list[int]]
    errors: dict[str, int]
    latencies: bytes
    started_wall: float
    finished_wall: float


def _error_name(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return str(exc.code().name)
    return type(exc).__name__


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return ((AUTHORIZATION, f"Bearer {token}"),)


async def _connected(target: str, options: list[tuple[str, int]] | None = None) -> Any:
    channel = grpc.aio.insecure_channel(target, options=options)
    try:
        await asyncio.wait_for(channel.channel_ready(), 15)
    except TimeoutError:
        await channel.close()
        raise BenchError(f"cannot connect to {target}") from None
    return channel


async def _receive(conn: Connection) -> Any:
    return await asyncio.to_thread(conn.recv)


async def _sleep_until_wall(wall: float) -> None:
    await asyncio.sleep(max(0.0, wall - time.time()))


async def _send_worker(conn: Connection, spec: SendWorkerSpec) -> SendWorkerResult:
    # ChatApi as the GraphQL processes use it (without its retries: every failure counts).
    api = ChatApi(spec.target, max_attempts=1, send_streams=spec.send_streams)
    try:
        await asyncio.wait_for(api.channel.channel_ready(), 15)
    except TimeoutError:
        await api.close()
        raise BenchError(f"cannot connect to {spec.target}") from None
    conn.send(("ready", None))
    _, go_wall = await _receive(conn)
    go = time.perf_counter() + (go_wall - time.time())
    measure_from = go + spec.warmup_seconds
    measure_until = measure_from + spec.duration_seconds
    latencies: array.array[float] = array.array("d")
    errors: Counter[str] = Counter()
    acknowledged = 0
    courses = spec.courses

    async def loop(task: int, token: str) -> None:
        nonlocal acknowledged
        sent = 0
        while True:
            started = time.perf_counter()
            if started >= measure_until:
                return
            course_id = courses[(task + sent) % len(courses)]
            client_message_id = f"b{spec.worker_index}-{task}-{sent}"
            sent += 1
            try:
                await api.send(
                    token,
                    course_id,
                    spec.content,
                    client_message_id,
                    deadline_seconds=spec.deadline_seconds,
                )
            except grpc.aio.AioRpcError as exc:
                if started >= measure_from:
                    errors[_error_name(exc)] += 1
                continue
            finished = time.perf_counter()
            if measure_from <= finished < measure_until:
                acknowledged += 1
                latencies.append(finished - started)

    await asyncio.sleep(max(0.0, go - time.perf_counter()))
    await asyncio.gather(*(loop(spec.first_task + i, token) for i, token in enumerate(spec.tokens)))
    await api.close()
    return SendWorkerResult(acknowledged, dict(errors), latencies.tobytes())


@dataclass(eq=False)
class _Stream:
    course: str
    call: Any = None
    live: bool = False
    ids: set[int] = field(default_factory=set)
    duplicates: int = 0
    error: str | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # live, or failed to open
    tracked: bool = False  # live when the expectation arrived: counted for loss
    finished: bool = False  # every expected message arrived, or the stream ended


async def _subscriber_worker(conn: Connection, spec: SubscriberSpec) -> SubscriberResult:
    per = spec.streams_per_connection
    channels = [
        await _connected(spec.target, [OWN_CONNECTION])
        for _ in range(math.ceil(len(spec.streams) / per))
    ]
    stubs = [chat_pb2_grpc.ChatServiceStub(c) for c in channels]
    streams = [_Stream(course) for course, _ in spec.streams]
    latencies: array.array[float] = array.array("d")
    last_receive: float | None = None
    settled = 0
    all_settled = asyncio.Event()
    # Once the driver says what was published: counts per course, and the live streams
    # still short of their course's count.
    expected_counts: dict[str, int] | None = None
    unfinished = 0
    all_finished = asyncio.Event()
    stopping = False

    def settle(stream: _Stream) -> None:
        nonlocal settled
        stream.settled.set()
        settled += 1
        if settled == len(streams):
            all_settled.set()

    def finish(stream: _Stream) -> None:
        nonlocal unfinished
        if stream.tracked and not stream.finished:
            stream.finished = True
            unfinished -= 1
            if unfinished == 0:
                all_finished.set()

    async def read(index: int, token: str) -> None:
        nonlocal last_receive
        stream = streams[index]
        request = chat_pb2.SubscribeMessagesRequest(course_id=stream.course)
        stream.call = call = stubs[index // per].SubscribeMessages(request, metadata=_bearer(token))
        try:
            await stream_live_after(call)
            stream.live = True
            settle(stream)
            async for message in call:
                now = time.time_ns()
                sequence = int(message.message_id)
                if sequence in stream.ids:
                    stream.duplicates += 1
                else:
                    stream.ids.add(sequence)
                sent_ns, _, _ = message.content.partition(" ")
                if sent_ns.isdigit():
                    latencies.append((now - int(sent_ns)) / 1e9)
                last_receive = now / 1e9
                if expected_counts is not None and len(stream.ids) >= expected_counts.get(
                    stream.course, 0
                ):
                    finish(stream)
        except (grpc.aio.AioRpcError, RuntimeError) as exc:
            if not stopping:
                stream.error = _error_name(exc)
            if not stream.live:
                settle(stream)
            finish(stream)

    conn.send(("ready", None))
    _, prime = await _receive(conn)
    opened = time.perf_counter()
    tasks = []
    # Priming: the first `prime` streams one at a time, each live before the next.
    for index, (_, token) in enumerate(spec.streams[:prime]):
        tasks.append(asyncio.create_task(read(index, token)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(streams[index].settled.wait(), spec.open_timeout_seconds)
    conn.send(("primed", None))
    tasks += [
        asyncio.create_task(read(index, token))
        for index, (_, token) in enumerate(spec.streams)
        if index >= prime
    ]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_settled.wait(), spec.open_timeout_seconds)
    open_errors = Counter(s.error or "not live in time" for s in streams if not s.live)
    conn.send(
        (
            "live",
            SubscriberLive(
                sum(s.live for s in streams), dict(open_errors), time.perf_counter() - opened
            ),
        )
    )
    _, expected, drain_seconds = await _receive(conn)
    expected_sets: dict[str, set[int]] = {c: set(ids) for c, ids in expected.items()}
    live_streams = [s for s in streams if s.live]
    expected_counts = {c: len(ids) for c, ids in expected_sets.items()}
    unfinished = len(live_streams) + 1  # +1 until every stream was checked below
    for stream in live_streams:
        stream.tracked = True
    for stream in live_streams:
        if stream.error or len(stream.ids) >= expected_counts.get(stream.course, 0):
            finish(stream)
    unfinished -= 1
    if unfinished == 0:
        all_finished.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_finished.wait(), drain_seconds)
    stopping = True
    for stream in streams:
        if stream.call is not None:
            stream.call.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close()

    expected_total = received = missing = unexpected = complete_streams = 0
    for stream in live_streams:
        wanted = expected_sets.get(stream.course, set())
        got = len(stream.ids & wanted)
        expected_total += len(wanted)
        received += got
        missing += len(wanted) - got
        unexpected += len(stream.ids - wanted)
        complete_streams += got == len(wanted)
    return SubscriberResult(
        streams=len(streams),
        complete_streams=complete_streams,
        expected=expected_total,
        received=received,
        missing=missing,
        duplicates=sum(s.duplicates for s in live_streams),
        unexpected=unexpected,
        stream_errors=dict(Counter(s.error for s in live_streams if s.error)),
        latencies=latencies.tobytes(),
        last_receive_wall=last_receive,
    )


async def _publisher_worker(conn: Connection, spec: PublisherSpec) -> PublisherResult:
    channel = await _connected(spec.target)
    stub = chat_pb2_grpc.ChatServiceStub(channel)
    metadata = _bearer(spec.token)
    acknowledged: dict[str, list[int]] = {c: [] for c in spec.courses}
    errors: Counter[str] = Counter()
    latencies: array.array[float] = array.array("d")
    conn.send(("ready", None))
    _, go_wall = await _receive(conn)
    await _sleep_until_wall(go_wall)

    async def publish(index: int) -> None:
        course = spec.courses[index % len(spec.courses)]
        started = time.perf_counter()
        request = chat_pb2.SendMessageRequest(
            course_id=course,
            content=f"{time.time_ns()} fanout {index}",
            client_message_id=f"pub-{index}",
        )
        try:
            response = await stub.SendMessage(
                request, metadata=metadata, timeout=spec.deadline_seconds
            )
        except grpc.aio.AioRpcError as exc:
            errors[_error_name(exc)] += 1
            return
        latencies.append(time.perf_counter() - started)
        acknowledged[course].append(int(response.message.message_id))

    started_wall = time.time()
    start = time.perf_counter()
    total = int(spec.rate * spec.duration_seconds)
    pending: set[asyncio.Task[None]] = set()
    for index in range(total):
        await asyncio.sleep(max(0.0, start + index / spec.rate - time.perf_counter()))
        task = asyncio.create_task(publish(index))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    finished_wall = time.time()
    await channel.close()
    return PublisherResult(
        acknowledged, dict(errors), latencies.tobytes(), started_wall, finished_wall
    )


WORKERS: dict[str, Callable[[Connection, Any], Any]] = {
    "sends": _send_worker,
    "subscribe": _subscriber_worker,
    "publish": _publisher_worker,
}


def worker_main(conn: Connection, role: str, spec: object) -> None:
    """Entry point of a client process: run the role, send back ("result", …) or
    ("failed", traceback). Ctrl-C is the driver's business: it stops us by PID."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = asyncio.run(WORKERS[role](conn, spec))
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send(("failed", traceback.format_exc()))
        raise SystemExit(1) from None
    conn.send(("result", result))


class Workers:
    """The client processes of one step; whatever happens they are stopped by PID."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._context = multiprocessing.get_context("spawn")
        self.processes: list[BaseProcess] = []
        self.connections: list[Connection] = []

    def start(self, role: str, specs: Sequence[object]) -> None:
        # Children inherit an ignored SIGINT from the very start (before their own handler),
        # so a Ctrl-C in the terminal reaches only the driver, which stops them.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for index, spec in enumerate(specs):
                parent, child = self._context.Pipe()
                process = self._context.Process(
                    target=worker_main,
                    args=(child, role, spec),
                    name=f"bench-{role}-{index}",
                    daemon=True,
                )
                process.start()
                child.close()
                self.processes.append(process)
                self.connections.append(parent)
        finally:
            signal.signal(signal.SIGINT, previous)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    def receive(self, index: int, kind: str, timeout: float) -> Any:
        conn, process = self.connections[index], self.processes[index]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if conn.poll(0.1):
                try:
                    got, payload = conn.recv()
                except EOFError:
                    break
                if got == "failed":
                    raise BenchError(f"{self.label}: client process {index} failed:\n{payload}")
                if got != kind:
                    raise BenchError(f"{self.label}: expected {kind!r}, got {got!r}")
                return payload
            if not process.is_alive() and not conn.poll(0):
                break
        else:
            raise BenchError(
                f"{self.label}: client process {index} sent no {kind!r} in {timeout:.0f} s"
            )
        raise BenchError(
            f"{self.label}: client process {index} exited ({process.exitcode}) before {kind!r}"
        )

    def receive_all(self, kind: str, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        return [
            self.receive(i, kind, max(0.1, deadline - time.monotonic()))
            for i in range(len(self.processes))
        ]

    def send(self, index: int, message: object) -> None:
        self.connections[index].send(message)

    def send_all(self, message: object) -> None:
        for index in range(len(self.connections)):
            self.send(index, message)

    def stop(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)
        for conn in self.connections:
            conn.close()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# -- steps -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatUnderTest:
    target: str
    metrics_port: int
    pids: Callable[[], Sequence[int]]


class Bench:
    def __init__(self, options: BenchOptions, progress: Console) -> None:
        self.options = options
        self.progress = progress
        self.run_id = f"{int(time.time()) % 100_000:05d}"
        self.send_courses = [f"bench-{self.run_id}-s{i}" for i in range(options.send_courses)]
        self.fanout_courses = [f"bench-{self.run_id}-f{i}" for i in range(options.fanout_courses)]
        self.redis_pids: list[int] = []
        self.jwt_secret = ""

    def client_processes_for(self, load: int) -> int:
        wanted = self.options.client_processes or (2 if load >= 8 else 1)
        return max(1, min(wanted, load))

    def send_tokens(self, count: int) -> list[str]:
        users = [f"bench-user-{i}" for i in range(self.options.users)]
        tokens = {u: issue_token(self.jwt_secret, u, self.send_courses) for u in users}
        return [tokens[users[i % len(users)]] for i in range(count)]

    def content(self) -> str:
        text = "bench message "
        return (text * (self.options.content_bytes // len(text) + 1))[: self.options.content_bytes]

    def run_send_step(
        self,
        chat: ChatUnderTest,
        concurrency: int,
        label: str,
        recording: PySpyRecording | None = None,
    ) -> SendStep:
        options = self.options
        processes = self.client_processes_for(concurrency)
        tokens = self.send_tokens(concurrency)
        specs = []
        first = 0
        for index, share in enumerate(_split(concurrency, processes)):
            specs.append(
                SendWorkerSpec(
                    target=chat.target,
                    worker_index=index,
                    first_task=first,
                    tokens=tokens[first : first + share],
                    courses=self.send_courses,
                    content=self.content(),
                    warmup_seconds=options.warmup_seconds,
                    duration_seconds=options.duration_seconds,
                    deadline_seconds=options.deadline_seconds,
                    send_streams=options.send_streams,
                )
            )
            first += share
        with Workers(label) as workers:
            cpu = CpuWindow(
                {
                    "chat": chat.pids,
                    "redis": lambda: self.redis_pids,
                    "clients": lambda: workers.pids,
                }
            )
            workers.start("sends", specs)
            workers.receive_all("ready", timeout=60)
            go = time.time() + 0.2
            workers.send_all(("go", go))
            time.sleep(max(0.0, go + options.warmup_seconds - time.time()))
            pids = list(chat.pids())
            threads_before = thread_cpu_seconds(pids[0]) if pids else {}
            server_before = send_duration_totals(chat.metrics_port)
            if recording is not None:
                recording.start()
            cpu.start()
            time.sleep(
                max(0.0, go + options.warmup_seconds + options.duration_seconds - time.time())
            )
            cpu.stop()
            if recording is not None:
                recording.stop()
            server_after = send_duration_totals(chat.metrics_port)
            threads_after = thread_cpu_seconds(pids[0]) if pids else {}
            results: list[SendWorkerResult] = workers.receive_all(
                "result", timeout=options.deadline_seconds + 30
            )
        latency = Latency.of(samples(*(r.latencies for r in results)))
        acknowledged = sum(r.acknowledged for r in results)
        errors: Counter[str] = Counter()
        for r in results:
            errors.update(r.errors)
        server_mean_ms = None
        if server_before and server_after and server_after[1] > server_before[1]:
            server_mean_ms = (
                (server_after[0] - server_before[0]) / (server_after[1] - server_before[1]) * 1000
            )
        threads = {
            name: round(
                (seconds - threads_before.get(name, 0.0)) / options.duration_seconds * 100, 1
            )
            for name, seconds in threads_after.items()
        }
        return SendStep(
            concurrency=concurrency,
            client_processes=processes,
            duration_seconds=options.duration_seconds,
            acknowledged=acknowledged,
            sends_per_second=acknowledged / options.duration_seconds,
            latency=latency,
            server_mean_ms=server_mean_ms,
            errors=dict(errors),
            cpu_percent=cpu.percent,
            chat_threads_cpu_percent={k: v for k, v in threads.items() if v >= 0.5},
        )

    def run_sends(self, chat: ChatUnderTest) -> list[SendStep]:
        steps = []
        for concurrency in self.options.concurrencies:
            self.progress.print(
                f"sends: concurrency {concurrency} "
                f"({self.client_processes_for(concurrency)} client processes, "
                f"{self.options.warmup_seconds:g} s warm-up + {self.options.duration_seconds:g} s) …"
            )
            step = self.run_send_step(chat, concurrency, f"sends c={concurrency}")
            self.progress.print(f"  {describe_send_step(step)}")
            steps.append(step)
        return steps

    def run_fanout(self, chat: ChatUnderTest) -> dict[str, Any]:
        options = self.options
        processes = self.client_processes_for(options.streams)
        courses = self.fanout_courses
        streams = [
            (
                courses[i % len(courses)],
                issue_token(self.jwt_secret, f"bench-reader-{i}", [courses[i % len(courses)]]),
            )
            for i in range(options.streams)
        ]
        specs = []
        first = 0
        for index, share in enumerate(_split(options.streams, processes)):
            specs.append(
                SubscriberSpec(
                    target=chat.target,
                    worker_index=index,
                    streams=streams[first : first + share],
                    streams_per_connection=options.streams_per_connection,
                    open_timeout_seconds=30 + options.streams / 100,
                )
            )
            first += share
        publisher = PublisherSpec(
            target=chat.target,
            token=issue_token(self.jwt_secret, "bench-publisher", courses),
            courses=courses,
            rate=options.publish_rate,
            duration_seconds=options.duration_seconds,
            deadline_seconds=options.deadline_seconds,
        )
        self.progress.print(
            f"fanout: opening {options.streams} streams over {len(courses)} courses "
            f"from {processes} client processes …"
        )
        with Workers("fanout subscribers") as readers, Workers("fanout publisher") as writer:
            readers.start("subscribe", specs)
            writer.start("publish", [publisher])
            readers.receive_all("ready", timeout=60)
            open_timeout = specs[0].open_timeout_seconds + 30
            # Process 0 first (it primes each course's feed with one stream when asked),
            # then the others open all their streams at once.
            readers.send(0, ("open", len(courses) if options.prime_feeds else 0))
            readers.receive(0, "primed", open_timeout)
            for index in range(1, len(specs)):
                readers.send(index, ("open", 0))
            for index in range(1, len(specs)):
                readers.receive(index, "primed", open_timeout)
            live: list[SubscriberLive] = readers.receive_all("live", timeout=open_timeout)
            writer.receive_all("ready", timeout=60)
            live_count = sum(x.live for x in live)
            open_errors: Counter[str] = Counter()
            for x in live:
                open_errors.update(x.open_errors)
            self.progress.print(
                f"  {live_count} streams live in {max(x.seconds for x in live):.1f} s"
                + (f"; not live: {dict(open_errors)}" if open_errors else "")
                + f"; publishing {options.publish_rate:g} msg/s for {options.duration_seconds:g} s …"
            )
            cpu = CpuWindow(
                {
                    "chat": chat.pids,
                    "redis": lambda: self.redis_pids,
                    "clients": lambda: readers.pids + writer.pids,
                }
            )
            go = time.time() + 0.2
            writer.send_all(("go", go))
            time.sleep(max(0.0, go - time.time()))
            cpu.start()
            published: PublisherResult = writer.receive_all(
                "result", timeout=options.duration_seconds + options.deadline_seconds + 30
            )[0]
            readers.send_all(("expect", published.acknowledged, options.drain_seconds))
            results: list[SubscriberResult] = readers.receive_all(
                "result", timeout=options.drain_seconds + 60
            )
            cpu.stop()
        acknowledged = sum(len(ids) for ids in published.acknowledged.values())
        publish_seconds = published.finished_wall - published.started_wall
        received = sum(r.received for r in results)
        expected = sum(r.expected for r in results)
        last = max((r.last_receive_wall or 0.0 for r in results), default=0.0)
        delivery_seconds = last - published.started_wall if last else 0.0
        stream_errors: Counter[str] = Counter()
        for r in results:
            stream_errors.update(r.stream_errors)
        summary: dict[str, Any] = {
            "streams": options.streams,
            "streams_live": live_count,
            "feeds_primed": options.prime_feeds,
            "open_errors": dict(open_errors),
            "courses": len(courses),
            "client_processes": processes,
            "publish_rate_target": options.publish_rate,
            "published": acknowledged,
            "publish_errors": published.errors,
            "publish_seconds": round(publish_seconds, 3),
            "publish_latency": asdict(Latency.of(samples(published.latencies))),
            "expected_deliveries": expected,
            "received_deliveries": received,
            # What the schedule asked for (acknowledged messages × their live streams over the
            # publishing window) against what the streams got until their last delivery.
            "offered_deliveries_per_second": expected / options.duration_seconds,
            "deliveries_per_second": received / delivery_seconds if delivery_seconds else 0,
            "delivery_latency": asdict(Latency.of(samples(*(r.latencies for r in results)))),
            "missing": sum(r.missing for r in results),
            "duplicates": sum(r.duplicates for r in results),
            "unexpected": sum(r.unexpected for r in results),
            "complete_streams": sum(r.complete_streams for r in results),
            "stream_errors": dict(stream_errors),
            "cpu_percent": cpu.percent,
        }
        self.progress.print(f"  {describe_fanout(summary)}")
        return summary

    def run_profile(self, chat: ChatUnderTest, results_file: ResultsFile) -> dict[str, Any]:
        """The highest-concurrency sends step again, with `py-spy record` attached to the
        chat process for exactly the measured window (the sends table stays unprofiled)."""
        options = self.options
        folded = results_file.directory / f"chat-profile-{results_file.stamp}.folded"
        svg = folded.with_suffix(".svg")
        concurrency = max(options.concurrencies)
        pid = chat.pids()[0]
        self.progress.print(
            f"profile: sends at concurrency {concurrency}, py-spy attached to the chat process "
            f"(pid {pid}, {options.profile_rate} samples/s) …"
        )
        recording = PySpyRecording(find_py_spy(), pid, folded, options.profile_rate)
        try:
            step = self.run_send_step(chat, concurrency, "profile", recording)
        finally:
            recording.close()
        self.progress.print(f"  under py-spy: {describe_send_step(step)}")
        stacks = read_folded(folded.read_text())
        svg.write_text(
            flamegraph_svg(
                stacks,
                f"chat process, SendMessage at concurrency {concurrency} "
                f"({options.duration_seconds:g} s at {options.profile_rate} samples/s)",
            )
        )
        summary = summarize_profile(stacks)
        return {
            "step": step.record(),
            "svg": str(svg),
            "folded": str(folded),
            "rate": options.profile_rate,
            **summary,
        }


def find_py_spy() -> Path:
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return beside
    found = shutil.which("py-spy")
    if found is None:
        raise BenchError("py-spy is not installed (it is in the dev group: uv sync)")
    return Path(found)


class PySpyRecording:
    """`py-spy record --pid` over one window: started when the window opens, stopped with
    SIGINT (py-spy then writes its file) when it closes."""

    def __init__(self, py_spy: Path, pid: int, output: Path, rate: int) -> None:
        self.argv = [
            str(py_spy),
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(rate),
            # Sample without pausing the server, so the step measures it nearly unslowed.
            # (No --native: it must pause the process per sample, and grpc's Cython module
            # is stripped, so its frames would show as bare addresses.)
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(output),
        ]
        self.output = output
        self.log = output.with_suffix(".log")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the driver only; it stops py-spy
            )

    def stop(self) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                raise BenchError("py-spy did not write its profile within 30 s") from None
        if self.process.returncode != 0 or not self.output.exists():
            output = self.log.read_text(errors="replace").strip()
            raise BenchError(
                f"py-spy could not record the chat process (exit {self.process.returncode}). "
                "Attaching needs ptrace: run as root, with CAP_SYS_PTRACE, or with "
                f"kernel.yama.ptrace_scope=0. py-spy said:\n{output[-2000:]}"
            )

    def close(self) -> None:
        if self.process is not None:
            stop_process(self.process, 5)
        self.log.unlink(missing_ok=True)  # its text is in the error, if there was one


def run_bench(options: BenchOptions, progress: Console, out: Console) -> Path:
    """Start the topology, run the scenarios, print the tables, write the JSON; its path."""
    results_file = ResultsFile.start("chat", options.output_dir)
    root = (
        options.root.resolve() if options.root else Path(tempfile.mkdtemp(prefix="chatctl-bench-"))
    )
    bench = Bench(options, progress)
    stack = Topology.on_free_ports(
        root, chat_count=1, gateway=False, chat_overrides={"default_rate_limit_messages": 0}
    )
    bench.jwt_secret = stack.jwt_secret
    results = results_file.header(
        command=options.command_line,
        machine=machine_info(
            "the client processes, the chat process and six redis-servers share this machine"
        ),
        options=options_record(options),
    )
    steps: list[SendStep] = []
    fanout: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None
    failed = True
    try:
        progress.print(f"starting Redis Cluster + 1 chat process (state and logs in {root}) …")
        stack.start()
        assert stack.redis is not None
        bench.redis_pids = [p.pid for p in stack.redis.processes.values()]
        chat_process = stack.chats[0]
        chat = ChatUnderTest(
            stack.chat_targets[0], stack.chat_metrics_ports[0], lambda: [chat_process.pid]
        )
        if "sends" in options.scenarios:
            steps = bench.run_sends(chat)
        if "fanout" in options.scenarios:
            fanout = bench.run_fanout(chat)
        if options.profile:
            try:
                profile = bench.run_profile(chat, results_file)
            except BenchError as exc:
                # Say so and keep the measurements already made.
                progress.print(f"[red]profile failed:[/red] {exc}")
                profile = {"error": str(exc)}
        failed = False
    finally:
        with sigint_ignored():
            progress.print("stopping the stack …")
            stack.stop()
            if failed:
                progress.print(f"logs kept in {root / 'logs'}")
            elif options.root is None:
                shutil.rmtree(root, ignore_errors=True)

    if steps:
        results["sends"] = [s.record() for s in steps]
        results["target"] = sends_target(steps)
        out.print(sends_table(steps))
    if fanout is not None:
        results["fanout"] = fanout
        out.print(fanout_table(fanout))
    if profile is not None:
        results["profile"] = profile
        if "error" not in profile:
            for table in profile_tables(profile):
                out.print(table)
            out.print(f"flame graph: {profile['svg']}  (collapsed stacks: {profile['folded']})")
    if steps:
        out.print(sends_target_line(results["target"]))
    path = results_file.write(results)
    out.print(f"results: {path}")
    return path
