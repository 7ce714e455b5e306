"""The images as the chart runs them (`make e2e-containers`): what only the container
topology shows. The rest of the e2e suite (gateway, chaos with `podman kill`, browser) runs
against the same containers in the same session.

- every container runs as the chart's pod spec says (user 10001, read-only root, no
  capabilities, no privilege escalation), with exactly the env `helm template` renders, and
  its probe answering;
- the Redis Cluster the chart's start.sh and create-cluster.sh formed meets again from its
  nodes.conf: after one node's restart, and after the whole set was down and came back on
  new addresses (what start.sh's DNS refresh is for), its data kept;
- the operator's image reconciles a CourseChatPolicy from the Kubernetes API — emulated by
  kmock, since no API server runs here — and the gateway follows it.

Skipped unless NEXTCAMPUS_E2E_TOPOLOGY=containers.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from devstack.containers import ContainerTopology
from e2e.clients import COURSE_POLICY, HISTORY, SEND_MESSAGE, GraphqlHttp, ReliableSender
from testing.ws import RETRYABLE_CODES

if TYPE_CHECKING:
    from e2e.conftest import Gateway

pytestmark = pytest.mark.containers

WITHIN_SECONDS = 120.0


@pytest.fixture
def containers(gateway: Gateway) -> ContainerTopology:
    if gateway.containers is None:
        pytest.skip("runs against the container topology (NEXTCAMPUS_E2E_TOPOLOGY=containers)")
    return gateway.containers


def inspect(stack: ContainerTopology, pod: str) -> dict[str, Any]:
    (state,) = json.loads(stack.engine.run("inspect", stack.container_name(pod)).stdout)
    return dict(state)


def test_every_container_runs_as_the_chart_runs_it(containers: ContainerTopology) -> None:
    pods = [pod for pod in containers.pods.values() if not pod.job]
    assert {pod.component for pod in pods} == {"redis", "chat", "graphql", "gateway", "operator"}
    assert len(containers.by_component("redis")) == 6
    assert len(containers.chats) == 2
    assert len(containers.graphqls) == 2
    for pod in pods:
        state = inspect(containers, pod.name)
        security = pod.spec["securityContext"] | pod.container["securityContext"]
        assert state["Config"]["User"] == f"{security['runAsUser']}:{security['runAsGroup']}"
        assert state["HostConfig"]["ReadonlyRootfs"] is True, pod.name
        assert not state["EffectiveCaps"], (pod.name, state["EffectiveCaps"])
        assert "no-new-privileges" in state["HostConfig"]["SecurityOpt"], pod.name
        env = dict(line.split("=", 1) for line in state["Config"]["Env"])
        rendered = containers.environment(pod)
        assert {k: env.get(k) for k in rendered} == rendered, pod.name
        assert state["Config"]["Image"] == pod.container["image"]
        # From inside: the user the chart names, and a root filesystem nothing can change.
        whoami = containers.engine.run("exec", containers.container_name(pod.name), "id", "-u")
        assert whoami.stdout.strip() == str(security["runAsUser"])
        write = containers.engine.run(
            "exec", containers.container_name(pod.name), "touch", "/written", check=False
        )
        assert write.returncode != 0
        assert "Read-only file system" in write.stderr, pod.name
        assert containers.probe(pod), f"{pod.name}: its probe does not answer"


async def history(http: GraphqlHttp, token: str, course_id: str) -> list[tuple[int, str]]:
    """The course's history, read again while it is UNAVAILABLE (as a client retries): just
    after the cluster came back, a chat pod's Redis connections may still be re-made."""
    deadline = asyncio.get_running_loop().time() + WITHIN_SECONDS
    while True:
        response = await http.execute(HISTORY, {"c": course_id}, token=token)
        if response.data is not None or not response.codes <= RETRYABLE_CODES:
            break
        assert asyncio.get_running_loop().time() < deadline, response.describe()
        await asyncio.sleep(0.5)
    assert response.data is not None, response.describe()
    return [(int(m["messageId"]), m["content"]) for m in response.data["messages"]["messages"]]


async def test_the_redis_cluster_meets_again_from_its_nodes_conf(
    gateway: Gateway, containers: ContainerTopology
) -> None:
    redis = containers.redis
    ids_before = redis.node_ids()
    assert len(ids_before) == 6
    course_id = f"containers-{uuid.uuid4().hex[:8]}"
    token = gateway.token("ada", [course_id])
    async with GraphqlHttp(gateway.graphql_url) as http:
        # Retried with the same clientMessageId while the cluster recovers, never lost.
        sender = ReliableSender(
            http, course_id, [token], run_id="meets", give_up_after_seconds=WITHIN_SECONDS
        )
        await sender.send(0)  # before any restart

        # One node: the same container stopped hard and started again.
        replica = next(p for p in ids_before if "role:slave" in redis.cli(p, "info", "replication"))
        redis.kill_node(replica)
        await asyncio.to_thread(redis.start_node, replica)
        await asyncio.to_thread(redis.wait_healthy, WITHIN_SECONDS)
        assert redis.node_ids() == ids_before
        await sender.send(1)  # after one node restarted

        # The whole set down, then new containers (new addresses: created in reverse order,
        # each takes another's old address) on the same volumes, as pods rescheduled.
        addresses = {pod: containers.address(pod) for pod in ids_before}
        for pod in ids_before:
            redis.kill_node(pod)
        for pod in reversed(list(ids_before)):
            await asyncio.to_thread(containers.recreate, pod)
        moved = {pod for pod in ids_before if containers.address(pod) != addresses[pod]}
        assert moved, "every node came back on its old address: the refresh is not exercised"
        await asyncio.to_thread(redis.wait_healthy, WITHIN_SECONDS)
        # The same nodes (each kept its id in nodes.conf), each knowing the others' new names.
        assert redis.node_ids() == ids_before
        for pod in ids_before:
            info = redis.cli(pod, "cluster", "info")
            assert "cluster_state:ok" in info
            assert "cluster_known_nodes:6" in info

        await sender.send(2)  # after the whole set restarted
        # Nothing acknowledged before was lost (AOF on the volumes), nothing twice.
        assert await history(http, token, course_id) == sender.acknowledged
    await asyncio.to_thread(containers.heal)


async def test_the_operator_image_reconciles_a_policy_from_the_kubernetes_api(
    gateway: Gateway, containers: ContainerTopology
) -> None:
    course_id = f"containers-{uuid.uuid4().hex[:8]}"
    token = gateway.token("ada", [course_id])
    async with GraphqlHttp(gateway.graphql_url) as http:
        before = await http.execute(COURSE_POLICY, {"c": course_id}, token=token)
        assert before.data is not None, before.describe()
        assert before.data["coursePolicy"]["maxLength"] == 4000
        # Ready: the operator's container read it from the API and wrote the course's policy.
        await gateway.apply_policy(course_id, maxMessageLength=10, readOnly=False)
        after = await http.execute(COURSE_POLICY, {"c": course_id}, token=token)
        assert after.data is not None, after.describe()
        assert after.data["coursePolicy"]["maxLength"] == 10
        too_long = await http.execute(
            SEND_MESSAGE, {"courseId": course_id, "content": "eleven char"}, token=token
        )
        assert too_long.codes == {"BAD_USER_INPUT"}, too_long.describe()
    (operator,) = containers.by_component("operator")
    assert containers.probe(operator), "the operator's liveness endpoint does not answer"
