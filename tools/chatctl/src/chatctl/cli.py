"""chatctl: the Next Campus Chat command line (local stack, dev tokens, send/tail, bench)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Annotated

import grpc
import typer
from rich.console import Console
from rich.table import Table

from devstack.images import DEFAULT_TAG, SERVICE_IMAGES, STAND_IN_NAMES, build_all, find_engine
from devstack.processes import StackError
from devstack.supervisor import Supervisor, units_of
from devstack.topology import DEV_JWT_SECRET, Topology
from nextcampus_common.auth import issue_token
from nextcampus_common.chat_api import ChatClient, stream_live_cursor
from nextcampus_common.content import shown_on_terminal
from nextcampus_common.keys import COUNT_CAP
from nextcampus_common.proto.chat.v1 import chat_pb2

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
# soft_wrap: a token or a command must stay on one line to be copied, whatever the width.
console = Console(stderr=True, soft_wrap=True)

TargetOption = Annotated[
    str,
    typer.Option(
        "--target",
        "-t",
        envvar="CHATCTL_TARGET",
        help="gRPC host:port: the gateway (make up's default) or one chat process",
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar="CHATCTL_TOKEN", help="JWT (default: a dev token for --user)"),
]
UserOption = Annotated[str, typer.Option("--user", "-u", help="user of the dev token")]
CourseOption = Annotated[str, typer.Option("--course", "-c", help="course id")]
SecretOption = Annotated[
    str,
    typer.Option(
        "--secret",
        envvar="NEXTCAMPUS_JWT_SECRET",
        show_default=False,
        help="HS256 key (default: the local stack's dev key)",
    ),
]


# Before each further line of a multi-line message (`tail`): messages start with `#`.
TAIL_CONTINUATION = "    "


def _token(token: str | None, user: str, course: str, secret: str) -> str:
    return token or issue_token(secret, user, [course])


def _grpc_failure(exc: grpc.aio.AioRpcError) -> typer.Exit:
    console.print(f"[red]error[/red] {exc.code().name}: {exc.details()}")
    return typer.Exit(1)


@app.command()
def token(
    user: UserOption,
    course: Annotated[list[str], typer.Option("--course", "-c", help="course the user belongs to")],
    moderator: Annotated[
        list[str] | None, typer.Option("--moderator", "-m", help="course the user moderates")
    ] = None,
    ttl_seconds: Annotated[int, typer.Option(help="lifetime of the token")] = 86400,
    secret: SecretOption = DEV_JWT_SECRET,
) -> None:
    """Print a dev token signed with the local dev key."""
    moderates = moderator or []
    print(issue_token(secret, user, [*course, *moderates], moderates, ttl_seconds=ttl_seconds))


@app.command()
def jwks(secret: SecretOption = DEV_JWT_SECRET) -> None:
    """Print the HS256 key as a JWKS: the `jwks.json` of the chart's JWT Secret (Envoy
    verifies tokens with it)."""
    from devstack.gateway import hs256_jwks

    print(json.dumps(hs256_jwks(secret)))


@app.command()
def send(
    course: CourseOption,
    content: Annotated[str, typer.Argument(help="message text")],
    user: UserOption = "dev",
    client_message_id: Annotated[str, typer.Option(help="idempotency key for retries")] = "",
    reply_to: Annotated[
        str, typer.Option(help="reply in the thread of this message (id)", show_default=False)
    ] = "",
    target: TargetOption = "127.0.0.1:8080",
    token: TokenOption = None,
    secret: SecretOption = DEV_JWT_SECRET,
) -> None:
    """Send one message (or a reply) and print its id."""

    async def run() -> None:
        async with ChatClient(target, _token(token, user, course, secret)) as client:
            response = await client.send(course, content, client_message_id, reply_to=reply_to)
        message = response.message
        note = " (duplicate: already sent)" if response.duplicate else ""
        thread = (
            f" in the thread of #{message.reply_to_message_id}"
            if message.reply_to_message_id
            else ""
        )
        print(f"{message.course_id} #{message.message_id} by {message.user_id}{thread}{note}")

    try:
        asyncio.run(run())
    except grpc.aio.AioRpcError as exc:
        raise _grpc_failure(exc) from None


def _said(message: chat_pb2.ChatMessage) -> str:
    """`#id author: text` of a message, safe on a terminal: content is anyone's input, so
    nothing in it may act on the terminal, and a line of it must not pass for a message of
    its own."""
    author = shown_on_terminal(message.user_id)
    text = shown_on_terminal(message.content, continuation=TAIL_CONTINUATION)
    thread = f" ↳ #{message.reply_to_message_id}" if message.reply_to_message_id else ""
    asks = " (question)" if message.kind == chat_pb2.MESSAGE_KIND_QUESTION else ""
    return f"#{message.message_id}{thread}{asks} {author}: {text}"


def _change(event: chat_pb2.CourseEvent) -> str:
    """One line of `tail --events`: the change, then its cursor (to resume with --after)."""
    kinds = chat_pb2.CourseEventKind
    message, actor = event.message, shown_on_terminal(event.actor_user_id)
    emoji = shown_on_terminal(event.emoji)
    line = {
        kinds.MESSAGE_ADDED: lambda: _said(message),
        kinds.MESSAGE_EDITED: lambda: f"{_said(message)}  (edited)",
        kinds.MESSAGE_DELETED: lambda: f"#{message.message_id} deleted by {actor}",
        kinds.MESSAGE_RETRACTED: lambda: f"#{message.message_id} lost in a Redis failover",
        kinds.REACTION_ADDED: lambda: f"#{message.message_id} {emoji} +1 by {actor}",
        kinds.REACTION_REMOVED: lambda: f"#{message.message_id} {emoji} -1 by {actor}",
        kinds.MESSAGE_PINNED: lambda: f"#{message.message_id} pinned by {actor}",
        kinds.MESSAGE_UNPINNED: lambda: f"#{message.message_id} unpinned by {actor}",
        kinds.MESSAGE_RESTORED: lambda: f"{_said(message)}  (restored after a failover)",
        kinds.ANSWER_ENDORSED: lambda: f"#{message.message_id} endorsed by {actor}",
        kinds.ANSWER_UNENDORSED: lambda: f"#{message.message_id} un-endorsed by {actor}",
        kinds.QUESTION_RESOLVED: lambda: f"#{message.message_id} resolved by {actor}",
        kinds.QUESTION_REOPENED: lambda: f"#{message.message_id} reopened by {actor}",
    }.get(event.kind, lambda: f"#{message.message_id} changed ({event.kind})")()
    return f"{line}  [{event.cursor}]"


@app.command()
def tail(
    course: CourseOption,
    after: Annotated[
        str,
        typer.Option(help="replay after this message id first (with --events: this cursor)"),
    ] = "",
    events: Annotated[
        bool,
        typer.Option(
            "--events",
            help="every change (edits, reactions, pins, deletions), each with its cursor",
        ),
    ] = False,
    user: UserOption = "dev",
    target: TargetOption = "127.0.0.1:8080",
    token: TokenOption = None,
    secret: SecretOption = DEV_JWT_SECRET,
) -> None:
    """Print a course's messages as they arrive (Ctrl-C to stop); with --events every change
    of the course. Control and bidi characters are shown as escapes (\\x1b, \\u202e);
    further lines of a message are indented."""

    async def run() -> None:
        async with ChatClient(target, _token(token, user, course, secret)) as client:
            if events:
                call = client.subscribe_events(course, after)
                cursor = await stream_live_cursor(call)
                console.print(f"live: every change of {course} after [{cursor or 'the start'}]")
                async for event in call:
                    print(_change(event), flush=True)
                return
            async for message in client.messages(course, after):
                if message.deleted:
                    print(f"#{message.message_id} deleted", flush=True)
                    continue
                print(_said(message), flush=True)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except grpc.aio.AioRpcError as exc:
        raise _grpc_failure(exc) from None


@app.command()
def export(
    course: Annotated[str, typer.Argument(help="course id", show_default=False)],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="write the NDJSON here (default: stdout)"),
    ] = None,
    user: UserOption = "dev",
    target: TargetOption = "127.0.0.1:8080",
    token: TokenOption = None,
    secret: SecretOption = DEV_JWT_SECRET,
) -> None:
    """Export everything a course keeps as NDJSON (moderators of the course; the dev token
    moderates it). Progress goes to stderr; exits 1 when the export was refused or cut short
    (no end line: the file is incomplete)."""
    jwt = token or issue_token(secret, user, [course], [course])
    where = str(output) if output else "stdout"

    async def run() -> int:
        messages, complete = 0, False
        with contextlib.ExitStack() as stack:
            sink: IO[str] | None = None
            async with ChatClient(target, jwt) as client:
                call = client.export(course)
                try:
                    async for chunk in call:
                        if sink is None:  # opened once the export started: a refusal leaves none
                            sink = stack.enter_context(output.open("w")) if output else sys.stdout
                        for line in chunk.lines:
                            kind = json.loads(line)["type"]
                            messages += kind == "message"
                            complete = kind == "end"
                        sink.write("".join(f"{line}\n" for line in chunk.lines))
                        console.print(
                            f"{course}: {messages} messages so far",
                            end="\r" if console.is_terminal else "\n",
                            highlight=False,
                        )
                except grpc.aio.AioRpcError as exc:
                    if sink is None:  # refused before anything was written
                        raise
                    console.print(f"[red]error[/red] {exc.code().name}: {exc.details()}")
        if not complete:
            console.print(
                f"[red]error[/red] the export of {course} was cut short after {messages} "
                f"messages (no end line): {where} is incomplete"
            )
            return 1
        console.print(f"exported {messages} messages of {course} to {where}", highlight=False)
        return 0

    try:
        code = asyncio.run(run())
    except grpc.aio.AioRpcError as exc:
        raise _grpc_failure(exc) from None
    raise typer.Exit(code)


def _when(milliseconds: int) -> str:
    return datetime.fromtimestamp(milliseconds / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _count(value: int) -> str:
    """A count as users read it: COUNT_CAP means that many or more."""
    return f"{COUNT_CAP - 1}+" if value >= COUNT_CAP else str(value)


@app.command()
def unread(
    course: Annotated[
        list[str] | None,
        typer.Option(
            "--course", "-c", help="course of the dev token (repeat; default demo, intro)"
        ),
    ] = None,
    user: UserOption = "dev",
    target: TargetOption = "127.0.0.1:8080",
    token: TokenOption = None,
    secret: SecretOption = DEV_JWT_SECRET,
) -> None:
    """What is new for the user: unread messages and mentions in each course of the token,
    and the newest mentions."""
    courses = course or ["demo", "intro"]

    async def run() -> None:
        jwt = token or issue_token(secret, user, courses)
        async with ChatClient(target, jwt) as client:
            states = await client.my_courses()
            mentions = await client.my_mentions(limit=5)
        table = Table("course", "unread", "mentions", "newest message")
        for state in states.courses:
            table.add_row(
                shown_on_terminal(state.course_id),
                _count(state.unread_count),
                _count(state.mention_count),
                _when(state.last_message_at) if state.last_message_id else "none kept",
            )
        Console(soft_wrap=True).print(table)
        for message in mentions.messages:
            print(f"{shown_on_terminal(message.course_id)} {_said(message)}")
        if mentions.has_more:
            console.print("(older mentions: myMentions in GraphQL pages on)")

    try:
        asyncio.run(run())
    except grpc.aio.AioRpcError as exc:
        raise _grpc_failure(exc) from None


@app.command()
def up(
    root: Annotated[Path, typer.Option(help="state and logs")] = Path(".local"),
    persist: Annotated[bool, typer.Option(help="keep Redis data (AOF) across restarts")] = False,
    free_ports: Annotated[
        bool, typer.Option(help="use free ports instead of the fixed ones (beside another stack)")
    ] = False,
) -> None:
    """Start the local topology: Redis Cluster on :7000-7005, chat on :50051 and :50052,
    GraphQL on :8081 and :8082, the Envoy gateway on :8080 (admin :9901). A process that
    exits is restarted with back-off (1 s doubling to 30 s); Ctrl-C stops everything."""
    stack = (
        Topology.on_free_ports(root.resolve(), persist=persist)
        if free_ports
        else Topology(root=root.resolve(), persist=persist)
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    data = f"AOF in {stack.root / 'redis'}" if persist else "no persistence: --persist keeps data"
    console.print(
        f"starting Redis Cluster on 127.0.0.1:{','.join(map(str, stack.redis_ports))} ({data}), "
        f"{len(stack.chat_ports)} chat, {len(stack.graphql_ports)} GraphQL, Envoy …"
    )
    try:
        stack.start()
    except StackError as exc:
        console.print(f"[red]could not start the local stack:[/red] {exc}")
        raise typer.Exit(1) from None
    dev_token = issue_token(stack.jwt_secret, "dev", ["demo", "intro"], ["demo"])
    gateway = stack.gateway_url
    console.print(f"chat gRPC on {', '.join(stack.chat_targets)}; logs in {stack.root / 'logs'}")
    console.print(f"GraphQL on {', '.join(stack.graphql_urls)}, behind the gateway")
    console.print(
        f"gateway (Envoy) on {gateway}: page /, GraphQL /graphql, gRPC chat.v1.ChatService; "
        f"admin http://127.0.0.1:{stack.gateway_admin_port}/stats/prometheus"
    )
    console.print(
        "dev token (user dev, courses demo and intro, moderator of demo; "
        f"`chatctl token` makes others): {dev_token}"
    )
    console.print(f"[bold]open the chat:[/bold] {gateway}/?token={dev_token}")
    console.print(
        f"GraphQL:  curl -s {gateway}/graphql -H 'Authorization: Bearer {dev_token}' "
        """-H 'Content-Type: application/json' -d '{"query": "{ me { userId courses { courseId unreadCount } } }"}'"""
    )
    target = f"127.0.0.1:{stack.gateway_port}"
    console.print(
        f"gRPC:     chatctl tail -c demo -t {target}    and    chatctl send -c demo -t {target} 'hello'"
    )
    redis = f" --redis 127.0.0.1:{stack.redis_ports[0]}" if free_ports else ""
    console.print(
        f"policy:   chatctl policy apply -f examples/policies/office-hours.yaml{redis}"
        "    (course demo: messages kept 1 h, no rate limit)"
    )
    supervisor = Supervisor(
        units_of(stack), say=lambda line: console.print(line, markup=False, highlight=False)
    )
    console.print(
        "processes (pid): " + ", ".join(f"{unit.name} {unit.pid()}" for unit in supervisor.units),
        highlight=False,
    )
    print("ready", flush=True)
    try:
        while not stop.wait(0.5):
            supervisor.check()
    finally:
        console.print("stopping …")
        stack.stop()
        console.print("stopped")


@app.command()
def images(
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only", help="image to build (repeatable): chat, graphql, operator, redis, envoy"
        ),
    ] = None,
    stand_ins: Annotated[
        bool,
        typer.Option(
            help="also the Redis and Envoy test stand-ins (the chart keeps the official ones)"
        ),
    ] = False,
    tag: Annotated[str, typer.Option(help="tag of every image built")] = DEFAULT_TAG,
    no_cache: Annotated[bool, typer.Option(help="build every layer again (a cold build)")] = False,
    engine_name: Annotated[
        str | None,
        typer.Option(
            "--engine", help="docker or podman (default: docker if its engine answers, else podman)"
        ),
    ] = None,
    state: Annotated[Path, typer.Option(help="podman's containers.conf for this machine")] = Path(
        ".local/containers"
    ),
) -> None:
    """Build the chat, graphql and operator images from images/Dockerfile with podman or
    docker. Where the official Python base cannot be pulled, a base is built from Debian's
    packages first (once, then reused); the machine's CA bundle goes in as a build secret."""
    names = only or [image.name for image in SERVICE_IMAGES] + (
        list(STAND_IN_NAMES) if stand_ins else []
    )
    try:
        engine = find_engine(state.resolve(), engine_name)
        built = build_all(
            engine,
            names,
            tag=tag,
            no_cache=no_cache,
            say=lambda line: console.print(line, highlight=False),
        )
    except StackError as exc:
        console.print(f"[red]could not build the images:[/red] {exc}")
        raise typer.Exit(1) from None
    table = Table(title=f"images ({engine.name})")
    for column in ("image", "size MB", "build s"):
        table.add_column(column, justify="left" if column == "image" else "right")
    for result in built:
        table.add_row(result.reference, f"{result.size_bytes / 1e6:.0f}", f"{result.seconds:.1f}")
    Console().print(table)


