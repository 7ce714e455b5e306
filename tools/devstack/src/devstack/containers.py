"""The whole system as containers on one podman network, run as the chart runs it.

The objects come from `helm template` of the chart (the e2e values of the kind install, the
images built here): every Deployment, StatefulSet and Job becomes containers of its pods,
with the env the chart renders (ConfigMaps, Secrets, the pod's name), its command and args,
its volumes (ConfigMaps and Secrets as read-only files, emptyDirs, a directory per PVC that
outlives the container), its user, read-only root, dropped capabilities and no privilege
escalation. A network alias per Service name gives the DNS a cluster would (aardvark-dns):
`<pod>.<headless service>.<namespace>.svc.cluster.local` for the Redis nodes, and a name
with every pod of a Service behind it for the others. Readiness is the chart's own probes.

What a cluster has and this has not: scheduling, resource limits, NetworkPolicies, the HPA,
the Redis exporter sidecar (its image cannot be built here), a Service's virtual IP (DNS
round robin instead), and the operator's service account: it reaches the emulated Kubernetes
API (kmock, plain HTTP) through a kubeconfig.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack import paths
from devstack.gateway import render_chart
from devstack.images import DEFAULT_TAG, SERVICE_IMAGES, Engine, stand_in_repository
from devstack.processes import StackError, free_ports, pid_alive
from devstack.redis_cluster import ClusterNode, ClusterOperations
from devstack.scrape import fetch, scrape

RELEASE = "nc"
NAMESPACE = "default"
CLUSTER_DOMAIN = "svc.cluster.local"
# The kind install's values: two pods of each service, the dev JWT secret, no monitoring
# objects, the per-address budget of a suite that comes from one address.
E2E_VALUES = Path("e2e") / "kind" / "values-e2e.yaml"
OWNER_LABEL = "io.nextcampus.e2e-owner"  # the PID of the process that started the container
PROJECT_LABEL = "io.nextcampus.e2e-project"
KUBECONFIG_IN_CONTAINER = "/var/run/nextcampus/kubeconfig"
# The tag of the images the container e2e builds and runs.
CONTAINERS_TAG = "e2e"

Say = Callable[[str], None]


def release_values(tag: str) -> dict[str, Any]:
    """The e2e values with the images built here: ours, and the stand-ins for Redis and
    Envoy. One gateway pod: its port is published on loopback, which one container holds."""
    values: dict[str, Any] = yaml.safe_load((paths.repository() / E2E_VALUES).read_text())
    for image in SERVICE_IMAGES:
        values.setdefault(image.name, {})["image"] = {
            "repository": f"localhost/{image.repository}",
            "tag": tag,
            "pullPolicy": "Never",
        }
    for key, stand_in in (("redis", "redis"), ("gateway", "envoy")):
        values.setdefault(key, {})["image"] = {
            "repository": stand_in_repository(stand_in),
            "tag": tag,
            "pullPolicy": "Never",
        }
    values["gateway"]["replicas"] = 1
    return values


def render(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`helm template` of the whole chart, as `helm install` would create it."""
    return render_chart(values, release=RELEASE, namespace=NAMESPACE)


# -- pods from the rendered objects -----------------------------------------------------------


@dataclass
class Pod:
    """One pod of a workload, as one container (its first container: the service)."""

    name: str
    component: str  # app.kubernetes.io/component
    labels: dict[str, str]
    spec: dict[str, Any]  # the pod template's spec
    aliases: list[str] = field(default_factory=list)
    volume_claims: list[str] = field(default_factory=list)
    job: bool = False

    @property
    def container(self) -> dict[str, Any]:
        container: dict[str, Any] = self.spec["containers"][0]
        return container

    def port(self, name_or_number: str | int) -> int:
        if isinstance(name_or_number, int):
            return name_or_number
        for port in self.container.get("ports", []):
            if port.get("name") == name_or_number:
                return int(port["containerPort"])
        raise StackError(f"{self.name}: no port named {name_or_number}")


