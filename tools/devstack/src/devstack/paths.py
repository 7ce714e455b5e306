"""Where the repository's files are: the chart (the Envoy template the local gateway
renders, the values schema, the dashboards), and the shared benchmark harness beside it.

Looked up when a command needs them, not at import: an installed `chatctl` has no checkout,
and `token`, `send`, `tail`, `jwks` and `policy` need none. The checkout is the one
NEXTCAMPUS_REPOSITORY names, else the nearest holding the chart above the working directory,
else the one this package was installed from (the workspace's editable install).
"""

from __future__ import annotations

import os
from pathlib import Path

REPOSITORY_ENV = "NEXTCAMPUS_REPOSITORY"
CHART_IN_REPOSITORY = Path("charts") / "nextcampus-chat"


class NotInCheckout(RuntimeError):
    """The command needs the repository's files and none was found."""


def _is_checkout(path: Path) -> bool:
    return (path / CHART_IN_REPOSITORY / "Chart.yaml").is_file()


def repository() -> Path:
    named = os.environ.get(REPOSITORY_ENV)
    if named:
        if not _is_checkout(Path(named)):
            raise NotInCheckout(f"{REPOSITORY_ENV}={named} holds no {CHART_IN_REPOSITORY}")
        return Path(named).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents, *Path(__file__).resolve().parents):
        if _is_checkout(candidate):
            return candidate
    raise NotInCheckout(
        f"this needs a checkout of the repository ({CHART_IN_REPOSITORY}): run it inside "
        f"one, or set {REPOSITORY_ENV}"
    )


def chart() -> Path:
    """The Helm chart's folder."""
    return repository() / CHART_IN_REPOSITORY
