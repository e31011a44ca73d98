"""Provisioning over HTTP: X-Admin-Key registration, then a device activates once with its code."""

from __future__ import annotations

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.crypto import hash_token
from pulse.db import system_tx
from pulse.settings import Settings
from tests.conftest import make_tenant

DEVICES = "/api/admin/devices"
ACTIVATE = "/api/device/activate"


@pytest.mark.parametrize("key", [None, "", "wrong-admin-key-0000", "dev-admin-key-change-me-but-longer"])
async def test_missing_or_wrong_admin_key_is_401(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                 key: str | None) -> None:
    tenant = await make_tenant(engine)
    headers = {"X-Admin-Key": key} if key is not None else {}

    response = await client.post(DEVICES, headers=headers, json={"tenant_id": tenant.tenant_id, "device_id": "d-1"})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    async with system_tx(engine) as conn:
        count = (await conn.execute(text("SELECT count(*) FROM devices WHERE tenant_id = :t"),
                                    {"t": tenant.tenant_id})).scalar_one()
    assert count == 0


async def test_provision_then_activate_round_trip(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                  settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = {"X-Admin-Key": settings.admin_key}

    created = await client.post(DEVICES, headers=admin, json={
        "tenant_id": tenant.tenant_id, "device_id": "freezer-7", "name": "Freezer 7", "device_type": "freezer",
        "tags": ["cold", "kitchen"], "attributes": {"model": "FZ-200"}})

    assert created.status_code == 201, created.text
    provisioned = created.json()
    assert provisioned["tenant_id"] == tenant.tenant_id and provisioned["device_id"] == "freezer-7"
    code = provisioned["activation_code"]
    assert code and provisioned["activation_expires_at"]

    activated = await client.post(ACTIVATE, json={"activation_code": code})

    assert activated.status_code == 200, activated.text
    assert activated.headers["cache-control"] == "no-store"
    creds = activated.json()
    assert creds["tenant_id"] == tenant.tenant_id and creds["device_id"] == "freezer-7"
    assert creds["provision_token"]
    mqtt = creds["mqtt"]
    assert mqtt["topic_prefix"] == f"tenant/{tenant.tenant_id}/device/freezer-7/"
    assert mqtt["username"] and mqtt["password"]
    assert (mqtt["host"], mqtt["port"]) == ("127.0.0.1", 1883)  # from PULSE_MQTT_URL, never its credentials
    async with system_tx(engine) as conn:
        device = (await conn.execute(text("SELECT name, device_type, tags, attributes FROM devices "
                                          "WHERE tenant_id = :t AND device_id = 'freezer-7'"),
                                     {"t": tenant.tenant_id})).one()
        stored = (await conn.execute(text("SELECT secret_hash FROM device_credentials WHERE tenant_id = :t "
                                          "AND kind = 'PROVISION_TOKEN' AND revoked_at IS NULL"),
                                     {"t": tenant.tenant_id})).scalar_one()
    assert (device.name, device.device_type, list(device.tags)) == ("Freezer 7", "freezer", ["cold", "kitchen"])
    assert device.attributes == {"model": "FZ-200"}
    assert stored == hash_token(creds["provision_token"])

    again = await client.post(ACTIVATE, json={"activation_code": code})
    assert again.status_code == 400
    assert again.json()["error"]["details"]["field"] == "activation_code"


async def test_unknown_activation_code_is_404(client: AsyncTestClient[Litestar]) -> None:
    response = await client.post(ACTIVATE, json={"activation_code": "ACT-NOPE-NOPE-NOPE"})
    assert response.status_code == 404
    assert response.json()["error"]["details"]["field"] == "activation_code"


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"device_id": "d-1"}, 400, "tenant_id"),
    ({"tenant_id": "{tenant}", "device_id": "bad/id"}, 400, "device_id"),
    ({"tenant_id": "{tenant}", "device_id": "d-1", "tags": "cold"}, 400, "tags"),
    ({"tenant_id": "{tenant}", "device_id": "d-1", "colour": "red"}, 400, "colour"),
    ({"tenant_id": "no-such-tenant", "device_id": "d-1"}, 404, "tenant_id"),
])
async def test_bad_provisioning_requests_name_the_field(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                        settings: Settings, body: dict[str, object], status: int,
                                                        field: str) -> None:
    tenant = await make_tenant(engine)
    payload = {k: (v.format(tenant=tenant.tenant_id) if isinstance(v, str) else v) for k, v in body.items()}

    response = await client.post(DEVICES, headers={"X-Admin-Key": settings.admin_key}, json=payload)

    assert response.status_code == status, response.text
    assert response.json()["error"]["details"]["field"] == field


async def test_registering_a_device_twice_is_409_and_over_the_limit_is_refused(
        client: AsyncTestClient[Litestar], engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine, device_limit=1)
    admin = {"X-Admin-Key": settings.admin_key}
    assert (await client.post(DEVICES, headers=admin,
                              json={"tenant_id": tenant.tenant_id, "device_id": "d-1"})).status_code == 201

    twice = await client.post(DEVICES, headers=admin, json={"tenant_id": tenant.tenant_id, "device_id": "d-1"})
    over = await client.post(DEVICES, headers=admin, json={"tenant_id": tenant.tenant_id, "device_id": "d-2"})

    assert twice.status_code == 409 and twice.json()["error"]["code"] == "conflict"
    assert over.status_code == 403 and over.json()["error"]["code"] == "limit_exceeded"
