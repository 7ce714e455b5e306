"""The benchmarks' summarizers on made-up numbers: percentiles, the saturation sweep's
verdicts, the targets and medians over runs (no processes, no clock); and the fan-out
comparison table they feed."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from bench.report import comparison_table
from bench.stats import (
    OURS,
    OURS_GATEWAY,
    TARGET_KB_PER_IDLE_SOCKET,
    TARGET_SENDS_PER_SECOND,
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
    versus_best_peer,
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
    target = sends_target([send_step(8, 2_000, 5.0), send_step(64, 3_000, 20.0)])
    assert TARGET_SENDS_PER_SECOND == 3_000
    assert target["met"] is True
    assert target["best_within_p99"] == {"concurrency": 64, "sends_per_second": 3_000}


def test_the_sends_target_is_not_met_when_the_fast_steps_miss_the_p99():
    target = sends_target(
        [send_step(8, 900, 12.0), send_step(32, 2_999, 19.5), send_step(128, 6_000, 20.1)]
    )
    assert target["met"] is False
    assert target["best_within_p99"] == {"concurrency": 32, "sends_per_second": 2_999}


def test_no_step_within_the_p99_means_no_best_step():
    target = sends_target([send_step(1, 6_000, 21.0), send_step(8, 0, None)])
    assert target["met"] is False
    assert target["best_within_p99"] is None


def system(
    deliveries: float | None = None,
    cpu_per_1k: float | None = None,
    p50_ms: float | None = None,
    p99_ms: float | None = None,
    kb: float | None = None,
) -> dict[str, Any]:
    """A system's summary holding the figures the targets judge."""
    return {
        "saturation": {
            "deliveries_per_s": deliveries,
            "server_cpu_pct_per_1k_deliveries": cpu_per_1k,
        },
        "latency": {"p50_ms": p50_ms, "p99_ms": p99_ms},
        "memory": {"kb_per_conn": kb},
    }


# Two peers, each the best at something: the targets hold ours against the best per figure.
PEERS = {
    "peer-a": system(deliveries=10_000, cpu_per_1k=2.0, p50_ms=3.0, p99_ms=30.0, kb=40.0),
    "peer-b": system(deliveries=8_000, cpu_per_1k=3.0, p50_ms=6.0, p99_ms=18.0, kb=20.0),
}
# Ours exactly at every bound: 5× the best deliveries/s, ¼ of the best CPU per 1k, 15 KB;
# through the gateway the best peer's p50 and p99, 1.5× direct's, and 0.75× its deliveries/s.
AT_BOUNDS = {
    OURS: system(deliveries=50_000, cpu_per_1k=0.5, p50_ms=2.0, p99_ms=12.0, kb=15.0),
    OURS_GATEWAY: system(deliveries=37_500, cpu_per_1k=0.6, p50_ms=3.0, p99_ms=18.0, kb=16.0),
    **PEERS,
}


def verdicts(systems: dict[str, Any]) -> dict[str, bool | None]:
    return {name: target["met"] for name, target in fanout_targets(systems).items()}


def past(figure: tuple[str, str, str], value: float | None) -> dict[str, Any]:
    """AT_BOUNDS with one figure of one system changed."""
    name, kind, key = figure
    changed = {n: {k: dict(v) for k, v in s.items()} for n, s in AT_BOUNDS.items()}
    changed[name][kind][key] = value
    return changed


def test_every_fanout_target_is_met_at_its_bound():
    assert verdicts(AT_BOUNDS) == {
        "latency_vs_best_peer": True,
        "gateway_latency_vs_direct": True,
        "saturation_vs_best_peer": True,
        "cpu_per_1k_vs_best_peer": True,
        "gateway_saturation_vs_direct": True,
        "kb_per_idle_socket": True,
    }
    assert TARGET_KB_PER_IDLE_SOCKET == 15.0


@pytest.mark.parametrize(
    ("target", "figure", "value"),
    [
        # The best peer's p50 or p99 just under ours via Envoy.
        ("latency_vs_best_peer", ("peer-a", "latency", "p50_ms"), 2.99),
        ("latency_vs_best_peer", ("peer-b", "latency", "p99_ms"), 17.9),
        # Direct's just under ⅔ of ours via Envoy.
        ("gateway_latency_vs_direct", (OURS, "latency", "p50_ms"), 1.99),
        ("gateway_latency_vs_direct", (OURS, "latency", "p99_ms"), 11.9),
        ("saturation_vs_best_peer", (OURS, "saturation", "deliveries_per_s"), 49_999),
        ("cpu_per_1k_vs_best_peer", (OURS, "saturation", "server_cpu_pct_per_1k_deliveries"), 0.51),
        ("gateway_saturation_vs_direct", (OURS_GATEWAY, "saturation", "deliveries_per_s"), 37_499),
        ("kb_per_idle_socket", (OURS, "memory", "kb_per_conn"), 15.1),
    ],
)
def test_each_fanout_target_is_not_met_past_its_bound(
    target: str, figure: tuple[str, str, str], value: float
):
    met = verdicts(past(figure, value))
    assert met[target] is False
    assert [name for name, verdict in met.items() if verdict is not True] == [target]


