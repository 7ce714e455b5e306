"""The GraphQL service through real clients, in front of real chat servers.

Fixtures from the project's pytest plugin (`tools/testing/src/testing/plugin.py`, loaded
through its entry point): `cluster_client`, `course_id`, `jwt_secret`, `make_token`,
`topology`, `chat_server`, `client_for`, `graphql_settings_factory`, `graphql_server`,
`signing_key`, `ec_key`, `jwks_file`, `jwks_server`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from gql import Client
from gql.transport.aiohttp import AIOHTTPTransport
from gql.transport.websockets import WebsocketsTransport

from nextcampus_graphql.app import WIRING
from nextcampus_graphql.connection import TRANSPORT_WS
from nextcampus_graphql.wiring import Wiring


@pytest.fixture
def wiring(graphql_server: Any) -> Wiring:
    """The in-process GraphQL server's wiring: its settings, metrics, limits, upstream hub."""
    return graphql_server.app[WIRING]


@pytest.fixture
def http_client(graphql_server: Any, make_token: Callable[..., str]) -> Callable[..., Client]:
    def make(user: str, courses: list[str], **kw: Any) -> Client:
        token = make_token(user, courses, **kw)
        transport = AIOHTTPTransport(
            url=graphql_server.url, headers={"Authorization": f"Bearer {token}"}
        )
        return Client(transport=transport)

    return make


@pytest.fixture
async def ws_session(
    graphql_server: Any, make_token: Callable[..., str]
) -> AsyncIterator[Callable[..., Any]]:
    """Open gql WebSocket sessions (closed at the end of the test)."""
    clients: list[Client] = []

    async def open_session(
        user: str,
        courses: list[str],
        protocol: str = TRANSPORT_WS,
        url: str | None = None,
        moderates: list[str] | None = None,
    ) -> Any:
        token = make_token(user, courses, moderates)
        transport = WebsocketsTransport(
            url=url or graphql_server.ws_url,
            init_payload={"authorization": f"Bearer {token}"},
            subprotocols=[protocol],
        )
        client = Client(transport=transport)
        clients.append(client)
        return await client.connect_async()

    yield open_session
    for client in clients:
        await client.close_async()


@pytest.fixture
def token_for(make_token: Callable[..., str], course_id: str) -> Callable[[str], tuple[str, str]]:
    """(course id, token of `user` in it)."""
    return lambda user: (course_id, make_token(user, [course_id]))
