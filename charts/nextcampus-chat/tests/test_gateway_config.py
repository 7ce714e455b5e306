"""The gateway's Envoy config as the chart renders it (the real helm), checked by the real
`envoy --mode validate` for the value sets people deploy with, and read back for the few
settings a user would notice when they are wrong. No process is started."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.binaries import envoy_binary, helm_binary
from devstack.gateway import (
    LocalGatewayConfig,
    StackError,
    hs256_jwks,
    render_envoy_config,
    validate_envoy_config,
)
from devstack.topology import DEV_JWT_SECRET
from nextcampus_graphql.settings import GraphqlSettings

REMOTE_JWKS_URL = "https://login.example.edu/keys"


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(hs256_jwks(DEV_JWT_SECRET)))
    return path


def local_values(jwks_file: Path) -> dict[str, Any]:
    config = LocalGatewayConfig(
        listen_port=30080,
        admin_port=30081,
        graphql_ports=[30082, 30083],
        chat_ports=[30084, 30085],
        jwt_secret=DEV_JWT_SECRET,
    )
    return config.values(jwks_file)


def value_sets(jwks_file: Path) -> dict[str, dict[str, Any]]:
    chart_defaults = {"gateway": {"jwksFile": str(jwks_file)}}
    return {
        "chart-defaults": chart_defaults,
        "local": local_values(jwks_file),
        "remote-jwks": {"jwt": {"jwksUrl": REMOTE_JWKS_URL}},
        "no-access-log": {"gateway": {"jwksFile": str(jwks_file), "accessLog": False}},
        "no-metrics-listener": {"gateway": {"jwksFile": str(jwks_file), "metricsPort": 0}},
    }


VALUE_SET_NAMES = ["chart-defaults", "local", "remote-jwks", "no-access-log", "no-metrics-listener"]


def rendered(values: dict[str, Any], directory: Path) -> tuple[Path, dict[str, Any]]:
    """The config file Envoy accepted, and its parsed form."""
    text = render_envoy_config(values)
    path = directory / "envoy.yaml"
    path.write_text(text)
    validate_envoy_config(path)
    config: dict[str, Any] = yaml.safe_load(text)
    return path, config


def cluster(config: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in config["static_resources"]["clusters"] if c["name"] == name]
    return found


def connection_manager(config: dict[str, Any]) -> dict[str, Any]:
    (listener,) = [
        item for item in config["static_resources"]["listeners"] if item["name"] == "gateway"
    ]
    typed: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return typed


def http_filter(config: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [f for f in connection_manager(config)["http_filters"] if f["name"] == name]
    typed: dict[str, Any] = found["typed_config"]
    return typed


def routes(config: dict[str, Any]) -> list[dict[str, Any]]:
    (host,) = connection_manager(config)["route_config"]["virtual_hosts"]
    found: list[dict[str, Any]] = host["routes"]
    return found


def seconds(duration: str) -> float:
    assert duration.endswith("s"), duration
    return float(duration.removesuffix("s"))


@pytest.mark.parametrize("name", VALUE_SET_NAMES)
def test_every_value_set_renders_a_config_envoy_accepts(jwks_file, tmp_path, name):
    _, config = rendered(value_sets(jwks_file)[name], tmp_path)

    # WebSockets are long-lived: spread by what each GraphQL pod holds now.
    assert cluster(config, "graphql")["lb_policy"] == "LEAST_REQUEST"
    # gRPC needs HTTP/2 to the chat pods.
    chat_http = cluster(config, "chat")["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]["explicit_http_config"]
    assert "http2_protocol_options" in chat_http

    # A missing token passes (browsers send it in connection_init); a bad one does not.
    (rule,) = http_filter(config, "envoy.filters.http.jwt_authn")["rules"]
    requirements = rule["requires"]["requires_any"]["requirements"]
    assert {"allow_missing": {}} in requirements
    assert {"provider_name": "nextcampus"} in requirements

    # A subscription socket lives as long as the client keeps it: no request timeout.
    (websocket_route,) = [
        r
        for r in routes(config)
        if any(h["name"] == "upgrade" for h in r["match"].get("headers", []))
    ]
    assert websocket_route["route"]["cluster"] == "graphql"
    assert websocket_route["route"]["timeout"] == "0s"
    assert connection_manager(config)["upgrade_configs"] == [{"upgrade_type": "websocket"}]

    # Envoy's default 1,024 per upstream would cap a pod at about a thousand sockets.
    for name in ("graphql", "chat"):
        (limits,) = cluster(config, name)["circuit_breakers"]["thresholds"]
        counts = [limits[k] for k in ("max_connections", "max_pending_requests", "max_requests")]
        assert min(counts) > 1024, (name, limits)
    (monitor,) = config["overload_manager"]["resource_monitors"]
    assert monitor["typed_config"]["max_active_downstream_connections"] > 1024

    # A subscription to a quiet course carries nothing for minutes: gRPC streams have no
    # idle timeout, and dead peers are found by HTTP/2 keepalive PINGs instead.
    (grpc_route,) = [r for r in routes(config) if "grpc" in r["match"]]
    assert (grpc_route["route"]["timeout"], grpc_route["route"]["idle_timeout"]) == ("0s", "0s")
    assert "connection_keepalive" in connection_manager(config)["http2_protocol_options"]
    assert "connection_keepalive" in chat_http["http2_protocol_options"]

    # Idle sockets get a keepalive from the GraphQL pod before Envoy would cut them.
    keepalive_seconds = GraphqlSettings.model_fields["keepalive_seconds"].default
    manager = connection_manager(config)
    assert seconds(manager["stream_idle_timeout"]) > keepalive_seconds
    assert seconds(manager["common_http_protocol_options"]["idle_timeout"]) > keepalive_seconds
    assert seconds(websocket_route["route"]["idle_timeout"]) > keepalive_seconds


def test_local_values_point_at_the_local_processes(jwks_file, tmp_path):
    _, config = rendered(local_values(jwks_file), tmp_path)

    def ports(name: str) -> list[int]:
        (locality,) = cluster(config, name)["load_assignment"]["endpoints"]
        return [
            e["endpoint"]["address"]["socket_address"]["port_value"]
            for e in locality["lb_endpoints"]
        ]

    assert ports("graphql") == [30082, 30083]
    assert ports("chat") == [30084, 30085]
    provider = http_filter(config, "envoy.filters.http.jwt_authn")["providers"]["nextcampus"]
    assert provider["local_jwks"] == {"filename": str(jwks_file)}
    # Locally the admin port is reachable itself: no extra metrics listener.
    assert [item["name"] for item in config["static_resources"]["listeners"]] == ["gateway"]


def test_remote_jwks_has_its_own_tls_cluster(jwks_file, tmp_path):
    _, config = rendered(value_sets(jwks_file)["remote-jwks"], tmp_path)
    provider = http_filter(config, "envoy.filters.http.jwt_authn")["providers"]["nextcampus"]
    assert "local_jwks" not in provider
    assert provider["remote_jwks"]["http_uri"]["uri"] == REMOTE_JWKS_URL
    assert provider["remote_jwks"]["http_uri"]["cluster"] == "jwks"

    jwks = cluster(config, "jwks")
    (locality,) = jwks["load_assignment"]["endpoints"]
    (endpoint,) = locality["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"] == {
        "address": "login.example.edu",
        "port_value": 443,
    }
    assert jwks["transport_socket"]["name"] == "envoy.transport_sockets.tls"
    assert jwks["transport_socket"]["typed_config"]["sni"] == "login.example.edu"


def test_access_log_and_metrics_listener_can_be_turned_off(jwks_file, tmp_path):
    sets = value_sets(jwks_file)
    (tmp_path / "defaults").mkdir()
    _, defaults = rendered(sets["chart-defaults"], tmp_path / "defaults")
    assert "access_log" in connection_manager(defaults)
    assert {item["name"] for item in defaults["static_resources"]["listeners"]} == {
        "gateway",
        "metrics",
    }

    (tmp_path / "quiet").mkdir()
    _, quiet = rendered(sets["no-access-log"], tmp_path / "quiet")
    assert "access_log" not in connection_manager(quiet)

    (tmp_path / "no-metrics").mkdir()
    _, no_metrics = rendered(sets["no-metrics-listener"], tmp_path / "no-metrics")
    assert [item["name"] for item in no_metrics["static_resources"]["listeners"]] == ["gateway"]
    assert "admin" not in {c["name"] for c in no_metrics["static_resources"]["clusters"]}


def test_a_broken_value_set_is_refused_with_a_clear_error(jwks_file, tmp_path):
    broken = {"gateway": {"jwksFile": str(jwks_file), "listen": {"port": "eighty"}}}
    # Refused by the chart (a values schema) or by Envoy: either way before anything runs,
    # and the error names the field.
    with pytest.raises(StackError, match="port") as refused:
        rendered(broken, tmp_path)
    assert "listen" in str(refused.value) or "eighty" in str(refused.value)


def test_helm_and_envoy_binaries_run():
    helm = subprocess.run(
        [helm_binary(), "version"], capture_output=True, text=True, timeout=30, check=True
    )
    assert "Version:" in helm.stdout
    envoy = subprocess.run(
        [envoy_binary(), "--version"], capture_output=True, text=True, timeout=30, check=True
    )
    assert "version:" in envoy.stdout


@pytest.mark.parametrize("name", VALUE_SET_NAMES)
def test_tokens_come_before_budgets_and_stay_out_of_the_log(jwks_file, tmp_path, name):
    _, config = rendered(value_sets(jwks_file)[name], tmp_path)
    manager = connection_manager(config)

    # A bad token is refused before it takes from anyone's budget.
    order = [f["name"] for f in manager["http_filters"]]
    assert order.index("envoy.filters.http.jwt_authn") < order.index(
        "envoy.filters.http.local_ratelimit"
    )
    # Budgets per user (from the verified token, never a header) and per address.
    limit = http_filter(config, "envoy.filters.http.local_ratelimit")
    keys = [[entry["key"] for entry in d["entries"]] for d in limit["descriptors"]]
    assert keys == [["user"], ["user", "remote_address"]]
    provider = http_filter(config, "envoy.filters.http.jwt_authn")["providers"]["nextcampus"]
    assert provider["payload_in_metadata"] == "jwt_payload"
    assert "claim_to_headers" not in provider
    assert manager["xff_num_trusted_hops"] == 0

    # Every refusal of jwt_authn is a 401 (another audience too), with no URL in it.
    (mapper,) = manager["local_reply_config"]["mappers"]
    assert mapper["status_code"] == 401
    (challenge,) = mapper["headers_to_add"]
    assert challenge["header"]["value"] == 'Bearer error="invalid_token"'

    # Only public paths are routed: no catch-all.
    assert all(r["match"].get("prefix") != "/" for r in routes(config))
    if "access_log" in manager:
        (access_log,) = manager["access_log"]
        path = access_log["typed_config"]["log_format"]["json_format"]["path"]
        assert path == "%REQ_WITHOUT_QUERY(:PATH)%"
