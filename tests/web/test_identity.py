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
from pulse.errors import Conflict, ValidationError
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