def pods_of(objects: list[dict[str, Any]]) -> list[Pod]:
    pods: list[Pod] = []
    for obj in objects:
        kind, meta = obj["kind"], obj["metadata"]
        if kind not in ("Deployment", "StatefulSet", "Job"):
            continue
        template = obj["spec"]["template"]
        labels = dict(template["metadata"].get("labels", {}))
        replicas = 1 if kind == "Job" else int(obj["spec"].get("replicas", 1))
        claims = [c["metadata"]["name"] for c in obj["spec"].get("volumeClaimTemplates", [])]
        for index in range(replicas):
            name = meta["name"] if kind == "Job" else f"{meta['name']}-{index}"
            pod = Pod(
                name,
                labels.get("app.kubernetes.io/component", meta["name"]),
                labels,
                template["spec"],
                volume_claims=claims,
                job=kind == "Job",
            )
            if kind == "StatefulSet":
                service = obj["spec"]["serviceName"]
                pod.aliases += [
                    f"{name}.{service}",
                    f"{name}.{service}.{NAMESPACE}.{CLUSTER_DOMAIN}",
                ]
            pods.append(pod)
    for service in (o for o in objects if o["kind"] == "Service"):
        selector = service["spec"].get("selector") or {}
        for pod in pods:
            if selector and all(pod.labels.get(k) == v for k, v in selector.items()):
                name = service["metadata"]["name"]
                pod.aliases += [name, f"{name}.{NAMESPACE}", f"{name}.{NAMESPACE}.{CLUSTER_DOMAIN}"]
    return pods


def _data_of(obj: dict[str, Any]) -> dict[str, str]:
    if obj["kind"] == "Secret":
        data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        return data | dict(obj.get("stringData") or {})
    return dict(obj.get("data") or {})


# -- what the chaos tests do to pods ---------------------------------------------------------


@dataclass
class PodHandle:
    """A pod's container, as the chaos tests handle a local process (kill, alive, ready)."""

    topology: ContainerTopology
    pod: Pod

    @property
    def name(self) -> str:
        return self.pod.name

    def kill(self) -> None:
        self.topology.kill(self.pod.name)

    def alive(self) -> bool:
        return self.topology.running(self.pod.name)

    def is_ready(self) -> bool:
        return self.topology.probe(self.pod)

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.topology.wait_ready([self.pod], timeout)

    def tail(self, lines: int = 30) -> str:
        """The last lines its container wrote (as ManagedProcess.tail of a local process)."""
        return "\n".join(self.topology.logs(self.pod.name).splitlines()[-lines:])


