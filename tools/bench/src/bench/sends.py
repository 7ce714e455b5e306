"""The sends scenario of `chatctl bench-fanout`: how many `sendMessage` mutations per second
the whole local stack acknowledges through the Envoy gateway (GraphQL over WebSocket → chat
→ Redis with its replica wait) at p99 ≤ SENDS_P99_MS.

The harness's own generator (`load/gen.js`) publishes at R msgs/s, open loop, from one
publisher socket per course (10), each send a mutation on its socket, with one subscriber per
course so that every send is also delivered. A step passes when every send was acknowledged
without error at ≥ 98 % of R, nothing was lost, and both the acknowledgement's p99
(`publish_ack_ms`) and the delivery's are at most SENDS_P99_MS. The rate doubles from
`start` until a step fails, then is bisected to SWEEP_PRECISION (stats.next_rate). Before
every step the cluster's primaries are FLUSHALLed and the machine must be quiet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.stats import COURSES, dig, sweep_steps

SENDS_P99_MS = 50.0
SENDS_SUBSCRIBERS = COURSES  # one per course: every send is delivered once
SENDS_STEP_SECONDS = 10
SENDS_START_RATE = 250
SENDS_MAX_RATE = 16_000
MAX_STEPS = 12
# Of the offered rate, the share the generator must have sent for a step to count.
ACHIEVED_SHARE = 0.98


def step_verdict(line: dict[str, Any] | None, rate: int) -> tuple[bool, list[str]]:
    """Whether a gen.js step at `rate` passed, and why not."""
    if not line:
        return False, ["no result"]
    reasons: list[str] = []
    ack_p99 = dig(line, "publish_ack_ms", "p99")
    delivery_p99 = dig(line, "latency_ms", "p99")
    if line.get("error"):
        reasons.append(str(line["error"]))
    if line.get("publish_errors"):
        reasons.append(f"{line['publish_errors']} sends refused or unanswered")
    if (line.get("publish_rate_achieved") or 0) < ACHIEVED_SHARE * rate:
        reasons.append(f"sent {line.get('publish_rate_achieved')}/s of {rate}/s")
    if line.get("lost"):
        reasons.append(f"{line['lost']} deliveries lost")
    if line.get("disconnects") or line.get("subs_not_ready"):
        reasons.append("sockets dropped or not ready")
    if ack_p99 is None or ack_p99 > SENDS_P99_MS:
        reasons.append(f"acknowledgement p99 {ack_p99} ms")
    if delivery_p99 is None or delivery_p99 > SENDS_P99_MS:
        reasons.append(f"delivery p99 {delivery_p99} ms")
    return not reasons, reasons


@dataclass(frozen=True)
class SendsSweep:
    """`run_step(rate, label)` runs gen.js and returns its JSON line (None when it failed);
    `before_step()` flushes and waits for a quiet machine."""

    run_step: Callable[[int, str], dict[str, Any] | None]
    before_step: Callable[[], dict[str, Any]]
    progress: Console
    start: int = SENDS_START_RATE

    def run(self, run: int) -> dict[str, Any]:
        def step(rate: int) -> tuple[bool, dict[str, Any]]:
            before = self.before_step()
            line = self.run_step(rate, f"sends@{rate} run {run}")
            ok, reasons = step_verdict(line, rate)
            self.progress.print(
                f"  [sends] R={rate}/s: {'pass' if ok else 'FAIL'} — ack p99 "
                f"{dig(line, 'publish_ack_ms', 'p99')} ms, delivery p99 "
                f"{dig(line, 'latency_ms', 'p99')} ms{'; ' + '; '.join(reasons) if reasons else ''}"
            )
            return ok, {"reasons": reasons, "before": before, "result": line}

        best, steps = sweep_steps(step, self.start, max_rate=SENDS_MAX_RATE, max_steps=MAX_STEPS)
        at_best = next((s["result"] for s in steps if s["rate"] == best), None)
        return {
            "p99_ms": SENDS_P99_MS,
            "subs": SENDS_SUBSCRIBERS,
            "courses": COURSES,
            "step_duration_s": SENDS_STEP_SECONDS,
            "sends_per_s": best,
            "at_best": summarize_step(at_best),
            "steps": steps,
        }


def summarize_step(line: dict[str, Any] | None) -> dict[str, Any] | None:
    if line is None:
        return None
    return {
        "sent_per_s": line.get("publish_rate_achieved"),
        "ack_p50_ms": dig(line, "publish_ack_ms", "p50"),
        "ack_p99_ms": dig(line, "publish_ack_ms", "p99"),
        "delivery_p50_ms": dig(line, "latency_ms", "p50"),
        "delivery_p99_ms": dig(line, "latency_ms", "p99"),
        "cpu_pct": {
            group: dig(line, "cpu", group, "cpu_pct")
            for group in ("server", "chat", "redis", "gateway")
        },
        "generator_cpu_pct": dig(line, "gen", "cpu_pct_total"),
    }


def sends_table(sends: dict[str, Any]) -> Table:
    table = Table(
        title=f"Sends through the gateway (GraphQL sendMessage over WebSocket, {COURSES} "
        f"publisher sockets, one subscriber per course): the highest rate with zero loss and "
        f"acknowledgement and delivery p99 ≤ {SENDS_P99_MS:g} ms",
        title_justify="left",
    )
    for column in (
        "R sends/s",
        "pass",
        "ack p50 / p99 ms",
        "delivery p50 / p99 ms",
        "CPU % GraphQL / chat / redis / Envoy",
        "why it failed",
    ):
        table.add_column(column, justify="left" if column == "why it failed" else "right")
    for step in sends.get("steps") or []:
        at = summarize_step(step.get("result")) or {}
        cpu = at.get("cpu_pct") or {}
        table.add_row(
            f"{step['rate']:,}",
            "pass" if step["passed"] else "fail",
            f"{at.get('ack_p50_ms')} / {at.get('ack_p99_ms')}",
            f"{at.get('delivery_p50_ms')} / {at.get('delivery_p99_ms')}",
            " / ".join(
                f"{cpu.get(g):.0f}" if isinstance(cpu.get(g), int | float) else "—"
                for g in ("server", "chat", "redis", "gateway")
            ),
            "; ".join(step.get("reasons") or []),
        )
    best = sends.get("sends_per_s")
    table.caption = (
        f"{best:,} sends/s acknowledged at p99 ≤ {SENDS_P99_MS:g} ms" if best else "no step passed"
    )
    return table
