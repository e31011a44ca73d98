"""Who is calling: Bearer JWT validation against a JWKS (built-in or external), principals, role guards.

One code path validates every access token, whether Pulse issued it (built-in identity, keys in the
database) or an external OIDC provider did (PULSE_JWT_JWKS_URL). Only RS256 and ES256 are accepted,
the `kid` must name a key in the JWKS, and iss/aud/exp/nbf/iat are checked with a small leeway.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import ClaimError, ExpiredTokenError, JoseError, MissingClaimError
from joserfc.jwk import ECKey, JWKRegistry, RSAKey
from joserfc.jwt import JWTClaimsRegistry
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from sqlalchemy.exc import SQLAlchemyError

from pulse.clock import Clock
from pulse.crypto import hash_token, tokens_equal
from pulse.errors import Forbidden
from pulse.fleet.keys import sign_jwt
from pulse.fleet.users import ROLES, UserRow
from pulse.settings import Settings
from pulse.web.context import context_of, tokens_of
from pulse.web.errors import HttpError, Unavailable

log = logging.getLogger("pulse.web.auth")

ALLOWED_ALGORITHMS = frozenset({"RS256", "ES256"})
LEEWAY_S = 30
JWKS_REFETCH_MIN_S = 30.0
JWKS_MAX_AGE_S = 300.0
MAX_TOKEN_BYTES = 8192
_PRINCIPAL_KEY = "pulse_principal"

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]
JwksFetcher = Callable[[], Awaitable[dict[str, Any]]]
VerifyKey = ECKey | RSAKey


class MissingCredentials(HttpError):
    code = "unauthorized"
    status = 401


class InvalidToken(HttpError):
    code = "invalid_token"
    status = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


@dataclass(frozen=True)
class Principal:
    """The caller of a request, from a validated access token. The tenant comes only from here."""

    subject: str
    email: str | None
    tenant_id: str | None
    roles: frozenset[str]

    def has_any_role(self, roles: Iterable[str]) -> bool:
        return not self.roles.isdisjoint(roles)

    @property
    def actor(self) -> str:
        """Who the caller is in audit rows and alert events: the token's email, else its subject."""
        return self.email or self.subject


class JwksCache:
    """Verification keys by kid, refetched when older than `max_age_s` (so retired keys stop working)
    and on an unknown kid, but never more than once per `min_refetch_s` for unknown kids."""

    def __init__(self, fetch: JwksFetcher, clock: Clock, *, min_refetch_s: float = JWKS_REFETCH_MIN_S,
                 max_age_s: float = JWKS_MAX_AGE_S) -> None:
        self._fetch = fetch
        self._clock = clock
        self._min_refetch_s = min_refetch_s
        self._max_age_s = max_age_s
        self._keys: dict[str, VerifyKey] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    def expire(self) -> None:
        """Refetch on next use (e.g. this process just made a key that must validate at once)."""
        self._fetched_at = None

    def knows(self, kid: str) -> bool:
        return kid in self._keys

    def _fresh(self, now: float) -> bool:
        return self._fetched_at is not None and now - self._fetched_at < self._max_age_s

    async def key_for(self, kid: str) -> VerifyKey | None:
        if kid in self._keys and self._fresh(self._clock.monotonic()):
            return self._keys[kid]
        async with self._lock:
            now = self._clock.monotonic()
            age = None if self._fetched_at is None else now - self._fetched_at
            if age is not None and age < self._max_age_s:
                if kid in self._keys:
                    return self._keys[kid]
                if age < self._min_refetch_s:
                    return None
            self._fetched_at = now
            try:
                document = await self._fetch()
            except (httpx.HTTPError, ValueError, OSError, SQLAlchemyError) as exc:
                log.warning("fetching the JWKS failed: %s", exc)
                if not self._keys:
                    raise Unavailable("the signing keys that verify access tokens cannot be loaded; "
                                      "try again") from exc
                return self._keys.get(kid)  # keep trusting what we had while the source is down
            self._keys = parse_jwks(document)
            return self._keys.get(kid)


def parse_jwks(document: Any) -> dict[str, VerifyKey]:
    """Signature keys (RSA, EC P-256) by kid; encryption keys and unusable entries are skipped."""
    keys: dict[str, VerifyKey] = {}
    entries = document.get("keys") if isinstance(document, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str) or entry.get("use") == "enc":
            continue
        if entry.get("kty") not in ("RSA", "EC"):
            continue
        try:
            key = JWKRegistry.import_key(entry)
        except (JoseError, ValueError, TypeError) as exc:
            log.warning("skipping JWKS key %s: %s", entry.get("kid"), exc)
            continue
        if isinstance(key, ECKey | RSAKey) and not key.is_private:
            keys[entry["kid"]] = key
    return keys


def _b64json(segment: str) -> Any:
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    return json.loads(raw)


def _key_fits(alg: str, key: VerifyKey) -> bool:
    if alg == "RS256":
        return isinstance(key, RSAKey)
    return isinstance(key, ECKey) and key.curve_name == "P-256"


