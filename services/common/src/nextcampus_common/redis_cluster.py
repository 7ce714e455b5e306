"""The Redis Cluster client: slot routing from redis-py's cluster client, commands and
scripts sent to the owning primary over a plain per-node connection pool.

Why not send everything through `RedisCluster` itself: a write must be acknowledged only once
a replica holds it (otherwise a failover can lose an acknowledged message and hand its id to
another one). `WAIT` counts the writes of *its own connection*, so the script and the `WAIT`
must travel together on one connection — a two-command pipeline to the slot's primary, still
one round trip. Retries through a failover refresh the slot map and go to the new primary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AskError,
    ClusterDownError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from nextcampus_common.scripts import LuaScript
from nextcampus_common.settings import RedisSettings

# Errors that mean "the topology moved or a node is away": refresh the slot map and retry.
RETRYABLE_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,  # includes BusyLoadingError: a restarted node still loading its AOF
    RedisTimeoutError,
    ClusterDownError,
    TryAgainError,
    AskError,  # includes MovedError
    ReadOnlyError,  # wrote to a primary that was demoted to replica
    SlotNotCoveredError,
    OSError,
)
# Start-up also waits out a cluster that is still forming.
STARTUP_ERRORS: tuple[type[Exception], ...] = (*RETRYABLE_ERRORS, RedisClusterException)


class RedisUnavailable(Exception):
    """Redis did not answer within the retry budget."""


def _no_retry() -> Retry:
    # Our own loop decides about retries (with a fresh slot map); the connection must not
    # silently reconnect to a node that is no longer the owner.
    return Retry(NoBackoff(), 0)


class ClusterClient:
    """Routes keys to their primary, runs scripts with optional replica acknowledgement, and
    retries through failovers within `redis_retry_seconds`."""

    def __init__(
        self,
        settings: RedisSettings,
        *,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self._settings = settings
        self._on_error = on_error or (lambda _kind: None)
        password = settings.redis_password.get_secret_value() if settings.redis_password else None
        self._connection_kwargs: dict[str, Any] = {
            "password": password,
            "decode_responses": True,
            "socket_timeout": settings.redis_socket_timeout_seconds,
            "socket_connect_timeout": min(settings.redis_socket_timeout_seconds, 2.0),
        }
        self.cluster = RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in settings.redis_startup_nodes()],
            **self._connection_kwargs,
        )
        self._node_clients: dict[str, Redis] = {}
        self._refresh_lock = asyncio.Lock()
        self._refreshed_at = 0.0

    async def start(self) -> None:
        deadline = time.monotonic() + self._settings.redis_retry_seconds
        while True:
            try:
                await self.cluster.initialize()
                return
            except STARTUP_ERRORS as exc:
                if time.monotonic() > deadline:
                    raise RedisUnavailable(f"Redis Cluster unreachable: {exc}") from exc
                await asyncio.sleep(0.2)

    async def close(self) -> None:
        clients, self._node_clients = list(self._node_clients.values()), {}
        for client in clients:
            await client.aclose()
        await self.cluster.aclose()

    def new_node_client(self, host: str, port: int) -> Redis:
        return Redis(host=host, port=port, retry=_no_retry(), **self._connection_kwargs)

    def node_for(self, key: str) -> ClusterNode:
        node = self.cluster.get_node_from_key(key)
        assert node is not None
        return node

    def client_for(self, key: str) -> Redis:
        node = self.node_for(key)
        client = self._node_clients.get(node.name)
        if client is None:
            client = self._node_clients[node.name] = self.new_node_client(node.host, int(node.port))
        return client

    async def refresh_topology(self) -> None:
        """Re-read the slot map (at most every 100 ms, however many callers ask)."""
        requested = time.monotonic()
        async with self._refresh_lock:
            if self._refreshed_at >= requested - 0.1:
                return
            try:
                await self.cluster.nodes_manager.initialize()
            except STARTUP_ERRORS:
                self._on_error("topology")
            self._refreshed_at = time.monotonic()
            live = {n.name for n in self.cluster.get_nodes()}
            for name in [n for n in self._node_clients if n not in live]:
                await self._node_clients.pop(name).aclose()

    async def retrying(self, attempt: Callable[[], Any], what: str) -> Any:
        """Run `attempt` until it succeeds or the retry budget is spent."""
        deadline = time.monotonic() + self._settings.redis_retry_seconds
        delay = 0.02
        while True:
            try:
                return await attempt()
            except RETRYABLE_ERRORS as exc:
                self._on_error(type(exc).__name__)
                if time.monotonic() + delay > deadline:
                    raise RedisUnavailable(f"Redis unavailable for {what}: {exc}") from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                await self.refresh_topology()

    async def command(self, key: str, *args: Any) -> Any:
        """One command on the primary of `key`'s slot."""

        async def attempt() -> Any:
            return await self.client_for(key).execute_command(*args)  # type: ignore[no-untyped-call]

        return await self.retrying(attempt, str(args[0]))

    async def script(
        self, script: LuaScript, keys: Sequence[str], args: Sequence[Any], *, replicated: bool
    ) -> Any:
        """Run `script` on the primary of `keys[0]`; with `replicated`, acknowledge only once
        `redis_wait_replicas` replicas hold its writes (or the wait timed out, counted)."""
        wait_replicas = self._settings.redis_wait_replicas if replicated else 0

        async def attempt() -> Any:
            client = self.client_for(keys[0])
            for _ in range(2):
                async with client.pipeline(transaction=False) as pipe:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                    if wait_replicas:
                        pipe.execute_command(
                            "WAIT", wait_replicas, self._settings.redis_wait_timeout_ms
                        )
                    replies = await pipe.execute(raise_on_error=False)
                result = replies[0]
                if isinstance(result, NoScriptError):
                    # A node that restarted (or a new primary) has an empty script cache.
                    await client.script_load(script.source)
                    continue
                if isinstance(result, Exception):
                    raise result
                if wait_replicas and isinstance(replies[1], int) and replies[1] < wait_replicas:
                    self._on_error("unreplicated_write")
                return result
            raise RuntimeError(f"script {script.name} was not accepted after loading it")

        return await self.retrying(attempt, script.name)
