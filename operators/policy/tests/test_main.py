"""`python -m nextcampus_policy` where no Kubernetes API can be reached with credentials: the
operator stops with one line saying what it needs, not kopf's traceback (what a pod without
its service account token, or a developer without a kubeconfig, sees)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devstack.processes import free_ports
from nextcampus_policy.__main__ import NO_CREDENTIALS


def test_operator_without_credentials_says_so_in_one_line(tmp_path: Path) -> None:
    (metrics_port,) = free_ports(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEXTCAMPUS_", "KUBE"))}
    env |= {
        "HOME": str(tmp_path),  # no ~/.kube/config
        "NEXTCAMPUS_METRICS_HOST": "127.0.0.1",
        "NEXTCAMPUS_METRICS_PORT": str(metrics_port),
        "NEXTCAMPUS_HEALTH_PORT": "0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "nextcampus_policy"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == NO_CREDENTIALS
    assert "Traceback" not in result.stderr
