"""The Helm chart, offline, with the real tools: `helm lint --strict` and `helm template`
over every value set in charts/nextcampus-chat/ci/; every rendered object passes
`kubernetes-validate --strict`; the objects fit together (Services select pods and name
their ports, probes and NetworkPolicies use ports that exist, referenced ConfigMaps exist);
the rendered Envoy config passes `envoy --mode validate`; values are checked by the schema;
and the env vars the chart gives each service are exactly fields of its settings object,
which accepts them.

No cluster runs here: what needs one (the pods starting) is the kind e2e (e2e/kind/)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes_validate
import pytest
import yaml
from pydantic_settings import BaseSettings

from devstack.binaries import helm_binary
from devstack.gateway import hs256_jwks, validate_envoy_config
from devstack.paths import chart
from devstack.processes import ManagedProcess, free_ports, port_is_free
from devstack.redis_cluster import form_cluster
from nextcampus_chat.settings import ChatSettings
from nextcampus_graphql.settings import GraphqlSettings
from nextcampus_policy.settings import PolicyOperatorSettings

CHART = chart()

VALUE_SETS = sorted(
    path.name.removesuffix("-values.yaml") for path in (CHART / "ci").glob("*-values.yaml")
)
KNOWN_ONLY_BY_CRD = {"ServiceMonitor", "PrometheusRule", "CourseChatPolicy"}
SECRET = "a-test-secret-for-the-chart-of-at-least-32-chars"
SETTINGS_OF = {
    "chat": ChatSettings,
    "graphql": GraphqlSettings,
    "operator": PolicyOperatorSettings,
}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


# `helm template` of the chart as release "nextcampus" in namespace "chat".
TEMPLATE = ("template", "nextcampus", str(CHART), "--namespace", "chat")


@cache
def rendered(value_set: str, *extra: str) -> tuple[dict[str, Any], ...]:
    result = helm(
        *TEMPLATE,
        "-f",
        str(CHART / "ci" / f"{value_set}-values.yaml"),
        *extra,
    )
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(objects: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def workloads(objects: tuple[dict[str, Any], ...]) -> Iterator[dict[str, Any]]:
    for obj in objects:
        if obj["kind"] in {"Deployment", "StatefulSet", "Job"}:
            yield obj


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def component(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["labels"]["app.kubernetes.io/component"])


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_lint_strict(value_set: str) -> None:
    result = helm(
        "lint", "--strict", str(CHART), "-f", str(CHART / "ci" / f"{value_set}-values.yaml")
    )
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_object_is_valid_kubernetes(value_set: str) -> None:
    objects = rendered(value_set)
    assert objects
    version = kubernetes_validate.latest_version()
    for obj in objects:
        if obj["kind"] in KNOWN_ONLY_BY_CRD:
            assert obj["apiVersion"] == "monitoring.coreos.com/v1", obj["apiVersion"]
            continue
        kubernetes_validate.validate(obj, version, strict=True)
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "nextcampus-chat", obj["metadata"]["name"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_the_objects_fit_together(value_set: str) -> None:
    objects = rendered(value_set)
    pods = [(pod_spec(w), w["spec"]["template"]["metadata"]["labels"]) for w in workloads(objects)]
    config_maps = {obj["metadata"]["name"] for obj in of_kind(objects, "ConfigMap")}

    def selected(selector: dict[str, str]) -> list[dict[str, Any]]:
        return [spec for spec, labels in pods if selector.items() <= labels.items()]

    def port_names(spec: dict[str, Any]) -> set[str]:
        return {p["name"] for c in spec["containers"] for p in c.get("ports", [])}

    def port_numbers(spec: dict[str, Any]) -> set[int]:
        return {p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])}

    services = of_kind(objects, "Service")
    for service in services:
        targets = selected(service["spec"]["selector"])
        assert targets, f"Service {service['metadata']['name']} selects no pods"
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for spec in targets:
                known = port_names(spec) if isinstance(target, str) else port_numbers(spec)
                assert target in known, (service["metadata"]["name"], target)
    for monitor in of_kind(objects, "ServiceMonitor"):
        matching = [
            s
            for s in services
            if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]
        assert len(matching) == 1, f"{monitor['metadata']['name']} must select one Service"
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in matching[0]["spec"]["ports"]}
    for policy in of_kind(objects, "NetworkPolicy"):
        targets = selected(policy["spec"]["podSelector"]["matchLabels"])
        assert targets, f"NetworkPolicy {policy['metadata']['name']} selects no pods"
        for rule in policy["spec"]["ingress"]:
            for port in rule["ports"]:
                assert all(port["port"] in port_numbers(spec) for spec in targets), port
            for peer in rule.get("from", []):
                if "podSelector" in peer:
                    assert selected(peer["podSelector"]["matchLabels"]), peer
    for workload in workloads(objects):
        spec = pod_spec(workload)
        for container in spec["containers"]:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                action = container.get(probe, {})
                for kind in ("httpGet", "tcpSocket", "grpc"):
                    if kind in action:
                        port = action[kind]["port"]
                        assert port in port_names(spec) | port_numbers(spec), (
                            container["name"],
                            probe,
                        )
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_envoy_accepts_the_rendered_gateway_config(value_set: str, tmp_path: Path) -> None:
    (config_map,) = [
        obj
        for obj in of_kind(rendered(value_set), "ConfigMap")
        if "envoy.yaml" in obj.get("data", {})
    ]
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(hs256_jwks(SECRET)))
    # The pod mounts the key at /etc/envoy/jwt; here it lies in tmp_path.
    config = config_map["data"]["envoy.yaml"].replace("/etc/envoy/jwt/jwks.json", str(jwks))
    path = tmp_path / "envoy.yaml"
    path.write_text(config)
    validate_envoy_config(path)


def env_of(objects: tuple[dict[str, Any], ...], name: str) -> dict[str, str]:
    """The NEXTCAMPUS_* env of a service's container: its ConfigMap and its secret refs."""
    config_maps = {
        obj["metadata"]["name"]: obj.get("data", {}) for obj in of_kind(objects, "ConfigMap")
    }
    (workload,) = [w for w in workloads(objects) if component(w) == name]
    (container,) = pod_spec(workload)["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", SECRET)  # a secretKeyRef: a stand-in value
    return env


