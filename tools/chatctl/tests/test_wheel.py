"""chatctl from its wheels, outside any checkout: `token`, `jwks`, `send`, `tail` and `policy`
need nothing of the repository (the CRD comes inside the operator's wheel).

The wheels are built with the real uv and unpacked into a folder that Python imports from
with site processing off (`-S`): the workspace's editable installs (.pth files) are not seen,
so every module of ours comes from a wheel. Their third-party dependencies are taken from the
workspace's environment, as an installer would have put them there.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

from devstack.paths import REPOSITORY_ENV, repository

# chatctl and what it runs on (chat and GraphQL only run as local-stack processes).
WHEELS = [
    "chatctl",
    "nextcampus-devstack",
    "nextcampus-bench",
    "nextcampus-common",
    "nextcampus-policy-operator",
]


def uv() -> list[str]:
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our wheels, built and unpacked into one folder."""
    root = tmp_path_factory.mktemp("wheels")
    for package in WHEELS:
        subprocess.run(
            [*uv(), "build", "--quiet", "--wheel", "--package", package, "-o", str(root)],
            cwd=repository(),
            check=True,
            timeout=120,
        )
    site = root / "site"
    for wheel in root.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    return site


def from_wheels(installed: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    """argv and env of `chatctl ARGS` importing our modules from `installed` only."""
    env = {k: v for k, v in os.environ.items() if k not in (REPOSITORY_ENV, "PYTHONPATH")}
    env["PYTHONPATH"] = os.pathsep.join([str(installed), sysconfig.get_paths()["purelib"]])
    script = "import chatctl, sys; assert chatctl.__file__.startswith(sys.argv[1]); "
    script += "from chatctl.cli import app; sys.argv = ['chatctl', *sys.argv[2:]]; app()"
    return [sys.executable, "-S", "-c", script, str(installed), *args], env


async def run_chatctl(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run in a thread: the in-process chat server answers on this test's event loop."""
    argv, env = from_wheels(installed, *args)
    return await asyncio.to_thread(
        subprocess.run,
        argv,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_commands_that_need_no_checkout_run_from_the_wheels(
    installed, tmp_path, redis_cluster, chat_server, course_id
):
    outside = tmp_path / "elsewhere"
    outside.mkdir()

    token = await run_chatctl(installed, outside, "token", "-u", "ann", "-c", course_id)
    assert token.returncode == 0, token.stderr
    jwks = await run_chatctl(installed, outside, "jwks")
    assert jwks.returncode == 0, jwks.stderr
    assert '"kty": "oct"' in jwks.stdout

    target = f"127.0.0.1:{chat_server.port}"
    dev_token = token.stdout.strip()
    sent = await run_chatctl(
        installed, outside, "send", "-c", course_id, "-t", target, "--token", dev_token, "hi"
    )
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith(f"{course_id} #")
    message_id = sent.stdout.split("#", 1)[1].split()[0]
    # tail replays what came after an id, then stays live until stopped.
    argv, env = from_wheels(
        installed,
        "tail",
        "-c",
        course_id,
        "-t",
        target,
        "--token",
        dev_token,
        "--after",
        str(int(message_id) - 1),
    )
    tail = await asyncio.create_subprocess_exec(
        *argv, cwd=outside, env=env, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert tail.stdout is not None
        first = await asyncio.wait_for(tail.stdout.readline(), 30)
        assert first.decode().strip() == f"#{message_id} ann: hi"
    finally:
        tail.kill()
        await tail.wait()

    policy = yaml.safe_load((repository() / "examples/policies/office-hours.yaml").read_text())
    policy["spec"]["courseId"] = course_id
    policy_file = outside / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy))
    applied = await run_chatctl(
        installed,
        outside,
        "policy",
        "apply",
        "-f",
        str(policy_file),
        "--redis",
        redis_cluster.nodes_csv,
    )
    assert applied.returncode == 0, applied.stderr
    assert "Ready" in applied.stdout
    bad = outside / "bad.yaml"
    bad.write_text(yaml.safe_dump({**policy, "spec": {**policy["spec"], "colour": "blue"}}))
    refused = await run_chatctl(installed, outside, "policy", "apply", "-f", str(bad))
    assert refused.returncode == 2
    assert "colour" in refused.stderr + refused.stdout
