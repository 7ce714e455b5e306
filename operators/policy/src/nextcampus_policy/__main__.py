"""`python -m nextcampus_policy`: the CourseChatPolicy operator, configured by NEXTCAMPUS_*
env vars; /metrics on METRICS_PORT, /healthz (kopf's liveness probe) on HEALTH_PORT."""

from __future__ import annotations

import asyncio
import sys
import threading

import kopf

from nextcampus_common.logs import configure_logging
from nextcampus_common.metrics import serve_metrics
from nextcampus_common.redis_cluster import ClusterClient
from nextcampus_common.settings import load_settings
from nextcampus_policy.exports import ExportDirectory
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
    try:
        asyncio.run(run_operator(settings, metrics))
    except kopf.LoginError:
        # Said in one line, not kopf's traceback: the operator needs the Kubernetes API.
        sys.exit(NO_CREDENTIALS)


NO_CREDENTIALS = (
    "policy operator: no Kubernetes credentials: in a pod it uses its service account's token "
    "(the chart mounts it); elsewhere it reads KUBECONFIG or ~/.kube/config"
)


def build_reconciler(
    settings: PolicyOperatorSettings, metrics: OperatorMetrics
) -> PolicyReconciler:
    store = PolicyStore(ClusterClient(settings), retime_batch_size=settings.retime_batch_size)
    return PolicyReconciler(
        store,
        settings,
        metrics,
        governance=CourseGovernance.of(settings.governed_courses),
        exports=ExportDirectory(settings.export_directory),
    )


async def run_operator(
    settings: PolicyOperatorSettings,
    metrics: OperatorMetrics,
    *,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
) -> None:
    """The operator until SIGTERM/SIGINT (or `stop_flag`): the tests run this very function."""
    asyncio.get_running_loop().set_exception_handler(_without_login_errors)
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


def _without_login_errors(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    # kopf leaves a task of its own failing with the same LoginError that main() reports;
    # logged when the task is collected, it would only repeat that as a traceback.
    if not isinstance(context.get("exception"), kopf.LoginError):
        loop.default_exception_handler(context)


if __name__ == "__main__":
    main()
