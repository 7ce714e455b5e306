"""The whole local topology as one object: `chatctl up` and the e2e fixtures both use it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from chatctl.localstack import (
    ManagedProcess,
    RedisCluster,
    free_ports,
    python_module,
    service_env,
    stop_all,
)

# The local stack's HS256 key. Dev only: the chart takes the real key from a Secret.
DEV_JWT_SECRET = "nextcampus-local-development-secret-do-not-deploy"

DEFAULT_REDIS_PORTS = [7000, 7001, 7002, 7003, 7004, 7005]
DEFAULT_CHAT_PORTS = [50051, 50052]
DEFAULT_CHAT_METRICS_PORTS = [9101, 9102]
DEFAULT_GRAPHQL_PORTS = [8081, 8082]


@dataclass
class Topology:
    root: Path
    redis_ports: list[int] = field(default_factory=lambda: list(DEFAULT_REDIS_PORTS))
    chat_ports: list[int] = field(default_factory=lambda: list(DEFAULT_CHAT_PORTS))
    chat_metrics_ports: list[int] = field(default_factory=lambda: list(DEFAULT_CHAT_METRICS_PORTS))
    graphql_ports: list[int] = field(default_factory=lambda: list(DEFAULT_GRAPHQL_PORTS))
    persist: bool = False
    jwt_secret: str = DEV_JWT_SECRET
    log_format: str = "console"
    # Extra chat settings (field name → value), e.g. a rate limit off for load tests.
    chat_overrides: dict[str, object] = field(default_factory=dict)
    graphql_overrides: dict[str, object] = field(default_factory=dict)
    redis: RedisCluster | None = None
    chats: list[ManagedProcess] = field(default_factory=list)
    graphqls: list[ManagedProcess] = field(default_factory=list)

    @classmethod
    def on_free_ports(
        cls,
        root: Path,
        chat_count: int = 2,
        graphql_count: int = 2,
        *,
        persist: bool = False,
        chat_overrides: dict[str, object] | None = None,
        graphql_overrides: dict[str, object] | None = None,
    ) -> Topology:
        """A topology beside anything else running (tests next to `make up`)."""
        ports = free_ports(2 * chat_count + graphql_count)
        return cls(
            root=root,
            persist=persist,
            chat_overrides=chat_overrides or {},
            graphql_overrides=graphql_overrides or {},
            redis_ports=free_ports(6, with_bus=True),
            chat_ports=ports[:chat_count],
            chat_metrics_ports=ports[chat_count : 2 * chat_count],
            graphql_ports=ports[2 * chat_count :],
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

    def graphql_env(self, http_port: int) -> dict[str, str]:
        return service_env(
            {
                # Round-robin over every chat process, as the headless service does in k8s.
                "chat_target": "ipv4:" + ",".join(self.chat_targets),
                "jwt_secret": self.jwt_secret,
                "http_host": "127.0.0.1",
                "http_port": http_port,
                "metrics_port": 0,  # /metrics is served on the HTTP port too
                "log_format": self.log_format,
                **self.graphql_overrides,
            }
        )

    def new_graphql_process(self, index: int) -> ManagedProcess:
        return ManagedProcess(
            name=f"graphql-{index}",
            argv=python_module("nextcampus_graphql"),
            env=self.graphql_env(self.graphql_ports[index]),
            log_path=self.root / "logs" / f"graphql-{index}.log",
        )

    def new_chat_process(self, index: int) -> ManagedProcess:
        return ManagedProcess(
            name=f"chat-{index}",
            argv=python_module("nextcampus_chat"),
            env=self.chat_env(self.chat_ports[index], self.chat_metrics_ports[index]),
            log_path=self.root / "logs" / f"chat-{index}.log",
        )

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.redis = RedisCluster(self.redis_ports, self.root / "redis", persist=self.persist)
        try:
            self.redis.start()
            self.chats = [self.new_chat_process(i) for i in range(len(self.chat_ports))]
            self.graphqls = [self.new_graphql_process(i) for i in range(len(self.graphql_ports))]
            for process in self.processes:
                process.start()
            for process in self.processes:
                process.wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def processes(self) -> list[ManagedProcess]:
        return [*self.chats, *self.graphqls]

    def restart_chat(self, index: int) -> ManagedProcess:
        self.chats[index].stop()
        self.chats[index] = self.new_chat_process(index)
        self.chats[index].start()
        self.chats[index].wait_ready()
        return self.chats[index]

    def stop(self) -> None:
        # Front to back: sockets close before their upstreams do.
        stop_all(self.graphqls)
        stop_all(self.chats)
        if self.redis is not None:
            self.redis.stop()
