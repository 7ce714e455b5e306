"""The Envoy gateway of the local stack, configured from the chart's one template.

`charts/nextcampus-chat/files/envoy.yaml` is rendered by the real helm binary through the
chart's gateway ConfigMap, with values that point at the local processes; so the local
gateway runs the very config a cluster gets, and `make test` validates both with Envoy.
"""

from __future__ import annotations

import base64
import functools
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devstack import paths
from devstack.binaries import envoy_binary, helm_binary
from devstack.processes import ManagedProcess, StackError

GATEWAY_CONFIGMAP = "templates/gateway/configmap.yaml"
ENVOY_CONFIG_KEY = "envoy.yaml"


def hs256_jwks(secret: str) -> dict[str, Any]:
    """A JWKS holding an HS256 secret, the form Envoy's jwt_authn reads symmetric keys in."""
    key = base64.urlsafe_b64encode(secret.encode()).rstrip(b"=").decode()
    return {"keys": [{"kty": "oct", "alg": "HS256", "k": key}]}


def render_chart(
    values: Mapping[str, Any],
    *,
    show_only: str | None = None,
    chart: Path | None = None,
    release: str = "local",
    namespace: str = "default",
) -> list[dict[str, Any]]:
    """`helm template` of the chart with `values` (the checkout's chart unless `chart` says
    otherwise; one template of it with `show_only`); the rendered objects."""
    folder = chart or paths.chart()
    only = ["--show-only", show_only] if show_only else []
    result = subprocess.run(
        [
            helm_binary(),
            "template",
            release,
            str(folder),
            "--namespace",
            namespace,
            *only,
            "-f",
            "-",
        ],
        # JSON is YAML: helm reads the values from stdin.
        input=json.dumps(values),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"helm template {show_only or ''} failed:\n{result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_envoy_config(values: Mapping[str, Any], *, chart: Path | None = None) -> str:
    """The Envoy config the chart's gateway ConfigMap carries for these values."""
    (configmap,) = render_chart(values, show_only=GATEWAY_CONFIGMAP, chart=chart)
    config: str = configmap["data"][ENVOY_CONFIG_KEY]
    return config


def validate_envoy_config(path: Path) -> None:
    """`envoy --mode validate`: the real binary parses the whole config, filters included."""
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"envoy rejects {path}:\n{(result.stderr or result.stdout).strip()}")


@dataclass(frozen=True)
class ClientBudget:
    """One client's token bucket at the gateway (`gateway.rateLimit.perUser`/`perAddress`):
    `requests` more every `every_seconds`, at most `burst` held."""

    requests: int
    every_seconds: int
    burst: int

    def values(self) -> dict[str, int]:
        return {"requests": self.requests, "everySeconds": self.every_seconds, "burst": self.burst}


# Budgets no test or benchmark on one machine reaches (a load test measures the services).
UNLIMITED_BUDGET = ClientBudget(requests=1_000_000, every_seconds=1, burst=1_000_000)


@dataclass(frozen=True)
class LocalGatewayConfig:
    """Everything local about the gateway: its ports, its upstreams, its key, its budgets."""

    listen_port: int
    admin_port: int
    graphql_ports: list[int]
    chat_ports: list[int]
    jwt_secret: str
    requests_per_second: int = 500
    burst: int = 1000
    per_user: ClientBudget = ClientBudget(requests=20, every_seconds=1, burst=200)
    # Locally every client is 127.0.0.1: its budget is the whole gateway's.
    per_address: ClientBudget = ClientBudget(requests=500, every_seconds=1, burst=1000)
    idle_timeout_seconds: int = 60

    def values(self, jwks_file: Path) -> dict[str, Any]:
        def local(ports: list[int]) -> list[dict[str, Any]]:
            return [{"address": "127.0.0.1", "port": port} for port in ports]

        return {
            "gateway": {
                "listen": {"address": "127.0.0.1", "port": self.listen_port},
                "admin": {"address": "127.0.0.1", "port": self.admin_port},
                "metricsPort": 0,  # locally the admin port itself is reachable
                "jwksFile": str(jwks_file),
                "graphqlEndpoints": local(self.graphql_ports),
                "chatEndpoints": local(self.chat_ports),
                "rateLimit": {
                    "requestsPerSecond": self.requests_per_second,
                    "burst": self.burst,
                    "perUser": self.per_user.values(),
                    "perAddress": self.per_address.values(),
                },
                "idleTimeoutSeconds": self.idle_timeout_seconds,
            }
        }

    def write(self, directory: Path) -> Path:
        """Render and validate the config into `directory`; the config file's path."""
        directory.mkdir(parents=True, exist_ok=True)
        jwks_file = directory / "jwks.json"
        jwks_file.write_text(json.dumps(hs256_jwks(self.jwt_secret)))
        jwks_file.chmod(0o600)
        config_file = directory / "envoy.yaml"
        config_file.write_text(render_envoy_config(self.values(jwks_file)))
        validate_envoy_config(config_file)
        return config_file

    def process(self, directory: Path, log_path: Path, name: str = "envoy") -> ManagedProcess:
        """Envoy with this config (written to `directory`); ready once every upstream
        process passes Envoy's own health check."""
        return ManagedProcess(
            name=name,
            argv=envoy_argv(self.write(directory)),
            env={},
            log_path=log_path,
            ready_check=functools.partial(
                gateway_ready,
                self.admin_port,
                {"graphql": len(self.graphql_ports), "chat": len(self.chat_ports)},
            ),
        )


def envoy_argv(config_file: Path, concurrency: int = 1) -> list[str]:
    return [
        envoy_binary(),
        "-c",
        str(config_file),
        # Several gateways on one machine (tests beside `make up`): no shared memory region.
        "--disable-hot-restart",
        "--concurrency",
        str(concurrency),
        "--log-level",
        "warn",
    ]


def admin_get(admin_port: int, path: str, timeout: float = 2.0) -> str:
    url = f"http://127.0.0.1:{admin_port}{path}"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
    return body.decode()


def healthy_hosts(admin_port: int) -> dict[str, int]:
    """Healthy members per upstream cluster, from Envoy's admin stats."""
    text = admin_get(admin_port, "/stats?filter=membership_healthy$")
    counts: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if name.startswith("cluster.") and value.strip().isdigit():
            counts[name.removeprefix("cluster.").removesuffix(".membership_healthy")] = int(value)
    return counts


def gateway_ready(admin_port: int, expected: Mapping[str, int]) -> bool:
    """Envoy is live and every upstream of `expected` has that many healthy members."""
    try:
        if admin_get(admin_port, "/ready").strip() != "LIVE":
            return False
        counts = healthy_hosts(admin_port)
    except (urllib.error.URLError, OSError):
        return False
    return all(counts.get(cluster, 0) >= count for cluster, count in expected.items())
