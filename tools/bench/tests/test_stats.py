"""The benchmarks' summarizers on made-up numbers: percentiles, the saturation sweep's
verdicts, the targets and medians over runs (no processes, no clock)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.stats import (
    TARGET_DELIVERIES_PER_SECOND,
    TARGET_KB_PER_IDLE_SOCKET,
    Latency,
    SendStep,
    combine_runs,
    fanout_targets,
    run_label,
    samples,
    sends_target,
    step_passes,
    summarize_fanout,
    summarize_saturation,
    sweep_from_steps,
)

# -- percentiles ----------------------------------------------------------------------------------


def test_no_sample_has_no_percentile():
    assert Latency.of([]) == Latency(count=0, p50_ms=None, p99_ms=None, max_ms=None, mean_ms=None)


def test_one_sample_is_every_percentile():
    assert Latency.of([0.004]) == Latency(count=1, p50_ms=4.0, p99_ms=4.0, max_ms=4.0, mean_ms=4.0)


def test_percentiles_are_nearest_ranks_of_the_sorted_samples():
    seconds = [ms / 1000 for ms in range(100, 0, -1)]  # 100 … 1 ms, unsorted on purpose
    latency = Latency.of(seconds)
    assert (latency.count, latency.p50_ms, latency.p99_ms, latency.max_ms) == (100, 50, 99, 100)
    assert latency.mean_ms == 50.5


def test_with_two_samples_the_p99_is_the_slower_one():
    latency = Latency.of([0.001, 0.030])
    assert (latency.p50_ms, latency.p99_ms) == (1.0, 30.0)


def test_samples_of_several_client_processes_are_merged():
    first, second = samples(), samples()
    first.extend([0.001, 0.002])
    second.append(0.003)
    assert list(samples(first.tobytes(), second.tobytes())) == [0.001, 0.002, 0.003]


# -- the saturation sweep -------------------------------------------------------------------------

LABEL = run_label("saturation", 1)


def sweep_step(rate: float, **changes: Any) -> dict[str, Any]:
    """A step of sweep.js's log that passes, but for `changes`."""
    step: dict[str, Any] = {
        "label": f"{LABEL}@{rate:g}",
        "lost": 0,
        "publish_errors": 0,
        "latency_ms": {"p50": 5.0, "p99": 40.0},
        "publish_rate_achieved": rate,
        "ready": {"subs": 1000, "of": 1000},
        "disconnects": 0,
    }
    step.update(changes)
    return step


def test_a_step_with_zero_loss_and_p99_under_the_slo_passes():
    assert step_passes(sweep_step(800), 800)


@pytest.mark.parametrize(
    "changes",
    [
        {"lost": 1},
        {"publish_errors": 3},
        {"latency_ms": {"p99": 100.0}},  # the SLO is p99 < 100 ms
        {"latency_ms": {}},
        {"publish_rate_achieved": 0.97 * 800},
        {"ready": {"subs": 999, "of": 1000}},
        {"subs_not_ready": 1},
        {"disconnects": 2},
        {"error": "generator crashed"},
    ],
    ids=lambda changes: next(iter(changes)),
)
def test_a_step_fails_on_any_one_broken_rule(changes: dict[str, Any]):
    assert not step_passes(sweep_step(800, **changes), 800)


def test_the_sweep_passes_up_to_the_highest_rate_that_met_the_slo():
    steps = [
        sweep_step(100),
        sweep_step(200),
        sweep_step(400, lost=7),
        sweep_step(300),
        # A step that failed outright carries its label and nothing else.
        {"label": f"{LABEL}@350", "error": "timed out"},
        sweep_step(5000, label="saturation:nextcampus:2@5000"),  # another run's sweep
    ]
    sweep = sweep_from_steps(steps, LABEL)
    assert sweep["max_rate_pass"] == 300
    assert sweep["first_rate_fail"] == 350
    assert sweep["at_max_full"] is steps[3]
    assert [(s["rate"], s["pass"]) for s in sweep["steps"]] == [
        (100, True),
        (200, True),
        (400, False),
        (300, True),
        (350, False),
    ]


def test_a_sweep_where_no_step_met_the_slo_has_no_passing_rate():
    sweep = sweep_from_steps([sweep_step(100, lost=1), sweep_step(50, disconnects=1)], LABEL)
    assert sweep["max_rate_pass"] is None
    assert sweep["first_rate_fail"] == 50
    assert summarize_saturation(sweep)["deliveries_per_s"] is None


def test_a_sweep_where_every_step_met_the_slo_has_no_failing_rate():
    sweep = sweep_from_steps([sweep_step(100), sweep_step(200)], LABEL)
    assert (sweep["max_rate_pass"], sweep["first_rate_fail"]) == (200, None)


def test_the_saturation_summary_is_the_best_step_and_why_the_next_one_failed():
    line = {
        "max_rate_pass": 800,
        "first_rate_fail": 900,
        "at_max_full": {
            "delivered_per_s": 80_000,
            "latency_ms": {"p50": 8.0, "p99": 90.0},
            "lost": 0,
            "cpu": {"server": {"cpu_pct": 150.0}, "chat": {"cpu_pct": 50.0}},
            "gen": {"cpu_pct_total": 40.0},
        },
        "steps": [
            {"rate": 800, "pass": True, "reasons": []},
            {"rate": 900, "pass": False, "reasons": ["p99 120 ms"]},
        ],
    }
    summary = summarize_saturation(line)
    assert summary["nominal_deliveries_per_s"] == 80_000  # R × 1000 subscribers / 10 courses
    assert (summary["deliveries_per_s"], summary["p99_ms"]) == (80_000, 90.0)
    assert summary["first_fail_reasons"] == ["p99 120 ms"]
    # (150 + 50) % of a core for 80,000 deliveries/s: 2.5 % per 1,000/s.
    assert summary["server_cpu_pct_per_1k_deliveries"] == 2.5
    assert summary["generator_cpu_pct_per_1k_deliveries"] == 0.5


