"""Prometheus helpers: each process owns one registry and serves it on its own port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.exposition import generate_latest

# Latency buckets for work that should take well under a few milliseconds on a healthy stack.
FAST_BUCKETS_SECONDS = (
    0.0005,
    0.001,
    0.002,
    0.004,
    0.008,
    0.016,
    0.032,
    0.064,
    0.128,
    0.256,
    0.512,
    1.024,
    2.5,
    5.0,
)


def metric_name(component: str, noun_and_unit: str) -> str:
    """`nextcampus_<component>_<noun>_<unit>` — the one naming scheme of every metric."""
    return f"nextcampus_{component}_{noun_and_unit}"


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> int | None:
    """Serve /metrics on a background thread; returns the bound port (None when disabled)."""
    if port == 0:
        return None
    server, _thread = start_http_server(port, addr=host, registry=registry)
    bound: int = server.server_port
    return bound


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