policy_app = typer.Typer(
    help="CourseChatPolicy files on the local stack, without Kubernetes: checked against the "
    "CRD's schema and applied through the operator's reconcile code.",
    no_args_is_help=True,
)
app.add_typer(policy_app, name="policy")

PolicyFileOption = Annotated[
    list[Path],
    typer.Option(
        "--filename",
        "-f",
        help="YAML file of one or more CourseChatPolicies, or a folder of them; repeatable",
    ),
]
RedisOption = Annotated[
    str,
    typer.Option(
        "--redis",
        envvar="NEXTCAMPUS_REDIS_NODES",
        help="Redis Cluster nodes, host:port[,host:port…] (make up: 127.0.0.1:7000)",
    ),
]


def _policies(files: list[Path], redis: str, *, delete: bool) -> None:
    from devstack.policies import PolicyFileError, load_all, report, run

    try:
        documents = load_all(files)
    except PolicyFileError as exc:
        console.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(2) from None
    nodes = [node.strip() for node in redis.split(",") if node.strip()]
    outcomes = asyncio.run(run(documents, nodes, delete=delete))
    for document, outcome in zip(documents, outcomes, strict=True):
        print(report(document, outcome), flush=True)
    if not all(outcome.ready for outcome in outcomes):
        raise typer.Exit(1)


