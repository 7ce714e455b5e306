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


@dataclass
class Topology:
    root: Path
    redis_ports: list[int] = field(default_factory=lambda: list(DEFAULT_REDIS_PORTS))
    chat_ports: list[int] = field(default_factory=lambda: list(DEFAULT_CHAT_PORTS))
    chat_metrics_ports: list[int] = field(default_factory=lambda: list(DEFAULT_CHAT_METRICS_PORTS))
    persist: bool = False
    jwt_secret: str = DEV_JWT_SECRET
    log_format: str = "console"
    # Extra chat settings (field name → value), e.g. a rate limit off for load tests.
    chat_overrides: dict[str, object] = field(default_factory=dict)
    redis: RedisCluster | None = None
    chats: list[ManagedProcess] = field(default_factory=list)

    @classmethod
    def on_free_ports(
        cls,
        root: Path,
        chat_count: int = 2,
        *,
        persist: bool = False,
        chat_overrides: dict[str, object] | None = None,
    ) -> Topology:
        """A topology beside anything else running (tests next to `make up`)."""
        return cls(
            root=root,
            persist=persist,
            chat_overrides=chat_overrides or {},
            redis_ports=free_ports(6, with_bus=True),
            chat_ports=free_ports(chat_count, start=30_000),
            chat_metrics_ports=free_ports(chat_count, start=31_000),
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
            for process in self.chats:
                process.start()
            for process in self.chats:
                process.wait_ready()
        except BaseException:
            self.stop()
            raise

    def restart_chat(self, index: int) -> ManagedProcess:
        self.chats[index].stop()
        self.chats[index] = self.new_chat_process(index)
        self.chats[index].start()
        self.chats[index].wait_ready()
        return self.chats[index]

    def stop(self) -> None:
        stop_all(self.chats)
        if self.redis is not None:
            self.redis.stop()
