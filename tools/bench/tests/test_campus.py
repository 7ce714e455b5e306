"""`chatctl bench-campus` end to end on a small campus (the real topology, the real node
generator): every online user gets ready, sends and `me` queries are answered, presence is
exact before the kill -9 and again after it, and the results file says so. How fast any of
it is belongs to `make bench`, not here."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from bench.campus import CampusOptions, population, run_campus


def test_the_campus_is_made_the_same_way_every_run():
    options = CampusOptions(users=50, courses=10, online=20, me_users=3)
    first, again = population(options, "secret"), population(options, "secret")
    assert [u["courses"] for u in first["online"]] == [u["courses"] for u in again["online"]]
    assert len(first["online"]) == 20
    assert all(
        len(set(u["courses"])) == 6 and u["open"] == u["courses"][0] for u in first["online"]
    )
    assert all(len(set(u["courses"])) == 8 for u in first["me"])


def test_a_small_campus_runs_and_presence_forgets_the_killed_process(tmp_path: Path):
    options = CampusOptions(
        users=60,
        courses=10,
        online=24,
        me_users=3,
        rate=5,
        typing=2,
        me_rate=5,
        duration=5,
        ramp=50,
        presence_timeout=90,
        output_dir=tmp_path / "results",
        # A dead process's users are reaped after the presence TTL: short here.
        chat_overrides={"presence_ttl_seconds": 6},
        graphql_overrides={"presence_heartbeat_seconds": 2},
    )
    path = run_campus(options, Console(quiet=True), Console(quiet=True))
    record = json.loads(path.read_text())
    summary = record["summary"]
    assert summary["online_ready"] == 24
    assert summary["send_errors"] == {}
    assert summary["sends_per_s"] > 0
    assert summary["me_errors"] == 0
    assert summary["me_ms"]["n"] > 0
    assert summary["subscriptions_failed"] == 0
    assert summary["presence_accurate_before_kill"] is True
    assert summary["presence_accurate_after_kill_s"] is not None
    assert record["steady"]["redis_commands_per_s"] > 0