@policy_app.command("apply")
def policy_apply(files: PolicyFileOption, redis: RedisOption = "127.0.0.1:7000") -> None:
    """Make the local stack follow the policies of the files (like kubectl apply -f), and
    print each one's status."""
    _policies(files, redis, delete=False)


@policy_app.command("delete")
def policy_delete(files: PolicyFileOption, redis: RedisOption = "127.0.0.1:7000") -> None:
    """Undo the policies of the files: their courses return to the defaults."""
    _policies(files, redis, delete=True)


RESULTS_DIR = Path("bench-results")
ResultsDirOption = Annotated[
    Path, typer.Option(help="directory of the JSON results (bench-fanout: and our stack's logs)")
]
StackRootOption = Annotated[
    Path | None, typer.Option(help="stack state and logs (default: a temp dir, removed)")
]


def _tables_console(width: int) -> Console:
    """Where a benchmark prints its tables: the terminal, or piped output (make, CI logs)
    at a width that fits them."""
    return Console() if sys.stdout.isatty() else Console(width=width)


@contextlib.contextmanager
def _bench_failures(command: str, *failures: type[Exception]) -> Iterator[None]:
    """A benchmark that could not run says why in one line (exit 1); Ctrl-C exits with 130
    once the benchmark has stopped everything it started."""
    try:
        yield
    except failures as exc:
        console.print(f"[red]{command} failed:[/red] {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; everything started was stopped[/yellow]")
        raise typer.Exit(130) from None


