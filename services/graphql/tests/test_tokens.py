"""Tokens signed by an identity provider's keys (a JWKS file or URL) over HTTP and both
WebSocket protocols: a token lying about its key is refused like any bad token, and a JWKS
URL that is slow to answer never stalls the process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from nextcampus_graphql.connection import LEGACY_WS, TRANSPORT_WS
from testing.plugin import GraphqlServer, start_graphql_server

ME = {"query": "{ me { userId } }"}


@pytest.fixture
async def jwks_file_server(graphql_settings_factory, jwks_file) -> AsyncIterator[GraphqlServer]:
    server = await start_graphql_server(
        graphql_settings_factory(jwt_secret=None, jwt_jwks_file=jwks_file)
    )
    yield server
    await server.runner.cleanup()


async def post_me(http: aiohttp.ClientSession, url: str, token: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(url, json=ME, headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def connection_init(
    http: aiohttp.ClientSession, url: str, token: str, protocol: str = TRANSPORT_WS
) -> tuple[list[dict[str, Any]], int | None]:
    """Open a socket and send connection_init: the messages that came back, and the close
    code (None while the socket stays open after the ack)."""
    received: list[dict[str, Any]] = []
    async with http.ws_connect(url, protocols=[protocol]) as ws:
        await ws.send_json({"type": "connection_init", "payload": {"authorization": token}})
        while True:
            message = await ws.receive(timeout=20)
            if message.type is not aiohttp.WSMsgType.TEXT:
                return received, ws.close_code
            received.append(message.json())
            if received[-1]["type"] == "connection_ack":
                return received, None


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_a_token_naming_another_keys_algorithm_is_refused(
    jwks_file_server, signing_key, ec_key, course_id, protocol
):
    good = signing_key.token("alice", [course_id])
    # Signed with the EC key, naming the RSA key: the pod answered 500 and closed abnormally.
    lying = ec_key.token("mallory", [course_id], kid=signing_key.kid)
    url, ws_url = jwks_file_server.url, jwks_file_server.ws_url
    async with aiohttp.ClientSession() as http:
        status, body = await post_me(http, url, lying)
        assert status == 401, body
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert "invalid token" in body["errors"][0]["message"]

        received, code = await connection_init(http, ws_url, lying, protocol)
        assert code == 4403, received
        if protocol == LEGACY_WS:
            assert [m["type"] for m in received] == ["connection_error"]

        # Still serving, to the rightful token holder.
        assert await post_me(http, url, good) == (200, {"data": {"me": {"userId": "alice"}}})
        received, code = await connection_init(http, ws_url, good, protocol)
        assert (received[0], code) == ({"type": "connection_ack"}, None)


async def test_healthz_answers_while_the_jwks_url_holds_its_answer(
    graphql_settings_factory, jwks_server, signing_key, course_id
):
    """The first token makes the process fetch the keys; the identity provider takes its
    time. Meanwhile the process answers its probes and other requests, and the socket that
    waits for the keys is acknowledged once they come."""
    server = await start_graphql_server(
        graphql_settings_factory(jwt_secret=None, jwt_jwks_url=jwks_server.url)
    )
    base = server.url.removesuffix("/graphql")
    jwks_server.hold()
    try:
        async with aiohttp.ClientSession() as http:
            token = signing_key.token("alice", [course_id])
            async with http.ws_connect(server.ws_url, protocols=[TRANSPORT_WS]) as ws:
                await ws.send_json({"type": "connection_init", "payload": {"authorization": token}})
                await jwks_server.wait_until(lambda jwks: jwks.waiting == 1)
                async with http.get(f"{base}/healthz") as response:
                    assert (response.status, await response.text()) == (200, "ok")
                async with http.post(server.url, json=ME) as response:
                    body = await response.json()
                    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
                # All of that while the JWKS URL was still holding its answer.
                assert jwks_server.waiting == 1
                jwks_server.release()
                assert await ws.receive_json(timeout=20) == {"type": "connection_ack"}
        assert jwks_server.fetches == 1
    finally:
        jwks_server.release()
        await server.runner.cleanup()
