"""The kind e2e: skaffold.yaml and the e2e values file agree with the Dockerfiles and the
chart's keys; e2e/kind/run.sh parses and passes shellcheck, skips without docker/kind, and
its context guard refuses anything but a kind-* context of a kubeconfig written here.
Checked offline (no Docker engine, no kind, no API server here)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from devstack.binaries import helm_binary
from testing.images import (
    DOCKERFILE,
    E2E_VALUE_KEYS,
    IMAGE_VALUE_KEYS,
    IMAGES,
    REPO,
    RUN_SH,
    SKAFFOLD,
    VALUES_E2E,
    builder_and_runtime,
)

# --- skaffold.yaml and the e2e values -----------------------------------------------------------


def skaffold_config() -> dict[str, Any]:
    with SKAFFOLD.open() as f:
        config: dict[str, Any] = yaml.safe_load(f)
    return config


def skaffold_variable(image_name: str) -> str:
    # Skaffold's per-image template variables spell "/" and "-" as "_".
    return re.sub(r"[/-]", "_", image_name)


def test_skaffold_builds_the_three_dockerfiles_from_the_root() -> None:
    config = skaffold_config()
    assert config["kind"] == "Config"
    assert re.fullmatch(r"skaffold/v4beta\d+", config["apiVersion"])
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    assert set(artifacts) == {image.repository for image in IMAGES}
    for image in IMAGES:
        artifact = artifacts[image.repository]
        assert artifact.get("context", ".") == "."
        dockerfile = REPO / artifact["docker"]["dockerfile"]
        assert dockerfile == DOCKERFILE
        # The build arguments `make images` gives the same image.
        assert artifact["docker"]["buildArgs"] == image.service.build_args()


def test_skaffold_installs_the_chart_with_every_image_from_its_build() -> None:
    config = skaffold_config()
    (release,) = config["deploy"]["helm"]["releases"]
    assert release["name"] == "nextcampus"
    assert release["chartPath"] == "charts/nextcampus-chat"
    assert (REPO / release["chartPath"] / "Chart.yaml").is_file()
    templates: dict[str, str] = release["setValueTemplates"]
    assert set(templates) <= IMAGE_VALUE_KEYS, set(templates) - IMAGE_VALUE_KEYS
    assert set(templates) == IMAGE_VALUE_KEYS
    for image in IMAGES:
        variable = skaffold_variable(image.repository)
        assert templates[f"{image.chart_key}.image.repository"] == f"{{{{.IMAGE_REPO_{variable}}}}}"
        assert (
            templates[f"{image.chart_key}.image.tag"]
            == f"{{{{.IMAGE_TAG_{variable}}}}}@{{{{.IMAGE_DIGEST_{variable}}}}}"
        )
    (forward,) = config["portForward"]
    assert forward["resourceName"] == f"{release['name']}-nextcampus-chat-gateway"


def test_skaffold_kind_profile_loads_images_and_uses_the_e2e_values() -> None:
    config = skaffold_config()
    (profile,) = [p for p in config["profiles"] if p["name"] == "kind"]
    assert profile["build"]["local"]["push"] is False
    values_files: list[str] = []
    for patch in profile.get("patches", []):
        assert patch["op"] == "add"
        assert patch["path"] == "/deploy/helm/releases/0/valuesFiles"
        values_files += patch["value"]
    assert values_files == ["e2e/kind/values-e2e.yaml"]
    assert (REPO / values_files[0]).is_file()


def leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= leaves(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def e2e_values() -> dict[str, Any]:
    with VALUES_E2E.open() as f:
        values: dict[str, Any] = yaml.safe_load(f)
    return values


def test_e2e_values_set_the_agreed_keys_only() -> None:
    values = leaves(e2e_values())
    assert set(values) == E2E_VALUE_KEYS
    for image in IMAGES:
        assert values[f"{image.chart_key}.image.repository"] == image.repository
        assert values[f"{image.chart_key}.image.tag"] == "e2e"
        assert values[f"{image.chart_key}.image.pullPolicy"] == "Never"
    assert len(values["jwt.secret"]) >= 32
    assert values["chat.replicas"] == 2
    assert values["graphql.replicas"] == 2
    assert values["redis.persistence.size"] == "1Gi"
    assert values["chat.autoscaling.enabled"] is False
    assert values["graphql.autoscaling.enabled"] is False
    assert not any(values[k] for k in values if k.startswith("monitoring."))


def test_e2e_values_pass_the_chart_schema() -> None:
    schema_file = REPO / "charts" / "nextcampus-chat" / "values.schema.json"
    jsonschema.validate(e2e_values(), json.loads(schema_file.read_text()))


def run_sh_gateway_service() -> str:
    """The Service run.sh port-forwards by default: svc/${RELEASE}-…-gateway."""
    script = RUN_SH.read_text()
    release = re.search(r'^readonly RELEASE="([\w-]+)"$', script, flags=re.MULTILINE)
    service = re.search(r"GATEWAY_SERVICE:-svc/\$\{RELEASE\}([\w-]+)\}", script)
    assert release
    assert service
    return release.group(1) + service.group(1)


@pytest.mark.timeout(120)
def test_chart_renders_the_e2e_values_with_the_loaded_images() -> None:
    """The real helm renders the chart with the e2e values as run.sh installs it: our images
    as loaded into kind, two chat and GraphQL pods, the gateway Service run.sh and skaffold
    forward, no monitoring objects, and the images' numeric user as the pods' user."""
    result = subprocess.run(
        [
            helm_binary(),
            "template",
            "nextcampus",
            str(REPO / "charts" / "nextcampus-chat"),
            "-f",
            str(VALUES_E2E),
            *(f"--set={image.chart_key}.image.tag=e2e" for image in IMAGES),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    objects = [o for o in yaml.safe_load_all(result.stdout) if o]
    kinds = {o["kind"] for o in objects}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    gateway = services[run_sh_gateway_service()]
    assert 8080 in {port["port"] for port in gateway["spec"]["ports"]}
    assert skaffold_config()["portForward"][0]["resourceName"] == run_sh_gateway_service()
    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    for image in IMAGES:
        _, runtime = builder_and_runtime(image)
        uid, gid = (int(n) for n in runtime.last("USER").split(":"))
        reference = f"{image.repository}:e2e"
        (workload,) = [
            w
            for w in workloads
            if reference in {c["image"] for c in w["spec"]["template"]["spec"]["containers"]}
        ]
        pod = workload["spec"]["template"]["spec"]
        (container,) = [c for c in pod["containers"] if c["image"] == reference]
        assert container["imagePullPolicy"] == "Never"
        security = pod.get("securityContext", {}) | container.get("securityContext", {})
        assert security.get("runAsUser", uid) == uid
        assert security.get("runAsGroup", gid) == gid
        if image.chart_key in ("chat", "graphql"):
            assert workload["spec"]["replicas"] == 2, workload["metadata"]["name"]


def test_run_sh_images_match_the_values_and_skaffold() -> None:
    script = RUN_SH.read_text()
    mapping = dict(re.findall(r'^\s+"(\w+):(nextcampus/[\w-]+)"$', script, flags=re.MULTILINE))
    assert mapping == {image.name: image.repository for image in IMAGES}


# --- e2e/kind/run.sh ---------------------------------------------------------------------------


def run_script(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(RUN_SH), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_run_sh_parses_and_is_executable() -> None:
    result = subprocess.run(
        ["bash", "-n", str(RUN_SH)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert os.access(RUN_SH, os.X_OK)
    assert "set -euo pipefail" in RUN_SH.read_text()


def test_run_sh_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is missing: `make deps` installs it (Debian shellcheck)")
    result = subprocess.run(
        [shellcheck, "-x", str(RUN_SH)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout


def engine_and_kind_here() -> bool:
    if shutil.which("docker") is None or shutil.which("kind") is None:
        return False
    info = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    return info.returncode == 0


def test_run_sh_skips_where_docker_or_kind_is_missing() -> None:
    if engine_and_kind_here():
        pytest.skip("docker, an engine and kind are here: run.sh would create a real cluster")
    result = run_script(timeout=90)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("SKIPPED: "), result.stdout
    assert "kind" in result.stdout or "Docker engine" in result.stdout


def test_run_sh_names_each_missing_tool(tmp_path: Path) -> None:
    # A PATH with neither docker nor kind on it (only what the script needs before its check).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname",):
        found = shutil.which(tool)
        assert found
        (bin_dir / tool).symlink_to(found)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    result = subprocess.run(
        [shutil.which("bash") or "bash", str(RUN_SH)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("SKIPPED: ")
    assert "missing: docker, kind" in result.stdout


def kubeconfig(path: Path, current_context: str | None, contexts: list[str]) -> Path:
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": c, "cluster": {"server": "https://127.0.0.1:1"}} for c in contexts],
        "users": [{"name": "nobody", "user": {"token": "not-a-token"}}],
        "contexts": [{"name": c, "context": {"cluster": c, "user": "nobody"}} for c in contexts],
    }
    if current_context is not None:
        config["current-context"] = current_context
    path.write_text(yaml.safe_dump(config))
    return path


def check_context(
    tmp_path: Path, current: str | None, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    contexts = ["prod-cluster", "kind-nextcampus-e2e", "kind-other"]
    env = {k: v for k, v in os.environ.items() if k not in ("KIND_CLUSTER", "KUBECONFIG")}
    env |= {
        "KUBECONFIG": str(kubeconfig(tmp_path / "kubeconfig", current, contexts)),
        "HOME": str(tmp_path),
        **extra_env,
    }
    return run_script("--check-context", env=env)


def test_check_context_refuses_a_context_that_is_not_kind(tmp_path: Path) -> None:
    result = check_context(tmp_path, "prod-cluster")
    assert result.returncode == 2
    assert "refusing" in result.stderr
    assert "prod-cluster" in result.stderr


def test_check_context_refuses_a_kubeconfig_without_current_context(tmp_path: Path) -> None:
    result = check_context(tmp_path, None)
    assert result.returncode == 2
    assert "refusing" in result.stderr


def test_check_context_accepts_a_kind_context(tmp_path: Path) -> None:
    result = check_context(tmp_path, "kind-nextcampus-e2e")
    assert result.returncode == 0, result.stderr
    assert "kind-nextcampus-e2e" in result.stdout


def test_check_context_wants_the_cluster_named_by_kind_cluster(tmp_path: Path) -> None:
    result = check_context(tmp_path, "kind-other", KIND_CLUSTER="nextcampus-e2e")
    assert result.returncode == 2
    assert "kind-nextcampus-e2e" in result.stderr
