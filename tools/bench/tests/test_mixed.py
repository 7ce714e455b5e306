"""The mixed-event sweep's decisions (bench/mixed.py): when a step passes, which rate comes
next, and the table of both sweeps."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from bench.mixed import MIX_RATIO_TARGET, MixedSweeps, mixed_table, step_passes
from bench.stats import next_rate


def result(**changes: Any) -> dict[str, Any]:
    passing: dict[str, Any] = {
        "lost": 0,
        "duplicates": 0,
        "out_of_order": 0,
        "unmatched": 0,
        "errors": {},
        "subscription_errors": 0,
        "deliveries": 10_000,
        "deliveries_per_s": 1_000.0,
        "latency_ms": {"p50": 5.0, "p99": 40.0},
    }
    return {**passing, **changes}


def test_a_step_passes_only_with_nothing_lost_twice_late_or_refused():
    assert step_passes(result())
    assert not step_passes(None)
    assert not step_passes(result(lost=1))
    assert not step_passes(result(duplicates=1))
    assert not step_passes(result(out_of_order=1))
    assert not step_passes(result(unmatched=2))
    assert not step_passes(result(errors={"RATE_LIMITED": 1}))
    assert not step_passes(result(latency_ms={"p50": 5.0, "p99": 100.0}))
    assert not step_passes(result(deliveries=0))


def test_the_rate_doubles_until_a_failure_then_is_bisected_to_the_precision():
    assert next_rate([], [], 25) == 25
    assert next_rate([25], [], 25) == 50
    assert next_rate([25, 50, 100], [200], 25) == 150
    assert next_rate([25, 50, 100, 150], [200], 25) == 175
    assert next_rate([25, 50, 100, 150, 175], [200], 25) == 187
    assert next_rate([25, 50, 100, 150, 175, 187], [200], 25) is None  # within 10 %
    assert next_rate([], [25], 25) == 12  # the first step failed: halve
    assert next_rate([], [1], 1) is None


def test_both_sweeps_their_ratio_and_the_verdict():
    """A fake step: everything up to a ceiling passes (the mix's ceiling is lower)."""
    ceilings = {"send=100": 200, "send=70,react=15,edit=10,delete=5": 190}

    def run_step(mix: str, rate: int, _label: str) -> dict[str, Any]:
        return result(deliveries_per_s=rate * 100.0, lost=0 if rate <= ceilings[mix] else 5)

    sweeps = MixedSweeps(run_step, dict, 25, Console(quiet=True))
    measured = sweeps.run(1)
    assert measured["sweeps"]["messages only"]["saturation_rate"] == 200
    assert measured["sweeps"]["mixed"]["saturation_rate"] == 187
    assert measured["verdict"] is True
    assert measured["ratio"] >= MIX_RATIO_TARGET
    table = mixed_table(measured)
    console = Console(width=200, record=True)
    console.print(table)
    text = console.export_text()
    assert "messages only" in text
    assert "met" in text


def test_the_fanout_summary_leaves_the_mixed_sweeps_to_their_own_table():
    from bench.stats import summarize_fanout

    record = {"ours": {"runs": [{"run": 1, "scenarios": {"mixed": {"sweeps": {}}}}]}}
    assert "mixed" not in str(summarize_fanout(record).get("systems", {}))