class TokenValidator:
    """Turns a Bearer token into a Principal or raises InvalidToken (401)."""

    def __init__(self, *, issuer: str, audience: str, jwks: JwksCache, clock: Clock,
                 leeway_s: int = LEEWAY_S) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks = jwks
        self._clock = clock
        self._leeway_s = leeway_s

    async def validate(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("token is too large")
        parts = token.split(".")
        if len(parts) != 3 or not all(parts):
            raise InvalidToken("token is not a signed JWT")
        try:
            header = _b64json(parts[0])
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidToken("token header is not valid base64url JSON") from exc
        if not isinstance(header, dict):
            raise InvalidToken("token header is not a JSON object")
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise InvalidToken(f"token algorithm {alg!r} is not accepted (use RS256 or ES256)")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("token header has no kid")
        key = await self.jwks.key_for(kid)
        if key is None:
            raise InvalidToken("token is signed by an unknown key")
        if not _key_fits(alg, key):
            raise InvalidToken(f"key {kid} cannot verify {alg}")
        try:
            decoded = jwt.decode(token, key, algorithms=[alg])
        except JoseError as exc:
            raise InvalidToken("token signature is invalid") from exc
        claims = decoded.claims
        registry = JWTClaimsRegistry(
            now=int(self._clock.now().timestamp()), leeway=self._leeway_s,
            iss={"essential": True, "value": self.issuer}, aud={"essential": True, "value": self.audience},
            exp={"essential": True}, sub={"essential": True})
        try:
            registry.validate(claims)
        except ExpiredTokenError as exc:
            raise InvalidToken("token has expired") from exc
        except MissingClaimError as exc:
            raise InvalidToken(f"token lacks claim {exc.claim}") from exc
        except ClaimError as exc:
            raise InvalidToken(f"token claim {exc.claim} is not acceptable") from exc
        return principal_from_claims(claims)


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """Roles come from Keycloak's `realm_access.roles` and/or a top-level `roles` list; unknown ones are dropped."""
    found: set[str] = set()
    realm = claims.get("realm_access")
    for source in (realm.get("roles") if isinstance(realm, dict) else None, claims.get("roles")):
        if isinstance(source, list):
            found.update(r for r in source if isinstance(r, str))
    tenant_id = claims.get("tenant_id")
    email = claims.get("email")
    return Principal(subject=str(claims["sub"]), email=email if isinstance(email, str) else None,
                     tenant_id=tenant_id if isinstance(tenant_id, str) and tenant_id else None,
                     roles=frozenset(found & ROLES))


def access_token_claims(settings: Settings, user: UserRow, now: datetime) -> dict[str, Any]:
    """The claims of a built-in access token: what TokenValidator expects from any issuer."""
    issued = int(now.timestamp())
    claims: dict[str, Any] = {
        "iss": settings.issuer, "aud": settings.jwt_audience, "sub": str(user.user_id),
        "iat": issued, "nbf": issued, "exp": issued + settings.access_token_ttl_s,
        "email": user.email, "roles": sorted(user.roles),
    }
    if user.tenant_id:
        claims["tenant_id"] = user.tenant_id
    return claims


def issue_access_token(settings: Settings, kid: str, private_key: ECKey, user: UserRow, now: datetime) -> str:
    return sign_jwt(private_key, kid, access_token_claims(settings, user, now))


def http_jwks_fetcher(client: httpx.AsyncClient, url: str) -> JwksFetcher:
    """Fetch an external provider's JWKS (e.g. Keycloak's .../protocol/openid-connect/certs)."""

    async def fetch() -> dict[str, Any]:
        response = await client.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        document = response.json()
        if not isinstance(document, dict):
            raise ValueError("JWKS is not a JSON object")
        return document

    return fetch


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    header = connection.headers.get("authorization")
    if not header:
        raise MissingCredentials("this endpoint needs an 'Authorization: Bearer <access token>' header",
                                 headers={"WWW-Authenticate": "Bearer"})
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise MissingCredentials("the Authorization header must be 'Bearer <access token>'",
                                 headers={"WWW-Authenticate": "Bearer"})
    return token.strip()


async def authenticate_connection(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The request's Principal (validated once per request, then cached on the request state)."""
    state = connection.scope.setdefault("state", {})  # type: ignore[typeddict-item]
    cached = state.get(_PRINCIPAL_KEY)
    if isinstance(cached, Principal):
        return cached
    principal = await tokens_of(connection).validate(bearer_token(connection))
    state[_PRINCIPAL_KEY] = principal
    return principal


def require_roles(*roles: str) -> Guard:
    """A guard: the caller must present a valid token holding at least one of `roles`."""
    wanted = frozenset(roles)
    unknown = wanted - ROLES
    if not wanted or unknown:
        raise ValueError(f"require_roles needs known roles, got {sorted(unknown) or 'none'}")

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = await authenticate_connection(connection)
        if not principal.has_any_role(wanted):
            raise Forbidden(f"this endpoint needs one of the roles {', '.join(sorted(wanted))}",
                            details={"required_roles": sorted(wanted)})

    guard.__name__ = f"require_roles({', '.join(sorted(wanted))})"
    guard.required_roles = wanted  # type: ignore[attr-defined]  # read by the route inventory (docs, tests)
    return guard


async def require_admin_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """A guard for /api/admin: the X-Admin-Key header must equal PULSE_ADMIN_KEY (constant-time)."""
    presented = connection.headers.get("x-admin-key")
    if not presented:
        raise MissingCredentials("this endpoint needs the X-Admin-Key header")
    # Compare digests: equal lengths, so the comparison time does not hint at the key's length either.
    if not tokens_equal(hash_token(presented), hash_token(context_of(connection).settings.admin_key)):
        raise MissingCredentials("X-Admin-Key is not valid")
