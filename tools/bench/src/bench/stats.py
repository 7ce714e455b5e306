"""The benchmarks' summarizers: plain functions from measured numbers to the numbers a
report shows — percentiles, step summaries, the saturation sweep's verdicts, the targets,
medians over runs, a profile's top frames. No processes, no clock, no I/O: unit-tested with
made-up numbers (tests/test_stats.py)."""

from __future__ import annotations

import array
import contextlib
import math
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeGuard

# -- percentiles --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    count: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None

    @classmethod
    def of(cls, samples_seconds: Sequence[float]) -> Latency:
        ordered = sorted(samples_seconds)
        if not ordered:
            return cls(0, None, None, None, None)

        def rank(fraction: float) -> float:  # nearest rank
            return round(ordered[max(1, math.ceil(fraction * len(ordered))) - 1] * 1000, 3)

        return cls(
            count=len(ordered),
            p50_ms=rank(0.50),
            p99_ms=rank(0.99),
            max_ms=round(ordered[-1] * 1000, 3),
            mean_ms=round(sum(ordered) / len(ordered) * 1000, 3),
        )


def samples(*blobs: bytes) -> array.array[float]:
    """Seconds sent by client processes as `array('d')` bytes, merged."""
    merged: array.array[float] = array.array("d")
    for blob in blobs:
        merged.frombytes(blob)
    return merged


# -- `chatctl bench`: sends -----------------------------------------------------------------------

# The target for one chat process on the 2-core bench machine.
TARGET_SENDS_PER_SECOND = 3_000
TARGET_P99_MS = 20.0


@dataclass
class SendStep:
    concurrency: int
    client_processes: int
    duration_seconds: float
    acknowledged: int
    sends_per_second: float
    latency: Latency
    server_mean_ms: float | None
    errors: dict[str, int]
    cpu_percent: dict[str, float | None]
    chat_threads_cpu_percent: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        data = asdict(self)
        data["sends_per_second"] = round(self.sends_per_second, 1)
        return data


def sends_target(steps: Sequence[SendStep]) -> dict[str, Any]:
    """Whether a step met the target (rate and p99 together), and the fastest step within
    the p99 target."""
    within_p99 = [
        s for s in steps if s.latency.p99_ms is not None and s.latency.p99_ms <= TARGET_P99_MS
    ]
    best = max(within_p99, key=lambda s: s.sends_per_second, default=None)
    return {
        "sends_per_second": TARGET_SENDS_PER_SECOND,
        "p99_ms": TARGET_P99_MS,
        "met": any(s.sends_per_second >= TARGET_SENDS_PER_SECOND for s in within_p99),
        "best_within_p99": None
        if best is None
        else {"concurrency": best.concurrency, "sends_per_second": round(best.sends_per_second)},
    }


# -- `chatctl bench --profile`: py-spy's collapsed stacks ------------------------------------------

PROFILE_TOP_FRAMES = 15
FRAME = re.compile(r"^(?P<name>.*) \((?P<path>.*?)(?::(?P<line>\d+))?\)$")