@pytest.mark.parametrize("value_set", VALUE_SETS)
@pytest.mark.parametrize("service", sorted(SETTINGS_OF))
def test_the_env_of_each_service_is_its_settings(
    value_set: str, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = rendered(value_set)
    if not [w for w in workloads(objects) if component(w) == service]:
        pytest.skip(f"{service} is not part of the {value_set} value set")
    env = env_of(objects, service)
    settings_class: type[BaseSettings] = SETTINGS_OF[service]
    fields = {f"NEXTCAMPUS_{name.upper()}" for name in settings_class.model_fields}
    assert env, "no settings at all"
    unknown = sorted(set(env) - fields)
    assert not unknown, f"{service} pods would ignore {unknown}"
    # And the process accepts them: its settings object loads from exactly this env.
    for name in list(__import__("os").environ):
        if name.startswith("NEXTCAMPUS_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = settings_class()
    assert settings.model_dump()["log_format"] == "json"


def test_services_agree_on_the_policy_defaults() -> None:
    objects = rendered("default", "--set", "policyDefaults.ttlSeconds=3600")
    chat, operator = env_of(objects, "chat"), env_of(objects, "operator")
    for name in ("TTL_SECONDS", "MAX_LENGTH", "RATE_LIMIT_MESSAGES", "RATE_LIMIT_SECONDS"):
        assert chat[f"NEXTCAMPUS_DEFAULT_{name}"] == operator[f"NEXTCAMPUS_DEFAULT_{name}"]
    assert chat["NEXTCAMPUS_DEFAULT_TTL_SECONDS"] == "3600"


def test_settings_reach_the_pods_and_typos_do_not() -> None:
    objects = rendered("default", "--set", "chat.settings.stream_queue_size=123")
    assert env_of(objects, "chat")["NEXTCAMPUS_STREAM_QUEUE_SIZE"] == "123"
    for bad in (
        "chat.settings.stream_queue_sise=5",
        "graphql.settings.http_port=1",
        "chat.settings.stream_queue_size=-1",
    ):
        result = helm("template", "nextcampus", str(CHART), "--set", bad, check=False)
        assert result.returncode != 0, bad
        assert "/settings" in result.stderr, result.stderr


def test_the_values_schema_is_generated_from_the_settings() -> None:
    generator = CHART.parents[1] / "tools" / "gen_chart_schema.py"
    result = subprocess.run(
        [sys.executable, str(generator), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("chat.port=http", "chat/port"),
        ("jwt.secret=short", "jwt/secret"),
        ("redis.replicas=4", "redis/replicas"),
        ("colour=blue", "colour"),
        ("redis.appendfsync=sometimes", "appendfsync"),
        ("gateway.service.type=Ingress", "gateway/service/type"),
        ("operator.governedCourses.courses=all", "operator/governedCourses"),
        ("gateway.rateLimit.perUser.everySeconds=0", "gateway/rateLimit/perUser/everySeconds"),
        ("gateway.trustedProxyHops=-1", "gateway/trustedProxyHops"),
    ],
)
def test_bad_values_are_refused_with_the_field_named(setting: str, words: str) -> None:
    result = helm("template", "nextcampus", str(CHART), "--set", setting, check=False)
    assert result.returncode != 0
    assert words in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        (
            ["chat.terminationGracePeriodSeconds=20"],
            "chat.terminationGracePeriodSeconds (20) must exceed",
        ),
        (["redis.replicas=7"], "redis.replicas (7) must be primaries"),
        (["redis.enabled=false"], "redis.external.nodes"),
        (
            ["gateway.idleTimeoutSeconds=10"],
            "gateway.idleTimeoutSeconds (10) must exceed the GraphQL keepalive (15 s)",
        ),
        (
            ["gateway.idleTimeoutSeconds=30", "graphql.settings.keepalive_seconds=45"],
            "must exceed the GraphQL keepalive (45 s)",
        ),
        (
            ["redis.durability.minReplicas=2"],
            "redis.durability.minReplicas (2) cannot exceed redis.replicasPerPrimary (1)",
        ),
        (
            ["chat.settings.redis_min_replicas=0"],
            "set redis_min_replicas through redis.durability",
        ),
    ],
)
def test_inconsistent_values_stop_the_render(settings: list[str], words: str) -> None:
    args = [arg for setting in settings for arg in ("--set", setting)]
    result = helm("template", "nextcampus", str(CHART), *args, check=False)
    assert result.returncode != 0
    assert words in result.stderr, result.stderr


