"""Web fixtures: an app per test behind Litestar's AsyncTestClient, users, tokens and alerts.

Litestar's AsyncTestClient runs the app in a thread with its own event loop, so the app creates
and disposes its own engine (the startup/shutdown path `pulse web` uses); the session `engine`
fixture (the test's loop) seeds data directly with SQL.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from joserfc.jwk import ECKey
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import system_tx
from pulse.fleet.keys import get_active_signing_key, sign_jwt
from pulse.fleet.users import create_user
from pulse.settings import Settings
from pulse.web.app import create_app

PASSWORD = "correct-horse-battery"


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app(settings)) as c:
        yield c


async def make_user(engine: AsyncEngine, tenant_id: str | None, roles: tuple[str, ...] = ("customer",),
                    password: str = PASSWORD, **fields: Any) -> tuple[str, uuid.UUID]:
    """A login (email, user_id) in `tenant_id`."""
    email = f"user-{secrets.token_hex(4)}@Example.test"
    async with system_tx(engine) as conn:
        user_id = await create_user(conn, tenant_id=tenant_id, email=email, password=password, roles=roles,
                                    **fields)
    return email, user_id


async def login(client: AsyncTestClient[Litestar], email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = await client.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def active_key(engine: AsyncEngine, settings: Settings) -> tuple[str, ECKey]:
    async with system_tx(engine) as conn:
        return await get_active_signing_key(conn, settings.secret_key_bytes)


def claims_for(settings: Settings, *, tenant_id: str | None, roles: list[str], **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": settings.issuer, "aud": settings.jwt_audience, "sub": str(uuid.uuid4()),
                              "iat": now, "nbf": now, "exp": now + 300, "roles": roles, "email": "t@example.test"}
    if tenant_id is not None:
        claims["tenant_id"] = tenant_id
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


async def token_for(engine: AsyncEngine, settings: Settings, *, tenant_id: str | None,
                    roles: list[str] | None = None, **overrides: Any) -> str:
    """An access token signed with Pulse's own active key, with chosen claims."""
    kid, key = await active_key(engine, settings)
    return sign_jwt(key, kid, claims_for(settings, tenant_id=tenant_id, roles=roles or ["customer"], **overrides))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: Any) -> str:
    return b64url(json.dumps(obj).encode())


async def insert_alert(engine: AsyncEngine, tenant_id: str, *, severity: int = 3, status: str = "OPEN",
                       device_id: str | None = None, title: str = "Temperature high",
                       opened_offset_s: int = 0, events: tuple[str, ...] = ("OPENED",)) -> str:
    """An alert row (and its events) written directly, as the evaluator would have."""
    async with system_tx(engine) as conn:
        alert_id = (await conn.execute(text(
            "INSERT INTO alerts (tenant_id, fingerprint, alert_type, device_id, severity, status, title, summary, "
            "metric, trigger_value, last_value, opened_at, last_seen_at, triggered_at, acknowledged_at, closed_at) "
            "VALUES (:t, :fp, 'THRESHOLD', :d, :sev, :st, :title, 'temp_c above 30', 'temp_c', '31.5', '32', "
            "now() - make_interval(secs => :off), now(), now() - make_interval(secs => :off), "
            "CASE WHEN :st = 'ACKNOWLEDGED' THEN now() END, CASE WHEN :st = 'CLOSED' THEN now() END) "
            "RETURNING alert_id"),
            {"t": tenant_id, "fp": f"fp-{secrets.token_hex(6)}", "d": device_id, "sev": severity, "st": status,
             "title": title, "off": opened_offset_s})).scalar_one()
        for kind in events:
            await conn.execute(text(
                "INSERT INTO alert_events (tenant_id, alert_id, kind, actor, details) "
                "VALUES (:t, :a, :k, 'system', CAST(:d AS jsonb))"),
                {"t": tenant_id, "a": alert_id, "k": kind, "d": json.dumps({"kind": kind})})
    return str(alert_id)
