"""`chatctl bench-retime`: how long a TTL change of a CourseChatPolicy takes for a course
with many messages — the operator's one job that grows with the data.

A local Redis Cluster (6 nodes, one replica each, on free ports) gets one course of N
messages shaped as the send script stores them (hash with timestamp, retry key, index
entry, default TTL). Then, for each batch size, the operator's reconcile code applies a
policy with a new TTL, which re-times every message through the course index; the time
of that reconcile, its round trips and messages/s are reported, and every message's PTTL
is checked afterwards. Results: `bench-results/retime-<UTC stamp>.json`.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from rich.console import Console

from bench.measure import machine_info
from bench.report import ResultsFile, retime_table
from bench.stats import RetimeStep
from devstack.processes import free_ports
from devstack.redis_cluster import RedisCluster
from nextcampus_common.keys import CourseKeys
from nextcampus_common.redis_cluster import ClusterClient
from nextcampus_policy.reconcile import PolicyReconciler
from nextcampus_policy.settings import PolicyOperatorSettings
from nextcampus_policy.spec import PolicyRef
from nextcampus_policy.store import PolicyStore

COURSE = "bench-retime"
SEED_CHUNK = 2_000


async def seed(redis: ClusterClient, messages: int, ttl_seconds: int) -> None:
    """`messages` messages of one course, stored as send.lua stores them."""
    keys = CourseKeys(COURSE)
    client = redis.client_for(keys.messages)
    now_ms = int(time.time() * 1000)
    first = now_ms * 1000  # ids start at the clock in µs, like a new course's sequence
    for start in range(0, messages, SEED_CHUNK):
        async with client.pipeline(transaction=False) as pipe:
            for n in range(start, min(start + SEED_CHUNK, messages)):
                message_id = str(first + n)
                timestamp = now_ms - (messages - n)  # one per ms, the newest now
                key = keys.message(message_id)
                pipe.hset(
                    key,
                    mapping={
                        "user_id": f"user-{n % 50}",
                        "content": f"message {n}",
                        "timestamp": str(timestamp),
                        "deleted": "0",
                        "client_message_id": f"bench-{n}",
                    },
                )
                pipe.pexpireat(key, timestamp + ttl_seconds * 1000)
                retry = keys.client(f"user-{n % 50}", f"bench-{n}")
                pipe.set(retry, message_id, pxat=timestamp + ttl_seconds * 1000)
                pipe.zadd(keys.messages, {message_id: first + n})
            await pipe.execute()


async def verify(redis: ClusterClient, ttl_seconds: int) -> int:
    """Messages whose remaining life matches their timestamp + TTL (within 2 s)."""
    keys = CourseKeys(COURSE)
    client = redis.client_for(keys.messages)
    ids = [str(member) for member in await client.zrange(keys.messages, 0, -1)]
    good = 0
    for start in range(0, len(ids), SEED_CHUNK):
        chunk = ids[start : start + SEED_CHUNK]
        async with client.pipeline(transaction=False) as pipe:
            for message_id in chunk:
                pipe.hget(keys.message(message_id), "timestamp")
                pipe.pexpiretime(keys.message(message_id))
            replies = await pipe.execute()
        for timestamp, expires_at in zip(replies[::2], replies[1::2], strict=True):
            if timestamp and abs(int(timestamp) + ttl_seconds * 1000 - int(expires_at)) < 2000:
                good += 1
    return good


async def run_steps(
    nodes: list[str], messages: int, batch_sizes: list[int], progress: Console
) -> list[RetimeStep]:
    steps = []
    ttl = 86_400
    for batch_size in batch_sizes:
        settings = PolicyOperatorSettings(
            redis_nodes=nodes, metrics_port=0, health_port=0, retime_batch_size=batch_size
        )
        store = PolicyStore(ClusterClient(settings), retime_batch_size=batch_size)
        redis = ClusterClient(settings)
        await redis.start()
        try:
            await redis.command(CourseKeys(COURSE).messages, "FLUSHALL")  # one course, one node
            progress.print(f"seeding {messages:,} messages …")
            await seed(redis, messages, ttl)
            new_ttl = 7 * 86_400
            reconciler = PolicyReconciler(store, settings)
            policy = PolicyRef("2026-01-01T00:00:00Z", "bench", "retime", COURSE)
            progress.print(f"re-timing to {new_ttl} s in batches of {batch_size} …")
            started = time.perf_counter()
            outcome = await reconciler.reconcile(
                policy, {"courseId": COURSE, "messageTTLSeconds": new_ttl}
            )
            seconds = time.perf_counter() - started
            if not outcome.ready or outcome.retimed is None:
                raise RuntimeError(f"the policy was not applied: {outcome.message}")
            verified = await verify(redis, new_ttl)
            steps.append(
                RetimeStep(
                    batch_size,
                    new_ttl,
                    seconds,
                    outcome.retimed.batches,
                    outcome.retimed.retimed,
                    outcome.retimed.removed,
                    verified,
                )
            )
        finally:
            await store.close()
            await redis.close()
    return steps


def run_retime_bench(
    messages: int, batch_sizes: list[int], output_dir: Path, progress: Console, out: Console
) -> Path:
    results_file = ResultsFile.start("retime", output_dir)
    with tempfile.TemporaryDirectory(prefix="chatctl-bench-retime-") as root:
        cluster = RedisCluster(free_ports(6, with_bus=True), Path(root))
        progress.print("starting a 6-node Redis Cluster …")
        cluster.start()
        try:
            steps = asyncio.run(run_steps(cluster.nodes, messages, batch_sizes, progress))
        finally:
            cluster.stop()
    out.print(retime_table(steps, messages))
    record = results_file.header(
        messages=messages,
        machine=machine_info("this process and six redis-servers share this machine"),
        steps=[step.record() for step in steps],
    )
    path = results_file.write(record)
    progress.print(f"results: {path}")
    return path
