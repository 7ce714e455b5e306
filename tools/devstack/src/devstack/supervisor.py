"""`chatctl up` looks after its processes as Kubernetes looks after pods: one that exits is
started again after a back-off (CrashLoopBackOff: 1 s, doubling up to 30 s, and 1 s again
once a run lasted a minute), the console says so, and everything else keeps serving
meanwhile. A Redis node is started again only once its replica took over its slots, so it
rejoins as that replica's replica instead of coming back as an empty primary.

The supervisor never blocks: `check()` looks at every process once and returns, so the
caller's loop stops everything on Ctrl-C at once, also during a back-off. Tests and the e2e
suite start a `Topology` without it: they kill and restart processes themselves.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from devstack.gateway import gateway_ready
from devstack.processes import ManagedProcess, StackError
from devstack.redis_cluster import RedisCluster
from devstack.topology import Topology

FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
# A run at least this long was not a crash loop: the next back-off starts from the first.
BACKOFF_RESET_AFTER_SECONDS = 60.0
# Started but not ready after this long: said once on the console (it is not killed: a
# gateway waits for its upstreams, which may be the ones down).
NOT_READY_NOTICE_SECONDS = 60.0
# A killed Redis primary's replica takes over within the cluster's node timeout (2 s) and
# an election; past this, the node is started as it is (with --persist it keeps its data).
TAKEOVER_WAIT_SECONDS = 30.0


@dataclass
class Backoff:
    """The waits before restarts of one process: doubling up to a cap, from the first wait
    again after a run of `reset_after_seconds`."""

    first_seconds: float = FIRST_BACKOFF_SECONDS
    max_seconds: float = MAX_BACKOFF_SECONDS
    reset_after_seconds: float = BACKOFF_RESET_AFTER_SECONDS
    _next_seconds: float | None = None

    def next_delay(self, uptime_seconds: float) -> float:
        """The wait before starting again a process that ran `uptime_seconds` (0: it died
        before it was ready)."""
        if self._next_seconds is None or uptime_seconds >= self.reset_after_seconds:
            self._next_seconds = self.first_seconds
        delay = self._next_seconds
        self._next_seconds = min(delay * 2, self.max_seconds)
        return delay


class Supervised(Protocol):
    """One process of the stack, as the supervisor sees it."""

    @property
    def name(self) -> str: ...

    @property
    def log_path(self) -> Path: ...

    def pid(self) -> int: ...

    def exit_code(self) -> int | None: ...

    def may_start(self) -> bool:
        """Whether starting it now is safe (a Redis node: its replica took over)."""
        ...

    def start(self) -> None:
        """Start it again, without waiting for it to be ready."""
        ...

    def ready(self) -> bool: ...


@dataclass
class ServiceUnit:
    """A chat, GraphQL or Envoy process: started again as it was (same ports, same config).
    Back once `ready_check` says so (default: the process's own readiness)."""

    process: ManagedProcess
    ready_check: Callable[[], bool] | None = None

    @property
    def name(self) -> str:
        return self.process.name

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def pid(self) -> int:
        return self.process.pid

    def exit_code(self) -> int | None:
        return self.process.exit_code()

    def may_start(self) -> bool:
        return True

    def start(self) -> None:
        self.process.start()

    def ready(self) -> bool:
        return self.ready_check() if self.ready_check is not None else self.process.is_ready()


@dataclass
class RedisNodeUnit:
    cluster: RedisCluster
    port: int

    @property
    def name(self) -> str:
        return f"redis-{self.port}"

    @property
    def log_path(self) -> Path:
        return self.cluster.log_path(self.port)

    def pid(self) -> int:
        return self.cluster.processes[self.port].pid

    def exit_code(self) -> int | None:
        return self.cluster.processes[self.port].poll()

    def may_start(self) -> bool:
        # Not knowing (no live node to ask) is not a yes: TAKEOVER_WAIT_SECONDS decides then.
        with contextlib.suppress(StackError, subprocess.TimeoutExpired, IndexError):
            return not self.cluster.owns_slots(self.port)
        return False

    def start(self) -> None:
        self.cluster.launch_node(self.port)

    def ready(self) -> bool:
        return self.cluster.node_serving(self.port)


def units_of(stack: Topology) -> list[Supervised]:
    """Every process of a started stack, back to front."""
    units: list[Supervised] = []
    if stack.redis is not None:
        units += [RedisNodeUnit(stack.redis, port) for port in stack.redis.ports]
    units += [ServiceUnit(process) for process in stack.processes]
    if stack.gateway is not None:
        # Back once it serves: its readiness at start-up (every upstream healthy) can take a
        # minute after a restart, as Envoy checks upstreams of an idle cluster only every
        # `no_traffic_interval` (60 s), and an upstream may be the process that is down.
        serving = functools.partial(gateway_ready, stack.gateway_admin_port, {})
        units.append(ServiceUnit(stack.gateway, ready_check=serving))
    return units


class State(enum.Enum):
    RUNNING = "running"
    WAITING = "waiting"  # exited; started again at `due`
    STARTING = "starting"  # started again, not ready yet


@dataclass
class _Watch:
    unit: Supervised
    since: float  # when it entered its state
    state: State = State.RUNNING
    due: float = 0.0
    backoff: Backoff = field(default_factory=Backoff)
    told_not_ready: bool = False


class Supervisor:
    """Restarts the processes of `units` that exit; `say` gets one line per event."""

    def __init__(
        self,
        units: list[Supervised],
        say: Callable[[str], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        self._say = say
        self._clock = clock
        now = clock()
        self._watches = [_Watch(unit, since=now, backoff=backoff()) for unit in units]

    @property
    def units(self) -> list[Supervised]:
        return [watch.unit for watch in self._watches]

    def check(self) -> None:
        """Look at every process once: notice exits, start what is due, report what is
        back."""
        for watch in self._watches:
            {
                State.RUNNING: self._check_running,
                State.WAITING: self._check_waiting,
                State.STARTING: self._check_starting,
            }[watch.state](watch, self._clock())

    def _check_running(self, watch: _Watch, now: float) -> None:
        code = watch.unit.exit_code()
        if code is not None:
            self._exited(watch, now, f"exited (code {code})", uptime_seconds=now - watch.since)

    def _check_waiting(self, watch: _Watch, now: float) -> None:
        if now < watch.due:
            return
        unit = watch.unit
        if not unit.may_start():
            if now < watch.due + TAKEOVER_WAIT_SECONDS:
                return
            self._say(
                f"{unit.name}: no replica took over its slots within "
                f"{TAKEOVER_WAIT_SECONDS:g} s; starting it as it is"
            )
        try:
            unit.start()
        except (OSError, StackError) as exc:
            self._exited(watch, now, f"could not be started ({exc})", uptime_seconds=0.0)
            return
        watch.state, watch.since, watch.told_not_ready = State.STARTING, now, False

    def _check_starting(self, watch: _Watch, now: float) -> None:
        unit = watch.unit
        code = unit.exit_code()
        if code is not None:
            what = f"exited (code {code}) before it was ready"
            self._exited(watch, now, what, uptime_seconds=0.0)
        elif unit.ready():
            self._say(f"{unit.name} is back (pid {unit.pid()})")
            watch.state, watch.since = State.RUNNING, now
        elif now - watch.since >= NOT_READY_NOTICE_SECONDS and not watch.told_not_ready:
            self._say(
                f"{unit.name} is not ready after {NOT_READY_NOTICE_SECONDS:g} s "
                f"(see {shown_path(unit.log_path)})"
            )
            watch.told_not_ready = True

    def _exited(self, watch: _Watch, now: float, what: str, uptime_seconds: float) -> None:
        delay = watch.backoff.next_delay(uptime_seconds)
        watch.state, watch.due = State.WAITING, now + delay
        when = "once its replica took over" if isinstance(watch.unit, RedisNodeUnit) else ""
        self._say(
            f"{watch.unit.name} {what}; restarting in {delay:g} s{' ' + when if when else ''} "
            f"(see {shown_path(watch.unit.log_path)})"
        )


def shown_path(path: Path) -> Path:
    """`path` relative to the working directory when it is below it (shorter to read)."""
    with contextlib.suppress(ValueError):
        return path.relative_to(Path.cwd())
    return path
