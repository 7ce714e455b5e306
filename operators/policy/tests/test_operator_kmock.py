"""The real kopf runtime of the operator (`run_operator`, the function `python -m
nextcampus_policy` runs) against kmock, and the real Redis Cluster behind it.

kmock stands in for the Kubernetes API server, which cannot run here: an emulated API
(`kmock.KubernetesEmulator`) that stores objects, serves lists and watch streams, honours
finalizers and merges patches (status included). The `kube` fixture (testing.plugin) adds
the little of the API server's bookkeeping the operator relies on: uid, creation time and
generation 1 on create, `generateName` (kopf names its Events that way), and a generation
bump on every spec change. No admission or schema validation runs there (test_crd.py
checks the schema).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import kmock

from devstack.processes import dies_with_parent, free_ports
from devstack.redis_cluster import RedisCluster
from nextcampus_common.keys import CourseKeys
from nextcampus_policy.__main__ import run_operator
from nextcampus_policy.handlers import FINALIZER
from nextcampus_policy.metrics import OperatorMetrics
from nextcampus_policy.settings import PolicyOperatorSettings
from nextcampus_policy.spec import API_VERSION, GROUP, KIND, PLURAL, VERSION
from testing.exports import check_rich_course, populate, read
from testing.plugin import KUBE_NAMESPACE, POLICY_RESOURCE

RESOURCE = POLICY_RESOURCE
NAMESPACE = KUBE_NAMESPACE
WITHIN_SECONDS = 20.0


@contextlib.asynccontextmanager
async def operator(
    settings: PolicyOperatorSettings, metrics: OperatorMetrics
) -> AsyncIterator[None]:
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_operator(settings, metrics, stop_flag=stop, ready_flag=ready))
    try:
        async with asyncio.timeout(WITHIN_SECONDS):
            await asyncio.wait(
                {task, asyncio.ensure_future(ready.wait())}, return_when=asyncio.FIRST_COMPLETED
            )
        if task.done():
            task.result()  # its failure
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, WITHIN_SECONDS)


def policy(
    name: str,
    spec: dict[str, Any],
    created: str = "2026-06-01T08:00:00Z",
    namespace: str = NAMESPACE,
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        # The creation time is the API server's; set here to order two policies.
        "metadata": {
            "name": name,
            "namespace": namespace,
            **({"creationTimestamp": created} if created else {}),
        },
        "spec": spec,
    }


def url(name: str | None = None, namespace: str = NAMESPACE) -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    return f"{base}/{name}" if name else base


def stored(
    kube: kmock.KubernetesEmulator, name: str, namespace: str = NAMESPACE
) -> Mapping[str, Any]:
    return kube.objects[RESOURCE, namespace, name]


def ready_condition(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition
    return {}


async def eventually(check: Callable[[], bool], what: str) -> None:
    """Wait (bounded) until `check()` holds."""
    try:
        async with asyncio.timeout(WITHIN_SECONDS):
            # Polls what other tasks and processes own (kmock's objects, Redis): no event.
            while not check():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {WITHIN_SECONDS:.0f} s: {what}") from None


def events(kube: kmock.KubernetesEmulator, reason: str | None = None) -> list[Mapping[str, Any]]:
    found = [
        obj
        for (resource, _, _), obj in kube.objects.items()
        if resource == kmock.resource("v1/events") and not obj.deleted
    ]
    return [e for e in found if reason is None or e.get("reason") == reason]


async def test_create_update_and_delete_with_the_finalizer(
    kube: kmock.KubernetesEmulator,
    operator_settings: PolicyOperatorSettings,
    metrics: OperatorMetrics,
    cluster_client: Any,
    course_id: str,
) -> None:
    keys = CourseKeys(course_id)
    async with operator(operator_settings, metrics):
        created = await kube.post(
            url(), json=policy("intro", {"courseId": course_id, "messageTTLSeconds": 3600})
        )
        assert created.status < 300

        await eventually(
            lambda: ready_condition(stored(kube, "intro")).get("status") == "True", "Ready=True"
        )
        obj = stored(kube, "intro")
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 1
        assert obj["status"]["effectiveTTLSeconds"] == 3600
        assert ready_condition(obj)["reason"] == "PolicyApplied"
        assert FINALIZER in obj["metadata"]["finalizers"]
        assert cluster_client.hget(keys.policy, "ttl_seconds") == "3600"
        assert events(kube, "PolicyApplied"), "no Event for the applied policy"

        # An update: the API server bumps the generation.
        await kube.patch(url("intro"), json={"spec": {"messageTTLSeconds": 600, "readOnly": True}})
        await eventually(
            lambda: stored(kube, "intro")["status"].get("observedGeneration") == 2,
            "generation 2 observed",
        )
        obj = stored(kube, "intro")
        assert obj["status"]["effectiveTTLSeconds"] == 600
        assert ready_condition(obj)["status"] == "True"
        assert cluster_client.hgetall(keys.policy) == {
            "owner": f"{NAMESPACE}/intro",
            "ttl_seconds": "600",
            "read_only": "1",
        }

        # Delete: the finalizer holds the object until the defaults are back in Redis.
        await kube.delete(url("intro"))
        await eventually(lambda: stored(kube, "intro").deleted, "the object released and gone")
        assert cluster_client.exists(keys.policy) == 0
    assert (
        metrics.registry.get_sample_value(
            "nextcampus_operator_reconciles_total", {"result": "released", "trigger": "change"}
        )
        == 1
    )


async def test_the_newer_of_two_policies_is_a_conflict_until_the_older_goes(
    kube: kmock.KubernetesEmulator,
    operator_settings: PolicyOperatorSettings,
    metrics: OperatorMetrics,
    cluster_client: Any,
    course_id: str,
) -> None:
    keys = CourseKeys(course_id)
    settings = operator_settings.model_copy(update={"resync_seconds": 1.0})
    async with operator(settings, metrics):
        await kube.post(
            url(),
            json=policy(
                "first",
                {"courseId": course_id, "messageTTLSeconds": 7200},
                created="2026-06-01T08:00:00Z",
            ),
        )
        await eventually(
            lambda: ready_condition(stored(kube, "first")).get("status") == "True", "first Ready"
        )
        await kube.post(
            url(),
            json=policy(
                "second", {"courseId": course_id, "readOnly": True}, created="2026-06-02T08:00:00Z"
            ),
        )
        await eventually(
            lambda: ready_condition(stored(kube, "second")).get("reason") == "Conflict",
            "second in Conflict",
        )

        second = stored(kube, "second")
        assert ready_condition(second)["status"] == "False"
        assert f"{NAMESPACE}/first" in ready_condition(second)["message"]
        assert cluster_client.hget(keys.policy, "owner") == f"{NAMESPACE}/first"
        assert events(kube, "Conflict"), "no Warning Event for the conflict"
        assert (
            metrics.registry.get_sample_value(
                "nextcampus_operator_policies_not_ready", {"reason": "Conflict"}
            )
            == 1
        )

        # The older one goes: the newer one governs the course at once, and says so.
        await kube.delete(url("first"))
        await eventually(
            lambda: cluster_client.hget(keys.policy, "owner") == f"{NAMESPACE}/second",
            "second applied",
        )
        assert cluster_client.hget(keys.policy, "read_only") == "1"
        await eventually(
            lambda: ready_condition(stored(kube, "second")).get("status") == "True", "second Ready"
        )
        assert (
            metrics.registry.get_sample_value(
                "nextcampus_operator_policies_not_ready", {"reason": "Conflict"}
            )
            == 0
        )


async def test_drift_is_repaired_by_the_timer(
    kube: kmock.KubernetesEmulator,
    operator_settings: PolicyOperatorSettings,
    metrics: OperatorMetrics,
    cluster_client: Any,
    course_id: str,
) -> None:
    keys = CourseKeys(course_id)
    settings = operator_settings.model_copy(update={"resync_seconds": 1.0})
    async with operator(settings, metrics):
        await kube.post(
            url(), json=policy("drifty", {"courseId": course_id, "maxMessageLength": 100})
        )
        await eventually(lambda: cluster_client.hget(keys.policy, "max_length") == "100", "applied")
        cluster_client.delete(keys.policy)  # Redis lost it
        await eventually(
            lambda: cluster_client.hget(keys.policy, "max_length") == "100", "repaired"
        )
    assert (metrics.registry.get_sample_value("nextcampus_operator_drift_repairs_total") or 0) >= 1
    assert events(kube, "PolicyApplied")


async def test_redis_unreachable_is_not_ready_and_retried_until_it_is_back(
    kube: kmock.KubernetesEmulator,
    operator_settings: PolicyOperatorSettings,
    metrics: OperatorMetrics,
    tmp_path: Path,
    course_id: str,
) -> None:
    ports = free_ports(6, with_bus=True)
    settings = operator_settings.model_copy(
        update={
            "redis_nodes": [f"127.0.0.1:{port}" for port in ports],
            "redis_retry_seconds": 0.3,
            "retry_seconds": 0.5,
        }
    )
    cluster = RedisCluster(ports, tmp_path / "late-redis")
    try:
        async with operator(settings, metrics):
            await kube.post(
                url(), json=policy("waiting", {"courseId": course_id, "messageTTLSeconds": 900})
            )
            await eventually(
                lambda: (
                    ready_condition(stored(kube, "waiting")).get("reason") == "RedisUnavailable"
                ),
                "Ready=False RedisUnavailable",
            )
            assert ready_condition(stored(kube, "waiting"))["status"] == "False"
            assert events(kube, "RedisUnavailable")

            # Redis comes up on those ports; the next retry applies the policy.
            await asyncio.to_thread(cluster.start)
            await eventually(
                lambda: ready_condition(stored(kube, "waiting")).get("status") == "True",
                "Ready after the retry",
            )
            assert stored(kube, "waiting")["status"]["effectiveTTLSeconds"] == 900
    finally:
        cluster.stop()
    retried = metrics.registry.get_sample_value(
        "nextcampus_operator_reconciles_total", {"result": "redis_unavailable", "trigger": "change"}
    )
    assert retried is not None
    assert retried >= 1


async def test_an_invalid_spec_is_not_ready_until_it_is_fixed(
    kube: kmock.KubernetesEmulator,
    operator_settings: PolicyOperatorSettings,
    metrics: OperatorMetrics,
    cluster_client: Any,
    course_id: str,
) -> None:
    # Retries would come fast here: an invalid spec must not be retried at all.
    settings = operator_settings.model_copy(update={"retry_seconds": 0.1})
    async with operator(settings, metrics):
        # Past the schema only where the API server's validation was skipped (an old CRD).
        await kube.post(
            url(), json=policy("typo", {"courseId": course_id, "messageTTLSeconds": "an hour"})
        )
        await eventually(
            lambda: ready_condition(stored(kube, "typo")).get("reason") == "InvalidSpec",
            "InvalidSpec",
        )
        assert "messageTTLSeconds" in ready_condition(stored(kube, "typo"))["message"]
        assert cluster_client.exists(CourseKeys(course_id).policy) == 0
        assert events(kube, "InvalidSpec")

        await kube.patch(url("typo"), json={"spec": {"messageTTLSeconds": 3600}})
        await eventually(
            lambda: ready_condition(stored(kube, "typo")).get("status") == "True",
            "Ready once fixed",
        )
        assert cluster_client.hget(CourseKeys(course_id).policy, "ttl_seconds") == "3600"
    assert (
        metrics.registry.get_sample_value(
            "nextcampus_operator_reconciles_total", {"result": "invalid_spec", "trigger": "change"}
        )
        == 1
    )


async def test_a_policy_from_a_namespace_that_may_not_govern_its_course_is_refused(
    kube: kmock.KubernetesEmulator,
    operator_settings: PolicyOperatorSettings,
    metrics: OperatorMetrics,
    cluster_client: Any,
    course_id: str,
) -> None:
    keys = CourseKeys(course_id)
    foreign = "sandbox"
    kube.objects["v1/namespaces", None, foreign] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": foreign, "uid": "sandbox-uid"},
    }
    settings = operator_settings.model_copy(update={"governed_courses": {NAMESPACE: ["*"]}})
    async with operator(settings, metrics):
        # Older than the course's own policy, and out to wipe its history.
        await kube.post(
            url(namespace=foreign),
            json=policy(
                "wipe",
                {"courseId": course_id, "messageTTLSeconds": 60, "readOnly": True},
                created="2026-06-01T08:00:00Z",
                namespace=foreign,
            ),
        )
        await eventually(
            lambda: ready_condition(stored(kube, "wipe", foreign)).get("reason") == "NotPermitted",
            "Ready=False NotPermitted",
        )
        condition = ready_condition(stored(kube, "wipe", foreign))
        assert condition["status"] == "False"
        assert f"namespace {foreign} may not govern course {course_id}" in condition["message"]
        assert stored(kube, "wipe", foreign)["status"].get("effectiveTTLSeconds") is None
        assert cluster_client.exists(keys.policy) == 0
        (event,) = events(kube, "NotPermitted")
        assert event["type"] == "Warning"
        assert foreign in event["message"]
        assert (
            metrics.registry.get_sample_value(
                "nextcampus_operator_policies_not_ready", {"reason": "NotPermitted"}
            )
            == 1
        )

        # The course's own policy, created later, governs it: no Conflict with the refused one.
        await kube.post(
            url(),
            json=policy(
                "rules",
                {"courseId": course_id, "messageTTLSeconds": 7200},
                created="2026-06-02T08:00:00Z",
            ),
        )
        await eventually(
            lambda: ready_condition(stored(kube, "rules")).get("status") == "True", "rules Ready"
        )
        assert cluster_client.hget(keys.policy, "owner") == f"{NAMESPACE}/rules"
        assert cluster_client.hget(keys.policy, "ttl_seconds") == "7200"

        # Deleting the refused policy leaves the course as it is.
        await kube.delete(url("wipe", foreign))
        await eventually(lambda: stored(kube, "wipe", foreign).deleted, "the refused one gone")
        assert cluster_client.hget(keys.policy, "owner") == f"{NAMESPACE}/rules"
        assert (
            metrics.registry.get_sample_value(
                "nextcampus_operator_policies_not_ready", {"reason": "NotPermitted"}
            )
            == 0
        )


async def http_get(url: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response,
    ):
        return response.status, await response.text()


async def test_the_operator_process_serves_liveness_and_metrics(
    kube: kmock.KubernetesEmulator, redis_cluster: RedisCluster, cluster_client: Any, course_id: str
) -> None:
    """`python -m nextcampus_policy` as a pod runs it: settings from env, /healthz, /metrics,
    a clean stop on SIGTERM."""
    metrics_port, health_port = free_ports(2)
    env = {
        **os.environ,
        "NEXTCAMPUS_REDIS_NODES": redis_cluster.nodes_csv,
        "NEXTCAMPUS_METRICS_HOST": "127.0.0.1",
        "NEXTCAMPUS_METRICS_PORT": str(metrics_port),
        "NEXTCAMPUS_HEALTH_HOST": "127.0.0.1",
        "NEXTCAMPUS_HEALTH_PORT": str(health_port),
        "NEXTCAMPUS_LOG_FORMAT": "json",
    }
    process = await asyncio.create_subprocess_exec(
        *dies_with_parent([sys.executable, "-m", "nextcampus_policy"]),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        async def live() -> bool:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                return (await http_get(f"http://127.0.0.1:{health_port}/healthz"))[0] == 200
            return False

        async with asyncio.timeout(WITHIN_SECONDS):
            while not await live():
                assert process.returncode is None, "the operator exited"
                await asyncio.sleep(0.1)

        await kube.post(
            url(), json=policy("process", {"courseId": course_id, "maxMessageLength": 280})
        )
        await eventually(
            lambda: ready_condition(stored(kube, "process")).get("status") == "True", "Ready"
        )
        assert cluster_client.hget(CourseKeys(course_id).policy, "max_length") == "280"
        status, text = await http_get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        assert 'nextcampus_operator_reconciles_total{result="applied",trigger="change"} 1.0' in text
        assert "nextcampus_operator_reconcile_duration_seconds_count 1.0" in text
        assert 'nextcampus_operator_policies_not_ready{reason="Conflict"} 0.0' in text
    finally:
        if process.returncode is None:
            process.terminate()
        async with asyncio.timeout(WITHIN_SECONDS):
            _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()[-2000:]


def test_bad_operator_settings_stop_it_with_a_clear_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nextcampus_policy"],
        env={**os.environ, "NEXTCAMPUS_RESYNC_SECONDS": "0", "NEXTCAMPUS_REDIS_NODES": "nowhere"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "invalid policy operator settings" in result.stderr
    assert "resync_seconds" in result.stderr
    assert "redis_nodes" in result.stderr


async def test_the_status_shows_the_schedules_mode_and_its_next_change(
    kube: kmock.KubernetesEmulator,
    operator_settings: PolicyOperatorSettings,
    metrics: OperatorMetrics,
    cluster_client: Any,
    course_id: str,
) -> None:
    # An exam around the real now (kopf's clock is the machine's), in the local time of
    # a zone with an offset, ending on a whole minute.
    zone = "Asia/Kolkata"  # UTC+05:30 all year
    local = datetime.datetime.now(ZoneInfo(zone)).replace(second=0, microsecond=0)
    end = local + datetime.timedelta(hours=2)
    exam = {
        "mode": "ReadOnly",
        "timeZone": zone,
        "dated": {
            "start": (local - datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
            "end": end.strftime("%Y-%m-%dT%H:%M"),
        },
    }
    keys = CourseKeys(course_id)
    async with operator(operator_settings, metrics):
        await kube.post(url(), json=policy("exam", {"courseId": course_id, "schedule": [exam]}))
        await eventually(lambda: stored(kube, "exam").get("status", {}).get("mode"), "a mode")
        status = stored(kube, "exam")["status"]
        assert (status["mode"], status["nextMode"]) == ("ReadOnly", "Open")
        assert status["nextModeChange"] == end.astimezone(datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        assert ready_condition(stored(kube, "exam"))["status"] == "True"
        assert cluster_client.hget(keys.policy, "schedule_segments").endswith(":r")

        # The schedule removed: the course is open, with no change ahead.
        await kube.patch(url("exam"), json={"spec": {"schedule": None}})
        await eventually(lambda: stored(kube, "exam")["status"].get("mode") == "Open", "Open")
        assert "nextModeChange" not in stored(kube, "exam")["status"] or (
            stored(kube, "exam")["status"]["nextModeChange"] is None
        )
        assert cluster_client.hget(keys.policy, "schedule_segments") is None

        # A bad schedule: not ready, and the status says which field and why.
        bad = {**exam, "dated": {"start": "2027-02-30T08:00", "end": "2027-03-02T08:00"}}
        await kube.patch(url("exam"), json={"spec": {"schedule": [bad]}})
        await eventually(
            lambda: ready_condition(stored(kube, "exam")).get("reason") == "InvalidSpec",
            "InvalidSpec",
        )
        message = ready_condition(stored(kube, "exam"))["message"]
        assert "schedule.0.dated" in message
        assert "not a date and time of the calendar" in message


async def test_a_shortening_ttl_change_is_exported_first_and_reported(
    kube: kmock.KubernetesEmulator,
    operator_settings: PolicyOperatorSettings,
    metrics: OperatorMetrics,
    client_for: Callable[..., Any],
    course_id: str,
    tmp_path: Path,
) -> None:
    """Opted in, with an export directory: the course is exported before each change that
    shortens its TTL; the status and an Event say where."""
    course = await populate(
        client_for("stu", [course_id]), client_for("mod", [course_id], [course_id]), course_id
    )
    exports = tmp_path / "exports"  # the operator's volume (tmp_path holds the kubeconfig)
    exports.mkdir()
    settings = operator_settings.model_copy(update={"export_directory": exports})
    spec = {"courseId": course_id, "exportBeforeTTLChange": True, "messageTTLSeconds": 7200}
    async with operator(settings, metrics):
        await kube.post(url(), json=policy("exported", spec))
        await eventually(
            lambda: "lastExport" in (stored(kube, "exported").get("status") or {}),
            "the export in the status",
        )
        last = stored(kube, "exported")["status"]["lastExport"]
        assert last["result"] == "Exported"
        assert last["messages"] == len(course.ids)
        check_rich_course(read(last["file"]), course)
        # kopf posts the Event on its own, after the status: waited for, not assumed.
        await eventually(lambda: bool(events(kube, "CourseExported")), "the CourseExported Event")
        (event,) = events(kube, "CourseExported")
        assert last["file"] in event["message"]

        await kube.patch(url("exported"), json={"spec": {"messageTTLSeconds": 600}})
        await eventually(lambda: len(events(kube, "CourseExported")) == 2, "a second export")
        assert len(os.listdir(exports)) == 2
        assert stored(kube, "exported")["status"]["effectiveTTLSeconds"] == 600


async def test_an_export_without_a_directory_is_refused_and_the_ttl_applied(
    kube: kmock.KubernetesEmulator,
    operator_settings: PolicyOperatorSettings,
    metrics: OperatorMetrics,
    client_for: Callable[..., Any],
    cluster_client: Any,
    course_id: str,
) -> None:
    await client_for("ada", [course_id]).send(course_id, "history worth keeping")
    spec = {"courseId": course_id, "exportBeforeTTLChange": True, "messageTTLSeconds": 3600}
    async with operator(operator_settings, metrics):
        await kube.post(url(), json=policy("refused", spec))
        await eventually(lambda: bool(events(kube, "ExportRefused")), "a Warning Event")
        (event,) = events(kube, "ExportRefused")
        assert event["type"] == "Warning"
        assert "no export directory is configured" in event["message"]
        await eventually(
            lambda: ready_condition(stored(kube, "refused")).get("status") == "True", "Ready"
        )
        status = stored(kube, "refused")["status"]
        assert status["lastExport"]["result"] == "Refused"
        assert "no export directory" in status["lastExport"]["reason"]
        assert "refused" in ready_condition(stored(kube, "refused"))["message"]
        assert status["effectiveTTLSeconds"] == 3600
    assert cluster_client.hget(CourseKeys(course_id).policy, "ttl_seconds") == "3600"