def test_a_target_names_the_best_peer_per_figure_and_the_ratio():
    targets = fanout_targets(AT_BOUNDS)
    latency = targets["latency_vs_best_peer"]
    assert latency["system"] == OURS_GATEWAY
    assert latency["figures"]["latency_p50_ms"]["against"] == {"system": "peer-a", "value": 3.0}
    assert latency["figures"]["latency_p99_ms"]["against"] == {"system": "peer-b", "value": 18.0}
    assert latency["figures"]["latency_p99_ms"]["ratio"] == pytest.approx(1.0)
    saturation = targets["saturation_vs_best_peer"]["figures"]["deliveries_per_s_at_slo"]
    assert (saturation["ours"], saturation["against"]["system"]) == (50_000, "peer-a")
    assert saturation["ratio"] == pytest.approx(5.0)
    via_envoy = targets["gateway_saturation_vs_direct"]["figures"]["deliveries_per_s_at_slo"]
    assert via_envoy["against"] == {"system": OURS, "value": 50_000}
    assert via_envoy["ratio"] == pytest.approx(0.75)


def test_ours_against_the_best_peer_for_every_figure():
    compared = versus_best_peer(AT_BOUNDS)
    kb = compared["kb_per_idle_socket"]
    assert kb["best_peer"] == {"system": "peer-b", "value": 20.0}
    assert kb["ours"][OURS] == {"value": 15.0, "ratio": 0.75}
    assert kb["ours"][OURS_GATEWAY] == {"value": 16.0, "ratio": 0.8}
    assert compared["deliveries_per_s_at_slo"]["best_peer"]["system"] == "peer-a"


@pytest.mark.parametrize(
    ("left_out", "unknown"),
    [
        # No peer measured: every target against the best peer is unknown.
        (
            list(PEERS),
            ["latency_vs_best_peer", "saturation_vs_best_peer", "cpu_per_1k_vs_best_peer"],
        ),
        # Not through the gateway (--no-gateway): its targets are unknown.
        (
            [OURS_GATEWAY],
            ["latency_vs_best_peer", "gateway_latency_vs_direct", "gateway_saturation_vs_direct"],
        ),
        ([OURS], [name for name in verdicts(AT_BOUNDS) if name != "latency_vs_best_peer"]),
    ],
    ids=["no peers", "no gateway", "not direct"],
)
def test_a_fanout_target_without_its_numbers_is_unknown(left_out: list[str], unknown: list[str]):
    measured = {name: summary for name, summary in AT_BOUNDS.items() if name not in left_out}
    met = verdicts(measured)
    assert [name for name, verdict in met.items() if verdict is None] == unknown
    assert all(met[name] is True for name in met if name not in unknown)


def test_one_missing_figure_of_a_target_makes_it_unknown():
    met = verdicts(past((OURS_GATEWAY, "latency", "p99_ms"), None))
    assert met["latency_vs_best_peer"] is None
    assert met["gateway_latency_vs_direct"] is None


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
    assert summary["targets"]["latency_vs_best_peer"]["met"] is None  # not via Envoy
    compared = summary["versus_best_peer"]["latency_p99_ms"]
    assert compared["best_peer"] == {"system": "graphqlws-node", "value": 93.0}
    assert list(compared["ours"]) == ["nextcampus"]


