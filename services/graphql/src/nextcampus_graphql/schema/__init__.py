"""The GraphQL schema of DESIGN.md §2, built from its modules (testable without aiohttp)."""

from __future__ import annotations

import graphene
from graphql import GraphQLSchema

from nextcampus_graphql.schema.mutations import Mutation
from nextcampus_graphql.schema.queries import Query
from nextcampus_graphql.schema.subscriptions import Subscription


def build_schema() -> GraphQLSchema:
    schema = graphene.Schema(query=Query, mutation=Mutation, subscription=Subscription)
    graphql_schema: GraphQLSchema = schema.graphql_schema
    return graphql_schema
