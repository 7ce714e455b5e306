"""The chart's Grafana dashboards and Prometheus rules read as data: every PromQL expression
they hold and the metric names each one reads, so tests can hold them against what the
processes really export without a Prometheus or a Grafana running."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devstack.paths import chart as checkout_chart

DASHBOARDS_DIRECTORY = "files/dashboards"
RULES_FILE = "files/prometheus/rules.yaml"

# Histogram and summary families are declared once (`# TYPE name histogram`) but queried by
# the names of their samples.
SAMPLE_SUFFIXES_OF_TYPE = {
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count"),
}

# Words of PromQL that look like metric names where they stand outside parentheses.
_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "inf",
        "nan",
    }
)
_STRING = r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`'
# One left-to-right scan, so that quotes inside a string never start or end another one, and a
# `__name__` matcher (the one place a metric name hides in a string) is seen before strings go.
_STRING_OR_NAME_MATCHER = re.compile(
    rf"(?P<name_matcher>\b__name__\s*(?P<operator>=~|!~|!=|=)\s*(?P<value>{_STRING}))"
    rf"|(?P<string>{_STRING})"
)
_COMMENT = re.compile(r"#[^\n]*")
# Grafana's `$namespace`, `${datasource}`, `$__rate_interval`, `[[legacy]]` variables.
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_LABEL_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE_OR_SUBQUERY = re.compile(r"\[[^\[\]]*\]")
# `by (le, namespace)`: label names, not metric names; the keyword goes with its list so that
# `sum by (le) (...)` reads as the call `sum (...)`.
_LABEL_LIST = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
# Numbers, durations (5m, 1h30m), hex and exponents all start with a digit or a dot.
_TOKEN = re.compile(r"(?P<number>[0-9.][0-9A-Za-z_.]*)|(?P<identifier>[A-Za-z_:][A-Za-z0-9_:]*)")
_LABEL_VALUES = re.compile(r"^\s*label_values\s*\((?P<selector>.*),\s*\w+\s*\)\s*$", re.DOTALL)
_QUERY_RESULT = re.compile(r"^\s*query_result\s*\((?P<expression>.*)\)\s*$", re.DOTALL)


@dataclass(frozen=True)
class Expression:
    """One PromQL expression and where it sits (file, panel or rule), for error messages."""

    where: str
    promql: str


def metric_names(promql: str) -> set[str]:
    """The metric names a PromQL expression (Grafana variables allowed) reads.

    Raises ValueError for a regular expression on `__name__`: what it reads cannot be known
    from the text, so it cannot be checked."""
    names: set[str] = set()

    def without_strings(match: re.Match[str]) -> str:
        if match.group("name_matcher") is None:
            return '""'
        if match.group("operator") != "=":
            raise ValueError(f"cannot tell which metrics {match.group(0)!r} reads")
        names.add(match.group("value")[1:-1])
        return ""

    text = _STRING_OR_NAME_MATCHER.sub(without_strings, promql)
    text = _COMMENT.sub(" ", text)
    text = _VARIABLE.sub(" ", text)
    text = _LABEL_MATCHERS.sub(" ", text)
    text = _RANGE_OR_SUBQUERY.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    for token in _TOKEN.finditer(text):
        identifier = token.group("identifier")
        if identifier is None or identifier.lower() in _KEYWORDS:
            continue
        # A name followed by a parenthesis is a function or an aggregation.
        if text[token.end() :].lstrip().startswith("("):
            continue
        names.add(identifier)
    return names


def dashboard_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, rows and the panels of collapsed rows included."""
    pending: list[dict[str, Any]] = list(dashboard.get("panels", []))
    while pending:
        panel = pending.pop(0)
        yield panel
        pending.extend(panel.get("panels", []))


def _variable_expression(query: Any) -> str | None:
    # Grafana stores a query variable's query as text or as {"query": text, ...}.
    text = query.get("query", "") if isinstance(query, Mapping) else query
    if not isinstance(text, str):
        return None
    if match := _LABEL_VALUES.match(text):
        return match.group("selector")
    if match := _QUERY_RESULT.match(text):
        return match.group("expression")
    return None  # label_values(label), label_names(), metrics(regex): no expression


def dashboard_expressions(dashboard: Mapping[str, Any], source: str) -> list[Expression]:
    """The expressions of every target of every panel and of every query variable."""
    found: list[Expression] = []
    for panel in dashboard_panels(dashboard):
        for target in panel.get("targets", []):
            if "expr" in target:
                where = f"{source}: panel {panel.get('id')} {panel.get('title')!r} target {target.get('refId')}"
                found.append(Expression(where, target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            expression = _variable_expression(variable.get("query"))
            if expression is not None:
                found.append(Expression(f"{source}: variable {variable['name']}", expression))
    return found


def rule_expressions(rules: Mapping[str, Any], source: str) -> list[Expression]:
    """The `expr` of every alerting and recording rule of a Prometheus rules file."""
    found: list[Expression] = []
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            found.append(Expression(f"{source}: group {group['name']} rule {name}", rule["expr"]))
    return found


def dashboard_files(chart: Path | None = None) -> list[Path]:
    return sorted(((chart or checkout_chart()) / DASHBOARDS_DIRECTORY).glob("*.json"))


def chart_expressions(chart: Path | None = None) -> list[Expression]:
    """Every PromQL expression the chart ships: all dashboards, then all rules."""
    chart = chart or checkout_chart()
    found: list[Expression] = []
    for path in dashboard_files(chart):
        found.extend(dashboard_expressions(json.loads(path.read_text()), path.name))
    rules_path = chart / RULES_FILE
    found.extend(rule_expressions(yaml.safe_load(rules_path.read_text()), rules_path.name))
    return found


def exported_names(type_lines: Iterable[str]) -> set[str]:
    """The names a query may use, from `# TYPE <family> <type>` lines (the `# TYPE ` part may
    be left off; anything after the type is ignored)."""
    names: set[str] = set()
    for line in type_lines:
        if line.startswith("#") and not line.startswith("# TYPE "):
            continue  # # HELP and other comments
        words = line.removeprefix("# TYPE ").split()
        if len(words) < 2:
            continue
        family, kind = words[0], words[1]
        names.add(family)
        names.update(family + suffix for suffix in SAMPLE_SUFFIXES_OF_TYPE.get(kind, ()))
    return names
