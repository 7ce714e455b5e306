"""The Redis Cluster client against a real cluster: how many replicas a write waits for, and
how replicated writes share round trips."""

from __future__ import annotations

import asyncio

from nextcampus_common.keys import CourseKeys
from nextcampus_common.redis_cluster import ClusterClient
from nextcampus_common.scripts import SEND, UNREAD
from nextcampus_common.settings import RedisSettings


def send_args(course_id: str, client_message_id: str = "cm-1") -> tuple[list[str], list[object]]:
    keys = CourseKeys(course_id)
    return (
        [
            keys.policy,
            keys.seq,
            keys.messages,
            keys.events,
            keys.client("alice", client_message_id),
            keys.rate("alice"),
            keys.log,
        ],
        [keys.prefix, "alice", "hello", client_message_id, 86400, 4000, 0, 10, course_id, ""],
    )


async def wait_calls(client: ClusterClient, key: str) -> int:
    """WAITs the primary of `key` has run, by its own count (INFO commandstats)."""
    stats = await client.client_for(key).info("commandstats")
    return int(stats.get("cmdstat_wait", {}).get("calls", 0))


async def test_writes_wait_for_a_replica_once_the_cluster_has_one(redis_cluster, course_id):
    """`redis_min_replicas` empty: a process sees the cluster's replicas and waits for one.
    One that started before the replicas had joined (it saw none, so it would acknowledge
    writes on the primary alone) looks again and from then on waits too."""
    client = ClusterClient(RedisSettings(redis_nodes=redis_cluster.nodes))
    await client.start()
    try:
        assert client.min_replicas == 1
        # As if it had started before the replicas joined, and a while ago.
        client.min_replicas = 0
        client._detect_again_at = 0.0
        keys, args = send_args(course_id)
        reply = await client.script(SEND, keys, args, replicated=True)
        assert reply[0] == "ok"
        assert client.min_replicas == 1
    finally:
        await client.close()


async def test_a_configured_number_is_kept(redis_cluster, course_id):
    client = ClusterClient(RedisSettings(redis_nodes=redis_cluster.nodes, redis_min_replicas=0))
    await client.start()
    try:
        keys, args = send_args(course_id)
        await client.script(SEND, keys, args, replicated=True)
        assert client.min_replicas == 0  # the operator said so: not second-guessed
    finally:
        await client.close()


async def test_scripts_by_node_makes_one_round_trip_per_node(redis_cluster, monkeypatch):
    """GetMyCourses's read of many courses: the calls of each node go in ONE pipeline (one
    round trip), whatever the number of courses, and the answers keep the calls' order. The
    pipelines are counted by wrapping the real redis-py pipeline's `execute` (nothing is
    replaced: every call still goes to the real cluster)."""
    from redis.asyncio.client import Pipeline

    client = ClusterClient(RedisSettings(redis_nodes=redis_cluster.nodes))
    await client.start()
    executed: list[int] = []
    real_execute = Pipeline.execute

    async def counting_execute(self: Pipeline, *args: object, **kwargs: object) -> object:
        executed.append(len(self.command_stack))
        return await real_execute(self, *args, **kwargs)

    try:
        courses = [f"rt-{i}" for i in range(40)]
        nodes = {client.node_for(CourseKeys(c).reads).name for c in courses}
        assert len(nodes) == 3  # 40 courses land on every primary
        calls = [([CourseKeys(c).reads], [CourseKeys(c).prefix, "alice"]) for c in courses]
        await client.scripts_by_node(UNREAD, calls)  # a fresh node loads the script first
        monkeypatch.setattr(Pipeline, "execute", counting_execute)
        states = await client.scripts_by_node(UNREAD, calls)
        assert len(executed) == len(nodes)
        assert sum(executed) == len(courses)
        assert [state[1] for state in states] == [0] * len(courses)  # nothing unread anywhere
    finally:
        await client.close()


async def test_sends_in_flight_together_share_one_replication_wait(redis_cluster, course_id):
    """Group commit: 50 sends to one course issued at once go to its primary in batches of one
    pipeline and ONE `WAIT` each (counted by the primary itself), not 50 WAITs; every one is
    stored once, with its own id, and acknowledged only as replicated. A send alone afterwards
    still gets its WAIT."""
    client = ClusterClient(RedisSettings(redis_nodes=redis_cluster.nodes))
    await client.start()
    key = CourseKeys(course_id).policy
    try:
        before = await wait_calls(client, key)
        replies = await asyncio.gather(
            *(
                client.script(SEND, *send_args(course_id, f"cm-{i}"), replicated=True)
                for i in range(50)
            )
        )
        together = await wait_calls(client, key) - before
        assert [reply[0] for reply in replies] == ["ok"] * 50
        assert len({reply[1] for reply in replies}) == 50, "one message per send"
        assert 1 <= together < 50, f"{together} WAITs for 50 sends in flight together"

        alone = await client.script(SEND, *send_args(course_id, "cm-alone"), replicated=True)
        assert alone[0] == "ok"
        assert await wait_calls(client, key) - before == together + 1
    finally:
        await client.close()