@app.command()
def bench(
    scenario: Annotated[str, typer.Option(help="comma-separated: sends, fanout")] = "sends,fanout",
    concurrency: Annotated[
        str, typer.Option(help="concurrent SendMessage loops per step, comma-separated")
    ] = "1,8,32,64,128",
    duration: Annotated[float, typer.Option(help="measured seconds per step")] = 5.0,
    warmup: Annotated[float, typer.Option(help="unmeasured seconds before each step")] = 1.0,
    courses: Annotated[int, typer.Option(help="courses the sends are spread over")] = 16,
    users: Annotated[int, typer.Option(help="users the sends are spread over")] = 64,
    message_bytes: Annotated[int, typer.Option(help="content length of each send")] = 64,
    streams: Annotated[int, typer.Option(help="fanout: SubscribeMessages streams")] = 1000,
    fanout_courses: Annotated[int, typer.Option(help="fanout: courses of the streams")] = 10,
    publish_rate: Annotated[
        float, typer.Option(help="fanout: messages/s published, over all courses")
    ] = 200.0,
    drain: Annotated[
        float, typer.Option(help="fanout: seconds to wait for the last deliveries")
    ] = 10.0,
    prime_feeds: Annotated[
        bool,
        typer.Option(help="fanout: open one stream per course first, one at a time, then the rest"),
    ] = True,
    client_processes: Annotated[
        int, typer.Option(help="load processes (0: 1 below 8 concurrent, else 2)")
    ] = 0,
    send_streams: Annotated[
        int,
        typer.Option(
            min=0,
            help="sends: SendMessages streams per load process, as the GraphQL processes "
            "send (0: one SendMessage call per send, as any other client)",
        ),
    ] = 2,
    profile: Annotated[
        bool, typer.Option(help="also run the top sends step under py-spy (flame graph)")
    ] = False,
    output: ResultsDirOption = RESULTS_DIR,
    root: StackRootOption = None,
) -> None:
    """Measure sends/s, send latency and fan-out deliveries/s of one chat process against a
    local Redis Cluster (load from separate processes); prints tables, writes JSON."""

    from bench.chat import BenchError, BenchOptions, parse_int_list, parse_scenarios, run_bench

    with _bench_failures("bench", BenchError, StackError):
        options = BenchOptions(
            scenarios=parse_scenarios(scenario),
            concurrencies=parse_int_list(concurrency),
            duration_seconds=duration,
            warmup_seconds=warmup,
            send_courses=courses,
            users=users,
            content_bytes=message_bytes,
            streams=streams,
            fanout_courses=fanout_courses,
            publish_rate=publish_rate,
            drain_seconds=drain,
            prime_feeds=prime_feeds,
            client_processes=client_processes,
            send_streams=send_streams,
            profile=profile,
            output_dir=output,
            root=root,
            command_line=shlex.join(sys.argv),
        )
        run_bench(options, progress=console, out=_tables_console(160))


