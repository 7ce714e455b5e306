"""chatctl: the Next Campus Chat command line (local stack, dev tokens, send/tail, bench)."""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.console import Console

from chatctl.client import ChatClient
from chatctl.localstack import StackError
from chatctl.topology import DEV_JWT_SECRET, Topology
from nextcampus_common.auth import issue_token

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
console = Console(stderr=True)

TargetOption = Annotated[
    str, typer.Option("--target", "-t", envvar="CHATCTL_TARGET", help="chat gRPC host:port")
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
def send(
    course: CourseOption,
    content: Annotated[str, typer.Argument(help="message text")],
    user: UserOption = "dev",
    client_message_id: Annotated[str, typer.Option(help="idempotency key for retries")] = "",
    target: TargetOption = "127.0.0.1:50051",
    token: TokenOption = None,
    secret: SecretOption = DEV_JWT_SECRET,
) -> None:
    """Send one message and print its id."""

    async def run() -> None:
        async with ChatClient(target, _token(token, user, course, secret)) as client:
            response = await client.send(course, content, client_message_id)
        message = response.message
        note = " (duplicate: already sent)" if response.duplicate else ""
        print(f"{message.course_id} #{message.message_id} by {message.user_id}{note}")

    try:
        asyncio.run(run())
    except grpc.aio.AioRpcError as exc:
        raise _grpc_failure(exc) from None


@app.command()
def tail(
    course: CourseOption,
    after: Annotated[str, typer.Option(help="replay messages after this id first")] = "",
    user: UserOption = "dev",
    target: TargetOption = "127.0.0.1:50051",
    token: TokenOption = None,
    secret: SecretOption = DEV_JWT_SECRET,
) -> None:
    """Print a course's messages as they arrive (Ctrl-C to stop)."""

    async def run() -> None:
        async with ChatClient(target, _token(token, user, course, secret)) as client:
            async for message in client.messages(course, after):
                if message.deleted:
                    print(f"#{message.message_id} deleted", flush=True)
                else:
                    print(f"#{message.message_id} {message.user_id}: {message.content}", flush=True)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
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
    """Start the local topology: Redis Cluster on :7000-7005, chat on :50051 and :50052."""
    stack = (
        Topology.on_free_ports(root.resolve(), persist=persist)
        if free_ports
        else Topology(root=root.resolve(), persist=persist)
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    console.print(f"starting Redis Cluster on 127.0.0.1:{','.join(map(str, stack.redis_ports))} …")
    try:
        stack.start()
    except StackError as exc:
        console.print(f"[red]could not start the local stack:[/red] {exc}")
        raise typer.Exit(1) from None
    dev_token = issue_token(stack.jwt_secret, "dev", ["demo"], ["demo"])
    console.print(f"chat gRPC on {', '.join(stack.chat_targets)}; logs in {stack.root / 'logs'}")
    console.print(f"dev token (user dev, course demo, moderator): {dev_token}")
    target = stack.chat_targets[0]
    console.print(
        f"try:  chatctl tail -c demo -t {target}    and    chatctl send -c demo -t {target} 'hello'"
    )
    print("ready", flush=True)
    dead: list[str] = []
    try:
        while not stop.wait(0.5):
            dead = [p.name for p in stack.chats if not p.alive()]
            if dead:
                console.print(f"[red]{', '.join(dead)} exited; see its log. Stopping.[/red]")
                break
    finally:
        console.print("stopping …")
        stack.stop()
        console.print("stopped")
    if dead:
        raise typer.Exit(1)
