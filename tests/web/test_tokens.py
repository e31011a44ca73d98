"""Access-token validation: forged, altered and misaddressed tokens are refused; external IdP tokens work."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.clock import FrozenClock, utcnow
from pulse.fleet.keys import sign_jwt
from pulse.settings import Settings
from pulse.web.app import create_app
from tests.conftest import make_tenant
from tests.web.conftest import active_key, b64json, b64url, bearer, claims_for, insert_alert

ALERTS = "/api/v2/alerts"


def _hs256(signing_input: str, secret: bytes) -> str:
    return b64url(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())


def _public_pem(key: ECKey) -> bytes:
    return key.public_key.public_bytes(serialization.Encoding.PEM,  # type: ignore[union-attr]
                                       serialization.PublicFormat.SubjectPublicKeyInfo)


async def test_a_well_formed_token_is_accepted(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                               settings: Settings) -> None:
    """The control for the attacks below: the same construction, unaltered, is let in."""
    tenant = await make_tenant(engine)
    kid, key = await active_key(engine, settings)
    token = sign_jwt(key, kid, claims_for(settings, tenant_id=tenant.tenant_id, roles=["customer"]))
    assert (await client.get(ALERTS, headers=bearer(token))).status_code == 200


Forge = Callable[[str, ECKey, dict[str, Any], Settings], str]


def _alg_none(kid: str, key: ECKey, claims: dict[str, Any], settings: Settings) -> str:
    return f"{b64json({'alg': 'none', 'kid': kid, 'typ': 'JWT'})}.{b64json(claims)}."


def _alg_none_with_signature(kid: str, key: ECKey, claims: dict[str, Any], settings: Settings) -> str:
    return f"{b64json({'alg': 'None', 'kid': kid})}.{b64json(claims)}.{b64url(b'x')}"


def _hs256_with_public_pem(kid: str, key: ECKey, claims: dict[str, Any], settings: Settings) -> str:
    signing_input = f"{b64json({'alg': 'HS256', 'kid': kid, 'typ': 'JWT'})}.{b64json(claims)}"
    return f"{signing_input}.{_hs256(signing_input, _public_pem(key))}"


def _hs256_with_public_jwk(kid: str, key: ECKey, claims: dict[str, Any], settings: Settings) -> str:
    signing_input = f"{b64json({'alg': 'HS256', 'kid': kid, 'typ': 'JWT'})}.{b64json(claims)}"
    secret = json.dumps(key.as_dict(private=False)).encode()
    return f"{signing_input}.{_hs256(signing_input, secret)}"


def _rs256_header_on_ec_key(kid: str, key: ECKey, claims: dict[str, Any], settings: Settings) -> str:
    good = sign_jwt(key, kid, claims)
    _, payload, signature = good.split(".")
    return f"{b64json({'alg': 'RS256', 'kid': kid})}.{payload}.{signature}"


def _expired(kid: str, key: ECKey, claims: dict[str, Any], settings: Settings) -> str:
    now = int(time.time())
    return sign_jwt(key, kid, {**claims, "iat": now - 3600, "nbf": now - 3600, "exp": now - 120})


def _not_yet_valid(kid: str, key: ECKey, claims: dict[str, Any], settings: Settings) -> str:
    return sign_jwt(key, kid, {**claims, "nbf": int(time.time()) + 600})


def _issued_in_the_future(kid: str, key: ECKey, claims: dict[str, Any], settings: Settings) -> str:
    return sign_jwt(key, kid, {**claims, "iat": int(time.time()) + 600})


def _no_exp(kid: str, key: ECKey, claims: dict[str, Any], settings: Settings) -> str:
    return sign_jwt(key, kid, {k: v for k, v in claims.items() if k != "exp"})


def _wrong_issuer(kid: str, key: ECKey, claims: dict[str, Any], settings: Settings) -> str:
    return sign_jwt(key, kid, {**claims, "iss": "https://evil.example"})


def _wrong_audience(kid: str, key: ECKey, claims: dict[str, Any], settings: Settings) -> str:
    return sign_jwt(key, kid, {**claims, "aud": "someone-else"})


def _unknown_kid(kid: str, key: ECKey, claims: dict[str, Any], settings: Settings) -> str:
    stranger = ECKey.generate_key("P-256", private=True)
    return sign_jwt(stranger, "not-a-pulse-key", claims)


def _known_kid_other_key(kid: str, key: ECKey, claims: dict[str, Any], settings: Settings) -> str:
    stranger = ECKey.generate_key("P-256", private=True)
    return sign_jwt(stranger, kid, claims)


def _no_kid(kid: str, key: ECKey, claims: dict[str, Any], settings: Settings) -> str:
    return jwt.encode({"alg": "ES256"}, claims, key, algorithms=["ES256"])


def _tampered_payload(kid: str, key: ECKey, claims: dict[str, Any], settings: Settings) -> str:
    header, _, signature = sign_jwt(key, kid, claims).split(".")
    return f"{header}.{b64json({**claims, 'roles': ['customer', 'tenant-admin', 'operator-admin']})}.{signature}"


def _not_a_jwt(kid: str, key: ECKey, claims: dict[str, Any], settings: Settings) -> str:
    return "definitely-not-a-token"


@pytest.mark.parametrize("forge", [
    _alg_none, _alg_none_with_signature, _hs256_with_public_pem, _hs256_with_public_jwk, _rs256_header_on_ec_key,
    _expired, _not_yet_valid, _issued_in_the_future, _no_exp, _wrong_issuer, _wrong_audience, _unknown_kid,
    _known_kid_other_key, _no_kid, _tampered_payload, _not_a_jwt,
])
async def test_forged_or_invalid_tokens_are_401(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                settings: Settings, forge: Forge) -> None:
    tenant = await make_tenant(engine)
    kid, key = await active_key(engine, settings)
    token = forge(kid, key, claims_for(settings, tenant_id=tenant.tenant_id, roles=["customer"]), settings)

    response = await client.get(ALERTS, headers=bearer(token))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_tampered_tenant_claim_cannot_read_another_tenant(client: AsyncTestClient[Litestar],
                                                                engine: AsyncEngine, settings: Settings) -> None:
    mine, theirs = await make_tenant(engine), await make_tenant(engine)
    await insert_alert(engine, theirs.tenant_id)
    kid, key = await active_key(engine, settings)
    claims = claims_for(settings, tenant_id=mine.tenant_id, roles=["customer"])
    header, _, signature = sign_jwt(key, kid, claims).split(".")
    forged = f"{header}.{b64json({**claims, 'tenant_id': theirs.tenant_id})}.{signature}"

    response = await client.get(ALERTS, headers=bearer(forged))

    assert response.status_code == 401


@pytest.mark.parametrize("header", [None, "Basic dXNlcjpwYXNz", "Bearer", "Bearer    "])
async def test_missing_or_non_bearer_credentials_are_401(client: AsyncTestClient[Litestar],
                                                         header: str | None) -> None:
    response = await client.get(ALERTS, headers={"Authorization": header} if header else {})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


class _Jwks:
    """A real HTTP JWKS endpoint on loopback, in its own thread (the app under test blocks the test loop)."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                body = json.dumps(outer.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/realms/pulse/protocol/openid-connect/certs"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def publish(self, *keys: RSAKey) -> None:
        self.document = {"keys": [{**k.as_dict(private=False), "use": "sig", "alg": "RS256"} for k in keys]}


