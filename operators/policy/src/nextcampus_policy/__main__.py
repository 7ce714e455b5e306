"""`python -m nextcampus_policy`: the CourseChatPolicy operator, configured by NEXTCAMPUS_*
env vars; /metrics on METRICS_PORT, /healthz (kopf's liveness probe) on HEALTH_PORT."""

from __future__ import annotations

import asyncio
import threading

import kopf

from nextcampus_common.logs import configure_logging
from nextcampus_common.metrics import serve_metrics
from nextcampus_common.redis_cluster import ClusterClient
from nextcampus_common.settings import load_settings
from nextcampus_policy.handlers import build_registry
from nextcampus_policy.metrics import OperatorMetrics
from nextcampus_policy.reconcile import PolicyReconciler
from nextcampus_policy.settings import PolicyOperatorSettings
from nextcampus_policy.spec import CourseGovernance
from nextcampus_policy.store import PolicyStore


def main() -> None:
    settings = load_settings(PolicyOperatorSettings, "policy operator")
    configure_logging(settings.log_level, settings.log_format)
    metrics = OperatorMetrics()
    serve_metrics(metrics.registry, settings.metrics_host, settings.metrics_port)
    asyncio.run(run_operator(settings, metrics))


def build_reconciler(
    settings: PolicyOperatorSettings, metrics: OperatorMetrics
) -> PolicyReconciler:
    store = PolicyStore(ClusterClient(settings), retime_batch_size=settings.retime_batch_size)
    return PolicyReconciler(
        store, settings, metrics, governance=CourseGovernance.of(settings.governed_courses)
    )


async def run_operator(
    settings: PolicyOperatorSettings,
    metrics: OperatorMetrics,
    *,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
) -> None:
    """The operator until SIGTERM/SIGINT (or `stop_flag`): the tests run this very function."""
    registry = build_registry(settings, build_reconciler(settings, metrics), metrics)
    liveness = (
        f"http://{settings.health_host}:{settings.health_port}/healthz"
        if settings.health_port
        else None
    )
    await kopf.operator(
        registry=registry,
        # One replica (Recreate): no peering objects to install or to keep.
        standalone=True,
        clusterwide=not settings.watch_namespaces,
        namespaces=settings.watch_namespaces,
        liveness_endpoint=liveness,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


if __name__ == "__main__":
    main()
