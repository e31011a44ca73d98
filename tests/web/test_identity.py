"""Built-in identity: login, refresh rotation with reuse detection, rate limits, discovery, signing keys."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.clock import FrozenClock, utcnow
from pulse.db import system_tx
from pulse.errors import Conflict, SettingsError, ValidationError
from pulse.fleet.keys import retire_signing_key
from pulse.fleet.users import authenticate, create_user, issue_refresh_token, rotate_refresh_token
from pulse.settings import Settings
from pulse.web.app import create_app
from tests.conftest import make_tenant
from tests.web.conftest import PASSWORD, active_key, bearer, login, make_user


async def test_login_returns_tokens_that_open_the_tenant_api(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                            settings: Settings) -> None:
    tenant = await make_tenant(engine)
    email, user_id = await make_user(engine, tenant.tenant_id, roles=("customer", "tenant-admin"))

    response = await client.post("/auth/login", json={"email": email.upper(), "password": PASSWORD})

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == settings.access_token_ttl_s
    assert body["refresh_token"].startswith("rt_")
    jwks = KeySet.import_key_set((await client.get("/.well-known/jwks.json")).json())
    claims = jwt.decode(body["access_token"], jwks, algorithms=["ES256"]).claims
    assert claims["iss"] == settings.issuer and claims["aud"] == settings.jwt_audience
    assert claims["sub"] == str(user_id) and claims["tenant_id"] == tenant.tenant_id
    assert sorted(claims["roles"]) == ["customer", "tenant-admin"] and claims["email"] == email
    assert claims["exp"] - claims["iat"] == settings.access_token_ttl_s
    assert (await client.get("/api/v2/alerts", headers=bearer(body["access_token"]))).status_code == 200


async def test_unknown_user_and_wrong_password_get_the_same_401(client: AsyncTestClient[Litestar],
                                                                 engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    email, _ = await make_user(engine, tenant.tenant_id)

    wrong = await client.post("/auth/login", json={"email": email, "password": "not-the-password"})
    unknown = await client.post("/auth/login", json={"email": "nobody@example.test", "password": PASSWORD})

    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"] == unknown.json()["error"]
    assert wrong.json()["error"]["code"] == "unauthorized"


async def test_inactive_user_cannot_log_in(client: AsyncTestClient[Litestar], engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    email, user_id = await make_user(engine, tenant.tenant_id)
    async with system_tx(engine) as conn:
        await conn.execute(text("UPDATE users SET is_active = false WHERE user_id = :u"), {"u": user_id})

    response = await client.post("/auth/login", json={"email": email, "password": PASSWORD})

    assert response.status_code == 401


async def test_refresh_rotates_and_a_reused_token_ends_every_session(client: AsyncTestClient[Litestar],
                                                                     engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    email, _ = await make_user(engine, tenant.tenant_id)
    first = await login(client, email)

    rotated = await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert rotated.status_code == 200
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await client.get("/api/v2/alerts", headers=bearer(second["access_token"]))).status_code == 200

    reused = await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reused.status_code == 401
    # The reuse means someone else holds a copy: the legitimate newer token is revoked too.
    after = await client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert after.status_code == 401


async def test_garbage_refresh_token_is_401(client: AsyncTestClient[Litestar]) -> None:
    response = await client.post("/auth/refresh", json={"refresh_token": "rt_not-a-real-token"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


async def test_expired_refresh_token_is_refused(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    _, user_id = await make_user(engine, tenant.tenant_id)
    now = utcnow()
    async with system_tx(engine) as conn:
        token = await issue_refresh_token(conn, user_id, tenant.tenant_id, 300, now)
        assert await rotate_refresh_token(conn, token, now + timedelta(seconds=301)) is None
        fresh = await issue_refresh_token(conn, user_id, tenant.tenant_id, 300, now)
        result = await rotate_refresh_token(conn, fresh, now + timedelta(seconds=10))
    assert result is not None and result[0].user_id == user_id


async def test_login_is_rate_limited_per_address(client: AsyncTestClient[Litestar]) -> None:
    for _ in range(10):
        response = await client.post("/auth/login", json={"email": "x@example.test", "password": "wrong-password"})
        assert response.status_code == 401

    limited = await client.post("/auth/login", json={"email": "x@example.test", "password": "wrong-password"})

    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 60


async def test_rate_limit_window_slides(settings: Settings, engine: AsyncEngine) -> None:
    clock = FrozenClock(utcnow())
    async with AsyncTestClient(app=create_app(settings, clock=clock)) as client:
        for _ in range(10):
            await client.post("/auth/refresh", json={"refresh_token": "rt_x"})
        assert (await client.post("/auth/refresh", json={"refresh_token": "rt_x"})).status_code == 429
        clock.advance(61)
        assert (await client.post("/auth/refresh", json={"refresh_token": "rt_x"})).status_code == 401


async def test_discovery_documents_describe_the_builtin_identity(client: AsyncTestClient[Litestar],
                                                                 engine: AsyncEngine, settings: Settings) -> None:
    kid, _ = await active_key(engine, settings)

    config = (await client.get("/.well-known/openid-configuration")).json()
    jwks = (await client.get("/.well-known/jwks.json")).json()

    assert config["issuer"] == settings.issuer
    assert config["jwks_uri"] == f"{settings.base_url}/.well-known/jwks.json"
    assert config["token_endpoint"] == f"{settings.base_url}/auth/login"
    assert config["id_token_signing_alg_values_supported"] == ["ES256"]
    published = {k["kid"]: k for k in jwks["keys"]}
    assert published[kid]["kty"] == "EC" and published[kid]["crv"] == "P-256"
    assert all("d" not in k for k in jwks["keys"])  # never the private part


async def test_private_key_is_stored_encrypted(engine: AsyncEngine, settings: Settings) -> None:
    kid, key = await active_key(engine, settings)
    async with system_tx(engine) as conn:
        stored = (await conn.execute(text("SELECT private_jwk_encrypted FROM signing_keys WHERE kid = :k"),
                                     {"k": kid})).scalar_one()
    private_d = key.as_dict(private=True)["d"]
    assert private_d not in stored and stored.startswith("v1:")


async def test_retired_key_stops_validating_and_login_makes_a_new_one(settings: Settings,
                                                                      engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    email, _ = await make_user(engine, tenant.tenant_id)
    clock = FrozenClock(utcnow())
    async with AsyncTestClient(app=create_app(settings, clock=clock)) as client:
        old = await login(client, email)
        old_kid, _ = await active_key(engine, settings)
        async with system_tx(engine) as conn:
            assert await retire_signing_key(conn, old_kid, now=clock.now())
        clock.advance(301)  # past the JWKS cache age

        assert (await client.get("/api/v2/alerts", headers=bearer(old["access_token"]))).status_code == 401
        new = await login(client, email)
        assert (await client.get("/api/v2/alerts", headers=bearer(new["access_token"]))).status_code == 200
        kids = {k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]}
        assert old_kid not in kids


@pytest.mark.parametrize(("change", "field"), [
    ({"email": "not-an-email"}, "email"), ({"roles": ["root"]}, "roles"), ({"roles": []}, "roles"),
    ({"password": "short"}, "password"), ({"tenant_id": None}, "tenant_id"),
])
async def test_create_user_refuses_bad_input_naming_the_field(engine: AsyncEngine, change: dict[str, Any],
                                                              field: str) -> None:
    tenant = await make_tenant(engine)
    args: dict[str, Any] = {"tenant_id": tenant.tenant_id, "email": f"ok-{tenant.tenant_id}@example.test",
                            "password": PASSWORD, "roles": ["customer"], **change}
    with pytest.raises(ValidationError) as exc:
        async with system_tx(engine) as conn:
            await create_user(conn, **args)
    assert exc.value.field == field


async def test_emails_are_unique_regardless_of_case_and_operators_have_no_tenant(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    email, _ = await make_user(engine, tenant.tenant_id)
    with pytest.raises(Conflict) as exc:
        async with system_tx(engine) as conn:
            await create_user(conn, tenant_id=tenant.tenant_id, email=email.upper(), password=PASSWORD,
                              roles=["customer"])
    assert exc.value.details["field"] == "email"

    async with system_tx(engine) as conn:
        operator = await create_user(conn, tenant_id=None, email=f"op-{tenant.tenant_id}@example.test",
                                     password=PASSWORD, roles=["operator"])
        user = await authenticate(conn, f"OP-{tenant.tenant_id}@example.test", PASSWORD)
        nobody = await authenticate(conn, f"op-{tenant.tenant_id}@example.test", "wrong-password")
    assert user is not None and user.user_id == operator and user.tenant_id is None
    assert user.roles == ("operator",) and nobody is None


async def test_logout_ends_that_session_and_leaves_the_users_others(client: AsyncTestClient[Litestar],
                                                                   engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    email, _ = await make_user(engine, tenant.tenant_id)
    laptop = await login(client, email)
    phone = await login(client, email)

    response = await client.post("/auth/logout", json={"refresh_token": laptop["refresh_token"]})

    assert response.status_code == 204 and response.content == b""
    refused = await client.post("/auth/refresh", json={"refresh_token": laptop["refresh_token"]})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    # The other session of the same user still refreshes and opens the API.
    renewed = await client.post("/auth/refresh", json={"refresh_token": phone["refresh_token"]})
    assert renewed.status_code == 200, renewed.text
    assert (await client.get("/api/v2/alerts", headers=bearer(renewed.json()["access_token"]))).status_code == 200


async def test_logout_answers_204_whatever_the_token(client: AsyncTestClient[Litestar], engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    email, user_id = await make_user(engine, tenant.tenant_id)
    first = await login(client, email)
    second = (await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})).json()
    async with system_tx(engine) as conn:
        expired = await issue_refresh_token(conn, user_id, tenant.tenant_id, 300, utcnow() - timedelta(hours=1))

    for token in (second["refresh_token"], second["refresh_token"],  # twice: idempotent
                  first["refresh_token"],  # already used by the refresh
                  expired, "rt_not-a-real-token", "not even the shape of one"):
        response = await client.post("/auth/logout", json={"refresh_token": token})
        assert response.status_code == 204, (token, response.text)

    # Signing out with a spent token is not reuse: it ends nothing else (a fresh login still refreshes).
    third = await login(client, email)
    assert (await client.post("/auth/refresh", json={"refresh_token": third["refresh_token"]})).status_code == 200


@pytest.mark.parametrize("body", [{}, {"refresh_token": 7}, {"refresh_token": "rt_x", "user_id": "u"}])
async def test_logout_refuses_a_malformed_body_naming_the_field(client: AsyncTestClient[Litestar],
                                                                body: dict[str, Any]) -> None:
    response = await client.post("/auth/logout", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


async def test_logout_is_rate_limited_with_the_other_auth_routes(settings: Settings) -> None:
    async with AsyncTestClient(app=create_app(settings)) as client:
        for _ in range(10):
            assert (await client.post("/auth/logout", json={"refresh_token": "rt_x"})).status_code == 204
        limited = await client.post("/auth/logout", json={"refresh_token": "rt_x"})
        assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
        assert (await client.post("/auth/refresh", json={"refresh_token": "rt_x"})).status_code == 429


async def test_sign_in_config_tells_the_web_app_how_to_sign_in(settings: Settings) -> None:
    async with AsyncTestClient(app=create_app(settings)) as client:
        builtin = await client.get("/auth/config")
    assert builtin.status_code == 200 and builtin.json() == {"method": "password", "oidc": None}

    external = settings.replace(jwt_jwks_url="https://sso.example.test/realms/pulse/protocol/openid-connect/certs",
                                jwt_issuer="https://sso.example.test/realms/pulse")
    async with AsyncTestClient(app=create_app(external.replace(oidc_client_id="pulse-web"))) as client:
        sso = await client.get("/auth/config")
        page_csp = (await client.get("/app/")).headers["content-security-policy"]
        logout = await client.post("/auth/logout", json={"refresh_token": "rt_x"})
    assert sso.json() == {"method": "oidc", "oidc": {"issuer": "https://sso.example.test/realms/pulse",
                                                     "client_id": "pulse-web",
                                                     "scopes": ["openid", "profile", "email"]}}
    assert "connect-src 'self' https://sso.example.test;" in page_csp
    assert logout.status_code == 404  # the built-in identity is off

    async with AsyncTestClient(app=create_app(external)) as client:
        unconfigured = (await client.get("/auth/config")).json()
    assert unconfigured == {"method": "none", "oidc": None}


@pytest.mark.parametrize(("env", "named"), [
    ({"PULSE_OIDC_SCOPES": "profile email"}, "PULSE_OIDC_SCOPES"),
    ({"PULSE_OIDC_ISSUER": "sso.example.test/realms/pulse"}, "PULSE_OIDC_ISSUER"),
    ({"PULSE_JWT_JWKS_URL": "https://sso.example.test/certs", "PULSE_OIDC_CLIENT_ID": "pulse-web"}, "PULSE_OIDC_ISSUER"),
])
def test_bad_web_app_oidc_settings_stop_the_start_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as exc:
        Settings.from_env({"PULSE_ENV": "test", **env})
    assert named in str(exc.value)


def test_the_web_app_may_reach_the_provider_at_its_own_issuer_url() -> None:
    settings = Settings.from_env({
        "PULSE_ENV": "test", "PULSE_JWT_JWKS_URL": "http://keycloak:8080/realms/pulse/protocol/openid-connect/certs",
        "PULSE_JWT_ISSUER": "https://sso.example.test/realms/pulse", "PULSE_OIDC_CLIENT_ID": "pulse-web",
        "PULSE_OIDC_ISSUER": "https://login.example.test/realms/pulse/", "PULSE_OIDC_SCOPES": "openid,email offline_access"})
    assert settings.web_oidc_issuer == "https://login.example.test/realms/pulse"
    assert settings.oidc_scopes == ("openid", "email", "offline_access")
    # With the built-in identity the client id has no effect: the web app shows its own form.
    assert settings.replace(jwt_jwks_url=None).web_oidc_client_id is None
