"""The chat process's Prometheus metrics, on a registry the process owns."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from nextcampus_common.hops import HopClock
from nextcampus_common.metrics import FAST_BUCKETS_SECONDS, metric_name


def _name(noun_and_unit: str) -> str:
    return metric_name("chat", noun_and_unit)


class ChatMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.hops = HopClock(r, "chat")
        self.sends = Counter(_name("sends"), "SendMessage calls by result", ["result"], registry=r)
        self.send_duration = Histogram(
            _name("send_duration_seconds"),
            "SendMessage latency inside the chat process, Redis round trip included",
            buckets=FAST_BUCKETS_SECONDS,
            registry=r,
        )
        self.requests = Counter(
            _name("requests"), "RPCs by method and status code", ["method", "code"], registry=r
        )
        self.active_streams = Gauge(
            _name("active_streams"), "open SubscribeMessages streams", registry=r
        )
        self.courses_subscribed = Gauge(
            _name("courses_subscribed"),
            "courses with a sharded Redis subscription in this process",
            registry=r,
        )
        self.deliveries = Counter(
            _name("deliveries"), "events queued to streams (one per stream per event)", registry=r
        )
        self.gap_fills = Counter(
            _name("gap_fills"),
            "times missing sequence numbers were read from the index",
            ["reason"],
            registry=r,
        )
        self.gap_filled_messages = Counter(
            _name("gap_filled_messages"),
            "messages recovered from the index by gap fills",
            registry=r,
        )
        self.retracted_messages = Counter(
            _name("retracted_messages"),
            "messages a Redis failover lost after streams had them: their tombstones were sent",
            registry=r,
        )
        self.restored_messages = Counter(
            _name("restored_messages"),
            "messages whose change a Redis failover lost after streams had it: restored as the "
            "store keeps them (MESSAGE_RESTORED events this process added)",
            registry=r,
        )
        self.slow_consumers = Counter(
            _name("slow_consumer_disconnects"),
            "streams cut off because their queue was full",
            registry=r,
        )
        self.ephemeral_dropped = Counter(
            _name("ephemeral_dropped"),
            "typing and presence events a stream more than half full did not take",
            registry=r,
        )
        self.redis_errors = Counter(
            _name("redis_errors"), "Redis errors seen (each is retried)", ["kind"], registry=r
        )
