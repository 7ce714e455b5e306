"""The supervisor of `chatctl up`, on real processes: the back-off grows while a process
crash-loops and starts over after a long run (a clock of the test's own decides when a
restart is due, so nothing depends on how fast the machine is), and a killed Redis primary
comes back as the replica of the node that took over its slots."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import redis

from devstack.processes import ManagedProcess
from devstack.redis_cluster import RedisCluster
from devstack.supervisor import Backoff, RedisNodeUnit, ServiceUnit, Supervisor


def test_backoff_doubles_to_its_cap_and_starts_over_after_a_long_run():
    backoff = Backoff()
    assert [backoff.next_delay(uptime_seconds=0) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.next_delay(uptime_seconds=59) == 30
    assert backoff.next_delay(uptime_seconds=60) == 1
    assert backoff.next_delay(uptime_seconds=0) == 2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_for_exit(process: ManagedProcess) -> None:
    assert process.process is not None
    process.process.wait(30)


def test_a_crash_looping_process_is_restarted_later_each_time_until_it_stays_up(tmp_path: Path):
    # Exits with 3 on its first two starts, then serves.
    starts = tmp_path / "starts"
    script = textwrap.dedent(
        f"""
        import pathlib, sys, time
        starts = pathlib.Path({str(starts)!r})
        count = int(starts.read_text()) + 1 if starts.exists() else 1
        starts.write_text(str(count))
        if count <= 2:
            sys.exit(3)
        print("ready", flush=True)
        time.sleep(600)
        """
    )
    process = ManagedProcess("flaky", [sys.executable, "-c", script], {}, tmp_path / "flaky.log")
    said: list[str] = []
    clock = Clock()
    process.start()
    supervisor = Supervisor([ServiceUnit(process)], said.append, clock=clock)
    try:
        wait_for_exit(process)
        supervisor.check()
        assert said == [f"flaky exited (code 3); restarting in 1 s (see {tmp_path}/flaky.log)"]

        clock.now += 0.9
        supervisor.check()
        assert process.exit_code() == 3  # not yet: the back-off is not over
        clock.now += 0.1
        supervisor.check()
        wait_for_exit(process)  # its second start
        supervisor.check()
        assert said[-1] == (
            f"flaky exited (code 3) before it was ready; restarting in 2 s (see {tmp_path}/flaky.log)"
        )

        clock.now += 2
        supervisor.check()
        deadline = time.monotonic() + 30
        while not said[-1].startswith("flaky is back"):
            assert time.monotonic() < deadline, said
            time.sleep(0.05)
            supervisor.check()
        assert said[-1] == f"flaky is back (pid {process.pid})"
        assert starts.read_text() == "3"

        # A crash after a long run is not a crash loop: the back-off starts over.
        clock.now += 60
        process.kill()
        supervisor.check()
        assert said[-1].startswith("flaky exited (code -9); restarting in 1 s")
    finally:
        process.stop()


def test_a_killed_redis_primary_comes_back_as_a_replica(own_redis_cluster: RedisCluster):
    cluster = own_redis_cluster
    primary = cluster.primary_for("course:{supervised}:seq")
    # On the replica before the kill (WAIT on the connection that wrote it): what the test
    # reads back later is the replica's copy.
    with redis.Redis(port=primary) as client:
        client.set("course:{supervised}:seq", "7")
        assert client.execute_command("WAIT", 1, 10_000) == 1
    said: list[str] = []
    supervisor = Supervisor([RedisNodeUnit(cluster, port) for port in cluster.ports], said.append)
    cluster.kill_node(primary)

    deadline = time.monotonic() + 90
    while not any(line.startswith(f"redis-{primary} is back") for line in said):
        assert time.monotonic() < deadline, said
        time.sleep(0.2)
        supervisor.check()

    assert said[0] == (
        f"redis-{primary} exited (code -9); restarting in 1 s once its replica took over "
        f"(see {cluster.log_path(primary)})"
    )
    assert "role:slave" in cluster.cli(primary, "info", "replication")
    cluster.wait_healthy()
    owner = cluster.primary_for("course:{supervised}:seq")
    assert owner != primary
    assert cluster.cli(owner, "get", "course:{supervised}:seq").strip() == "7"
