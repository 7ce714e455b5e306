"""The sends scenario's verdicts and sweep, with made-up generator lines (no processes)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from bench.sends import SENDS_P99_MS, SendsSweep, sends_table, step_verdict


def line(rate: int, ack_p99: float, delivery_p99: float, **kw: Any) -> dict[str, Any]:
    return {
        "publish_rate_achieved": rate,
        "publish_errors": 0,
        "lost": 0,
        "disconnects": 0,
        "subs_not_ready": 0,
        "publish_ack_ms": {"p50": 1.0, "p99": ack_p99},
        "latency_ms": {"p50": 1.0, "p99": delivery_p99},
        **kw,
    }


def test_a_step_passes_at_the_bound_and_fails_past_it_with_the_reasons():
    assert step_verdict(line(500, SENDS_P99_MS, SENDS_P99_MS), 500) == (True, [])
    ok, reasons = step_verdict(line(500, SENDS_P99_MS + 0.1, 10.0), 500)
    assert not ok
    assert reasons == [f"acknowledgement p99 {SENDS_P99_MS + 0.1} ms"]
    ok, reasons = step_verdict(line(400, 10.0, 10.0, publish_errors=3, lost=2), 500)
    assert not ok
    assert reasons == ["3 sends refused or unanswered", "sent 400/s of 500/s", "2 deliveries lost"]
    assert step_verdict(None, 500) == (False, ["no result"])


def test_the_sweep_doubles_then_bisects_to_the_best_passing_rate():
    """Made-up stack: acknowledgements stay fast up to 1,100 sends/s."""
    flushes: list[int] = []

    def run_step(rate: int, _label: str) -> dict[str, Any]:
        return line(rate, 5.0 if rate <= 1_100 else 80.0, 5.0)

    def before_step() -> dict[str, Any]:
        flushes.append(1)
        return {}

    result = SendsSweep(run_step, before_step, Console(quiet=True), start=250).run(1)
    rates = [step["rate"] for step in result["steps"]]
    assert rates[:4] == [250, 500, 1_000, 2_000]
    assert result["sends_per_s"] == max(r for r in rates if r <= 1_100) >= 1_000
    assert len(flushes) == len(rates)
    assert result["at_best"]["ack_p99_ms"] == 5.0
    assert "sends/s acknowledged" in str(sends_table(result).caption)
