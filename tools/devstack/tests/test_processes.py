"""The local stack's process handling, against real redis-server processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from devstack.processes import ManagedProcess, free_ports, stop_process
from devstack.redis_cluster import RedisCluster


def test_persist_keeps_the_cluster_and_its_data_across_restarts(tmp_path: Path):
    """`make up UP_ARGS=--persist`: the second start reuses the cluster the first one formed
    (no new `--cluster create`, which would fail on nodes holding data) and keeps the keys."""
    ports = free_ports(6, with_bus=True)
    first = RedisCluster(ports, tmp_path, persist=True)
    try:
        first.start()
        owner = first.primary_for("course:{persist}:seq")
        assert first.cli(owner, "incrby", "course:{persist}:seq", "41").strip() == "41"
    finally:
        first.stop()  # SIGTERM: Redis fsyncs its AOF before it exits

    again = RedisCluster(ports, tmp_path, persist=True)
    try:
        again.start()
        owner = again.primary_for("course:{persist}:seq")
        assert again.cli(owner, "incr", "course:{persist}:seq").strip() == "42"
        assert again.known_nodes(ports[0]) == 6
    finally:
        again.stop()


def test_without_persist_every_start_is_a_fresh_cluster(tmp_path: Path):
    """Plain `make up` twice with the same state directory: the second start forms a new,
    empty cluster instead of tripping over the first one's node files."""
    ports = free_ports(6, with_bus=True)
    for _ in range(2):
        cluster = RedisCluster(ports, tmp_path, persist=False)
        try:
            cluster.start()
            owner = cluster.primary_for("course:{fresh}:seq")
            assert cluster.cli(owner, "incr", "course:{fresh}:seq").strip() == "1"
        finally:
            cluster.stop()


def test_a_process_started_from_a_thread_that_ends_lives_on(tmp_path: Path):
    """The parent-death signal follows the THREAD that started a process: a server restarted
    from `asyncio.to_thread` (whose thread ends with its event loop) must live on, or a
    restarted Redis replica dies with the test that restarted it."""
    sleeper = ManagedProcess(
        "sleeper",
        [sys.executable, "-c", "import time; time.sleep(60)"],
        {},
        tmp_path / "sleeper.log",
    )

    def start_and_leave() -> None:
        sleeper.start()
        # Leave only once setpriv has set the signal and exec'd the command: a parent-death
        # signal set after its thread ended would never fire.
        assert sleeper.process is not None
        deadline = time.monotonic() + 10
        exe = f"/proc/{sleeper.process.pid}/exe"
        while os.path.realpath(exe).endswith("setpriv") and time.monotonic() < deadline:
            time.sleep(0.01)

    starter = threading.Thread(target=start_and_leave)
    starter.start()
    starter.join()
    try:
        assert sleeper.process is not None
        with pytest.raises(subprocess.TimeoutExpired):
            sleeper.process.wait(timeout=3)  # not killed with the thread that started it
    finally:
        sleeper.stop()


def _running(pid: int) -> bool:
    """Still running: neither gone nor a zombie waiting to be reaped by init."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.mark.parametrize("leader", ["waits for it", "has exited"])
def test_stopping_a_process_group_stops_what_its_leader_started(tmp_path: Path, leader: str):
    """A script the benchmarks run (the harness's run-peers.sh) starts servers of its own:
    stopping it stops them too, even when the script itself is already gone."""
    script = "sleep 60 & echo $!; " + ("wait" if leader == "waits for it" else "exit 0")
    process = subprocess.Popen(
        ["sh", "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert process.stdout is not None
    child = int(process.stdout.readline())
    if leader == "has exited":
        process.wait(10)
    assert _running(child)
    stop_process(process, 10, group=True)
    assert not _running(child)
    assert process.returncode is not None
