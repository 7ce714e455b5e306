"""What the harness's sweep.js runs before every step of `chatctl bench-fanout`'s saturation
sweep (its --before-step, through `sh -c`), against a real Redis Cluster of the test's own:
every primary is emptied, what was done is recorded, and the --watch spec is the last line
it prints, which sweep.js passes on to gen.js."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

from bench.fanout import flush_command
from devstack.redis_cluster import RedisCluster, live_primaries

# Keys in different slots, so that every primary holds some.
KEYS = [f"course:{{flush-{n}}}:seq" for n in range(12)]
WATCH = "server=1,2;chat=3,4;redis=5"


def test_before_each_sweep_step_every_primary_is_flushed_and_the_watch_spec_printed_last(
    own_redis_cluster: RedisCluster, tmp_path: Path
):
    cluster = own_redis_cluster
    for key in KEYS:
        cluster.cli(cluster.primary_for(key), "set", key, "1")
    primaries = live_primaries(cluster.ports[0])
    assert len(primaries) == 3
    record = tmp_path / "between-steps.jsonl"

    command = shlex.join(flush_command(cluster.ports[0], WATCH, 0, record))
    result = subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == WATCH
    assert f"flushed primaries {','.join(map(str, primaries))}" in result.stderr
    assert all(cluster.cli(port, "dbsize").strip() == "0" for port in primaries)
    (line,) = record.read_text().splitlines()
    assert json.loads(line)["flushed"] == primaries


def test_a_flush_that_finds_no_cluster_fails_with_a_reason(tmp_path: Path):
    """sweep.js stops the sweep when its --before-step fails, and shows its stderr."""
    nothing_listens = 1
    command = shlex.join(flush_command(nothing_listens, WATCH, 0, tmp_path / "record.jsonl"))
    result = subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert result.stderr.startswith("flush failed: ")
    assert WATCH not in result.stdout
