"""The GraphQL schema of DESIGN.md §2, built from its modules (testable without aiohttp).

Its SDL is committed as services/graphql/schema.graphql, so clients generate code from a
file and reviews see every API change; `python -m nextcampus_graphql.schema -o FILE` writes
it (without `-o`: to stdout), and a test fails while the file is stale."""

from __future__ import annotations

import graphene
from graphql import GraphQLObjectType, GraphQLSchema, print_schema

from nextcampus_graphql.cost import COST_EXTENSION
from nextcampus_graphql.schema.events import EVENT_TYPES
from nextcampus_graphql.schema.mutations import Mutation
from nextcampus_graphql.schema.queries import Query
from nextcampus_graphql.schema.subscriptions import Subscription
from nextcampus_graphql.schema.types import EDIT_HISTORY_COST

SDL_HEADER = (
    "# The GraphQL API of Next Campus Chat, printed from the graphene schema\n"
    "# (services/graphql/src/nextcampus_graphql/schema). Do not edit: regenerate with\n"
    "#   .venv/bin/python -m nextcampus_graphql.schema -o services/graphql/schema.graphql\n"
)


# Fields whose resolver makes a round trip of its own to the chat service cost more than 1
# (cost.py): (type, field) → cost.
FIELD_COSTS = {("ChatMessage", "editHistory"): EDIT_HISTORY_COST}


def build_schema() -> GraphQLSchema:
    schema = graphene.Schema(
        query=Query, mutation=Mutation, subscription=Subscription, types=list(EVENT_TYPES)
    )
    graphql_schema: GraphQLSchema = schema.graphql_schema
    # graphene has no way to declare a field's extensions: set them on the built schema.
    for (type_name, field_name), cost in FIELD_COSTS.items():
        object_type = graphql_schema.get_type(type_name)
        assert isinstance(object_type, GraphQLObjectType)
        field = object_type.fields[field_name]
        field.extensions = {**(field.extensions or {}), COST_EXTENSION: cost}
    return graphql_schema


def schema_sdl() -> str:
    """The schema as the committed SDL file holds it."""
    return f"{SDL_HEADER}\n{print_schema(build_schema())}\n"
