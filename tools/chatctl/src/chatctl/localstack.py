"""Local processes of the topology: a Redis Cluster of real `redis-server`s and service
processes. Used by `chatctl up` and by the test fixtures (one copy of the process handling).

Every process is started in its own session and stopped by its PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLUSTER_BUS_OFFSET = 10_000


def dies_with_parent(argv: list[str]) -> list[str]:
    """`argv` run so that it gets SIGKILL when the process that started it dies: a test run
    or `chatctl up` killed with -9 leaves no server behind. util-linux `setpriv` sets the
    parent-death signal and execs the command (same PID); without it, `argv` as it is."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or sys.platform != "linux":
        return argv
    return [setpriv, "--pdeathsig", "KILL", "--", *argv]


# The parent-death signal fires when the THREAD that started a process ends, not the program:
# a server started from a short-lived thread (`asyncio.to_thread`, whose executor ends with
# its event loop) would be killed with that thread. Every server of the local stack is
# started from this one thread instead, which lives as long as the program.
_STARTER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="starter")


def start_process(argv: list[str], **popen_kwargs: Any) -> subprocess.Popen[bytes]:
    """`argv` started as `dies_with_parent` says, from the long-lived starter thread."""

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(dies_with_parent(argv), **popen_kwargs)

    return _STARTER.submit(start).result()


class StackError(RuntimeError):
    """A local process did not start or the cluster did not form."""


def raise_open_files_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard one, for this process and what it starts from now
    on: a GraphQL process or the gateway holds thousands of sockets (Envoy two descriptors
    per WebSocket), past the common soft limit of 1,024. The limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


# Ports for local processes stay below Linux's ephemeral range (32768+), where outgoing
# connections and port-0 listeners take theirs: a port chosen here cannot be taken by a
# client socket between the choice and the bind. Redis nodes get [11000, 20000) so that
# their cluster bus ports (+10000) land in [21000, 30000); services get [30000, 32700).
REDIS_PORT_RANGE = (11_000, 9_000)
SERVICE_PORT_RANGE = (30_000, 2_700)