@dataclass
class GatewayHandle(PodHandle):
    """The gateway's container: ready once Envoy sees every upstream pod healthy, as the
    local gateway is (the readiness probe alone says only that Envoy is live)."""

    def is_ready(self) -> bool:
        # The chart keeps Envoy's admin on loopback; its metrics listener (published here)
        # serves /ready and /stats/prometheus.
        base = f"http://127.0.0.1:{self.topology.gateway_admin_port}"
        try:
            if not self.alive() or fetch(f"{base}/ready", timeout=2).strip() != "LIVE":
                return False
            stats = scrape(f"{base}/stats/prometheus", timeout=2)
        except OSError:
            return False
        return all(
            stats.get(f"envoy_cluster_membership_healthy{{envoy_cluster_name={cluster}}}", 0)
            >= len(self.topology.by_component(cluster))
            for cluster in ("graphql", "chat")
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if time.monotonic() > deadline:
                raise StackError(f"{self.name}: the gateway's upstreams not healthy in {timeout} s")
            time.sleep(0.2)


@dataclass
class ContainerRedis(ClusterOperations[str]):
    """The Redis Cluster of the StatefulSet's containers; members are pod names (each node
    announces `<pod>.<headless service>…`)."""

    topology: ContainerTopology
    min_replicas_to_write: int = 1

    @property
    def members(self) -> list[str]:
        return [pod.name for pod in self.topology.by_component("redis")]

    def cli(self, node: str, *args: str, timeout: float = 10) -> str:
        result = self.topology.engine.run(
            "exec",
            self.topology.container_name(node),
            "redis-cli",
            *args,
            check=False,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise StackError(
                f"redis-cli {' '.join(args)} on {node}: {result.stderr or result.stdout}"
            )
        return result.stdout

    def live_nodes(self) -> list[str]:
        return [pod for pod in self.members if self.topology.running(pod)]

    def member_of(self, node: ClusterNode) -> str:
        return node.hostname.split(".", 1)[0]

    def start_node(self, node: str) -> None:
        self.topology.restart(node)
        self.topology.wait_ready([self.topology.pods[node]], 60)

    def kill_node(self, node: str) -> None:
        self.topology.kill(node)

    def dead_nodes(self) -> list[str]:
        return [pod for pod in self.members if not self.topology.running(pod)]

    def node_ids(self) -> dict[str, str]:
        """Each node's cluster id, as its own nodes.conf keeps it."""
        return {pod: self.cli(pod, "cluster", "myid").strip() for pod in self.live_nodes()}


# -- the topology -----------------------------------------------------------------------------


@dataclass
class ContainerTopology:
    """The chart's objects as containers of one podman network, started and stopped as a
    whole; single pods killed, restarted and recreated by the chaos tests."""

    engine: Engine
    root: Path
    tag: str = DEFAULT_TAG
    say: Say = print
    project: str = field(default_factory=lambda: f"nce2e{os.getpid()}")
    # Starts the Kubernetes API the operator talks to, listening on the address given (the
    # host's on the network), and returns a kubeconfig for it; None: no operator.
    operator_api: Callable[[str], str] | None = None
    kubeconfig: str | None = None
    objects: list[dict[str, Any]] = field(default_factory=list)
    pods: dict[str, Pod] = field(default_factory=dict)
    gateway_port: int = 0
    gateway_admin_port: int = 0

    # -- names and rendered data

    @property
    def network(self) -> str:
        return self.project

    def container_name(self, pod: str) -> str:
        return f"{self.project}-{pod}"

    def _object(self, kind: str, name: str) -> dict[str, Any]:
        for obj in self.objects:
            if obj["kind"] == kind and obj["metadata"]["name"] == name:
                return obj
        raise StackError(f"the chart renders no {kind} {name}")

    def by_component(self, component: str) -> list[Pod]:
        return [p for p in self.pods.values() if p.component == component and not p.job]

    @property
    def jwt_secret(self) -> str:
        """The HS256 key of the Secret the chart generated for this release."""
        (secret,) = [
            o
            for o in self.objects
            if o["kind"] == "Secret" and "jwt-secret" in (o.get("data") or {})
        ]
        return _data_of(secret)["jwt-secret"]

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def environment(self, pod: Pod) -> dict[str, str]:
        """The container's env as the kubelet builds it (envFrom first, then env)."""
        env: dict[str, str] = {}
        container = pod.container
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env |= _data_of(self._object("ConfigMap", source["configMapRef"]["name"]))
            if "secretRef" in source:
                env |= _data_of(self._object("Secret", source["secretRef"]["name"]))
        for entry in container.get("env", []):
            if "value" in entry:
                env[entry["name"]] = str(entry["value"])
                continue
            source = entry["valueFrom"]
            if "fieldRef" in source:
                field_path = source["fieldRef"]["fieldPath"]
                known = {"metadata.name": pod.name, "metadata.namespace": NAMESPACE}
                if field_path not in known:
                    raise StackError(f"{pod.name}: env from {field_path} is not emulated here")
                env[entry["name"]] = known[field_path]
            else:
                kind, ref = (
                    ("Secret", source["secretKeyRef"])
                    if "secretKeyRef" in source
                    else ("ConfigMap", source["configMapKeyRef"])
                )
                env[entry["name"]] = _data_of(self._object(kind, ref["name"]))[ref["key"]]
        return env

    def _files(self, pod: Pod, volume: dict[str, Any]) -> Path:
        """A ConfigMap or Secret volume written out as the kubelet projects it."""
        if "configMap" in volume:
            source, kind, name = volume["configMap"], "ConfigMap", volume["configMap"]["name"]
        else:
            source, kind, name = volume["secret"], "Secret", volume["secret"]["secretName"]
        data = _data_of(self._object(kind, name))
        items = source.get("items") or [{"key": key, "path": key} for key in data]
        folder: Path = self.root / "volumes" / pod.name / volume["name"]
        folder.mkdir(parents=True, exist_ok=True)
        for item in items:
            target = folder / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[item["key"]])
            target.chmod(0o644)
        folder.chmod(0o755)
        return folder

    def claim_folder(self, pod: Pod, claim: str) -> Path:
        return self.root / "claims" / f"{claim}-{pod.name}"

    def run_arguments(self, pod: Pod) -> tuple[list[str], dict[str, str]]:
        """`podman run` arguments for the pod's container, and the env they name (passed
        through the environment of podman itself: no secret on a command line)."""
        container = pod.container
        security = pod.spec.get("securityContext", {}) | container.get("securityContext", {})
        user, group = security.get("runAsUser"), security.get("runAsGroup")
        args = [
            "--name",
            self.container_name(pod.name),
            "--hostname",
            pod.name,
            "--network",
            self.network,
            "--label",
            f"{OWNER_LABEL}={os.getpid()}",
            "--label",
            f"{PROJECT_LABEL}={self.project}",
            # The kubelet adds no tmpfs of its own on a read-only root: the chart's emptyDirs
            # are all the container may write.
            "--read-only-tmpfs=false",
        ]
        for alias in pod.aliases:
            args += ["--network-alias", alias]
        if user is not None:
            args += ["--user", f"{user}:{group if group is not None else user}"]
        if security.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        if "ALL" in security.get("capabilities", {}).get("drop", []):
            args += ["--cap-drop", "ALL"]
        if security.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            target = mount["mountPath"]
            read_only = ":ro" if mount.get("readOnly") else ""
            if mount["name"] in pod.volume_claims:
                folder = self.claim_folder(pod, mount["name"])
                folder.mkdir(parents=True, exist_ok=True)
                # fsGroup: the volume belongs to the pod's group (the processes run as root
                # here, so the folder can be given away).
                os.chown(folder, int(user or 0), int(security.get("fsGroup") or group or 0))
                folder.chmod(0o770)
                args += ["--volume", f"{folder}:{target}{read_only}"]
                continue
            volume = volumes[mount["name"]]
            if "emptyDir" in volume:
                args += ["--mount", f"type=tmpfs,destination={target},tmpfs-mode=1777"]
            elif "configMap" in volume or "secret" in volume:
                folder = self._files(pod, volume)
                source = folder / mount["subPath"] if "subPath" in mount else folder
                # The kubelet projects ConfigMaps and Secrets read-only, whatever the mount says.
                args += ["--volume", f"{source}:{target}:ro"]
            else:
                raise StackError(f"{pod.name}: volume {mount['name']} is of a kind not emulated")
        env = self.environment(pod)
        if pod.component == "operator" and self.kubeconfig is not None:
            config = self.root / "volumes" / pod.name / "kubeconfig"
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(self.kubeconfig)
            config.chmod(0o644)
            args += ["--volume", f"{config}:{KUBECONFIG_IN_CONTAINER}:ro"]
            env["KUBECONFIG"] = KUBECONFIG_IN_CONTAINER
        for name in env:
            args += ["--env", name]
        if pod.component == "gateway":
            args += [
                "--publish",
                f"127.0.0.1:{self.gateway_port}:{pod.port('http')}",
                "--publish",
                f"127.0.0.1:{self.gateway_admin_port}:{pod.port('metrics')}",
            ]
        if "command" in container:
            args += ["--entrypoint", json.dumps(container["command"])]
        args.append(container["image"])
        args += [str(a) for a in container.get("args", [])]
        return args, env

    # -- as the chaos tests see a topology (the local one has the same names)

    @property
    def redis(self) -> ContainerRedis:
        return ContainerRedis(self)

    @property
    def chats(self) -> list[PodHandle]:
        return [PodHandle(self, pod) for pod in self.by_component("chat")]

    @property
    def graphqls(self) -> list[PodHandle]:
        return [PodHandle(self, pod) for pod in self.by_component("graphql")]

    @property
    def gateway(self) -> GatewayHandle:
        (pod,) = self.by_component("gateway")
        return GatewayHandle(self, pod)

    @property
    def all_processes(self) -> list[PodHandle]:
        return [*self.chats, *self.graphqls, self.gateway]

    def metrics_urls(self, component: str) -> list[str]:
        urls = []
        for pod in self.by_component(component):
            port = pod.port("metrics")
            urls.append(f"http://{self.address(pod.name)}:{port}/metrics")
        return urls

    @property
    def chat_metrics_urls(self) -> list[str]:
        return self.metrics_urls("chat")

    @property
    def graphql_metrics_urls(self) -> list[str]:
        return self.metrics_urls("graphql")

    def restart_chat(self, index: int) -> PodHandle:
        return self._restart(self.chats[index])

    def restart_graphql(self, index: int) -> PodHandle:
        """A graceful stop (SIGTERM: sockets closed with 1012; the pod's grace period), then
        the same container started again and ready."""
        return self._restart(self.graphqls[index])

    def _restart(self, handle: PodHandle) -> PodHandle:
        grace = str(handle.pod.spec.get("terminationGracePeriodSeconds", 30))
        self.engine.run("stop", "--time", grace, self.container_name(handle.name), timeout=120)
        self.restart(handle.name)
        handle.wait_ready()
        return handle

    def heal(self) -> None:
        """Restart whatever died and wait until the cluster and the gateway's upstreams are
        healthy: after a chaos test, a whole stack."""
        redis = self.redis
        for pod in redis.dead_nodes():
            redis.restart_replaced_node(pod, timeout=60)
        redis.wait_healthy(120)
        for handle in [*self.chats, *self.graphqls]:
            if not handle.alive():
                self.restart(handle.name)
                handle.wait_ready()
        self.gateway.wait_ready()

    # -- lifecycle

    def start(self) -> None:
        self.remove_orphans()
        self.root.mkdir(parents=True, exist_ok=True)
        self.gateway_port, self.gateway_admin_port = free_ports(2)
        self.objects = render(release_values(self.tag))
        self.pods = {pod.name: pod for pod in pods_of(self.objects)}
        if self.operator_api is None:
            self.pods = {n: p for n, p in self.pods.items() if p.component != "operator"}
        self.engine.run(
            "network", "create", "--label", f"{OWNER_LABEL}={os.getpid()}", self.network
        )
        try:
            redis = self.by_component("redis")
            self.say(f"starting {len(redis)} Redis nodes (the chart's start.sh) …")
            for pod in redis:
                self.run_pod(pod)
            self.wait_ready(redis)
            self.form_cluster()
            if self.operator_api is not None:
                self.kubeconfig = self.operator_api(gateway_address(self.engine, self.network))
            rest = [p for p in self.pods.values() if p.component != "redis" and not p.job]
            self.say("starting " + ", ".join(p.name for p in rest) + " …")
            for pod in rest:
                self.run_pod(pod)
            self.wait_ready(rest)
            self.redis.wait_healthy(120)
            self.gateway.wait_ready(120)
        except BaseException:
            self.stop()
            raise

    def form_cluster(self) -> None:
        """The chart's setup Job (create-cluster.sh), run to its end."""
        (job,) = [p for p in self.pods.values() if p.job and p.component == "redis-setup"]
        self.say("forming the cluster (the chart's create-cluster.sh) …")
        self.run_pod(job, detach=False, timeout=300)

    def run_pod(self, pod: Pod, *, detach: bool = True, timeout: float = 120) -> None:
        args, env = self.run_arguments(pod)
        result = self.engine.run(
            "run", *(["-d"] if detach else ["--rm"]), *args, env=env, check=False, timeout=timeout
        )
        if result.returncode != 0:
            raise StackError(
                f"{pod.name} failed ({result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}"
            )

    def address(self, pod: str) -> str:
        out = self.engine.run(
            "inspect", "--format", "{{json .NetworkSettings.Networks}}", self.container_name(pod)
        ).stdout
        networks = json.loads(out)
        return str(networks[self.network]["IPAddress"])

    def running(self, pod: str) -> bool:
        result = self.engine.run(
            "inspect", "--format", "{{.State.Running}}", self.container_name(pod), check=False
        )
        return result.stdout.strip() == "true"

    def probe(self, pod: Pod) -> bool:
        """The pod's readiness probe (else its liveness probe), as the kubelet runs it."""
        container = pod.container
        probe = container.get("readinessProbe") or container.get("livenessProbe")
        if not self.running(pod.name):
            return False
        if probe is None:
            return True
        try:
            if "exec" in probe:
                command = probe["exec"]["command"]
                result = self.engine.run(
                    "exec", self.container_name(pod.name), *command, check=False, timeout=30
                )
                return result.returncode == 0
            host = self.address(pod.name)
            if "httpGet" in probe:
                port = pod.port(probe["httpGet"]["port"])
                url = f"http://{host}:{port}{probe['httpGet'].get('path', '/')}"
                with urllib.request.urlopen(url, timeout=3) as response:
                    return bool(200 <= response.status < 400)
            if "grpc" in probe:
                with grpc.insecure_channel(f"{host}:{pod.port(probe['grpc']['port'])}") as channel:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")),
                        timeout=3,
                    )
                    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
            if "tcpSocket" in probe:
                port = pod.port(probe["tcpSocket"]["port"])
                with socket.create_connection((host, port), timeout=3):
                    return True
        except (OSError, grpc.RpcError, StackError):
            return False
        raise StackError(f"{pod.name}: a probe of a kind not emulated: {probe}")

    def wait_ready(self, pods: list[Pod], timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(pods)
        while waiting:
            waiting = [pod for pod in waiting if not self.probe(pod)]
            if not waiting:
                return
            for pod in waiting:
                if not self.running(pod.name):
                    raise StackError(f"{pod.name} exited:\n{self.logs(pod.name)[-3000:]}")
            if time.monotonic() > deadline:
                names = ", ".join(p.name for p in waiting)
                raise StackError(f"not ready within {timeout:.0f} s: {names}")
            time.sleep(0.5)

    def logs(self, pod: str) -> str:
        result = self.engine.run("logs", self.container_name(pod), check=False)
        return result.stdout + result.stderr

    def kill(self, pod: str) -> None:
        """SIGKILL to the container's process, as a node failure would."""
        self.engine.run("kill", "--signal", "KILL", self.container_name(pod))
        self.engine.run("wait", self.container_name(pod), check=False, timeout=60)

    def restart(self, pod: str) -> None:
        """The same container (name, network address, volumes) started again."""
        self.engine.run("start", self.container_name(pod))

    def recreate(self, pod: str) -> None:
        """A new container for the pod (a new address), its claims kept: a rescheduled pod."""
        self.engine.run("rm", "--force", self.container_name(pod), timeout=60)
        self.run_pod(self.pods[pod])

    def redis_cli(self, pod: str, *args: str) -> str:
        """redis-cli in a Redis container (the password is in its env, as the chart sets it)."""
        return self.engine.run("exec", self.container_name(pod), "redis-cli", *args).stdout

    def stop(self) -> None:
        containers = self.engine.run(
            "ps", "-a", "-q", "--filter", f"label={PROJECT_LABEL}={self.project}", check=False
        ).stdout.split()
        if containers:
            self.engine.run("rm", "--force", "--time", "0", *containers, check=False, timeout=120)
        self.engine.run("network", "rm", "--force", self.network, check=False)

    def remove_orphans(self) -> None:
        """Containers and networks a killed run left (their owner PID is gone)."""
        for listing, template, removal in (
            (("ps", "-a"), "{{.ID}} {{.Labels}}", ("rm", "--force", "--time", "0")),
            (("network", "ls"), "{{.Name}} {{.Labels}}", ("network", "rm", "--force")),
        ):
            listed = self.engine.run(
                *listing, "--filter", f"label={OWNER_LABEL}", "--format", template, check=False
            ).stdout
            for line in listed.splitlines():
                name, _, labels = line.partition(" ")
                owner = _label(labels, OWNER_LABEL)
                if owner and not pid_alive(int(owner)):
                    self.engine.run(*removal, name, check=False)


def _label(labels: str, key: str) -> str | None:
    """A numeric label's value as `podman ps` (`map[key:value …]`) or `podman network ls`
    (`key=value,…`) print labels."""
    for word in labels.removeprefix("map[").removesuffix("]").replace(",", " ").split():
        name, _, value = word.replace("=", ":", 1).partition(":")
        if name == key and value.isdigit():
            return value
    return None


def gateway_address(engine: Engine, network: str) -> str:
    """The host's address on the network (its gateway): where a container reaches a server
    of the test process, such as the emulated Kubernetes API."""
    (inspected,) = json.loads(engine.run("network", "inspect", network).stdout)
    return str(inspected["subnets"][0]["gateway"])