def redis_node_env(objects: tuple[dict[str, Any], ...]) -> dict[str, str]:
    (statefulset,) = [w for w in workloads(objects) if component(w) == "redis"]
    container = pod_spec(statefulset)["containers"][0]
    return {item["name"]: item.get("value", "") for item in container["env"]}


@pytest.mark.parametrize(
    ("value_set", "extra", "min_replicas", "without", "nodes_refuse_below"),
    [
        # One replica per primary: a send waits for it; a shard without one refuses.
        ("default", [], "1", "refuse", "1"),
        # Two per primary: one of them suffices, so one failure never stops writes.
        ("ha", [], "1", "refuse", "1"),
        # accept: the nodes take writes without replicas; chat counts them.
        ("default", ["--set", "redis.durability.withoutReplicas=accept"], "1", "accept", "0"),
        # A cluster built without replicas acknowledges on the primary alone.
        (
            "default",
            ["--set", "redis.replicasPerPrimary=0"],
            "0",
            "refuse",
            "0",
        ),
    ],
)
def test_durability_is_one_choice_for_chat_the_operator_and_the_nodes(
    value_set: str, extra: list[str], min_replicas: str, without: str, nodes_refuse_below: str
) -> None:
    objects = rendered(value_set, *extra)
    for service in ("chat", "operator"):
        env = env_of(objects, service)
        assert env["NEXTCAMPUS_REDIS_MIN_REPLICAS"] == min_replicas, service
        assert env["NEXTCAMPUS_REDIS_WITHOUT_REPLICAS"] == without, service
        assert env["NEXTCAMPUS_REDIS_WAIT_TIMEOUT_MS"] == "1000", service
    node = redis_node_env(objects)
    assert node["MIN_REPLICAS_TO_WRITE"] == nodes_refuse_below
    assert node["MIN_REPLICAS_MAX_LAG"] == "5"


