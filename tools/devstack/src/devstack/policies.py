"""CourseChatPolicy files for the local stack: read and check them as the API server would
(`nextcampus_policy.crd`), then apply or delete them through the operator's reconcile code
(`chatctl policy …`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nextcampus_common.redis_cluster import ClusterClient
from nextcampus_policy.crd import problems
from nextcampus_policy.reconcile import Outcome, PolicyReconciler, status_for
from nextcampus_policy.settings import PolicyOperatorSettings
from nextcampus_policy.spec import KIND, PolicyRef
from nextcampus_policy.store import PolicyStore


class PolicyFileError(ValueError):
    """A file that is not a list of valid CourseChatPolicies; the message says where."""


@dataclass(frozen=True)
class PolicyDocument:
    source: str  # FILE, or FILE#N for the Nth document of a multi-document file
    body: dict[str, Any]

    @property
    def ref(self) -> PolicyRef:
        meta = self.body["metadata"]
        # As kubectl does: a manifest without a namespace goes to `default`.
        return PolicyRef.of(meta.get("namespace") or "default", meta["name"], meta, self.spec)

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.body["spec"]
        return spec


def load(path: Path) -> list[PolicyDocument]:
    """Every CourseChatPolicy in `path` (one or more YAML documents), each checked; raises
    PolicyFileError naming each problem of each document."""
    try:
        raw = list(yaml.safe_load_all(path.read_text()))
    except OSError as exc:
        raise PolicyFileError(f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise PolicyFileError(f"{path}: not YAML: {exc}") from None
    documents = [doc for doc in raw if doc is not None]
    if not documents:
        raise PolicyFileError(f"{path}: no documents")
    loaded, errors = [], []
    for number, document in enumerate(documents, start=1):
        source = str(path) if len(documents) == 1 else f"{path}#{number}"
        if not isinstance(document, dict):
            errors.append(f"{source}: not a mapping")
            continue
        found = problems(document)
        errors += [f"{source}: {problem}" for problem in found]
        if not found:
            loaded.append(PolicyDocument(source, document))
    if errors:
        raise PolicyFileError("\n".join(errors))
    return loaded


def load_all(paths: list[Path]) -> list[PolicyDocument]:
    """The policies of every file (a folder: its *.yaml and *.yml files, sorted), all checked
    before any is applied; one PolicyFileError listing every problem found."""
    files = [
        file
        for path in paths
        for file in (
            sorted([*path.glob("*.yaml"), *path.glob("*.yml")]) if path.is_dir() else [path]
        )
    ]
    if not files:
        raise PolicyFileError(f"no policy files in {', '.join(map(str, paths))}")
    documents, errors = [], []
    for file in files:
        try:
            documents += load(file)
        except PolicyFileError as exc:
            errors.append(str(exc))
    if errors:
        raise PolicyFileError("\n".join(errors))
    return documents


async def run(
    documents: list[PolicyDocument], redis_nodes: list[str], *, delete: bool
) -> list[Outcome]:
    """Apply (or delete) each policy on the Redis Cluster of `redis_nodes`, in file order,
    through the operator's reconcile code. Locally no API server orders policies by age:
    the policy applied last governs its course."""
    settings = PolicyOperatorSettings(
        redis_nodes=redis_nodes, metrics_port=0, health_port=0, redis_retry_seconds=3.0
    )
    store = PolicyStore(ClusterClient(settings), retime_batch_size=settings.retime_batch_size)
    reconciler = PolicyReconciler(store, settings)
    outcomes = []
    try:
        for document in documents:
            ref = document.ref
            outcomes.append(
                await reconciler.release(ref, [ref])
                if delete
                else await reconciler.reconcile(ref, document.spec, [ref])
            )
    finally:
        await store.close()
    return outcomes


def report(document: PolicyDocument, outcome: Outcome) -> str:
    """What `kubectl get -o yaml` would show of the policy afterwards: its status."""
    generation = (document.body.get("metadata") or {}).get("generation")
    status = {k: v for k, v in status_for(outcome, generation, None).items() if v is not None}
    ready = "Ready" if outcome.ready else "NOT ready"
    head = f"{KIND.lower()} {document.ref.owner} ({document.source}), course {document.ref.course_id}: {ready}, {outcome.reason.value}"
    return head + "\n" + yaml.safe_dump({"status": status}, sort_keys=False, width=1000).rstrip()
