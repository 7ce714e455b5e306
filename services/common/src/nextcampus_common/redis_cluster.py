"""The Redis Cluster client: slot routing from redis-py's cluster client, commands and
scripts sent to the owning primary over a plain per-node connection pool.

Why not send everything through `RedisCluster` itself: a write is acknowledged only once
`min_replicas` replicas hold it (otherwise a failover can lose an acknowledged message).
`WAIT` counts the writes of *its own connection*, so the script and the `WAIT` must travel
together on one connection — a two-command pipeline to the slot's primary, still one round
trip. A write that no replica confirmed in time is refused (`WriteNotDurable`, the caller
retries it idempotently); while a shard has no replica at all it is refused, or accepted
with one copy, as `redis_without_replicas` says. Retries through a failover refresh the
slot map and go to the new primary.

Replicated writes to one primary are group-committed (`ReplicatedBatches`): the writes that
arrive while a batch is on the wire go together in the next one, a pipeline of their
scripts and ONE `WAIT`, which covers them all (it waits for the connection's last write).
At low load a batch is one write and nothing waits longer; under load every send shares one
round trip and one replication wait per node instead of paying its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from nextcampus_common.logs import get_logger
from nextcampus_common.scripts import LuaScript
from nextcampus_common.settings import RedisSettings

log = get_logger(__name__)

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


# A shard without any replica waits for one to (re)join: that takes seconds, not a WAIT.
NO_REPLICA_RETRY_AFTER_MS = 1000
# How long a primary seen without replicas is treated so without asking it again.
REPLICALESS_SECONDS = 1.0
# How often a process that has seen no replica yet looks again (redis_min_replicas empty).
REPLICA_DETECTION_SECONDS = 5.0


class RedisUnavailable(Exception):
    """Redis did not answer within the retry budget."""


class WriteNotDurable(RedisUnavailable):
    """A write no replica confirmed (or the primary refused it for lack of replicas): it was
    not acknowledged, and a retry with the same idempotency key is safe."""

    def __init__(self, message: str, *, retry_after_ms: int) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


def online_replicas(info: dict[str, Any]) -> int:
    """Replicas attached and streaming, from a primary's INFO replication."""
    return sum(
        1
        for name, value in info.items()
        if name.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
    )


# Writes in one batch at most: a bigger backlog goes in the next ones (a pipeline is built
# and parsed as a whole, so one huge batch would hold every write in it).
MAX_BATCH_WRITES = 256


@dataclass(eq=False, slots=True)
class _Write:
    script: LuaScript
    keys: Sequence[str]
    args: Sequence[Any]
    answer: asyncio.Future[tuple[Any, int]]


