"""The typed settings: env var parsing and the errors a misconfigured pod prints."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nextcampus_common.settings import JwtSettings, RedisSettings


def test_redis_nodes_come_comma_separated_from_the_environment(monkeypatch):
    monkeypatch.setenv("NEXTCAMPUS_REDIS_NODES", "10.0.0.1:7000, redis-1.redis:7001")
    settings = RedisSettings()
    assert settings.redis_startup_nodes() == [("10.0.0.1", 7000), ("redis-1.redis", 7001)]


@pytest.mark.parametrize("nodes", ["", "no-port", "host:", ":7000", "host:port"])
def test_bad_redis_nodes_are_refused(monkeypatch, nodes):
    monkeypatch.setenv("NEXTCAMPUS_REDIS_NODES", nodes)
    with pytest.raises(ValidationError):
        RedisSettings()


def test_unknown_fields_are_refused():
    with pytest.raises(ValidationError, match="redis_nodez"):
        RedisSettings(redis_nodez=["a:1"])


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({}, "got: none"),
        ({"jwt_secret": "x" * 40, "jwt_jwks_url": "http://127.0.0.1/jwks"}, "exactly one"),
        ({"jwt_secret": "short"}, "at least 32 characters"),
    ],
)
def test_exactly_one_jwt_key_source(monkeypatch, values, words):
    for name in ("NEXTCAMPUS_JWT_SECRET", "NEXTCAMPUS_JWT_JWKS_FILE", "NEXTCAMPUS_JWT_JWKS_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValidationError, match=words):
        JwtSettings(**values)


def test_secrets_do_not_show_in_reprs():
    settings = JwtSettings(jwt_secret="do-not-print-me-" * 3)
    assert "do-not-print-me" not in repr(settings)
