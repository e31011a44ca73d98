"""Device registration within subscription limits, activation codes, credentials and revocation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.crypto import hash_token
from pulse.db import connect_raw, system_tx
from pulse.errors import Conflict, LimitExceeded, NotFound, ValidationError
from pulse.fleet.service import (
    activate_device,
    issue_activation_code,
    issue_credentials,
    register_device,
    revoke_device,
)
from tests.conftest import make_tenant

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


async def test_device_limit_refuses_the_next_device_naming_the_subscription(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine, device_limit=2)
    async with system_tx(engine) as conn:
        await register_device(conn, tenant.tenant_id, "d1", now=NOW)
        await register_device(conn, tenant.tenant_id, "d2", now=NOW)
    with pytest.raises(LimitExceeded) as exc:
        async with system_tx(engine) as conn:
            await register_device(conn, tenant.tenant_id, "d3", now=NOW)
    assert tenant.subscription_id in exc.value.message and "2 devices" in exc.value.message


@pytest.mark.parametrize(("device_id", "error"), [("bad/id", ValidationError), ("", ValidationError),
                                                   ("x" * 129, ValidationError)])
async def test_bad_device_ids_are_refused_with_the_field(engine: AsyncEngine, device_id: str,
                                                         error: type[Exception]) -> None:
    tenant = await make_tenant(engine)
    with pytest.raises(error) as exc:
        async with system_tx(engine) as conn:
            await register_device(conn, tenant.tenant_id, device_id, now=NOW)
    assert getattr(exc.value, "field", None) == "device_id"


async def test_duplicate_device_and_unknown_tenant(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    async with system_tx(engine) as conn:
        await register_device(conn, tenant.tenant_id, "d1", now=NOW)
    with pytest.raises(Conflict):
        async with system_tx(engine) as conn:
            await register_device(conn, tenant.tenant_id, "d1", now=NOW)
    with pytest.raises(NotFound):
        async with system_tx(engine) as conn:
            await register_device(conn, "no-such-tenant", "d1", now=NOW)


async def test_activation_code_works_once_and_issues_hashed_credentials(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    async with system_tx(engine) as conn:
        await register_device(conn, tenant.tenant_id, "fridge-1", now=NOW)
        code, expires = await issue_activation_code(conn, tenant.tenant_id, "fridge-1", now=NOW)
    assert expires == NOW + timedelta(days=7)
    async with system_tx(engine) as conn:
        creds = await activate_device(conn, code.lower(), now=NOW)  # typed by a person: case does not matter
    assert creds.tenant_id == tenant.tenant_id and creds.device_id == "fridge-1"
    assert creds.provision_token.startswith("pt_") and creds.mqtt_username == f"{tenant.tenant_id}/fridge-1"
    assert creds.topic_prefix == f"tenant/{tenant.tenant_id}/device/fridge-1/"
    async with system_tx(engine) as conn:
        stored = {r.kind: r.secret_hash for r in await conn.execute(text(
            "SELECT kind, secret_hash FROM device_credentials WHERE tenant_id = :t AND revoked_at IS NULL"),
            {"t": tenant.tenant_id})}
    assert stored == {"PROVISION_TOKEN": hash_token(creds.provision_token),
                      "MQTT_PASSWORD": hash_token(creds.mqtt_password)}
    with pytest.raises(ValidationError, match="already used"):
        async with system_tx(engine) as conn:
            await activate_device(conn, code, now=NOW)


async def test_expired_and_unknown_codes(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    async with system_tx(engine) as conn:
        await register_device(conn, tenant.tenant_id, "d1", now=NOW)
        code, _ = await issue_activation_code(conn, tenant.tenant_id, "d1", now=NOW, ttl_s=60)
    with pytest.raises(ValidationError, match="expired"):
        async with system_tx(engine) as conn:
            await activate_device(conn, code, now=NOW + timedelta(seconds=61))
    with pytest.raises(NotFound):
        async with system_tx(engine) as conn:
            await activate_device(conn, "ACT-AAAA-BBBB-CCCC", now=NOW)


async def test_rotation_and_revocation_notify_ingest(engine: AsyncEngine, database_url: str) -> None:
    tenant = await make_tenant(engine)
    heard: list[str] = []
    listener = await connect_raw(database_url)
    await listener.add_listener("pulse_device_changed", lambda *args: heard.append(args[3]))
    try:
        async with system_tx(engine) as conn:
            await register_device(conn, tenant.tenant_id, "d1", now=NOW)
            first = await issue_credentials(conn, tenant.tenant_id, "d1", now=NOW)
            second = await issue_credentials(conn, tenant.tenant_id, "d1", now=NOW)
        assert first.provision_token != second.provision_token
        async with system_tx(engine) as conn:
            active = (await conn.execute(text(
                "SELECT count(*) FROM device_credentials WHERE tenant_id = :t AND revoked_at IS NULL"),
                {"t": tenant.tenant_id})).scalar_one()
            assert active == 2  # the newest token and MQTT password only
            await revoke_device(conn, tenant.tenant_id, "d1", now=NOW)
        async with system_tx(engine) as conn:
            status = (await conn.execute(text("SELECT status FROM devices WHERE tenant_id = :t"),
                                         {"t": tenant.tenant_id})).scalar_one()
        assert status == "REVOKED"
        for _ in range(50):
            if len(heard) >= 2:
                break
            await asyncio.sleep(0.05)
        # PostgreSQL folds identical notifications of one transaction: one per committed change set.
        assert heard == [f"{tenant.tenant_id}/d1"] * 2
    finally:
        await listener.close()
