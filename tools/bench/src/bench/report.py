"""What the benchmarks show and keep: numbers formatted for people, the tables and progress
lines of every benchmark, the profile's flame graph, and the JSON results file."""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import json
import signal
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from bench.stats import (
    LATENCY_OFFERED_DELIVERIES_PER_SECOND,
    LATENCY_RATE,
    LATENCY_SUBSCRIBERS,
    MEMORY_CONNECTIONS,
    OURS,
    OURS_GATEWAY,
    PROFILE_TOP_FRAMES,
    SLO_P99_MS,
    TARGET_CPU_PER_1K_VS_BEST_PEER,
    TARGET_GATEWAY_LATENCY_VS_DIRECT,
    TARGET_GATEWAY_SATURATION_VS_DIRECT,
    TARGET_KB_PER_IDLE_SOCKET,
    TARGET_P99_MS,
    TARGET_SATURATION_VS_BEST_PEER,
    TARGET_SENDS_PER_SECOND,
    RetimeStep,
    SendStep,
    cpu_of,
    dig,
    function_of,
    is_number,
    our_parts,
    peer_names,
)

# -- numbers --------------------------------------------------------------------------------------


def format_ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def format_pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def format_errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "0"


def number(value: Any, digits: int = 0) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}"
    return str(value)


def slash(*values: str) -> str:
    return " / ".join(values)


def verdict(met: bool | None) -> str:
    if met is None:
        return "[dim]not measured[/dim]"
    return "[green]met[/green]" if met else "[bold red]NOT met[/bold red]"


def times(value: float | None) -> str:
    """A ratio, as `1.23×`."""
    return "—" if value is None else f"{value:.2f}×"


# -- `chatctl bench` ------------------------------------------------------------------------------


def describe_send_step(step: SendStep) -> str:
    return (
        f"{step.sends_per_second:,.0f} sends/s, p50 {format_ms(step.latency.p50_ms)} ms, "
        f"p99 {format_ms(step.latency.p99_ms)} ms, max {format_ms(step.latency.max_ms)} ms, "
        f"errors {format_errors(step.errors)}, chat CPU {format_pct(step.cpu_percent.get('chat'))}%"
    )


def describe_fanout(summary: dict[str, Any]) -> str:
    latency = summary["delivery_latency"]
    return (
        f"{summary['deliveries_per_second']:,.0f} deliveries/s "
        f"(offered {summary['offered_deliveries_per_second']:,.0f}/s), "
        f"p50 {format_ms(latency['p50_ms'])} ms, p99 {format_ms(latency['p99_ms'])} ms, "
        f"missing {summary['missing']}, duplicates {summary['duplicates']}"
    )


def sends_table(steps: Sequence[SendStep]) -> Table:
    table = Table(title="SendMessage — one chat process (client and server share the machine)")
    for name in ("concurrency", "client procs", "sends/s", "p50 ms", "p99 ms", "max ms"):
        table.add_column(name, justify="right")
    table.add_column("server mean ms", justify="right")
    table.add_column("chat CPU %", justify="right")
    table.add_column("redis CPU %", justify="right")
    table.add_column("clients CPU %", justify="right")
    table.add_column("errors")
    for step in steps:
        table.add_row(
            str(step.concurrency),
            str(step.client_processes),
            f"{step.sends_per_second:,.0f}",
            format_ms(step.latency.p50_ms),
            format_ms(step.latency.p99_ms),
            format_ms(step.latency.max_ms),
            format_ms(step.server_mean_ms),
            format_pct(step.cpu_percent.get("chat")),
            format_pct(step.cpu_percent.get("redis")),
            format_pct(step.cpu_percent.get("clients")),
            format_errors(step.errors),
        )
    return table


def sends_target_line(target: dict[str, Any]) -> str:
    """`stats.sends_target`'s verdict in one line."""
    best = target["best_within_p99"]
    return (
        f"target ≥ {TARGET_SENDS_PER_SECOND:,} sends/s with p99 ≤ {TARGET_P99_MS:g} ms: "
        + verdict(target["met"])
        + (
            f" (best within p99: {best['sends_per_second']:,} sends/s at concurrency "
            f"{best['concurrency']})"
            if best
            else " (no step within p99)"
        )
    )