class ReplicatedBatches:
    """The replicated writes of this process to one primary, one batch on the wire at a time:
    `write` answers the script's reply (an exception as a value, as a pipeline's) and how many
    replicas confirmed its batch."""

    def __init__(self, client: Redis, replicas: int, timeout_ms: int) -> None:
        self.client, self.replicas, self.timeout_ms = client, replicas, timeout_ms
        self._queued: list[_Write] = []
        self._sending: asyncio.Task[None] | None = None

    async def write(
        self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]
    ) -> tuple[Any, int]:
        answer: asyncio.Future[tuple[Any, int]] = asyncio.get_running_loop().create_future()
        self._queued.append(_Write(script, keys, args, answer))
        if self._sending is None:
            self._sending = asyncio.create_task(self._send_all(), name="redis replicated writes")
        return await answer

    async def _send_all(self) -> None:
        try:
            while self._queued:
                batch = self._queued[:MAX_BATCH_WRITES]
                del self._queued[:MAX_BATCH_WRITES]
                await self._send(batch)
        finally:
            self._sending = None

    async def _send(self, batch: list[_Write]) -> None:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for write in batch:
                    pipe.evalsha(write.script.sha, len(write.keys), *write.keys, *write.args)
                pipe.execute_command("WAIT", self.replicas, self.timeout_ms)
                replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:
            # The connection failed: which of them ran is unknown, every writer retries (the
            # scripts are idempotent by their keys) — or this task was cancelled at shutdown.
            for write in batch:
                if not write.answer.done():
                    write.answer.set_exception(
                        exc if isinstance(exc, Exception) else RedisConnectionError("closed")
                    )
            if not isinstance(exc, Exception):
                raise
            return
        confirmed = replies[-1] if isinstance(replies[-1], int) else 0
        for write, reply in zip(batch, replies, strict=False):
            if not write.answer.done():  # its caller may have given up (a deadline)
                write.answer.set_result((reply, confirmed))

    def close(self) -> None:
        """Stop (the node left the slot map, or the client closes): the writes not yet
        answered fail as a lost connection would, so that their callers retry elsewhere."""
        if self._sending is not None:
            self._sending.cancel()
        for write in self._queued:
            if not write.answer.done():
                write.answer.set_exception(RedisConnectionError("the node's client was closed"))
        self._queued.clear()


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
        # Per primary (by name), the group commit of its replicated writes.
        self._batches: dict[str, ReplicatedBatches] = {}
        self._refresh_lock = asyncio.Lock()
        self._refreshed_at = 0.0
        # Replicas a replicated write needs; resolved at start when the setting is empty.
        self.min_replicas = settings.redis_min_replicas or 0
        # Primaries last seen without any replica, until when (monotonic seconds).
        self._replicaless_until: dict[str, float] = {}
        self._detect_again_at = 0.0

    async def start(self) -> None:
        deadline = time.monotonic() + self._settings.redis_retry_seconds
        while True:
            try:
                await self.cluster.initialize()
                await self._detect_replicas()
                return
            except STARTUP_ERRORS as exc:
                if time.monotonic() > deadline:
                    raise RedisUnavailable(f"Redis Cluster unreachable: {exc}") from exc
                await asyncio.sleep(0.2)

    async def _detect_replicas(self) -> None:
        """With `redis_min_replicas` empty: 1 once the cluster has replicas. A process that
        starts before the replicas have joined asks again (at most every few seconds) until
        it sees one, so it does not go on acknowledging writes on the primary alone."""
        if self._settings.redis_min_replicas is not None or self.min_replicas:
            return
        now = time.monotonic()
        if now < self._detect_again_at:
            return
        self._detect_again_at = now + REPLICA_DETECTION_SECONDS
        with contextlib.suppress(*STARTUP_ERRORS):
            if await self._cluster_has_replicas():
                self.min_replicas = 1

    async def _cluster_has_replicas(self) -> bool:
        """Whether the cluster is built with replicas: a primary streaming to a replica
        (INFO replication, which a primary knows first), or any node known as a replica,
        failed ones included (CLUSTER NODES: a replica that is down now still means writes
        should wait for one)."""
        streaming = await self.cluster.execute_command(
            "INFO", "replication", target_nodes=RedisCluster.PRIMARIES
        )
        if any(int(info.get("connected_slaves", 0)) for info in streaming.values()):
            return True
        views = await self.cluster.execute_command(
            "CLUSTER NODES", target_nodes=RedisCluster.ALL_NODES
        )
        # {asked node: {node: {"flags": "myself,slave", …}, …}, …}
        return any(
            "slave" in str(entry.get("flags", ""))
            for view in views.values()
            for entry in view.values()
        )

    async def close(self) -> None:
        for batches in self._batches.values():
            batches.close()
        self._batches = {}
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
                if name in self._batches:
                    self._batches.pop(name).close()
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
        """Run `script` on the primary of `keys[0]`; with `replicated`, return only once
        `min_replicas` replicas hold its writes, else raise `WriteNotDurable`."""
        if replicated:
            await self._detect_replicas()
        wanted = self.min_replicas if replicated else 0

        async def attempt() -> Any:
            node = self.node_for(keys[0]).name
            client = self.client_for(keys[0])
            wait = wanted
            if wait and self._replicaless_until.get(node, 0.0) > time.monotonic():
                wait = self._without_replicas(node, script.name)
            for _ in range(2):
                confirmed = 0
                if wait:
                    result, confirmed = await self._batches_of(node, client, wait).write(
                        script, keys, args
                    )
                else:
                    async with client.pipeline(transaction=False) as pipe:
                        pipe.evalsha(script.sha, len(keys), *keys, *args)
                        (result,) = await pipe.execute(raise_on_error=False)
                if isinstance(result, NoScriptError):
                    # A node that restarted (or a new primary) has an empty script cache.
                    await client.script_load(script.source)
                    continue
                if isinstance(result, ResponseError) and str(result).startswith("NOREPLICAS"):
                    # min-replicas-to-write: the primary refused before writing anything.
                    self._on_error("write_refused_without_replica")
                    raise WriteNotDurable(
                        f"{script.name}: no replica of this shard is in sync to copy it to",
                        retry_after_ms=NO_REPLICA_RETRY_AFTER_MS,
                    )
                if isinstance(result, Exception):
                    raise result
                if wait and confirmed < wait:
                    await self._not_replicated(client, node, script.name, confirmed, wait)
                return result
            raise RuntimeError(f"script {script.name} was not accepted after loading it")

        return await self.retrying(attempt, script.name)

    def _batches_of(self, node: str, client: Redis, replicas: int) -> ReplicatedBatches:
        batches = self._batches.get(node)
        if batches is None or batches.client is not client or batches.replicas != replicas:
            if batches is not None:
                batches.close()
            batches = self._batches[node] = ReplicatedBatches(
                client, replicas, self._settings.redis_wait_timeout_ms
            )
        return batches

    async def scripts_by_node(
        self, script: LuaScript, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]
    ) -> list[Any]:
        """Run `script` (a read: no replica wait) once per (keys, args) of `calls` with ONE
        round trip per Redis node: the calls whose first keys live on one node go in one
        pipeline, the nodes in parallel. Answers in the order of `calls`."""
        results: list[Any] = [None] * len(calls)

        async def on_node(client: Redis, indexes: list[int]) -> None:
            for _ in range(2):
                async with client.pipeline(transaction=False) as pipe:
                    for i in indexes:
                        keys, args = calls[i]
                        pipe.evalsha(script.sha, len(keys), *keys, *args)
                    replies = await pipe.execute(raise_on_error=False)
                if any(isinstance(reply, NoScriptError) for reply in replies):
                    await client.script_load(script.source)
                    continue
                for i, reply in zip(indexes, replies, strict=True):
                    if isinstance(reply, Exception):
                        raise reply
                    results[i] = reply
                return
            raise RuntimeError(f"script {script.name} was not accepted after loading it")

        async def attempt() -> list[Any]:
            # Grouped again on every attempt: a failover may have moved slots.
            by_node: dict[str, list[int]] = {}
            for i, (keys, _args) in enumerate(calls):
                by_node.setdefault(self.node_for(keys[0]).name, []).append(i)
            await asyncio.gather(
                *(
                    on_node(self.client_for(calls[indexes[0]][0][0]), indexes)
                    for indexes in by_node.values()
                )
            )
            return results

        if not calls:
            return []
        answers: list[Any] = await self.retrying(attempt, script.name)
        return answers

    def _without_replicas(self, node: str, what: str) -> int:
        """A write to a primary known to have no replica: refused before it is made, or made
        without waiting (0 replicas), as `redis_without_replicas` says."""
        if self._settings.redis_without_replicas == "refuse":
            self._on_error("write_refused_without_replica")
            raise WriteNotDurable(
                f"{what}: this shard has no replica right now",
                retry_after_ms=NO_REPLICA_RETRY_AFTER_MS,
            )
        self._on_error("write_without_replica")
        return 0

    async def _not_replicated(
        self, client: Redis, node: str, what: str, confirmed: int, wanted: int
    ) -> None:
        """The write is on the primary but fewer than `wanted` replicas confirmed it in time.
        Without any replica attached (the shard just failed over) remember that and apply the
        `redis_without_replicas` choice; otherwise refuse it: a retry with the same
        idempotency key finds it and waits again."""
        try:
            info = await client.info("replication")
        except RETRYABLE_ERRORS:
            info = None
        if info is not None and online_replicas(info) == 0:
            self._replicaless_until[node] = time.monotonic() + REPLICALESS_SECONDS
            log.warning("Redis primary has no replica", node=node, write=what)
            if self._settings.redis_without_replicas == "accept":
                self._on_error("write_without_replica")
                return
            self._on_error("write_refused_without_replica")
            raise WriteNotDurable(
                f"{what}: this shard has no replica right now",
                retry_after_ms=NO_REPLICA_RETRY_AFTER_MS,
            )
        self._on_error("write_not_replicated")
        raise WriteNotDurable(
            f"{what}: {confirmed} of {wanted} replicas confirmed the write in "
            f"{self._settings.redis_wait_timeout_ms} ms",
            retry_after_ms=self._settings.redis_wait_timeout_ms,
        )
