"""The `settings` parts of the chart's values.schema.json, generated from the services'
settings classes, so that a key a pod would not accept (a typo, a removed field, a wrong
type) is refused by `helm install` itself.

`python tools/gen_chart_schema.py` rewrites them (`make chart-schema`); with `--check` it
fails when the committed schema differs from a fresh generation (a chart test runs that).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings

from nextcampus_chat.settings import ChatSettings
from nextcampus_graphql.settings import GraphqlSettings
from nextcampus_policy.settings import PolicyOperatorSettings

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "charts" / "nextcampus-chat" / "values.schema.json"

# Fields the chart derives from its other values (ports its probes and Services use, the
# Redis nodes and JWT secret it wires, the policy defaults it gives chat and operator alike,
# the shutdown budget it checks against the grace period, the namespaces the operator
# watches and the courses each may govern, its export directory): not settable through
# `settings`.
_COMMON_MANAGED = {
    "metrics_host",
    "metrics_port",
    "redis_nodes",
    "redis_password",
    "jwt_secret",
    "jwt_jwks_file",
    "jwt_jwks_url",
    "jwt_issuer",
    "jwt_audience",
    "default_ttl_seconds",
    "default_max_length",
    "default_rate_limit_messages",
    "default_rate_limit_seconds",
    "default_edit_window_seconds",
    "shutdown_grace_seconds",
}
SERVICES: dict[str, tuple[type[BaseSettings], set[str]]] = {
    "chatSettings": (ChatSettings, _COMMON_MANAGED | {"grpc_host", "grpc_port"}),
    "graphqlSettings": (
        GraphqlSettings,
        _COMMON_MANAGED | {"http_host", "http_port", "chat_target"},
    ),
    "operatorSettings": (
        PolicyOperatorSettings,
        _COMMON_MANAGED
        | {
            "health_host",
            "health_port",
            "watch_namespaces",
            "governed_courses",
            "export_directory",  # operator.exports
        },
    ),
}


def settings_schema(settings_class: type[BaseSettings], managed: set[str]) -> dict[str, Any]:
    """The JSON schema of the fields a user may set, from pydantic's own schema of them."""
    properties = settings_class.model_json_schema()["properties"]
    allowed = {}
    for name in sorted(set(settings_class.model_fields) - managed):
        field = {k: v for k, v in properties[name].items() if k != "title"}
        allowed[name] = field
    return {
        "type": "object",
        "description": f"More {settings_class.__name__} fields; each becomes NEXTCAMPUS_<FIELD>.",
        "additionalProperties": False,
        "properties": allowed,
    }


def generated_defs() -> dict[str, Any]:
    return {name: settings_schema(cls, managed) for name, (cls, managed) in SERVICES.items()}


def regenerated(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with its generated `$defs` replaced by fresh ones."""
    return {**schema, "$defs": {**schema.get("$defs", {}), **generated_defs()}}


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(path: Path = SCHEMA_FILE) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when the schema is stale")
    args = parser.parse_args()
    fresh = render(regenerated(json.loads(path.read_text())))
    if path.read_text() == fresh:
        print(f"{path} is up to date")
        return 0
    if args.check:
        print(f"{path} is stale: run `make chart-schema`")
        return 1
    path.write_text(fresh)
    print(f"rewrote the generated parts of {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
