"""The e2e suite talks to a gateway URL only, so the same tests run against any topology.

- `NEXTCAMPUS_E2E_GATEWAY_URL` set (e.g. a kind cluster's gateway): tests use it, with tokens
  signed by `NEXTCAMPUS_E2E_JWT_SECRET`; tests that kill processes are skipped there.
- unset: the fixture brings up the whole local topology (Redis Cluster, 2 chat, 2 GraphQL,
  Envoy) on free ports, so the suite runs beside `make up`, and stops it afterwards.

Fixtures from the project's pytest plugin (`tools/testing/src/testing/plugin.py`, loaded
through its entry point): `course_id`, `kube`; the gateway and the stack are below.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack.topology import DEV_JWT_SECRET, Topology
from nextcampus_common.auth import issue_token

GATEWAY_URL_ENV = "NEXTCAMPUS_E2E_GATEWAY_URL"
JWT_SECRET_ENV = "NEXTCAMPUS_E2E_JWT_SECRET"  # noqa: S105 - the name of an env var


@dataclass
class Gateway:
    """Where the system under test is reached, and how to get tokens it accepts."""

    url: str  # http://host:port, no trailing slash: the page is at url + "/"
    jwt_secret: str
    topology: Topology | None = None  # None: an external gateway we cannot kill parts of

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
        """The local topology, for tests that kill or restart its processes."""
        if self.topology is None:
            pytest.skip(f"kills local processes; {GATEWAY_URL_ENV} points at another topology")
        return self.topology


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    external = os.environ.get(GATEWAY_URL_ENV)
    if external:
        yield Gateway(external.rstrip("/"), os.environ.get(JWT_SECRET_ENV, DEV_JWT_SECRET))
        return
    root: Path = tmp_path_factory.mktemp("e2e-stack")
    topology = Topology.on_free_ports(root)
    topology.start()
    try:
        yield Gateway(topology.gateway_url, topology.jwt_secret, topology)
    finally:
        topology.stop()


@pytest.fixture
def stack(gateway: Gateway) -> Iterator[Topology]:
    """The local topology, for a test that kills its processes: made whole again after the
    test, whatever it killed, so later tests see a whole stack."""
    topology = gateway.local()
    yield topology
    topology.heal()