# -- targets --------------------------------------------------------------------------------------


def send_step(concurrency: int, sends_per_second: float, p99_ms: float | None) -> SendStep:
    latency = Latency(100, 1.0, p99_ms, p99_ms, 1.0)
    return SendStep(concurrency, 1, 5.0, 100, sends_per_second, latency, None, {}, {})


def test_the_sends_target_is_met_by_a_step_fast_enough_within_the_p99():
    target = sends_target([send_step(8, 4_000, 5.0), send_step(64, 5_200, 20.0)])
    assert target["met"] is True
    assert target["best_within_p99"] == {"concurrency": 64, "sends_per_second": 5_200}


def test_the_sends_target_is_not_met_when_the_fast_steps_miss_the_p99():
    target = sends_target(
        [send_step(8, 900, 12.0), send_step(32, 1_000, 19.5), send_step(128, 6_000, 45.0)]
    )
    assert target["met"] is False
    assert target["best_within_p99"] == {"concurrency": 32, "sends_per_second": 1_000}


def test_no_step_within_the_p99_means_no_best_step():
    target = sends_target([send_step(1, 6_000, 21.0), send_step(8, 0, None)])
    assert target["met"] is False
    assert target["best_within_p99"] is None


def systems(
    deliveries: float | None, p99_ms: float | None, kb: float | None, *peer_p99_ms: float
) -> dict[str, Any]:
    ours = {
        "saturation": {"deliveries_per_s": deliveries},
        "latency": {"p99_ms": p99_ms},
        "memory": {"kb_per_conn": kb},
    }
    peers = {f"peer-{i}": {"latency": {"p99_ms": p99}} for i, p99 in enumerate(peer_p99_ms)}
    return {"nextcampus": ours, **peers}


def test_the_fanout_targets_are_met_at_their_bounds():
    targets = fanout_targets(
        systems(TARGET_DELIVERIES_PER_SECOND, 14.0, TARGET_KB_PER_IDLE_SOCKET, 14.0, 96.0)
    )
    assert {name: target["met"] for name, target in targets.items()} == {
        "deliveries_per_s_at_slo": True,
        "latency_p99_vs_peers": True,
        "kb_per_idle_socket": True,
    }


def test_the_fanout_targets_are_not_met_past_their_bounds():
    targets = fanout_targets(systems(74_999, 14.9, 30.1, 14.3, 96.0))
    assert {name: target["met"] for name, target in targets.items()} == {
        "deliveries_per_s_at_slo": False,
        "latency_p99_vs_peers": False,  # one peer's p99 is lower
        "kb_per_idle_socket": False,
    }
    assert targets["latency_p99_vs_peers"]["peers"] == {"peer-0": 14.3, "peer-1": 96.0}


def test_a_fanout_target_without_its_numbers_is_unknown():
    targets = fanout_targets(systems(None, 14.0, None))  # no peer measured either
    assert {name: target["met"] for name, target in targets.items()} == {
        "deliveries_per_s_at_slo": None,
        "latency_p99_vs_peers": None,
        "kb_per_idle_socket": None,
    }


# -- runs -----------------------------------------------------------------------------------------


def test_several_runs_give_the_median_and_range_of_every_number():
    combined = combine_runs(
        [
            {"p99_ms": 12.0, "lost": 0, "all_verified": True, "error": None},
            {"p99_ms": 30.0, "lost": 2, "all_verified": False, "error": "x"},
            {"p99_ms": 14.0, "lost": 0, "all_verified": True, "error": None},
        ]
    )
    assert (combined["runs"], combined["p99_ms"], combined["lost"]) == (3, 14.0, 0)
    assert combined["range"] == {"p99_ms": [12.0, 30.0], "lost": [0, 2]}
    # Not numbers: the first run's value.
    assert (combined["all_verified"], combined["error"]) == (True, None)
    assert len(combined["per_run"]) == 3


def test_one_run_is_its_own_summary():
    assert combine_runs([{"p99_ms": 12.0}]) == {"runs": 1, "p99_ms": 12.0}


def test_the_fanout_summary_covers_ours_and_every_peer_by_scenario():
    saturation_steps = [sweep_step(100), sweep_step(200, lost=1)]
    results = {
        "options": {"gateway": False},
        "ours": {
            "runs": [
                {
                    "run": 1,
                    "scenarios": {
                        "latency": {"raw": {"latency_ms": {"p99": 9.0}, "lost": 0}},
                        # The sweep was stopped: rebuilt from its step log.
                        "saturation": {"raw": None, "steps": saturation_steps},
                        "memory": {"raw": None, "returncode": 1},
                    },
                }
            ]
        },
        "peers": {
            "raw": [
                {"label": "latency:graphqlws-node:1", "latency_ms": {"p99": 96.0}},
                {"label": "latency:graphqlws-node:2", "latency_ms": {"p99": 90.0}},
                {"label": "ceiling:graphqlws-node:1"},  # a scenario not summarized
            ]
        },
    }
    summary = summarize_fanout(results)
    ours = summary["systems"]["nextcampus"]
    assert ours["latency"]["p99_ms"] == 9.0
    assert ours["saturation"]["max_rate_pass"] == 100
    assert ours["memory"]["error"] == "no result (exit 1)"
    peer = summary["systems"]["graphqlws-node"]
    assert list(peer) == ["latency"]
    assert (peer["latency"]["runs"], peer["latency"]["p99_ms"]) == (2, 93.0)
    assert summary["targets"]["latency_p99_vs_peers"]["met"] is True
    assert summary["ours_through_gateway"] is False