def read_folded(text: str) -> dict[tuple[str, ...], int]:
    """py-spy's `--format raw` (collapsed stacks: `a;b;c count` per line)."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return dict(stacks)


def short_path(path: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3."):
        if marker in path:
            rest = path.split(marker, 1)[1]
            return rest.split("/", 1)[1] if marker == "/lib/python3." else rest
    return path


def function_of(frame: str) -> str:
    """`name (path:line)` → `name (short path)`: a function, whatever line was running."""
    match = FRAME.match(frame)
    if match is None:
        return frame
    return f"{match['name']} ({short_path(match['path'])})"


# Frames under which everything runs (interpreter start, the event loop, thread start):
# left out of the "total" ranking, where they would only fill the top rows.
SCAFFOLDING = re.compile(
    r"^(_run_module_as_main|_run_code|<module>|main|run|Runner\.run|"
    r"BaseEventLoop\.(run_forever|run_until_complete|_run_once)|"
    r"Thread\.(_bootstrap|_bootstrap_inner)) "
)


def summarize_profile(stacks: dict[tuple[str, ...], int]) -> dict[str, Any]:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for stack, count in stacks.items():
        functions = [function_of(f) for f in stack]
        own[functions[-1]] += count
        for name in set(functions):
            if not SCAFFOLDING.match(name):
                total[name] += count
    sampled = sum(stacks.values())

    def top(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": n, "percent": round(n / sampled * 100, 1)}
            for name, n in counter.most_common(PROFILE_TOP_FRAMES)
        ]

    return {"samples": sampled, "top_own": top(own), "top_total": top(total)}


# -- `chatctl bench-retime` -------------------------------------------------------------------------


@dataclass(frozen=True)
class RetimeStep:
    batch_size: int
    ttl_seconds: int
    seconds: float
    batches: int
    retimed: int
    removed: int
    verified: int  # messages whose PTTL matched timestamp + TTL afterwards

    @property
    def messages_per_second(self) -> float:
        return self.retimed / self.seconds if self.seconds else 0.0

    @property
    def milliseconds_per_batch(self) -> float:
        """About how long each script holds the course's Redis node (sends to courses on
        that node wait that long at most)."""
        return 1000 * self.seconds / self.batches if self.batches else 0.0

    def record(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "messages_per_second": self.messages_per_second,
            "milliseconds_per_batch": self.milliseconds_per_batch,
        }


# -- `chatctl bench-fanout`: the harness's tools' JSON lines -----------------------------------------

# The harness README's scenarios, unchanged, so the numbers line up with the peers'.
COURSES = 10
LATENCY_SUBSCRIBERS = 200
LATENCY_RATE = 200
LATENCY_SECONDS = 20
# Every message reaches the subscribers of its course.
LATENCY_OFFERED_DELIVERIES_PER_SECOND = LATENCY_RATE * LATENCY_SUBSCRIBERS // COURSES
SATURATION_SUBSCRIBERS = 1000
SWEEP_STEP_SECONDS = 10
SLO_P99_MS = 100.0
SWEEP_PRECISION = 0.1
MEMORY_CONNECTIONS = 2000

# Issue 17's targets. Ratios are of ours to what the target holds it against.
TARGET_LATENCY_VS_BEST_PEER = 1.0  # p50 and p99, ours through the gateway
TARGET_GATEWAY_LATENCY_VS_DIRECT = 1.5  # p50 and p99
TARGET_SATURATION_VS_BEST_PEER = 5.0  # deliveries/s at the SLO, ours direct
TARGET_CPU_PER_1K_VS_BEST_PEER = 0.25  # server (GraphQL + chat) CPU per 1,000 deliveries/s
TARGET_GATEWAY_SATURATION_VS_DIRECT = 0.75  # deliveries/s at the SLO
TARGET_KB_PER_IDLE_SOCKET = 15.0  # ours direct

# Our system's names in the summaries and labels (the peers' come from run-peers.sh):
# straight to the GraphQL processes (as the peers are measured), and through the Envoy
# gateway (as deployed).
OURS = "nextcampus"
OURS_GATEWAY = "nextcampus-gateway"
# Where a run record of `chatctl bench-fanout` keeps the scenarios through the gateway (those
# straight to the GraphQL processes are at its top level).
GATEWAY_PART = "gateway"


def run_label(kind: str, run: int, system: str = OURS) -> str:
    """The label of our `run` of a scenario, as the peers' are: `<scenario>:<system>:<run>`."""
    return f"{kind}:{system}:{run}"


