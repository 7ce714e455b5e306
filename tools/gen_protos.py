"""Generate the Python stubs of protos/ into the common package (`make protos`).

The proto tree is mapped under the virtual path `nextcampus_common/proto`, so the generated
modules import each other as `nextcampus_common.proto.chat.v1...` with no post-processing.
`--check` regenerates into a scratch directory and fails when the committed stubs differ.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE_DIR = ROOT / "services/common/src"
GENERATED = PACKAGE_DIR / "nextcampus_common/proto"
VIRTUAL_ROOT = "nextcampus_common/proto"


def generate(out_dir: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    # protoc-gen-mypy* are console scripts of mypy-protobuf in the same venv as this Python.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{VIRTUAL_ROOT}={PROTO_ROOT}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            f"--mypy_out={out_dir}",
            f"--mypy_grpc_out={out_dir}",
            *(f"{PROTO_ROOT}/{p}" for p in protos),
        ],
        check=True,
        env=env,
    )
    # Every generated directory is a regular package, so the src layout installs it.
    for directory in [out_dir / VIRTUAL_ROOT, *(out_dir / VIRTUAL_ROOT).rglob("*")]:
        if directory.is_dir():
            (directory / "__init__.py").touch()


def differences(left: Path, right: Path) -> list[str]:
    comparison = filecmp.dircmp(left, right, ignore=["__pycache__"])
    found = [f"only in {left}: {n}" for n in comparison.left_only]
    found += [f"only in {right}: {n}" for n in comparison.right_only]
    found += [f"differs: {left / n}" for n in comparison.diff_files]
    for name in comparison.common_dirs:
        found += differences(left / name, right / name)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when the stubs are stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        generate(Path(scratch))
        fresh = Path(scratch) / VIRTUAL_ROOT
        if args.check:
            stale = differences(fresh, GENERATED) if GENERATED.exists() else ["not generated"]
            if stale:
                print("generated protos are stale; run `make protos`:", *stale, sep="\n  ")
                return 1
            print("generated protos are up to date")
            return 0
        shutil.rmtree(GENERATED, ignore_errors=True)
        shutil.copytree(fresh, GENERATED)
        print(f"generated {GENERATED.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
