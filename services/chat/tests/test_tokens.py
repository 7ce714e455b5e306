"""Tokens over gRPC beyond a wrong signature: a header lying about its key, and a stream that
must end when its token does, however quiet the course is."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from nextcampus_common.chat_api import ChatClient
from testing.plugin import Collector

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture
async def jwks_chat_server(chat_settings_factory, jwks_file) -> AsyncIterator[Any]:
    """A chat server that verifies with a JWKS (an RSA and an EC key) instead of HS256."""
    from nextcampus_chat.server import build_server

    server = build_server(chat_settings_factory(jwt_secret=None, jwt_jwks_file=jwks_file))
    await server.start()
    yield server
    await server.stop()


async def test_a_token_naming_another_keys_algorithm_is_unauthenticated(
    jwks_chat_server, signing_key, ec_key, course_id
):
    target = f"127.0.0.1:{jwks_chat_server.port}"
    async with ChatClient(target, signing_key.token("alice", [course_id])) as alice:
        await alice.send(course_id, "signed by the RSA key")
    # Signed with the EC key but naming the RSA key's id.
    lying = ec_key.token("mallory", [course_id], kid=signing_key.kid)
    async with ChatClient(target, lying) as mallory:
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            await mallory.send(course_id, "never stored")
        assert unary.value.code() is UNAUTHENTICATED, unary.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as stream:
            await mallory.subscribe(course_id).read()
        assert stream.value.code() is UNAUTHENTICATED, stream.value.details()
        assert "invalid token" in (stream.value.details() or "")
    # The server keeps serving.
    async with ChatClient(target, signing_key.token("alice", [course_id])) as alice:
        assert (await alice.history(course_id)).messages


async def test_a_stream_ends_unauthenticated_when_its_token_expires_on_a_quiet_course(
    client_for, course_id
):
    """Nothing is sent to the course: the token's expiry alone ends the stream, as it closes
    a GraphQL socket with 4403; the client resumes with a new token."""
    short_lived = client_for("alice", [course_id], ttl_seconds=2)
    collector = Collector(short_lived.subscribe(course_id))
    try:
        await collector.wait_for(lambda c: c.error is not None, within=30)
    finally:
        await collector.close()
    assert collector.error is not None
    assert collector.error.code() is UNAUTHENTICATED, collector.error.details()
    assert "token expired" in (collector.error.details() or "")
    assert collector.messages == []
