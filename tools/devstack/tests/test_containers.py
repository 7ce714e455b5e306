"""The container topology's reading of the chart and the image builds' reading of the
machine, without starting anything (`make e2e-containers` starts them): the pods, names, env,
volumes and security settings `podman run` gets from `helm template`; the Debian mirror taken
from apt's configuration; podman's settings for this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.containers import (
    NAMESPACE,
    ContainerTopology,
    pods_of,
    release_values,
    render,
)
from devstack.images import (
    DOCKERFILE,
    SERVICE_IMAGES,
    Engine,
    debian_mirror,
    dockerfile_arg_default,
    podman_config,
)
from devstack.paths import repository
from devstack.processes import StackError


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> ContainerTopology:
    stack = ContainerTopology(Engine("podman"), tmp_path_factory.mktemp("containers"), tag="t")
    stack.objects = render(release_values("t"))
    stack.pods = {pod.name: pod for pod in pods_of(stack.objects)}
    stack.gateway_port, stack.gateway_admin_port = 18080, 19902
    return stack


def test_every_workload_becomes_its_pods_with_the_images_built_here(
    topology: ContainerTopology,
) -> None:
    components = sorted(pod.component for pod in topology.pods.values())
    assert components == sorted(
        ["redis"] * 6 + ["chat"] * 2 + ["graphql"] * 2 + ["gateway", "operator", "redis-setup"]
    )
    images = {pod.component: pod.container["image"] for pod in topology.pods.values()}
    for image in SERVICE_IMAGES:
        assert images[image.name] == f"localhost/{image.repository}:t"
    assert images["redis"] == images["redis-setup"] == "localhost/nextcampus-stand-in/redis:t"
    assert images["gateway"] == "localhost/nextcampus-stand-in/envoy:t"


def test_pods_answer_to_the_names_a_cluster_gives_them(topology: ContainerTopology) -> None:
    redis = topology.pods["nc-nextcampus-chat-redis-0"]
    headless = f"nc-nextcampus-chat-redis-headless.{NAMESPACE}.svc.cluster.local"
    # What the node announces (start.sh: $POD_NAME.$HEADLESS_SERVICE) and what chat dials.
    assert f"nc-nextcampus-chat-redis-0.{headless}" in redis.aliases
    assert f"{redis.name}.{headless}:6379" in topology.environment(
        topology.pods["nc-nextcampus-chat-chat-0"]
    )["NEXTCAMPUS_REDIS_NODES"].split(",")
    # Both chat pods behind the headless name GraphQL resolves (dns:///…).
    target = topology.environment(topology.pods["nc-nextcampus-chat-graphql-0"])[
        "NEXTCAMPUS_CHAT_TARGET"
    ]
    name = target.removeprefix("dns:///").rpartition(":")[0]
    holders = [p.name for p in topology.pods.values() if name in p.aliases]
    assert holders == ["nc-nextcampus-chat-chat-0", "nc-nextcampus-chat-chat-1"]


def test_run_arguments_hold_the_pod_spec_and_no_secret(topology: ContainerTopology) -> None:
    for pod in (p for p in topology.pods.values() if not p.job):
        args, env = topology.run_arguments(pod)
        line = " ".join(args)
        assert "--user 10001:10001" in line
        assert "--read-only" in args
        assert "--cap-drop ALL" in line
        assert "--security-opt no-new-privileges" in line
        assert "--read-only-tmpfs=false" in args
        # Values travel in podman's environment; the arguments name the variables only.
        for name in env:
            assert f"--env {name}" in line
        for secret in ("NEXTCAMPUS_JWT_SECRET", "NEXTCAMPUS_REDIS_PASSWORD", "REDIS_PASSWORD"):
            if secret in env:
                assert env[secret] not in line, secret
    redis_args, redis_env = topology.run_arguments(topology.pods["nc-nextcampus-chat-redis-1"])
    assert redis_env["POD_NAME"] == "nc-nextcampus-chat-redis-1"
    assert redis_env["REDIS_PASSWORD"] == redis_env["REDISCLI_AUTH"]
    assert '["sh", "/etc/redis/start.sh"]' in redis_args  # the chart's command
    assert any(
        a.endswith(":/data") and "claims/data-nc-nextcampus-chat-redis-1" in a for a in redis_args
    )
    gateway_args, _ = topology.run_arguments(topology.pods["nc-nextcampus-chat-gateway-0"])
    assert "127.0.0.1:18080:8080" in gateway_args  # published on loopback only
    assert "--disable-hot-restart" in gateway_args  # the chart's args


def test_the_debian_mirror_comes_from_apt(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.invalid/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    assert debian_mirror(tmp_path) == "http://mirror.invalid/debian"
    legacy = tmp_path / "legacy"
    (legacy / "sources.list.d").mkdir(parents=True)
    (legacy / "sources.list").write_text(
        "# a comment\ndeb [arch=amd64] http://old.invalid/debian bookworm main\n"
    )
    assert debian_mirror(legacy) == "http://old.invalid/debian"
    with pytest.raises(StackError, match="no Debian bookworm mirror"):
        debian_mirror(tmp_path / "nowhere")


def test_podman_settings_allow_what_this_machine_refuses(tmp_path: Path) -> None:
    text = podman_config(tmp_path).read_text()
    assert "default_ulimits = []" in text


def test_the_dockerfile_defaults_to_the_official_base() -> None:
    base = dockerfile_arg_default(repository() / DOCKERFILE, "PYTHON_IMAGE")
    assert base.startswith("python:3.11.")
    with pytest.raises(StackError, match="no default for ARG NOPE"):
        dockerfile_arg_default(repository() / DOCKERFILE, "NOPE")