def jwt_secrets(objects: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    return [obj for obj in of_kind(objects, "Secret") if "jwt-secret" in obj["data"]]


def test_the_jwt_secret_holds_the_key_and_its_jwks() -> None:
    objects = rendered("default", "--set", f"jwt.secret={SECRET}")
    (secret,) = jwt_secrets(objects)
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["jwt-secret"] == SECRET
    assert json.loads(data["jwks.json"]) == hs256_jwks(SECRET)
    (generated,) = jwt_secrets(rendered("default"))
    assert len(base64.b64decode(generated["data"]["jwt-secret"])) >= 32
    assert not jwt_secrets(rendered("jwks-url"))
    assert not of_kind(rendered("ha"), "Secret")  # existingSecret, for JWT and Redis alike


# Every container that talks to Redis, and the env vars it reads the password from.
REDIS_PASSWORD_ENV = {
    ("chat", "chat"): {"NEXTCAMPUS_REDIS_PASSWORD"},
    ("operator", "operator"): {"NEXTCAMPUS_REDIS_PASSWORD"},
    ("redis", "redis"): {"REDIS_PASSWORD", "REDISCLI_AUTH"},  # start.sh; redis-cli probes
    ("redis", "exporter"): {"REDIS_PASSWORD"},
    ("redis-setup", "create-cluster"): {"REDISCLI_AUTH"},
}
FULLNAME = "nextcampus-nextcampus-chat"  # the release `nextcampus` of `rendered`


def redis_secret_name(value_set: str) -> str | None:
    """The Secret a value set's Redis password should come from (None: no password)."""
    redis = values_of(value_set).get("redis", {})
    if redis.get("enabled", True):
        return str(redis.get("auth", {}).get("existingSecret") or f"{FULLNAME}-redis-auth")
    return redis.get("external", {}).get("existingSecret") or None


def redis_password_of(objects: tuple[dict[str, Any], ...]) -> str:
    """The password of the Secret the chart generated."""
    (secret,) = [s for s in of_kind(objects, "Secret") if "redis-password" in s["data"]]
    return base64.b64decode(secret["data"]["redis-password"]).decode()


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_redis_client_gets_the_password_from_the_secret(value_set: str) -> None:
    objects = rendered(value_set)
    secret = redis_secret_name(value_set)
    containers = {
        (component(w), c["name"]): c for w in workloads(objects) for c in pod_spec(w)["containers"]
    }
    clients = [key for key in REDIS_PASSWORD_ENV if key in containers]
    assert ("chat", "chat") in clients
    for key in clients:
        env = {item["name"]: item for item in containers[key].get("env", [])}
        for name in REDIS_PASSWORD_ENV[key]:
            if secret is None:  # an external Redis without a password
                assert name not in env, key
                continue
            assert env[name].get("valueFrom") == {
                "secretKeyRef": {"name": secret, "key": "redis-password"}
            }, (key, name)
    if secret == f"{FULLNAME}-redis-auth":
        # Generated by the chart: a strong password that no other object carries (no
        # argument, env value, probe or ConfigMap prints it).
        password = redis_password_of(objects)
        assert len(password) >= 32
        others = [o for o in objects if o["kind"] != "Secret"]
        assert password not in yaml.safe_dump_all(others)
    else:
        assert not [s for s in of_kind(objects, "Secret") if "redis-password" in s["data"]]
    for key, container in containers.items():
        words = [*container.get("command", []), *container.get("args", [])]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            words += container.get(probe, {}).get("exec", {}).get("command", [])
        text = " ".join(words)
        assert not re.search(
            r"(^|\s)(-a|--pass|--requirepass|--masterauth|--redis\.password)\b", text
        ), key


def values_of(value_set: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{value_set}-values.yaml").read_text())
    return values or {}


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_redis_keeps_protected_mode_on(value_set: str) -> None:
    configs = [
        cm["data"]["redis.conf"]
        for cm in of_kind(rendered(value_set), "ConfigMap")
        if "redis.conf" in cm.get("data", {})
    ]
    if not values_of(value_set).get("redis", {}).get("enabled", True):
        assert not configs  # an external Redis: not the chart's to configure
        return
    (config,) = configs
    directives = [line.split() for line in config.splitlines() if line and line[0] != "#"]
    assert ["protected-mode", "yes"] in directives
    assert ["protected-mode", "no"] not in directives


async def test_the_generated_redis_password_is_kept_across_upgrades(kube: Any) -> None:
    """`helm template --dry-run=server` reads the release's namespace through the API (kmock
    here), as `helm upgrade` does: a password that exists is kept, one that does not is
    generated."""
    name = f"{FULLNAME}-redis-auth"

    def render() -> str:
        result = helm(
            *TEMPLATE,
            "--dry-run=server",
            "--disable-openapi-validation",
            "--kubeconfig",
            os.environ["KUBECONFIG"],
            "--show-only",
            "templates/redis/secret.yaml",
        )
        (secret,) = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        assert secret["metadata"]["name"] == name
        return base64.b64decode(secret["data"]["redis-password"]).decode()

    # What helm needs of an API server that kmock does not give as a real one would: a
    # Kubernetes version the chart accepts, and the core group named `v1` in discovery.
    kube["get /version"] << {"major": "1", "minor": "35", "gitVersion": "v1.35.0"}
    async with aiohttp.ClientSession() as session, session.get(f"{kube.url}/api/v1") as response:
        core = await response.json()
    kube["get /api/v1"] << {**core, "groupVersion": "v1"}

    first, second = await asyncio.to_thread(render), await asyncio.to_thread(render)
    assert first != second  # nothing stored yet: a fresh one each time
    kube.objects["v1/secrets", "chat", name] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": "chat",
            # What `helm install` leaves on the objects of its release.
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {
                "meta.helm.sh/release-name": "nextcampus",
                "meta.helm.sh/release-namespace": "chat",
            },
        },
        "data": {"redis-password": base64.b64encode(first.encode()).decode()},
    }
    assert await asyncio.to_thread(render) == first
    assert await asyncio.to_thread(render) == first


