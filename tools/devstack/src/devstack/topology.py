"""The whole local topology as one object: `chatctl up` and the e2e fixtures both use it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.gateway import LocalGatewayConfig
from devstack.processes import (
    ManagedProcess,
    free_ports,
    python_module,
    raise_open_files_limit,
    service_env,
    stop_all,
)
from devstack.redis_cluster import RedisCluster

# The local stack's HS256 key. Dev only: the chart takes the real key from a Secret.
DEV_JWT_SECRET = "nextcampus-local-development-secret-do-not-deploy"

DEFAULT_REDIS_PORTS = [7000, 7001, 7002, 7003, 7004, 7005]
DEFAULT_CHAT_PORTS = [50051, 50052]
DEFAULT_CHAT_METRICS_PORTS = [9101, 9102]
DEFAULT_GRAPHQL_PORTS = [8081, 8082]
DEFAULT_GRAPHQL_METRICS_PORTS = [9103, 9104]
DEFAULT_GATEWAY_PORT = 8080
DEFAULT_GATEWAY_ADMIN_PORT = 9901


@dataclass
class Topology:
    root: Path
    redis_ports: list[int] = field(default_factory=lambda: list(DEFAULT_REDIS_PORTS))
    chat_ports: list[int] = field(default_factory=lambda: list(DEFAULT_CHAT_PORTS))
    chat_metrics_ports: list[int] = field(default_factory=lambda: list(DEFAULT_CHAT_METRICS_PORTS))
    graphql_ports: list[int] = field(default_factory=lambda: list(DEFAULT_GRAPHQL_PORTS))
    graphql_metrics_ports: list[int] = field(
        default_factory=lambda: list(DEFAULT_GRAPHQL_METRICS_PORTS)
    )
    # 0: no gateway (benchmarks of the services alone).
    gateway_port: int = DEFAULT_GATEWAY_PORT
    gateway_admin_port: int = DEFAULT_GATEWAY_ADMIN_PORT
    persist: bool = False
    jwt_secret: str = DEV_JWT_SECRET
    log_format: str = "console"
    # Extra chat settings (field name → value), e.g. a rate limit off for load tests.
    chat_overrides: dict[str, object] = field(default_factory=dict)
    graphql_overrides: dict[str, object] = field(default_factory=dict)
    # LocalGatewayConfig fields, e.g. a rate limit a load test cannot reach.
    gateway_overrides: dict[str, Any] = field(default_factory=dict)
    redis: RedisCluster | None = None
    chats: list[ManagedProcess] = field(default_factory=list)
    graphqls: list[ManagedProcess] = field(default_factory=list)
    gateway: ManagedProcess | None = None

    @classmethod
    def on_free_ports(
        cls,
        root: Path,
        chat_count: int = 2,
        graphql_count: int = 2,
        *,
        gateway: bool = True,
        persist: bool = False,
        chat_overrides: dict[str, object] | None = None,
        graphql_overrides: dict[str, object] | None = None,
        gateway_overrides: dict[str, Any] | None = None,
    ) -> Topology:
        """A topology beside anything else running (tests next to `make up`)."""
        ports = free_ports(2 * chat_count + 2 * graphql_count + 2)
        gateway_ports = ports[-2:] if gateway else [0, 0]
        return cls(
            root=root,
            persist=persist,
            chat_overrides=chat_overrides or {},
            graphql_overrides=graphql_overrides or {},
            gateway_overrides=gateway_overrides or {},
            redis_ports=free_ports(6, with_bus=True),
            chat_ports=ports[:chat_count],
            chat_metrics_ports=ports[chat_count : 2 * chat_count],
            graphql_ports=ports[2 * chat_count : 2 * chat_count + graphql_count],
            graphql_metrics_ports=ports[
                2 * chat_count + graphql_count : 2 * (chat_count + graphql_count)
            ],
            gateway_port=gateway_ports[0],
            gateway_admin_port=gateway_ports[1],
        )

    @property
    def chat_targets(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.chat_ports]

    def chat_env(self, grpc_port: int, metrics_port: int) -> dict[str, str]:
        assert self.redis is not None
        return service_env(
            {
                "redis_nodes": self.redis.nodes,
                "jwt_secret": self.jwt_secret,
                "grpc_host": "127.0.0.1",
                "grpc_port": grpc_port,
                "metrics_host": "127.0.0.1",
                "metrics_port": metrics_port,
                "log_format": self.log_format,
                **self.chat_overrides,
            }
        )

    @property
    def graphql_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}/graphql" for p in self.graphql_ports]

    @property
    def chat_metrics_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}/metrics" for port in self.chat_metrics_ports]

    @property
    def graphql_metrics_urls(self) -> list[str]:
        """Each GraphQL process's /metrics (its own port: the API port does not serve it)."""
        return [f"http://127.0.0.1:{p}/metrics" for p in self.graphql_metrics_ports]

    def graphql_env(self, http_port: int, metrics_port: int) -> dict[str, str]:
        return service_env(
            {
                # Round-robin over every chat process, as the headless service does in k8s.
                "chat_target": "ipv4:" + ",".join(self.chat_targets),
                "jwt_secret": self.jwt_secret,
                "http_host": "127.0.0.1",
                "http_port": http_port,
                "metrics_host": "127.0.0.1",
                "metrics_port": metrics_port,
                "log_format": self.log_format,
                **self.graphql_overrides,
            }
        )

    def new_graphql_process(self, index: int) -> ManagedProcess:
        return ManagedProcess(
            name=f"graphql-{index}",
            argv=python_module("nextcampus_graphql"),
            env=self.graphql_env(self.graphql_ports[index], self.graphql_metrics_ports[index]),
            log_path=self.root / "logs" / f"graphql-{index}.log",
        )

    @property
    def gateway_url(self) -> str:
        """Base URL of the gateway: the web page at /, GraphQL at /graphql."""
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def gateway_config(self) -> LocalGatewayConfig:
        return LocalGatewayConfig(
            listen_port=self.gateway_port,
            admin_port=self.gateway_admin_port,
            graphql_ports=self.graphql_ports,
            chat_ports=self.chat_ports,
            jwt_secret=self.jwt_secret,
            **self.gateway_overrides,
        )

    def new_gateway_process(self) -> ManagedProcess:
        return self.gateway_config.process(self.root / "envoy", self.root / "logs" / "envoy.log")

    def new_chat_process(self, index: int) -> ManagedProcess:
        return ManagedProcess(
            name=f"chat-{index}",
            argv=python_module("nextcampus_chat"),
            env=self.chat_env(self.chat_ports[index], self.chat_metrics_ports[index]),
            log_path=self.root / "logs" / f"chat-{index}.log",
        )

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        raise_open_files_limit()  # inherited by every process started below
        self.redis = RedisCluster(self.redis_ports, self.root / "redis", persist=self.persist)
        try:
            self.redis.start()
            self.chats = [self.new_chat_process(i) for i in range(len(self.chat_ports))]
            self.graphqls = [self.new_graphql_process(i) for i in range(len(self.graphql_ports))]
            for process in self.processes:
                process.start()
            for process in self.processes:
                process.wait_ready()
            if self.gateway_port:
                # After the services: it is ready once their health checks pass.
                self.gateway = self.new_gateway_process()
                self.gateway.start()
                self.gateway.wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def processes(self) -> list[ManagedProcess]:
        """The service processes (the gateway is `self.gateway`)."""
        return [*self.chats, *self.graphqls]

    @property
    def all_processes(self) -> list[ManagedProcess]:
        return [*self.processes, *([self.gateway] if self.gateway else [])]

    def restart_chat(self, index: int) -> ManagedProcess:
        """Stop chat process `index` (a no-op if it was killed) and start a new one."""
        return self._restart(self.chats, index, self.new_chat_process)

    def restart_graphql(self, index: int) -> ManagedProcess:
        """Stop GraphQL process `index` gracefully (sockets closed with 1012; a no-op if it was
        killed) and start a new one on the same port."""
        return self._restart(self.graphqls, index, self.new_graphql_process)

    @staticmethod
    def _restart(
        processes: list[ManagedProcess], index: int, new: Callable[[int], ManagedProcess]
    ) -> ManagedProcess:
        processes[index].stop()
        processes[index] = new(index)
        processes[index].start()
        processes[index].wait_ready()
        return processes[index]

    def heal(self) -> None:
        """Restart whatever died (Redis nodes once replaced, chat, GraphQL) and wait until the
        cluster and the gateway's upstreams are healthy: after a chaos test, a whole stack."""
        assert self.redis is not None
        for port in self.redis.dead_nodes():
            self.redis.restart_replaced_node(port)
        self.redis.wait_healthy()
        for index, chat in enumerate(self.chats):
            if not chat.alive():
                self.restart_chat(index)
        for index, graphql in enumerate(self.graphqls):
            if not graphql.alive():
                self.restart_graphql(index)
        if self.gateway is not None:
            self.gateway.wait_ready()  # Envoy sees every upstream healthy again

    def stop(self) -> None:
        # Front to back: sockets close before their upstreams do.
        if self.gateway is not None:
            self.gateway.stop()
        stop_all(self.graphqls)
        stop_all(self.chats)
        if self.redis is not None:
            self.redis.stop()
