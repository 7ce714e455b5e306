"""`chatctl bench-retime` as a user runs it, small: every seeded message is re-timed and
verified, in as many round trips as the batch size implies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_bench_retime_re_times_and_verifies_every_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chatctl",
            "bench-retime",
            "--messages",
            "300",
            "--batch-sizes",
            "7,1000",
            "--output",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "TTL change of one course with 300 messages" in result.stdout
    (path,) = tmp_path.glob("retime-*.json")
    steps = json.loads(path.read_text())["steps"]
    assert [(s["batch_size"], s["batches"]) for s in steps] == [(7, 300 // 7 + 1), (1000, 1)]
    assert all(s["retimed"] == s["verified"] == 300 for s in steps), steps
    assert all(s["removed"] == 0 for s in steps)