@app.command("bench-retime")
def bench_retime(
    messages: Annotated[int, typer.Option(min=1, help="messages in the course")] = 100_000,
    batch_sizes: Annotated[
        str, typer.Option(help="RETIME_BATCH_SIZE values to measure, comma-separated")
    ] = "100,500,2000",
    output: ResultsDirOption = RESULTS_DIR,
) -> None:
    """Time a CourseChatPolicy's TTL change on a course of many messages (the operator's
    re-timing through the course index), on a local Redis Cluster."""

    from bench.chat import BenchError, parse_int_list
    from bench.retime import run_retime_bench

    try:
        sizes = list(parse_int_list(batch_sizes))
    except BenchError as exc:
        console.print(f"[red]bench-retime:[/red] {exc}")
        raise typer.Exit(2) from None
    try:
        run_retime_bench(messages, sizes, output, progress=console, out=_tables_console(120))
    except (StackError, RuntimeError) as exc:
        console.print(f"[red]bench-retime failed:[/red] {exc}")
        raise typer.Exit(1) from None


@app.command("bench-campus")
def bench_campus(
    online: Annotated[int, typer.Option(min=2, help="users online, one socket each")] = 5_000,
    users: Annotated[int, typer.Option(min=2, help="users of the campus")] = 20_000,
    courses: Annotated[int, typer.Option(min=8, help="courses (each user in 6)")] = 500,
    rate: Annotated[int, typer.Option(min=0, help="sends per second")] = 20,
    duration: Annotated[int, typer.Option(min=5, help="seconds of the steady window")] = 60,
    output: ResultsDirOption = RESULTS_DIR,
    root: StackRootOption = None,
) -> None:
    """A simulated campus: read state, myUpdates, presence and typing at course scale on
    the local topology (Redis and process CPU, me latency), then presence after kill -9 of
    one GraphQL process."""
    from bench.campus import CampusBenchError, CampusOptions, run_campus

    if online > users:
        console.print("[red]bench-campus:[/red] --online cannot be more than --users")
        raise typer.Exit(2)
    options = CampusOptions(
        users=users,
        courses=courses,
        online=online,
        rate=rate,
        duration=duration,
        output_dir=output,
        root=root,
        command_line=shlex.join(sys.argv),
    )
    with _bench_failures("bench-campus", CampusBenchError, StackError):
        run_campus(options, progress=console, out=_tables_console(120))


