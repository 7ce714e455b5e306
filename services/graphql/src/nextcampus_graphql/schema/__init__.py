"""The GraphQL schema of DESIGN.md §2, built from its modules (testable without aiohttp).

Its SDL is committed as services/graphql/schema.graphql, so clients generate code from a
file and reviews see every API change; `python -m nextcampus_graphql.schema -o FILE` writes
it (without `-o`: to stdout), and a test fails while the file is stale."""

from __future__ import annotations

import graphene
from graphql import GraphQLSchema, print_schema

from nextcampus_graphql.schema.mutations import Mutation
from nextcampus_graphql.schema.queries import Query
from nextcampus_graphql.schema.subscriptions import Subscription

SDL_HEADER = (
    "# The GraphQL API of Next Campus Chat, printed from the graphene schema\n"
    "# (services/graphql/src/nextcampus_graphql/schema). Do not edit: regenerate with\n"
    "#   .venv/bin/python -m nextcampus_graphql.schema -o services/graphql/schema.graphql\n"
)


def build_schema() -> GraphQLSchema:
    schema = graphene.Schema(query=Query, mutation=Mutation, subscription=Subscription)
    graphql_schema: GraphQLSchema = schema.graphql_schema
    return graphql_schema


def schema_sdl() -> str:
    """The schema as the committed SDL file holds it."""
    return f"{SDL_HEADER}\n{print_schema(build_schema())}\n"
