"""What the chart's dashboards and alerts read is what the running processes export.

Beside the local topology this starts the two processes a cluster adds: the Redis exporter
(Debian's prometheus-redis-exporter, the version the chart pins, with the chart's own
arguments) and the policy operator (`python -m nextcampus_policy`, against kmock: no
Kubernetes API server runs here). Then:

- every metric name in every dashboard and alert is exported by one of them (scraped from
  each process's /metrics and Envoy's /stats/prometheus);
- a real Prometheus (Debian's package) scrapes them all, and every dashboard query and alert
  expression runs on it without error, most of them returning data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from devstack.gateway import render_chart
from devstack.processes import ManagedProcess, free_ports
from devstack.scrape import fetch
from devstack.topology import Topology
from e2e.clients import GraphqlHttp, resuming_subscriber
from testing.monitoring import chart_expressions, exported_names, metric_names

if TYPE_CHECKING:
    from e2e.conftest import Gateway

REDIS_EXPORTER = "/usr/bin/prometheus-redis-exporter"
PROMETHEUS = "/usr/bin/prometheus"
SEND = "mutation($c: ID!, $t: String!) { sendMessage(courseId: $c, content: $t) { messageId } }"
# Grafana's variables, as a query on all of the local stack would fill them.
GRAFANA_VARIABLES = {
    "$__rate_interval": "30s",
    "$__interval": "5s",
    "$__range": "5m",
}
ANY_LABEL_VALUE = ".*"


@dataclass(frozen=True)
class Target:
    name: str
    url: str  # http://127.0.0.1:port/path


def exporter_args(redis_port: int, listen_port: int) -> list[str]:
    """The chart's exporter sidecar arguments (from the rendered StatefulSet), aimed at one
    node of the local cluster instead of the pod's own Redis."""
    (statefulset,) = render_chart({}, show_only="templates/redis/statefulset.yaml")
    (exporter,) = [
        c for c in statefulset["spec"]["template"]["spec"]["containers"] if c["name"] == "exporter"
    ]
    sidecar_port = exporter["ports"][0]["containerPort"]
    return [
        arg.replace("localhost:6379", f"127.0.0.1:{redis_port}").replace(
            f"--web.listen-address=:{sidecar_port}", f"--web.listen-address=127.0.0.1:{listen_port}"
        )
        for arg in exporter["args"]
    ]


def require(path: str) -> None:
    if not Path(path).exists():
        pytest.fail(
            f"{path} is missing: `make deps` installs it (Debian prometheus, prometheus-redis-exporter)"
        )


@pytest.fixture
async def exporters(gateway: Gateway, kube: Any, tmp_path: Path) -> AsyncIterator[list[Target]]:
    """Every /metrics a cluster would have, for the local topology: its own processes, the
    Redis exporter and the operator."""
    topology: Topology = gateway.local()
    assert topology.redis is not None
    require(REDIS_EXPORTER)
    exporter_port, operator_metrics, operator_health = free_ports(3)
    started: list[ManagedProcess] = [
        ManagedProcess(
            name="redis-exporter",
            argv=[REDIS_EXPORTER, *exporter_args(topology.redis.ports[0], exporter_port)],
            env={},
            log_path=tmp_path / "redis-exporter.log",
            ready_check=lambda: _answers(f"http://127.0.0.1:{exporter_port}/metrics"),
        ),
        ManagedProcess(
            name="operator",
            argv=[sys.executable, "-m", "nextcampus_policy"],
            env={
                "KUBECONFIG": os.environ["KUBECONFIG"],
                "NEXTCAMPUS_REDIS_NODES": topology.redis.nodes_csv,
                "NEXTCAMPUS_METRICS_HOST": "127.0.0.1",
                "NEXTCAMPUS_METRICS_PORT": str(operator_metrics),
                "NEXTCAMPUS_HEALTH_HOST": "127.0.0.1",
                "NEXTCAMPUS_HEALTH_PORT": str(operator_health),
            },
            log_path=tmp_path / "operator.log",
            ready_check=lambda: _answers(f"http://127.0.0.1:{operator_health}/healthz"),
        ),
    ]
    try:
        for process in started:
            process.start()
        for process in started:
            # In a thread: kmock, which the operator talks to, runs on this event loop.
            await asyncio.to_thread(process.wait_ready)
        targets = [
            *(
                Target(f"chat-{i}", f"http://127.0.0.1:{p}/metrics")
                for i, p in enumerate(topology.chat_metrics_ports)
            ),
            *(Target(f"graphql-{i}", url) for i, url in enumerate(topology.graphql_metrics_urls)),
            Target("gateway", f"http://127.0.0.1:{topology.gateway_admin_port}/stats/prometheus"),
            Target("redis", f"http://127.0.0.1:{exporter_port}/metrics"),
            Target("operator", f"http://127.0.0.1:{operator_metrics}/metrics"),
        ]
        yield targets
    finally:
        for process in started:
            process.stop()