@app.command("bench-fanout")
def bench_fanout(
    harness: Annotated[
        Path | None,
        typer.Option(
            envvar="NEXTCAMPUS_BENCH_HARNESS",
            show_default=False,
            help="the shared bench harness (default: ../shared/bench beside the repository)",
        ),
    ] = None,
    peers: Annotated[
        bool, typer.Option("--peers/--no-peers", help="also measure the peers (run-peers.sh)")
    ] = True,
    runs: Annotated[
        int,
        typer.Option(
            min=1, help="runs of every scenario, ours and the peers' (run-peers.sh --runs)"
        ),
    ] = 1,
    peers_quick: Annotated[
        bool,
        typer.Option(help="run-peers.sh --quick: shorter peer runs, NOT the scenarios of ours"),
    ] = False,
    sweep_start: Annotated[
        int, typer.Option(min=1, help="first publish rate of our saturation sweep (peers: 100)")
    ] = 100,
    quiet_below: Annotated[
        float,
        typer.Option(
            help="before each scenario and sweep step, wait (bounded) until the machine is "
            "below this busy % (of 200); 0: no wait"
        ),
    ] = 30.0,
    gateway: Annotated[
        bool,
        typer.Option(
            help="ours also through the Envoy gateway, as deployed, after the scenarios "
            "straight to the GraphQL processes (as the peers are measured); --no-gateway "
            "skips it"
        ),
    ] = True,
    mixed: Annotated[
        bool,
        typer.Option(
            "--mixed/--no-mixed",
            help="also sweep courseEvents with messages only and with the mix of sends, "
            "reactions, edits and deletes (our own generator)",
        ),
    ] = True,
    only_mixed: Annotated[
        bool,
        typer.Option(help="only the mixed-event sweeps (no harness scenarios, no peers)"),
    ] = False,
    output: ResultsDirOption = RESULTS_DIR,
    root: StackRootOption = None,
) -> None:
    """Fan-out of our GraphQL service, straight to it and through the Envoy gateway, next to
    the shared harness's peers (python-socketio, graphql-ws): latency at 4,000 deliveries/s,
    saturation at p99 < 100 ms with zero loss, KB per idle socket; then courseEvents
    saturation with messages only and with a mix of sends, reactions, edits and deletes.
    Tables against the targets, JSON in bench-results/."""
    import dataclasses

    from bench.fanout import (
        FanoutBenchError,
        FanoutOptions,
        HarnessMissing,
        find_harness,
        run_fanout_bench,
    )

    try:
        found = find_harness(harness)
    except HarnessMissing as exc:
        console.print(f"[red]bench-fanout:[/red] {exc}")
        raise typer.Exit(2) from None
    options = FanoutOptions(
        harness=found,
        peers=peers,
        runs=runs,
        peers_quick=peers_quick,
        sweep_start=sweep_start,
        quiet_below_pct=quiet_below,
        output_dir=output,
        root=root,
        command_line=shlex.join(sys.argv),
        gateway=gateway,
        harness_scenarios=not only_mixed,
        mixed=mixed or only_mixed,
    )
    if only_mixed:
        options = dataclasses.replace(options, peers=False)
    with _bench_failures("bench-fanout", FanoutBenchError, StackError):
        run_fanout_bench(options, progress=console, out=_tables_console(200))


