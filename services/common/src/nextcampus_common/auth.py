"""JWT verification shared by every pod, and dev-token minting for the local stack.

Claims: `sub` (user id), `courses` (course ids the user belongs to), `moderates` (course ids
where the user may delete anyone's message), `exp` (required), `iss` and `aud` (checked when
configured). Verified tokens are cached until they expire, so a busy connection pays for the
signature check once.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt

from nextcampus_common.ids import InvalidId, check_course_id, check_user_id
from nextcampus_common.settings import JwtSettings

ASYMMETRIC_ALGORITHMS = ["RS256", "ES256", "EdDSA"]


class AuthError(Exception):
    """The token is missing, malformed, expired, or not for this service."""


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    courses: frozenset[str]
    moderates: frozenset[str]
    expires_at: float  # seconds since the epoch

    def is_member(self, course_id: str) -> bool:
        return course_id in self.courses or course_id in self.moderates

    def may_moderate(self, course_id: str) -> bool:
        return course_id in self.moderates


def bearer_token(header_value: str | None) -> str | None:
    """The token of an `Authorization: Bearer …` value (None when absent or another scheme)."""
    if not header_value:
        return None
    scheme, _, token = header_value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _course_list(claims: dict[str, Any], name: str) -> frozenset[str]:
    value = claims.get(name, [])
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise AuthError(f"claim {name!r} must be a list of course ids")
    try:
        return frozenset(check_course_id(c) for c in value)
    except InvalidId as exc:
        raise AuthError(f"claim {name!r}: {exc}") from exc


class TokenVerifier:
    """Verifies tokens against the configured key and caches each verified token until `exp`."""

    def __init__(self, settings: JwtSettings) -> None:
        self._settings = settings
        self._cache: OrderedDict[str, Identity] = OrderedDict()
        self._jwks_client: jwt.PyJWKClient | None = None
        self._jwks_keys: dict[str, jwt.PyJWK] = {}
        if settings.jwt_secret is not None:
            self._algorithms = ["HS256"]
        else:
            self._algorithms = ASYMMETRIC_ALGORITHMS
            if settings.jwt_jwks_file is not None:
                jwks = json.loads(settings.jwt_jwks_file.read_text())
                self._jwks_keys = {k.key_id or "": k for k in jwt.PyJWKSet.from_dict(jwks).keys}
            else:
                assert settings.jwt_jwks_url is not None
                self._jwks_client = jwt.PyJWKClient(settings.jwt_jwks_url, cache_keys=True)

    def _key_for(self, token: str) -> Any:
        if self._settings.jwt_secret is not None:
            return self._settings.jwt_secret.get_secret_value()
        if self._jwks_client is not None:
            # The URL client fetches synchronously; it caches keys, so this is rare.
            return self._jwks_client.get_signing_key_from_jwt(token).key
        kid = jwt.get_unverified_header(token).get("kid") or ""
        if kid not in self._jwks_keys:
            if len(self._jwks_keys) == 1 and not kid:
                return next(iter(self._jwks_keys.values())).key
            raise AuthError(f"unknown signing key id {kid!r}")
        return self._jwks_keys[kid].key

    def verify(self, token: str | None) -> Identity:
        if not token:
            raise AuthError("missing token")
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None:
            if cached.expires_at + self._settings.jwt_leeway_seconds > now:
                return cached
            del self._cache[token]
            raise AuthError("token expired")
        identity = self._verify_uncached(token)
        if self._settings.jwt_cache_size:
            self._cache[token] = identity
            if len(self._cache) > self._settings.jwt_cache_size:
                self._cache.popitem(last=False)
        return identity

    def _verify_uncached(self, token: str) -> Identity:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key_for(token),
                algorithms=self._algorithms,
                audience=self._settings.jwt_audience,
                issuer=self._settings.jwt_issuer,
                leeway=self._settings.jwt_leeway_seconds,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": self._settings.jwt_audience is not None,
                    "verify_iss": self._settings.jwt_issuer is not None,
                },
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError("token is for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthError("token is from another issuer") from exc
        except (jwt.PyJWTError, ValueError) as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        try:
            user_id = check_user_id(claims["sub"])
        except InvalidId as exc:
            raise AuthError(f"claim 'sub': {exc}") from exc
        return Identity(
            user_id=user_id,
            courses=_course_list(claims, "courses"),
            moderates=_course_list(claims, "moderates"),
            expires_at=float(claims["exp"]),
        )


def issue_token(
    secret: str,
    user_id: str,
    courses: Iterable[str],
    moderates: Iterable[str] = (),
    *,
    ttl_seconds: int = 86400,
    issuer: str | None = "nextcampus",
    audience: str | None = "nextcampus-chat",
    now: float | None = None,
) -> str:
    """An HS256 token for development and tests (production tokens come from the platform)."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "courses": sorted(set(courses)),
        "moderates": sorted(set(moderates)),
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")