def test_the_fanout_summary_has_ours_through_the_gateway_beside_ours_direct():
    def run(number: int, p99_ms: float, via_envoy_p99_ms: float) -> dict[str, Any]:
        return {
            "run": number,
            "scenarios": {
                "latency": {"raw": {"latency_ms": {"p99": p99_ms}}},
                "mixed": {"ours alone": True},  # the mixed sweeps: not summarized here
            },
            "gateway": {
                "scenarios": {
                    "latency": {"raw": {"latency_ms": {"p99": via_envoy_p99_ms}}},
                    "saturation": {
                        "raw": None,
                        "steps": [
                            sweep_step(
                                100, label=f"{run_label('saturation', number, OURS_GATEWAY)}@100"
                            )
                        ],
                    },
                }
            },
        }

    results = {"ours": {"runs": [run(1, 9.0, 12.0), run(2, 11.0, 14.0)]}}
    summary = summarize_fanout(results)
    assert list(summary["systems"]) == [OURS, OURS_GATEWAY]
    assert list(summary["systems"][OURS]) == ["latency"]
    assert summary["systems"][OURS]["latency"]["p99_ms"] == 10.0
    via_envoy = summary["systems"][OURS_GATEWAY]
    assert via_envoy["latency"]["p99_ms"] == 13.0
    # Rebuilt from the gateway sweep's own steps (its label names the system).
    assert via_envoy["saturation"]["max_rate_pass"] == 100
    judged = summary["targets"]["gateway_latency_vs_direct"]["figures"]["latency_p99_ms"]
    assert judged["ratio"] == pytest.approx(1.3)


# -- the comparison table -------------------------------------------------------------------------


def rendered(systems: dict[str, Any]) -> str:
    summary = {
        "systems": systems,
        "versus_best_peer": versus_best_peer(systems),
        "targets": fanout_targets(systems),
    }
    console = Console(width=400, record=True, file=io.StringIO())
    console.print(comparison_table(summary))
    return console.export_text()


def line_of(text: str, start: str) -> str:
    """The table's line whose first cell starts with `start` (box characters left out)."""
    return next(line for line in text.splitlines() if line.lstrip("│┃ ").startswith(start))


def test_the_table_has_ours_direct_and_via_envoy_the_peers_the_ratio_and_the_verdicts():
    text = rendered(past((OURS, "saturation", "deliveries_per_s"), 49_999))
    header = line_of(text, "measure")
    for heading in (f"{OURS} (ours, direct)", f"{OURS_GATEWAY} (ours, via Envoy)", "peer-a"):
        assert heading in header
    assert "ours ÷ best peer" in header
    saturation = line_of(text, "saturation: deliveries/s at the SLO")
    assert "≥ 5× best peer's: NOT met (5.00×)" in saturation
    assert line_of(text, "target: deliveries/s at the SLO").rstrip("│ ").endswith("NOT met")
    assert "≤ 15 KB: met" in line_of(text, "memory: KB RSS per idle socket")


def test_without_the_gateway_its_targets_are_not_measured():
    text = rendered({name: s for name, s in AT_BOUNDS.items() if name != OURS_GATEWAY})
    assert OURS_GATEWAY not in line_of(text, "measure")
    assert "via Envoy ≤ best peer's: not measured" in line_of(text, "latency: p99 ms")
    assert text.count("via Envoy ≤ 1.5× direct: not measured") == 2  # p50 and p99
    assert "gateway" not in line_of(text, "latency: CPU %")


def hop_samples(component: str, hop: str, counts: dict[str, float]) -> dict[str, float]:
    return {
        f"nextcampus_{component}_hop_seconds_bucket{{hop={hop},le={le}}}": count
        for le, count in counts.items()
    }


def test_hop_medians_sum_every_process_and_interpolate_within_the_bucket():
    from bench.stats import hop_medians

    scrapes = {
        "chat-0": hop_samples("chat", "chat_send", {"0.001": 4, "0.002": 10, "+Inf": 10}),
        "chat-1": {
            **hop_samples("chat", "chat_send", {"0.001": 0, "0.002": 6, "+Inf": 10}),
            **hop_samples("chat", "chat_feed", {"0.001": 0, "0.002": 0, "+Inf": 0}),
            "nextcampus_chat_sends_total{result=ok}": 20,
        },
        "graphql-0": "unreachable: connection refused",
    }
    # 20 in all, the 10th lies between 0.001 s (4 below) and 0.002 s (16 below).
    assert hop_medians(scrapes) == {"chat_send": 1.5}


def test_the_hop_table_shows_each_step_and_the_generators_median():
    from bench.report import hop_table

    summary = {
        "systems": {OURS: {"latency": {"p50_ms": 3.0}}},
        "hops_ms": {OURS: {"graphql_mutation": 0.5, "chat_send": 0.8, "graphql_written": 2.0}},
    }
    table = hop_table(summary)
    assert table is not None
    rows = {
        table.columns[0]._cells[i]: table.columns[1]._cells[i]
        for i in range(len(table.columns[0]._cells))
    }
    assert rows["chat_send"] == "0.80 (+0.30)"
    assert rows["chat_feed"] == "—"
    assert rows["chat_stored"] == "—"
    assert rows["received by the generator (its p50)"] == "3.00 (+1.00)"
    assert hop_table({"hops_ms": {}}) is None