def _answers(url: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
        return bool(response.status == 200)
    return False


async def some_traffic(gateway: Gateway) -> None:
    """Sends, deliveries and an error, so that rates and histograms have samples."""
    course_id = f"obs-{uuid.uuid4().hex[:8]}"
    token = gateway.token(f"watcher-{uuid.uuid4().hex[:6]}", [course_id])
    async with GraphqlHttp(gateway.graphql_url) as http:

        async def send(text: str) -> int:
            response = await http.execute(SEND, {"c": course_id, "t": text}, token=token)
            assert response.data is not None, response.describe()
            return int(response.data["sendMessage"]["messageId"])

        # Subscribed after an anchor: nothing sent while it goes live is missed.
        anchor = await send("anchor")
        async with resuming_subscriber(
            gateway.ws_url, token, course_id, after=anchor
        ) as subscriber:
            for n in range(5):
                await send(f"hello {n}")
            await http.execute(SEND, {"c": course_id, "t": ""}, token=token)  # BAD_USER_INPUT
            await subscriber.wait_until(lambda s: len(s.received) >= 5, within=20)


async def test_every_metric_of_the_dashboards_and_alerts_is_exported(
    gateway: Gateway, exporters: list[Target]
) -> None:
    await some_traffic(gateway)
    exported: set[str] = set()
    for target in exporters:
        lines = (await asyncio.to_thread(fetch, target.url)).splitlines()
        names = exported_names(line for line in lines if line.startswith("# TYPE "))
        assert names, f"{target.name} exports nothing"
        exported |= names
    used: dict[str, list[str]] = {}
    for expression in chart_expressions():
        for name in metric_names(expression.promql):
            used.setdefault(name, []).append(expression.where)
    assert len(used) > 40, "the dashboards and alerts read suspiciously few metrics"
    missing = {name: places[:2] for name, places in used.items() if name not in exported}
    assert not missing, f"read by the chart but exported by no process: {missing}"


def prometheus_config(targets: list[Target], path: Path) -> Path:
    jobs = []
    for target in targets:
        url = urllib.parse.urlsplit(target.url)
        jobs.append(
            {
                "job_name": target.name,
                "metrics_path": url.path,
                "static_configs": [{"targets": [url.netloc]}],
            }
        )
    path.write_text(
        yaml.safe_dump(
            {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"}, "scrape_configs": jobs}
        )
    )
    return path


def query(port: int, promql: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            answer: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as error:
        answer = json.load(error)
    return answer


def filled(promql: str) -> str:
    """A dashboard expression with Grafana's variables filled in for "everything"."""
    for variable, value in GRAFANA_VARIABLES.items():
        promql = promql.replace(variable, value)
    return re.sub(r"\$\{?\w+\}?", ANY_LABEL_VALUE, promql)


async def test_a_real_prometheus_runs_every_query_of_the_chart(
    gateway: Gateway, exporters: list[Target], tmp_path: Path
) -> None:
    require(PROMETHEUS)
    port = free_ports(1)[0]
    config = prometheus_config(exporters, tmp_path / "prometheus.yml")
    prometheus = ManagedProcess(
        name="prometheus",
        argv=[
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        env={},
        log_path=tmp_path / "prometheus.log",
        ready_check=lambda: _answers(f"http://127.0.0.1:{port}/-/ready"),
    )
    prometheus.start()
    try:
        await asyncio.to_thread(prometheus.wait_ready, 60)
        # Traffic while Prometheus scrapes every second: rates need two samples of it.
        await some_traffic(gateway)
        deadline = time.monotonic() + 30
        while True:
            up = (await asyncio.to_thread(query, port, "up"))["data"]["result"]
            if len(up) == len(exporters) and all(r["value"][1] == "1" for r in up):
                break
            assert time.monotonic() < deadline, f"targets not all up: {up}"
            await asyncio.sleep(0.5)
        await some_traffic(gateway)
        await asyncio.sleep(3)

        failed, empty, answered = [], [], 0
        for expression in chart_expressions():
            answer = await asyncio.to_thread(query, port, filled(expression.promql))
            if answer.get("status") != "success":
                failed.append(f"{expression.where}: {answer.get('error')}")
            elif expression.where.startswith("rules.yaml"):
                continue  # an alert's expression is empty while all is well
            elif answer["data"]["result"]:
                answered += 1
            else:
                empty.append(expression.where)
        assert not failed, "queries Prometheus refused:\n" + "\n".join(failed)
        print(f"{answered} dashboard queries returned data; empty: {empty}")
        # Gap fills, Redis errors, reconnects, reconciles have not happened here: their panels
        # may be empty. The rest must show what the stack is doing.
        assert answered >= 0.85 * (answered + len(empty)), empty
    finally:
        prometheus.stop()
        shutil.rmtree(tmp_path / "tsdb", ignore_errors=True)