# Not for people: the harness's sweep.js runs it before every step of `bench-fanout`'s
# saturation sweep (bench.fanout.flush_command).
@app.command("bench-fanout-flush", hidden=True)
def bench_fanout_flush(
    redis_port: Annotated[int, typer.Option(help="any node of the local Redis Cluster")],
    watch: Annotated[
        str, typer.Option(help='printed as the last line, e.g. "server=PID,PID;redis=PID"')
    ] = "",
    quiet_below: Annotated[
        float,
        typer.Option(help="then wait until the machine is below this busy % (of 200); 0: no wait"),
    ] = 0.0,
    quiet_wait: Annotated[
        float | None, typer.Option(help="seconds to wait at most (default: bench-fanout's)")
    ] = None,
    record: Annotated[Path | None, typer.Option(help="append what was done as a JSON line")] = None,
) -> None:
    """FLUSHALL every primary of a local Redis Cluster, wait for a quiet machine, then print
    --watch as the last line (sweep.js's --before-step passes it on to gen.js)."""
    import subprocess

    from bench.fanout import QUIET_WAIT_STEP_SECONDS, FanoutBenchError, before_step

    wait_seconds = QUIET_WAIT_STEP_SECONDS if quiet_wait is None else quiet_wait
    try:
        done = before_step(redis_port, quiet_below, wait_seconds, record)
    except (FanoutBenchError, StackError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"flush failed: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    print(done, file=sys.stderr)
    if watch:
        print(watch, flush=True)