@dataclass
class RenderedRedisNode:
    """One node of the chart's Redis StatefulSet, run from the rendered ConfigMap (start.sh,
    redis.conf) with the container's env, on a loopback port instead of 6379."""

    process: ManagedProcess
    port: int


def rendered_redis(objects: tuple[dict[str, Any], ...]) -> tuple[dict[str, str], dict[str, Any]]:
    (config_map,) = [cm for cm in of_kind(objects, "ConfigMap") if "start.sh" in cm.get("data", {})]
    (statefulset,) = of_kind(objects, "StatefulSet")
    (container,) = [c for c in pod_spec(statefulset)["containers"] if c["name"] == "redis"]
    return config_map["data"], container


def container_env(container: dict[str, Any], password: str, pod_name: str) -> dict[str, str]:
    """The container's env as the kubelet would fill it (secret refs: `password`)."""
    env = {}
    for item in container.get("env", []):
        source = item.get("valueFrom", {})
        if "secretKeyRef" in source:
            assert source["secretKeyRef"]["key"] == "redis-password"
            env[item["name"]] = password
        elif "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.name"
            env[item["name"]] = pod_name
        else:
            env[item["name"]] = item["value"]
    return env


def start_rendered_node(
    files: dict[str, str], env: dict[str, str], port: int, directory: Path
) -> RenderedRedisNode:
    directory.mkdir(parents=True)
    # Where the pod has its volumes, and a loopback listener here (protected mode and the
    # password apply on loopback too: the tests look at what Redis itself refuses).
    config = files["redis.conf"].replace("/data", str(directory))
    config = config.replace("port 6379", f"port {port}") + "bind 127.0.0.1\n"
    (directory / "redis.conf").write_text(config)
    script = files["start.sh"]
    for pod_path, here in (
        ("/data/nodes.conf", directory / "nodes.conf"),
        ("/etc/redis/redis.conf", directory / "redis.conf"),
    ):
        assert pod_path in script
        script = script.replace(pod_path, str(here))
    (directory / "start.sh").write_text(script)
    node = RenderedRedisNode(
        ManagedProcess(
            name=f"redis-{port}",
            argv=["sh", str(directory / "start.sh")],
            env=env,
            log_path=directory / "redis.log",
            ready_check=lambda: not port_is_free(port),
        ),
        port,
    )
    node.process.start()
    node.process.wait_ready(30)
    return node


