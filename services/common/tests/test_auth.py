"""JWT verification: HS256 and JWKS keys, the checked claims, the cache until expiry."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from nextcampus_common.auth import AuthError, TokenVerifier, bearer_token, issue_token
from nextcampus_common.settings import JwtSettings

SECRET = "s" * 40


def hs256_verifier(**overrides) -> TokenVerifier:
    return TokenVerifier(JwtSettings(jwt_secret=SECRET, **overrides))


def test_a_dev_token_verifies_to_its_identity():
    token = issue_token(SECRET, "alice", ["c1", "c2"], ["c2"])
    identity = hs256_verifier().verify(token)
    assert identity.user_id == "alice"
    assert identity.is_member("c1")
    assert identity.is_member("c2")
    assert not identity.is_member("c3")
    assert identity.may_moderate("c2")
    assert not identity.may_moderate("c1")


def test_moderating_a_course_makes_one_a_member_of_it():
    identity = hs256_verifier().verify(issue_token(SECRET, "teacher", [], ["c9"]))
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
def test_bad_tokens_are_refused_with_a_reason(token, words):
    with pytest.raises(AuthError, match=words):
        hs256_verifier().verify(token)


def test_courses_claim_must_be_a_list():
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
        hs256_verifier().verify(token)


def test_empty_issuer_and_audience_settings_turn_those_checks_off():
    verifier = hs256_verifier(jwt_issuer="", jwt_audience="")
    token = issue_token(SECRET, "alice", ["c1"], issuer=None, audience=None)
    assert verifier.verify(token).user_id == "alice"


def test_a_verified_token_is_cached_until_it_expires(monkeypatch):
    verifier = hs256_verifier(jwt_leeway_seconds=0)
    token = issue_token(SECRET, "alice", ["c1"], ttl_seconds=60)
    verifier.verify(token)
    calls = []
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: calls.append(a))
    assert verifier.verify(token).user_id == "alice"  # from the cache: no second decode
    assert calls == []
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(AuthError, match="expired"):
        verifier.verify(token)


def test_the_cache_is_bounded():
    verifier = hs256_verifier(jwt_cache_size=3)
    for i in range(10):
        verifier.verify(issue_token(SECRET, f"user{i}", ["c1"]))
    assert len(verifier._cache) == 3


@pytest.mark.parametrize(
    ("private_key", "algorithm"),
    [
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
    ],
    ids=["RS256", "ES256"],
)
def test_jwks_file_keys_verify_asymmetric_tokens(tmp_path, private_key, algorithm):
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
    assert verifier.verify(good).user_id == "alice"
    unknown_kid = jwt.encode(claims, private_key, algorithm=algorithm, headers={"kid": "k2"})
    with pytest.raises(AuthError, match="unknown signing key"):
        verifier.verify(unknown_kid)
    # An HS256 token signed with the public key as a secret (key confusion) is refused.
    with pytest.raises(AuthError):
        verifier.verify(issue_token("p" * 40, "alice", ["c1"]))


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