def fanout_table(summary: dict[str, Any]) -> Table:
    table = Table(title="SubscribeMessages fan-out — one chat process")
    table.add_column("measure")
    table.add_column("value", justify="right")
    latency = summary["delivery_latency"]
    cpu = summary["cpu_percent"]
    rows = [
        ("streams live / opened", f"{summary['streams_live']} / {summary['streams']}"),
        ("courses", str(summary["courses"])),
        ("feeds primed (one stream per course first)", "yes" if summary["feeds_primed"] else "no"),
        (
            "published (acknowledged)",
            f"{summary['published']} in {summary['publish_seconds']:.1f} s "
            f"(target {summary['publish_rate_target']:g}/s)",
        ),
        ("publish errors", format_errors(summary["publish_errors"])),
        (
            "publish latency p50 / p99 ms",
            f"{format_ms(summary['publish_latency']['p50_ms'])} / "
            f"{format_ms(summary['publish_latency']['p99_ms'])}",
        ),
        ("offered deliveries/s", f"{summary['offered_deliveries_per_second']:,.0f}"),
        ("received deliveries/s", f"{summary['deliveries_per_second']:,.0f}"),
        ("delivery latency p50 ms", format_ms(latency["p50_ms"])),
        ("delivery latency p99 ms", format_ms(latency["p99_ms"])),
        ("delivery latency max ms", format_ms(latency["max_ms"])),
        (
            "expected / received deliveries",
            f"{summary['expected_deliveries']} / {summary['received_deliveries']}",
        ),
        ("missing", str(summary["missing"])),
        ("duplicates", str(summary["duplicates"])),
        ("delivered although their send failed", str(summary["unexpected"])),
        (
            "streams with every message",
            f"{summary['complete_streams']} / {summary['streams_live']}",
        ),
        ("stream errors", format_errors(summary["stream_errors"])),
        (
            "CPU % chat / redis / clients",
            f"{format_pct(cpu.get('chat'))} / {format_pct(cpu.get('redis'))} / {format_pct(cpu.get('clients'))}",
        ),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def profile_tables(profile: dict[str, Any]) -> list[Table]:
    tables = []
    for key, title in (
        ("top_own", "own samples"),
        ("top_total", "total samples (incl. callees; event loop frames left out)"),
    ):
        table = Table(title=f"chat process under py-spy: top {PROFILE_TOP_FRAMES} by {title}")
        table.add_column("%", justify="right")
        table.add_column("samples", justify="right")
        table.add_column("function")
        for row in profile[key]:
            table.add_row(f"{row['percent']:.1f}", str(row["samples"]), row["function"])
        tables.append(table)
    threads = profile["step"]["chat_threads_cpu_percent"]
    if threads:
        table = Table(title="chat process CPU % by thread during the profiled step")
        table.add_column("thread")
        table.add_column("CPU %", justify="right")
        for name, percent in sorted(threads.items(), key=lambda kv: -kv[1]):
            table.add_row(name, f"{percent:.0f}")
        tables.append(table)
    return tables


# -- `chatctl bench --profile`: the flame graph ---------------------------------------------------


@dataclass
class _Node:
    name: str
    count: int = 0
    children: dict[str, _Node] = field(default_factory=dict)


def flamegraph_svg(stacks: dict[tuple[str, ...], int], title: str, width: int = 1200) -> str:
    """A static flame graph (hover a frame for its samples) of collapsed stacks."""
    root = _Node("all")
    depth = 0
    for stack, count in stacks.items():
        root.count += count
        node = root
        for frame in stack:
            node = node.children.setdefault(frame, _Node(frame))
            node.count += count
        depth = max(depth, len(stack))
    row, pad, font_width = 16, 10, 6.5
    height = (depth + 1) * row + 3 * pad + 20
    scale = (width - 2 * pad) / max(root.count, 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="monospace" font-size="11">',
        f'<rect width="100%" height="100%" fill="#fdfdf6"/>'
        f'<text x="{pad}" y="{pad + 12}" font-size="14">{html.escape(title)} '
        f"({root.count} samples)</text>",
    ]

    def draw(node: _Node, offset: int, level: int) -> None:
        w = node.count * scale
        if w < 0.3:
            return
        x = pad + offset * scale
        y = height - pad - (level + 1) * row
        hashed = zlib.crc32(function_of(node.name).encode())
        color = f"rgb({205 + hashed % 50},{(hashed >> 8) % 200},{(hashed >> 16) % 55})"
        percent = node.count / max(root.count, 1) * 100
        chars = int((w - 4) / font_width)
        label = node.name if len(node.name) <= chars else node.name[: max(chars - 2, 0)] + ".."
        parts.append(
            f"<g><title>{html.escape(node.name)} ({node.count} samples, {percent:.2f}%)</title>"
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" fill="{color}"/>'
            + (
                f'<text x="{x + 2:.1f}" y="{y + 11}">{html.escape(label)}</text>'
                if chars > 2
                else ""
            )
            + "</g>"
        )
        for child in sorted(node.children.values(), key=lambda c: c.name):
            draw(child, offset, level + 1)
            offset += child.count

    draw(root, 0, 0)
    parts.append("</svg>")
    return "\n".join(parts)


# -- `chatctl bench-retime` ------------------------------------------------------------------------


def retime_table(steps: Sequence[RetimeStep], messages: int) -> Table:
    table = Table(
        title=f"TTL change of one course with {messages:,} messages (6-node Redis Cluster)"
    )
    for column in (
        "batch size",
        "round trips",
        "ms per round trip",
        "seconds",
        "messages/s",
        "verified",
    ):
        table.add_column(column, justify="right")
    for step in steps:
        table.add_row(
            f"{step.batch_size:,}",
            f"{step.batches:,}",
            f"{step.milliseconds_per_batch:.1f}",
            f"{step.seconds:.2f}",
            f"{step.messages_per_second:,.0f}",
            f"{step.verified:,} / {step.retimed:,}",
        )
    return table


# -- `chatctl bench-fanout` -------------------------------------------------------------------------


# Each target of `stats.fanout_targets`, in a few words, beside the figures it judges.
TARGET_LABELS = {
    "latency_vs_best_peer": "via Envoy ≤ best peer's",
    "gateway_latency_vs_direct": f"via Envoy ≤ {TARGET_GATEWAY_LATENCY_VS_DIRECT:g}× direct",
    "saturation_vs_best_peer": f"≥ {TARGET_SATURATION_VS_BEST_PEER:g}× best peer's",
    "cpu_per_1k_vs_best_peer": f"server ≤ {TARGET_CPU_PER_1K_VS_BEST_PEER:g}× best peer's",
    "gateway_saturation_vs_direct": (
        f"via Envoy ≥ {TARGET_GATEWAY_SATURATION_VS_DIRECT:g}× direct"
    ),
    "kb_per_idle_socket": f"≤ {TARGET_KB_PER_IDLE_SOCKET:g} KB",
}
SYSTEM_HEADINGS = {
    OURS: f"{OURS} (ours, direct)",
    OURS_GATEWAY: f"{OURS_GATEWAY} (ours, via Envoy)",
}


def versus_best_peer_cell(summary: dict[str, Any], figure: str) -> str:
    """Ours ÷ the best peer's value of a figure, direct and via Envoy, and which peer."""
    compared = summary["versus_best_peer"][figure]
    best = compared["best_peer"]
    if best is None:
        return "—"
    lines = [
        f"{'via Envoy ' if system == OURS_GATEWAY else ''}{times(ours['ratio'])}"
        for system, ours in compared["ours"].items()
    ]
    return "\n".join([*lines, f"[dim]vs {best['system']}[/dim]"])


def target_cell(summary: dict[str, Any], figure: str) -> str:
    """The verdict of every target judging `figure`, one a line, with the target's ratio."""
    lines = []
    for name, target in summary["targets"].items():
        judged = target["figures"].get(figure)
        if judged is None:
            continue
        shown = f" ({times(judged['ratio'])})" if judged["ratio"] is not None else ""
        lines.append(f"{TARGET_LABELS[name]}: {verdict(judged['met'])}{shown}")
    return "\n".join(lines)


# The hops a delivered message passes, in order (nextcampus_common.hops), then its
# acknowledgement's (the send script publishes before the replication wait, so delivery
# does not wait for it): each row's step is from the row before it in its chain.
DELIVERY_HOPS = (
    "graphql_mutation",
    "chat_send",
    "chat_feed",
    "graphql_upstream",
    "graphql_written",
)
ACKNOWLEDGEMENT_HOPS = ("chat_send", "chat_stored", "graphql_acknowledged")


def hop_table(summary: dict[str, Any]) -> Table | None:
    """Where the latency scenario's median goes: per hop, the median ms since the generator
    sent a message, and the step from the hop before; the generator's own p50 last."""
    hops: dict[str, dict[str, float]] = summary.get("hops_ms") or {}
    systems = [name for name, medians in hops.items() if medians]
    if not systems:
        return None
    table = Table(
        title=f"Where the median goes at {LATENCY_OFFERED_DELIVERIES_PER_SECOND:,} "
        "deliveries/s: ms since the generator sent a message (median at each hop; step "
        "from the hop before)",
        title_justify="left",
    )
    table.add_column("hop")
    for name in systems:
        table.add_column(
            "ours, via Envoy" if name == OURS_GATEWAY else "ours, direct", justify="right"
        )

    def cell(system: str, hop: str, before: str | None) -> str:
        medians = hops[system]
        here = medians.get(hop)
        if here is None:
            return "—"
        if before is None or medians.get(before) is None:
            return format_ms(here)
        return f"{format_ms(here)} ({here - medians[before]:+.2f})"

    for chain in (DELIVERY_HOPS, ACKNOWLEDGEMENT_HOPS):
        for index, hop in enumerate(chain):
            if chain is ACKNOWLEDGEMENT_HOPS and index == 0:
                continue  # shown in the delivery chain
            before = chain[index - 1] if index else None
            table.add_row(hop, *(cell(system, hop, before) for system in systems))
        if chain is DELIVERY_HOPS:
            received = []
            for system in systems:
                p50 = dig(summary, "systems", system, "latency", "p50_ms")
                written = hops[system].get(DELIVERY_HOPS[-1])
                step = f" ({p50 - written:+.2f})" if is_number(p50) and written else ""
                received.append(f"{format_ms(p50)}{step}" if is_number(p50) else "—")
            table.add_row("received by the generator (its p50)", *received)
    table.caption = (
        "From the services' hop histograms (HOP_TIMING, nextcampus_common.hops) after the "
        "latency scenario; medians of different hops come from different messages, so steps "
        "are indicative. graphql_acknowledged: SendMessage's answer back in GraphQL."
    )
    return table


def comparison_table(summary: dict[str, Any]) -> Table:
    systems = summary["systems"]
    names = [name for name in (OURS, OURS_GATEWAY) if name in systems] + peer_names(systems)
    table = Table(
        title="Chat fan-out, 2 server processes + Redis, everything on one 2-core machine "
        "(harness gen.js / sweep.js / memprobe.js)",
        title_justify="left",
    )
    table.add_column("measure")
    for name in names:
        table.add_column(SYSTEM_HEADINGS.get(name, name), justify="right")
    table.add_column("ours ÷ best peer", justify="right")
    table.add_column("target: verdict")

    def row(
        label: str,
        render: Callable[[str, dict[str, Any]], str],
        figure: str | None = None,
        target: str = "",
    ) -> None:
        """A measure for every system; with `figure`, ours ÷ the best peer and the verdicts
        of the targets on it, else `target` as it is."""
        table.add_row(
            label,
            *[render(n, systems.get(n) or {}) for n in names],
            versus_best_peer_cell(summary, figure) if figure else "",
            target_cell(summary, figure) if figure else target,
        )

    def sat(key: str) -> Callable[[dict[str, Any]], Any]:
        return lambda s: dig(s, "saturation", key)

    def lat(key: str) -> Callable[[dict[str, Any]], Any]:
        return lambda s: dig(s, "latency", key)

    def spread(kind: str, key: str, digits: int = 0) -> Callable[[str, dict[str, Any]], str]:
        """The median, and [min–max] over the runs when there are several."""

        def render(_: str, s: dict[str, Any]) -> str:
            low_high = dig(s, kind, "range", key)
            median = number(dig(s, kind, key), digits)
            if not low_high or low_high[0] == low_high[1]:
                return median
            return f"{median} [{number(low_high[0], digits)}–{number(low_high[1], digits)}]"

        return render

    # The gateway's share, for ours via Envoy (direct, and the peers, have none).
    groups = ["server", "chat", "redis"]
    if OURS_GATEWAY in systems:
        groups.append("gateway")
    groups += ["generator", "other"]

    def cpu_row(kind: str, of: Callable[[str], Callable[[dict[str, Any]], Any]]) -> None:
        def render(name: str, s: dict[str, Any]) -> str:
            return slash(
                *(
                    "—"
                    if group == "gateway" and name != OURS_GATEWAY
                    else format_pct(of(f"{group}_cpu_pct")(s))
                    for group in groups
                )
            )

        row(f"{kind}: CPU % {' / '.join(groups)}", render)

    row(
        "saturation: max R passing, msgs/s (first failing R)",
        lambda n, s: (
            f"{spread('saturation', 'max_rate_pass')(n, s)} ({number(sat('first_rate_fail')(s))})"
        ),
    )
    row(
        f"saturation: deliveries/s at the SLO (loss 0, p99 < {SLO_P99_MS:g} ms)",
        spread("saturation", "deliveries_per_s"),
        "deliveries_per_s_at_slo",
    )
    row(
        "saturation: p50 / p99 ms at that point",
        lambda n, s: slash(format_ms(sat("p50_ms")(s)), format_ms(sat("p99_ms")(s))),
    )
    cpu_row("saturation", sat)
    row(
        "saturation: CPU % per 1,000 deliveries/s, server (+ chat) / generator",
        lambda n, s: slash(
            number(sat("server_cpu_pct_per_1k_deliveries")(s), 2),
            number(sat("generator_cpu_pct_per_1k_deliveries")(s), 2),
        ),
        "server_cpu_pct_per_1k_deliveries",
    )
    row(
        "saturation: why the first failing step failed",
        lambda n, s: "; ".join(sat("first_fail_reasons")(s) or []) or "—",
    )
    row(
        f"latency (S={LATENCY_SUBSCRIBERS}, R={LATENCY_RATE}): deliveries/s "
        f"(offered {LATENCY_OFFERED_DELIVERIES_PER_SECOND:,})",
        lambda n, s: number(lat("deliveries_per_s")(s)),
    )
    row("latency: p50 ms", spread("latency", "p50_ms", 1), "latency_p50_ms")
    row("latency: p99 ms", spread("latency", "p99_ms", 1), "latency_p99_ms")
    row("latency: max ms", lambda n, s: format_ms(lat("max_ms")(s)))
    row(
        "latency: lost / duplicates / out-of-order / disconnects",
        lambda n, s: slash(
            number(lat("lost")(s)),
            number(lat("duplicates")(s)),
            number(lat("out_of_order")(s)),
            number(lat("disconnects")(s)),
        ),
        target="0 / 0 / 0 / 0",
    )
    cpu_row("latency", lat)
    row(
        f"memory: KB RSS per idle socket ({MEMORY_CONNECTIONS:,}; 2 s later)",
        lambda n, s: (
            f"{spread('memory', 'kb_per_conn', 1)(n, s)} "
            f"({number(dig(s, 'memory', 'kb_per_conn_2s_later'), 1)})"
        ),
        "kb_per_idle_socket",
    )
    row(
        "memory: sockets opened / all verified / disconnects",
        lambda n, s: slash(
            number(dig(s, "memory", "opened")),
            number(dig(s, "memory", "all_verified")),
            number(dig(s, "memory", "disconnects")),
        ),
    )
    table.add_section()
    for target in summary["targets"].values():
        table.add_row(
            f"target: {target['target']}", *[""] * (len(names) + 1), verdict(target["met"])
        )
    table.caption = (
        "With several runs: medians, and \\[min–max] where shown. "
        "ours ÷ best peer: the best peer (named) has the lowest latency, CPU and KB, the most "
        "deliveries/s; the latency targets judge ours via Envoy, the others ours direct. "
        "server = the WebSocket processes (ours: the 2 GraphQL processes; chat = our 2 gRPC "
        "chat processes, which the peers do not have); redis = ours 6 cluster nodes, peers 1; "
        "gateway = Envoy, in front of ours via Envoy only. "
        "CPU % of one core; the machine has 200; other = machine busy minus everything "
        "watched (kernel, and other work on the machine)."
    )
    return table


def sweep_table(results: dict[str, Any]) -> Table:
    """Every sweep step of every system: where each one stopped passing, and why."""
    table = Table(title="Saturation sweep steps (S=1000, C=10)", title_justify="left")
    for name in ("system", "R msgs/s", "pass", "deliveries/s", "p50 ms", "p99 ms", "lost"):
        table.add_column(name, justify="left" if name in ("system", "pass") else "right")
    table.add_column("CPU % server / chat / redis / gen / other", justify="right")
    table.add_column("why it failed")
    ours_steps: dict[str, dict[str, Any]] = {}
    sweeps: list[tuple[str, dict[str, Any]]] = []
    for run in dig(results, "ours", "runs") or []:
        for system, part in our_parts(run).items():
            ours_sweep = dig(part, "scenarios", "saturation") or {}
            ours_steps.update({str(s.get("label", "")): s for s in ours_sweep.get("steps") or []})
            sweeps.append((f"{system} #{run['run']}", ours_sweep.get("raw") or {}))
    sweeps += [
        (f"{label.split(':')[1]} #{label.split(':')[2]}", line)
        for line in dig(results, "peers", "raw") or []
        if (label := str(line.get("label", ""))).startswith("saturation:") and label.count(":") == 2
    ]
    for system, sweep in sweeps:
        for step in sweep.get("steps") or []:
            full = ours_steps.get(f"{sweep.get('label')}@{step.get('rate')}", {})
            table.add_row(
                system,
                number(step.get("rate")),
                "[green]pass[/green]" if step.get("pass") else "[red]fail[/red]",
                number(step.get("delivered_per_s")),
                format_ms(step.get("p50")),
                format_ms(step.get("p99")),
                number(step.get("lost")),
                slash(
                    format_pct(step.get("server_cpu_pct")),
                    format_pct(cpu_of(full, "chat")),
                    format_pct(step.get("redis_cpu_pct")),
                    format_pct(step.get("gen_cpu_pct")),
                    format_pct(step.get("other_pct")),
                ),
                "; ".join(step.get("reasons") or []),
            )
    return table


# -- the results file ----------------------------------------------------------------------------

STAMP_FORMAT = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class ResultsFile:
    """The JSON results of one benchmark run: `<directory>/<benchmark>-<UTC stamp>.json`
    (files of the run beside it carry the same stamp)."""

    benchmark: str
    directory: Path
    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @classmethod
    def start(cls, benchmark: str, directory: Path) -> ResultsFile:
        """Now, into `directory` (created)."""
        directory = directory.resolve()
        directory.mkdir(parents=True, exist_ok=True)
        return cls(benchmark, directory)

    @property
    def stamp(self) -> str:
        return self.started.strftime(STAMP_FORMAT)

    @property
    def path(self) -> Path:
        return self.directory / f"{self.benchmark}-{self.stamp}.json"

    def header(self, **fields: Any) -> dict[str, Any]:
        """The record's first fields: which benchmark, when, then `fields`."""
        return {"benchmark": self.benchmark, "started_at": self.started.isoformat(), **fields}

    def write(self, record: dict[str, Any]) -> Path:
        """`record`, finished now, as the results file; its path."""
        record["finished_at"] = dt.datetime.now(dt.UTC).isoformat()
        self.path.write_text(json.dumps(record, indent=2) + "\n")
        return self.path


def options_record(options: Any) -> dict[str, Any]:
    """A benchmark's options (a dataclass) as they go into its results file."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()}


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """Cleanup (stopping what was started, writing the results) runs to the end even if
    Ctrl-C is pressed again."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
