"""The committed stubs match protos/ (`make protos` regenerates them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_generated_protos_are_up_to_date():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools/gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