def our_parts(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each of our systems measured in a run record, and the part of the record holding its
    `scenarios`: direct, then through the gateway when it was measured."""
    parts = {OURS: run}
    gateway = run.get(GATEWAY_PART)
    if isinstance(gateway, dict):
        parts[OURS_GATEWAY] = gateway
    return parts


def dig(data: Any, *path: str) -> Any:
    """`data[a][b]…`, or None where a level is missing or not a dict."""
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def cpu_of(line: Any, group: str) -> Any:
    """CPU % of a watched group (`server`, `redis`, …) in a tool's JSON line."""
    return dig(line, "cpu", group, "cpu_pct")


def summarize_latency(line: dict[str, Any]) -> dict[str, Any]:
    return {
        "error": line.get("error"),
        "offered_deliveries_per_s": LATENCY_OFFERED_DELIVERIES_PER_SECOND,
        "deliveries_per_s": line.get("delivered_per_s"),
        "published": line.get("published"),
        "publish_errors": line.get("publish_errors"),
        "p50_ms": dig(line, "latency_ms", "p50"),
        "p99_ms": dig(line, "latency_ms", "p99"),
        "max_ms": dig(line, "latency_ms", "max"),
        "publish_ack_p99_ms": dig(line, "publish_ack_ms", "p99"),
        "lost": line.get("lost"),
        "duplicates": line.get("duplicates"),
        "out_of_order": line.get("out_of_order"),
        "disconnects": line.get("disconnects"),
        "subs_not_ready": line.get("subs_not_ready"),
        "server_cpu_pct": cpu_of(line, "server"),
        "chat_cpu_pct": cpu_of(line, "chat"),
        "redis_cpu_pct": cpu_of(line, "redis"),
        "gateway_cpu_pct": cpu_of(line, "gateway"),
        "generator_cpu_pct": dig(line, "gen", "cpu_pct_total"),
        "machine_busy_pct": dig(line, "cpu", "machine_busy_pct"),
        "other_cpu_pct": dig(line, "cpu", "other_pct"),
    }


def step_passes(step: dict[str, Any], rate: float) -> bool:
    """sweep.js's rule, for a sweep that did not get to print its summary."""
    p99 = dig(step, "latency_ms", "p99")
    ready = step.get("ready") or {}
    return (
        not step.get("error")
        and step.get("lost") == 0
        and step.get("publish_errors") == 0
        and p99 is not None
        and p99 < SLO_P99_MS
        and (step.get("publish_rate_achieved") or 0) >= 0.98 * rate
        and not step.get("subs_not_ready")
        and ready.get("subs", 0) >= ready.get("of", 0)
        and not step.get("disconnects")
    )


def sweep_from_steps(steps: Sequence[dict[str, Any]], label: str) -> dict[str, Any]:
    """A sweep summary rebuilt from its step log (the sweep was stopped before the end)."""
    # A step's rate comes from its label: a step that failed outright carries nothing else.
    rates: dict[int, float] = {}
    for step in steps:
        prefix, _, rate = str(step.get("label", "")).rpartition("@")
        with contextlib.suppress(ValueError):
            if prefix == label:
                rates[id(step)] = float(rate)
    mine = [s for s in steps if id(s) in rates]
    passed = [s for s in mine if step_passes(s, rates[id(s)])]
    failed = [rates[id(s)] for s in mine if s not in passed]
    best = max(passed, key=lambda s: rates[id(s)], default=None)
    return {
        "label": label,
        "error": "the sweep did not finish: summary rebuilt from its steps",
        "max_rate_pass": rates[id(best)] if best else None,
        "first_rate_fail": min(failed, default=None),
        "at_max_full": best,
        "steps": [{"rate": rates[id(s)], "pass": s in passed, "reasons": []} for s in mine],
    }


def per_thousand(cpu_pct: Sequence[Any], deliveries_per_s: Any) -> float | None:
    """CPU % (100 = one core) per 1,000 deliveries/s: what one delivery costs, comparable
    across systems and rates."""
    if not isinstance(deliveries_per_s, int | float) or deliveries_per_s <= 0:
        return None
    known = [v for v in cpu_pct if isinstance(v, int | float)]
    return round(sum(known) / deliveries_per_s * 1000, 2) if known else None


def summarize_saturation(line: dict[str, Any]) -> dict[str, Any]:
    at = line.get("at_max_full") or {}
    rate = line.get("max_rate_pass")
    steps = line.get("steps") or []
    first_fail = line.get("first_rate_fail")
    fail_reasons = next((s.get("reasons") for s in steps if s.get("rate") == first_fail), None)
    return {
        "error": line.get("error"),
        "max_rate_pass": rate,
        "first_rate_fail": first_fail,
        "first_fail_reasons": fail_reasons,
        "nominal_deliveries_per_s": (
            rate * SATURATION_SUBSCRIBERS // COURSES if isinstance(rate, int | float) else None
        ),
        "deliveries_per_s": at.get("delivered_per_s"),
        "p50_ms": dig(at, "latency_ms", "p50"),
        "p99_ms": dig(at, "latency_ms", "p99"),
        "max_ms": dig(at, "latency_ms", "max"),
        "lost": at.get("lost"),
        "duplicates": at.get("duplicates"),
        "out_of_order": at.get("out_of_order"),
        "server_cpu_pct": cpu_of(at, "server"),
        "chat_cpu_pct": cpu_of(at, "chat"),
        "redis_cpu_pct": cpu_of(at, "redis"),
        "gateway_cpu_pct": cpu_of(at, "gateway"),
        "generator_cpu_pct": dig(at, "gen", "cpu_pct_total"),
        "machine_busy_pct": dig(at, "cpu", "machine_busy_pct"),
        "other_cpu_pct": dig(at, "cpu", "other_pct"),
        "server_cpu_pct_per_1k_deliveries": per_thousand(
            [cpu_of(at, "server"), cpu_of(at, "chat")], at.get("delivered_per_s")
        ),
        "generator_cpu_pct_per_1k_deliveries": per_thousand(
            [dig(at, "gen", "cpu_pct_total")], at.get("delivered_per_s")
        ),
        "steps": len(steps),
    }


def summarize_memory(line: dict[str, Any]) -> dict[str, Any]:
    return {
        "error": line.get("error"),
        "conns": line.get("conns"),
        "opened": line.get("opened"),
        "open_failed": line.get("open_failed"),
        "all_verified": line.get("all_verified"),
        "disconnects": line.get("disconnects"),
        "kb_per_conn": line.get("kb_per_conn"),
        "kb_per_conn_2s_later": line.get("kb_per_conn_2s_later"),
        "kb_per_conn_per_pid": line.get("kb_per_conn_per_pid"),
    }


SUMMARIZERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "latency": summarize_latency,
    "saturation": summarize_saturation,
    "memory": summarize_memory,
}


