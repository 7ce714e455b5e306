"""The container images, checked offline with the real tools that run here (no Docker
engine):

- `images/Dockerfile` read instruction by instruction with each image's build arguments
  (multi-stage, pinned slim Python by default and replaceable, non-root numeric user, locked
  install without dev dependencies, entry point, ports, labels);
- the lock exported for each image's package (the real uv) holds its runtime dependencies and
  nothing of the dev group or the CLI, and exactly the workspace members whose sources the
  Dockerfile copies for it;
- the builder stage performed without Docker: the files its COPY lines take from the build
  context (after .dockerignore) laid out as Docker would, its very `uv sync` lines run, the
  sources deleted, and the entry module imported with the venv that is left, which is all
  the runtime stage copies.

The images themselves are built and run by `images/tests/test_build.py` where podman or
docker can build (marker `containers`).
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
from pathlib import Path

import pytest

from testing.images import (
    DOCKERFILE,
    ENTRYPOINT,
    IMAGE_IDS,
    IMAGES,
    NOT_IN_IMAGES,
    REPO,
    VENV_PATH,
    Image,
    Stage,
    builder_and_runtime,
    normalize,
    pinned_uv_version,
    uv_sync_commands,
)


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
    stages = image.stages()
    builder, runtime = builder_and_runtime(image)
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?", runtime.base), runtime.base
    # A site that mirrors or builds its own base passes it in; every stage takes it.
    froms = re.findall(r"^FROM (\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert len(froms) == len(stages)
    assert set(froms) == {"${PYTHON_IMAGE}"}, froms
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
    assert json.loads(runtime.last("ENTRYPOINT")) == [ENTRYPOINT]
    # The entry point is the package's console script, linked in the builder.
    assert ["ln", "-s", image.package, ENTRYPOINT] in builder.run_commands()
    labels = runtime.labels()
    assert labels["org.opencontainers.image.title"] == image.package
    for key in ("description", "version", "revision", "base.name"):
        assert labels.get(f"org.opencontainers.image.{key}"), f"label {key} missing"
    assert labels["org.opencontainers.image.base.name"] == runtime.base


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_entrypoint_module_imports_in_the_workspace_venv(image: Image) -> None:
    source = REPO / image.service.source
    with (source / "pyproject.toml").open("rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    # The console script named as the package is what the image's entry point links to.
    assert scripts[image.package] == f"{image.module}.__main__:main"
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


BUILDER_STEPS_BESIDE_UV = frozenset({"[", "export", "python3", "/opt/uv/bin/pip", "ln"})


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
    # PATH names the image's uv; this uv is the same version (checked above).
    env |= {key: value for key, value in builder.env().items() if key != "PATH"}
    env["UV_PROJECT_ENVIRONMENT"] = str(venv)
    # The interpreter the workspace venv runs on (3.11, as in the image).
    env["UV_PYTHON"] = getattr(sys, "_base_executable", sys.executable)
    for words in builder.run_commands():
        if words[0] != "uv":
            # Installing the pinned uv (this uv, checked above), the CA secret's export, and
            # the entry point's link (checked above): nothing the venv depends on.
            assert words[0] in BUILDER_STEPS_BESIDE_UV, (
                f"a builder step this test does not know: {shlex.join(words)}"
            )
            continue
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
    assert (venv / "bin" / image.package).is_file(), "no console script for the entry point"
    package_dir = next(venv.glob(f"lib/python*/site-packages/{image.module}"))
    assert any(package_dir.glob("__pycache__/*.pyc")), "bytecode not compiled in the builder"
