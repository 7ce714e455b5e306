"""Local processes: starting, stopping and waiting for them, and the loopback ports they
use. Used by `chatctl up`, the test fixtures and the benchmarks (one copy of the process
handling).

Every process is started in its own session and stopped by its PID (SIGTERM, then SIGKILL), or
by its process group where what it started must stop with it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
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


def _found(send_signal: Callable[[int, int], None], target: int) -> bool:
    """Whether signal 0 to `target` finds a process (one we may not signal counts)."""
    try:
        send_signal(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_alive(group_id: int) -> bool:
    """Whether any process of the process group is left (zombies not yet reaped count)."""
    return _found(os.killpg, group_id)


def pid_alive(pid: int) -> bool:
    return _found(os.kill, pid)


def stop_process(
    process: subprocess.Popen[Any], timeout: float = 10.0, *, group: bool = False
) -> None:
    """SIGTERM, wait, then SIGKILL — by PID, never by name. With `group`, the process group
    the process leads (started with `start_new_session`), so that what a script started
    does not outlive it, even once the script itself has exited; the group id is the
    process's PID, so only what we started is signalled."""

    def send(signal_number: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(process.pid, signal_number)
            else:
                process.send_signal(signal_number)

    if process.poll() is not None and not (group and _group_alive(process.pid)):
        return
    deadline = time.monotonic() + timeout
    send(signal.SIGTERM)
    try:
        process.wait(timeout)
        while group and _group_alive(process.pid):
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(process.args, timeout)
            time.sleep(0.05)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
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