def _share_of_range(start: int, span: int) -> tuple[int, int]:
    """The part of a port range this process draws from. Test workers (`pytest -n`, which
    names each in PYTEST_XDIST_WORKER) start clusters at the same moments: a port one finds
    free could be taken by the other before its server binds it, so each gets its own part."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or workers < 2:
        return start, span
    share = span // workers
    return start + int(worker[2:]) % workers * share, share


def free_ports(count: int, *, with_bus: bool = False) -> list[int]:
    """`count` free loopback ports (Redis nodes, each with port+10000 free, when `with_bus`)."""
    start, span = _share_of_range(*(REDIS_PORT_RANGE if with_bus else SERVICE_PORT_RANGE))
    found: list[int] = []
    # Spread concurrent callers (parallel test sessions) over the range.
    offset = (os.getpid() * 7919 + time.monotonic_ns() // 1000) % span
    for step in range(span):
        port = start + (offset + step) % span
        if port_is_free(port) and (not with_bus or port_is_free(port + CLUSTER_BUS_OFFSET)):
            found.append(port)
            if len(found) == count:
                return found
    raise StackError(f"could not find {count} free ports in [{start}, {start + span})")


def wait_for_port(
    port: int, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise StackError(f"process {process.pid} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise StackError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL — by PID, never by name."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait(5)


@dataclass
class ManagedProcess:
    """A service process whose output goes to a log file; ready when it prints `ready`, or,
    for a process that prints no such line (Envoy), when `ready_check` says so."""

    name: str
    argv: list[str]
    env: Mapping[str, str]
    log_path: Path
    ready_check: Callable[[], bool] | None = None
    process: subprocess.Popen[bytes] | None = None
    _log_offset: int = 0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Only output from this start counts for readiness (the log may hold older runs).
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = start_process(
                self.argv,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_ready():
                return
            if self.process.poll() is not None:
                raise StackError(
                    f"{self.name} exited with {self.process.returncode}; last output:\n"
                    + self.tail()
                )
            time.sleep(0.05)
        raise StackError(
            f"{self.name} not ready after {timeout:.0f} s; last output:\n{self.tail()}"
        )

    def is_ready(self) -> bool:
        """Ready since its last start (a look, no wait)."""
        if self.ready_check is not None:
            return self.ready_check()
        text = self.log_path.read_bytes()[self._log_offset :] if self.log_path.exists() else b""
        return any(line.strip() == b"ready" for line in text.splitlines())

    def tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_code(self) -> int | None:
        """The exit code once it exited (negative: killed by that signal); None while it
        runs."""
        assert self.process is not None
        return self.process.poll()

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait(5)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is not None:
            stop_process(self.process, timeout)


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise StackError("redis-server is not installed (Debian: apt-get install redis-server)")
    return path


@dataclass
class RedisCluster:
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

    def cli(self, port: int, *args: str, timeout: float = 10) -> str:
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

    def formed(self) -> bool:
        return all(
            "cluster_state:ok" in self.cli(p, "cluster", "info")
            for p in self.ports
            if p in self.processes and self.processes[p].poll() is None
        )

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
            subprocess.run(
                [
                    "redis-cli",
                    "--cluster",
                    "create",
                    *self.nodes,
                    "--cluster-replicas",
                    "1",
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
        self.wait_healthy(timeout)

    def known_nodes(self, port: int) -> int:
        for line in self.cli(port, "cluster", "info").splitlines():
            name, _, value = line.strip().partition(":")
            if name == "cluster_known_nodes":
                return int(value)
        raise StackError(f"no cluster_known_nodes in CLUSTER INFO of :{port}")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every live node says the cluster is ok and every primary has its replica."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(StackError, subprocess.TimeoutExpired):
                if self.formed() and self._replicas_synced():
                    return
            time.sleep(0.1)
        raise StackError(f"Redis Cluster on {self.nodes_csv} not healthy after {timeout:.0f} s")

    def _replicas_synced(self) -> bool:
        """The cluster has its shape: one replica per primary (half the nodes are replicas:
        `--cluster create` makes them a moment after the slots are agreed), every replica
        streams from its primary, and every primary counts enough of them in sync to take
        writes (min-replicas-to-write counts a replica only once the primary has its first
        acknowledgement, a moment after the replica says it is up)."""
        replicas = 0
        for port in self.live_ports():
            info = self.cli(port, "info", "replication")
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
        return replicas == len(self.ports) // 2

    def live_ports(self) -> list[int]:
        return [p for p in self.ports if p in self.processes and self.processes[p].poll() is None]

    def primary_port_for(self, key: str) -> int:
        """The primary owning `key`'s slot, as the first live node sees the cluster."""
        asked = self.live_ports()[0]
        slot = int(self.cli(asked, "cluster", "keyslot", key).strip())
        for line in self.cli(asked, "cluster", "nodes").splitlines():
            parts = line.split()
            if "master" not in parts[2] or "fail" in parts[2]:
                continue
            for span in parts[8:]:
                low, _, high = span.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return int(parts[1].split(":")[1].split("@")[0])
        raise StackError(f"no primary owns the slot of {key!r}")

    def owns_slots(self, port: int) -> bool:
        """Whether the other live nodes still list `port` as a primary with slots."""
        live = [p for p in self.live_ports() if p != port]
        for line in self.cli(live[0], "cluster", "nodes").splitlines():
            parts = line.split()
            if f":{port}@" in parts[1]:
                return "master" in parts[2] and len(parts) > 8
        return False

    def node_serving(self, port: int) -> bool:
        """The node of `port` is back in the cluster: it answers, sees the cluster ok and, as
        a replica, is in sync with its primary (a look, no wait)."""
        try:
            if "cluster_state:ok" not in self.cli(port, "cluster", "info", timeout=2):
                return False
            replication = self.cli(port, "info", "replication", timeout=2)
        except (StackError, subprocess.TimeoutExpired):
            return False
        return "role:slave" not in replication or "master_link_status:up" in replication

    def restart_replaced_node(self, port: int, timeout: float = 30.0) -> None:
        """Start a killed node once its replica has taken its slots: started earlier, an empty
        node (no AOF) would come back as the primary and its replica would copy nothing."""
        deadline = time.monotonic() + timeout
        while self.owns_slots(port):
            if time.monotonic() > deadline:
                raise StackError(f"no replica took over the slots of Redis node {port}")
            time.sleep(0.1)
        self.start_node(port)

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


def python_module(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def service_env(settings: Mapping[str, object]) -> dict[str, str]:
    """Settings fields → NEXTCAMPUS_* env vars (the same names the chart sets)."""
    return {
        f"NEXTCAMPUS_{name.upper()}": ",".join(value)
        if isinstance(value, list | tuple)
        else str(value)
        for name, value in settings.items()
    }


def stop_all(processes: Iterable[ManagedProcess]) -> None:
    for process in processes:
        process.stop()
