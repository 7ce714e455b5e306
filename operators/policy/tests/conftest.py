"""The policy operator: reconcile against a real Redis Cluster, kopf against kmock.

Fixtures from the project's pytest plugin (`tools/testing/src/testing/plugin.py`, loaded
through its entry point): `redis_cluster`, `cluster_client`, `course_id`, `client_for`,
`kube`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from devstack.redis_cluster import RedisCluster
from nextcampus_common.redis_cluster import ClusterClient
from nextcampus_policy.metrics import OperatorMetrics
from nextcampus_policy.reconcile import PolicyReconciler
from nextcampus_policy.settings import PolicyOperatorSettings
from nextcampus_policy.store import PolicyStore


@pytest.fixture
def operator_settings(redis_cluster: RedisCluster) -> PolicyOperatorSettings:
    """The operator's settings for the session's Redis Cluster (the chat server of the
    plugin uses the same defaults: both read PolicyDefaultSettings)."""
    return PolicyOperatorSettings(
        redis_nodes=redis_cluster.nodes,
        metrics_port=0,
        health_port=0,
        log_format="console",
        retime_batch_size=2,  # several batches even for a handful of messages
    )


@pytest.fixture
def metrics() -> OperatorMetrics:
    return OperatorMetrics()


@pytest.fixture
async def reconciler(
    operator_settings: PolicyOperatorSettings, metrics: OperatorMetrics
) -> AsyncIterator[PolicyReconciler]:
    store = PolicyStore(
        ClusterClient(operator_settings), retime_batch_size=operator_settings.retime_batch_size
    )
    yield PolicyReconciler(store, operator_settings, metrics)
    await store.close()


@pytest.fixture
def metric_value(metrics: OperatorMetrics) -> Callable[..., float]:
    """A sample of the operator's metrics (0 where it has none yet)."""

    def value(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels or None) or 0.0

    return value
