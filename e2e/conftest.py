"""The e2e suite talks to a gateway URL only, so the same tests run against any topology.

- `NEXTCAMPUS_E2E_GATEWAY_URL` set (e.g. a kind cluster's gateway): tests use it, with tokens
  signed by `NEXTCAMPUS_E2E_JWT_SECRET`; tests that kill processes are skipped there.
- `NEXTCAMPUS_E2E_TOPOLOGY=containers` (`make e2e-containers`): the images built here, run
  as the chart runs them (devstack.containers) on one podman network, the operator against an
  emulated Kubernetes API; the chaos tests kill containers instead of processes.
- neither: the fixture brings up the whole local topology (Redis Cluster, 2 chat, 2 GraphQL,
  Envoy) on free ports, so the suite runs beside `make up`, and stops it afterwards.

Fixtures from the project's pytest plugin (`tools/testing/src/testing/plugin.py`, loaded
through its entry point): `course_id`, `kube`; the gateway and the stack are below.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devstack.containers import CONTAINERS_TAG, ContainerTopology
from devstack.images import SERVICE_IMAGES, STAND_IN_NAMES, build_all, find_engine
from devstack.policies import PolicyDocument
from devstack.policies import run as apply_policies
from devstack.topology import DEV_JWT_SECRET, Topology
from nextcampus_common.auth import issue_token
from nextcampus_policy.crd import problems
from nextcampus_policy.spec import API_VERSION, KIND
from testing.plugin import POLICY_RESOURCE, ApiInThread, kubeconfig_for

GATEWAY_URL_ENV = "NEXTCAMPUS_E2E_GATEWAY_URL"
JWT_SECRET_ENV = "NEXTCAMPUS_E2E_JWT_SECRET"  # noqa: S105 - the name of an env var
TOPOLOGY_ENV = "NEXTCAMPUS_E2E_TOPOLOGY"
# The namespace the chart's operator governs every course from (operator.governedCourses).
POLICY_NAMESPACE = "default"
POLICY_READY_WITHIN_SECONDS = 60.0


@dataclass
class Gateway:
    """Where the system under test is reached, and how to get tokens it accepts."""

    url: str  # http://host:port, no trailing slash: the page is at url + "/"
    jwt_secret: str
    topology: Topology | None = None  # the local processes; None: another topology
    containers: ContainerTopology | None = None  # the images as containers
    kube: ApiInThread | None = None  # the operator's emulated Kubernetes API (containers)

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    @property
    def ws_url(self) -> str:
        return "ws" + self.graphql_url.removeprefix("http")

    def token(
        self,
        user: str,
        courses: Iterable[str],
        moderates: Iterable[str] = (),
        *,
        ttl_seconds: int = 3600,
    ) -> str:
        return issue_token(self.jwt_secret, user, courses, moderates, ttl_seconds=ttl_seconds)

    def local(self) -> Topology:
        """The local topology, for tests that need its processes, ports and files."""
        if self.topology is None:
            pytest.skip("needs the local processes; the suite runs against another topology")
        return self.topology

    async def apply_policy(self, course_id: str, **spec: Any) -> None:
        """A CourseChatPolicy for the course, checked against the CRD and applied as the
        topology applies them: by the operator's container from the (emulated) Kubernetes
        API, or on the local stack through the operator's reconcile code, as `chatctl policy
        apply` does. Returns once the policy is Ready."""
        name = f"policy-{course_id}"
        body = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name, "namespace": POLICY_NAMESPACE},
            "spec": {"courseId": course_id, **spec},
        }
        assert problems(body) == []
        if self.kube is None:
            topology = self.local()
            assert topology.redis is not None
            policy = PolicyDocument("e2e", body)
            (outcome,) = await apply_policies([policy], topology.redis.nodes, delete=False)
            assert outcome.ready, outcome
            return
        kube = self.kube
        path = f"/apis/{API_VERSION}/namespaces/{POLICY_NAMESPACE}/coursechatpolicies"
        key = (POLICY_RESOURCE, POLICY_NAMESPACE, name)

        def stored() -> dict[str, Any] | None:
            try:
                found: dict[str, Any] = kube.api.objects[key]
            except KeyError:
                return None
            return found

        before = stored()
        if before is None:
            kube.call(kube.api.post(path, json=body))
        else:
            # Applied again (a changed spec): a merge patch of the spec, as kubectl apply
            # sends (fields left out are removed); the operator's status for the new
            # generation says when it is in force.
            spec_patch = {k: None for k in before["spec"] if k not in body["spec"]}
            kube.call(
                kube.api.patch(
                    f"{path}/{name}",
                    json={"spec": {**spec_patch, **body["spec"]}},
                    headers={"Content-Type": "application/merge-patch+json"},
                )
            )
        now = stored()
        assert now is not None
        generation = now["metadata"].get("generation", 1)

        def ready() -> bool:
            found = stored()
            if found is None:
                return False
            status = found.get("status") or {}
            conditions = status.get("conditions") or []
            return status.get("observedGeneration") == generation and any(
                c["type"] == "Ready" and c["status"] == "True" for c in conditions
            )

        async with asyncio.timeout(POLICY_READY_WITHIN_SECONDS):
            # Polls what the operator's container writes into the emulated API: no event.
            while not ready():  # noqa: ASYNC110
                await asyncio.sleep(0.2)

    def faults(self) -> Topology | ContainerTopology:
        """A topology whose parts a chaos test can kill and restart: the local processes or
        the containers (both have chats, graphqls, gateway, redis, restart_*, heal)."""
        if self.containers is not None:
            return self.containers
        return self.local()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    external = os.environ.get(GATEWAY_URL_ENV)
    if external:
        yield Gateway(external.rstrip("/"), os.environ.get(JWT_SECRET_ENV, DEV_JWT_SECRET))
        return
    root: Path = tmp_path_factory.mktemp("e2e-stack")
    if os.environ.get(TOPOLOGY_ENV) == "containers":
        yield from container_gateway(root)
        return
    topology = Topology.on_free_ports(root)
    topology.start()
    try:
        yield Gateway(topology.gateway_url, topology.jwt_secret, topology)
    finally:
        topology.stop()


def container_gateway(root: Path) -> Iterator[Gateway]:
    """The images (built now if the engine's cache lacks them) as the chart runs them."""
    engine = find_engine(root / "engine")
    names = [image.name for image in SERVICE_IMAGES] + list(STAND_IN_NAMES)
    build_all(engine, names, tag=CONTAINERS_TAG, say=lambda line: print(line, flush=True))
    apis: list[ApiInThread] = []

    def operator_api(host: str) -> str:
        apis.append(ApiInThread(host))
        return kubeconfig_for(str(apis[0].api.url))

    stack = ContainerTopology(
        engine, root / "containers", tag=CONTAINERS_TAG, operator_api=operator_api
    )
    try:
        stack.start()
        yield Gateway(stack.gateway_url, stack.jwt_secret, containers=stack, kube=apis[0])
    finally:
        stack.stop()
        for api in apis:
            api.close()


@pytest.fixture
def stack(gateway: Gateway) -> Iterator[Topology | ContainerTopology]:
    """A topology for a test that kills its parts: made whole again after the test,
    whatever it killed, so later tests see a whole stack."""
    topology = gateway.faults()
    yield topology
    topology.heal()


# The gateway's answers a failed test may have met: its 5xx lines (the access log's flags say
# why: UH no healthy upstream, UF connect failure, UR reset, UO overflow) and its last lines.
GATEWAY_LOG_LINES = 400
GATEWAY_TAIL_LINES = 30
SERVER_ERROR = re.compile(r'"status": ?"?5\d\d')


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    gateway = getattr(item, "funcargs", {}).get("gateway")
    if report.failed and isinstance(gateway, Gateway):
        topology = gateway.containers or gateway.topology
        if topology is not None and topology.gateway is not None:
            lines = topology.gateway.tail(GATEWAY_LOG_LINES).splitlines()
            errors = [line for line in lines if SERVER_ERROR.search(line)]
            tail = lines[-GATEWAY_TAIL_LINES:]
            report.sections.append(("gateway log", "\n".join([*errors, "…", *tail])))
    return report
