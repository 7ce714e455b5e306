"""JWT verification: HS256 and JWKS keys, the checked claims, the cache until expiry, and
a JWKS URL that is slow, down, or asked about made-up key ids."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from nextcampus_common.auth import AuthError, TokenVerifier, bearer_token, issue_token
from nextcampus_common.settings import JwtSettings
from testing.plugin import JwksServer, SigningKey, jwks_of

SECRET = "s" * 40


def hs256_verifier(**overrides) -> TokenVerifier:
    return TokenVerifier(JwtSettings(jwt_secret=SECRET, **overrides))


async def test_a_dev_token_verifies_to_its_identity():
    token = issue_token(SECRET, "alice", ["c1", "c2"], ["c2"])
    identity = await hs256_verifier().verify(token)
    assert identity.user_id == "alice"
    assert identity.is_member("c1")
    assert identity.is_member("c2")
    assert not identity.is_member("c3")
    assert identity.may_moderate("c2")
    assert not identity.may_moderate("c1")


async def test_moderating_a_course_makes_one_a_member_of_it():
    identity = await hs256_verifier().verify(issue_token(SECRET, "teacher", [], ["c9"]))
    assert identity.is_member("c9")
    assert identity.may_moderate("c9")


@pytest.mark.parametrize(
    ("token", "words"),
    [
        (None, "missing token"),
        ("", "missing token"),
        ("garbage", "invalid token"),
        (issue_token("k" * 40, "alice", ["c1"]), "invalid token"),
        (issue_token(SECRET, "alice", ["c1"], now=time.time() - 90_000), "expired"),
        (issue_token(SECRET, "alice", ["c1"], audience="other"), "another audience"),
        (issue_token(SECRET, "alice", ["c1"], audience=None), "invalid token"),
        (issue_token(SECRET, "alice", ["c1"], issuer="evil"), "another issuer"),
        (issue_token(SECRET, "bad user!", ["c1"]), "claim 'sub'"),
        (issue_token(SECRET, "alice", ["bad course!"]), "claim 'courses'"),
        (
            jwt.encode({"sub": "alice", "aud": "nextcampus-chat", "iss": "nextcampus"}, SECRET),
            "exp",
        ),
        # "none" must never be accepted, whatever the payload claims.
        (jwt.encode({"sub": "alice", "exp": time.time() + 60}, None, algorithm="none"), "invalid"),
    ],
    ids=[
        "none",
        "empty",
        "garbage",
        "wrong-key",
        "expired",
        "wrong-audience",
        "no-audience",
        "wrong-issuer",
        "bad-sub",
        "bad-course",
        "no-exp",
        "alg-none",
    ],
)
async def test_bad_tokens_are_refused_with_a_reason(token, words):
    with pytest.raises(AuthError, match=words):
        await hs256_verifier().verify(token)


async def test_courses_claim_must_be_a_list():
    token = jwt.encode(
        {
            "sub": "alice",
            "exp": int(time.time()) + 60,
            "courses": "c1",
            "aud": "nextcampus-chat",
            "iss": "nextcampus",
        },
        SECRET,
    )
    with pytest.raises(AuthError, match="must be a list"):
        await hs256_verifier().verify(token)


async def test_empty_issuer_and_audience_settings_turn_those_checks_off():
    verifier = hs256_verifier(jwt_issuer="", jwt_audience="")
    token = issue_token(SECRET, "alice", ["c1"], issuer=None, audience=None)
    assert (await verifier.verify(token)).user_id == "alice"


async def test_a_verified_token_is_cached_until_it_expires(monkeypatch):
    verifier = hs256_verifier(jwt_leeway_seconds=0)
    token = issue_token(SECRET, "alice", ["c1"], ttl_seconds=60)
    await verifier.verify(token)
    calls = []
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: calls.append(a))
    assert (await verifier.verify(token)).user_id == "alice"  # from the cache: no second decode
    assert calls == []
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(AuthError, match="expired"):
        await verifier.verify(token)


async def test_the_cache_is_bounded():
    verifier = hs256_verifier(jwt_cache_size=3)
    for i in range(10):
        await verifier.verify(issue_token(SECRET, f"user{i}", ["c1"]))
    assert len(verifier._cache) == 3


@pytest.mark.parametrize(
    ("private_key", "algorithm"),
    [
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
    ],
    ids=["RS256", "ES256"],
)
async def test_jwks_file_keys_verify_asymmetric_tokens(tmp_path, private_key, algorithm):
    public_jwk = json.loads(
        jwt.algorithms.get_default_algorithms()[algorithm].to_jwk(private_key.public_key())
    )
    public_jwk.update(kid="k1", use="sig", alg=algorithm)
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [public_jwk]}))
    verifier = TokenVerifier(JwtSettings(jwt_jwks_file=jwks_file))
    claims = {
        "sub": "alice",
        "courses": ["c1"],
        "exp": int(time.time()) + 60,
        "aud": "nextcampus-chat",
        "iss": "nextcampus",
    }
    good = jwt.encode(claims, private_key, algorithm=algorithm, headers={"kid": "k1"})
    assert (await verifier.verify(good)).user_id == "alice"
    unknown_kid = jwt.encode(claims, private_key, algorithm=algorithm, headers={"kid": "k2"})
    with pytest.raises(AuthError, match="unknown signing key"):
        await verifier.verify(unknown_kid)
    # An HS256 token signed with the public key as a secret (key confusion) is refused.
    with pytest.raises(AuthError):
        await verifier.verify(issue_token("p" * 40, "alice", ["c1"]))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made_token(header: dict[str, object], secret: bytes = b"") -> str:
    """A token as an attacker writes it: any header, HS256-signed with `secret`."""
    claims = {"sub": "alice", "exp": int(time.time()) + 60}
    claims |= {"aud": "nextcampus-chat", "iss": "nextcampus"}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def lying_tokens(rsa: SigningKey, ec_key: SigningKey) -> dict[str, str]:
    """Tokens whose header names a key of the set with another key's algorithm, or a `kid`
    that is no key id at all."""
    public_pem = rsa.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        # Signed by the EC key, naming the RSA key: PyJWT raised TypeError on this one.
        "es256-on-an-rsa-kid": ec_key.token("alice", ["c1"], kid=rsa.kid),
        "rs256-on-an-ec-kid": rsa.token("alice", ["c1"], kid=ec_key.kid),
        # HMAC with the RSA public key as the secret: the classic key confusion.
        "hs256-on-an-rsa-kid": hand_made_token({"alg": "HS256", "kid": rsa.kid}, public_pem),
        "kid-is-a-list": hand_made_token({"alg": "RS256", "kid": [rsa.kid]}),
        "kid-is-a-number": hand_made_token({"alg": "RS256", "kid": 7}),
    }


@pytest.fixture(scope="module")
def ec_key() -> SigningKey:
    return SigningKey.generate("ec-1", "ES256")


@pytest.mark.parametrize(
    "kind",
    [
        "es256-on-an-rsa-kid",
        "rs256-on-an-ec-kid",
        "hs256-on-an-rsa-kid",
        "kid-is-a-list",
        "kid-is-a-number",
    ],
)
async def test_a_token_naming_another_keys_algorithm_is_refused(
    tmp_path, signing_key, ec_key, kind
):
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(jwks_of(signing_key, ec_key)))
    verifier = TokenVerifier(JwtSettings(jwt_jwks_file=jwks_file))
    assert (await verifier.verify(signing_key.token("alice", ["c1"]))).user_id == "alice"
    assert (await verifier.verify(ec_key.token("alice", ["c1"]))).user_id == "alice"
    with pytest.raises(AuthError, match="invalid token"):
        await verifier.verify(lying_tokens(signing_key, ec_key)[kind])


def url_verifier(server: JwksServer, **overrides) -> TokenVerifier:
    return TokenVerifier(JwtSettings(jwt_jwks_url=server.url, **overrides))


def made_up_kid_token(key: SigningKey) -> str:
    return key.token("mallory", ["c1"], kid=f"made-up-{uuid.uuid4().hex}")


async def test_made_up_key_ids_fetch_the_jwks_at_most_once_per_cooldown(jwks_server, signing_key):
    """A flood of tokens with made-up key ids costs one fetch per cooldown, whether the JWKS
    URL answers or fails (a failing one was asked again for every token)."""
    verifier = url_verifier(jwks_server, jwt_jwks_cooldown_seconds=3600)
    jwks_server.status = 503
    for _ in range(10):
        with pytest.raises(AuthError, match="signing keys unavailable"):
            await verifier.verify(made_up_kid_token(signing_key))
    refused = await asyncio.gather(
        *(verifier.verify(made_up_kid_token(signing_key)) for _ in range(10)),
        return_exceptions=True,
    )
    assert all(isinstance(r, AuthError) for r in refused), refused
    assert jwks_server.fetches == 1

    answering = url_verifier(jwks_server, jwt_jwks_cooldown_seconds=3600)
    jwks_server.status = 200
    assert (await answering.verify(signing_key.token("alice", ["c1"]))).user_id == "alice"
    for _ in range(10):
        with pytest.raises(AuthError, match="unknown signing key id"):
            await answering.verify(made_up_kid_token(signing_key))
    assert jwks_server.fetches == 2  # one per verifier
    # Known keys keep working meanwhile.
    assert (await answering.verify(signing_key.token("bob", ["c1"]))).user_id == "bob"


async def test_concurrent_tokens_share_the_one_fetch_in_flight(jwks_server, signing_key):
    verifier = url_verifier(jwks_server, jwt_jwks_cooldown_seconds=3600)
    jwks_server.hold()
    users = [f"user{n}" for n in range(10)]
    verifying = [
        asyncio.create_task(verifier.verify(signing_key.token(user, ["c1"]))) for user in users
    ]
    made_up = asyncio.create_task(verifier.verify(made_up_kid_token(signing_key)))
    await jwks_server.wait_until(lambda server: server.waiting == 1)
    # This test's own event loop runs while the fetch is held: it is not blocked.
    assert not any(task.done() for task in [*verifying, made_up])
    jwks_server.release()
    identities = await asyncio.gather(*verifying)
    assert [identity.user_id for identity in identities] == users
    with pytest.raises(AuthError, match="unknown signing key id"):
        await made_up
    assert jwks_server.fetches == 1


async def test_a_jwks_url_that_does_not_answer_fails_after_its_timeout(jwks_server, signing_key):
    verifier = url_verifier(
        jwks_server, jwt_jwks_timeout_seconds=0.2, jwt_jwks_cooldown_seconds=3600
    )
    jwks_server.hold()
    async with asyncio.timeout(20):
        with pytest.raises(AuthError, match="signing keys unavailable"):
            await verifier.verify(signing_key.token("alice", ["c1"]))
    # Within the cooldown the URL is not asked again: the refusal is immediate.
    with pytest.raises(AuthError, match="signing keys unavailable"):
        await verifier.verify(signing_key.token("alice", ["c1"]))
    assert jwks_server.fetches == 1


async def test_a_redirecting_jwks_url_is_a_failed_fetch(jwks_server, signing_key):
    """Keys come from the configured URL, not from wherever its answer points."""
    elsewhere = JwksServer(jwks_of(signing_key))
    try:
        jwks_server.status, jwks_server.location = 302, elsewhere.url
        verifier = url_verifier(jwks_server)
        with pytest.raises(AuthError, match="signing keys unavailable"):
            await verifier.verify(signing_key.token("alice", ["c1"]))
        assert elsewhere.fetches == 0
    finally:
        elsewhere.close()


async def test_a_rotated_key_is_fetched_once_the_cooldown_has_passed(jwks_server, signing_key):
    verifier = url_verifier(jwks_server, jwt_jwks_cooldown_seconds=0)
    assert (await verifier.verify(signing_key.token("alice", ["c1"]))).user_id == "alice"
    rotated = SigningKey.generate("ec-2", "ES256")
    jwks_server.jwks = jwks_of(signing_key, rotated)
    assert (await verifier.verify(rotated.token("bob", ["c1"]))).user_id == "bob"
    assert jwks_server.fetches == 2


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc  ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token(header, expected):
    assert bearer_token(header) == expected
