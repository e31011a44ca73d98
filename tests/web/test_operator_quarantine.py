"""Operator quarantine API: cross-tenant, operator roles only, every request audited."""

from __future__ import annotations

import asyncio
import json

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import system_tx
from pulse.settings import Settings
from tests.conftest import make_device, make_tenant
from tests.web.conftest import bearer, token_for


async def test_operator_lists_quarantine_across_tenants_and_is_audited(
        engine: AsyncEngine, settings: Settings, client: AsyncTestClient[Litestar]) -> None:
    a, b = await make_tenant(engine), await make_tenant(engine)
    for tenant in (a, b):
        device = await make_device(engine, tenant)
        r = await client.post(f"/ingest/v1/tenant/{tenant.tenant_id}/device/{device}/telemetry",
                              content=b"{broken", headers={"X-Provision-Token": "pt_x"})
        assert r.status_code == 400
    await asyncio.sleep(0.5)  # quarantine rows are committed by the batch writer within its flush interval
    operator = await token_for(engine, settings, tenant_id=None, roles=["operator"], email="noc@pulse.example")

    r = await client.get("/operator/quarantine/events", params={"reason": "INVALID_JSON", "limit": 500},
                         headers=bearer(operator))
    assert r.status_code == 200, r.text
    tenants = {e["tenant_id"] for e in r.json()["items"]}
    assert {a.tenant_id, b.tenant_id} <= tenants
    assert all(e["raw_payload"] == "{broken" for e in r.json()["items"] if e["tenant_id"] in (a.tenant_id, b.tenant_id))

    r = await client.get("/operator/quarantine/counters", params={"tenant_id": a.tenant_id}, headers=bearer(operator))
    assert r.status_code == 200 and r.json()["totals_by_reason"] == {"INVALID_JSON": 1}

    async with system_tx(engine) as conn:
        audit = (await conn.execute(text(
            "SELECT actor, action, tenant_id, details FROM operator_audit_log WHERE tenant_id = :t"),
            {"t": a.tenant_id})).all()
    assert [(x.actor, x.action) for x in audit] == [("noc@pulse.example", "GET /operator/quarantine/counters")]
    assert json.loads(json.dumps(audit[0].details)) == {"tenant_id": a.tenant_id}


async def test_customers_cannot_use_operator_routes(engine: AsyncEngine, settings: Settings,
                                                    client: AsyncTestClient[Litestar]) -> None:
    tenant = await make_tenant(engine)
    customer = await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=["customer", "tenant-admin"])
    r = await client.get("/operator/quarantine/events", headers=bearer(customer))
    assert r.status_code == 403
    r = await client.get("/operator/quarantine/events")
    assert r.status_code == 401


async def test_unknown_reason_is_a_400_naming_the_field(engine: AsyncEngine, settings: Settings,
                                                        client: AsyncTestClient[Litestar]) -> None:
    operator = await token_for(engine, settings, tenant_id=None, roles=["operator-admin"])
    r = await client.get("/operator/quarantine/events", params={"reason": "NOPE"}, headers=bearer(operator))
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "reason"
    r = await client.get("/operator/quarantine/events", params={"since": "yesterday"}, headers=bearer(operator))
    assert r.status_code == 400
