"""The CourseChatPolicy CRD as the API server applies it: its schema, with unknown fields
refused as `kubectl apply` refuses them, checks a policy document before anything runs it
(`chatctl policy`, the tests)."""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from importlib import resources
from typing import Any

import jsonschema
import yaml

from nextcampus_policy.spec import API_VERSION, KIND

# The chart's CRD file (the one copy: the package holds a link to it, which a wheel carries
# as a file), so `chatctl policy` checks files the same way from a wheel or a checkout.
CRD_RESOURCE = "crd.yaml"


def crd() -> dict[str, Any]:
    """The CourseChatPolicy CustomResourceDefinition, as the chart installs it."""
    text = resources.files("nextcampus_policy").joinpath(CRD_RESOURCE).read_text()
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def strict(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The schema with unknown fields refused: the API server's strict field validation
    (what `kubectl apply` asks for by default). A structural schema cannot say this itself
    (`additionalProperties` is not allowed beside `properties`). `metadata` stays open: the
    API server checks it against ObjectMeta, not against the CRD."""
    result = copy.deepcopy(dict(schema))

    def close(node: dict[str, Any], path: tuple[str, ...]) -> None:
        if node.get("type") == "object" and "properties" in node and path != ("metadata",):
            node["additionalProperties"] = False
        for name, child in node.get("properties", {}).items():
            close(child, (*path, name))
        if isinstance(node.get("items"), dict):
            close(node["items"], (*path, "[]"))

    close(result, ())
    return result


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    (version,) = crd()["spec"]["versions"]
    schema = strict(version["schema"]["openAPIV3Schema"])
    validator_class = jsonschema.validators.validator_for(schema)
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def problems(document: Mapping[str, Any]) -> list[str]:
    """What the API server would refuse in `document` (empty: it is a valid policy)."""
    found = []
    if document.get("apiVersion") != API_VERSION or document.get("kind") != KIND:
        found.append(
            f"not a {KIND} of {API_VERSION} (apiVersion {document.get('apiVersion')!r}, "
            f"kind {document.get('kind')!r})"
        )
    if not (document.get("metadata") or {}).get("name"):
        found.append("metadata.name is required")
    for error in sorted(_validator().iter_errors(dict(document)), key=lambda e: list(e.path)):
        where = ".".join(str(part) for part in error.absolute_path) or "(the document)"
        found.append(f"{where}: {error.message}")
    return found
