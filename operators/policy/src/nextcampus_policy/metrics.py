"""The policy operator's Prometheus metrics, on a registry the process owns."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from nextcampus_common.metrics import FAST_BUCKETS_SECONDS, metric_name
from nextcampus_policy.spec import NOT_READY_REASONS, Reason


def _name(noun_and_unit: str) -> str:
    return metric_name("operator", noun_and_unit)


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconciles = Counter(
            _name("reconciles"),
            "reconciles of CourseChatPolicies by result (applied, unchanged, released, "
            "conflict, invalid_spec, not_permitted, redis_unavailable) and trigger "
            "(change, resync)",
            ["result", "trigger"],
            registry=r,
        )
        self.reconcile_duration = Histogram(
            _name("reconcile_duration_seconds"),
            "time of one reconcile, re-timing of the course's messages included",
            buckets=FAST_BUCKETS_SECONDS,
            registry=r,
        )
        self.drift_repairs = Counter(
            _name("drift_repairs"),
            "re-checks that found Redis differing from a policy and rewrote it",
            registry=r,
        )
        self.messages_retimed = Counter(
            _name("messages_retimed"), "messages given a new expiry after a TTL change", registry=r
        )
        self.messages_removed = Counter(
            _name("messages_removed"),
            "messages removed at once because a shorter TTL had already passed",
            registry=r,
        )
        self.course_exports = Counter(
            _name("course_exports"),
            "exports of a course before a TTL change shortened it (exportBeforeTTLChange), by "
            "result: exported, or refused (no or an unwritable export directory)",
            ["result"],
            registry=r,
        )
        self.policies_not_ready = Gauge(
            _name("policies_not_ready"),
            "CourseChatPolicies whose Ready condition is False, by reason",
            ["reason"],
            registry=r,
        )
        self._not_ready: dict[str, Reason] = {}  # policy (namespace/name) → its reason
        for reason in NOT_READY_REASONS:
            self.policies_not_ready.labels(reason=reason.value).set(0)

    def readiness(self, policy: str, reason: Reason | None) -> None:
        """Record a policy's latest outcome (None: deleted)."""
        if reason is None or reason not in NOT_READY_REASONS:
            self._not_ready.pop(policy, None)
        else:
            self._not_ready[policy] = reason
        for each in NOT_READY_REASONS:
            count = sum(1 for held in self._not_ready.values() if held is each)
            self.policies_not_ready.labels(reason=each.value).set(count)
