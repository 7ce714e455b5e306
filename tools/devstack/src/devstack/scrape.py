"""Read a local process's Prometheus /metrics page (tests and benchmarks)."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def fetch(url: str, timeout: float = 10) -> str:
    """A /metrics page as it is served (its `# TYPE` lines included)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback)
        text: str = response.read().decode()
    return text


def scrape(url: str, timeout: float = 10) -> dict[str, float]:
    """A /metrics page as {sample name with labels: value}, e.g.
    `nextcampus_graphql_connections{protocol=graphql-ws}`."""
    text = fetch(url, timeout)
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples
