"""pytest plugin of the workspace (`-p chatctl.testing`): real Redis Clusters, real chat
servers and processes, tokens. Everything started here is stopped here, by PID."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from chatctl.client import stream_live_after
from chatctl.localstack import RedisCluster, free_ports
from chatctl.topology import DEV_JWT_SECRET, Topology
from nextcampus_common.auth import issue_token
from nextcampus_common.proto.chat.v1.chat_pb2 import ChatMessage, SendMessageResponse

TokenFactory = Callable[..., str]


def _start_cluster(root: Path) -> RedisCluster:
    if shutil.which("redis-server") is None:
        pytest.fail(
            "redis-server is missing: `make test` installs it (apt-get install redis-server)"
        )
    cluster = RedisCluster(free_ports(6, with_bus=True), root)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A 6-node Redis Cluster shared by the session (tests use their own course ids)."""
    cluster = _start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def own_redis_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A cluster of the test's own, for tests that kill its nodes."""
    cluster = _start_cluster(tmp_path / "redis-cluster")
    yield cluster
    cluster.stop()


@pytest.fixture
def course_id() -> str:
    return f"c-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def jwt_secret() -> str:
    return DEV_JWT_SECRET


@pytest.fixture
def make_token(jwt_secret: str) -> TokenFactory:
    def make(user: str, courses: list[str], moderates: list[str] | None = None, **kw: Any) -> str:
        return issue_token(jwt_secret, user, courses, moderates or [], **kw)

    return make


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    """Redis Cluster + two chat processes on free ports (real processes)."""
    stack = Topology.on_free_ports(
        tmp_path / "stack", chat_overrides={"default_rate_limit_messages": 0}
    )
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def chat_settings_factory(redis_cluster: RedisCluster, jwt_secret: str) -> Callable[..., Any]:
    from nextcampus_chat.settings import ChatSettings

    def make(**overrides: Any) -> ChatSettings:
        values: dict[str, Any] = {
            "redis_nodes": redis_cluster.nodes,
            "jwt_secret": jwt_secret,
            "grpc_host": "127.0.0.1",
            "grpc_port": 0,
            "metrics_port": 0,
            "log_format": "console",
            "shutdown_grace_seconds": 1.0,
            # Tests send many messages quickly; the rate-limit tests set a course policy or
            # build a server with the default limit.
            "default_rate_limit_messages": 0,
        }
        values.update(overrides)
        return ChatSettings(**values)

    return make


@pytest.fixture
async def chat_server(chat_settings_factory: Callable[..., Any]) -> AsyncIterator[Any]:
    """An in-process chat server built by the real app factory."""
    from nextcampus_chat.server import build_server

    server = build_server(chat_settings_factory())
    await server.start()
    yield server
    await server.stop()


class Collector:
    """Reads a SubscribeMessages call in the background and keeps what arrived."""

    def __init__(self, call: grpc.aio.UnaryStreamCall) -> None:
        self.call = call
        self.messages: list[ChatMessage] = []
        self.error: grpc.aio.AioRpcError | None = None
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.call:
                async with self._changed:
                    self.messages.append(message)
                    self._changed.notify_all()
        except grpc.aio.AioRpcError as exc:
            self.error = exc
        async with self._changed:
            self._changed.notify_all()

    @property
    def ids(self) -> list[int]:
        return [int(m.message_id) for m in self.messages if not m.deleted]

    async def wait_for(self, condition: Callable[[Collector], bool], within: float = 20) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: condition(self) or self._task.done())
        assert condition(self), f"stream ended ({self.error!r}) before the condition held"

    async def has_ids(self, ids: list[int], within: float = 20) -> None:
        wanted = set(ids)
        await self.wait_for(lambda c: wanted <= set(c.ids), within)

    async def close(self) -> None:
        self.call.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def established(
    collector: Collector, send: Callable[[], Awaitable[SendMessageResponse]]
) -> int:
    """Wait until the stream is live, then send a probe and wait until the stream sees it."""
    await stream_live_after(collector.call)
    response = await send()
    probe = int(response.message.message_id)
    await collector.has_ids([probe])
    return probe
