"""Identity over HTTP: how the web app signs in, and the built-in identity (login, refresh-token rotation, sign-out,
and the JWKS/OIDC discovery documents).

When PULSE_JWT_JWKS_URL points at an external provider the built-in endpoints answer 404: tokens come from there.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec
from joserfc.jwk import ECKey
from litestar import Request, Response, get, post
from litestar.params import JSONBody

from pulse.db import system_tx
from pulse.errors import NotFound
from pulse.fleet.keys import ALGORITHM, get_active_signing_key, public_jwks
from pulse.fleet.users import (
    UserRow,
    authenticate,
    issue_refresh_token,
    revoke_refresh_token,
    rotate_refresh_token,
)
from pulse.settings import Settings
from pulse.web.auth import MissingCredentials, issue_access_token
from pulse.web.context import tokens_of
from pulse.web.deps import EngineDep, NowDep, SettingsDep
from pulse.web.errors import error_specs
from pulse.web.ratelimit import rate_limit

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_BAD_LOGIN = "email or password is not correct"


class LoginRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    email: str
    password: str


class RefreshRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    refresh_token: str


class LogoutRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    refresh_token: str


class TokenPair(msgspec.Struct, kw_only=True):
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type, not a secret


class OpenIdConfiguration(msgspec.Struct, kw_only=True):
    issuer: str
    jwks_uri: str
    token_endpoint: str
    id_token_signing_alg_values_supported: list[str]
    response_types_supported: list[str]
    subject_types_supported: list[str]
    claims_supported: list[str]


class OidcClientConfig(msgspec.Struct, kw_only=True):
    """What the web app needs to sign in at the external provider with authorization code + PKCE."""

    issuer: str
    client_id: str
    scopes: list[str]


class SignInConfig(msgspec.Struct, kw_only=True):
    """How the web app signs in: `password` (the built-in form), `oidc` (the provider in `oidc`), or `none`
    (an external provider is configured but no web app client, PULSE_OIDC_CLIENT_ID)."""

    method: Literal["password", "oidc", "none"]
    oidc: OidcClientConfig | None = None


def _require_builtin(settings: SettingsDep) -> None:
    if settings.jwt_jwks_url:
        raise NotFound("the built-in identity is off: access tokens come from the identity provider "
                       "configured in PULSE_JWT_JWKS_URL")


def _token_pair(request: Request[Any, Any, Any], settings: Settings, now: datetime, user: UserRow,
                refresh_token: str, kid: str, key: ECKey) -> Response[TokenPair]:
    jwks = tokens_of(request).jwks
    if not jwks.knows(kid):
        jwks.expire()  # a key this process just made must validate at once, whatever the refetch pacing
    access = issue_access_token(settings, kid, key, user, now)
    return Response(TokenPair(access_token=access, refresh_token=refresh_token,
                              expires_in=settings.access_token_ttl_s), headers=NO_STORE)


@post("/auth/login", guards=[rate_limit("auth")], status_code=200, tags=["auth"],
      responses=error_specs(400, 401, 429))
async def login(request: Request[Any, Any, Any], data: JSONBody[LoginRequest], engine: EngineDep,
                settings: SettingsDep, now: NowDep) -> Response[TokenPair]:
    """Exchange email and password for an access token and a refresh token (rate-limited per address)."""
    _require_builtin(settings)
    async with system_tx(engine) as conn:
        user = await authenticate(conn, data.email, data.password, now=now)
        if user is None:
            raise MissingCredentials(_BAD_LOGIN)
        kid, key = await get_active_signing_key(conn, settings.secret_key_bytes, now=now)
        refresh = await issue_refresh_token(conn, user.user_id, user.tenant_id, settings.refresh_token_ttl_s, now)
    return _token_pair(request, settings, now, user, refresh, kid, key)


@post("/auth/refresh", guards=[rate_limit("auth")], status_code=200, tags=["auth"],
      responses=error_specs(400, 401, 429))
async def refresh(request: Request[Any, Any, Any], data: JSONBody[RefreshRequest], engine: EngineDep,
                  settings: SettingsDep, now: NowDep) -> Response[TokenPair]:
    """Exchange a refresh token for a new pair. Each refresh token works once; reusing one ends all sessions."""
    _require_builtin(settings)
    async with system_tx(engine) as conn:
        rotated = await rotate_refresh_token(conn, data.refresh_token, now)
        signing = await get_active_signing_key(conn, settings.secret_key_bytes, now=now) if rotated else None
    # Raised after commit: refusing a reused token revokes the user's sessions, and that must stick.
    if rotated is None or signing is None:
        raise MissingCredentials("refresh token is not valid (expired, revoked or already used)")
    user, new_refresh = rotated
    return _token_pair(request, settings, now, user, new_refresh, *signing)


@post("/auth/logout", guards=[rate_limit("auth")], status_code=204, tags=["auth"],
      responses=error_specs(400, 429))
async def logout(data: JSONBody[LogoutRequest], engine: EngineDep, settings: SettingsDep, now: NowDep) -> None:
    """Sign out: revoke this refresh token (one session; the user's others stay). Always 204, whatever the token."""
    _require_builtin(settings)
    async with system_tx(engine) as conn:
        await revoke_refresh_token(conn, data.refresh_token, now)


@get("/auth/config", tags=["auth"], sync_to_thread=False)
def sign_in_config(settings: SettingsDep) -> Response[SignInConfig]:
    """How the web app signs in: the built-in email and password form, or an external OIDC provider."""
    if not settings.jwt_jwks_url:
        config = SignInConfig(method="password")
    elif settings.web_oidc_client_id and settings.web_oidc_issuer:
        config = SignInConfig(method="oidc", oidc=OidcClientConfig(
            issuer=settings.web_oidc_issuer, client_id=settings.web_oidc_client_id,
            scopes=list(settings.oidc_scopes)))
    else:
        config = SignInConfig(method="none")
    return Response(config, headers={"Cache-Control": "no-cache"})


@get("/.well-known/jwks.json", tags=["auth"])
async def jwks(engine: EngineDep, settings: SettingsDep) -> Response[dict[str, Any]]:
    """The public keys that verify Pulse-issued access tokens."""
    _require_builtin(settings)
    async with system_tx(engine) as conn:
        document = await public_jwks(conn)
    return Response(document, headers={"Cache-Control": "public, max-age=300"})


@get("/.well-known/openid-configuration", tags=["auth"], sync_to_thread=False)
def openid_configuration(settings: SettingsDep) -> OpenIdConfiguration:
    """Discovery document of the built-in identity (issuer, JWKS location, token endpoint)."""
    _require_builtin(settings)
    base = settings.base_url
    return OpenIdConfiguration(
        issuer=settings.issuer, jwks_uri=f"{base}/.well-known/jwks.json", token_endpoint=f"{base}/auth/login",
        id_token_signing_alg_values_supported=[ALGORITHM], response_types_supported=["token"],
        subject_types_supported=["public"],
        claims_supported=["sub", "iss", "aud", "exp", "iat", "nbf", "email", "tenant_id", "roles"])


ROUTES = [login, refresh, logout, sign_in_config, jwks, openid_configuration]
