"""The chart's Grafana dashboards and Prometheus rules, checked offline: the dashboards are
Grafana JSON wired to the `datasource` and `namespace` variables, the rules pass the real
`promtool check rules` and their unit tests under `promtool test rules`, and every metric
our own processes read is one they declare. (Envoy's and redis_exporter's names can only be
read from the running binaries: `testing.monitoring.exported_names` takes their `# TYPE`
lines.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.exposition import generate_latest

from devstack.paths import chart
from nextcampus_chat.metrics import ChatMetrics
from nextcampus_graphql.metrics import GraphqlMetrics
from nextcampus_policy.metrics import OperatorMetrics
from testing.monitoring import (
    RULES_FILE,
    Expression,
    chart_expressions,
    dashboard_files,
    dashboard_panels,
    exported_names,
    metric_names,
)

CHART = chart()

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
NAMESPACE_MATCHER = 'namespace=~"$namespace"'
PANEL_UNITS = {"s", "ops", "short", "bytes", "percentunit"}
RULES_PATH = CHART / RULES_FILE
RULES_TEST_PATH = RULES_PATH.with_name("rules.test.yaml")
DASHBOARD_FILES = dashboard_files()
EXPECTED_DASHBOARDS = {"overview", "gateway", "graphql", "chat", "redis", "operator"}


def load(path: Path) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def load_rules() -> dict[str, Any]:
    rules: dict[str, Any] = yaml.safe_load(RULES_PATH.read_text())
    return rules


def alerts() -> list[dict[str, Any]]:
    return [rule for group in load_rules()["groups"] for rule in group["rules"] if "alert" in rule]


def variable(dashboard: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [v for v in dashboard["templating"]["list"] if v["name"] == name]
    return found


def data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard_panels(dashboard) if panel["type"] != "row"]


def promtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(
            "promtool is missing (Debian package `prometheus`, /usr/bin/promtool): "
            "`make deps` installs it"
        )
    return subprocess.run(
        [binary, *arguments], capture_output=True, text=True, timeout=120, check=False
    )


def panel_expressions(dashboard: dict[str, Any]) -> list[str]:
    return [
        target["expr"]
        for panel in dashboard_panels(dashboard)
        for target in panel.get("targets", [])
    ]


def expression_named(source: str, ending: str) -> Expression:
    """The one expression of a file whose location ends so (a rule, a panel title + target)."""
    (found,) = [
        e
        for e in chart_expressions()
        if e.where.startswith(f"{source}: ") and e.where.endswith(ending)
    ]
    return found


# -- dashboards -------------------------------------------------------------------------------


def test_the_chart_ships_a_dashboard_per_component_and_an_overview() -> None:
    assert {path.stem for path in DASHBOARD_FILES} == EXPECTED_DASHBOARDS


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_is_a_next_campus_grafana_dashboard(path: Path) -> None:
    dashboard = load(path)
    assert dashboard["schemaVersion"] == 39
    assert dashboard["title"].startswith("Next Campus Chat / ")
    assert dashboard["tags"] == ["nextcampus"]
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"]), dashboard["uid"]


def test_dashboard_uids_are_unique_across_files() -> None:
    uids = Counter(load(path)["uid"] for path in DASHBOARD_FILES)
    assert [uid for uid, count in uids.items() if count > 1] == []


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_panel_ids_are_unique_integers_rows_and_their_panels_included(path: Path) -> None:
    ids = [panel["id"] for panel in dashboard_panels(load(path))]
    assert all(type(each) is int for each in ids), ids
    assert [each for each, count in Counter(ids).items() if count > 1] == []


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_every_panel_and_target_queries_the_chosen_datasource(path: Path) -> None:
    dashboard = load(path)
    datasource = variable(dashboard, "datasource")
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    assert variable(dashboard, "namespace")["datasource"] == DATASOURCE
    for panel in dashboard_panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"] == DATASOURCE, (panel["title"], target["refId"])


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_panels_have_queries_and_units(path: Path) -> None:
    for panel in data_panels(load(path)):
        assert panel["type"] in {"timeseries", "stat"}, panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"] in PANEL_UNITS, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(set(refs)) == len(refs), panel["title"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_namespace_variable_lists_namespaces_of_a_metric_the_dashboard_shows(path: Path) -> None:
    dashboard = load(path)
    namespace = variable(dashboard, "namespace")
    assert namespace["type"] == "query"
    match = re.fullmatch(r"label_values\((\w+), namespace\)", namespace["query"])
    assert match, namespace["query"]
    shown = {name for promql in panel_expressions(dashboard) for name in metric_names(promql)}
    assert match.group(1) in shown


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_every_selector_of_every_panel_is_limited_to_the_chosen_namespaces(path: Path) -> None:
    # Per selector, not per expression: a ratio whose denominator forgot the matcher would
    # divide one namespace's errors by every namespace's traffic.
    for promql in panel_expressions(load(path)):
        for name in metric_names(promql):
            selectors = re.findall(rf"\b{re.escape(name)}\b(\{{[^}}]*\}})?", promql)
            assert selectors, (promql, name)
            assert all(NAMESPACE_MATCHER in each for each in selectors), (promql, name)


def test_every_dashboard_expression_parses_as_promql(tmp_path: Path) -> None:
    # promtool parses every expression of a rules file; Grafana's variables are given values
    # first, as Grafana does before it sends a query.
    rules = []
    for number, promql in enumerate(
        promql for path in DASHBOARD_FILES for promql in panel_expressions(load(path))
    ):
        concrete = re.sub(r"\$__\w+", "5m", promql)
        concrete = re.sub(r"\$\{?\w+\}?", ".*", concrete)
        rules.append({"record": f"dashboard:expression:{number}", "expr": concrete})
    path = tmp_path / "dashboards.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# -- rules ------------------------------------------------------------------------------------


def test_promtool_check_rules_accepts_the_rules() -> None:
    result = promtool("check", "rules", str(RULES_PATH))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    # promtool reads rule_files relative to the test file, so the working directory is moot.
    result = promtool("test", "rules", str(RULES_TEST_PATH))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alerts_are_named_graded_explained_and_sustained() -> None:
    names = [alert["alert"] for alert in alerts()]
    assert len(set(names)) == len(names)
    for alert in alerts():
        assert re.fullmatch(r"NextCampus(?:[A-Z][a-z0-9]*)+", alert["alert"]), alert["alert"]
        assert re.fullmatch(r"\d+[smh]", alert["for"]), alert["alert"]
        assert alert["labels"]["severity"] in {"warning", "critical"}, alert["alert"]
        assert alert["annotations"]["summary"].strip(), alert["alert"]
        assert "$labels.namespace" in alert["annotations"]["description"], alert["alert"]


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_stays_silent() -> None:
    cases = [
        case
        for test in yaml.safe_load(RULES_TEST_PATH.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for name in (alert["alert"] for alert in alerts()):
        outcomes = [bool(case["exp_alerts"]) for case in cases if case["alertname"] == name]
        assert True in outcomes, f"{name} never fires in rules.test.yaml"
        assert False in outcomes, f"{name} is never shown to stay silent in rules.test.yaml"
    fired = [alert for case in cases for alert in case["exp_alerts"]]
    assert all(alert["exp_annotations"]["description"] for alert in fired)


# -- metric names -----------------------------------------------------------------------------


def declared_names() -> set[str]:
    """What our processes export, from their own metric classes (the registries they serve)."""
    registries = [ChatMetrics().registry, GraphqlMetrics().registry, OperatorMetrics().registry]
    return exported_names(
        line for registry in registries for line in generate_latest(registry).decode().splitlines()
    )


def test_every_next_campus_metric_read_is_one_the_processes_declare() -> None:
    declared = declared_names()
    unknown = {
        (expression.where, name)
        for expression in chart_expressions()
        for name in metric_names(expression.promql)
        if name.startswith("nextcampus_") and name not in declared
    }
    assert unknown == set()


def test_only_our_envoy_and_redis_exporter_metrics_are_read() -> None:
    # Names outside these prefixes (`up`, a kube-state-metrics series) depend on how the
    # cluster is scraped, which the chart does not control.
    prefixes = ("nextcampus_", "envoy_", "redis_")
    names = {name for e in chart_expressions() for name in metric_names(e.promql)}
    assert {name for name in names if not name.startswith(prefixes)} == set()


def test_no_expression_relies_on_the_job_label() -> None:
    # `job` is whatever the scrape config calls a target: the chart's ServiceMonitors, an
    # operator's defaults or a hand-written config each name it differently.
    assert [e.where for e in chart_expressions() if re.search(r"\bjob\b", e.promql)] == []


def test_exported_names_adds_the_samples_of_histograms_and_summaries() -> None:
    lines = [
        "# HELP nextcampus_chat_send_duration_seconds SendMessage latency",
        "# TYPE nextcampus_chat_send_duration_seconds histogram",
        "# TYPE nextcampus_chat_sends_total counter",
        "redis_exporter_scrape_duration_seconds summary",
        "nextcampus_operator_policies_not_ready gauge   labels: reason",
        "",
    ]
    assert exported_names(lines) == {
        "nextcampus_chat_send_duration_seconds",
        "nextcampus_chat_send_duration_seconds_bucket",
        "nextcampus_chat_send_duration_seconds_sum",
        "nextcampus_chat_send_duration_seconds_count",
        "nextcampus_chat_sends_total",
        "redis_exporter_scrape_duration_seconds",
        "redis_exporter_scrape_duration_seconds_sum",
        "redis_exporter_scrape_duration_seconds_count",
        "nextcampus_operator_policies_not_ready",
    }


@pytest.mark.parametrize(
    ("source", "ending", "names"),
    [
        (
            "rules.yaml",
            "rule NextCampusChatRequestErrorsHigh",
            {"nextcampus_chat_requests_total"},
        ),
        (
            "rules.yaml",
            "rule NextCampusChatSendLatencyHigh",
            {"nextcampus_chat_send_duration_seconds_bucket"},
        ),
        (
            "rules.yaml",
            "rule NextCampusGatewayCircuitBreakerTripping",
            {"envoy_cluster_upstream_cx_overflow", "envoy_cluster_upstream_rq_pending_overflow"},
        ),
        (
            "overview.json",
            "'Gateway 4xx/5xx per second' target A",
            {"envoy_http_downstream_rq_xx"},
        ),
        (
            "redis.json",
            "'Keyspace hit ratio' target A",
            {"redis_keyspace_hits_total", "redis_keyspace_misses_total"},
        ),
        (
            "graphql.json",
            "'Fan-out group size' target C",
            {
                "nextcampus_graphql_fanout_group_size_sum",
                "nextcampus_graphql_fanout_group_size_count",
            },
        ),
        ("operator.json", "variable namespace", {"nextcampus_operator_policies_not_ready"}),
    ],
)
def test_metric_names_of_expressions_in_the_chart(
    source: str, ending: str, names: set[str]
) -> None:
    assert metric_names(expression_named(source, ending).promql) == names


@pytest.mark.parametrize(
    ("promql", "names"),
    [
        # Label names in grouping clauses, the `le` of a matcher, `$__rate_interval` ranges.
        (
            'histogram_quantile(0.99, sum by (namespace, le) (rate(a_bucket{le="+Inf", x=~"$x"}[$__rate_interval])))',
            {"a_bucket"},
        ),
        # Vector matching, `bool`, set operators, offsets, subqueries, numbers, Inf and NaN.
        (
            "a / on (instance) group_left (pod) b > bool 1e3 and c offset 1h unless d[1h:5m] or e - Inf + NaN",
            {"a", "b", "c", "d", "e"},
        ),
        # Braces and quotes inside strings, a comment, `@ start()`, `without`.
        (
            'label_replace(sum without (instance) (f{path="/x}{"}) @ start(), "dst", "$1", "src", "(.*)") # g',
            {"f"},
        ),
        # A metric named by a `__name__` matcher; a name with a colon (a recording rule).
        ('{__name__="h", job="x"} + namespace:i:rate5m', {"h", "namespace:i:rate5m"}),
    ],
)
def test_metric_names_skips_everything_that_is_not_a_metric(promql: str, names: set[str]) -> None:
    assert metric_names(promql) == names


def test_metric_names_refuses_a_name_it_cannot_know() -> None:
    with pytest.raises(ValueError, match="__name__"):
        metric_names('{__name__=~"nextcampus_.+"}')
