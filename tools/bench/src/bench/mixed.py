"""The mixed-event scenario of `chatctl bench-fanout`: how far `courseEvents` fan-out goes
when a course's changes are not only sends.

Two saturation sweeps in one run, against the same running stack, with our own generator
(`tools/bench/load/mix.mjs`, courseEvents subscribers; the shared harness's generator knows
only `messageAdded` and sends): messages only (every change a send), then the issue's mix —
70 % sends, 15 % reactions, 10 % edits, 5 % deletes. A step passes with zero loss, no
duplicate, none out of order, no error, and p99 < SLO_P99_MS; the rate doubles from
`start` until a step fails, then is bisected to SWEEP_PRECISION, as the harness's sweep does.
Before every step the cluster's primaries are FLUSHALLed and the machine must be quiet.

The verdict the issue asks for: the saturation with the mix within 10 % of messages-only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.stats import (
    COURSES,
    SATURATION_SUBSCRIBERS,
    SLO_P99_MS,
    SWEEP_STEP_SECONDS,
    sweep_steps,
)

MIXES = {
    "messages only": "send=100",
    "mixed": "send=70,react=15,edit=10,delete=5",
}
# The bound: the mix's saturation at least this share of messages-only.
MIX_RATIO_TARGET = 0.9
MAX_STEPS = 12
STEP_TIMEOUT_SECONDS = 180.0
DRAIN_SECONDS = 5


def load_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "load"


def step_passes(result: dict[str, Any] | None) -> bool:
    if not result:
        return False
    p99 = (result.get("latency_ms") or {}).get("p99")
    return (
        result.get("lost") == 0
        and result.get("duplicates") == 0
        and result.get("out_of_order") == 0
        and result.get("unmatched") == 0
        and not result.get("errors")
        and result.get("subscription_errors") == 0
        and result.get("deliveries", 0) > 0
        and p99 is not None
        and p99 < SLO_P99_MS
    )


@dataclass(frozen=True)
class MixedSweeps:
    """How to run one step: `run_step(mix, rate, label)` runs mix.mjs and returns its JSON
    line (None when it failed); `before_step()` flushes and waits for a quiet machine."""

    run_step: Callable[[str, int, str], dict[str, Any] | None]
    before_step: Callable[[], dict[str, Any]]
    start: int
    progress: Console

    def sweep(self, name: str, mix: str, run: int) -> dict[str, Any]:
        def step(rate: int) -> tuple[bool, dict[str, Any]]:
            before = self.before_step()
            result = self.run_step(mix, rate, f"{name}@{rate} run {run}")
            ok = step_passes(result)
            latency = (result or {}).get("latency_ms") or {}
            self.progress.print(
                f"  [{name}] R={rate}/s: {'pass' if ok else 'FAIL'} — "
                f"{(result or {}).get('deliveries_per_s', 0):,.0f} deliveries/s, "
                f"p99 {latency.get('p99')} ms, lost {(result or {}).get('lost')}, "
                f"errors {(result or {}).get('errors')}"
            )
            return ok, {"before": before, "result": result}

        best, steps = sweep_steps(step, self.start, max_steps=MAX_STEPS)
        at_best = next((s["result"] for s in steps if s["rate"] == best), None)
        return {
            "mix": mix,
            "saturation_rate": best,
            "saturation_deliveries_per_s": (at_best or {}).get("deliveries_per_s"),
            "at_saturation": at_best,
            "steps": steps,
        }

    def run(self, run: int) -> dict[str, Any]:
        results = {name: self.sweep(name, mix, run) for name, mix in MIXES.items()}
        only = results["messages only"]["saturation_deliveries_per_s"]
        mixed = results["mixed"]["saturation_deliveries_per_s"]
        ratio = mixed / only if only and mixed else None
        return {
            "subs": SATURATION_SUBSCRIBERS,
            "courses": COURSES,
            "step_duration_s": SWEEP_STEP_SECONDS,
            "slo_p99_ms": SLO_P99_MS,
            "sweeps": results,
            "ratio": ratio,
            "target_ratio": MIX_RATIO_TARGET,
            "verdict": None if ratio is None else ratio >= MIX_RATIO_TARGET,
        }


def mix_argv(
    urls: list[str], token: str, courses: list[str], mix: str, rate: int, label: str
) -> list[str]:
    return [
        "node",
        str(load_dir() / "mix.mjs"),
        *("--urls", ",".join(urls)),
        *("--token", token),
        *("--courses", ",".join(courses)),
        *("--subs", str(SATURATION_SUBSCRIBERS)),
        *("--rate", str(rate)),
        *("--duration", str(SWEEP_STEP_SECONDS)),
        *("--drain", str(DRAIN_SECONDS)),
        *("--mix", mix),
        *("--label", label),
    ]


def parse_result(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            parsed: dict[str, Any] = json.loads(line)
            return parsed
    return None


def mixed_table(mixed: dict[str, Any]) -> Table:
    """Both sweeps side by side, the ratio and the verdict."""
    table = Table(
        title=f"courseEvents fan-out: saturation at p99 < {SLO_P99_MS:g} ms, zero loss "
        f"(S={mixed['subs']}, C={mixed['courses']}, {mixed['step_duration_s']} s steps)"
    )
    for column in ("workload", "changes/s", "deliveries/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right" if column != "workload" else "left")
    for name, sweep in mixed["sweeps"].items():
        at = sweep.get("at_saturation") or {}
        latency = at.get("latency_ms") or {}
        table.add_row(
            f"{name} ({sweep['mix']})",
            str(sweep["saturation_rate"]),
            f"{sweep['saturation_deliveries_per_s'] or 0:,.0f}",
            f"{latency.get('p50') or 0:.1f}",
            f"{latency.get('p99') or 0:.1f}",
        )
    ratio = mixed.get("ratio")
    verdict = {True: "met", False: "NOT met", None: "not measured"}[mixed.get("verdict")]
    table.caption = (
        f"mixed / messages only = {ratio:.2f} (target ≥ {MIX_RATIO_TARGET:g}): {verdict}"
        if ratio is not None
        else f"ratio not measured: {verdict}"
    )
    return table