def redis_cli(port: int, *args: str, password: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    if password is not None:
        env["REDISCLI_AUTH"] = password
    result = subprocess.run(
        ["redis-cli", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
        env=env,
    )
    return result.stdout.strip()


def aimed_at(port: int, command: list[str]) -> list[str]:
    """A probe's command, its redis-cli aimed at `port` instead of the pod's 6379."""
    aimed: list[str] = []
    for part in command:
        if part == "redis-cli":
            aimed += ["redis-cli", "-p", str(port)]
        else:
            aimed.append(part.replace("redis-cli ", f"redis-cli -p {port} "))
    assert aimed != command, command
    return aimed


def until(check: Any, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:.0f} s: {what}")
        time.sleep(0.2)


# A password from an existingSecret may hold anything a config line could trip on.
AWKWARD_PASSWORD = "pa\"ss wo\\rd $(id) #;'ü"


@pytest.mark.parametrize("password_source", ["generated", "existingSecret"])
def test_the_rendered_redis_cluster_refuses_clients_without_the_password(
    password_source: str, tmp_path: Path
) -> None:
    if password_source == "generated":
        objects = rendered("default")
        password = redis_password_of(objects)
    else:
        objects = rendered("default", "--set", "redis.auth.existingSecret=redis-auth")
        password = AWKWARD_PASSWORD
    files, container = rendered_redis(objects)
    ports = free_ports(6, with_bus=True)
    nodes = []
    try:
        for index, port in enumerate(ports):
            env = container_env(container, password, f"{FULLNAME}-redis-{index}")
            nodes.append(start_rendered_node(files, env, port, tmp_path / str(port)))
        first = ports[0]

        # Not in any process's arguments (what `ps` shows everyone in the pod).
        for node in nodes:
            cmdline = Path(f"/proc/{node.process.pid}/cmdline").read_bytes()
            assert b"redis-server" in cmdline
            assert password.encode() not in cmdline

        # Without the password a client gets nothing but NOAUTH; with it, everything.
        assert redis_cli(first, "ping").startswith("NOAUTH")
        assert redis_cli(first, "ping", password="wrong").startswith("NOAUTH")
        assert redis_cli(first, "ping", password=password) == "PONG"
        assert redis_cli(first, "config", "get", "protected-mode", password=password).split() == [
            "protected-mode",
            "yes",
        ]

        # The probes, run with the container's env: ready only with the password.
        env = {**os.environ, **container_env(container, password, f"{FULLNAME}-redis-0")}
        without = {k: v for k, v in env.items() if k != "REDISCLI_AUTH"}
        for probe in ("readinessProbe", "livenessProbe"):
            command = aimed_at(first, container[probe]["exec"]["command"])
            assert subprocess.run(command, env=env, timeout=10, check=False).returncode == 0
        readiness = aimed_at(first, container["readinessProbe"]["exec"]["command"])
        assert subprocess.run(readiness, env=without, timeout=10, check=False).returncode != 0

        # The setup Job's way in (REDISCLI_AUTH, as its container has it) forms the cluster,
        # and the replicas sync from their primaries with masterauth.
        (job,) = of_kind(objects, "Job")
        (job_container,) = pod_spec(job)["containers"]
        job_env = container_env(job_container, password, "setup")
        assert set(job_env) >= {"REDISCLI_AUTH"}
        created = form_cluster(
            [f"127.0.0.1:{port}" for port in ports],
            env={"REDISCLI_AUTH": job_env["REDISCLI_AUTH"]},
        )
        assert created.returncode == 0, created.stdout + created.stderr

        def replicas_synced() -> bool:
            infos = [redis_cli(port, "info", "replication", password=password) for port in ports]
            replicas = [info for info in infos if "role:slave" in info]
            return len(replicas) == 3 and all("master_link_status:up" in i for i in replicas)

        until(replicas_synced, "every replica in sync with its primary")
        until(
            lambda: "cluster_state:ok" in redis_cli(first, "cluster", "info", password=password),
            "cluster_state:ok",
        )
    finally:
        for node in nodes:
            node.process.stop()


def test_streaming_pods_have_a_drain_budget_and_grpc_probes() -> None:
    objects = rendered("default")
    by_component = {component(w): w for w in workloads(objects)}
    for name in ("graphql", "chat"):
        spec = pod_spec(by_component[name])
        (container,) = spec["containers"]
        assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
        assert (
            spec["terminationGracePeriodSeconds"]
            > container["lifecycle"]["preStop"]["sleep"]["seconds"]
        )
    (chat,) = pod_spec(by_component["chat"])["containers"]
    assert "grpc" in chat["readinessProbe"]
    operator = by_component["operator"]
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}
    for workload in workloads(objects):
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        for container in spec["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_only_the_operator_pod_gets_a_kubernetes_api_token(value_set: str) -> None:
    objects = rendered(value_set)
    pods = {component(w): pod_spec(w) for w in workloads(objects)}
    assert {"gateway", "graphql", "chat"} <= set(pods)
    for name, spec in pods.items():
        if name == "operator":
            (account,) = of_kind(objects, "ServiceAccount")
            assert spec["serviceAccountName"] == account["metadata"]["name"]
            assert spec["automountServiceAccountToken"] is True
        else:
            # Not left to the namespace's default ServiceAccount, which mounts a token.
            assert spec.get("automountServiceAccountToken") is False, name
            assert "serviceAccountName" not in spec, name


def test_the_operator_gets_least_privilege() -> None:
    for value_set, role_kind in (("default", "ClusterRole"), ("ha", "Role")):
        objects = rendered(value_set)
        roles = [
            r
            for r in of_kind(objects, role_kind)
            if not r["metadata"]["name"].endswith("-discovery")
        ]
        assert roles
        for role in roles:
            for rule in role["rules"]:
                assert "*" not in rule["verbs"]
                assert "*" not in rule["resources"]
                assert "delete" not in rule["verbs"]
                assert set(rule["resources"]) <= {
                    "coursechatpolicies",
                    "coursechatpolicies/status",
                    "events",
                }
    assert [r["metadata"]["namespace"] for r in of_kind(rendered("ha"), "Role")] == [
        "courses",
        "archive",
    ]


def test_the_release_namespace_governs_every_course_unless_told_otherwise() -> None:
    def governed(objects: tuple[dict[str, Any], ...]) -> Any:
        return json.loads(env_of(objects, "operator")["NEXTCAMPUS_GOVERNED_COURSES"])

    # Policies elsewhere (another team's namespace) may not touch any course by default.
    assert governed(rendered("default")) == {"chat": ["*"]}
    assert governed(rendered("ha")) == {"courses": ["*"], "archive": ["cs-*", "math-*"]}


def test_the_crd_is_the_one_file_and_survives_uninstall() -> None:
    (crd,) = of_kind(rendered("default"), "CustomResourceDefinition")
    source = yaml.safe_load(
        (CHART / "files/crds/coursechatpolicies.chat.nextcampus.io.yaml").read_text()
    )
    assert crd["spec"] == source["spec"]
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert not of_kind(rendered("jwks-url"), "CustomResourceDefinition")


def test_monitoring_objects_are_opt_in_and_carry_the_files() -> None:
    assert not [o for o in rendered("default") if o["kind"] in {"ServiceMonitor", "PrometheusRule"}]
    objects = rendered("monitoring")
    monitors = {component(m) for m in of_kind(objects, "ServiceMonitor")}
    assert monitors == {"gateway", "graphql", "chat", "operator", "redis"}
    (rule,) = of_kind(objects, "PrometheusRule")
    rules = yaml.safe_load((CHART / "files/prometheus/rules.yaml").read_text())
    assert rule["spec"] == rules
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    dashboards = {
        name: cm
        for cm in of_kind(objects, "ConfigMap")
        for name in cm["data"]
        if name.endswith(".json")
    }
    files = sorted(path.name for path in (CHART / "files/dashboards").glob("*.json"))
    assert sorted(dashboards) == files
    for name, config_map in dashboards.items():
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["namespace"] == "monitoring"
        assert json.loads(config_map["data"][name]) == json.loads(
            (CHART / "files/dashboards" / name).read_text()
        )


def test_notes_tell_how_to_reach_the_gateway_and_apply_a_policy() -> None:
    result = helm("install", "nextcampus", str(CHART), "--namespace", "chat", "--dry-run=client")
    notes = result.stdout.split("NOTES:", 1)[1]
    assert (
        "kubectl port-forward -n chat service/nextcampus-nextcampus-chat-gateway 8080:8080" in notes
    )
    assert "kubectl apply -f examples/policies/" in notes
    assert re.search(r"kubectl get secret nextcampus-nextcampus-chat-jwt", notes)


def test_course_exports_get_a_kept_volume_only_when_asked() -> None:
    """operator.exports.persistence: a PersistentVolumeClaim (kept on uninstall) mounted where
    the operator's export_directory says; off, the operator has no export directory (its
    exports are refused, the TTL applied) and no claim exists."""
    objects = rendered("ha")
    (claim,) = of_kind(objects, "PersistentVolumeClaim")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["spec"]["storageClassName"] == "standard"
    (operator,) = [w for w in workloads(objects) if component(w) == "operator"]
    spec = pod_spec(operator)
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["exports"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    env = env_of(objects, "operator")
    assert env["NEXTCAMPUS_EXPORT_DIRECTORY"] == mounts["exports"] == "/var/lib/nextcampus/exports"

    existing = rendered("ha", "--set", "operator.exports.persistence.existingClaim=archive")
    assert of_kind(existing, "PersistentVolumeClaim") == []
    (operator,) = [w for w in workloads(existing) if component(w) == "operator"]
    volumes = {v["name"]: v for v in pod_spec(operator)["volumes"]}
    assert volumes["exports"]["persistentVolumeClaim"]["claimName"] == "archive"

    default = rendered("default")
    assert of_kind(default, "PersistentVolumeClaim") == []
    assert "NEXTCAMPUS_EXPORT_DIRECTORY" not in env_of(default, "operator")
