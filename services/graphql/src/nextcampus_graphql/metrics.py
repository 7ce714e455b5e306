"""The GraphQL process's Prometheus metrics, on a registry the process owns."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from nextcampus_common.hops import HopClock
from nextcampus_common.metrics import metric_name

# Event timestamp (set by Redis at send) → frame written: milliseconds to seconds.
DELIVERY_BUCKETS_SECONDS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0)
GROUP_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000)


def _name(noun_and_unit: str) -> str:
    return metric_name("graphql", noun_and_unit)


class GraphqlMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.hops = HopClock(r, "graphql")
        self.connections = Gauge(
            _name("connections"), "open WebSocket connections", ["protocol"], registry=r
        )
        self.subscriptions = Gauge(_name("subscriptions"), "active subscriptions", registry=r)
        self.operations = Counter(
            _name("operations"),
            "operations by type (query, mutation, subscription) and result (ok, error)",
            ["type", "result"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            _name("delivery_latency_seconds"),
            "from the change (a message's timestamp, stored at send; an event's log entry) to "
            "its frame being written",
            buckets=DELIVERY_BUCKETS_SECONDS,
            registry=r,
        )
        self.deliveries = Counter(
            _name("deliveries"), "subscription frames written to sockets", registry=r
        )
        self.fanout_group_size = Histogram(
            _name("fanout_group_size"),
            "sockets sharing one execution of an event (observed per event and group)",
            buckets=GROUP_SIZE_BUCKETS,
            registry=r,
        )
        self.slow_consumer_closes = Counter(
            _name("slow_consumer_closes"), "sockets closed with 4008 for falling behind", registry=r
        )
        self.socket_closes = Counter(
            _name("socket_closes"), "sockets we closed, by close code", ["code"], registry=r
        )
        self.limit_refusals = Counter(
            _name("limit_refusals"),
            "operations and sockets refused by a limit, by the setting that refused them",
            ["limit"],
            registry=r,
        )
        self.upstream_streams = Gauge(
            _name("upstream_streams"),
            "SubscribeMessages streams to chat (one per course)",
            registry=r,
        )
        self.upstream_event_streams = Gauge(
            _name("upstream_event_streams"),
            "SubscribeEvents streams to chat (one per course with courseEvents, presenceChanged "
            "or typingChanged subscribers)",
            registry=r,
        )
        self.ephemeral_dropped = Counter(
            _name("ephemeral_dropped"),
            "typing and presence frames not written to a socket with a backlog (a quarter of "
            "socket_buffer_bytes): they go first, so real events never wait for them",
            registry=r,
        )
        self.presence_courses = Gauge(
            _name("presence_courses"),
            "courses this process holds presence in (one heartbeat each per interval)",
            registry=r,
        )
        self.presence_calls = Counter(
            _name("presence_calls"),
            "presence calls to chat (join, leave, heartbeat) by outcome",
            ["call", "outcome"],
            registry=r,
        )
        self.upstream_reconnects = Counter(
            _name("upstream_reconnects"),
            "upstream streams (both kinds) reopened after the last message id or event cursor "
            "they passed on, by the status that ended them",
            ["code"],
            registry=r,
        )

    def count_refusals(self, errors: Iterable[Mapping[str, Any]]) -> None:
        """Count the formatted errors that a limit caused (they name it: `extensions.limit`)."""
        for error in errors:
            limit = (error.get("extensions") or {}).get("limit")
            if isinstance(limit, str):
                self.limit_refusals.labels(limit).inc()