@pytest.fixture
def idp() -> Iterator[_Jwks]:
    server = _Jwks()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


ISSUER = "https://idp.example.test/realms/pulse"


def _keycloak_token(key: RSAKey, settings: Settings, tenant_id: str, now: int) -> str:
    claims = {"iss": ISSUER, "aud": ["account", settings.jwt_audience], "sub": "kc-user-1", "iat": now,
              "exp": now + 600, "azp": "pulse-spa", "email": "kc@example.test", "tenant_id": tenant_id,
              "realm_access": {"roles": ["offline_access", "customer", "uma_authorization"]}}
    return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=["RS256"])


async def test_external_identity_provider_tokens_use_the_same_checks(idp: _Jwks, settings: Settings,
                                                                     engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    alert_id = await insert_alert(engine, tenant.tenant_id)
    first = RSAKey.generate_key(2048, {"kid": "kc-1"}, private=True)
    second = RSAKey.generate_key(2048, {"kid": "kc-2"}, private=True)
    idp.publish(first)
    clock = FrozenClock(utcnow())
    now = int(clock.now().timestamp())
    external = settings.replace(jwt_jwks_url=idp.url, jwt_issuer=ISSUER)

    async with AsyncTestClient(app=create_app(external, clock=clock)) as client:
        ok = await client.get(ALERTS, headers=bearer(_keycloak_token(first, settings, tenant.tenant_id, now)))
        assert ok.status_code == 200
        assert [a["alert_id"] for a in ok.json()["items"]] == [alert_id]
        assert idp.fetches == 1

        # Pulse's own login is off: tokens come from the provider.
        login = await client.post("/auth/login", json={"email": "a@example.test", "password": "whatever-1"})
        assert login.status_code == 404

        # The provider rotates to a new key. An unknown kid refetches the JWKS, at most once per 30 s.
        idp.publish(first, second)
        rotated = bearer(_keycloak_token(second, settings, tenant.tenant_id, now))
        clock.advance(10)
        assert (await client.get(ALERTS, headers=rotated)).status_code == 401
        assert idp.fetches == 1
        clock.advance(21)
        assert (await client.get(ALERTS, headers=rotated)).status_code == 200
        assert idp.fetches == 2

        # Tokens with kids nobody published do not hammer the provider.
        stranger = RSAKey.generate_key(2048, {"kid": "kc-3"}, private=True)
        unknown = bearer(_keycloak_token(stranger, settings, tenant.tenant_id, now))
        for _ in range(3):
            assert (await client.get(ALERTS, headers=unknown)).status_code == 401
        assert idp.fetches == 2
        clock.advance(31)
        assert (await client.get(ALERTS, headers=unknown)).status_code == 401
        assert idp.fetches == 3

        # The provider's own key, but another issuer (e.g. another realm): refused.
        claims = jwt.decode(_keycloak_token(first, settings, tenant.tenant_id, now), first).claims
        claims["iss"] = "https://idp.example.test/realms/other"
        other_realm = jwt.encode({"alg": "RS256", "kid": "kc-1"}, claims, first, algorithms=["RS256"])
        assert (await client.get(ALERTS, headers=bearer(other_realm))).status_code == 401


async def test_unreachable_identity_provider_is_503_not_500(settings: Settings, engine: AsyncEngine) -> None:
    from tests.conftest import free_port

    external = settings.replace(jwt_jwks_url=f"http://127.0.0.1:{free_port()}/certs", jwt_issuer=ISSUER)
    key = RSAKey.generate_key(2048, {"kid": "kc-1"}, private=True)
    async with AsyncTestClient(app=create_app(external)) as client:
        response = await client.get(ALERTS, headers=bearer(_keycloak_token(key, settings, "t-x", int(time.time()))))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"

