"""Where a benchmark message's time goes, hop by hop (`HOP_TIMING`, off by default: for
`chatctl bench-fanout` only).

The shared harness's load generator sends messages whose content is
`M|<course>|<seq>|<send time in µs>`, its clock CLOCK_MONOTONIC — the clock of Python's
`time.monotonic()` too, the same in every process of one machine. With hop timing on, each
hop below observes "seconds since the generator sent it" for such a message into one
histogram per process, labelled by hop; the bench reads the histograms and prints, per
hop, the median time since the send. No other message is looked at, and without the
setting a hop costs one attribute test.

Hops: a send's, then its delivery's (the send script publishes before the replication
wait, so delivery never waits for the replicas) and its acknowledgement's:
- `graphql_mutation`: the GraphQL process calls chat's SendMessage;
- `chat_send`: chat's SendMessage handler starts;
- `chat_feed`: a chat process reads it from the course's Redis pub/sub channel;
- `graphql_upstream`: a GraphQL process reads it from the course's SubscribeMessages stream;
- `graphql_written`: its frames are written to every subscribed socket of that process;
- `chat_stored`: the send script ran and its replica(s) confirmed it (Redis WAIT);
- `graphql_acknowledged`: SendMessage's answer is back in the GraphQL process.
"""

from __future__ import annotations

import re
import time

from prometheus_client import CollectorRegistry, Histogram

from nextcampus_common.metrics import metric_name

# 50 µs steps up to 2 ms, then coarser: a hop's median on an idle stack is well under 1 ms.
HOP_BUCKETS_SECONDS = (
    *(i * 0.00005 for i in range(1, 41)),
    0.0025,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
GENERATED = re.compile(r"M\|\d+\|\d+\|(\d+)")


class HopClock:
    def __init__(self, registry: CollectorRegistry, component: str) -> None:
        self.enabled = False
        self.seconds = Histogram(
            metric_name(component, "hop_seconds"),
            "benchmark messages only (HOP_TIMING): seconds from the load generator's send to "
            "this hop",
            ["hop"],
            buckets=HOP_BUCKETS_SECONDS,
            registry=registry,
        )

    def passed(self, hop: str, content: str) -> None:
        if not self.enabled:
            return
        sent = GENERATED.match(content)
        if sent is not None:
            elapsed = time.monotonic() - int(sent[1]) / 1_000_000
            self.seconds.labels(hop).observe(max(0.0, elapsed))
