"""What a GraphQL process wires once (in `create_app`) and never changes: settings, schema,
operations, token verifier, chat client, upstream hub, metrics and per-user limits. What
changes while it serves (its sockets) is `sockets.py`'s."""

from __future__ import annotations

from dataclasses import dataclass

from graphql import GraphQLSchema

from nextcampus_common.auth import TokenVerifier
from nextcampus_common.chat_api import ChatApi
from nextcampus_graphql.limits import UserLimits
from nextcampus_graphql.metrics import GraphqlMetrics
from nextcampus_graphql.my_updates import ViewerUpdates
from nextcampus_graphql.operations import OperationFactory
from nextcampus_graphql.presence import PresenceTracker
from nextcampus_graphql.schema import build_schema
from nextcampus_graphql.settings import GraphqlSettings
from nextcampus_graphql.upstream import UpstreamHub


@dataclass(frozen=True, eq=False, slots=True)
class Wiring:
    settings: GraphqlSettings
    schema: GraphQLSchema
    operations: OperationFactory
    verifier: TokenVerifier
    chat: ChatApi
    upstream: UpstreamHub
    updates: ViewerUpdates
    metrics: GraphqlMetrics
    users: UserLimits
    presence: PresenceTracker

    async def close(self) -> None:
        """End myUpdates and the upstream streams (their subscribers' sockets are closed by
        then), make the last presence leaves, then close the chat channel."""
        self.updates.close()
        await self.upstream.close()
        await self.presence.close()
        await self.chat.close()


def wire(settings: GraphqlSettings, metrics: GraphqlMetrics) -> Wiring:
    schema = build_schema()
    chat = ChatApi(
        settings.chat_target,
        deadline_seconds=settings.chat_deadline_seconds,
        max_attempts=settings.chat_max_attempts,
        send_streams=settings.chat_send_streams,
        hops=metrics.hops,
    )
    upstream = UpstreamHub(
        chat,
        schema,
        metrics,
        history_page_limit=settings.history_page_limit,
        live_timeout_seconds=settings.chat_deadline_seconds * 2,
        presence_coalesce_seconds=settings.presence_coalesce_seconds,
    )
    return Wiring(
        settings=settings,
        schema=schema,
        operations=OperationFactory(
            schema,
            max_query_bytes=settings.max_query_bytes,
            max_depth=settings.max_query_depth,
            max_cost=settings.max_query_cost,
            page_limit=settings.history_page_limit,
        ),
        verifier=TokenVerifier(settings),
        chat=chat,
        upstream=upstream,
        updates=ViewerUpdates(upstream, schema, interval=settings.my_updates_interval_seconds),
        metrics=metrics,
        users=UserLimits(
            max_sockets=settings.max_sockets_per_user,
            max_subscriptions=settings.max_subscriptions_per_user,
            max_subscription_cost=settings.max_subscription_cost_per_user,
        ),
        presence=PresenceTracker(
            chat, metrics, heartbeat_seconds=settings.presence_heartbeat_seconds
        ),
    )
