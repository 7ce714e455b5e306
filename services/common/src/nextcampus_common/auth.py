"""JWT verification shared by every pod, and dev-token minting for the local stack.

Claims: `sub` (user id), `courses` (course ids the user belongs to), `moderates` (course ids
where the user may delete anyone's message), `exp` (required), `iss` and `aud` (checked when
configured). Verified tokens are cached until they expire, so a busy connection pays for the
signature check once.

Keys from a JWKS URL are fetched off the event loop, with a short timeout, at most one fetch
at a time and at most one per cooldown: a token with a made-up key id costs nothing but a
dictionary lookup, however many arrive.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt

from nextcampus_common.ids import InvalidId, check_course_id, check_user_id
from nextcampus_common.logs import get_logger
from nextcampus_common.settings import JwtSettings

log = get_logger(__name__)

ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "ES256", "EdDSA"})
# A key set is a few kilobytes; anything much larger is not one.
MAX_JWKS_BYTES = 1 << 20


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


def usable_keys(jwks: object) -> dict[str, jwt.PyJWK]:
    """The asymmetric keys of a JWKS document by key id ("" for a key without one)."""
    if not isinstance(jwks, dict):
        raise ValueError("a JWKS must be a JSON object with `keys`")
    keys = jwt.PyJWKSet.from_dict(jwks).keys
    # A symmetric key in a key set would let anyone who can read the set sign tokens.
    return {k.key_id or "": k for k in keys if k.algorithm_name in ASYMMETRIC_ALGORITHMS}


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Keys come from the configured URL only: a redirect is a failed fetch, not a hop to
    wherever the answer points."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def download_jwks(url: str, timeout_seconds: float) -> dict[str, jwt.PyJWK]:
    """One blocking GET of a JWKS URL (run it in a thread)."""
    opener = urllib.request.build_opener(_NoRedirects())
    with opener.open(url, timeout=timeout_seconds) as response:
        body: bytes = response.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
    return usable_keys(json.loads(body))


class TokenVerifier:
    """Verifies tokens against the configured key and caches each verified token until `exp`."""

    def __init__(self, settings: JwtSettings) -> None:
        self._settings = settings
        self._cache: OrderedDict[str, Identity] = OrderedDict()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._jwks_url = settings.jwt_jwks_url
        # The one fetch of the JWKS URL in flight, and when the last one started and succeeded
        # (time.monotonic()).
        self._fetch: asyncio.Task[None] | None = None
        self._fetch_started = -math.inf
        self._fetched_at = -math.inf
        self._fetch_error = ""
        if settings.jwt_jwks_file is not None:
            self._keys = usable_keys(json.loads(settings.jwt_jwks_file.read_text()))

    async def verify(self, token: str | None) -> Identity:
        """The identity of a valid token; AuthError for anything else. Awaits only when the
        token names a key id this process has not seen (then the JWKS URL is asked, at most
        once per cooldown)."""
        if not token:
            raise AuthError("missing token")
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None:
            if cached.expires_at + self._settings.jwt_leeway_seconds > now:
                return cached
            del self._cache[token]
            raise AuthError("token expired")
        if self._settings.jwt_secret is not None:
            identity = self._decode(token, self._settings.jwt_secret.get_secret_value(), "HS256")
        else:
            key = await self._key_for(token)
            identity = self._decode(token, key.key, key.algorithm_name)
        if self._settings.jwt_cache_size:
            self._cache[token] = identity
            if len(self._cache) > self._settings.jwt_cache_size:
                self._cache.popitem(last=False)
        return identity

    async def _key_for(self, token: str) -> jwt.PyJWK:
        try:
            kid = jwt.get_unverified_header(token).get("kid") or ""
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        if not isinstance(kid, str):
            raise AuthError("invalid token: the header's `kid` must be a string")
        key = self._known_key(kid)
        if self._jwks_url is not None:
            if key is None:
                await self._refresh_keys()
                key = self._known_key(kid)
            elif time.monotonic() - self._fetched_at > self._settings.jwt_jwks_refresh_seconds:
                self._start_fetch()  # in the background: the key in hand is still good
        if key is None:
            if not self._keys and self._fetch_error:
                raise AuthError(f"signing keys unavailable: {self._fetch_error}")
            raise AuthError(f"unknown signing key id {kid[:64]!r}")
        return key

    def _known_key(self, kid: str) -> jwt.PyJWK | None:
        key = self._keys.get(kid)
        if key is None and not kid and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return key

    async def _refresh_keys(self) -> None:
        """Wait for the fetch in flight, or start one unless the last began within the
        cooldown (then the keys in hand are all there is)."""
        if self._fetch is None:
            self._start_fetch()
        if self._fetch is not None:
            # Shielded: a caller that gives up does not cancel the others' fetch.
            await asyncio.shield(self._fetch)

    def _start_fetch(self) -> None:
        started = time.monotonic()
        cooldown = self._settings.jwt_jwks_cooldown_seconds
        if self._fetch is not None or started - self._fetch_started < cooldown:
            return
        self._fetch_started = started
        self._fetch = fetch = asyncio.get_running_loop().create_task(self._fetch_keys())

        def forget(_task: asyncio.Task[None]) -> None:
            if self._fetch is fetch:
                self._fetch = None

        fetch.add_done_callback(forget)

    async def _fetch_keys(self) -> None:
        assert self._jwks_url is not None
        timeout = self._settings.jwt_jwks_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                # A thread: urllib blocks, and the event loop serves everyone else meanwhile.
                keys = await asyncio.to_thread(download_jwks, self._jwks_url, timeout)
        except (OSError, http.client.HTTPException, ValueError, jwt.PyJWTError) as exc:
            # The keys in hand stay in use; the next fetch comes after the cooldown.
            self._fetch_error = f"{type(exc).__name__}: {exc}"[:200]
            log.warning("cannot fetch the JWKS", url=self._jwks_url, error=self._fetch_error)
        else:
            self._keys, self._fetched_at, self._fetch_error = keys, time.monotonic(), ""
            log.info("fetched the JWKS", url=self._jwks_url, keys=len(keys))

    def _decode(self, token: str, key: Any, algorithm: str) -> Identity:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                # Only the key's own algorithm: a token naming another (an ES256 header on an
                # RSA key's id, HS256 on a public key) is refused, never tried with this key.
                algorithms=[algorithm],
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