def is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def combine_runs(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One summary of several runs: the median of every number (and its [min, max] under
    `range`), else the first run's value."""
    combined: dict[str, Any] = {"runs": len(runs)}
    ranges: dict[str, list[float]] = {}
    for key in runs[0]:
        values = [run.get(key) for run in runs]
        numbers: list[float] = [v for v in values if is_number(v)]
        if len(runs) > 1 and numbers:
            combined[key] = statistics.median(numbers)
            ranges[key] = [min(numbers), max(numbers)]
        else:
            combined[key] = values[0]
    if len(runs) > 1:
        combined["range"] = ranges
        combined["per_run"] = list(runs)
    return combined


def summarize_system(lines_by_kind: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        kind: combine_runs([SUMMARIZERS[kind](line) for line in lines])
        for kind, lines in lines_by_kind.items()
        if lines
    }


def group_peer_lines(raw: Iterable[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """run-peers.sh's raw lines by peer and scenario (labels `<scenario>:<peer>:<run>`)."""
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for line in raw:
        kind, _, rest = str(line.get("label", "")).partition(":")
        peer = rest.partition(":")[0]
        if kind in SUMMARIZERS and peer:
            grouped.setdefault(peer, {}).setdefault(kind, []).append(line)
    return grouped


def _our_lines(runs: Sequence[dict[str, Any]], system: str) -> dict[str, list[dict[str, Any]]]:
    """The tools' result lines of one of our systems over the runs, by scenario."""
    lines: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        part = our_parts(run).get(system)
        for kind, scenario in (dig(part, "scenarios") or {}).items():
            if kind not in SUMMARIZERS:
                continue  # ours alone (the mixed-event sweeps): reported by bench/mixed.py
            raw = scenario.get("raw")
            if raw is None and kind == "saturation":
                label = run_label("saturation", run["run"], system)
                raw = sweep_from_steps(scenario.get("steps") or [], label)
            if raw is None:
                raw = {"error": f"no result (exit {scenario.get('returncode')})"}
            lines.setdefault(kind, []).append(raw)
    return lines


# Our own sweeps (mixed events, sends through the gateway) stop doubling past this rate.
MAX_SWEEP_RATE = 20_000


def next_rate(
    passed: list[int], failed: list[int], start: int, max_rate: int = MAX_SWEEP_RATE
) -> int | None:
    """The sweep's next rate: double until a step fails, then bisect between the best pass and
    the lowest failure until they are within SWEEP_PRECISION (None: done)."""
    best = max(passed, default=None)
    lowest_failure = min(failed, default=None)
    if lowest_failure is None:
        rate = start if best is None else best * 2
        return rate if rate <= max_rate else None
    if best is None:
        rate = lowest_failure // 2
        return rate if rate >= 1 and rate not in failed else None
    if (lowest_failure - best) / best <= SWEEP_PRECISION:
        return None
    return (best + lowest_failure) // 2


def sweep_steps(
    run_step: Callable[[int], tuple[bool, dict[str, Any]]],
    start: int,
    *,
    max_rate: int = MAX_SWEEP_RATE,
    max_steps: int,
) -> tuple[int | None, list[dict[str, Any]]]:
    """Our sweeps' loop: `run_step(rate)` runs one step and says whether it passed, with what
    to keep of it; the rates come from next_rate until it is done or `max_steps` ran. The
    best passing rate (None: none passed) and every step (its rate, verdict and record)."""
    passed: list[int] = []
    failed: list[int] = []
    steps: list[dict[str, Any]] = []
    rate: int | None = start
    while rate is not None and len(steps) < max_steps:
        ok, record = run_step(rate)
        (passed if ok else failed).append(rate)
        steps.append({"rate": rate, "passed": ok, **record})
        rate = next_rate(passed, failed, start, max_rate)
    return max(passed, default=None), steps


# -- where the median goes: the services' hop histograms (nextcampus_common.hops) --------------

HOP_BUCKET = re.compile(
    r"^nextcampus_\w+?_hop_seconds_bucket\{hop=(?P<hop>\w+),le=(?P<le>[^}]+)\}$"
)


def hop_medians(scrapes: Any) -> dict[str, float]:
    """Per hop, the median milliseconds since the load generator sent a message, from the
    /metrics scrapes of our processes ({process: {sample: value}}): the buckets of every
    process summed, the median interpolated within its bucket. Hops nobody passed are
    left out."""
    cumulative: dict[str, dict[float, float]] = {}
    for samples in (scrapes or {}).values():
        if not isinstance(samples, dict):
            continue  # unreachable at the time
        for name, value in samples.items():
            match = HOP_BUCKET.match(name)
            if match is not None:
                counts = cumulative.setdefault(match["hop"], {})
                bound = float(match["le"])
                counts[bound] = counts.get(bound, 0.0) + value
    medians: dict[str, float] = {}
    for hop, counts in cumulative.items():
        buckets = sorted(counts.items())
        half = buckets[-1][1] / 2
        if half <= 0:
            continue
        lower_bound, lower_count = 0.0, 0.0
        for bound, count in buckets:
            if count >= half:
                median = (
                    lower_bound
                    if math.isinf(bound)
                    else lower_bound
                    + (bound - lower_bound) * (half - lower_count) / (count - lower_count)
                )
                medians[hop] = round(median * 1000, 3)
                break
            lower_bound, lower_count = bound, count
    return medians


def our_hops(runs: Sequence[dict[str, Any]], system: str) -> dict[str, float]:
    """Hop medians of the latency scenario of one of our systems, the median over runs."""
    per_run = [
        hop_medians(dig(our_parts(run).get(system), "metrics", "after latency")) for run in runs
    ]
    hops = {hop for medians in per_run for hop in medians}
    return {hop: statistics.median(m[hop] for m in per_run if hop in m) for hop in sorted(hops)}


def summarize_fanout(results: dict[str, Any]) -> dict[str, Any]:
    """Every system's scenarios summarized (medians over runs), ours against the best peer
    and our targets' verdicts, from the results record of `chatctl bench-fanout`."""
    systems: dict[str, Any] = {}
    runs = dig(results, "ours", "runs") or []
    hops: dict[str, dict[str, float]] = {}
    for system in (OURS, OURS_GATEWAY):
        lines = _our_lines(runs, system)
        if lines:
            systems[system] = summarize_system(lines)
            hops[system] = our_hops(runs, system)
    peers = results.get("peers") or {}
    for peer, lines_by_kind in group_peer_lines(peers.get("raw") or []).items():
        systems[peer] = summarize_system(lines_by_kind)
    return {
        "systems": systems,
        "versus_best_peer": versus_best_peer(systems),
        "targets": fanout_targets(systems),
        "hops_ms": hops,
    }


# -- ours against the best peer, and the targets -------------------------------------------------

# The figures compared with the best peer's: (scenario, key in its summary, lower is better).
PEER_FIGURES: dict[str, tuple[str, str, bool]] = {
    "deliveries_per_s_at_slo": ("saturation", "deliveries_per_s", False),
    "server_cpu_pct_per_1k_deliveries": ("saturation", "server_cpu_pct_per_1k_deliveries", True),
    "latency_p50_ms": ("latency", "p50_ms", True),
    "latency_p99_ms": ("latency", "p99_ms", True),
    "kb_per_idle_socket": ("memory", "kb_per_conn", True),
}


def figure(systems: dict[str, Any], system: str, figure_name: str) -> float | None:
    kind, key, _ = PEER_FIGURES[figure_name]
    value = dig(systems.get(system), kind, key)
    return value if is_number(value) else None


def peer_names(systems: dict[str, Any]) -> list[str]:
    return [name for name in systems if name not in (OURS, OURS_GATEWAY)]


def best_peer(systems: dict[str, Any], figure_name: str) -> dict[str, Any] | None:
    """The peer with the best value of a figure (the lowest, or the highest deliveries/s)
    and that value; None when no peer has it."""
    lower_is_better = PEER_FIGURES[figure_name][2]
    measured = [
        (value, name)
        for name in peer_names(systems)
        if (value := figure(systems, name, figure_name)) is not None
    ]
    if not measured:
        return None
    value, name = min(measured) if lower_is_better else max(measured)
    return {"system": name, "value": value}


def ratio(ours: float | None, against: float | None) -> float | None:
    if ours is None or against is None or against <= 0:
        return None
    return ours / against


def versus_best_peer(systems: dict[str, Any]) -> dict[str, Any]:
    """Every figure of `PEER_FIGURES`: the best peer's value, and each of our systems'
    value and ratio to it (ours ÷ best peer)."""
    compared: dict[str, Any] = {}
    for name in PEER_FIGURES:
        best = best_peer(systems, name)
        ours: dict[str, Any] = {}
        for system in (OURS, OURS_GATEWAY):
            if system in systems:
                value = figure(systems, system, name)
                best_value = None if best is None else best["value"]
                ours[system] = {"value": value, "ratio": ratio(value, best_value)}
        compared[name] = {"best_peer": best, "ours": ours}
    return compared


def _within(value: float, bound: float, at_least: bool) -> bool:
    """`value` ≥ or ≤ `bound`, exactly at the bound counting as met (whatever the float
    rounding of the division that made `value`)."""
    if math.isclose(value, bound, rel_tol=1e-9):
        return True
    return value >= bound if at_least else value <= bound


def held_against(
    ours: float | None, against: dict[str, Any] | None, bound: float, at_least: bool
) -> dict[str, Any]:
    """One figure of a target on a ratio: ours ÷ `against` (`{"system", "value"}`, None when
    nothing was measured to hold it against) within `bound`."""
    compared = ratio(ours, None if against is None else against["value"])
    return {
        "ours": ours,
        "against": against,
        "ratio": compared,
        "met": None if compared is None else _within(compared, bound, at_least),
    }


def held_to(ours: float | None, bound: float, at_least: bool) -> dict[str, Any]:
    """One figure of a target on its own value, within `bound`."""
    return {
        "ours": ours,
        "against": None,
        "ratio": None,
        "met": None if ours is None else _within(ours, bound, at_least),
    }


def _target(text: str, system: str, bound: float, figures: dict[str, Any]) -> dict[str, Any]:
    """A target on `system`'s figures: met when every figure is, None when one is unknown."""
    verdicts = [judged["met"] for judged in figures.values()]
    return {
        "target": text,
        "system": system,
        "bound": bound,
        "figures": figures,
        "met": None if None in verdicts else all(verdicts),
    }


def fanout_targets(systems: dict[str, Any]) -> dict[str, Any]:
    """Our numbers against issue 17's targets: per target its text, which of our systems it
    judges, and per figure ours, what it is held against (the best peer or ours direct), the
    ratio and the verdict; `met` is None where a number is missing."""

    def against_best_peer(
        system: str, names: Sequence[str], bound: float, at_least: bool
    ) -> dict[str, Any]:
        return {
            name: held_against(
                figure(systems, system, name), best_peer(systems, name), bound, at_least
            )
            for name in names
        }

    def against_direct(names: Sequence[str], bound: float, at_least: bool) -> dict[str, Any]:
        return {
            name: held_against(
                figure(systems, OURS_GATEWAY, name),
                {"system": OURS, "value": figure(systems, OURS, name)},
                bound,
                at_least,
            )
            for name in names
        }

    latency = ("latency_p50_ms", "latency_p99_ms")
    saturation, cpu = ("deliveries_per_s_at_slo",), ("server_cpu_pct_per_1k_deliveries",)
    rate = f"{LATENCY_OFFERED_DELIVERIES_PER_SECOND:,} deliveries/s"
    slo = f"at the SLO (zero loss, p99 < {SLO_P99_MS:g} ms)"
    return {
        "latency_vs_best_peer": _target(
            f"through the gateway, p50 and p99 at {rate} ≤ the best peer's",
            OURS_GATEWAY,
            TARGET_LATENCY_VS_BEST_PEER,
            against_best_peer(OURS_GATEWAY, latency, TARGET_LATENCY_VS_BEST_PEER, False),
        ),
        "gateway_latency_vs_direct": _target(
            f"through the gateway, p50 and p99 at {rate} ≤ "
            f"{TARGET_GATEWAY_LATENCY_VS_DIRECT:g}× direct's",
            OURS_GATEWAY,
            TARGET_GATEWAY_LATENCY_VS_DIRECT,
            against_direct(latency, TARGET_GATEWAY_LATENCY_VS_DIRECT, False),
        ),
        "saturation_vs_best_peer": _target(
            f"deliveries/s {slo} ≥ {TARGET_SATURATION_VS_BEST_PEER:g}× the best peer's",
            OURS,
            TARGET_SATURATION_VS_BEST_PEER,
            against_best_peer(OURS, saturation, TARGET_SATURATION_VS_BEST_PEER, True),
        ),
        "cpu_per_1k_vs_best_peer": _target(
            "server CPU (GraphQL + chat) per 1,000 deliveries/s at the SLO ≤ ¼ of the best peer's",
            OURS,
            TARGET_CPU_PER_1K_VS_BEST_PEER,
            against_best_peer(OURS, cpu, TARGET_CPU_PER_1K_VS_BEST_PEER, False),
        ),
        "gateway_saturation_vs_direct": _target(
            f"through the gateway, deliveries/s {slo} ≥ "
            f"{TARGET_GATEWAY_SATURATION_VS_DIRECT:g}× direct's",
            OURS_GATEWAY,
            TARGET_GATEWAY_SATURATION_VS_DIRECT,
            against_direct(saturation, TARGET_GATEWAY_SATURATION_VS_DIRECT, True),
        ),
        "kb_per_idle_socket": _target(
            f"≤ {TARGET_KB_PER_IDLE_SOCKET:g} KB of RSS per idle subscribed socket "
            f"({MEMORY_CONNECTIONS:,} sockets)",
            OURS,
            TARGET_KB_PER_IDLE_SOCKET,
            {
                "kb_per_idle_socket": held_to(
                    figure(systems, OURS, "kb_per_idle_socket"), TARGET_KB_PER_IDLE_SOCKET, False
                )
            },
        ),
    }
