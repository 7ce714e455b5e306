"""Measuring on this machine, for every benchmark: CPU time of processes, threads and the
whole machine (from /proc), waiting for a quiet machine, and what the machine is.

The benchmarks' clients, servers and Redis share the machine: these numbers say who used
the cores while a benchmark measured."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# wait_until_quiet: this many one-second samples in a row below the threshold.
QUIET_SAMPLES = 3


def _cpu_seconds_of_stat(path: Path) -> float | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after the comm, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_seconds(pids: Sequence[int]) -> float | None:
    """User + system CPU seconds of the processes (None when /proc is not there)."""
    values = [_cpu_seconds_of_stat(Path(f"/proc/{pid}/stat")) for pid in pids]
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of a process's main thread (the event loop) and of its other threads by
    name (threads of one name added up; Python's own threads are all called `python`)."""
    totals: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            seconds = _cpu_seconds_of_stat(task / "stat")
            with contextlib.suppress(OSError):
                name = (task / "comm").read_text().strip()
                name = "main thread (event loop)" if task.name == str(pid) else f"{name} threads"
                if seconds is not None:
                    totals[name] = totals.get(name, 0.0) + seconds
    return totals


class CpuWindow:
    """CPU use of groups of processes between `start()` and `stop()`, in % of one core."""

    def __init__(self, groups: dict[str, Callable[[], Sequence[int]]]) -> None:
        self._groups = groups
        self._before: dict[str, float | None] = {}
        self._started = 0.0
        self.percent: dict[str, float | None] = {}

    def start(self) -> None:
        self._started = time.perf_counter()
        self._before = {name: cpu_seconds(pids()) for name, pids in self._groups.items()}

    def stop(self) -> None:
        elapsed = time.perf_counter() - self._started
        for name, pids in self._groups.items():
            before, after = self._before.get(name), cpu_seconds(pids())
            self.percent[name] = (
                None
                if before is None or after is None or elapsed <= 0
                else round((after - before) / elapsed * 100, 1)
            )


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:9]]
    idle = values[3] + values[4]
    total = sum(values)
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def _fixed(pids: Sequence[int]) -> Callable[[], Sequence[int]]:
    frozen = tuple(pids)
    return lambda: frozen


def cpu_window(groups: Mapping[str, Sequence[int]], seconds: float) -> dict[str, Any]:
    """CPU % (100 = one core) of the groups and of the whole machine over `seconds`."""
    window = CpuWindow({name: _fixed(pids) for name, pids in groups.items()})
    busy_before, _ = machine_cpu_seconds()
    started = time.monotonic()
    window.start()
    time.sleep(seconds)
    window.stop()
    busy_after, _ = machine_cpu_seconds()
    elapsed = time.monotonic() - started
    return {
        "seconds": seconds,
        "cpu_pct": dict(window.percent),
        "machine_busy_pct": round((busy_after - busy_before) / elapsed * 100, 1),
        "load_average_1m": os.getloadavg()[0],
    }


def wait_until_quiet(below_pct: float, max_wait_seconds: float) -> dict[str, Any]:
    """Wait until the whole machine is below `below_pct` busy (100 = one core) for
    QUIET_SAMPLES one-second samples in a row, at most `max_wait_seconds`. On a shared
    2-core box another engineer's test suite would otherwise land in the next measurement
    (it still can, during one: see `cpu.other_pct` of every run)."""
    started = time.monotonic()
    samples: list[float] = []
    quiet_in_a_row = 0
    while below_pct > 0:
        busy_before, _ = machine_cpu_seconds()
        sampled = time.monotonic()
        time.sleep(1.0)
        busy_after, _ = machine_cpu_seconds()
        samples.append(round((busy_after - busy_before) / (time.monotonic() - sampled) * 100, 1))
        quiet_in_a_row = quiet_in_a_row + 1 if samples[-1] < below_pct else 0
        if quiet_in_a_row >= QUIET_SAMPLES or time.monotonic() - started >= max_wait_seconds:
            break
    return {
        "below_pct": below_pct,
        "quiet": quiet_in_a_row >= QUIET_SAMPLES,
        "waited_s": round(time.monotonic() - started, 1),
        "busy_pct_samples": samples[-10:],
    }


def machine_info(note: str) -> dict[str, Any]:
    """What ran the benchmark; `note` says what shared the machine during it."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version,
        "platform": platform.platform(),
        "grpc": grpc.__version__,
        # Anything else running skews the numbers: the load when the run started.
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "note": note,
    }
