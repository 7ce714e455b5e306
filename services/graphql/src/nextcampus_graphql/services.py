"""Everything a GraphQL process wires once (in `create_app`) and its handlers share."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from graphql import GraphQLSchema

from nextcampus_common.auth import TokenVerifier
from nextcampus_common.chat_api import ChatApi
from nextcampus_graphql.feeds import FeedHub
from nextcampus_graphql.limits import UserLimits
from nextcampus_graphql.metrics import GraphqlMetrics
from nextcampus_graphql.operations import OperationFactory
from nextcampus_graphql.settings import GraphqlSettings

if TYPE_CHECKING:
    from nextcampus_graphql.connection import Connection


@dataclass(eq=False)
class Services:
    settings: GraphqlSettings
    schema: GraphQLSchema
    operations: OperationFactory
    verifier: TokenVerifier
    chat: ChatApi
    hub: FeedHub
    metrics: GraphqlMetrics
    users: UserLimits
    connections: set[Connection] = field(default_factory=set)
    background: set[asyncio.Task[object]] = field(default_factory=set)
    accepting: bool = True
