"""A Redis Cluster of real `redis-server` processes on loopback: formed, healed, inspected,
and parts of it killed or paused, as `make up` and the failover tests need."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from devstack.processes import (
    StackError,
    start_process,
    stop_process,
    wait_for_port,
)


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise StackError("redis-server is not installed (Debian: apt-get install redis-server)")
    return path


def redis_cli(port: int, *args: str, timeout: float = 10) -> str:
    """The reply of `redis-cli -p <port> <args>` on loopback."""
    result = subprocess.run(
        ["redis-cli", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"redis-cli {' '.join(args)}: {result.stderr or result.stdout}")
    return result.stdout


# A primary that its peers think is down (`fail?`: one of them, `fail`: a majority) or whose
# address is unknown serves nothing.
NOT_SERVING = frozenset({"fail", "fail?", "noaddr"})


@dataclass(frozen=True)
class ClusterNode:
    """One node as a line of CLUSTER NODES describes it."""

    id: str
    primary_id: str  # of a replica's primary; "-" for a primary
    port: int
    hostname: str  # announced (cluster-announce-hostname), else ""
    flags: frozenset[str]
    # Inclusive ranges of the slots it serves (slots being imported or migrated left out).
    slots: tuple[tuple[int, int], ...]

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    @property
    def is_live_primary(self) -> bool:
        """A primary serving slots that its peers do not think is down. (Just after a
        cluster forms, a node made a replica can still show to others as a primary without
        slots: it holds nothing.)"""
        return self.is_primary and bool(self.slots) and not self.flags & NOT_SERVING

    def serves(self, slot: int) -> bool:
        return any(low <= slot <= high for low, high in self.slots)


def parse_cluster_nodes(text: str) -> list[ClusterNode]:
    """CLUSTER NODES' reply: `<id> <ip:port@bus[,hostname]> <flags> <primary> <ping> <pong>
    <epoch> <link> <slot or range>…` per line."""
    nodes = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        endpoint, _, hostname = parts[1].partition(",")
        address = endpoint.split("@", 1)[0]
        slots = []
        for span in parts[8:]:
            low, _, high = span.partition("-")
            if low.isdigit() and (high or low).isdigit():  # not `[slot->-id]` (migrating)
                slots.append((int(low), int(high or low)))
        nodes.append(
            ClusterNode(
                id=parts[0],
                primary_id=parts[3],
                port=int(address.rpartition(":")[2] or 0),
                hostname=hostname,
                flags=frozenset(parts[2].split(",")),
                slots=tuple(slots),
            )
        )
    return nodes


def cluster_nodes(port: int) -> list[ClusterNode]:
    """The cluster as the node on `port` sees it."""
    return parse_cluster_nodes(redis_cli(port, "cluster", "nodes"))


def live_primaries(port: int) -> list[int]:
    """Ports of the live primaries of the cluster the node on `port` belongs to."""
    primaries = sorted(node.port for node in cluster_nodes(port) if node.is_live_primary)
    if not primaries:
        raise StackError(f"no live primary in the cluster of 127.0.0.1:{port}")
    return primaries


def form_cluster(
    nodes: list[str], *, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`redis-cli --cluster create` of `nodes` (host:port) with one replica per primary, as
    the local stack and the chart's setup Job form theirs (`env`: e.g. REDISCLI_AUTH)."""
    return subprocess.run(
        ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


N = TypeVar("N")


class ClusterOperations(ABC, Generic[N]):
    """What the tests and the stacks do with a Redis Cluster, whatever runs its nodes: each
    node is a member (a port of a local process, a container's pod name), reached with
    redis-cli."""

    min_replicas_to_write: int

    @property
    @abstractmethod
    def members(self) -> list[N]: ...

    @abstractmethod
    def cli(self, node: N, *args: str, timeout: float = 10) -> str: ...

    @abstractmethod
    def live_nodes(self) -> list[N]: ...

    @abstractmethod
    def member_of(self, node: ClusterNode) -> N:
        """The member a line of CLUSTER NODES describes."""

    @abstractmethod
    def start_node(self, node: N) -> None: ...

    @abstractmethod
    def kill_node(self, node: N) -> None:
        """The node's process killed (SIGKILL), as a crash would."""

    @abstractmethod
    def dead_nodes(self) -> list[N]: ...

    def formed(self) -> bool:
        return all("cluster_state:ok" in self.cli(n, "cluster", "info") for n in self.live_nodes())

    def known_nodes(self, node: N) -> int:
        for line in self.cli(node, "cluster", "info").splitlines():
            name, _, value = line.strip().partition(":")
            if name == "cluster_known_nodes":
                return int(value)
        raise StackError(f"no cluster_known_nodes in CLUSTER INFO of {node}")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every live node says the cluster is ok and every primary has its replica."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(StackError, subprocess.TimeoutExpired):
                if self.formed() and self._replicas_synced():
                    return
            time.sleep(0.1)
        raise StackError(f"Redis Cluster of {self.members} not healthy after {timeout:.0f} s")

    def _replicas_synced(self) -> bool:
        """The cluster has its shape: one replica per primary (half the nodes are replicas:
        `--cluster create` makes them a moment after the slots are agreed), every replica
        streams from its primary, and every primary counts enough of them in sync to take
        writes (min-replicas-to-write counts a replica only once the primary has its first
        acknowledgement, a moment after the replica says it is up)."""
        replicas = 0
        for node in self.live_nodes():
            info = self.cli(node, "info", "replication")
            if "role:slave" in info:
                if "master_link_status:up" not in info:
                    return False
                replicas += 1
                continue
            good = re.search(r"min_slaves_good_slaves:(\d+)", info)
            if "connected_slaves:0" in info or (
                good is not None and int(good.group(1)) < self.min_replicas_to_write
            ):
                return False
        return replicas == len(self.members) // 2

    def cluster_nodes(self, node: N) -> list[ClusterNode]:
        """The cluster as `node` sees it."""
        return parse_cluster_nodes(self.cli(node, "cluster", "nodes"))

    def primary_for(self, key: str) -> N:
        """The primary owning `key`'s slot, as the first live node sees the cluster."""
        asked = self.live_nodes()[0]
        slot = int(self.cli(asked, "cluster", "keyslot", key).strip())
        for node in self.cluster_nodes(asked):
            if node.is_live_primary and node.serves(slot):
                return self.member_of(node)
        raise StackError(f"no primary owns the slot of {key!r}")

    def replicas_of(self, member: N) -> list[N]:
        """The replicas the cluster assigns to the primary `member` (alive or not)."""
        nodes = self.cluster_nodes(self.live_nodes()[0])
        (primary,) = [node for node in nodes if self.member_of(node) == member]
        return [self.member_of(node) for node in nodes if node.primary_id == primary.id]

    def owns_slots(self, member: N) -> bool:
        """Whether the other live nodes still list `member` as a primary with slots."""
        live = [n for n in self.live_nodes() if n != member]
        for node in self.cluster_nodes(live[0]):
            if self.member_of(node) == member:
                return node.is_primary and bool(node.slots)
        return False

    def node_serving(self, node: N) -> bool:
        """`node` is back in the cluster: it answers, sees the cluster ok and, as
        a replica, is in sync with its primary (a look, no wait)."""
        try:
            if "cluster_state:ok" not in self.cli(node, "cluster", "info", timeout=2):
                return False
            replication = self.cli(node, "info", "replication", timeout=2)
        except (StackError, subprocess.TimeoutExpired):
            return False
        return "role:slave" not in replication or "master_link_status:up" in replication

    def restart_replaced_node(self, node: N, timeout: float = 30.0) -> None:
        """Start a killed node once its replica has taken its slots: started earlier, an empty
        node (no AOF) would come back as the primary and its replica would copy nothing."""
        deadline = time.monotonic() + timeout
        while self.owns_slots(node):
            if time.monotonic() > deadline:
                raise StackError(f"no replica took over the slots of Redis node {node}")
            time.sleep(0.1)
        self.start_node(node)


@dataclass
class RedisCluster(ClusterOperations[int]):
    """Six (or more) real `redis-server` processes formed into a cluster with one replica
    per primary, on loopback."""

    ports: list[int]
    root: Path
    persist: bool = False
    node_timeout_ms: int = 2000
    # As the chart's nodes run (redis.durability): a primary with no replica in sync refuses
    # writes before making them.
    min_replicas_to_write: int = 1
    min_replicas_max_lag_seconds: int = 5
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def nodes(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.ports]

    @property
    def nodes_csv(self) -> str:
        return ",".join(self.nodes)

    def _argv(self, port: int) -> list[str]:
        directory = self.root / str(port)
        directory.mkdir(parents=True, exist_ok=True)
        return [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(directory),
            "--logfile",
            str(self.log_path(port)),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            f"nodes-{port}.conf",
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
            # One shard failing over must not stop the others.
            "--cluster-require-full-coverage",
            "no",
            "--repl-diskless-sync",
            "yes",
            "--repl-diskless-sync-delay",
            "0",
            "--appendonly",
            "yes" if self.persist else "no",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--min-replicas-to-write",
            str(self.min_replicas_to_write),
            "--min-replicas-max-lag",
            str(self.min_replicas_max_lag_seconds),
        ]

    def launch_node(self, port: int) -> None:
        """Start the node of `port` without waiting for it."""
        self.processes[port] = start_process(
            self._argv(port),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def start_node(self, port: int) -> None:
        self.launch_node(port)
        wait_for_port(port, 10, self.processes[port])

    def log_path(self, port: int) -> Path:
        return self.root / str(port) / "redis.log"

    @property
    def members(self) -> list[int]:
        return self.ports

    def cli(self, node: int, *args: str, timeout: float = 10) -> str:
        return redis_cli(node, *args, timeout=timeout)

    def live_nodes(self) -> list[int]:
        return [p for p in self.ports if p in self.processes and self.processes[p].poll() is None]

    def member_of(self, node: ClusterNode) -> int:
        return node.port

    def start(self, timeout: float = 30.0) -> None:
        # Redis writes its nodes file as soon as it starts: look before starting, so that only
        # a cluster formed in an earlier run (--persist) is reused.
        formed_before = self.persist and all(
            (self.root / str(port) / f"nodes-{port}.conf").exists() for port in self.ports
        )
        if not self.persist:
            # A fresh cluster: a node that loads an earlier run's nodes file refuses to join.
            for port in self.ports:
                (self.root / str(port) / f"nodes-{port}.conf").unlink(missing_ok=True)
        for port in self.ports:
            self.start_node(port)
        if not formed_before or self.known_nodes(self.ports[0]) < len(self.ports):
            created = form_cluster(self.nodes)
            if created.returncode != 0:
                raise StackError(f"redis-cli --cluster create: {created.stdout}{created.stderr}")
        self.wait_healthy(timeout)

    def dead_nodes(self) -> list[int]:
        return [port for port, process in self.processes.items() if process.poll() is not None]

    def kill_node(self, port: int) -> None:
        """kill -9 one node, as a crash would."""
        process = self.processes[port]
        process.kill()
        process.wait(5)

    def replica_ports_of(self, port: int) -> list[int]:
        """The replicas attached to the primary on `port`, as it reports them."""
        ports = []
        for line in self.cli(port, "info", "replication").splitlines():
            name, _, fields = line.strip().partition(":")
            if name.startswith("slave") and name[5:].isdigit():
                values = dict(field.split("=", 1) for field in fields.split(","))
                ports.append(int(values["port"]))
        return ports

    def pause_node(self, port: int) -> None:
        """SIGSTOP one node: it keeps its connections but answers nothing (a hung node, or a
        network that stopped carrying its packets)."""
        self.processes[port].send_signal(signal.SIGSTOP)

    def resume_node(self, port: int) -> None:
        process = self.processes.get(port)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        for process in self.processes.values():
            stop_process(process, 10)
        self.processes.clear()
